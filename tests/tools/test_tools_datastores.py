"""postgres_diagnostics and redis_info against the real local PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.builtin.postgres import read_only_session
from aiops_executor.tools.registry import ToolContext, ToolOutcome

PG_HOST = os.environ.get("AIOPS_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("AIOPS_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("AIOPS_TEST_PG_USER", "postgres")
PG_DSN = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"
# Trust authentication ignores the password, which lets the tests prove it never comes back.
PG_DSN_WITH_PASSWORD = f"postgresql://{PG_USER}:hunter2-pg-pw@{PG_HOST}:{PG_PORT}/postgres"
# Diagnostics refuse superusers: the tools log in as a least-privileged role (pg_monitor) the tests create, one
# per test process (roles belong to the whole server, and each test drops its role, with its sessions, after it).
DIAG_USER = f"aiops_diag_test_{uuid.uuid4().hex[:8]}"
DIAG_DSN = f"postgresql://{DIAG_USER}@{PG_HOST}:{PG_PORT}/postgres"
DIAG_DSN_WITH_PASSWORD = f"postgresql://{DIAG_USER}:hunter2-pg-pw@{PG_HOST}:{PG_PORT}/postgres"
REDIS_URL = os.environ.get("AIOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_TEST_DB = 13
REDIS_TEST_DB_URL = REDIS_URL.rsplit("/", 1)[0] + f"/{REDIS_TEST_DB}"

pytestmark = pytest.mark.postgres


async def invoke(name: str, arguments: dict[str, Any], **attributes: Any) -> ToolOutcome:
    return await default_registry().invoke(name, arguments, ToolContext(node_id="db", attributes=attributes))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def pg() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(PG_DSN)
    yield connection
    await connection.close()


async def _drop_role(admin: asyncpg.Connection, role: str) -> None:
    await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
    await admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture(autouse=True)
async def diag_role() -> AsyncIterator[str]:
    """A LOGIN role with pg_monitor only (no superuser), dropped after the test."""
    admin = await asyncpg.connect(PG_DSN)
    try:
        await _drop_role(admin, DIAG_USER)
        await admin.execute(f'CREATE ROLE "{DIAG_USER}" LOGIN NOSUPERUSER IN ROLE pg_monitor')
        yield DIAG_USER
        await _drop_role(admin, DIAG_USER)
    finally:
        await admin.close()


async def _until(check: Any, within_seconds: float = 3.0) -> None:
    deadline = time.monotonic() + within_seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------------------------- postgres_diagnostics


async def test_postgres_diagnostics_refuse_a_superuser_unless_allowed() -> None:
    refused = await invoke("postgres_diagnostics", {}, postgres_dsn=PG_DSN_WITH_PASSWORD)
    assert refused.status == "error", refused.output
    assert refused.output["error_code"] == "DIAGNOSTICS_SUPERUSER_REFUSED"
    assert "hunter2-pg-pw" not in json.dumps(refused.output)
    context = ToolContext(
        node_id="db", attributes={"postgres_dsn": PG_DSN}, settings={"diagnostics_allow_superuser": True}
    )
    allowed = await default_registry().invoke("postgres_diagnostics", {}, context)
    assert allowed.status == "success" and allowed.output["user"] == PG_USER, allowed.output


async def test_postgres_diagnostics_run_read_only(pg: asyncpg.Connection) -> None:
    from aiops_executor.tools.builtin.postgres import read_only_session

    async with read_only_session(DIAG_DSN, 5.0) as connection:
        assert await connection.fetchval("SHOW default_transaction_read_only") == "on"
        assert await connection.fetchval("SHOW statement_timeout") == "5s"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await connection.execute("CREATE TABLE aiops_must_not_exist (x int)")


async def test_postgres_overview(pg: asyncpg.Connection) -> None:
    outcome = await invoke("postgres_diagnostics", {}, postgres_dsn=DIAG_DSN_WITH_PASSWORD)
    assert outcome.status == "success", outcome.output
    out = outcome.output
    assert "hunter2-pg-pw" not in json.dumps(out)
    assert out["connected"] is True
    assert "section_errors" not in out
    assert out["server_version"] == await pg.fetchval("SHOW server_version")
    assert out["role"] == "primary" and out["replication"] == {"role": "primary", "replicas": []}
    assert (out["database"], out["user"]) == ("postgres", DIAG_USER)
    assert out["database_size_bytes"] > 0 and out["database_size"]
    connections = out["connections"]
    assert connections["max_connections"] == int(await pg.fetchval("SHOW max_connections"))
    assert connections["total"] >= 2  # this fixture's connection and the tool's own
    assert sum(connections["by_state"].values()) == connections["total"]
    assert 0 <= out["database_stats"]["cache_hit_ratio"] <= 1
    # Connections against the node's thresholds (the server is shared with the rest of the suite, so the real
    # count is only bounded from below): any use at all is "degraded" with a limit this low.
    limits = {"postgres_diagnostics": {"connections_degraded_percent": 0.01, "connections_failed_percent": 100}}
    judged = await invoke("postgres_diagnostics", {}, postgres_dsn=DIAG_DSN, thresholds=limits)
    available = connections["max_connections"] - connections["superuser_reserved"]
    assert judged.verdict == "degraded"
    assert [s for s in judged.signals if s.startswith("connections ") and s.endswith("%)")]
    assert any(f"/{available} (" in s for s in judged.signals)


async def test_postgres_long_running_query_and_lock_wait(pg: asyncpg.Connection) -> None:
    marker = f"aiops-tools-test-{uuid.uuid4().hex[:8]}"
    lock_key = random.randint(1, 2**31 - 1)
    waiter = await asyncpg.connect(PG_DSN)
    try:
        await pg.execute("SELECT pg_advisory_lock($1)", lock_key)
        blocked = asyncio.create_task(waiter.execute(f"/* {marker} */ SELECT pg_advisory_lock({lock_key})"))

        async def waiting() -> bool:
            count = await pg.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND wait_event_type = 'Lock'",
                f"%{marker}%SELECT%",
            )
            return bool(count)

        await _until(waiting)
        await asyncio.sleep(0.3)
        outcome = await invoke(
            "postgres_diagnostics", {"long_running_seconds": 0.2, "query_chars": 40}, postgres_dsn=DIAG_DSN
        )
        out = outcome.output
        long_running = [q for q in out["long_running_queries"] if marker in q["query"]]
        assert len(long_running) == 1
        assert long_running[0]["duration_seconds"] >= 0.2
        assert long_running[0]["wait_event"] == "Lock:advisory"
        assert len(long_running[0]["query"]) <= 40

        waits = [w for w in out["lock_waits"] if marker in w["query"]]
        assert len(waits) == 1
        holder_pid = pg.get_server_pid()
        assert waits[0]["pid"] == waiter.get_server_pid()
        assert waits[0]["blocked_by"] == [holder_pid]
        assert holder_pid in [s["pid"] for s in out["blocking_sessions"]]

        # Who blocks whom, for how long: the waiter against the node's thresholds.
        limits = {"postgres_diagnostics": {"lock_wait_degraded_seconds": 0.1, "lock_wait_failed_seconds": 3600}}
        judged = await invoke("postgres_diagnostics", {}, postgres_dsn=DIAG_DSN, thresholds=limits)
        assert judged.verdict in ("degraded", "failed")  # failed only if another test's session waits an hour
        blocking = [s for s in judged.signals if "waiting for locks" in s]
        assert blocking and f"blocked by pid {holder_pid} (" in " ".join(blocking)

        quiet = await invoke("postgres_diagnostics", {"long_running_seconds": 3600}, postgres_dsn=DIAG_DSN)
        assert not [q for q in quiet.output["long_running_queries"] if marker in q["query"]]

        await pg.execute("SELECT pg_advisory_unlock($1)", lock_key)
        await asyncio.wait_for(blocked, 5)
        await waiter.execute("SELECT pg_advisory_unlock($1)", lock_key)
    finally:
        await waiter.close()


async def test_postgres_session_is_read_only_with_a_statement_timeout() -> None:
    async with read_only_session(DIAG_DSN, timeout_seconds=2) as connection:
        assert await connection.fetchval("SHOW transaction_read_only") == "on"
        assert await connection.fetchval("SHOW statement_timeout") == "2s"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await connection.execute("CREATE TABLE aiops_tools_must_not_exist (id int)")
    with pytest.raises(asyncpg.QueryCanceledError):
        async with read_only_session(DIAG_DSN, timeout_seconds=0.2) as connection:
            await connection.execute("SELECT pg_sleep(2)")


async def test_postgres_sqlalchemy_style_dsn_is_accepted() -> None:
    dsn = DIAG_DSN.replace("postgresql://", "postgresql+asyncpg://")
    outcome = await invoke("postgres_diagnostics", {}, postgres_dsn=dsn)
    assert outcome.output["connected"] is True


async def test_postgres_unreachable_is_a_finding_without_the_password() -> None:
    dsn = f"postgresql://app:hunter2-pg-pw@127.0.0.1:{closed_port()}/orders"
    outcome = await invoke("postgres_diagnostics", {"timeout_seconds": 2}, postgres_dsn=dsn)
    assert outcome.status == "success"
    assert outcome.output["connected"] is False and outcome.output["reachable"] is False
    assert "hunter2-pg-pw" not in json.dumps(outcome.output)
    assert outcome.verdict == "failed" and outcome.signals[0].endswith(": connection refused")


async def test_postgres_refused_login_means_reachable() -> None:
    dsn = f"postgresql://{DIAG_USER}@{PG_HOST}:{PG_PORT}/aiops_no_such_database_{uuid.uuid4().hex[:6]}"
    outcome = await invoke("postgres_diagnostics", {}, postgres_dsn=dsn)
    assert outcome.output["connected"] is False and outcome.output["reachable"] is True
    assert outcome.output["error"].startswith("InvalidCatalogNameError")
    # The DSN is wrong, which says nothing of the server's health.
    assert outcome.verdict == "unknown" and "refused the login" in outcome.signals[0]


async def test_postgres_missing_or_invalid_dsn() -> None:
    missing = await invoke("postgres_diagnostics", {}, url="http://127.0.0.1/")
    assert missing.output["error_code"] == "TOOL_MISSING_TARGET"
    invalid = await invoke("postgres_diagnostics", {}, postgres_dsn="mysql://u:hunter2-pg-pw@h/db")
    assert invalid.output["error_code"] == "TOOL_INVALID_TARGET"
    assert "hunter2-pg-pw" not in json.dumps(invalid.output)
    as_argument = await invoke("postgres_diagnostics", {"postgres_dsn": PG_DSN})
    assert as_argument.output["error_code"] == "TOOL_INVALID_ARGUMENTS"


# ----------------------------------------------------------------------------------------------- redis_info


@pytest.fixture
async def redis_db() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_TEST_DB_URL, decode_responses=True)
    yield client
    await client.aclose()


async def test_redis_overview_and_keyspace(redis_db: Redis) -> None:
    key = f"aiops-tools-test:{uuid.uuid4().hex}"
    await redis_db.set(key, "v", ex=60)
    await redis_db.get(key)
    try:
        outcome = await invoke("redis_info", {}, redis_url=REDIS_TEST_DB_URL)
    finally:
        await redis_db.delete(key)
    assert outcome.status == "success", outcome.output
    out = outcome.output
    server_info = await redis_db.info("server")
    assert out["connected"] is True
    assert out["version"] == server_info["redis_version"]
    assert out["memory"]["used_memory"] > 0 and out["memory"]["used_memory_human"]
    assert "maxmemory" in out["memory"]
    assert out["clients"]["connected_clients"] >= 2
    assert out["clients"]["blocked_clients"] >= 0
    assert out["stats"]["keyspace_hits"] >= 1
    assert 0 < out["stats"]["hit_ratio"] <= 1
    assert out["keyspace"][f"db{REDIS_TEST_DB}"]["keys"] >= 1
    assert out["replication"]["role"] in ("master", "slave")
    assert isinstance(out["slowlog"], list)


async def test_redis_slowlog_entries_are_truncated(redis_db: Redis) -> None:
    threshold = int(str((await redis_db.config_get("slowlog-log-slower-than"))["slowlog-log-slower-than"]))
    if threshold < 0 or threshold > 200_000:
        pytest.skip("the slow log is disabled on this Redis server")
    marker = uuid.uuid4().hex[:8]
    # A script that busies the server for longer than the slow-log threshold; the comment tells it apart.
    script = f"-- {marker}\nlocal n = 0 while n < tonumber(ARGV[1]) do n = n + 1 end return n"
    iterations = 100_000
    while True:
        started = time.perf_counter()
        await redis_db.eval(script, 0, iterations)
        if (time.perf_counter() - started) * 1_000_000 > threshold * 2:
            break
        iterations *= 4
    outcome = await invoke("redis_info", {"slowlog_entries": 128, "command_chars": 40}, redis_url=REDIS_URL)
    entries = outcome.output["slowlog"]
    ours = [e for e in entries if e["command"].lower().startswith(f"eval -- {marker}")]
    assert ours, entries
    assert all(len(e["command"]) <= 40 for e in entries)
    assert ours[0]["command"].endswith("...")
    assert ours[0]["duration_us"] >= threshold
    assert ours[0]["started_at"].endswith("+00:00")
    none = await invoke("redis_info", {"slowlog_entries": 0}, redis_url=REDIS_URL)
    assert "slowlog" not in none.output


async def test_redis_unreachable_is_a_finding_without_the_password() -> None:
    url = f"redis://:hunter2-redis-pw@127.0.0.1:{closed_port()}/0"
    outcome = await invoke("redis_info", {"timeout_seconds": 2}, redis_url=url)
    assert outcome.status == "success"
    assert outcome.output["connected"] is False and outcome.output["reachable"] is False
    assert "hunter2-redis-pw" not in json.dumps(outcome.output)
    assert outcome.verdict == "failed" and outcome.signals[0].endswith(": connection refused")


async def test_redis_missing_or_invalid_url() -> None:
    missing = await invoke("redis_info", {})
    assert missing.output["error_code"] == "TOOL_MISSING_TARGET"
    invalid = await invoke("redis_info", {}, redis_url="http://127.0.0.1:6379")
    assert invalid.output["error_code"] == "TOOL_INVALID_TARGET"
