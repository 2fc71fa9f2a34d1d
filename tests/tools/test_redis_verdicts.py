"""redis_info's verdicts against a real Redis server of the test's own, put in each state: healthy, near its
client limit, near its memory limit, hung (SIGSTOP: TCP accepted, nothing answered), guarded by a password the
node does not have, and stopped."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import ToolContext, ToolOutcome
from tests.processes import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
MAX_CLIENTS = 20


class OwnRedis:
    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self.url = f"redis://127.0.0.1:{port}/0"

    def client(self, **options: Any) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, **options)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    port = free_port()
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    command += ["--maxclients", str(MAX_CLIENTS), "--dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    server = OwnRedis(port, process)
    try:
        deadline = time.monotonic() + 10
        with SyncRedis(host="127.0.0.1", port=port) as probe:
            while True:  # until it answers (it starts in milliseconds)
                try:
                    probe.ping()
                    break
                except RedisError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.01)
        yield server
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
        process.wait(timeout=10)


async def redis_info(url: str, arguments: dict[str, Any] | None = None, **attributes: Any) -> ToolOutcome:
    context = ToolContext(node_id="redis", attributes={"redis_url": url, **attributes})
    return await default_registry().invoke("redis_info", arguments or {}, context)


async def test_a_healthy_redis_is_ok(own_redis: OwnRedis) -> None:
    outcome = await redis_info(own_redis.url)
    assert outcome.verdict == "ok", outcome.signals
    assert any(s.startswith("clients 1/20 (5 %)") for s in outcome.signals)
    assert outcome.output["verdict"] == "ok"


async def test_clients_near_maxclients_are_degraded(own_redis: OwnRedis) -> None:
    clients = [own_redis.client() for _ in range(16)]
    try:
        await asyncio.gather(*(client.ping() for client in clients))
        outcome = await redis_info(own_redis.url)
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    assert outcome.verdict == "degraded"
    assert "clients 17/20 (85 %)" in outcome.signals


async def test_memory_against_maxmemory_and_the_nodes_thresholds(own_redis: OwnRedis) -> None:
    admin = own_redis.client()
    try:
        used = int((await admin.info("memory"))["used_memory"])
        await admin.config_set("maxmemory", str(used * 2))
    finally:
        await admin.aclose()
    limits = {"redis_info": {"memory_degraded_percent": 20, "memory_failed_percent": 95}}
    outcome = await redis_info(own_redis.url, thresholds=limits)
    assert outcome.verdict == "degraded"
    assert [s for s in outcome.signals if s.startswith("memory ") and "% of maxmemory" in s]


async def test_a_hung_redis_that_accepts_tcp_but_answers_nothing_is_failed(own_redis: OwnRedis) -> None:
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        outcome = await redis_info(own_redis.url, {"timeout_seconds": 0.5})
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert outcome.verdict == "failed"
    assert outcome.signals == [f"127.0.0.1:{own_redis.port}: no answer to INFO within 0.5 s (TCP connection accepted)"]
    # tcp_check alone calls it reachable: the port is open.
    tcp = await default_registry().invoke("tcp_check", {"host": "127.0.0.1", "port": own_redis.port}, ToolContext())
    assert tcp.verdict == "ok"


async def test_credentials_the_server_refuses_observe_nothing(own_redis: OwnRedis) -> None:
    admin = own_redis.client()
    try:
        await admin.config_set("requirepass", "hunter2-redis-pw")
    finally:
        await admin.aclose()
    without = await redis_info(own_redis.url)
    wrong = await redis_info(f"redis://:not-the-password@127.0.0.1:{own_redis.port}/0")
    for outcome in (without, wrong):
        assert outcome.verdict == "unknown", outcome.signals
        assert outcome.signals == [f"127.0.0.1:{own_redis.port} refused the credentials of the node's redis_url"]
    right = await redis_info(f"redis://:hunter2-redis-pw@127.0.0.1:{own_redis.port}/0")
    assert right.verdict == "ok"


async def test_a_stopped_redis_is_failed(own_redis: OwnRedis) -> None:
    own_redis.process.kill()
    own_redis.process.wait(timeout=10)
    outcome = await redis_info(own_redis.url, {"timeout_seconds": 1})
    assert outcome.verdict == "failed"
    assert outcome.signals == [f"127.0.0.1:{own_redis.port}: connection refused"]
