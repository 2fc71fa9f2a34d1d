"""Endpoints (access points): defaults, per-type rules, uniqueness, the limit, the single default, audit."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from aiops_executor.audit.models import AuditLog
from aiops_executor.core.context import AppContext
from aiops_executor.llm import service
from aiops_executor.llm.runtime.breaker import Outcome
from aiops_executor.llm.runtime.errors import Failure, FailureKind
from aiops_executor.services import ServiceContext
from tests.helpers import API, assert_error, make_provider
from tests.llm.test_runtime_clients import endpoint as runtime_endpoint


async def make_endpoint(
    client: httpx.AsyncClient, headers: dict[str, str], provider_id: str, name: str = "primary", **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/providers/{provider_id}/endpoints", json={"name": name, **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_create_with_defaults_get_list_update_delete(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    created = await make_endpoint(client, admin_headers, pid, base_url="https://api.openai.com/v1")
    assert created["provider_id"] == pid
    assert created["base_url"] == "https://api.openai.com/v1"
    assert (created["timeout_connect"], created["timeout_read"]) == (10, 60)
    assert (created["retry_count"], created["retry_interval"], created["priority"]) == (2, 1.0, 100)
    assert (created["is_default"], created["is_active"]) == (False, True)
    assert created["health_status"] == "unknown"
    assert created["last_health_check"] is None
    assert created["api_version"] is None and created["region"] is None

    assert (await client.get(f"{API}/endpoints/{created['id']}", headers=admin_headers)).json() == created
    backup = await make_endpoint(client, admin_headers, pid, "backup", priority=200)
    first = await make_endpoint(client, admin_headers, pid, "first", priority=1)
    listing = (await client.get(f"{API}/providers/{pid}/endpoints", headers=admin_headers)).json()
    assert [e["name"] for e in listing["items"]] == ["first", "primary", "backup"]  # priority order
    assert listing["total"] == 3
    paged = (
        await client.get(f"{API}/providers/{pid}/endpoints", params={"size": 2, "page": 2}, headers=admin_headers)
    ).json()
    assert [e["name"] for e in paged["items"]] == ["backup"] and paged["pages"] == 2

    updated = await client.put(
        f"{API}/endpoints/{created['id']}", json={"timeout_read": 120, "retry_count": 0}, headers=admin_headers
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["timeout_read"] == 120 and updated.json()["retry_count"] == 0
    assert updated.json()["base_url"] == "https://api.openai.com/v1"

    assert (await client.delete(f"{API}/endpoints/{backup['id']}", headers=admin_headers)).status_code == 204
    assert_error(await client.get(f"{API}/endpoints/{backup['id']}", headers=admin_headers), 404, "ENDPOINT_NOT_FOUND")
    assert_error(
        await client.delete(f"{API}/endpoints/{backup['id']}", headers=admin_headers), 404, "ENDPOINT_NOT_FOUND"
    )
    assert_error(
        await client.put(f"{API}/endpoints/{uuid.uuid4()}", json={}, headers=admin_headers), 404, "ENDPOINT_NOT_FOUND"
    )
    assert_error(
        await client.get(f"{API}/providers/{uuid.uuid4()}/endpoints", headers=admin_headers), 404, "PROVIDER_NOT_FOUND"
    )

    async with context.database.sessionmaker() as session:
        rows = list(
            await session.scalars(
                select(AuditLog).where(AuditLog.resource_type == "endpoint").order_by(AuditLog.created_at)
            )
        )
    actions = [(r.action, r.resource_id) for r in rows]
    assert actions == [
        ("create", created["id"]),
        ("create", backup["id"]),
        ("create", first["id"]),
        ("update", created["id"]),
        ("delete", backup["id"]),
    ]
    assert sorted(rows[3].details["fields"]) == ["retry_count", "timeout_read"]
    assert rows[0].details["provider_id"] == pid


TYPE_RULES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("azure_openai", {}, {"base_url", "api_version"}),
    ("azure_openai", {"base_url": "https://x.openai.azure.com"}, {"api_version"}),
    ("azure_openai", {"api_version": "2024-06-01"}, {"base_url"}),
    ("aws_bedrock", {}, {"region"}),
    ("ollama", {}, {"base_url"}),
    ("vllm", {"base_url": ""}, {"base_url"}),
    ("openai_compatible", {}, {"base_url"}),
]


async def test_type_rules(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    for index, (provider_type, body, missing) in enumerate(TYPE_RULES):
        pid = await make_provider(client, admin_headers, f"p{index}", provider_type)
        response = await client.post(
            f"{API}/providers/{pid}/endpoints", json={"name": "e", **body}, headers=admin_headers
        )
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert {e["loc"][-1] for e in error["details"]["errors"]} == missing, provider_type


async def test_valid_type_specific_endpoints(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    azure = await make_provider(client, admin_headers, "azure", "azure_openai")
    await make_endpoint(client, admin_headers, azure, base_url="https://x.openai.azure.com", api_version="2024-06-01")
    bedrock = await make_provider(client, admin_headers, "bedrock", "aws_bedrock")
    assert (await make_endpoint(client, admin_headers, bedrock, region="us-east-1"))["region"] == "us-east-1"
    ollama = await make_provider(client, admin_headers, "ollama", "ollama")
    await make_endpoint(client, admin_headers, ollama, base_url="http://127.0.0.1:11434")
    anthropic = await make_provider(client, admin_headers, "anthropic", "anthropic")
    await make_endpoint(client, admin_headers, anthropic)  # default base URL of the SDK


async def test_simulator_takes_no_endpoints(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers, "sim", "simulator")
    response = await client.post(f"{API}/providers/{pid}/endpoints", json={"name": "e"}, headers=admin_headers)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert "simulator" in body["error_message"]


BAD_FIELDS: list[dict[str, Any]] = [
    {"base_url": "ftp://example.com"},
    {"base_url": "example.com/v1"},
    {"base_url": "https://user:pass@example.com"},
    {"base_url": "https://exa mple.com"},
    {"timeout_connect": 0},
    {"timeout_read": -1},
    {"retry_count": -1},
    {"retry_count": 11},
    {"retry_interval": -0.5},
    {"priority": -1},
    {"name": "n" * 101},
    {"name": ""},
]


async def test_field_validation(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers)
    for field_values in BAD_FIELDS:
        body = {"name": "e", **field_values}
        response = await client.post(f"{API}/providers/{pid}/endpoints", json=body, headers=admin_headers)
        assert_error(response, 422, "VALIDATION_ERROR")
    assert (await client.get(f"{API}/providers/{pid}/endpoints", headers=admin_headers)).json()["total"] == 0


async def test_update_keeps_type_rules(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers, provider_type="ollama")
    endpoint = await make_endpoint(client, admin_headers, pid, base_url="http://localhost:11434")
    cleared = await client.put(f"{API}/endpoints/{endpoint['id']}", json={"base_url": None}, headers=admin_headers)
    assert_error(cleared, 422, "VALIDATION_ERROR")
    nulled = await client.put(f"{API}/endpoints/{endpoint['id']}", json={"priority": None}, headers=admin_headers)
    assert_error(nulled, 422, "VALIDATION_ERROR")
    moved = await client.put(
        f"{API}/endpoints/{endpoint['id']}", json={"base_url": "http://gpu-1:11434"}, headers=admin_headers
    )
    assert moved.status_code == 200 and moved.json()["base_url"] == "http://gpu-1:11434"


async def test_name_unique_per_provider(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    first = await make_provider(client, admin_headers, "one")
    second = await make_provider(client, admin_headers, "two")
    await make_endpoint(client, admin_headers, first, "main")
    await make_endpoint(client, admin_headers, second, "main")  # another provider may reuse it
    duplicate = await client.post(f"{API}/providers/{first}/endpoints", json={"name": "main"}, headers=admin_headers)
    assert_error(duplicate, 409, "ENDPOINT_NAME_EXISTS")
    other = await make_endpoint(client, admin_headers, first, "other")
    rename = await client.put(f"{API}/endpoints/{other['id']}", json={"name": "main"}, headers=admin_headers)
    assert_error(rename, 409, "ENDPOINT_NAME_EXISTS")


async def test_at_most_ten_per_provider(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers)
    for index in range(10):
        await make_endpoint(client, admin_headers, pid, f"e{index}")
    response = await client.post(f"{API}/providers/{pid}/endpoints", json={"name": "e10"}, headers=admin_headers)
    body = assert_error(response, 409, "LIMIT_EXCEEDED")
    assert body["details"]["limit"] == 10
    listing = (await client.get(f"{API}/providers/{pid}/endpoints", headers=admin_headers)).json()
    assert listing["total"] == 10


async def test_single_default_per_provider(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers)
    other_pid = await make_provider(client, admin_headers, "other")
    other = await make_endpoint(client, admin_headers, other_pid, "x", is_default=True)
    a = await make_endpoint(client, admin_headers, pid, "a", is_default=True)
    b = await make_endpoint(client, admin_headers, pid, "b", is_default=True)

    async def defaults(provider_id: str) -> list[str]:
        items = (await client.get(f"{API}/providers/{provider_id}/endpoints", headers=admin_headers)).json()["items"]
        return [e["name"] for e in items if e["is_default"]]

    assert await defaults(pid) == ["b"]
    response = await client.put(f"{API}/endpoints/{a['id']}", json={"is_default": True}, headers=admin_headers)
    assert response.status_code == 200 and response.json()["is_default"] is True
    assert await defaults(pid) == ["a"]
    assert (await client.get(f"{API}/endpoints/{b['id']}", headers=admin_headers)).json()["is_default"] is False
    assert await defaults(other_pid) == ["x"]  # other providers are untouched
    assert other["is_default"] is True


async def test_endpoint_reads_are_cached(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    endpoint = await make_endpoint(client, admin_headers, pid)
    url = f"{API}/endpoints/{endpoint['id']}"
    hits = context.config_cache.hits
    assert (await client.get(url, headers=admin_headers)).status_code == 200
    assert (await client.get(url, headers=admin_headers)).status_code == 200
    assert context.config_cache.hits == hits + 1
    await client.put(url, json={"priority": 5}, headers=admin_headers)
    assert (await client.get(url, headers=admin_headers)).json()["priority"] == 5


async def test_failover_order_for_callers(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    await make_endpoint(client, admin_headers, pid, "slow", priority=50)
    await make_endpoint(client, admin_headers, pid, "b-tie", priority=10)
    await make_endpoint(client, admin_headers, pid, "a-tie", priority=10)
    await make_endpoint(client, admin_headers, pid, "z-default", priority=10, is_default=True)
    await make_endpoint(client, admin_headers, pid, "off", priority=1, is_active=False)
    async with context.database.sessionmaker() as session:
        ordered = await service.ordered_endpoints(session, uuid.UUID(pid))
    assert [e.name for e in ordered] == ["z-default", "a-tie", "b-tie", "slow"]


async def test_rate_limits_round_trip_and_the_circuit_state_is_shown(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: ServiceContext
) -> None:
    pid = await make_provider(client, admin_headers)
    created = await make_endpoint(client, admin_headers, pid, rpm=60, tpm=90_000)
    url = f"{API}/endpoints/{created['id']}"
    assert (created["rpm"], created["tpm"], created["circuit_state"]) == (60, 90_000, "closed")
    assert (await client.get(url, headers=admin_headers)).json() == created
    plain = await make_endpoint(client, admin_headers, pid, "plain")
    assert (plain["rpm"], plain["tpm"]) == (None, None), "no limit unless one is set"

    updated = await client.put(url, json={"rpm": None, "tpm": 5000}, headers=admin_headers)
    assert updated.status_code == 200, updated.text
    assert (updated.json()["rpm"], updated.json()["tpm"]) == (None, 5000)
    kept = await client.put(url, json={"priority": 7}, headers=admin_headers)
    assert (kept.json()["rpm"], kept.json()["tpm"]) == (None, 5000), "omitted: kept"
    for bad in ({"rpm": 0}, {"tpm": -1}, {"rpm": 1.5}, {"rpm": "60"}, {"tpm": 2**31}):
        assert_error(await client.put(url, json=bad, headers=admin_headers), 422, "VALIDATION_ERROR")
        body = {"name": "bad", **bad}
        response = await client.post(f"{API}/providers/{pid}/endpoints", json=body, headers=admin_headers)
        assert_error(response, 422, "VALIDATION_ERROR")

    # The runtime's breaker for the endpoint opens (five endpoint failures in a row): reads show it, with the
    # health, and so does the breaker's gauge.
    state = context.model_runtime.state
    limited = runtime_endpoint(None, id=uuid.UUID(created["id"]), name="primary")
    for _ in range(5):
        circuit = await state.circuit_admit(limited, "p")
        await state.circuit_record(limited, "p", circuit, Failure(FailureKind.unreachable, "down"), Outcome.failed)
    shown = (await client.get(url, headers=admin_headers)).json()
    assert shown["circuit_state"] == "open" and (shown["rpm"], shown["tpm"]) == (None, 5000)
    listed = (await client.get(f"{API}/providers/{pid}/endpoints", headers=admin_headers)).json()["items"]
    assert {e["name"]: e["circuit_state"] for e in listed} == {"primary": "open", "plain": "closed"}
    after_edit = await client.put(url, json={"priority": 8}, headers=admin_headers)
    assert after_edit.json()["circuit_state"] == "open", "an update answers the endpoint as it is now"
    metrics = (await client.get("/metrics")).text
    assert 'aiops_model_endpoint_circuit_state{endpoint="primary",provider="p"} 2.0' in metrics
    assert 'aiops_model_endpoint_circuit_transitions_total{endpoint="primary",provider="p",state="open"} 1.0' in metrics
