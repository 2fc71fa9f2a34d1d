"""Budgets and usage reports through the API, on both databases, with the offline simulator priced: spend is
what the recorded calls cost; a run that a budget cannot cover any more ends ``BUDGET_EXCEEDED`` with its
partial result and the next start is refused with 429; the soft limit warns once; the usage report adds up to
the runs' own usage."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.services import ServiceContext
from aiops_executor.spend.models import ModelCall
from tests.executions.test_executions_api import TASK, stored_events, team_body, wait_for_status
from tests.helpers import API, CAPABLE, assert_error, created
from tests.mock_providers import OPENAI_KEY

pytestmark = pytest.mark.usefixtures("backend")

UNFINISHED = ("pending", "running")


async def priced_simulator(
    client: httpx.AsyncClient, headers: dict[str, str], *, priced: bool = True
) -> dict[str, Any]:
    """``local-sim`` with ``sim-1`` at $0.5 / $1.5 per 1K tokens (or no price), its answers bounded to 256 tokens
    (the simulator writes far less), so that what a call may cost is known before it is made."""
    provider = await created(client, headers, "/providers", {"name": "local-sim", "type": "simulator"})
    prices = {"input_price": "0.5", "output_price": "1.5"} if priced else {}
    await created(
        client,
        headers,
        f"/providers/{provider['id']}/models",
        {
            "model_id": "sim-1",
            "name": "sim-1",
            **prices,
            "max_output_tokens": 256,
            "capabilities": {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE},
        },
    )
    return provider


async def finished_run(client: httpx.AsyncClient, headers: dict[str, str], team_id: str) -> dict[str, Any]:
    started = await client.post(f"{API}/teams/{team_id}/executions", json=TASK, headers=headers)
    assert started.status_code == 202, started.text
    client.headers.update(headers)
    return await wait_for_status(client, started.json()["execution_id"], "success", "failed", "timeout")


async def budget(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    return await created(client, headers, "/budgets", body)


async def test_budgets_are_kept_validated_and_shown_with_their_spend(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: Any
) -> None:
    await priced_simulator(client, admin_headers)
    team_id = (await created(client, admin_headers, "/teams", team_body("kept", nodes=1)))["team_id"]
    made = await budget(client, admin_headers, scope="team", scope_id=team_id, limit_usd="5", period="month")
    assert made["spent_usd"] == 0 and made["spent_tokens"] == 0 and made["remaining_usd"] == 5
    assert made["soft_limit_percent"] == 80 and made["exhausted"] is False
    assert made["period_ends_at"] is not None and made["period_ends_at"] > made["period_started_at"]
    total = await budget(client, admin_headers, scope="global", limit_tokens=1000, period="total")
    assert total["period_ends_at"] is None and total["limit_usd"] is None

    run = await finished_run(client, admin_headers, team_id)
    listed = (await client.get(f"{API}/budgets", headers=admin_headers)).json()
    assert listed["total"] == 2
    shown = {item["id"]: item for item in listed["items"]}
    assert Decimal(str(shown[made["id"]]["spent_usd"])) == pytest.approx(Decimal(str(run["usage"]["cost"])))
    used = run["usage"]["input_tokens"] + run["usage"]["output_tokens"]
    assert shown[total["id"]]["spent_tokens"] == used
    assert shown[total["id"]]["remaining_tokens"] == max(0, 1000 - used)

    changed = await client.put(
        f"{API}/budgets/{made['id']}",
        json={"limit_usd": "7.5", "period": "day", "soft_limit_percent": 50},
        headers=admin_headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["limit_usd"] == 7.5 and changed.json()["period"] == "day"
    assert changed.json()["scope_id"] == team_id

    operator = await role_headers("operator")
    assert (await client.get(f"{API}/budgets/{made['id']}", headers=operator)).status_code == 200
    assert_error(
        await client.post(
            f"{API}/budgets", json={"scope": "global", "limit_usd": 1, "period": "day"}, headers=operator
        ),
        403,
        "FORBIDDEN",
    )
    for body in (
        {"scope": "global", "period": "day"},  # no limit
        {"scope": "team", "limit_usd": 1, "period": "day"},  # no scope_id
        {"scope": "global", "scope_id": team_id, "limit_usd": 1, "period": "day"},
        {"scope": "team", "scope_id": str(uuid.uuid4()), "limit_usd": 1, "period": "day"},  # no such team
        {"scope": "team", "scope_id": team_id, "limit_usd": -1, "period": "day"},
        {"scope": "team", "scope_id": team_id, "limit_usd": 1, "period": "year"},
        {"scope": "team", "scope_id": team_id, "limit_usd": 1, "period": "day", "soft_limit_percent": 0},
    ):
        assert_error(await client.post(f"{API}/budgets", json=body, headers=admin_headers), 422, "VALIDATION_ERROR")
    assert (await client.delete(f"{API}/budgets/{made['id']}", headers=admin_headers)).status_code == 204
    assert_error(await client.get(f"{API}/budgets/{made['id']}", headers=admin_headers), 404, "BUDGET_NOT_FOUND")
    actions = {
        (entry["action"], entry["resource_id"])
        for entry in (
            await client.get(f"{API}/audit-logs", params={"resource_type": "budget"}, headers=admin_headers)
        ).json()["items"]
    }
    assert {("create", made["id"]), ("update", made["id"]), ("delete", made["id"])} <= actions


async def test_a_run_that_a_team_budget_cannot_cover_ends_budget_exceeded_and_the_next_start_gets_429(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: ServiceContext
) -> None:
    await priced_simulator(client, admin_headers)
    team_id = (await created(client, admin_headers, "/teams", team_body("capped", nodes=3)))["team_id"]
    first = await finished_run(client, admin_headers, team_id)
    assert first["status"] == "success"
    cost = Decimal(str(first["usage"]["cost"]))
    # What the first run spent plus half of another: the second run cannot finish. Its soft limit (50 %) is
    # already behind it, so its first counted call announces it.
    limit = (cost * Decimal("1.5")).quantize(Decimal("0.0000000001"))
    capped = await budget(
        client, admin_headers, scope="team", scope_id=team_id, limit_usd=str(limit), period="day", soft_limit_percent=50
    )
    second = await finished_run(client, admin_headers, team_id)
    assert second["status"] == "failed"
    events = await stored_events(client, second["execution_id"])
    end = events[-1]
    assert end["event"] == "execution_error" and end["data"]["error_code"] == "BUDGET_EXCEEDED"
    assert end["data"]["budget_id"] == capped["id"]
    assert "exhausted" in second["error_message"] and capped["id"] in second["error_message"]
    # The partial result is kept: what the node teams that ran found, and what the run spent.
    assert second["result"]["node_results"], second["result"]
    assert Decimal(str(second["usage"]["cost"])) > 0
    warnings = [e for e in events if e["event"] == "budget_warning"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["data"]["budget_id"] == capped["id"] and warnings[0]["data"]["limit_usd"] == float(limit)

    shown = (await client.get(f"{API}/budgets/{capped['id']}", headers=admin_headers)).json()
    assert shown["exhausted"] is True
    # Never more than the limit: each call was admitted only if the most it could cost still fitted.
    assert Decimal(str(shown["spent_usd"])) <= limit
    refused = await client.post(f"{API}/teams/{team_id}/executions", json=TASK, headers=admin_headers)
    body = assert_error(refused, 429, "BUDGET_EXCEEDED")
    assert body["details"]["budget_id"] == capped["id"] and body["details"]["resets_at"]
    assert 0 < int(refused.headers["retry-after"]) <= 86_401

    # Raised, the budget lets runs start again; the warning was once per period, not once per run.
    raised = await client.put(
        f"{API}/budgets/{capped['id']}",
        json={"limit_usd": str(limit * 10), "period": "day", "soft_limit_percent": 50},
        headers=admin_headers,
    )
    assert raised.json()["exhausted"] is False
    third = await finished_run(client, admin_headers, team_id)
    assert third["status"] == "success"
    assert not [e for e in await stored_events(client, third["execution_id"]) if e["event"] == "budget_warning"]
    audit = (await client.get(f"{API}/audit-logs", params={"resource_id": capped["id"]}, headers=admin_headers)).json()[
        "items"
    ]
    assert [e["action"] for e in audit].count("soft_limit") == 1
    assert 'aiops_budget_events_total{kind="warning",scope="team"} 1.0' in context.telemetry.metrics.render().decode()


async def test_a_token_limit_caps_a_model_without_a_price(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await priced_simulator(client, admin_headers, priced=False)
    team_id = (await created(client, admin_headers, "/teams", team_body("unpriced", nodes=3)))["team_id"]
    first = await finished_run(client, admin_headers, team_id)
    assert first["status"] == "success" and first["usage"]["cost"] is None  # unknown, not free
    used = first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
    limit = used + used // 2
    capped = await budget(client, admin_headers, scope="team", scope_id=team_id, limit_tokens=limit, period="week")
    assert capped["spent_tokens"] == used and capped["spent_usd"] == 0
    second = await finished_run(client, admin_headers, team_id)
    assert second["status"] == "failed" and "tokens used" in second["error_message"]
    shown = (await client.get(f"{API}/budgets/{capped['id']}", headers=admin_headers)).json()
    assert shown["exhausted"] is True and shown["spent_tokens"] <= limit
    assert_error(
        await client.post(f"{API}/teams/{team_id}/executions", json=TASK, headers=admin_headers), 429, "BUDGET_EXCEEDED"
    )


async def test_the_usage_report_adds_up_to_the_runs_recorded_usage(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    provider = await priced_simulator(client, admin_headers)
    teams = [(await created(client, admin_headers, "/teams", team_body(f"t{i}", nodes=2)))["team_id"] for i in (1, 2)]
    runs = list(await asyncio.gather(*(finished_run(client, admin_headers, team) for team in teams)))
    runs.append(await finished_run(client, admin_headers, teams[0]))  # a team runs once at a time
    assert all(run["status"] == "success" for run in runs)

    async def report(group_by: str) -> list[dict[str, Any]]:
        response = await client.get(f"{API}/usage", params={"group_by": group_by}, headers=admin_headers)
        assert response.status_code == 200, response.text
        return list(response.json())

    def total(items: list[dict[str, Any]], key: str) -> Any:
        return sum(Decimal(str(item[key])) for item in items)

    by_team = {row["key"]: row for row in await report("team")}
    assert set(by_team) == set(teams)
    for team in teams:
        mine = [run["usage"] for run in runs if run["team_id"] == team]
        row = by_team[team]
        assert row["runs"] == len(mine)
        assert row["input_tokens"] == sum(u["input_tokens"] for u in mine)
        assert row["output_tokens"] == sum(u["output_tokens"] for u in mine)
        assert Decimal(str(row["cost"])) == pytest.approx(total(mine, "cost"))
    for group_by, key in (("model", "local-sim/sim-1"), ("provider", provider["id"]), ("api_key", None)):
        (row,) = await report(group_by)
        assert row["key"] == key and row["runs"] == 3
        assert row["input_tokens"] == sum(r["usage"]["input_tokens"] for r in runs)
    (day,) = await report("day")
    assert len(day["key"]) == 10 and day["calls"] >= 3
    assert Decimal(str(day["cost"])) == pytest.approx(total([r["usage"] for r in runs], "cost"))
    empty = await client.get(
        f"{API}/usage", params={"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"}, headers=admin_headers
    )
    assert empty.json() == []
    backwards = await client.get(
        f"{API}/usage", params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, headers=admin_headers
    )
    assert backwards.status_code == 200 and backwards.json() == []
    years = await client.get(
        f"{API}/usage", params={"from": "2000-01-01T00:00:00Z", "group_by": "day"}, headers=admin_headers
    )
    assert [row["key"] for row in years.json()] == [day["key"]]  # a row per day with calls, whatever the range
    assert_error(
        await client.get(f"{API}/usage", params={"group_by": "colour"}, headers=admin_headers), 422, "VALIDATION_ERROR"
    )


async def test_a_one_cent_team_budget_over_the_openai_mock_stops_the_run_that_crosses_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    """The issue's own scenario: a team budget of $0.01, priced models on the OpenAI-protocol mock server."""
    provider = await created(client, admin_headers, "/providers", {"name": "cloud", "type": "openai"})
    base = f"/providers/{provider['id']}"
    await created(client, admin_headers, f"{base}/endpoints", {"name": "mock", "base_url": openai_mock.client_base_url})
    await created(client, admin_headers, f"{base}/credentials", {"alias": "k1", "api_key": OPENAI_KEY})
    await created(
        client,
        admin_headers,
        f"{base}/models",
        {
            "model_id": "gpt-4o-mini",
            "name": "gpt-4o-mini",
            "input_price": "0.002",
            "output_price": "0.004",
            "max_output_tokens": 64,
            "capabilities": {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE},
        },
    )
    body = json.loads(
        json.dumps(team_body("cent", nodes=2)).replace('"local-sim"', '"cloud"').replace('"sim-1"', '"gpt-4o-mini"')
    )
    team_id = (await created(client, admin_headers, "/teams", body))["team_id"]
    capped = await budget(client, admin_headers, scope="team", scope_id=team_id, limit_usd="0.01", period="month")
    runs = []
    for _ in range(10):
        runs.append(await finished_run(client, admin_headers, team_id))
        if runs[-1]["status"] != "success":
            break
    *succeeded, stopped = runs
    assert succeeded and all(run["status"] == "success" for run in succeeded), runs
    assert stopped["status"] == "failed" and "exhausted" in stopped["error_message"], stopped
    assert stopped["result"]["node_results"]  # its partial result
    warnings = [
        event
        for run in runs
        for event in await stored_events(client, run["execution_id"])
        if event["event"] == "budget_warning"
    ]
    assert len(warnings) == 1  # once per period, whichever run crossed it
    shown = (await client.get(f"{API}/budgets/{capped['id']}", headers=admin_headers)).json()
    assert Decimal(str(shown["spent_usd"])) <= Decimal("0.01") and shown["exhausted"] is True
    assert Decimal(str(shown["spent_usd"])) == pytest.approx(sum(Decimal(str(r["usage"]["cost"])) for r in runs))
    refused = await client.post(f"{API}/teams/{team_id}/executions", json=TASK, headers=admin_headers)
    assert_error(refused, 429, "BUDGET_EXCEEDED")
    assert int(refused.headers["retry-after"]) > 0


@contextmanager
def statements(context: ServiceContext, fragment: str) -> Iterator[list[str]]:
    """The SQL statements containing ``fragment`` that the service's engine sends meanwhile."""
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fragment in statement:
            seen.append(statement)

    sync_engine = context.database.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)


async def test_calls_settled_at_once_share_one_insert_and_each_waits_for_its_row(context: ServiceContext) -> None:
    rows = [
        {
            "id": uuid.uuid4(),
            "created_at": datetime.now(UTC),
            "execution_id": None,
            "team_id": None,
            "api_key_id": None,
            "provider_id": uuid.uuid4(),
            "provider_name": "p",
            "model_id": f"m{i}",
            "endpoint_id": None,
            "input_tokens": i,
            "output_tokens": None if i % 2 else i,
            "cost": None,
        }
        for i in range(50)
    ]
    with statements(context, "INSERT INTO model_calls") as inserts:
        await asyncio.gather(*(context.spend_ledger.writer.write(row) for row in rows))
    async with context.database.sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(ModelCall))
    assert stored == 50
    assert 1 <= len(inserts) < 50, len(inserts)  # one INSERT per batch, not per call


async def test_calls_that_find_no_budgets_cached_read_them_once(context: ServiceContext) -> None:
    context.config_cache.invalidate()
    with statements(context, "FROM budgets") as reads:
        found = await asyncio.gather(*(context.spend_ledger.rules() for _ in range(30)))
    assert found == [[]] * 30
    assert len(reads) == 1, reads  # one read (one connection) for all of them
