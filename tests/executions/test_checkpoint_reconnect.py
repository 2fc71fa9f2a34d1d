"""The PostgreSQL checkpointer outlives its connections: when they are cut in the middle of a run (as proxies and
cloud databases cut connections left idle during long model calls; here ``pg_terminate_backend``), the next save
gets a new connection and the run ends ``success``."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from aiops_executor.executions.checkpoints import APPLICATION_NAME
from tests.conftest import PG_HOST, PG_PORT, PG_USER, _pg_admin
from tests.executions.test_approvals import wait_for
from tests.helpers import API, add_simulator
from tests.tool_servers.test_tool_servers import team_body

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("backend", ["postgresql"], indirect=True)]


async def _checkpoints_of(database: str, execution_id: str) -> int:
    admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        return int(await admin.fetchval("SELECT count(*) FROM checkpoints WHERE thread_id = $1", execution_id))
    finally:
        await admin.close()


async def _cut_the_checkpointers_connections(database: str) -> int:
    admin = await _pg_admin()
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
            database,
            APPLICATION_NAME,
        )
    finally:
        await admin.close()
    return sum(1 for row in rows if row[0])


async def test_a_run_survives_its_checkpointer_losing_its_connections(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database_url: str
) -> None:
    database = str(make_url(database_url).database)
    await add_simulator(client, admin_headers, latency_ms=300)
    body = team_body("reconnecting", ["tcp_check"], {"host": "127.0.0.1", "port": 9})
    team = await client.post(f"{API}/teams", json=body, headers=admin_headers)
    assert team.status_code == 201, team.text
    started = await client.post(
        f"{API}/teams/{team.json()['team_id']}/executions", json={"input": {"task": "check"}}, headers=admin_headers
    )
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]

    deadline = time.monotonic() + 30
    while await _checkpoints_of(database, execution_id) == 0:  # mid-run: saved once, more to come
        assert time.monotonic() < deadline, "the run saved no checkpoint"
        await asyncio.sleep(0.05)
    assert await _cut_the_checkpointers_connections(database) >= 1
    cut_mid_run = await client.get(f"{API}/executions/{execution_id}", headers=admin_headers)
    assert cut_mid_run.json()["status"] == "running"  # more saves to come, on connections that were cut

    finished = await wait_for(client, admin_headers, execution_id, "success", "failed", "timeout", "cancelled")
    assert finished["status"] == "success", finished
