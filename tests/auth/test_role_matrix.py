"""Every /api/v1 route has exactly one role policy, and the policy holds for every role."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from aiops_executor.app import API_PREFIX, API_ROUTERS
from aiops_executor.auth.dependencies import RoleGuard
from aiops_executor.auth.models import Role
from tests.conftest import RoleHeaders

PUBLIC_ROUTES = {("POST", "/api/v1/auth/token")}
ROLES = [Role.viewer, Role.operator, Role.admin]
PATH_VALUES = {"capability": "chat"}


@pytest.fixture
def backend() -> str:
    # The policy does not depend on the database; one backend keeps this wide test quick.
    return "sqlite"


def _guards(dependant: Dependant) -> Iterator[RoleGuard]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RoleGuard):
            yield dependency.call
        yield from _guards(dependency)


def _api_routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    """(method, full path, route) for every route of the /api/v1 routers, public ones aside."""
    # path_format: the documented path, without converters (``/users/{user_id:uuid}`` is ``/users/{user_id}``).
    return [
        (method, API_PREFIX + route.path_format, route)
        for router in API_ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in sorted(route.methods)
        if (method, API_PREFIX + route.path_format) not in PUBLIC_ROUTES
    ]


def test_policy_walk_covers_every_documented_operation(app: FastAPI) -> None:
    documented = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(API_PREFIX)
        for method in operations
    }
    walked = {(method, path) for method, path, _ in _api_routes(app)}
    assert documented - PUBLIC_ROUTES == walked


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), str(uuid.uuid4())), path)


def test_every_route_has_exactly_one_policy(app: FastAPI) -> None:
    routes = _api_routes(app)
    assert len(routes) >= 8
    missing = [f"{m} {p}" for m, p, r in routes if len(list(_guards(r.dependant))) != 1]
    assert not missing, f"routes without exactly one RoleGuard: {missing}"


async def test_role_matrix(app: FastAPI, client: httpx.AsyncClient, role_headers: RoleHeaders) -> None:
    headers = {role: await role_headers(role.value) for role in ROLES}
    failures = []
    for method, full_path, route in _api_routes(app):
        (guard,) = _guards(route.dependant)
        path = _concrete(full_path)
        body = {} if method in {"POST", "PUT", "PATCH"} else None
        anonymous = await client.request(method, path, json=body)
        if anonymous.status_code != 401 or anonymous.json().get("error_code") != "UNAUTHORIZED":
            failures.append(f"{method} {full_path} anonymous -> {anonymous.status_code}")
        for role in ROLES:
            response = await client.request(method, path, json=body, headers=headers[role])
            allowed = role.allows(guard.min_role)
            if allowed and response.status_code in (401, 403):
                failures.append(f"{method} {full_path} as {role} -> {response.status_code}, expected access")
            if not allowed and (response.status_code != 403 or response.json().get("error_code") != "FORBIDDEN"):
                failures.append(f"{method} {full_path} as {role} -> {response.status_code}, expected 403")
    assert not failures, "\n".join(failures)


def test_admin_only_areas(app: FastAPI) -> None:
    """User, API-key and audit management are admin-only whatever the method."""
    for _, path, route in _api_routes(app):
        if path.startswith(("/api/v1/users", "/api/v1/api-keys", "/api/v1/audit-logs")) and path != "/api/v1/users/me":
            (guard,) = _guards(route.dependant)
            assert guard.min_role is Role.admin, path
