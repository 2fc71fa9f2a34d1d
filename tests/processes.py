"""Real ``aiops-executor`` processes for tests: API servers and workers started as subprocesses, killed for real."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import PG_HOST, PG_PORT, PG_USER

API = "/api/v1"
EXECUTABLE = Path(sys.executable).with_name("aiops-executor")


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


def base_env(**settings: str) -> dict[str, str]:
    """This environment without any AIOPS_ variable, plus ``settings`` (names without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOPS_")}
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
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # Popen returns at once (the process runs on its own); only waiting on it would block the loop.
        self.process = subprocess.Popen(  # noqa: S603, ASYNC220
            [str(EXECUTABLE), *self.args], env=self.env, stdout=log, stderr=log
        )
        if ready_path is None or self.port is None:
            return
        async with httpx.AsyncClient(base_url=self.url) as client:
            for _ in range(600):
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited: {self.log()[-3000:]}")
                with suppress(httpx.TransportError):
                    if (await client.get(ready_path)).status_code == 200:
                        return
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
