"""mysql_diagnostics against the machine's real MariaDB, put in each state: healthy, a row lock held while another
transaction waits, an account at its connection limit, refused credentials, a superuser refused, nothing there."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomysql
import pytest

from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import SETTING_ALLOW_SUPERUSER, ToolContext, ToolOutcome
from tests.processes import free_port

MYSQL_HOST = os.environ.get("AIOPS_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("AIOPS_TEST_MYSQL_PORT", "3306"))
ROOT = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": "root", "password": "", "autocommit": True}
# One least-privileged account and one database per test process (accounts belong to the whole server).
SUFFIX = uuid.uuid4().hex[:8]
DIAG_USER = f"aiops_diag_{SUFFIX}"
DIAG_PASSWORD = f"hunter2-my-{SUFFIX}"
DATABASE = f"aiops_test_{SUFFIX}"
DIAG_DSN = f"mysql://{DIAG_USER}:{DIAG_PASSWORD}@{MYSQL_HOST}:{MYSQL_PORT}/{DATABASE}"

pytestmark = pytest.mark.xdist_group("mysql")


async def root_execute(*statements: str) -> None:
    connection = await aiomysql.connect(**ROOT)
    try:
        async with connection.cursor() as cursor:
            for statement in statements:
                await cursor.execute(statement)
    finally:
        connection.close()


@pytest.fixture(autouse=True)
async def diag_account() -> AsyncIterator[None]:
    await root_execute(
        f"CREATE DATABASE {DATABASE}",
        f"CREATE TABLE {DATABASE}.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB",
        f"INSERT INTO {DATABASE}.orders VALUES (1, 'book')",  # noqa: S608 - the test's own names
        f"CREATE USER '{DIAG_USER}'@'%' IDENTIFIED BY '{DIAG_PASSWORD}'",
        f"GRANT PROCESS, SLAVE MONITOR ON *.* TO '{DIAG_USER}'@'%'",
        f"GRANT SELECT ON {DATABASE}.* TO '{DIAG_USER}'@'%'",
    )
    try:
        yield
    finally:
        await root_execute(f"DROP USER IF EXISTS '{DIAG_USER}'@'%'", f"DROP DATABASE IF EXISTS {DATABASE}")


async def diagnose(dsn: str = DIAG_DSN, arguments: dict[str, Any] | None = None, **attributes: Any) -> ToolOutcome:
    context = ToolContext(node_id="db", attributes={"mysql_dsn": dsn, **attributes})
    return await default_registry().invoke("mysql_diagnostics", arguments or {}, context)


async def test_a_row_lock_wait_names_who_blocks_whom() -> None:
    # First in the module (its tests run in order, on one worker): run after another test's diagnostics in the same
    # process, the holder's transaction showed no InnoDB transaction and took no row lock (seen on MariaDB 10.11,
    # not reproduced outside pytest; not understood yet).
    locked = f"aiops_lock_{uuid.uuid4().hex[:8]}"
    await root_execute(
        f"CREATE DATABASE {locked}",
        f"CREATE TABLE {locked}.orders (id INT PRIMARY KEY, item VARCHAR(40)) ENGINE=InnoDB",
        f"INSERT INTO {locked}.orders VALUES (1, 'book')",  # noqa: S608 - the test's own names
    )
    holder = await aiomysql.connect(**ROOT, db=locked)
    waiter = await aiomysql.connect(**ROOT, db=locked)
    holder_thread, waiter_thread = holder.thread_id(), waiter.thread_id()
    # InnoDB counts waits in whole seconds: until the waiter has waited one.
    limits = {"mysql_diagnostics": {"lock_wait_degraded_seconds": 1, "lock_wait_failed_seconds": 3600}}
    try:
        async with holder.cursor() as hold, waiter.cursor() as wait:
            await hold.execute("BEGIN")
            await hold.execute("UPDATE orders SET item = 'held' WHERE id = 1")
            blocked = asyncio.create_task(wait.execute("UPDATE orders SET item = 'pen' WHERE id = 1"))
            for _ in range(300):
                outcome = await diagnose(thresholds=limits)
                mine = [w for w in outcome.output.get("lock_waits") or [] if w["thread_id"] == waiter_thread]
                if mine and outcome.verdict != "ok":
                    break
                await asyncio.sleep(0.02)
            await hold.execute("ROLLBACK")
            await asyncio.wait_for(blocked, 10)
    finally:
        await holder.ensure_closed()
        await waiter.ensure_closed()
        await root_execute(f"DROP DATABASE {locked}")
    assert mine, outcome.signals
    assert mine[0]["blocked_by"] == [holder_thread]
    assert outcome.verdict in ("degraded", "failed")
    assert f"blocked by thread {holder_thread}" in " ".join(outcome.signals)


async def test_a_healthy_server_is_read_read_only_and_never_shows_the_password() -> None:
    outcome = await diagnose()
    assert outcome.status == "success", outcome.output
    out = outcome.output
    assert out["connected"] is True and "section_errors" not in out, out
    assert out["server_version"] and out["connections"]["max_connections"] > 0
    assert out["replication"] == {"role": "primary or standalone"}
    assert outcome.verdict == "ok", outcome.signals
    assert [s for s in outcome.signals if s.startswith("connections ")]
    assert DIAG_PASSWORD not in json.dumps(out)


async def test_an_account_at_its_connection_limit_is_failed() -> None:
    await root_execute(f"ALTER USER '{DIAG_USER}'@'%' WITH MAX_USER_CONNECTIONS 1")
    taken = await aiomysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user=DIAG_USER, password=DIAG_PASSWORD, db=DATABASE
    )
    try:
        outcome = await diagnose()
    finally:
        taken.close()
    assert outcome.verdict == "failed"
    assert outcome.signals == [
        f"{MYSQL_HOST}:{MYSQL_PORT}: connections exhausted for this account (its max_user_connections is reached)"
    ]


async def test_credentials_the_server_refuses_observe_nothing() -> None:
    wrong = DIAG_DSN.replace(DIAG_PASSWORD, "not-the-password")
    outcome = await diagnose(wrong)
    assert outcome.verdict == "unknown" and "refused the login" in outcome.signals[0]
    assert not outcome.observed
    assert "not-the-password" not in json.dumps(outcome.output)


async def test_a_superuser_is_refused_unless_allowed() -> None:
    root_dsn = f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{DATABASE}"
    refused = await diagnose(root_dsn)
    assert refused.status == "error" and refused.output["error_code"] == "DIAGNOSTICS_SUPERUSER_REFUSED"
    assert refused.verdict == "unknown"
    context = ToolContext(attributes={"mysql_dsn": root_dsn}, settings={SETTING_ALLOW_SUPERUSER: True})
    allowed = await default_registry().invoke("mysql_diagnostics", {}, context)
    assert allowed.output["connected"] is True


async def test_nothing_listening_is_failed_and_a_bad_dsn_is_ours() -> None:
    outcome = await diagnose(f"mysql://u:hunter2@127.0.0.1:{free_port()}/db", {"timeout_seconds": 2})
    assert outcome.verdict == "failed" and outcome.signals[0].endswith(": connection refused")
    assert outcome.output["reachable"] is False
    invalid = await diagnose("postgresql://u@h/db")
    assert invalid.output["error_code"] == "TOOL_INVALID_TARGET" and invalid.verdict == "unknown"
