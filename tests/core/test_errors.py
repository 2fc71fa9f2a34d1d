"""Every non-2xx response has the contract's error body and every response echoes X-Request-ID."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.helpers import assert_error


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "trace-abc.123"})
    assert response.headers["x-request-id"] == "trace-abc.123"
    generated = await client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    assert_error(await client.delete("/health"), 405, "METHOD_NOT_ALLOWED")


async def test_validation_error_shape_and_no_echo_of_input(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    secret_like = "s3cr3t-" + "z" * 300
    response = await client.post(
        "/api/v1/users", json={"username": secret_like, "password": "p", "role": "admin"}, headers=admin_headers
    )
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert secret_like not in response.text
    errors = body["details"]["errors"]  # type: ignore[index]
    assert {"loc", "message", "type"} <= set(errors[0])


async def test_malformed_json_is_a_validation_error(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.post(
        "/api/v1/users", content=b"{not json", headers={**admin_headers, "content-type": "application/json"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_unhandled_exception_is_a_clean_500(app: FastAPI, client: httpx.AsyncClient) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak: /etc/passwd")

    response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert body["request_id"] == "req-500"
    assert "passwd" not in response.text and "Traceback" not in response.text


async def test_readiness_reports_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


async def test_readiness_fails_when_database_is_gone(app: FastAPI, client: httpx.AsyncClient) -> None:
    from aiops_executor.core.db import Database

    context = app.state.context
    original = context.database
    context.database = Database("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        response = await client.get("/health/ready")
    finally:
        await context.database.dispose()
        context.database = original
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
