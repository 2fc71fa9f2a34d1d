"""The incident lab's processes: start them on loopback ports under the data dir, remember them, stop them all.

Components (the team's nodes): ``gateway`` (nginx) -> ``shop`` (``lab.shop``) -> ``postgres`` (its own cluster,
made with initdb, reached through ``lab.proxy``) and ``redis``. Around them: Prometheus with the postgres, redis
and blackbox exporters and alert rules, and Alertmanager. Every process is started in a session of its own, its
pid written to the lab's state file as soon as it runs, so that ``lab down`` finds and stops each one -- also
after a ``lab up`` that failed half way.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from aiops_executor.core.settings import Settings
from aiops_executor.lab import configs

LOOPBACK = "127.0.0.1"
START_SECONDS = 30.0
STOP_SECONDS = 10.0
POSTGRES_MAX_CONNECTIONS = 20
POSTGRES_DATABASE = "shop"
# The role the shop writes with, and the least-privileged one diagnostics and the exporter read with.
SHOP_ROLE = "shop"
DIAG_ROLE = "diag"
ADMIN_ROLE = "lab"

# What each binary comes from, for the one-line message naming what to install.
BINARIES = {
    "nginx": ("/usr/sbin/nginx", "nginx-light"),
    "prometheus": ("/usr/bin/prometheus", "prometheus"),
    "alertmanager": ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager"),
    "blackbox": ("/usr/bin/prometheus-blackbox-exporter", "prometheus-blackbox-exporter"),
    "postgres_exporter": ("/usr/bin/prometheus-postgres-exporter", "prometheus-postgres-exporter"),
    "redis_exporter": ("/usr/bin/prometheus-redis-exporter", "prometheus-redis-exporter"),
    "redis": ("/usr/bin/redis-server", "redis-server"),
}
POSTGRES_PACKAGE = "postgresql"


class LabError(Exception):
    """Something the lab could not do, said in the user's terms."""


def missing_packages() -> list[str]:
    missing = [package for path, package in BINARIES.values() if not Path(path).is_file()]
    if postgres_bin_dir() is None:
        missing.append(POSTGRES_PACKAGE)
    return missing


def require_packages() -> None:
    missing = missing_packages()
    if missing:
        packages = " ".join(missing)
        raise LabError(f"the lab needs {packages}: sudo apt-get install -y --no-install-recommends {packages}")


def postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.2):
        return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is gone for every purpose here
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return True


@dataclass
class Component:
    node_id: str
    kind: str
    port: int
    pid: int | None = None
    dsn: str | None = None
    host: str = LOOPBACK

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {"node_id": self.node_id, "kind": self.kind, "host": self.host, "port": self.port}
        body["pid"] = self.pid
        if self.dsn:
            body["dsn"] = self.dsn
        return body


@dataclass
class LabState:
    """What ``lab up`` started, kept in ``<data dir>/lab/state.json``."""

    lab_dir: str
    ports: dict[str, int]
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid, in start order
    components: list[dict[str, Any]] = field(default_factory=list)
    postgres_data: str = ""
    service_url: str = ""
    service_started: bool = False
    team_id: str = ""
    api_key_id: str = ""
    faults: dict[str, list[int]] = field(default_factory=dict)  # fault -> pids of the processes holding it

    @property
    def path(self) -> Path:
        return Path(self.lab_dir) / "state.json"

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2))
        temporary.replace(self.path)

    @classmethod
    def load(cls, lab_dir: Path) -> LabState | None:
        try:
            return cls(**json.loads((lab_dir / "state.json").read_text()))
        except FileNotFoundError:
            return None

    def port(self, name: str) -> int:
        return self.ports[name]

    def lab_ports(self) -> configs.Ports:
        """The components' ports (``ports`` also holds the service's, when the lab started it)."""
        return configs.Ports(**{name: self.ports[name] for name in configs.Ports.__dataclass_fields__})

    @property
    def prometheus_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['alertmanager']}"

    def summary(self) -> dict[str, Any]:
        return {
            "service_url": self.service_url,
            "team_id": self.team_id,
            "prometheus_url": self.prometheus_url,
            "alertmanager_url": self.alertmanager_url,
            "components": self.components,
        }


def lab_dir_of(settings: Settings) -> Path:
    return settings.data_dir / "lab"


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, its cluster is run by the ``postgres`` system user."""
    if not _running_as_root():
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise LabError("running as root, the lab needs the 'postgres' system user to run its PostgreSQL") from None
    return "postgres"


class Processes:
    """Starts the lab's processes, each recorded in the state as soon as it runs."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self.lab_dir = Path(state.lab_dir)

    def start(
        self, name: str, command: list[str], *, env: dict[str, str] | None = None, user: str | None = None
    ) -> int:
        log = open(self.lab_dir / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        try:
            process = subprocess.Popen(  # noqa: S603 (fixed commands of the lab's own)
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                user=user,
                cwd=self.lab_dir,
            )
        finally:
            log.close()
        self.state.processes[name] = process.pid
        self.state.save()
        return process.pid

    def wait_until(self, name: str, ready: Callable[[], bool], seconds: float = START_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        pid = self.state.processes.get(name)
        while not ready():
            if pid is not None and not pid_alive(pid):
                raise LabError(f"{name} stopped while starting: {self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise LabError(f"{name} did not become ready within {seconds:g} s: {self.log_tail(name)}")
            time.sleep(0.05)

    def log_tail(self, name: str) -> str:
        try:
            lines = (self.lab_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(lines[-3:])[-400:] or "(empty log)"

    def run(self, command: list[str], *, user: str | None = None, what: str) -> None:
        done = subprocess.run(  # noqa: S603 (fixed commands of the lab's own)
            command, capture_output=True, text=True, user=user, timeout=120, check=False
        )
        if done.returncode != 0:
            raise LabError(f"{what} failed: {(done.stderr or done.stdout).strip()[-400:]}")


def start_postgres(processes: Processes) -> None:
    """Its own cluster (initdb), started with pg_ctl; the pid is the postmaster's."""
    state = processes.state
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    user = _postgres_user()
    # As root the cluster lives where the postgres user can reach it (the data dir may be inside a private one).
    data = Path(tempfile.mkdtemp(prefix="aiops-lab-pg-")) if user else processes.lab_dir / "postgres"
    state.postgres_data = str(data)
    state.save()
    data.mkdir(exist_ok=True)
    if user:
        shutil.chown(data, user, user)
    processes.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", ADMIN_ROLE, "--auth=trust", "--no-sync", "-E", "UTF8"],
        user=user,
        what="initdb",
    )
    port = state.port("postgres_server")
    options = (
        f"-p {port} -c listen_addresses={LOOPBACK} -k {data} -c max_connections={POSTGRES_MAX_CONNECTIONS} "
        "-c superuser_reserved_connections=3 -c fsync=off -c full_page_writes=off"
    )
    log = str(data / "server.log")
    processes.run(
        [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", log, "-o", options, "-w", "start"],
        user=user,
        what="pg_ctl start",
    )
    pid = int((data / "postmaster.pid").read_text().splitlines()[0])
    state.processes["postgres"] = pid
    state.save()
    psql = [str(bin_dir / "psql"), "-h", LOOPBACK, "-p", str(port), "-U", ADMIN_ROLE, "-v", "ON_ERROR_STOP=1"]
    setup = [
        f"CREATE ROLE {SHOP_ROLE} LOGIN",
        f"CREATE ROLE {DIAG_ROLE} LOGIN IN ROLE pg_monitor",
        f"CREATE DATABASE {POSTGRES_DATABASE} OWNER {SHOP_ROLE}",  # not in a transaction: one -c each
    ]
    commands = [part for statement in setup for part in ("-c", statement)]
    processes.run([*psql, "-d", "postgres", *commands], what="creating the shop's roles and database")


def stop_postgres(state: LabState) -> None:
    data = Path(state.postgres_data) if state.postgres_data else None
    bin_dir = postgres_bin_dir()
    if data is None or bin_dir is None:
        return
    if (data / "postmaster.pid").is_file():
        with contextlib.suppress(Exception):
            subprocess.run(  # noqa: S603
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=30,
                check=False,
                user=_postgres_user(),
            )
    shutil.rmtree(data, ignore_errors=True)


def stop_process(pid: int) -> None:
    """SIGCONT (a hung fault may have stopped it), SIGTERM to its session, SIGKILL if it lingers."""
    for sig in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
    deadline = time.monotonic() + STOP_SECONDS
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def allocate_ports() -> dict[str, int]:
    return {name: free_port() for name in configs.Ports.__dataclass_fields__}


def start_shop(processes: Processes, ports: configs.Ports, dsn: str, redis_url: str) -> None:
    command = python_module("aiops_executor.lab.shop", "--port", str(ports.shop), "--postgres-dsn", dsn)
    processes.start("shop", [*command, "--redis-url", redis_url])
    processes.wait_until("shop", lambda: http_ready(f"http://{LOOPBACK}:{ports.shop}/metrics"))


def restart_shop(state: LabState) -> None:
    ports = state.lab_ports()
    component = next(c for c in state.components if c["node_id"] == "postgres")
    start_shop(Processes(state), ports, component["dsn"], f"redis://{LOOPBACK}:{ports.redis}/0")
    for item in state.components:
        if item["node_id"] == "shop":
            item["pid"] = state.processes["shop"]
    state.save()


def http_ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1, trust_env=False).status_code == 200
    return False
