"""The OpenAPI document describes every operation well enough to generate a client from it (issue 14).

- every operation: an explicit summary, a description, a stable lowerCamelCase operationId, a declared tag;
- one schema per model (no ``-Input``/``-Output`` pairs);
- every error answer: the contract's error body, its codes (``x-error-codes``) and an example of each;
- who may call each operation, read off its role guard;
- the event streams: ``text/event-stream`` with the payload schema of every event, which the events a run
  really stores match field by field.

The failure messages name the operation and what it lacks, so that a router added later is fixed in one go.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from aiops_executor.app import OPENAPI_TAGS
from aiops_executor.core.openapi import api_routes
from aiops_executor.engine.events import LIVE_EVENTS, EventType
from aiops_executor.executions.schemas import STREAM_EVENTS
from tests.helpers import API, add_simulator, created

METHODS = ("get", "put", "post", "delete", "patch")
OPERATION_ID = re.compile(r"^[a-z][a-zA-Z0-9]*$")
ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture
def backend() -> str:
    return "sqlite"


def routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    return [
        (method.lower(), route.path_format, route)
        for route in api_routes(app)
        for method in sorted(route.methods or ())
    ]


def test_every_operation_has_a_summary_description_operation_id_and_tag(app: FastAPI) -> None:
    document = app.openapi()
    declared = {tag["name"] for tag in document.get("tags", [])}
    assert declared == {tag["name"] for tag in OPENAPI_TAGS}
    problems: list[str] = []
    seen: dict[str, str] = {}
    for method, path, route in routes(app):
        where = f"{method.upper()} {path} ({route.endpoint.__module__}.{route.endpoint.__name__})"
        if not route.summary:
            problems.append(f"{where}: no summary= (a few words, e.g. 'Create a team')")
        if not (route.description or "").strip():
            problems.append(f"{where}: no description= (what it does; roles and errors are added from the route)")
        if not route.operation_id:
            problems.append(f"{where}: no operation_id= (lowerCamelCase, e.g. 'createTeam')")
        elif not OPERATION_ID.match(route.operation_id):
            problems.append(f"{where}: operation_id {route.operation_id!r} is not lowerCamelCase")
        elif route.operation_id in seen:
            problems.append(f"{where}: operation_id {route.operation_id!r} is also {seen[route.operation_id]}'s")
        else:
            seen[route.operation_id] = where
        if not route.tags:
            problems.append(f"{where}: no tag (APIRouter(tags=[<domain>]))")
        for tag in route.tags:
            if tag not in declared:
                problems.append(f"{where}: tag {tag!r} is not declared in app.OPENAPI_TAGS (add it with a description)")
        operation = document["paths"][path][method]
        if operation.get("operationId") != route.operation_id:
            problems.append(f"{where}: the document's operationId is {operation.get('operationId')!r}")
    assert not problems, "operations lacking documentation:\n" + "\n".join(problems)
    assert len(seen) >= 54


def test_one_schema_per_model(app: FastAPI) -> None:
    names = app.openapi()["components"]["schemas"]
    split = sorted(name for name in names if name.endswith(("-Input", "-Output", "_Input", "_Output")))
    assert not split, f"schemas split into input and output variants: {split}"
    assert "ConfigDocument" in names and "ProviderRead" in names


def test_every_error_answer_names_its_codes_with_examples(app: FastAPI) -> None:
    problems: list[str] = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if status[0] not in "45":
                    continue
                where = f"{method.upper()} {path} {status}"
                media = response.get("content", {}).get("application/json", {})
                if media.get("schema", {}).get("$ref") != ERROR_REF:
                    problems.append(f"{where}: not the error body")
                codes = response.get("x-error-codes")
                if not codes:
                    problems.append(f"{where}: no error codes (use core.openapi.errors({{{status}: 'THE_CODE'}}))")
                    continue
                examples = media.get("examples", {})
                if sorted(examples) != sorted(codes):
                    problems.append(f"{where}: examples {sorted(examples)} for codes {codes}")
                for code, example in examples.items():
                    if example["value"]["error_code"] != code or not re.fullmatch(r"[A-Z][A-Z0-9_]+", code):
                        problems.append(f"{where}: a bad example for {code}")
                for code in codes:
                    if code not in operation["description"]:
                        problems.append(f"{where}: the description does not name {code}")
    assert not problems, "\n".join(problems)


def test_specific_codes_are_documented_where_they_are_answered(app: FastAPI) -> None:
    paths = app.openapi()["paths"]

    def codes(path: str, method: str, status: str) -> list[str]:
        return list(paths[f"{API}{path}"][method]["responses"][status]["x-error-codes"])

    assert codes("/teams", "post", "409") == ["TEAM_NAME_EXISTS", "CONFLICT"]
    assert codes("/teams", "post", "400") == ["INVALID_TOPOLOGY"]
    assert codes("/teams/{team_id}", "get", "404") == ["TEAM_NOT_FOUND"]
    assert "EXECUTION_TIMEOUT" in codes("/teams/{team_id}/execute", "post", "408")
    assert codes("/teams/{team_id}/execute", "post", "429") == ["RATE_LIMITED", "BUDGET_EXCEEDED"]
    assert codes("/budgets/{budget_id}", "get", "404") == ["BUDGET_NOT_FOUND"]
    assert codes("/providers/{provider_id}", "delete", "409") == ["PROVIDER_IN_USE"]
    assert codes("/teams", "get", "401") == ["UNAUTHORIZED"]
    assert codes("/teams", "post", "422") == ["VALIDATION_ERROR"]
    assert paths["/health/ready"]["get"]["responses"]["503"]["x-error-codes"] == ["SERVICE_UNAVAILABLE"]


def test_each_operation_says_who_may_call_it(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    expected = {
        (f"{API}/providers", "post"): "admin",
        (f"{API}/providers", "get"): "viewer",
        (f"{API}/teams", "post"): "operator",
        (f"{API}/teams/{{team_id}}/execute", "post"): "operator",  # through the rate limit's dependency
        (f"{API}/users", "get"): "admin",
        (f"{API}/tools", "get"): "viewer",
    }
    for (path, method), role in expected.items():
        operation = paths[path][method]
        assert operation["x-required-role"] == role, path
        assert f"`{role}` role or higher" in operation["description"], operation["description"]
    for path, method in ((f"{API}/auth/token", "post"), ("/health", "get")):
        assert "x-required-role" not in paths[path][method]
        assert "anyone; no token is needed" in paths[path][method]["description"]
    guarded = [
        (path, method)
        for path, item in paths.items()
        for method, operation in item.items()
        if method in METHODS and operation.get("security") and "x-required-role" not in operation
    ]
    assert not guarded, f"guarded operations without a role: {guarded}"


def test_the_streams_document_every_event_payload(app: FastAPI) -> None:
    document = app.openapi()
    schemas = document["components"]["schemas"]
    assert set(STREAM_EVENTS) == {event.value for event in EventType}
    for path in (f"{API}/teams/{{team_id}}/execute", f"{API}/executions/{{execution_id}}/stream"):
        method = "post" if path.endswith("execute") else "get"
        media = document["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"]
        events = media["x-sse-events"]
        assert set(events) == set(STREAM_EVENTS), path
        for name, ref in events.items():
            schema_name = ref["$ref"].rsplit("/", 1)[-1]
            assert schema_name == STREAM_EVENTS[name].__name__
            properties = schemas[schema_name]["properties"]
            assert {"execution_id", "team_id", "timestamp"} <= set(properties), name
            # Token deltas are live only: no seq (contract: SSE events).
            assert ("seq" in properties) is (EventType(name) not in LIVE_EVENTS), name
        assert len(media["x-sse-payload"]["oneOf"]) == len(STREAM_EVENTS)
    # Nested models of the payloads (a node result, usage) are schemas of their own, not inlined $defs.
    assert schemas["NodeCompleteEvent"]["properties"]["result"] == {"$ref": "#/components/schemas/NodeOutput"}
    # A stream that fails before it starts is a JSON error answer, documented as such.
    execute = document["paths"][f"{API}/teams/{{team_id}}/execute"]["post"]["responses"]
    assert set(execute["200"]["content"]) == {"application/json", "text/event-stream"}


def _check_payload(kind: str, payload: dict[str, Any]) -> list[str]:
    model: type[BaseModel] = STREAM_EVENTS[kind]
    problems = [f"{kind}: undocumented field {key!r}" for key in payload if key not in model.model_fields]
    try:
        model.model_validate(payload)
    except ValueError as exc:
        problems.append(f"{kind}: {exc}")
    return problems


async def test_the_events_of_real_runs_match_their_documented_payloads(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await add_simulator(client, admin_headers, priced=True)
    ref = {"model_provider": "local-sim", "model_id": "sim-1"}
    node = {
        "node_id": "db",
        "node_name": "Database",
        "node_type": "service",
        "attributes": {"host": "127.0.0.1", "port": 9},
        "agents": [{"agent_id": "probe", "agent_name": "Prober", **ref, "tools": ["tcp_check"]}],
        "supervisor_config": {**ref, "coordination_strategy": "round_robin"},
    }
    team = await created(
        client,
        admin_headers,
        "/teams",
        {
            "team_name": f"docs-{uuid.uuid4().hex[:6]}",
            "topology": {
                "nodes": [node],
                "edges": [],
                "global_supervisor": {**ref, "coordination_strategy": "parallel"},
            },
        },
    )
    kinds: set[str] = set()
    problems: list[str] = []
    schema = {"type": "object", "properties": {"impossible": {"type": "string"}}, "required": ["impossible"]}
    for body in (
        {"input": {"task": "Is the database up?"}, "stream": False},
        # An output schema the simulator cannot satisfy: the run ends with execution_error and its details.
        {"input": {"task": "Is the database up?"}, "stream": False, "output_schema": schema},
    ):
        run = await client.post(f"{API}/teams/{team['team_id']}/execute", json=body, headers=admin_headers)
        assert run.status_code == 200, run.text
        events = await client.get(
            f"{API}/executions/{run.json()['execution_id']}/events", params={"size": 100}, headers=admin_headers
        )
        for event in events.json()["items"]:
            kinds.add(event["event"])
            problems += _check_payload(event["event"], event["data"])
    assert not problems, "\n".join(problems)
    assert {"execution_start", "node_complete", "tool_call", "agent_message", "execution_complete"} <= kinds
