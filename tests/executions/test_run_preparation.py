"""A run attempt whose preparation fails (its team snapshot, tool servers or checkpointer) ends ``failed`` with
that reason and a terminal event, on SQLite and PostgreSQL -- never left ``running`` until a lease calls the
process lost."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aiops_executor.services import ServiceContext
from tests.executions.test_approvals import wait_for
from tests.helpers import API, add_simulator
from tests.tool_servers.test_tool_servers import events, team_body


async def test_a_run_whose_preparation_fails_ends_failed_with_the_reason(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_simulator(client, admin_headers)
    body = team_body("prepared", ["tcp_check"], {"host": "127.0.0.1", "port": 9})
    team = await client.post(f"{API}/teams", json=body, headers=admin_headers)
    assert team.status_code == 201, team.text

    async def unprepared(started: Any) -> Any:
        raise RuntimeError("the tool server registry did not answer")

    monkeypatch.setattr(context.executions.runner, "_execution_run", unprepared)
    started = await client.post(
        f"{API}/teams/{team.json()['team_id']}/executions", json={"input": {"task": "check"}}, headers=admin_headers
    )
    assert started.status_code == 202, started.text
    execution_id = started.json()["execution_id"]

    finished = await wait_for(client, admin_headers, execution_id, "success", "failed", "timeout", "cancelled")
    reason = "the run could not be prepared: the tool server registry did not answer"
    assert (finished["status"], finished["error_code"], finished["error_message"]) == (
        "failed",
        "EXECUTION_FAILED",
        reason,
    )
    assert finished["worker_id"] is None and finished["completed_at"] is not None
    stored = await events(client, admin_headers, execution_id)
    assert stored[-1]["event"] == "execution_error"
    assert stored[-1]["data"]["error_message"] == reason
    # The team is free again: its next run is not refused as "still running".
    monkeypatch.undo()
    again = await client.post(
        f"{API}/teams/{team.json()['team_id']}/executions", json={"input": {"task": "check"}}, headers=admin_headers
    )
    assert again.status_code == 202, again.text
