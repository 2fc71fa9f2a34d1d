"""Approvals over the API, on SQLite and PostgreSQL: a call that needs one pauses the run (awaiting_approval,
approval_requested, no process holding it); the decision resumes it from its checkpoint; an undecided call is
rejected after AIOPS_APPROVAL_TIMEOUT_SECONDS; waiting does not count toward the run's timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from aiops_executor.app import create_app
from aiops_executor.core.settings import Settings
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, RoleHeaders, login, make_settings
from tests.helpers import API, add_simulator, assert_error
from tests.tool_servers.test_tool_servers import events, register, stdio_body, team_body, tool_calls


async def make_team(client: httpx.AsyncClient, headers: dict[str, str], **kwargs: Any) -> str:
    body = team_body(
        "fixers",
        ["tcp_check", "dns_lookup"],
        {"host": "127.0.0.1", "port": 9, "name": "localhost"},
        approval_required_tools=["tcp_check"],
        **kwargs,
    )
    response = await client.post(f"{API}/teams", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["team_id"])


async def start(client: httpx.AsyncClient, headers: dict[str, str], team_id: str) -> dict[str, Any]:
    """Runs until the run stops to wait (``stream: false`` returns then)."""
    response = await client.post(
        f"{API}/teams/{team_id}/execute", json={"input": {"task": "fix it"}, "stream": False}, headers=headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def wait_for(client: httpx.AsyncClient, headers: dict[str, str], execution_id: str, *statuses: str) -> dict:
    for _ in range(600):
        body = (await client.get(f"{API}/executions/{execution_id}", headers=headers)).json()
        if body["status"] in statuses:
            return dict(body)
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution never reached {statuses}: {body}")


async def approvals(client: httpx.AsyncClient, headers: dict[str, str], execution_id: str) -> list[dict[str, Any]]:
    page = await client.get(f"{API}/executions/{execution_id}/approvals", headers=headers)
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


async def paused_run(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    await add_simulator(client, headers)
    execution = await start(client, headers, await make_team(client, headers))
    assert execution["status"] == "awaiting_approval", execution
    assert execution["worker_id"] is None
    [approval] = await approvals(client, headers, execution["execution_id"])
    assert approval["status"] == "pending" and approval["tool"] == "tcp_check"
    assert approval["input"] == {"host": "127.0.0.1", "port": 9} and approval["agent_id"] == "operator"
    items = await events(client, headers, execution["execution_id"])
    [requested] = [e for e in items if e["event"] == "approval_requested"]
    assert requested["data"]["approval_id"] == approval["approval_id"] and requested["data"]["tool"] == "tcp_check"
    assert requested["data"]["input"] == approval["input"]
    # The other tool of the agent's turn ran; the waiting one did not; nothing ended the stream.
    assert set(tool_calls(items)) == {"dns_lookup"}
    assert not [e for e in items if e["event"] in ("execution_complete", "execution_error")]
    return execution, approval


async def test_the_inbox_lists_the_calls_of_every_run_latest_change_first(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: RoleHeaders
) -> None:
    first, first_call = await paused_run(client, admin_headers)
    body = team_body(
        "fixers-2",
        ["tcp_check", "dns_lookup"],
        {"host": "127.0.0.1", "port": 9, "name": "localhost"},
        approval_required_tools=["tcp_check"],
    )
    team = await client.post(f"{API}/teams", json=body, headers=admin_headers)
    assert team.status_code == 201, team.text
    second = await start(client, admin_headers, team.json()["team_id"])
    [second_call] = await approvals(client, admin_headers, second["execution_id"])

    viewer = await role_headers("viewer")

    async def inbox(**params: str) -> dict[str, Any]:
        response = await client.get(f"{API}/approvals", params=params, headers=viewer)
        assert response.status_code == 200, response.text
        return dict(response.json())

    waiting = await inbox(status="pending")
    assert waiting["total"] == 2
    assert [a["approval_id"] for a in waiting["items"]] == [second_call["approval_id"], first_call["approval_id"]]
    assert {a["execution_id"] for a in waiting["items"]} == {first["execution_id"], second["execution_id"]}
    path = f"{API}/executions/{first['execution_id']}/approvals/{first_call['approval_id']}"
    assert (await client.post(path, json={"decision": "reject"}, headers=admin_headers)).status_code == 200
    assert (await inbox(status="pending"))["total"] == 1
    rejected = await inbox(status="rejected")
    assert [a["approval_id"] for a in rejected["items"]] == [first_call["approval_id"]]
    assert (await inbox())["items"][0]["approval_id"] == first_call["approval_id"]  # its decision is the latest change
    assert_error(
        await client.get(f"{API}/approvals", params={"status": "maybe"}, headers=viewer), 422, "VALIDATION_ERROR"
    )


async def test_an_approved_call_runs_when_the_run_resumes(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: RoleHeaders
) -> None:
    execution, approval = await paused_run(client, admin_headers)
    execution_id = execution["execution_id"]
    path = f"{API}/executions/{execution_id}/approvals/{approval['approval_id']}"
    viewer = await role_headers("viewer")
    assert_error(await client.post(path, json={"decision": "approve"}, headers=viewer), 403, "FORBIDDEN")
    assert_error(await client.post(path, json={"decision": "maybe"}, headers=admin_headers), 422, "VALIDATION_ERROR")

    operator = await role_headers("operator")
    decided = await client.post(path, json={"decision": "approve", "comment": "go"}, headers=operator)
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved" and decided.json()["decided_by"].startswith("user:operator-")

    finished = await wait_for(client, admin_headers, execution_id, "success", "failed")
    assert finished["status"] == "success", finished
    assert finished["attempt"] == 1
    items = await events(client, admin_headers, execution_id)
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
    kinds = [e["event"] for e in items]
    assert kinds.index("approval_requested") < kinds.index("approval_resolved") < kinds.index("execution_resumed")
    [resolved] = [e for e in items if e["event"] == "approval_resolved"]
    assert resolved["data"]["decision"] == "approve" and resolved["data"]["decided_by"] == decided.json()["decided_by"]
    calls = tool_calls(items)
    assert calls["tcp_check"]["status"] == "success" and calls["tcp_check"]["output"]["reachable"] is False
    assert kinds.count("tool_call") == 2  # dns_lookup, made before the pause, was not made again

    assert_error(
        await client.post(path, json={"decision": "reject"}, headers=operator), 409, "APPROVAL_ALREADY_DECIDED"
    )
    audit = await client.get(
        f"{API}/audit-logs", params={"resource_id": execution_id, "action": "approve_tool_call"}, headers=admin_headers
    )
    [entry] = audit.json()["items"]
    assert entry["actor"] == decided.json()["decided_by"] and entry["details"]["comment"] == "go"


async def test_a_rejected_call_returns_the_rejection_to_the_agent(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    execution, approval = await paused_run(client, admin_headers)
    execution_id = execution["execution_id"]
    missing = f"{API}/executions/{execution_id}/approvals/{'0' * 8}-0000-0000-0000-{'0' * 12}"
    assert_error(
        await client.post(missing, json={"decision": "reject"}, headers=admin_headers), 404, "APPROVAL_NOT_FOUND"
    )
    path = f"{API}/executions/{execution_id}/approvals/{approval['approval_id']}"
    decided = await client.post(
        path, json={"decision": "reject", "comment": "not during the sale"}, headers=admin_headers
    )
    assert decided.json()["status"] == "rejected"

    finished = await wait_for(client, admin_headers, execution_id, "success", "failed")
    call = tool_calls(await events(client, admin_headers, execution_id))["tcp_check"]
    assert call["status"] == "error" and call["output"]["error_code"] == "APPROVAL_REJECTED"
    assert call["output"]["comment"] == "not during the sale"
    assert call["verdict"] == "unknown"
    [node] = finished["result"]["node_results"]
    assert "not during the sale" in node["agents"][0]["output"]
    # Its only call was rejected: the node team observed nothing, and the run does not pretend it did.
    assert finished["status"] == "failed", finished
    assert node["status"] == "failed" and node["error_code"] == "NO_EVIDENCE"
    assert node["error"] == "no tool call observed the resource (APPROVAL_REJECTED x1)"


# The run may work 3 s in all (on a loaded machine its own steps took more than 1 s); the approval waits 4 s, so
# the wait alone is longer than the whole budget.
RUN_TIMEOUT_SECONDS = 3
APPROVAL_TIMEOUT_SECONDS = 4


@pytest.fixture
def quick_timeout(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url, tmp_path / "data", approval_timeout_seconds=APPROVAL_TIMEOUT_SECONDS, worker_lease_seconds=6
    )


@pytest.fixture
async def quick(quick_timeout: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    application = create_app(quick_timeout)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, await login(http, ADMIN_USERNAME, ADMIN_PASSWORD)


async def test_an_undecided_call_is_rejected_at_its_deadline_and_waiting_costs_no_run_time(
    quick: tuple[httpx.AsyncClient, dict[str, str]],
) -> None:
    client, headers = quick
    await add_simulator(client, headers)
    team_id = await make_team(client, headers)
    await client.put(f"{API}/teams/{team_id}", json={"timeout_seconds": RUN_TIMEOUT_SECONDS}, headers=headers)
    execution = await start(client, headers, team_id)
    assert execution["status"] == "awaiting_approval", execution
    # The wait is longer than the run's whole timeout: it does not count.
    finished = await wait_for(client, headers, execution["execution_id"], "success", "failed", "timeout")
    # Not a timeout: rejected, the call observed nothing (NO_EVIDENCE), as the run says.
    assert finished["status"] == "failed", finished
    assert finished["result"]["node_results"][0]["error_code"] == "NO_EVIDENCE"
    [approval] = await approvals(client, headers, execution["execution_id"])
    assert approval["status"] == "rejected" and approval["decided_by"] == "system:timeout"
    call = tool_calls(await events(client, headers, execution["execution_id"]))["tcp_check"]
    assert call["output"]["error_code"] == "APPROVAL_REJECTED"
    assert f"no decision within {APPROVAL_TIMEOUT_SECONDS} s" in call["output"]["comment"]


async def test_a_waiting_run_can_be_cancelled(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    execution, approval = await paused_run(client, admin_headers)
    execution_id = execution["execution_id"]
    cancelled = await client.post(f"{API}/executions/{execution_id}/cancel", headers=admin_headers)
    assert cancelled.status_code == 202, cancelled.text
    assert (await wait_for(client, admin_headers, execution_id, "cancelled"))["status"] == "cancelled"
    [row] = await approvals(client, admin_headers, execution_id)
    assert row["status"] == "cancelled"
    late = await client.post(
        f"{API}/executions/{execution_id}/approvals/{approval['approval_id']}",
        json={"decision": "approve"},
        headers=admin_headers,
    )
    assert_error(late, 409, "APPROVAL_ALREADY_DECIDED")
    kinds = [e["event"] for e in await events(client, admin_headers, execution_id)]
    assert kinds[-1] == "execution_cancelled"


async def test_every_tool_of_a_server_that_requires_approval_waits(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await add_simulator(client, admin_headers)
    await register(client, admin_headers, stdio_body(approval_required=True))
    listed = await client.get(f"{API}/tools", params={"size": 100}, headers=admin_headers)
    assert {t["name"]: t for t in listed.json()["items"]}["tools.restart_pod"]["approval_required"] is True
    body = team_body("k8s", ["tools.restart_pod"], {"pod": "checkout-7f9"})
    team_id = (await client.post(f"{API}/teams", json=body, headers=admin_headers)).json()["team_id"]
    execution = await start(client, admin_headers, team_id)
    assert execution["status"] == "awaiting_approval", execution
    [approval] = await approvals(client, admin_headers, execution["execution_id"])
    assert approval["tool"] == "tools.restart_pod" and approval["input"] == {"pod": "checkout-7f9"}
    path = f"{API}/executions/{execution['execution_id']}/approvals/{approval['approval_id']}"
    await client.post(path, json={"decision": "approve"}, headers=admin_headers)
    await wait_for(client, admin_headers, execution["execution_id"], "success")
    call = tool_calls(await events(client, admin_headers, execution["execution_id"]))["tools.restart_pod"]
    assert call["status"] == "success" and call["output"]["text"] == "restarted checkout-7f9"


async def test_approval_tools_must_be_among_the_agents_tools(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await add_simulator(client, admin_headers)
    body = team_body("bad", ["tcp_check"], {}, approval_required_tools=["dns_lookup"])
    errors = assert_error(await client.post(f"{API}/teams", json=body, headers=admin_headers), 400, "INVALID_TOPOLOGY")
    [error] = errors["details"]["errors"]
    assert error["code"] == "APPROVAL_TOOL_NOT_LISTED"
    assert error["path"] == "topology.nodes[0].agents[0].approval_required_tools[0]"


@pytest.mark.postgres
@pytest.mark.long
@pytest.mark.timeout(300)
async def test_a_run_started_through_one_api_is_decided_through_another_after_its_worker_died(tmp_path: Path) -> None:
    """Real processes on PostgreSQL + Redis: the run starts through API process A and pauses; the worker that ran
    it is killed while it waits (it holds no run then); the decision goes through API process B; a new worker
    resumes the run from its checkpoint."""
    from tests.executions.test_scale_out import ADMIN, Cluster, _cluster_env
    from tests.processes import Process, event_log, pg, run_cli, start_run

    name = f"aiops_approval_{tmp_path.name[-8:].replace('-', '_')}"
    await pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await pg(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    cluster: Cluster | None = None
    try:
        migrated = run_cli(_cluster_env(url, tmp_path / "data"), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        cluster = Cluster(url, tmp_path, workers=1, concurrency=4)
        await cluster.start()
        api_a, api_b = cluster.apis
        async with api_a.client(ADMIN) as a, api_b.client(ADMIN) as b:
            await add_simulator(a, name="scale-sim", models={"sim": 0})
            ref = {"model_provider": "scale-sim", "model_id": "sim"}
            body = team_body(
                "fixers", ["tcp_check"], {"host": "127.0.0.1", "port": 9}, approval_required_tools=["tcp_check"]
            )
            for holder in (
                body["topology"]["nodes"][0]["agents"][0],
                body["topology"]["nodes"][0]["supervisor_config"],
            ):
                holder.update(ref)
            body["topology"]["global_supervisor"].update(ref)
            team = await a.post(f"{API}/teams", json=body)
            assert team.status_code == 201, team.text
            execution_id = await start_run(a, team.json()["team_id"])
            paused = await wait_for(a, {}, execution_id, "awaiting_approval", "failed")
            assert paused["status"] == "awaiting_approval" and paused["worker_id"] is None

            cluster.workers[0].kill()  # holds nothing now: the run waits in the database, not in a process
            env = _cluster_env(url, tmp_path / "data")
            replacement = Process("worker-new", ["worker", "--concurrency", "2"], env, tmp_path / "worker-new.log")
            cluster.workers.append(replacement)
            await replacement.start(ready_path=None)

            [approval] = (await b.get(f"{API}/executions/{execution_id}/approvals")).json()["items"]
            decided = await b.post(
                f"{API}/executions/{execution_id}/approvals/{approval['approval_id']}", json={"decision": "approve"}
            )
            assert decided.status_code == 200, decided.text
            finished = await wait_for(a, {}, execution_id, "success", "failed")
            assert finished["status"] == "success", finished
            log = await event_log(a, execution_id)
            assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
            kinds = [kind for _, kind, _ in log]
            assert kinds.count("approval_requested") == 1 and kinds.count("approval_resolved") == 1
            assert kinds[-1] == "execution_complete"
            [call] = [data for _, kind, data in log if kind == "tool_call"]
            assert call["tool"] == "tcp_check" and call["status"] == "success"
    finally:
        if cluster is not None:
            cluster.stop()
        await pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
