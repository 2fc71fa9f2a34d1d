"""Property-based fuzzing of the whole OpenAPI document with schemathesis, authenticated as an admin.

Every operation gets a bounded number of generated requests (valid and invalid ones), and every response is
checked by all of schemathesis's checks: never a 5xx, a documented status code and content type, headers and a
body that match the documented schema, invalid input refused, valid input not refused for a reason the
document does not give, 405 with a correct ``Allow`` for undeclared methods, auth enforced where declared.

The app runs in-process, once on a SQLite database and once on a PostgreSQL database of its own (created and
migrated by a fixture, dropped afterwards), with rate limits off. The cases are generated when the test runs, every
operation a subtest: generated at collection (schemathesis's ``parametrize``), they cost every parallel worker
20 s of CPU (its coverage phase) and signed in to both apps before any fixture ran.
Generated strings include NUL and other control characters (schemathesis's default), which PostgreSQL cannot store
in text and SQLite can: both must answer them with the same documented 422, never a 500. No generated request
reaches the network or hangs: ids in paths are random, so provider calls (health check, validate, sync, model
test), executions (streamed or not) and event streams answer 404 before any outside or long-running work; each
request is also bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.python import asgi as schemathesis_asgi

from aiops_executor.app import create_app
from aiops_executor.core.migrate import upgrade_url
from aiops_executor.executions.checkpoints import setup_checkpoints
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, PG_HOST, PG_PORT, PG_USER, _pg_admin, make_settings

MAX_EXAMPLES = 15
# Every operation of a database in one test: about a minute on an idle machine, two beside the parallel suite.
FUZZ_TIMEOUT_SECONDS = 600
REQUEST_TIMEOUT_SECONDS = 10.0
# Off, so that every generated request reaches its route rather than a 429 (rate limits have their own tests).
NO_RATE_LIMITS = {
    "rate_limit_executions_per_minute": 0,
    "rate_limit_auth_per_minute": 0,
    "login_max_failures": 0,
    "login_max_failures_per_ip": 0,
}

# Built at import without touching the disk or the database server: the data dir is created when the lifespan
# starts, which schemathesis does on the first request, and so is the PostgreSQL database. The module fixture stops
# the lifespans and removes the directory and the database.
_DATA_DIR = Path(tempfile.gettempdir()) / f"aiops-fuzz-{uuid.uuid4().hex[:12]}"
_PG_DATABASE = f"aiops_fuzz_{uuid.uuid4().hex[:12]}"
_PG_URL = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{_PG_DATABASE}"
sqlite_app = create_app(
    make_settings(f"sqlite+aiosqlite:///{_DATA_DIR / 'fuzz.db'}", _DATA_DIR / "sqlite-data", **NO_RATE_LIMITS)
)
postgres_app = create_app(make_settings(_PG_URL, _DATA_DIR / "postgres-data", **NO_RATE_LIMITS))

# Schemathesis's "valid data is accepted" check expects these statuses for schema-valid requests. Two rules the
# JSON schema cannot express are refused by contract: a team that breaks a whole-topology rule (an unknown model,
# a cycle) with 400 INVALID_TOPOLOGY, a configuration document naming a provider, endpoint or model twice with
# 422 VALIDATION_ERROR.
# A NUL in free-form JSON (attributes, default_params, an input's context, an output_schema) is refused with 422
# too: PostgreSQL cannot store it at any depth, which JSON Schema cannot say without a recursive reference.
# Kubernetes manifests are YAML inside a JSON string: YAML that does not parse, or holds nothing to import, is
# refused with 422 VALIDATION_ERROR (naming the document and line), which JSON Schema cannot say either.
# A tool server's fields must fit its transport (stdio: command, args, env; streamable_http: url, headers),
# a rule across fields the document states in words: 422 when they do not.
VALID_DATA_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
FREE_JSON_RULES_ACCEPTED = [*VALID_DATA_STATUSES, "422"]
TOPOLOGY_RULES_ACCEPTED = [*FREE_JSON_RULES_ACCEPTED, "400"]
DOCUMENT_RULES_ACCEPTED = FREE_JSON_RULES_ACCEPTED
CONFIG = schemathesis.Config.from_dict(
    {
        "base-url": "http://testserver",
        "request-timeout": REQUEST_TIMEOUT_SECONDS,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "operations": [
            {
                "include-name": [
                    "POST /api/v1/teams",
                    "PUT /api/v1/teams/{team_id}",
                    "POST /api/v1/teams/{team_id}/execute",
                    "POST /api/v1/teams/{team_id}/executions",
                ],
                "checks": {"positive_data_acceptance": {"expected-statuses": TOPOLOGY_RULES_ACCEPTED}},
            },
            {
                "include-name": ["POST /api/v1/config/import", "POST /api/v1/topologies/import/kubernetes"],
                "checks": {"positive_data_acceptance": {"expected-statuses": DOCUMENT_RULES_ACCEPTED}},
            },
            {
                "include-name": [
                    "POST /api/v1/providers/{provider_id}/models",
                    "PUT /api/v1/models/{model_id}",
                    "POST /api/v1/teams/{team_id}/structured-output",
                    "POST /api/v1/tool-servers",
                    "PUT /api/v1/tool-servers/{server_id}",
                ],
                "checks": {"positive_data_acceptance": {"expected-statuses": FREE_JSON_RULES_ACCEPTED}},
            },
        ],
    }
)


def _fuzzed(app: FastAPI, served: Any = None) -> schemathesis.schemas.BaseSchema:
    schema = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)
    served = served or app
    schema.app = served  # requests, including the checks' own probes, go to the app in-process

    @schema.auth()
    class AdminToken:
        """Signs in as the bootstrap admin through the API; schemathesis applies it as the documented bearer
        scheme (and knows it, so its negative cases without credentials and its auth probes expect a 401)."""

        def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
            with schemathesis_asgi.get_client(served) as http:
                response = http.post(
                    "/api/v1/auth/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
                )
            assert response.status_code == 200, response.text
            return str(response.json()["access_token"])

        def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema


_created = threading.Event()


async def _create_postgres_database() -> None:
    if _created.is_set():
        return
    conn = await _pg_admin()
    try:
        await conn.execute(f'CREATE DATABASE "{_PG_DATABASE}"')
    finally:
        await conn.close()
    _created.set()
    atexit.register(_run_apart, _drop_postgres_database)  # also when no test of this module ran
    await upgrade_url(_PG_URL)
    await setup_checkpoints(_PG_URL)


async def _drop_postgres_database() -> None:
    conn = await _pg_admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{_PG_DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()


def _run_apart(work: Callable[[], Coroutine[object, object, None]]) -> None:
    """Runs async work on a loop of its own in a thread: the session's event loop belongs to pytest-asyncio."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


class CreatesItsDatabase:
    """The PostgreSQL app, creating and migrating its database when its lifespan starts (on the first request)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def receive_after_creating() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _create_postgres_database()
            return message

        await self.app(scope, receive_after_creating, send)


postgres_served = CreatesItsDatabase(postgres_app)


@pytest.fixture(scope="module")
def fuzz_apps() -> Iterator[None]:
    try:
        yield
    finally:
        schemathesis_asgi.shutdown_lifespans()
        shutil.rmtree(_DATA_DIR, ignore_errors=True)
        if _created.is_set():
            _run_apart(_drop_postgres_database)
            _created.clear()  # a later test of this module in this worker starts the app, and so creates it, again


@pytest.fixture
def sqlite_schema(fuzz_apps: None) -> schemathesis.schemas.BaseSchema:
    return _fuzzed(sqlite_app)


@pytest.fixture
def postgres_schema(fuzz_apps: None) -> schemathesis.schemas.BaseSchema:
    return _fuzzed(postgres_app, postgres_served)


@pytest.mark.parametrize(
    ("served", "schema_fixture"),
    [(sqlite_app, "sqlite_schema"), (postgres_served, "postgres_schema")],
    ids=["sqlite", "postgresql"],
)
def test_fuzzed_document_is_the_served_one(served: Any, schema_fixture: str, request: pytest.FixtureRequest) -> None:
    schema: schemathesis.schemas.BaseSchema = request.getfixturevalue(schema_fixture)
    with schemathesis_asgi.get_client(served) as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == schema.raw_schema


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def conforms(schema: schemathesis.schemas.BaseSchema, subtests: pytest.Subtests) -> None:
    """Every operation of ``schema`` fuzzed in a subtest of its own (schemathesis's cases and checks, as its
    ``parametrize`` makes them), the cases generated now rather than at collection."""
    tests = list(get_all_tests(schema=schema, test_func=call_and_validate, settings=FUZZ_SETTINGS, given_kwargs=None))
    assert len(tests) > 50, "the document's operations are all fuzzed"
    for built in tests:
        operation, test = built.ok()  # a definition schemathesis cannot use fails the test here
        with subtests.test(msg=operation.label):
            test()


def call_and_validate(case: schemathesis.Case) -> None:
    case.call_and_validate()


@pytest.mark.long
@pytest.mark.timeout(FUZZ_TIMEOUT_SECONDS)
def test_api_conforms_to_its_openapi_document_on_sqlite(
    sqlite_schema: schemathesis.schemas.BaseSchema, subtests: pytest.Subtests
) -> None:
    conforms(sqlite_schema, subtests)


@pytest.mark.long
@pytest.mark.timeout(FUZZ_TIMEOUT_SECONDS)
@pytest.mark.postgres
def test_api_conforms_to_its_openapi_document_on_postgresql(
    postgres_schema: schemathesis.schemas.BaseSchema, subtests: pytest.Subtests
) -> None:
    conforms(postgres_schema, subtests)
