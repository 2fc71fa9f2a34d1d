"""The API answers as its OpenAPI document says: regressions for what fuzzing (tests/service/test_fuzz_api.py) found.

- every error response is documented, with the contract's error body; guarded operations declare the bearer scheme;
- 405 names every method the path supports; ``DELETE /users/me`` is a 405, not a UUID parse error;
- out-of-range pages and event seqs are 422, not a database overflow (500);
- body scalars are JSON-typed: no ``0`` for ``false``, ``"5"`` for ``5`` or Unix time for a date-time;
- partial updates document that their fields may be omitted but not null; the token form, that fields are non-empty.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aiops_executor.core.errors import AppError
from aiops_executor.core.pagination import MAX_PAGE
from aiops_executor.executions.endpoints import _parse_last_event_id
from aiops_executor.executions.schemas import MAX_SEQ
from tests.helpers import API, assert_error, make_provider

METHODS = ("get", "put", "post", "delete", "patch")
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture
def backend() -> str:
    return "sqlite"


def operations(app: FastAPI) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_error_response_is_documented_with_the_error_body(app: FastAPI) -> None:
    document = app.openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT from POST /api/v1/auth/token, or an API key from POST /api/v1/api-keys",
    }
    problems = []
    for method, path, operation in operations(app):
        responses = operation["responses"]
        expected = {"500"}
        if path.startswith(API) and path != f"{API}/auth/token":
            expected |= {"401", "403"}
            if operation.get("security") != [{"bearer": []}]:
                problems.append(f"{method} {path}: no bearer security")
        if "requestBody" in operation:
            expected |= {"413", "422"}
        if missing := expected - set(responses):
            problems.append(f"{method} {path}: undocumented {sorted(missing)}")
        for status, response in responses.items():
            if status[0] in "45":
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref") != ERROR_REF:
                    problems.append(f"{method} {path} {status}: not the error body")
    assert not problems, "\n".join(problems)


async def test_405_names_every_method_of_the_path(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.patch(f"{API}/teams/{uuid.uuid4()}", headers=admin_headers)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "DELETE, GET, PUT"

    me = await client.delete(f"{API}/users/me", headers=admin_headers)
    assert_error(me, 405, "METHOD_NOT_ALLOWED")
    assert me.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "path",
    [
        f"/teams?page={MAX_PAGE + 1}",
        f"/providers?page={10**22}",
        # Fixed ids (no such execution): the test ids must be the same in every parallel worker.
        f"/executions/{uuid.UUID(int=1)}/events?after={MAX_SEQ + 1}",
        f"/executions/{uuid.UUID(int=2)}/stream?after={10**30}",
    ],
)
async def test_out_of_range_numbers_are_422_not_500(
    client: httpx.AsyncClient, admin_headers: dict[str, str], path: str
) -> None:
    assert_error(await client.get(f"{API}{path}", headers=admin_headers), 422, "VALIDATION_ERROR")


def test_an_oversized_last_event_id_is_refused() -> None:
    assert _parse_last_event_id(str(MAX_SEQ)) == MAX_SEQ
    with pytest.raises(AppError) as refused:
        _parse_last_event_id(str(MAX_SEQ + 1))
    assert (refused.value.status_code, refused.value.error_code) == (422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "p", "type": "openai", "is_active": 0}, "is_active"),
        ({"name": "p", "type": "openai", "is_active": "true"}, "is_active"),
    ],
)
async def test_booleans_are_json_booleans(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    body_error = assert_error(
        await client.post(f"{API}/providers", json=body, headers=admin_headers), 422, "VALIDATION_ERROR"
    )
    assert [e["loc"] for e in body_error["details"]["errors"]] == [["body", field]]


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(5, True), (5.0, True), ("5", False), (True, False), (5.5, False)],
)
async def test_integers_are_json_numbers(
    client: httpx.AsyncClient, admin_headers: dict[str, str], value: Any, accepted: bool
) -> None:
    provider_id = await make_provider(client, admin_headers)
    body = {"name": f"e-{uuid.uuid4().hex[:6]}", "base_url": "https://api.example.com", "priority": value}
    response = await client.post(f"{API}/providers/{provider_id}/endpoints", json=body, headers=admin_headers)
    if accepted:
        assert response.status_code == 201, response.text
        assert response.json()["priority"] == 5
    else:
        assert_error(response, 422, "VALIDATION_ERROR")


async def test_timestamps_are_iso_strings(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.post(
        f"{API}/config/import", json={"version": 1, "exported_at": 0, "providers": []}, headers=admin_headers
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    response = await client.post(
        f"{API}/config/import",
        json={"version": 1, "exported_at": "2026-01-01T00:00:00Z", "providers": []},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text


def test_partial_updates_document_fields_that_may_not_be_null(app: FastAPI) -> None:
    schemas = app.openapi()["components"]["schemas"]
    assert schemas["ProviderUpdate"]["properties"]["type"] == {"$ref": "#/components/schemas/ProviderType"}
    assert "anyOf" in schemas["ProviderUpdate"]["properties"]["description"]  # may be cleared with null
    assert all("anyOf" not in field for field in schemas["TeamUpdate"]["properties"].values())


async def test_the_token_form_needs_non_empty_fields(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/auth/token", data={"username": "", "password": ""})
    assert_error(response, 422, "VALIDATION_ERROR")
