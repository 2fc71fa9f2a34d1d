"""Alertmanager's webhook starts executions, on SQLite and PostgreSQL: real-shaped payloads (firing, resolved,
several groups), dedup by groupKey (also under concurrent deliveries), the labels in the run's context."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from aiops_executor.core.db import utcnow
from aiops_executor.core.settings import Settings
from aiops_executor.executions.models import Execution
from aiops_executor.executions.service import trigger_key
from tests.conftest import make_settings
from tests.helpers import API, REPO_ROOT, add_simulator, assert_error

EXAMPLE = REPO_ROOT / "examples" / "alertmanager" / "checkout-latency-firing.json"
REF = {"model_provider": "local-sim", "model_id": "sim-1"}
WEBHOOK = f"{API}/webhooks/alertmanager"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Several alert groups of one team may be investigated at once; the groupKey rule is what is under test.
    return make_settings(database_url, tmp_path / "data", allow_concurrent_team_executions=True)


def firing_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(EXAMPLE.read_text())
    payload.update(changes)
    return payload


def group(alertname: str, *, status: str = "firing", team: str = "webshop") -> dict[str, Any]:
    """A payload of another alert group (another alertname, so another groupKey), as Alertmanager sends it."""
    payload = firing_payload()
    payload["groupKey"] = f'{{}}/{{severity=~"critical|warning"}}:{{aiops_team="{team}", alertname="{alertname}"}}'
    payload["status"] = status
    for labels in [payload["groupLabels"], payload["commonLabels"], *[a["labels"] for a in payload["alerts"]]]:
        labels["alertname"] = alertname
        labels["aiops_team"] = team
    for alert in payload["alerts"]:
        alert["status"] = status
        if status == "resolved":
            alert["endsAt"] = "2026-12-09T03:20:00.000Z"
    return payload


async def make_team(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> str:
    body = {
        "team_name": name,
        "timeout_seconds": 120,
        "topology": {
            "nodes": [
                {
                    "node_id": "checkout",
                    "node_name": "Checkout",
                    "node_type": "service",
                    "attributes": {"host": "127.0.0.1", "port": 9},
                    "agents": [{"agent_id": "probe", "agent_name": "Prober", **REF, "tools": ["tcp_check"]}],
                    "supervisor_config": REF,
                }
            ],
            "global_supervisor": REF,
        },
    }
    response = await client.post(f"{API}/teams", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["team_id"])


@pytest.fixture
async def team(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> str:
    # Slow model calls: a run stays running for the length of a test, so its group is "still running".
    await add_simulator(client, admin_headers, latency_ms=1500)
    return await make_team(client, admin_headers, "webshop")


@pytest.fixture(autouse=True)
async def runs_end_before_the_app_stops(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> AsyncIterator[None]:
    """Cancels the runs a test started and waits for them: a run the webhook has just started would otherwise
    still be taking its first steps while the app shuts down and the next test empties the tables."""
    yield
    teams = await client.get(f"{API}/teams", params={"size": 100}, headers=admin_headers)
    for team_id in [t["team_id"] for t in teams.json()["items"]]:
        for status in ("pending", "running"):
            listed = await client.get(
                f"{API}/teams/{team_id}/executions", params={"status": status, "size": 100}, headers=admin_headers
            )
            for item in listed.json()["items"]:
                await client.post(f"{API}/executions/{item['execution_id']}/cancel", headers=admin_headers)
                await finished(client, admin_headers, item["execution_id"])


async def post(client: httpx.AsyncClient, headers: dict[str, str], payload: Any, **params: str) -> dict[str, Any]:
    response = await client.post(WEBHOOK, json=payload, headers=headers, params=params)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"executions", "skipped"}
    return body


async def execution(client: httpx.AsyncClient, headers: dict[str, str], execution_id: str) -> dict[str, Any]:
    response = await client.get(f"{API}/executions/{execution_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def finished(client: httpx.AsyncClient, headers: dict[str, str], execution_id: str) -> dict[str, Any]:
    for _ in range(400):
        row = await execution(client, headers, execution_id)
        if row["status"] not in ("pending", "running"):
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not finish")


async def test_a_firing_group_starts_one_execution_whose_context_carries_the_labels(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    payload = firing_payload()
    body = await post(client, admin_headers, payload)

    assert body["skipped"] == []
    [started] = body["executions"]
    assert started["group_key"] == payload["groupKey"]
    assert started["team_id"] == team  # found by the alerts' aiops_team label
    row = await execution(client, admin_headers, started["execution_id"])
    assert row["team_id"] == team
    assert row["input"]["task"] == (
        "Checkout p99 latency above 2s\n\np99 of POST /api/checkout has been 3.4s for 10 minutes (threshold 2s)."
    )
    context = row["input"]["context"]
    assert context["source"] == "alertmanager"
    assert context["group_key"] == payload["groupKey"]
    assert context["labels"] == payload["commonLabels"]
    assert context["group_labels"] == {"aiops_team": "webshop", "alertname": "CheckoutHighLatency"}
    assert context["external_url"] == "http://alertmanager.monitoring.svc:9093"
    assert [a["labels"]["pod"] for a in context["alerts"]] == ["checkout-7d9f8b6c5-x2k4q", "checkout-7d9f8b6c5-q8wzm"]
    assert context["alerts"][0]["annotations"]["runbook_url"] == "https://runbooks.example.com/checkout/latency"
    assert context["alerts"][0]["ends_at"] is None  # Alertmanager's 0001-01-01 "not ended"
    assert context["alerts"][0]["generator_url"].startswith("http://prometheus.monitoring.svc:9090/graph")
    # The run really runs, through the executions service's queue, like any other.
    listed = await client.get(f"{API}/teams/{team}/executions", headers=admin_headers)
    assert [item["execution_id"] for item in listed.json()["items"]] == [started["execution_id"]]


async def test_the_same_group_starts_no_second_run_while_its_run_is_unfinished(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    payload = firing_payload()
    first = (await post(client, admin_headers, payload))["executions"][0]["execution_id"]

    # Alertmanager repeats the notification (repeat_interval, or a new alert joined the group).
    again = firing_payload()
    again["alerts"] = [*again["alerts"], {**copy.deepcopy(again["alerts"][0]), "fingerprint": "0d0d0d0d0d0d0d0d"}]
    body = await post(client, admin_headers, again)
    assert body["executions"] == []
    [skip] = body["skipped"]
    assert skip["group_key"] == payload["groupKey"]
    assert skip["code"] == "TRIGGER_RUNNING"
    assert skip["execution_id"] == first
    assert first in skip["reason"]

    # Once that run has ended, the group may be investigated again.
    cancel = await client.post(f"{API}/executions/{first}/cancel", headers=admin_headers)
    assert cancel.status_code == 202, cancel.text
    assert (await finished(client, admin_headers, first))["status"] == "cancelled"
    body = await post(client, admin_headers, payload)
    assert body["skipped"] == []
    assert body["executions"][0]["execution_id"] != first


async def test_several_groups_each_start_their_own_run_and_resolved_ones_start_nothing(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    latency = await post(client, admin_headers, group("CheckoutHighLatency"))
    errors = await post(client, admin_headers, group("CheckoutErrorRate"))
    resolved = await post(client, admin_headers, group("OrdersDBReplicationLag", status="resolved"))

    metrics = (await client.get("/metrics")).text
    assert 'aiops_alert_groups_total{outcome="started"} 2.0' in metrics
    assert 'aiops_alert_groups_total{outcome="RESOLVED"} 1.0' in metrics
    ids = {latency["executions"][0]["execution_id"], errors["executions"][0]["execution_id"]}
    assert len(ids) == 2
    assert resolved["executions"] == []
    [skip] = resolved["skipped"]
    assert skip["code"] == "RESOLVED"
    assert "resolved" in skip["reason"]
    assert skip["group_key"].endswith('alertname="OrdersDBReplicationLag"}')
    listed = await client.get(f"{API}/teams/{team}/executions", headers=admin_headers)
    assert {item["execution_id"] for item in listed.json()["items"]} == ids
    for execution_id in ids:
        row = await execution(client, admin_headers, execution_id)
        assert row["input"]["context"]["labels"]["alertname"] in ("CheckoutHighLatency", "CheckoutErrorRate")


async def test_a_firing_group_with_some_resolved_alerts_runs_and_shows_both(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    payload = firing_payload()
    payload["alerts"][1]["status"] = "resolved"
    payload["alerts"][1]["endsAt"] = "2026-12-09T03:01:00.000Z"
    [started] = (await post(client, admin_headers, payload))["executions"]
    alerts = (await execution(client, admin_headers, started["execution_id"]))["input"]["context"]["alerts"]
    assert [(a["status"], a["ends_at"]) for a in alerts] == [
        ("firing", None),
        ("resolved", "2026-12-09T03:01:00+00:00"),
    ]


async def test_a_look_alike_that_leaves_out_statuses_version_group_key_and_start_is_taken(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    # Alertmanager drops a notification answered 4xx without retrying: what the service does not need is optional.
    payload = group("CheckoutDown")
    for key in ("status", "version", "groupKey"):
        payload.pop(key)
    for alert in payload["alerts"]:
        alert.pop("status")
        alert.pop("startsAt")
    payload["alerts"][1]["endsAt"] = "2020-01-01T00:00:00Z"  # ended long ago: resolved
    payload["unknownField"] = {"ignored": True}
    [started] = (await post(client, admin_headers, payload))["executions"]
    assert started["group_key"] == "{}:" + json.dumps(payload["groupLabels"], sort_keys=True)
    context = (await execution(client, admin_headers, started["execution_id"]))["input"]["context"]
    assert context["status"] == "firing"
    assert [(a["status"], a["starts_at"]) for a in context["alerts"]] == [("firing", None), ("resolved", None)]

    # Every alert ended, and no status anywhere: a resolved group, which starts nothing.
    ended = group("CheckoutSlow")
    ended.pop("status")
    for alert in ended["alerts"]:
        alert.pop("status")
        alert["endsAt"] = "2020-01-01T00:00:00Z"
    resolved = await post(client, admin_headers, ended)
    assert resolved["executions"] == [] and resolved["skipped"][0]["code"] == "RESOLVED"


async def test_without_common_annotations_the_task_lists_the_firing_alerts(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    payload = firing_payload(commonAnnotations={})
    payload["alerts"][0]["annotations"] = {"summary": "pod x2k4q slow"}
    payload["alerts"][1]["annotations"] = {}
    [started] = (await post(client, admin_headers, payload))["executions"]
    task = (await execution(client, admin_headers, started["execution_id"]))["input"]["task"]
    assert task.splitlines()[0] == "Investigate 2 firing alert(s): CheckoutHighLatency."
    assert "- CheckoutHighLatency (aiops_team=webshop, namespace=shop, pod=checkout-7d9f8b6c5-x2k4q" in task
    assert task.splitlines()[2].endswith(": pod x2k4q slow")


async def test_the_team_comes_from_team_id_or_the_label_and_every_miss_is_explained(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    other = await make_team(client, admin_headers, "payments")
    # team_id wins over the label.
    body = await post(client, admin_headers, group("PaymentsDown"), team_id=other)
    assert body["executions"][0]["team_id"] == other
    # The label may name the team by id too.
    body = await post(client, admin_headers, group("ByTeamId", team=team))
    assert body["executions"][0]["team_id"] == team

    unknown = await post(client, admin_headers, group("Unknown", team="no-such-team"))
    assert unknown["skipped"][0]["code"] == "TEAM_NOT_FOUND"
    assert "'no-such-team'" in unknown["skipped"][0]["reason"]

    unlabelled = group("NoTeam")
    for labels in [unlabelled["groupLabels"], unlabelled["commonLabels"], *[a["labels"] for a in unlabelled["alerts"]]]:
        labels.pop("aiops_team")
    assert (await post(client, admin_headers, unlabelled))["skipped"][0]["code"] == "NO_TEAM"

    mixed = group("Mixed")
    mixed["commonLabels"].pop("aiops_team")
    mixed["alerts"][1]["labels"]["aiops_team"] = "payments"
    skip = (await post(client, admin_headers, mixed))["skipped"][0]
    assert skip["code"] == "AMBIGUOUS_TEAM"
    assert "payments, webshop" in skip["reason"]

    missing = await client.post(WEBHOOK, json=group("X"), headers=admin_headers, params={"team_id": str(uuid.uuid4())})
    assert_error(missing, 404, "TEAM_NOT_FOUND")


async def test_a_refusal_of_the_executions_service_is_a_skip_with_its_code(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    switched_off = await client.put(f"{API}/teams/{team}", json={"status": "inactive"}, headers=admin_headers)
    assert switched_off.status_code == 200, switched_off.text
    body = await post(client, admin_headers, firing_payload())
    assert body["executions"] == []
    assert body["skipped"][0]["code"] == "TEAM_NOT_ACTIVE"
    assert "inactive" in body["skipped"][0]["reason"]


async def test_concurrent_deliveries_of_one_group_start_one_run(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    # Two receivers (two teams) get the same group at the same moment: the database's unique index decides.
    other = await make_team(client, admin_headers, "payments")
    payload = firing_payload()
    bodies = await asyncio.gather(
        *[post(client, admin_headers, payload, team_id=team_id) for team_id in (team, other, team, other)]
    )
    started = [e for body in bodies for e in body["executions"]]
    skipped = [s for body in bodies for s in body["skipped"]]
    assert len(started) == 1, bodies
    assert [s["code"] for s in skipped] == ["TRIGGER_RUNNING"] * 3
    assert {s["execution_id"] for s in skipped} == {started[0]["execution_id"]}


async def test_the_database_refuses_a_second_unfinished_run_of_one_trigger(database_url: str, team: str) -> None:
    engine = create_async_engine(database_url)
    key = trigger_key("alertmanager", '{}:{alertname="X"}')

    def row(status: str) -> dict[str, Any]:
        now = utcnow()
        return {
            "id": uuid.uuid4(),
            "team_id": uuid.UUID(team),
            "status": status,
            "input": {"task": "t"},
            "timeout_seconds": 60,
            "team_snapshot": {},
            "requested_by": "test",
            "usage": {},
            "last_seq": 0,
            "attempt": 1,
            "trigger_key": key,
            "created_at": now,
            "updated_at": now,
        }

    try:
        async with engine.begin() as connection:
            # Finished runs of the trigger do not count.
            await connection.execute(insert(Execution), [row("success"), row("failed"), row("pending")])
        with pytest.raises(IntegrityError):
            async with engine.begin() as connection:
                await connection.execute(insert(Execution), [row("running")])
    finally:
        async with engine.begin() as connection:  # rows no process runs: not for the service to cancel
            await connection.execute(delete(Execution).where(Execution.trigger_key == key))
        await engine.dispose()


async def test_api_keys_authenticate_as_alertmanager_does(
    client: httpx.AsyncClient, admin_headers: dict[str, str], team: str
) -> None:
    keys = {}
    for role in ("operator", "viewer"):
        created = await client.post(f"{API}/api-keys", json={"name": f"am-{role}", "role": role}, headers=admin_headers)
        assert created.status_code == 201, created.text
        keys[role] = {"Authorization": f"Bearer {created.json()['key']}"}

    body = await post(client, keys["operator"], firing_payload())
    assert len(body["executions"]) == 1
    assert_error(await client.post(WEBHOOK, json=group("A"), headers=keys["viewer"]), 403, "FORBIDDEN")
    assert_error(await client.post(WEBHOOK, json=group("A")), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "change",
    [
        {"version": "3"},
        {"groupKey": ""},
        {"status": "pending"},
        {"alerts": "none"},
        {"commonLabels": {"alertname": "a\x00b"}},
    ],
)
async def test_payloads_that_are_not_alertmanager_version_4_are_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], change: dict[str, Any]
) -> None:
    response = await client.post(WEBHOOK, json=firing_payload(**change), headers=admin_headers)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert body["details"]["errors"][0]["loc"][:2] == ["body", next(iter(change))]
