"""Property-based fuzzing of the whole OpenAPI document with schemathesis, authenticated as an admin.

Every operation gets a bounded number of generated requests (valid and invalid ones), and every response is
checked by all of schemathesis's checks: never a 5xx, a documented status code and content type, headers and a
body that match the documented schema, invalid input refused, valid input not refused for a reason the
document does not give, 405 with a correct ``Allow`` for undeclared methods, auth enforced where declared.

The app runs in-process twice, on a SQLite database and on a PostgreSQL database of its own (created and migrated
by a fixture, dropped afterwards), with rate limits off. Every generated case is sent, as generated, to both apps,
and each response gets every check: generating a case costs more than sending it, and both databases then meet
the very same requests. The operations are split into shards, one test each, that parallel workers share; the
cases are generated when a shard runs, every operation a subtest (generated at collection, by schemathesis's
``parametrize``, they would cost every parallel worker 20 s of CPU and sign in before any fixture ran).
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
from functools import cache
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
# A shard of the operations on both databases: well under a minute on an idle machine.
SHARDS = 4
FUZZ_TIMEOUT_SECONDS = 600
REQUEST_TIMEOUT_SECONDS = 10.0
FUZZ_SETTINGS_OVERRIDES = {
    # What the fuzzing checks is in the responses: a log line for each of its ~10,000 requests cost 10 % of its CPU.
    "log_level": "WARNING",
    # Off, so that every generated request reaches its route rather than a 429 (rate limits have their own tests).
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
    make_settings(f"sqlite+aiosqlite:///{_DATA_DIR / 'fuzz.db'}", _DATA_DIR / "sqlite-data", **FUZZ_SETTINGS_OVERRIDES)
)
postgres_app = create_app(make_settings(_PG_URL, _DATA_DIR / "postgres-data", **FUZZ_SETTINGS_OVERRIDES))

# Schemathesis's "valid data is accepted" check expects these statuses for schema-valid requests. Two rules the
# JSON schema cannot express are refused by contract: a team that breaks a whole-topology rule (an unknown model,
# a cycle) with 400 INVALID_TOPOLOGY, a configuration document naming a provider, endpoint or model twice with
# 422 VALIDATION_ERROR.
# A NUL in free-form JSON (attributes, default_params, an input's context, an output_schema) is refused with 422
# too: PostgreSQL cannot store it at any depth, which JSON Schema cannot say without a recursive reference.
# Kubernetes manifests are YAML inside a JSON string: YAML that does not parse, or holds nothing to import, is
# refused with 422 VALIDATION_ERROR (naming the document and line), which JSON Schema cannot say either.
# A tool server's fields must fit its transport (stdio: command, args, env; streamable_http: url, headers),
# a rule across fields the document states in words: 422 when they do not. So must a budget's: a limit at least,
# and a scope_id naming an existing team, API key or provider (none for a global budget).
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
                    "POST /api/v1/budgets",
                    "PUT /api/v1/budgets/{budget_id}",
                ],
                "checks": {"positive_data_acceptance": {"expected-statuses": FREE_JSON_RULES_ACCEPTED}},
            },
        ],
    }
)


class AdminTokens:
    """The bootstrap admin signed in to each app through the API, once per app and token lifetime."""

    def __init__(self) -> None:
        self.sqlite_to_postgres: dict[str, str] = {}

    def sign_in(self, served: Any) -> str:
        with schemathesis_asgi.get_client(served) as http:
            response = http.post("/api/v1/auth/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def for_sqlite(self) -> str:
        """A new SQLite token, paired with a new PostgreSQL one for the same admin (schemathesis asks again when
        its cached token expires)."""
        token = self.sign_in(sqlite_app)
        self.sqlite_to_postgres[token] = self.sign_in(postgres_served)
        return token


tokens = AdminTokens()


def _fuzzed(paths: list[str]) -> schemathesis.schemas.BaseSchema:
    """The SQLite app's document with only ``paths`` (each with all its methods, so that schemathesis's probes
    of undeclared methods expect the right 405)."""
    document = sqlite_app.openapi()
    document = {**document, "paths": {path: document["paths"][path] for path in paths}}
    schema = schemathesis.openapi.from_dict(document, config=CONFIG)
    schema.app = sqlite_app  # requests, including the checks' own probes, go to the app in-process

    @schema.auth()
    class AdminToken:
        """Signs in as the bootstrap admin through the API; schemathesis applies it as the documented bearer
        scheme (and knows it, so its negative cases without credentials and its auth probes expect a 401)."""

        def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
            return tokens.for_sqlite()

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


class SignedInAsTheSameAdmin:
    """The PostgreSQL app, reached with the requests generated for the SQLite one: a bearer token the SQLite app
    issued to the admin becomes the PostgreSQL app's token for its admin. Any other credentials (none, a
    mangled token, one of schemathesis's probes) reach it unchanged."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "headers": [self._swapped(name, value) for name, value in scope["headers"]]}
        await self.app(scope, receive, send)

    @staticmethod
    def _swapped(name: bytes, value: bytes) -> tuple[bytes, bytes]:
        if name.lower() != b"authorization" or not value.startswith(b"Bearer "):
            return name, value
        twin = tokens.sqlite_to_postgres.get(value[len(b"Bearer ") :].decode("latin-1"))
        return (name, f"Bearer {twin}".encode()) if twin is not None else (name, value)


# One object, so that schemathesis starts one lifespan of the PostgreSQL app.
postgres_served = SignedInAsTheSameAdmin(CreatesItsDatabase(postgres_app))


@pytest.fixture(scope="module")
def fuzz_apps() -> Iterator[None]:
    try:
        yield
    finally:
        schemathesis_asgi.shutdown_lifespans()
        shutil.rmtree(_DATA_DIR, ignore_errors=True)
        tokens.sqlite_to_postgres.clear()
        if _created.is_set():
            _run_apart(_drop_postgres_database)
            _created.clear()  # a later test of this module in this worker starts the app, and so creates it, again


@cache
def paths() -> list[str]:
    """The document's paths, in its order (made when a test asks: building the document costs each parallel
    worker a second at collection)."""
    return list(sqlite_app.openapi()["paths"])


@pytest.mark.parametrize("served", [sqlite_app, postgres_served], ids=["sqlite", "postgresql"])
def test_fuzzed_document_is_the_served_one(served: Any, fuzz_apps: None) -> None:
    """The document the cases come from (the SQLite app's) is the one each app serves."""
    with schemathesis_asgi.get_client(served) as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == _fuzzed(paths()).raw_schema


def _shard(index: int) -> list[str]:
    """Every SHARDS-th path in the document's order: the costly bodies (teams, configuration, webhooks) fall
    apart, each shard a few seconds' difference from the others."""
    return paths()[index::SHARDS]


def test_the_shards_fuzz_every_path_once() -> None:
    assert len(paths()) > 30, "the document's paths are all fuzzed"
    shards = [_shard(i) for i in range(SHARDS)]
    assert sorted(path for shard in shards for path in shard) == sorted(paths())
    assert all(shards)


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def call_and_validate(case: schemathesis.Case) -> None:
    """The case on SQLite, then the same case on PostgreSQL; a failure says which database gave it."""
    for database, app in (("SQLite", sqlite_app), ("PostgreSQL", postgres_served)):
        try:
            case.call_and_validate(app=app)
        except BaseException as failure:
            failure.add_note(f"on {database}")
            raise


@pytest.mark.long
@pytest.mark.postgres
@pytest.mark.timeout(FUZZ_TIMEOUT_SECONDS)
@pytest.mark.parametrize("shard", range(SHARDS), ids=[f"shard-{i + 1}-of-{SHARDS}" for i in range(SHARDS)])
def test_api_conforms_to_its_openapi_document_on_sqlite_and_postgresql(
    shard: int, fuzz_apps: None, subtests: pytest.Subtests
) -> None:
    """Every operation of the shard fuzzed in a subtest of its own (schemathesis's cases and checks, as its
    ``parametrize`` makes them), the cases generated now rather than at collection."""
    schema = _fuzzed(_shard(shard))
    tests = list(get_all_tests(schema=schema, test_func=call_and_validate, settings=FUZZ_SETTINGS, given_kwargs=None))
    assert len(tests) >= len(_shard(shard))
    for built in tests:
        operation, test = built.ok()  # a definition schemathesis cannot use fails the test here
        with subtests.test(msg=operation.label):
            test()
