"""Real ``aiops-executor`` processes for tests: API servers and workers started as subprocesses, killed for real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.conftest import PG_HOST, PG_PORT, PG_USER, fast_hashing_env
from tests.helpers import API

EXECUTABLE = Path(sys.executable).with_name("aiops-executor")
Event = tuple[int, str, dict[str, Any]]


PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def pg(statement: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (``<prefix>_<random>``) for a test's processes, dropped afterwards even
    while they still hold connections; yields its URL. The caller migrates it with its own settings."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await pg(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def base_env(*, fast_hashing: bool = True, **settings: str) -> dict[str, str]:
    """This environment without any AIOPS_ variable, plus ``settings`` (names without the prefix) and, unless
    told otherwise or in production, the tests' cheap password hashing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOPS_")}
    if fast_hashing:
        env.update(fast_hashing_env(settings.get("env", "dev")))
    env.update({f"AIOPS_{name.upper()}": value for name, value in settings.items()})
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(EXECUTABLE), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@dataclass
class Process:
    """One ``aiops-executor`` subprocess (``serve`` or ``worker``) with its own log file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, ready_path: str | None = "/health") -> None:
        for _ in range(PORT_ATTEMPTS):
            if await self._start(ready_path):
                return
            # Another test's process took the port between free_port() and this bind: take another one.
            self._move_to(free_port())
        raise AssertionError(f"{self.name} found no free port in {PORT_ATTEMPTS} attempts: {self.log()[-3000:]}")

    def _move_to(self, port: int) -> None:
        at = self.args.index("--port")
        self.args[at + 1] = str(port)
        self.port = port

    async def _start(self, ready_path: str | None) -> bool:
        """Starts the process; False when its port was taken meanwhile (it exits saying so)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        logged = self.log_path.stat().st_size
        # Popen returns at once (the process runs on its own); only waiting on it would block the loop.
        self.process = subprocess.Popen(  # noqa: S603, ASYNC220
            [str(EXECUTABLE), *self.args], env=self.env, stdout=log, stderr=log
        )
        if ready_path is None or self.port is None:
            return True
        async with httpx.AsyncClient(base_url=self.url) as client:
            for _ in range(600):
                if self.process.poll() is not None:
                    if "already in use" in self.log()[logged:] and "--port" in self.args:
                        return False
                    raise AssertionError(f"{self.name} exited: {self.log()[-3000:]}")
                with suppress(httpx.TransportError):
                    if (await client.get(ready_path)).status_code == 200:
                        return True
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} did not start: {self.log()[-3000:]}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        # Reaped: a zombie would still look alive to a "is its worker gone?" check.
        return self.process.wait(timeout=timeout)

    @asynccontextmanager
    async def client(self, credentials: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            token = await client.post(f"{API}/auth/token", data=credentials)
            assert token.status_code == 200, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            yield client


# --- a small workload: the simulator provider, a team of probing nodes, runs ----------------------------


def team_body(nodes: int) -> dict[str, Any]:
    ref = {"model_provider": "scale-sim", "model_id": "sim"}
    return {
        "team_name": f"scale-{uuid.uuid4().hex[:6]}",
        "timeout_seconds": 300,
        "topology": {
            "nodes": [
                {
                    "node_id": f"n{i}",
                    "node_name": f"Node {i}",
                    "node_type": "service",
                    "attributes": {"host": "127.0.0.1", "port": 9},
                    "agents": [
                        {"agent_id": "probe", "agent_name": "Prober", **ref, "tools": ["tcp_check"]},
                        {"agent_id": "reader", "agent_name": "Reader", **ref},
                    ],
                    "supervisor_config": {**ref, "coordination_strategy": "round_robin"},
                }
                for i in range(nodes)
            ],
            "edges": [],
            "global_supervisor": {**ref, "coordination_strategy": "parallel"},
            "allow_isolated_nodes": True,
        },
    }


async def make_team(client: httpx.AsyncClient, nodes: int) -> str:
    team = await client.post(f"{API}/teams", json=team_body(nodes))
    assert team.status_code == 201, team.text
    return str(team.json()["team_id"])


async def start_run(client: httpx.AsyncClient, team_id: str) -> str:
    started = await client.post(f"{API}/teams/{team_id}/executions", json={"input": {"task": "Is anything down?"}})
    assert started.status_code == 202, started.text
    return str(started.json()["execution_id"])


async def executions(client: httpx.AsyncClient, ids: list[str]) -> dict[str, dict[str, Any]]:
    limit = asyncio.Semaphore(10)

    async def one(execution_id: str) -> dict[str, Any]:
        async with limit:
            response = await client.get(f"{API}/executions/{execution_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    bodies = await asyncio.gather(*(one(i) for i in ids))
    return dict(zip(ids, bodies, strict=True))


async def wait_until(client: httpx.AsyncClient, ids: list[str], done: Any, seconds: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        rows = await executions(client, ids)
        if done(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError({i: (r["status"], r.get("worker_id")) for i, r in rows.items()})
        await asyncio.sleep(0.1)


async def event_log(client: httpx.AsyncClient, execution_id: str) -> list[Event]:
    events: list[Event] = []
    after = 0
    while True:
        response = await client.get(f"{API}/executions/{execution_id}/events", params={"after": after, "size": 100})
        assert response.status_code == 200, response.text
        page = response.json()
        events += [(e["seq"], e["event"], e["data"]) for e in page["items"]]
        if len(page["items"]) < 100:
            return events
        after = events[-1][0]
