"""The lab's faults: each a real fault in a real component, injected and healed.

A scenario names the node at fault and the words its evidence should carry (``signal``), which the scores check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiops_executor.lab.system import (
    ADMIN_ROLE,
    BINARIES,
    LOOPBACK,
    POSTGRES_DATABASE,
    SHOP_ROLE,
    LabError,
    LabState,
    Processes,
    pid_alive,
    port_open,
    python_module,
    restart_shop,
    stop_process,
)

SLOW_DEPENDENCY_MS = 200
HOLD_READY_SECONDS = 20.0


@dataclass(frozen=True)
class Scenario:
    name: str
    node_id: str  # the component at fault
    description: str
    signal: str  # words the fault's evidence carries
    inject: Callable[[LabState], None]
    heal: Callable[[LabState], None]


def _pid(state: LabState, name: str) -> int:
    try:
        return state.processes[name]
    except KeyError:
        raise LabError(f"the lab has no {name} process") from None


def _stop_redis(state: LabState) -> None:
    stop_process(_pid(state, "redis"))


def _start_redis(state: LabState) -> None:
    if pid_alive(_pid(state, "redis")):
        return
    port = state.port("redis")
    processes = Processes(state)
    command = [BINARIES["redis"][0], "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no"]
    processes.start("redis", [*command, "--dir", state.lab_dir])
    processes.wait_until("redis", lambda: port_open(port))
    for component in state.components:
        if component["node_id"] == "redis":
            component["pid"] = state.processes["redis"]
    state.save()


def _hang_redis(state: LabState) -> None:
    os.kill(_pid(state, "redis"), signal.SIGSTOP)


def _wake_redis(state: LabState) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(_pid(state, "redis"), signal.SIGCONT)


def _hold(what: str, role: str) -> Callable[[LabState], None]:
    def inject(state: LabState) -> None:
        dsn = f"postgresql://{role}@{LOOPBACK}:{state.port('postgres_server')}/{POSTGRES_DATABASE}"
        name = f"hold-{what}"
        log = Path(state.lab_dir) / f"{name}.log"
        log.unlink(missing_ok=True)
        pid = Processes(state).start(name, python_module("aiops_executor.lab.hold", what, "--dsn", dsn))
        state.processes.pop(name, None)  # a fault's process, not a component's
        state.faults[what] = [pid]
        state.save()
        deadline = time.monotonic() + HOLD_READY_SECONDS
        while "holding" not in (log.read_text() if log.exists() else ""):
            if not pid_alive(pid) or time.monotonic() > deadline:
                raise LabError(f"could not hold {what}: {log.read_text()[-300:] if log.exists() else 'no log'}")
            time.sleep(0.05)

    return inject


def _release(what: str) -> Callable[[LabState], None]:
    def heal(state: LabState) -> None:
        for pid in state.faults.pop(what, []):
            stop_process(pid)
        state.save()

    return heal


def _kill_shop(state: LabState) -> None:
    os.kill(_pid(state, "shop"), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(state.processes["shop"]) and time.monotonic() < deadline:
        time.sleep(0.02)


def _revive_shop(state: LabState) -> None:
    if not pid_alive(_pid(state, "shop")):
        restart_shop(state)


def _delay(milliseconds: int) -> Callable[[LabState], None]:
    def set_delay(state: LabState) -> None:
        (Path(state.lab_dir) / "postgres-delay-ms").write_text(str(milliseconds))

    return set_delay


SCENARIOS = {
    scenario.name: scenario
    for scenario in (
        Scenario("redis_stopped", "redis", "Redis is stopped", "connection refused", _stop_redis, _start_redis),
        Scenario(
            "redis_hung",
            "redis",
            "Redis accepts TCP connections but answers nothing (SIGSTOP)",
            "no answer to INFO",
            _hang_redis,
            _wake_redis,
        ),
        Scenario(
            "postgres_connections_exhausted",
            "postgres",
            "every PostgreSQL connection slot for ordinary roles is taken",
            "connections exhausted",
            _hold("connections", SHOP_ROLE),
            _release("connections"),
        ),
        Scenario(
            "postgres_lock",
            "postgres",
            "a transaction left open holds a lock on the table the shop writes",
            "waiting for locks",
            _hold("lock", ADMIN_ROLE),
            _release("lock"),
        ),
        Scenario(
            "shop_killed",
            "shop",
            "the shop process is killed (the gateway answers 502)",
            "connection refused",
            _kill_shop,
            _revive_shop,
        ),
        Scenario(
            "slow_dependency",
            "postgres",
            f"every answer of PostgreSQL is delayed by {SLOW_DEPENDENCY_MS} ms on the network",
            "round trip",
            _delay(SLOW_DEPENDENCY_MS),
            _delay(0),
        ),
    )
}


def scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise LabError(f"no scenario {name!r}; the scenarios are: {', '.join(SCENARIOS)}") from None


def heal_all(state: LabState) -> list[str]:
    """Heals every scenario (each heal does nothing when its fault is absent); returns the names."""
    for each in SCENARIOS.values():
        each.heal(state)
    return list(SCENARIOS)
