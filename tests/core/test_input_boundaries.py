"""Client input every database can store, and client JSON Schemas that cannot hang or crash a request.

PostgreSQL refuses NUL in text and in jsonb (a 500 there, stored on SQLite), and control characters in names
forge what consoles and logs show: both are refused with 422 at the boundary, on both databases, with the
field in ``loc``. A caller's ``output_schema`` is bounded (size, depth, references) before it is used.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.executions.test_executions_api import contract_error
from tests.helpers import API, assert_error, make_provider

CONTROL_CHARACTERS = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f"]


def _agent(**changes: Any) -> dict[str, Any]:
    return {"agent_id": "a1", "agent_name": "Agent", "model_provider": "p", "model_id": "m", **changes}


def _team(*, node: dict[str, Any] | None = None, agent: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    supervisor = {"model_provider": "p", "model_id": "m"}
    return {
        "team_name": "t",
        "topology": {
            "nodes": [
                {
                    "node_id": "n1",
                    "node_name": "Node",
                    "node_type": "service",
                    "agents": [_agent(**(agent or {}))],
                    "supervisor_config": supervisor,
                    **(node or {}),
                }
            ],
            "global_supervisor": supervisor,
        },
        **changes,
    }


def _nested(text: str) -> dict[str, Any]:
    return {"deep": [{"deeper": {"value": f"a{text}b"}}]}


# (what, path under /api/v1 ({provider}: a provider's id, {team}: an unknown team), body, loc of the refused field)
Case = tuple[str, str, dict[str, Any], list[str | int]]
NODE = ["body", "topology", "nodes", 0]
AGENT = [*NODE, "agents", 0]


def _cases(c: str) -> list[Case]:
    return [
        ("provider name", "/providers", {"name": f"p{c}", "type": "openai"}, ["body", "name"]),
        (
            "provider description",
            "/providers",
            {"name": "p2", "type": "openai", "description": f"x{c}y"},
            ["body", "description"],
        ),
        ("endpoint name", "/providers/{provider}/endpoints", {"name": f"e{c}"}, ["body", "name"]),
        ("endpoint region", "/providers/{provider}/endpoints", {"name": "e", "region": f"r{c}"}, ["body", "region"]),
        (
            "credential alias",
            "/providers/{provider}/credentials",
            {"alias": f"a{c}", "api_key": "k" * 20},
            ["body", "alias"],
        ),
        (
            "api key",
            "/providers/{provider}/credentials",
            {"alias": "a", "api_key": f"{c}" + "k" * 20},
            ["body", "api_key"],
        ),
        ("model id", "/providers/{provider}/models", {"model_id": f"m{c}", "name": "m"}, ["body", "model_id"]),
        ("model name", "/providers/{provider}/models", {"model_id": "m", "name": f"m{c}"}, ["body", "name"]),
        (
            "scenario",
            "/providers/{provider}/models",
            {"model_id": "m", "name": "m", "recommended_scenarios": [f"x{c}y"]},
            ["body", "recommended_scenarios", 0],
        ),
        ("team name", "/teams", _team(team_name=f"t{c}"), ["body", "team_name"]),
        ("team description", "/teams", _team(description=f"x{c}y"), ["body", "description"]),
        ("node name", "/teams", _team(node={"node_name": f"n{c}"}), [*NODE, "node_name"]),
        ("node type", "/teams", _team(node={"node_type": f"s{c}"}), [*NODE, "node_type"]),
        ("agent name", "/teams", _team(agent={"agent_name": f"a{c}"}), [*AGENT, "agent_name"]),
        ("agent prompt", "/teams", _team(agent={"system_prompt": f"x{c}y"}), [*AGENT, "system_prompt"]),
        ("model reference", "/teams", _team(agent={"model_provider": f"p{c}"}), [*AGENT, "model_provider"]),
        ("tool name", "/teams", _team(agent={"tools": [f"t{c}"]}), [*AGENT, "tools", 0]),
        ("username", "/users", {"username": f"u{c}", "password": "password-1", "role": "viewer"}, ["body", "username"]),
        ("api-key name", "/api-keys", {"name": f"k{c}", "role": "viewer"}, ["body", "name"]),
        ("task", "/teams/{team}/executions", {"input": {"task": f"x{c}y"}}, ["body", "input", "task"]),
    ]


NUL_IN_JSON: list[Case] = [
    ("node attributes", "/teams", _team(node={"attributes": _nested("\x00")}), [*NODE, "attributes"]),
    ("a key of node attributes", "/teams", _team(node={"attributes": {"a\x00": 1}}), [*NODE, "attributes"]),
    (
        "model default_params",
        "/providers/{provider}/models",
        {"model_id": "m", "name": "m", "default_params": _nested("\x00")},
        ["body", "default_params"],
    ),
    (
        "execution context",
        "/teams/{team}/executions",
        {"input": {"task": "t", "context": _nested("\x00")}},
        ["body", "input", "context"],
    ),
    (
        "output_schema",
        "/teams/{team}/executions",
        {"input": {"task": "t"}, "output_schema": {"type": "object", "title": "\x00"}},
        ["body", "output_schema"],
    ),
]
ALL_CASES = [case for c in CONTROL_CHARACTERS for case in _cases(c)] + NUL_IN_JSON


async def _post(client: httpx.AsyncClient, headers: dict[str, str], case: Case, provider_id: str) -> httpx.Response:
    _, path, body, _ = case
    url = API + path.format(provider=provider_id, team=uuid.uuid4())
    return await client.post(url, json=body, headers=headers)


@pytest.mark.parametrize("character", CONTROL_CHARACTERS, ids=lambda c: f"U+{ord(c):04X}")
async def test_control_characters_are_refused_in_every_name_and_nul_in_all_text(
    backend: str, client: httpx.AsyncClient, admin_headers: dict[str, str], character: str
) -> None:
    provider_id = await make_provider(client, admin_headers)
    for case in _cases(character):
        what, _, _, loc = case
        response = await _post(client, admin_headers, case, provider_id)
        body = assert_error(response, 422, "VALIDATION_ERROR")
        errors = body["details"]["errors"]
        assert [e["loc"] for e in errors] == [loc], (what, errors)
        # Usernames had a strict pattern already.
        assert errors[0]["type"] in ("control_character", "string_pattern_mismatch"), (what, errors)


@pytest.mark.parametrize("case", NUL_IN_JSON, ids=lambda case: case[0])
async def test_nul_anywhere_in_stored_json_is_refused(
    backend: str, client: httpx.AsyncClient, admin_headers: dict[str, str], case: Case
) -> None:
    provider_id = await make_provider(client, admin_headers)
    body = assert_error(await _post(client, admin_headers, case, provider_id), 422, "VALIDATION_ERROR")
    errors = body["details"]["errors"]
    assert [e["loc"] for e in errors] == [case[3]], errors
    assert "NUL" in errors[0]["message"]


async def test_free_text_keeps_tabs_and_line_breaks(
    backend: str, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    text = "first line\n\tsecond line\r\nthird: ünïcödé ✓"
    created = await client.post(
        f"{API}/providers", json={"name": "p", "type": "openai", "description": text}, headers=admin_headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["description"] == text.strip()
    named = await client.post(
        f"{API}/providers", json={"name": "ünïcödé ✓ name", "type": "openai"}, headers=admin_headers
    )
    assert named.status_code == 201, named.text


async def test_nul_in_a_sign_in_username_is_refused(backend: str, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/auth/token", data={"username": "ad\x00min", "password": "whatever"})
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert body["details"]["errors"][0]["loc"] == ["body", "username"]


@pytest.mark.parametrize("name", ["resource_type", "resource_id", "action", "actor"])
async def test_nul_in_a_query_filter_is_refused(
    backend: str, client: httpx.AsyncClient, admin_headers: dict[str, str], name: str
) -> None:
    response = await client.get(f"{API}/audit-logs", params={name: "pro\x00vider"}, headers=admin_headers)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert body["details"]["errors"][0]["loc"] == ["query", name]
    fine = await client.get(f"{API}/audit-logs", params={name: "provider"}, headers=admin_headers)
    assert fine.status_code == 200, fine.text


# ------------------------------------------------------------------------------------------ output schemas

_DEEP: dict[str, Any] = {"type": "object"}
_level = _DEEP
for _ in range(20):  # 41 levels: more than a schema may have, fewer than a body may have
    _level["properties"] = {"a": {"type": "object"}}
    _level = _level["properties"]["a"]

_DOUBLING: dict[str, Any] = {
    "type": "object",
    "$defs": {
        **{
            f"d{i}": {"type": "array", "items": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
            for i in range(20)
        },
        "d20": {"type": "string"},
    },
    "properties": {"x": {"$ref": "#/$defs/d0"}},
}

BAD_SCHEMAS = {
    "ref to itself": ({"type": "object", "$ref": "#"}, "leads back to itself"),
    "recursive ref": ({"type": "object", "properties": {"child": {"$ref": "#"}}}, "leads back to itself"),
    "ref cycle": (
        {
            "type": "object",
            "properties": {"a": {"$ref": "#/$defs/x"}},
            "$defs": {"x": {"$ref": "#/$defs/y"}, "y": {"$ref": "#/$defs/x"}},
        },
        "leads back to itself",
    ),
    "remote ref": ({"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/s.json"}}}, "remote references"),
    "dangling ref": ({"type": "object", "properties": {"a": {"$ref": "#/$defs/none"}}}, "points at nothing"),
    "too large": ({"type": "object", "description": "x" * 70_000}, "too large"),
    "too deep": (_DEEP, "nested too deeply"),
    "exponential refs": (_DOUBLING, "expand to more than"),
    "not a schema": ({"type": 7}, "not a valid JSON Schema"),
}


def _no_error_logs(logs: list[dict[str, Any]]) -> None:
    assert not [entry for entry in logs if entry.get("log_level") in ("error", "critical") or "exc_info" in entry], logs


@pytest.mark.parametrize("name", BAD_SCHEMAS)
async def test_unusable_output_schemas_are_refused_before_use(
    backend: str, client: httpx.AsyncClient, admin_headers: dict[str, str], name: str
) -> None:
    schema, message = BAD_SCHEMAS[name]
    team = str(uuid.uuid4())  # the schema is checked first: no team is needed to be refused
    with capture_logs() as logs:
        for path, extra in (("execute", {"stream": False}), ("executions", {})):
            response = await client.post(
                f"{API}/teams/{team}/{path}",
                json={"input": {"task": "t"}, "output_schema": schema, **extra},
                headers=admin_headers,
            )
            body = assert_error(response, 422, "VALIDATION_ERROR")
            assert message in body["error_message"], body
            assert body["details"]["errors"][0]["field"] == "output_schema"
        structured = await client.post(
            f"{API}/teams/{team}/structured-output", json={"output_schema": schema}, headers=admin_headers
        )
        body = contract_error(structured, 422, "SCHEMA_GENERATION_FAILED")
        assert message in body["error_message"], body
        # The contract's fields of this error, as when generation fails.
        assert body["schema_validation"]["valid"] is False and body["partial_output"] is None
        [problem] = body["schema_validation"]["errors"]
        assert problem["path"] == "$" and message in problem["message"]
        assert body["team_id"] == team
    _no_error_logs(logs)


async def test_a_local_acyclic_ref_is_accepted(
    backend: str, client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "#/$defs/x"}},
        "$defs": {"x": {"type": "string"}},
    }
    response = await client.post(
        f"{API}/teams/{uuid.uuid4()}/executions",
        json={"input": {"task": "t"}, "output_schema": schema},
        headers=admin_headers,
    )
    assert_error(response, 404, "TEAM_NOT_FOUND")  # past the schema check
