"""Executions over real HTTP (uvicorn + httpx-sse), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_sse import aconnect_sse
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.app import create_app
from aiops_executor.core.context import AppContext
from aiops_executor.core.db import Database, utcnow
from aiops_executor.executions import repository
from aiops_executor.executions.models import Execution, ExecutionEventRow
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, make_settings
from tests.helpers import API, add_simulator, assert_error


@dataclass
class Live:
    url: str
    context: AppContext
    headers: dict[str, str]

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=30, **kwargs)


@asynccontextmanager
async def _serve(database_url: str, data_dir: Path, **overrides: Any) -> AsyncIterator[Live]:
    """A real server on a free port; stopped on the way out, also when the test fails inside (an async generator
    abandoned by a failure would leave it, and its worker, running on the session's event loop)."""
    app = create_app(make_settings(database_url, data_dir, **overrides))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url) as client:
        token = await client.post(f"{API}/auth/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    try:
        yield Live(url, app.state.context, headers)
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def _rows(database_url: str) -> AsyncIterator[AsyncSession]:
    """A transaction on the database, with no service running (to leave rows as a dead process would)."""
    database = Database(database_url)
    try:
        async with database.sessionmaker() as session, session.begin():
            yield session
    finally:
        await database.dispose()


@pytest.fixture
async def live(database_url: str, tmp_path: Path) -> AsyncIterator[Live]:
    async with _serve(database_url, tmp_path / "data", sse_heartbeat_seconds=0.05) as server:
        yield server


def team_body(name: str, nodes: int = 3, strategy: str = "hierarchical") -> dict[str, Any]:
    ref = {"model_provider": "local-sim", "model_id": "sim-1"}
    node_ids = [f"n{i}" for i in range(nodes)]
    return {
        "team_name": name,
        "timeout_seconds": 60,
        "topology": {
            "nodes": [
                {
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
                for node_id in node_ids
            ],
            # a chain: n0 depends on n1, n1 on n2 ...
            "edges": [
                {"source_node_id": a, "target_node_id": b, "relation_type": "depends_on"}
                for a, b in itertools.pairwise(node_ids)
            ],
            "global_supervisor": {**ref, "coordination_strategy": strategy},
            "allow_isolated_nodes": True,
        },
    }


async def make_team(client: httpx.AsyncClient, name: str = "diagnosis", **kwargs: Any) -> str:
    response = await client.post(f"{API}/teams", json=team_body(name, **kwargs))
    assert response.status_code == 201, response.text
    return str(response.json()["team_id"])


TASK = {"input": {"task": "Why is checkout slow?", "context": {"ticket": "INC-7"}}}


async def collect(client: httpx.AsyncClient, method: str, path: str, limit: int | None = None, **kwargs: Any) -> list:
    """(id, event, data) of an SSE stream, stopping after ``limit`` events when given."""
    events = []
    async with aconnect_sse(client, method, path, **kwargs) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for message in source.aiter_sse():
            events.append((message.id, message.event, json.loads(message.data)))
            if limit is not None and len(events) >= limit:
                break
    return events


def contract_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An error body with the contract's four keys (and the extra fields this error carries)."""
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert {"error_code", "error_message", "details", "request_id"} <= set(body), body
    assert body["error_code"] == code and body["request_id"] == response.headers["x-request-id"]
    return body


LIVE = {"agent_token", "agent_tokens_discarded"}


def check_ids(events: list, execution_id: str | None = None) -> None:
    last_id = ""
    for sse_id, kind, data in events:
        if kind == "heartbeat":
            # No id line: the client's last event id stays where it was.
            assert sse_id == last_id and data["seq"] == (int(last_id) if last_id else 0)
            continue
        if kind in LIVE:
            # Token deltas are live only: no id line and no seq; they come after the event they follow.
            assert sse_id == last_id and "seq" not in data
            continue
        assert int(sse_id) == data["seq"]
        last_id = sse_id
        if execution_id:
            assert data["execution_id"] == execution_id


async def wait_for_status(client: httpx.AsyncClient, execution_id: str, *statuses: str) -> dict[str, Any]:
    for _ in range(400):
        body = (await client.get(f"{API}/executions/{execution_id}")).json()
        if body["status"] in statuses:
            return dict(body)
        await asyncio.sleep(0.025)
    raise AssertionError(f"execution never reached {statuses}: {body}")


async def stored_events(client: httpx.AsyncClient, execution_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = (
            await client.get(f"{API}/executions/{execution_id}/events", params={"after": after, "size": 100})
        ).json()
        events.extend(page["items"])
        if len(page["items"]) < 100:
            return events
        after = page["items"][-1]["seq"]


# ------------------------------------------------------------------------------------------------ runs


async def test_a_streamed_run_follows_the_contract(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client)
        async with aconnect_sse(client, "POST", f"{API}/teams/{team_id}/execute", json={**TASK, "stream": True}) as s:
            assert s.response.headers["content-type"].startswith("text/event-stream")
            location = s.response.headers["location"]
            # Heartbeats (no id) fill any silence longer than the fixture's 0.3 s; they are not part of the log.
            events = [(m.id, m.event, json.loads(m.data)) async for m in s.aiter_sse() if m.event != "heartbeat"]
        execution_id = location.rsplit("/", 1)[1]

        stored = [int(i) for i, k, _ in events if k not in LIVE]
        assert stored == list(range(1, len(stored) + 1))
        check_ids(events, execution_id)
        kinds = [k for _, k, _ in events]
        assert kinds[0] == "execution_start" and kinds[-1] == "execution_complete"
        assert {
            "global_supervisor_decision",
            "node_supervisor_decision",
            "agent_message",
            "agent_token",
            "tool_call",
            "node_complete",
            "global_supervisor_message",
        } <= set(kinds)
        for _, kind, data in events:
            assert data["team_id"] == team_id and data["timestamp"].endswith("Z")
            if kind == "tool_call":
                assert data["tool"] == "tcp_check" and data["agent_id"] == "probe" and data["node_id"]
                assert data["output"]["reachable"] is False  # port 9 is closed: a finding, not a failure
        # dataflow along the dependency chain: all dispatched at once, n1 starts after n2 finished, n0 after n1
        waves = [d["next_nodes"] for _, k, d in events if k == "global_supervisor_decision" and d["next_nodes"]]
        assert waves == [["n2", "n1", "n0"]]
        node_events = [(d.get("node_id"), k) for _, k, d in events if d.get("node_id")]
        for upstream, dependent in (("n2", "n1"), ("n1", "n0")):
            done = node_events.index((upstream, "node_complete"))
            assert all(i > done for i, (n, _) in enumerate(node_events) if n == dependent)

        execution = (await client.get(location)).json()
        assert execution["status"] == "success" and execution["execution_id"] == execution_id
        assert execution["input"] == TASK["input"]
        assert execution["duration_ms"] >= 0 and execution["completed_at"] and execution["started_at"]
        assert [n["node_id"] for n in execution["result"]["node_results"]] == ["n2", "n1", "n0"]
        assert all(n["status"] == "success" for n in execution["result"]["node_results"])
        assert execution["result"]["summary"].startswith("[simulator]")
        usage = execution["usage"]
        assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
        assert usage["cost"] == pytest.approx((usage["input_tokens"] * 0.5 + usage["output_tokens"] * 1.5) / 1000)
        # Each node team's usage, with the global supervisor's, adds up to the execution's.
        parts = [n["usage"] for n in execution["result"]["node_results"]] + [execution["result"]["supervisor_usage"]]
        assert all(p["input_tokens"] > 0 for p in parts[:-1])
        for key in ("input_tokens", "output_tokens"):
            assert sum(p[key] for p in parts) == usage[key]
        assert sum(p["cost"] for p in parts) == pytest.approx(usage["cost"])
        completes = {d["node_id"]: d["usage"] for _, k, d in events if k == "node_complete"}
        assert completes == {n["node_id"]: n["usage"] for n in execution["result"]["node_results"]}
        assert execution["attempt"] == 1 and execution["worker_id"] is None

        stored = await stored_events(client, execution_id)
        assert [(str(e["seq"]), e["event"], e["data"]) for e in stored] == [e for e in events if e[1] not in LIVE]
        assert not {e["event"] for e in stored} & LIVE  # token deltas are never stored

        history = (await client.get(f"{API}/teams/{team_id}/executions", params={"status": "success"})).json()
        assert history["total"] == 1 and history["items"][0]["execution_id"] == execution_id


async def test_stream_false_waits_for_the_result(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=1)
        response = await client.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success" and body["result"]["node_results"][0]["node_id"] == "n0"
        assert response.headers["location"] == f"{API}/executions/{body['execution_id']}"


async def test_background_execution_answers_202_and_can_be_re_attached_at_any_point(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True, latency_ms=20)
        team_id = await make_team(client, nodes=3)
        accepted = await client.post(f"{API}/teams/{team_id}/executions", json=TASK)
        assert accepted.status_code == 202, accepted.text
        execution_id = accepted.json()["execution_id"]
        assert accepted.headers["location"] == f"{API}/executions/{execution_id}"
        assert accepted.json()["status"] in ("pending", "running")

        # Read a few events, drop the connection, re-attach from the last id seen; several times.
        received: list = []
        path = f"{API}/executions/{execution_id}/stream"
        for chunk in (3, 7, 11):
            headers = {"Last-Event-ID": received[-1][0]} if received else {}
            received += await collect(client, "GET", path, limit=chunk, headers=headers)
        received += await collect(client, "GET", path, headers={"Last-Event-ID": received[-1][0]})

        real = [e for e in received if e[1] != "heartbeat" and e[1] not in LIVE]
        assert [int(i) for i, _, _ in real] == list(range(1, len(real) + 1))  # every event exactly once
        assert real[-1][1] == "execution_complete"
        stored = await stored_events(client, execution_id)
        assert [e["seq"] for e in stored] == [int(i) for i, _, _ in real]

        # After the end, re-attaching replays from the store and ends with the terminal event.
        tail = await collect(client, "GET", path, headers={"Last-Event-ID": str(len(real) - 2)})
        assert [k for _, k, _ in tail][-1] == "execution_complete" and len(tail) == 2
        assert await collect(client, "GET", path, params={"after": len(real)}) == []


async def test_many_subscribers_and_concurrent_executions_stream_at_once(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True, latency_ms=10)
        team_ids = [await make_team(client, f"team-{i}", nodes=2) for i in range(10)]

        async def run(team_id: str) -> list:
            return await collect(client, "POST", f"{API}/teams/{team_id}/execute", json={**TASK, "stream": True})

        results = await asyncio.gather(*(run(t) for t in team_ids))
        for events in results:
            real = [e for e in events if e[1] != "heartbeat" and e[1] not in LIVE]
            assert [int(i) for i, _, _ in real] == list(range(1, len(real) + 1))
            assert real[-1][1] == "execution_complete"

        # Three more subscribers on one live run all receive the same events.
        accepted = (await client.post(f"{API}/teams/{team_ids[0]}/executions", json=TASK)).json()
        path = f"{API}/executions/{accepted['execution_id']}/stream"
        streams = await asyncio.gather(*(collect(client, "GET", path) for _ in range(3)))
        # (Token deltas are live only: a subscriber sees those sent while it is attached.)
        as_ids = [[i for i, k, _ in s if k != "heartbeat" and k not in LIVE] for s in streams]
        assert as_ids[0] == as_ids[1] == as_ids[2] and as_ids[0]


async def test_a_team_runs_once_at_a_time_and_cannot_be_deleted_meanwhile(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True, latency_ms=300)
        team_id = await make_team(client, nodes=1)
        first = await client.post(f"{API}/teams/{team_id}/executions", json=TASK)
        assert first.status_code == 202
        assert_error(await client.post(f"{API}/teams/{team_id}/executions", json=TASK), 409, "EXECUTION_RUNNING")
        assert_error(await client.delete(f"{API}/teams/{team_id}"), 409, "EXECUTION_RUNNING")
        assert (await client.post(f"{API}/executions/{first.json()['execution_id']}/cancel")).status_code == 202
        await wait_for_status(client, first.json()["execution_id"], "cancelled")
        assert (await client.delete(f"{API}/teams/{team_id}")).status_code == 204


async def test_only_active_teams_execute(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=1)
        assert (await client.put(f"{API}/teams/{team_id}", json={"status": "inactive"})).status_code == 200
        assert_error(await client.post(f"{API}/teams/{team_id}/executions", json=TASK), 409, "TEAM_NOT_ACTIVE")
        missing = uuid.uuid4()
        assert_error(await client.post(f"{API}/teams/{missing}/executions", json=TASK), 404, "TEAM_NOT_FOUND")
        assert_error(await client.get(f"{API}/executions/{missing}"), 404, "EXECUTION_NOT_FOUND")
        assert_error(await client.get(f"{API}/executions/{missing}/stream"), 404, "EXECUTION_NOT_FOUND")
        bad = await client.post(f"{API}/teams/{team_id}/executions", json={"input": {"task": ""}})
        assert_error(bad, 422, "VALIDATION_ERROR")


# ------------------------------------------------------------------------------------------------ stop


async def test_cancel_stops_the_run_within_two_seconds(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True, latency_ms=30_000)
        team_id = await make_team(client, nodes=2)
        execution_id = (await client.post(f"{API}/teams/{team_id}/executions", json=TASK)).json()["execution_id"]
        await wait_for_status(client, execution_id, "running")
        loop = asyncio.get_running_loop()
        started = loop.time()
        cancelled = await client.post(f"{API}/executions/{execution_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        events = await collect(client, "GET", f"{API}/executions/{execution_id}/stream")
        assert loop.time() - started < 2.0
        assert events[-1][1] == "execution_cancelled"
        body = await wait_for_status(client, execution_id, "cancelled")
        assert {n["status"] for n in body["result"]["node_results"]} == {"cancelled"}
        assert_error(await client.post(f"{API}/executions/{execution_id}/cancel"), 409, "EXECUTION_FINISHED")


async def test_a_cancel_while_the_attempt_is_being_recorded_ends_the_run_cancelled(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cancel lands after the run took its slot and before its engine exists (recording the attempt). It used
    # to cancel the task there: the attempt was abandoned, the run left running (SQLite) or resumed later by the
    # job's retry and ended in success although the cancel had been accepted (PostgreSQL).
    recording, release = asyncio.Event(), asyncio.Event()
    start = repository.start

    async def gated_start(*args: Any, **kwargs: Any) -> Any:
        recording.set()
        await release.wait()
        return await start(*args, **kwargs)

    monkeypatch.setattr(repository, "start", gated_start)
    async with live.client() as client:
        await add_simulator(client, priced=True, latency_ms=30_000)
        team_id = await make_team(client, nodes=1)
        execution_id = (await client.post(f"{API}/teams/{team_id}/executions", json=TASK)).json()["execution_id"]
        await asyncio.wait_for(recording.wait(), 10)
        cancelled = await client.post(f"{API}/executions/{execution_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        release.set()
        body = await wait_for_status(client, execution_id, "cancelled", "success", "failed")
        assert body["status"] == "cancelled" and body["attempt"] == 1, body
        events = await stored_events(client, execution_id)
        assert events[-1]["event"] == "execution_cancelled"


async def test_timeout_answers_408_with_the_partial_result(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True, latency_ms=150)
        team_id = await make_team(client, nodes=3)
        body = {**TASK, "stream": False, "timeout_seconds": 1}
        error = contract_error(await client.post(f"{API}/teams/{team_id}/execute", json=body), 408, "EXECUTION_TIMEOUT")
        partial = error["partial_result"]  # the contract: "408 EXECUTION_TIMEOUT with partial_result"
        assert error["details"]["execution_id"] == partial["execution_id"]
        assert partial["status"] == "timeout"
        statuses = [n["status"] for n in partial["result"]["node_results"]]
        assert "timeout" in statuses
        events = await stored_events(client, partial["execution_id"])
        assert events[-1]["event"] == "execution_error"
        assert events[-1]["data"]["error_code"] == "EXECUTION_TIMEOUT"
        stored = (await client.get(f"{API}/executions/{partial['execution_id']}")).json()
        assert stored["status"] == "timeout" and stored["error_code"] == "EXECUTION_TIMEOUT"


async def test_heartbeats_fill_silences_without_moving_the_event_id(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True, latency_ms=200)
        team_id = await make_team(client, nodes=1)
        events = await collect(client, "POST", f"{API}/teams/{team_id}/execute", json={**TASK, "stream": True})
        beats = [e for e in events if e[1] == "heartbeat"]
        # Timers fire late, never early: a 0.2 s silence always holds a 0.05 s heartbeat.
        assert beats, "a 0.2 s silence with a 0.05 s heartbeat must produce heartbeats"
        check_ids(events)
        for _, _, data in beats:
            assert set(data) == {"execution_id", "team_id", "seq", "timestamp"}


# ------------------------------------------------------------------------------------------------ results


async def test_structured_output_from_the_latest_execution(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=2)
        missing = await client.post(
            f"{API}/teams/{team_id}/structured-output", json={"output_schema": {"type": "object"}}
        )
        assert_error(missing, 404, "EXECUTION_NOT_FOUND")
        run = await client.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})
        execution_id = run.json()["execution_id"]

        schema = {
            "type": "object",
            "properties": {"summary": {"type": "string"}, "severity": {"enum": ["low", "high"]}},
            "required": ["summary", "severity"],
        }
        ok = await client.post(
            f"{API}/teams/{team_id}/structured-output", json={"output_schema": schema, "include_raw_output": True}
        )
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["execution_id"] == execution_id and body["team_id"] == team_id
        assert body["schema_validation"] == {"valid": True, "errors": []}
        assert body["structured_output"]["severity"] in ("low", "high")
        assert json.loads(body["raw_output"]) == body["structured_output"]

        impossible = {
            "type": "object",
            "properties": {
                "issues": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"severity": {"type": "string", "pattern": "^SEV[1-4]$"}},
                        "required": ["severity"],
                    },
                }
            },
            "required": ["issues"],
        }
        failed = await client.post(
            f"{API}/teams/{team_id}/structured-output", json={"execution_id": execution_id, "output_schema": impossible}
        )
        error = contract_error(failed, 422, "SCHEMA_GENERATION_FAILED")
        assert error["details"]["attempts"] == 3
        # The contract's fields, next to the error body, shaped like the 200 answer's.
        assert error["schema_validation"]["valid"] is False
        assert error["schema_validation"]["errors"][0]["path"] == "$.issues[0].severity"
        assert error["partial_output"]["issues"]
        assert error["execution_id"] == execution_id and error["team_id"] == team_id

        invalid = await client.post(f"{API}/teams/{team_id}/structured-output", json={"output_schema": {"type": 7}})
        refused = contract_error(invalid, 422, "SCHEMA_GENERATION_FAILED")
        assert refused["schema_validation"]["valid"] is False and refused["partial_output"] is None


async def test_execute_with_an_output_schema_returns_structured_output(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=1)
        schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
        events = await collect(client, "POST", f"{API}/teams/{team_id}/execute", json={**TASK, "output_schema": schema})
        final = events[-1][2]
        assert events[-1][1] == "execution_complete" and final["structured_output"]["summary"]
        execution = (await client.get(f"{API}/executions/{final['execution_id']}")).json()
        assert execution["structured_output"] == final["structured_output"]


# ------------------------------------------------------------------------------------------------ lifecycle


async def test_excess_executions_wait_as_pending(database_url: str, tmp_path: Path) -> None:
    async with (
        _serve(
            database_url, tmp_path / "data", max_concurrent_executions=1, allow_concurrent_team_executions=True
        ) as live,
        live.client() as client,
    ):
        await add_simulator(client, priced=True, latency_ms=200)
        team_id = await make_team(client, nodes=1)
        first = (await client.post(f"{API}/teams/{team_id}/executions", json=TASK)).json()["execution_id"]
        second = (await client.post(f"{API}/teams/{team_id}/executions", json=TASK)).json()["execution_id"]
        await wait_for_status(client, first, "running")
        assert (await client.get(f"{API}/executions/{second}")).json()["status"] == "pending"
        # A pending execution can be cancelled at once.
        assert (await client.post(f"{API}/executions/{second}/cancel")).status_code == 202
        cancelled = await wait_for_status(client, second, "cancelled")
        assert cancelled["started_at"] is not None
        await wait_for_status(client, first, "success")


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_queued_run_is_cancelled_before_any_worker_takes_it(database_url: str, tmp_path: Path) -> None:
    # An API process without a worker (PostgreSQL): the run waits in the job queue.
    async with _serve(database_url, tmp_path / "data", embedded_worker=False) as live, live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=1)
        execution_id = (await client.post(f"{API}/teams/{team_id}/executions", json=TASK)).json()["execution_id"]
        manager = live.context.executions  # type: ignore[attr-defined]
        assert [status for _, status in await manager.queue.jobs(uuid.UUID(execution_id))] == ["todo"]
        stream = asyncio.create_task(collect(client, "GET", f"{API}/executions/{execution_id}/stream"))
        await asyncio.sleep(0.3)
        assert (await client.post(f"{API}/executions/{execution_id}/cancel")).status_code == 202
        body = (await client.get(f"{API}/executions/{execution_id}")).json()
        events = await asyncio.wait_for(stream, 5)
        assert await manager.queue.jobs(uuid.UUID(execution_id)) == []  # no worker will ever take it
    assert body["status"] == "cancelled" and body["attempt"] == 1 and body["worker_id"] is None
    assert [(int(i), kind) for i, kind, _ in events] == [(1, "execution_cancelled")]


async def test_start_up_resumes_an_execution_a_crash_left_running(database_url: str, tmp_path: Path) -> None:
    async with _serve(database_url, tmp_path / "data") as live:

        async def died_before_cleaning_up(execution_ids: Any) -> None:
            return None

        live.context.executions.checkpoints.delete = died_before_cleaning_up  # type: ignore[method-assign]
        async with live.client() as client:
            await add_simulator(client, priced=True)
            team_id = await make_team(client, nodes=1)
            done = (await client.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})).json()
    # Pretend the process died after the graph's last checkpoint, before its outcome was recorded. (Changed once
    # it has stopped: a live process would take the unfinished run over itself.)
    async with _rows(database_url) as session:
        await session.execute(
            update(Execution).where(Execution.id == uuid.UUID(done["execution_id"])).values(status="running")
        )
        last = await session.scalar(select(func.max(ExecutionEventRow.seq)))
        await session.execute(ExecutionEventRow.__table__.delete().where(ExecutionEventRow.seq == last))
    async with _serve(database_url, tmp_path / "data") as live, live.client() as client:
        events = await collect(client, "GET", f"{API}/executions/{done['execution_id']}/stream")
        body = await wait_for_status(client, done["execution_id"], "success")
    assert body["attempt"] == 2 and body["worker_id"] is None
    assert body["result"] == done["result"] and body["usage"] == done["usage"]
    # The log goes on gap-free after the last stored event (the lost terminal event's seq is reused: no client
    # saw it, since events reach clients only once stored).
    assert [int(i) for i, _, _ in events] == list(range(1, last + 2))
    # Nothing ran again: the resumed attempt only concluded the run from its checkpoint.
    assert [k for _, k, _ in events[last - 1 :]] == ["execution_resumed", "execution_complete"]
    resumed = events[-2][2]
    assert resumed["attempt"] == 2 and resumed["resumed_after_seq"] == last - 1 and resumed["worker_id"]


async def test_a_run_lost_too_many_times_fails_with_worker_lost(database_url: str, tmp_path: Path) -> None:
    async with _serve(database_url, tmp_path / "data", max_run_attempts=2) as live, live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=1)
        done = (await client.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})).json()
    async with _rows(database_url) as session:
        await session.execute(
            update(Execution)
            .where(Execution.id == uuid.UUID(done["execution_id"]))
            # Its worker: a process on this host that no longer exists (above the kernel's largest pid).
            .values(status="running", attempt=2, worker_id=f"{socket.gethostname()}:4194305")
        )
        last = await session.scalar(select(func.max(ExecutionEventRow.seq)))
        await session.execute(ExecutionEventRow.__table__.delete().where(ExecutionEventRow.seq == last))
    async with _serve(database_url, tmp_path / "data", max_run_attempts=2) as live, live.client() as client:
        # Given up at start-up (SQLite), or by the first worker to take its job (PostgreSQL).
        events = await collect(client, "GET", f"{API}/executions/{done['execution_id']}/stream")
        body = (await client.get(f"{API}/executions/{done['execution_id']}")).json()
    assert body["status"] == "failed" and body["error_code"] == "WORKER_LOST" and body["attempt"] == 2
    assert events[-1][1] == "execution_error" and int(events[-1][0]) == last
    assert events[-1][2]["error_code"] == "WORKER_LOST"


async def test_purge_removes_old_executions_and_their_events(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=1)
        old = (await client.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})).json()
        recent = (await client.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})).json()
    async with live.context.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Execution)
            .where(Execution.id == uuid.UUID(old["execution_id"]))
            .values(completed_at=utcnow() - timedelta(days=31))
        )
    executions, events = await live.context.executions.upkeep.purge()
    assert executions == 1 and events > 0
    async with live.context.database.sessionmaker() as session:
        remaining = set(await session.scalars(select(Execution.id)))
        orphaned = await session.scalar(
            select(func.count())
            .select_from(ExecutionEventRow)
            .where(ExecutionEventRow.execution_id == uuid.UUID(old["execution_id"]))
        )
    assert remaining == {uuid.UUID(recent["execution_id"])} and orphaned == 0
    # Checkpoints a finished run left behind (its own deletion failed) go with it at the purge.
    saver = live.context.executions.checkpoints.saver
    assert await saver.aget_tuple({"configurable": {"thread_id": old["execution_id"]}}) is None


async def test_a_finished_run_keeps_no_checkpoints_and_a_purge_removes_leftovers(live: Live) -> None:
    async with live.client() as client:
        await add_simulator(client, priced=True)
        team_id = await make_team(client, nodes=2)
        done = (await client.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})).json()
    assert done["status"] == "success"
    saver = live.context.executions.checkpoints.saver
    thread = {"configurable": {"thread_id": done["execution_id"], "checkpoint_ns": ""}}
    assert await saver.aget_tuple(thread) is None
    # A leftover (the deletion after the run failed): the retention purge removes it with the execution.
    await saver.aput(thread, empty_checkpoint(), {"source": "input", "step": -1, "parents": {}}, {})
    assert await saver.aget_tuple(thread) is not None
    async with live.context.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Execution)
            .where(Execution.id == uuid.UUID(done["execution_id"]))
            .values(completed_at=utcnow() - timedelta(days=31))
        )
    assert (await live.context.executions.upkeep.purge())[0] == 1
    assert await saver.aget_tuple(thread) is None


async def test_a_silent_stream_is_closed_and_can_be_re_attached(database_url: str, tmp_path: Path) -> None:
    settings = {"sse_heartbeat_seconds": 0.2, "sse_idle_close_seconds": 1.0}
    async with _serve(database_url, tmp_path / "data", **settings) as live, live.client() as client:
        await add_simulator(client, priced=True, latency_ms=30_000)
        team_id = await make_team(client, nodes=1)
        execution_id = (await client.post(f"{API}/teams/{team_id}/executions", json=TASK)).json()["execution_id"]
        path = f"{API}/executions/{execution_id}/stream"
        first = await collect(client, "GET", path)
        kinds = [k for _, k, _ in first]
        # Events until the model call starts, heartbeats during the silence, then the server closes. (A worker
        # may take the queued run after the first heartbeat.)
        assert next(k for k in kinds if k != "heartbeat") == "execution_start" and "heartbeat" in kinds
        assert not {"execution_complete", "execution_error", "execution_cancelled"} & set(kinds)
        last_id = [i for i, k, _ in first if k != "heartbeat"][-1]
        assert (await client.post(f"{API}/executions/{execution_id}/cancel")).status_code == 202
        rest = await collect(client, "GET", path, headers={"Last-Event-ID": last_id})
        real = [e for e in rest if e[1] != "heartbeat"]
        assert int(real[0][0]) == int(last_id) + 1 and real[-1][1] == "execution_cancelled"
