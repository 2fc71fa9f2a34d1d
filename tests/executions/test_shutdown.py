"""Stopping the app on the embedded default (SQLite, one process): every run it started is suspended before the
stop returns -- including one whose submission completed while the others were being suspended -- so none goes on
writing to a closed database, and the next process runs each of them to the end."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from aiops_executor.app import create_app
from aiops_executor.executions.manager import ExecutionManager
from aiops_executor.executions.runner import ActiveRun
from aiops_executor.services import ServiceContext
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, login, make_settings
from tests.executions.test_approvals import wait_for
from tests.helpers import API, add_simulator
from tests.tool_servers.test_tool_servers import team_body


async def _team(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> str:
    body = team_body(name, ["tcp_check"], {"host": "127.0.0.1", "port": 9})
    response = await client.post(f"{API}/teams", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["team_id"])


async def _submit(client: httpx.AsyncClient, headers: dict[str, str], team_id: str) -> str:
    response = await client.post(
        f"{API}/teams/{team_id}/executions", json={"input": {"task": "check"}}, headers=headers
    )
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


def _run_tasks() -> list[asyncio.Task[Any]]:
    """Tasks of runs, and of their checkpoint writes, still going."""
    names = ("execution-", "checkpoint-group-commit")
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(names) and not t.done()]


async def test_runs_under_way_when_the_app_stops_are_suspended_then_finished_by_the_next_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'aiops.db'}", tmp_path / "data")
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client,
    ):
        headers = await login(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        await add_simulator(client, headers, latency_ms=300)
        context: ServiceContext = app.state.context
        manager = context.executions

        # The second submission is committed now but reaches the manager only while the stop is suspending
        # the first run: a request that was under way as the app began to stop.
        under_way: list[uuid.UUID] = []
        launch = ExecutionManager.launch
        monkeypatch.setattr(manager, "launch", lambda execution_id, **_: under_way.append(execution_id))
        late = await _submit(client, headers, await _team(client, headers, "late"))
        monkeypatch.setattr(manager, "launch", lambda *args, **kwargs: launch(manager, *args, **kwargs))
        running = await _submit(client, headers, await _team(client, headers, "running"))
        await wait_for(client, headers, running, "running")

        suspend = ActiveRun.suspend

        def suspend_then_submit(active: ActiveRun) -> None:
            suspend(active)
            while under_way:
                manager.launch(under_way.pop())

        monkeypatch.setattr(ActiveRun, "suspend", suspend_then_submit)
    assert _run_tasks() == []
    assert not under_way

    monkeypatch.undo()
    again = create_app(settings)
    async with (
        LifespanManager(again),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=again), base_url="http://test") as client,
    ):
        headers = await login(client, ADMIN_USERNAME, ADMIN_PASSWORD)
        for execution_id in (running, late):
            finished = await wait_for(client, headers, execution_id, "success", "failed", "timeout", "cancelled")
            assert finished["status"] == "success", finished
