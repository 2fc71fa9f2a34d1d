"""Property-based fuzzing of the whole OpenAPI document with schemathesis, authenticated as an admin.

Every operation gets a bounded number of generated requests (valid and invalid ones), and every response is
checked by all of schemathesis's checks: never a 5xx, a documented status code and content type, headers and a
body that match the documented schema, invalid input refused, valid input not refused for a reason the
document does not give, 405 with a correct ``Allow`` for undeclared methods, auth enforced where declared.

The app runs in-process on a SQLite database of its own, with rate limits off. No generated request reaches the
network or hangs: ids in paths are random, so provider calls (health check, validate, sync, model test),
executions (streamed or not) and event streams answer 404 before any outside or long-running work; each request
is also bounded by a timeout.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi as schemathesis_asgi

from aiops_executor.app import create_app
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, make_settings

MAX_EXAMPLES = 15
REQUEST_TIMEOUT_SECONDS = 10.0
# Off, so that every generated request reaches its route rather than a 429 (rate limits have their own tests).
NO_RATE_LIMITS = {
    "rate_limit_executions_per_minute": 0,
    "rate_limit_auth_per_minute": 0,
    "login_max_failures": 0,
    "login_max_failures_per_ip": 0,
}

# Built at import without touching the disk: the data dir is created when the lifespan starts, which
# schemathesis does on the first request; the module fixture below stops it and removes the directory.
_DATA_DIR = Path(tempfile.gettempdir()) / f"aiops-fuzz-{uuid.uuid4().hex[:12]}"
app = create_app(make_settings(f"sqlite+aiosqlite:///{_DATA_DIR / 'fuzz.db'}", _DATA_DIR / "data", **NO_RATE_LIMITS))

# Schemathesis's "valid data is accepted" check expects these statuses for schema-valid requests. Two rules the
# JSON schema cannot express are refused by contract: a team that breaks a whole-topology rule (an unknown model,
# a cycle) with 400 INVALID_TOPOLOGY, a configuration document naming a provider, endpoint or model twice with
# 422 VALIDATION_ERROR.
# A NUL in free-form JSON (attributes, default_params, an input's context, an output_schema) is refused with 422
# too: PostgreSQL cannot store it at any depth, which JSON Schema cannot say without a recursive reference.
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
                "include-name": ["POST /api/v1/config/import"],
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
schema = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)
schema.app = app  # requests, including the checks' own probes, go to the app in-process


@schema.auth()
class AdminToken:
    """Signs in as the bootstrap admin through the API; schemathesis applies it as the documented bearer scheme
    (and knows it, so its negative cases without credentials and its auth probes expect a 401)."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str:
        with schemathesis_asgi.get_client(app) as http:
            response = http.post("/api/v1/auth/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def fuzz_app() -> Iterator[FastAPI]:
    try:
        yield app
    finally:
        schemathesis_asgi.shutdown_lifespans()
        shutil.rmtree(_DATA_DIR, ignore_errors=True)


def test_fuzzed_document_is_the_served_one(fuzz_app: FastAPI) -> None:
    with schemathesis_asgi.get_client(fuzz_app) as http:
        served = http.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == schema.raw_schema


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_api_conforms_to_its_openapi_document(case: schemathesis.Case, fuzz_app: FastAPI) -> None:
    case.call_and_validate()
