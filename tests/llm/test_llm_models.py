"""Models: fields and validation, uniqueness, filters, by-capability ranking, provider-calling stubs, cache."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from aiops_executor.audit.models import AuditLog
from aiops_executor.core.context import AppContext
from aiops_executor.llm import service
from aiops_executor.llm.models import LLMModel
from tests.helpers import API, assert_error, make_provider


def caps(**scores: int | None) -> dict[str, dict[str, Any]]:
    """caps(chat=5, vision=None): None means listed but unsupported."""
    return {
        name: {"supported": score is not None, "score": score if score is not None else 1}
        for name, score in scores.items()
    }


async def make_model(
    client: httpx.AsyncClient, headers: dict[str, str], provider_id: str, model_id: str, **extra: Any
) -> dict[str, Any]:
    body = {"model_id": model_id, "name": extra.pop("name", model_id.upper()), **extra}
    response = await client.post(f"{API}/providers/{provider_id}/models", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


@contextmanager
def statements_on(engine: Engine, table: str) -> Iterator[list[str]]:
    seen: list[str] = []
    pattern = re.compile(rf"\b{table}\b", re.IGNORECASE)

    def listener(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if pattern.search(statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)


FULL = {
    "model_id": "gpt-4o",
    "name": "GPT-4o",
    "version": "2024-08-06",
    "type": "chat",
    "context_window": 128000,
    "max_output_tokens": 16384,
    "input_price": 0.0025,
    "output_price": 0.01,
    "status": "available",
    "default_params": {"temperature": 0.2, "top_p": 0.9, "max_tokens": 1024, "seed": 7},
    "capabilities": caps(chat=5, function_calling=4, vision=None),
    "recommended_scenarios": ["root-cause analysis", "summaries"],
}


async def test_model_crud_and_audit(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    response = await client.post(f"{API}/providers/{pid}/models", json=FULL, headers=admin_headers)
    assert response.status_code == 201, response.text
    created = response.json()
    for key, value in FULL.items():
        assert created[key] == value, key
    assert isinstance(created["input_price"], float)  # prices are JSON numbers
    assert created["provider_id"] == pid
    async with context.database.sessionmaker() as session:
        row = await session.get(LLMModel, uuid.UUID(created["id"]))
        assert row is not None and row.input_price == Decimal("0.0025")

    assert (await client.get(f"{API}/models/{created['id']}", headers=admin_headers)).json() == created
    minimal = await make_model(client, admin_headers, pid, "tiny")
    assert (minimal["type"], minimal["status"]) == ("chat", "available")
    assert (minimal["default_params"], minimal["capabilities"], minimal["recommended_scenarios"]) == ({}, {}, [])
    assert minimal["input_price"] is None

    updated = await client.put(
        f"{API}/models/{created['id']}",
        json={"status": "maintenance", "output_price": 0.012, "capabilities": caps(chat=4)},
        headers=admin_headers,
    )
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["status"], body["output_price"], body["capabilities"]) == ("maintenance", 0.012, caps(chat=4))
    assert body["name"] == "GPT-4o"  # untouched
    assert_error(
        await client.put(f"{API}/models/{created['id']}", json={"name": None}, headers=admin_headers),
        422,
        "VALIDATION_ERROR",
    )

    assert (await client.delete(f"{API}/models/{minimal['id']}", headers=admin_headers)).status_code == 204
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(
            method, f"{API}/models/{minimal['id']}", headers=admin_headers, json={} if method == "PUT" else None
        )
        assert_error(response, 404, "MODEL_NOT_FOUND")

    async with context.database.sessionmaker() as session:
        rows = list(
            await session.scalars(
                select(AuditLog).where(AuditLog.resource_type == "model").order_by(AuditLog.created_at)
            )
        )
    assert [(r.action, r.resource_id) for r in rows] == [
        ("create", created["id"]),
        ("create", minimal["id"]),
        ("update", created["id"]),
        ("delete", minimal["id"]),
    ]
    assert sorted(rows[2].details["fields"]) == ["capabilities", "output_price", "status"]


async def test_model_id_unique_per_provider(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    first = await make_provider(client, admin_headers, "one")
    second = await make_provider(client, admin_headers, "two")
    await make_model(client, admin_headers, first, "m")
    await make_model(client, admin_headers, second, "m")
    duplicate = await client.post(
        f"{API}/providers/{first}/models", json={"model_id": "m", "name": "x"}, headers=admin_headers
    )
    assert_error(duplicate, 409, "MODEL_ID_EXISTS")
    other = await make_model(client, admin_headers, first, "n")
    rename = await client.put(f"{API}/models/{other['id']}", json={"model_id": "m"}, headers=admin_headers)
    assert_error(rename, 409, "MODEL_ID_EXISTS")


BAD_MODELS: list[dict[str, Any]] = [
    {"model_id": "m" * 101},
    {"name": "n" * 101},
    {"type": "audio"},
    {"status": "retired"},
    {"capabilities": {"telepathy": {"supported": True, "score": 3}}},
    {"capabilities": {"chat": {"supported": True, "score": 6}}},
    {"capabilities": {"chat": {"supported": True, "score": 0}}},
    {"capabilities": {"chat": {"supported": True}}},
    {"capabilities": {"chat": {"supported": True, "score": 3, "extra": 1}}},
    {"default_params": {"temperature": 2.5}},
    {"default_params": {"temperature": "hot"}},
    {"default_params": {"top_p": 1.5}},
    {"default_params": {"max_tokens": 0}},
    {"default_params": {"max_tokens": 1.5}},
    {"input_price": -0.01},
    {"output_price": -1},
    {"input_price": 0.0000001},
    {"context_window": 0},
    {"recommended_scenarios": [""]},
]


async def test_model_validation(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers)
    for bad in BAD_MODELS:
        body = {"model_id": "m", "name": "M", **bad}
        response = await client.post(f"{API}/providers/{pid}/models", json=body, headers=admin_headers)
        assert_error(response, 422, "VALIDATION_ERROR")
    assert (await client.get(f"{API}/models", headers=admin_headers)).json()["total"] == 0
    edge = await make_model(
        client,
        admin_headers,
        pid,
        "m" * 100,
        name="n" * 100,
        input_price=0,
        default_params={"temperature": 2, "top_p": 0, "max_tokens": 1, "stop": ["\n"]},
    )
    assert edge["input_price"] == 0 and edge["default_params"]["stop"] == ["\n"]


async def test_list_filters(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    openai = await make_provider(client, admin_headers, "openai")
    local = await make_provider(client, admin_headers, "local", "ollama")
    await make_model(client, admin_headers, openai, "a-chat", capabilities=caps(chat=5, vision=None))
    await make_model(client, admin_headers, openai, "b-embed", type="embedding", capabilities=caps(embedding=4))
    await make_model(
        client,
        admin_headers,
        local,
        "c-vision",
        type="vision",
        status="deprecated",
        capabilities=caps(vision=3, chat=2),
    )

    async def ids(**params: Any) -> list[str]:
        response = await client.get(f"{API}/models", params=params, headers=admin_headers)
        assert response.status_code == 200, response.text
        return [m["model_id"] for m in response.json()["items"]]

    assert await ids() == ["a-chat", "b-embed", "c-vision"]
    assert await ids(provider_id=local) == ["c-vision"]
    assert await ids(type="embedding") == ["b-embed"]
    assert await ids(status="deprecated") == ["c-vision"]
    assert await ids(capability="chat") == ["a-chat", "c-vision"]
    assert await ids(capability="vision") == ["c-vision"]  # listed-but-unsupported does not count
    assert await ids(capability="chat", provider_id=openai) == ["a-chat"]
    assert await ids(capability="streaming") == []
    paged = (
        await client.get(f"{API}/models", params={"capability": "chat", "size": 1, "page": 2}, headers=admin_headers)
    ).json()
    assert ([m["model_id"] for m in paged["items"]], paged["total"], paged["pages"]) == (["c-vision"], 2, 2)
    for bad in ({"capability": "telepathy"}, {"type": "audio"}, {"status": "gone"}, {"provider_id": "x"}):
        assert_error(await client.get(f"{API}/models", params=bad, headers=admin_headers), 422, "VALIDATION_ERROR")


async def test_by_capability_ranks_and_skips_deprecated(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: Any
) -> None:
    pid = await make_provider(client, admin_headers)
    await make_model(client, admin_headers, pid, "good", capabilities=caps(code_generation=3))
    await make_model(client, admin_headers, pid, "best", capabilities=caps(code_generation=5))
    await make_model(client, admin_headers, pid, "old", status="deprecated", capabilities=caps(code_generation=5))
    await make_model(client, admin_headers, pid, "no", capabilities=caps(code_generation=None))
    await make_model(client, admin_headers, pid, "fine", status="maintenance", capabilities=caps(code_generation=4))
    viewer = await role_headers("viewer")
    response = await client.get(f"{API}/models/by-capability/code_generation", headers=viewer)
    assert response.status_code == 200
    body = response.json()
    assert [m["model_id"] for m in body["items"]] == ["best", "fine", "good"]
    assert (body["total"], body["page"], body["size"], body["pages"]) == (3, 1, 20, 1)
    second = (
        await client.get(f"{API}/models/by-capability/code_generation", params={"size": 2, "page": 2}, headers=viewer)
    ).json()
    assert [m["model_id"] for m in second["items"]] == ["good"]
    assert_error(await client.get(f"{API}/models/by-capability/telepathy", headers=viewer), 422, "VALIDATION_ERROR")


async def test_model_reads_are_cached_and_writes_invalidate(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    pid = await make_provider(client, admin_headers)
    model = await make_model(client, admin_headers, pid, "m", capabilities=caps(chat=3))
    engine = context.database.engine.sync_engine
    with statements_on(engine, "llm_models") as seen:
        listing = await client.get(f"{API}/models", headers=admin_headers)
        single = await client.get(f"{API}/models/{model['id']}", headers=admin_headers)
        ranked = await client.get(f"{API}/models/by-capability/chat", headers=admin_headers)
        loaded = len(seen)
        assert loaded >= 3
        assert (await client.get(f"{API}/models", headers=admin_headers)).json() == listing.json()
        assert (await client.get(f"{API}/models/{model['id']}", headers=admin_headers)).json() == single.json()
        assert (await client.get(f"{API}/models/by-capability/chat", headers=admin_headers)).json() == ranked.json()
        assert len(seen) == loaded  # all three served from the cache

    await client.put(f"{API}/models/{model['id']}", json={"name": "Renamed"}, headers=admin_headers)
    assert (await client.get(f"{API}/models", headers=admin_headers)).json()["items"][0]["name"] == "Renamed"
    assert (await client.get(f"{API}/models/{model['id']}", headers=admin_headers)).json()["name"] == "Renamed"
    await client.post(f"{API}/providers/{pid}/models", json={"model_id": "n", "name": "N"}, headers=admin_headers)
    assert (await client.get(f"{API}/models", headers=admin_headers)).json()["total"] == 2


async def test_resolvers(client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext) -> None:
    pid = await make_provider(client, admin_headers, "named")
    model = await make_model(client, admin_headers, pid, "gpt-4o-mini")
    async with context.database.sessionmaker() as session:
        by_name = await service.resolve_provider(session, "named")
        by_id = await service.resolve_provider(session, pid)
        assert by_name.id == by_id.id == uuid.UUID(pid)
        assert (await service.resolve_model(session, by_name, "gpt-4o-mini")).id == uuid.UUID(model["id"])
        assert (await service.resolve_model(session, by_name, model["id"])).model_id == "gpt-4o-mini"
        for ref in ("missing", str(uuid.uuid4())):
            try:
                await service.resolve_provider(session, ref)
            except Exception as exc:
                assert getattr(exc, "error_code", None) == "PROVIDER_NOT_FOUND"
            else:
                raise AssertionError("resolved a missing provider")
        try:
            await service.resolve_model(session, by_name, "nope")
        except Exception as exc:
            assert getattr(exc, "error_code", None) == "MODEL_NOT_FOUND"
        else:
            raise AssertionError("resolved a missing model")
