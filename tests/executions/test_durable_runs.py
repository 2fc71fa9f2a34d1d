"""Durable runs with real processes: kill -9 or SIGTERM a real ``aiops-executor serve`` mid-run, start it again.

On SQLite and on PostgreSQL (a database of its own, migrated by ``aiops-executor migrate``): the run ends
``success``; node teams that had finished before the crash are not run again (no event of theirs after the
``execution_resumed`` seam); the event log has no gap or duplicate; every event a client received before the
crash is in it, unchanged; and a client re-attaching with its real ``Last-Event-ID`` gets every later event once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from aiops_executor.engine.events import LIVE_EVENTS
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.helpers import API, add_simulator
from tests.processes import base_env, pg

pytestmark = pytest.mark.long
ADMIN = {"username": "durable-admin", "password": "durable-password-1"}
EXECUTABLE = Path(sys.executable).with_name("aiops-executor")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """One real ``serve`` process, restartable on the same data dir and database."""

    data_dir: Path
    database_url: str | None
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = base_env(
            data_dir=str(self.data_dir),
            admin_username=ADMIN["username"],
            admin_password=ADMIN["password"],
            log_level="WARNING",
            rate_limit_executions_per_minute="0",
            # PostgreSQL (job queue): a killed process's runs are taken over after 4 s without heartbeats;
            # SIGTERM suspends runs at once instead of letting them go on first.
            worker_lease_seconds="4",
            worker_drain_seconds="0",
        )
        if self.database_url:
            env["AIOPS_DATABASE_URL"] = self.database_url
        return env

    def cli(self, *args: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
            [str(EXECUTABLE), *args], env=self.env(), capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "serve.log").open("ab")
        # Popen returns at once (the process runs on its own); only waiting on it would block the loop.
        self.process = subprocess.Popen(  # noqa: S603, ASYNC220
            [str(EXECUTABLE), "serve", "--port", str(self.port)], env=self.env(), stdout=log, stderr=log
        )
        async with httpx.AsyncClient(base_url=self.url) as client:
            for _ in range(600):
                if self.process.poll() is not None:
                    raise AssertionError(f"serve exited: {(self.data_dir / 'serve.log').read_text()[-3000:]}")
                with suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        raise AssertionError("serve did not start")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        # Reaped: a zombie would still look alive to the next process's "is its worker gone?" check.
        self.process.wait(timeout=60)

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            token = await client.post(f"{API}/auth/token", data=ADMIN)
            assert token.status_code == 200, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            yield client


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    database_url = None
    name = f"aiops_durable_{uuid.uuid4().hex[:10]}"
    if request.param == "postgresql":
        asyncio.run(pg(f'CREATE DATABASE "{name}"'))
        database_url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    service = Service(tmp_path / "data", database_url, _free_port())
    if database_url:
        service.cli("migrate")
    try:
        yield service
    finally:
        if service.process is not None and service.process.poll() is None:
            service.kill()
        if database_url:
            asyncio.run(pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _node(node_id: str, model: str) -> dict[str, Any]:
    ref = {"model_provider": "durable-sim", "model_id": model}
    return {
        "node_id": node_id,
        "node_name": f"Node {node_id}",
        "node_type": "service",
        "attributes": {"host": "127.0.0.1", "port": 9},
        "agents": [
            {"agent_id": "probe", "agent_name": "Prober", **ref, "tools": ["tcp_check"]},
            {"agent_id": "reader", "agent_name": "Reader", **ref},
        ],
        "supervisor_config": {**ref, "coordination_strategy": "round_robin"},
    }


# a and c finish within a second; b (which depends on a) and d take several seconds.
TEAM = {
    "team_name": "durable",
    "timeout_seconds": 120,
    "topology": {
        "nodes": [_node("a", "fast"), _node("b", "slow"), _node("c", "fast"), _node("d", "slow")],
        "edges": [{"source_node_id": "b", "target_node_id": "a", "relation_type": "depends_on"}],
        "global_supervisor": {
            "model_provider": "durable-sim",
            "model_id": "fast",
            "coordination_strategy": "hierarchical",
        },
        "allow_isolated_nodes": True,
    },
}
QUICK = {"a", "c"}

Event = tuple[int, str, dict[str, Any]]


async def _follow(client: httpx.AsyncClient, path: str, seen: list[Event], last_id: int | None = None) -> None:
    """Appends every event of an SSE stream to ``seen`` until it ends (or its connection breaks)."""
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    with suppress(httpx.TransportError):
        async with aconnect_sse(client, "GET", path, headers=headers) as source:
            async for message in source.aiter_sse():
                if message.event != "heartbeat" and message.event not in LIVE_EVENTS and message.data:
                    seen.append((int(message.id), message.event, json.loads(message.data)))


async def _start_run(service: Service) -> str:
    await service.start()
    async with service.client() as client:
        await add_simulator(client, name="durable-sim", models={"fast": 20, "slow": 700}, priced=True)
        team = await client.post(f"{API}/teams", json=TEAM)
        assert team.status_code == 201, team.text
        started = await client.post(
            f"{API}/teams/{team.json()['team_id']}/executions", json={"input": {"task": "Why is checkout slow?"}}
        )
        assert started.status_code == 202, started.text
        return str(started.json()["execution_id"])


async def _until_quick_nodes_finished(seen: list[Event]) -> None:
    for _ in range(600):
        if {d.get("node_id") for _, kind, d in seen if kind == "node_complete"} >= QUICK:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the quick node teams did not finish: {[k for _, k, _ in seen]}")


async def _stored_log(client: httpx.AsyncClient, execution_id: str) -> list[Event]:
    stored = (await client.get(f"{API}/executions/{execution_id}/events", params={"size": 100})).json()
    log = [(e["seq"], e["event"], e["data"]) for e in stored["items"]]
    while stored["page"] < stored["pages"]:
        page = {"size": 100, "page": stored["page"] + 1}
        stored = (await client.get(f"{API}/executions/{execution_id}/events", params=page)).json()
        log += [(e["seq"], e["event"], e["data"]) for e in stored["items"]]
    return log


async def _finish(service: Service, execution_id: str, before: list[Event]) -> tuple[dict[str, Any], list[Event]]:
    """Restarts the service, re-attaches with the last id received, and returns the execution and its log."""
    await service.start()
    after: list[Event] = []
    async with service.client() as client:
        await _follow(client, f"{API}/executions/{execution_id}/stream", after, last_id=before[-1][0])
        execution = (await client.get(f"{API}/executions/{execution_id}")).json()
        log = await _stored_log(client, execution_id)
    # The client saw every event exactly once, across the crash, and exactly what was stored.
    assert before + after == log
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    return execution, log


async def test_kill_9_mid_run_resumes_from_the_checkpoint(service: Service) -> None:
    execution_id = await _start_run(service)
    before: list[Event] = []
    async with service.client() as client:
        follower = asyncio.create_task(_follow(client, f"{API}/executions/{execution_id}/stream", before))
        await _until_quick_nodes_finished(before)
        await asyncio.sleep(0.3)  # their checkpoint writes land (sync durability); b and d are mid-flight
        service.kill()
        await asyncio.wait_for(follower, 10)
    assert before and before[-1][1] not in ("execution_complete", "execution_error")

    execution, log = await _finish(service, execution_id, before)

    assert execution["status"] == "success", execution
    assert execution["attempt"] == 2 and execution["worker_id"] is None
    assert {n["node_id"]: n["status"] for n in execution["result"]["node_results"]} == dict.fromkeys("abcd", "success")
    seam = next(i for i, (_, kind, _) in enumerate(log) if kind == "execution_resumed")
    resumed = log[seam][2]
    assert resumed["attempt"] == 2 and resumed["resumed_after_seq"] == log[seam - 1][0] and resumed["worker_id"]
    # Node teams that had finished made no model or tool call and emitted nothing again.
    assert not [e for e in log[seam:] if e[2].get("node_id") in QUICK]
    assert {d["node_id"] for _, kind, d in log[seam:] if kind == "node_complete"} == {"b", "d"}
    assert sum(kind == "execution_start" for _, kind, _ in log) == 1
    assert log[-1][1] == "execution_complete"


async def test_sigterm_suspends_runs_and_the_next_process_resumes_them(service: Service) -> None:
    execution_id = await _start_run(service)
    before: list[Event] = []
    retry_hints: list[int | None] = []
    async with service.client() as client:

        async def follow_with_retry() -> None:
            with suppress(httpx.TransportError):
                async with aconnect_sse(client, "GET", f"{API}/executions/{execution_id}/stream") as source:
                    async for message in source.aiter_sse():
                        if message.retry is not None:
                            retry_hints.append(message.retry)
                        if message.event != "heartbeat" and message.event not in LIVE_EVENTS and message.data:
                            before.append((int(message.id), message.event, json.loads(message.data)))

        follower = asyncio.create_task(follow_with_retry())
        await _until_quick_nodes_finished(before)
        service.kill(signal.SIGTERM)
        await asyncio.wait_for(follower, 30)
    # The stream ended with a hint to re-attach; the run was not cancelled or failed.
    assert retry_hints, "the stream closed by the shutdown carried no retry: field"
    assert not [kind for _, kind, _ in before if kind.startswith("execution_") and kind != "execution_start"]

    execution, log = await _finish(service, execution_id, before)
    assert execution["status"] == "success" and execution["attempt"] == 2
    seam = next(i for i, (_, kind, _) in enumerate(log) if kind == "execution_resumed")
    assert not [e for e in log[seam:] if e[2].get("node_id") in QUICK]


async def test_kill_9_right_after_the_202_the_restarted_process_runs_it_to_the_end(service: Service) -> None:
    """Accepted, then the process dies before the run has saved anything (or even started): the run is still
    the process's to do, and the next one does it -- from the start, as nothing was saved."""
    execution_id = await _start_run(service)
    service.kill()

    await service.start()
    async with service.client() as client:
        for _ in range(1200):
            execution = (await client.get(f"{API}/executions/{execution_id}")).json()
            if execution["status"] not in ("pending", "running"):
                break
            await asyncio.sleep(0.05)
        log = await _stored_log(client, execution_id)
    assert execution["status"] == "success", execution
    assert {n["node_id"]: n["status"] for n in execution["result"]["node_results"]} == dict.fromkeys("abcd", "success")
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    assert sum(kind == "execution_start" for _, kind, _ in log) == 1
    assert log[-1][1] == "execution_complete"
