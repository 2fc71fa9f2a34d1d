"""Bad input is refused early and clearly: oversized bodies (413), wrong media types (415), malformed or too deeply
nested JSON (422), absurd topologies (422) and over-limit ones (400 INVALID_TOPOLOGY, every problem at once),
while the largest topology the contract allows is still accepted. Every answer is the contract's error body.
Assertions are on status and body only, never on timing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aiops_executor.core.request_limits import MAX_JSON_DEPTH
from aiops_executor.core.settings import Settings
from aiops_executor.engine.topology import (
    HARD_MAX_AGENTS_PER_NODE,
    HARD_MAX_EDGES,
    HARD_MAX_NODES,
    MAX_AGENTS_PER_NODE,
    MAX_NODES,
)
from tests.helpers import API, assert_error, created, make_provider

LIMIT = Settings.model_fields["max_request_body_bytes"].default
MiB = 1024 * 1024
SIM_CAPS = {name: {"supported": True, "score": 3} for name in ("chat", "function_calling", "structured_output")}
REF = {"model_provider": "local-sim", "model_id": "sim-1"}


@pytest.fixture
def backend() -> str:
    # Request limits do not depend on the database.
    return "sqlite"


@pytest.fixture
async def sim(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    provider_id = await make_provider(client, admin_headers, "local-sim", "simulator")
    await created(
        client,
        admin_headers,
        f"/providers/{provider_id}/models",
        {"model_id": "sim-1", "name": "sim-1", "capabilities": SIM_CAPS},
    )


def agent(index: int, prompt: str = "") -> dict[str, Any]:
    return {"agent_id": f"agent-{index}", "agent_name": f"Agent {index}", **REF, "system_prompt": prompt}


def node(index: int, agents: int = 1, prompt: str = "") -> dict[str, Any]:
    return {
        "node_id": f"node-{index}",
        "node_name": f"Node {index}",
        "node_type": "service",
        "attributes": {"url": f"http://10.0.0.{index % 250}:8080/health", "owner": "team-a"},
        "agents": [agent(a, prompt) for a in range(agents)],
        "supervisor_config": {**REF, "system_prompt": prompt},
    }


def team(nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "team_name": "limits",
        "topology": {
            "nodes": nodes,
            "edges": edges or [],
            "global_supervisor": REF,
            "allow_isolated_nodes": True,
        },
        **extra,
    }


def error_codes(body: dict[str, Any]) -> set[str]:
    return {issue["code"] for issue in body["details"]["errors"]}


# --------------------------------------------------------------------------------------------- body size


async def test_a_declared_oversized_body_is_refused_before_anything_else(client: httpx.AsyncClient) -> None:
    # No credentials: the size is checked before authentication, routing or parsing.
    response = await client.post(
        f"{API}/teams", content=b"x" * (LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    body = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert body["details"] == {"max_bytes": LIMIT}
    assert str(LIMIT) in body["error_message"]


async def test_an_oversized_body_is_refused_on_any_route(client: httpx.AsyncClient) -> None:
    response = await client.request("GET", "/health", content=b"x" * (LIMIT + 1))
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_streamed_body_is_cut_off_at_the_limit(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    chunk = 64 * 1024
    sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(3 * LIMIT // chunk):
            sent += chunk
            yield b" " * chunk

    # A generator body has no Content-Length: the limit is enforced while counting the chunks.
    response = await client.post(
        f"{API}/teams", content=stream(), headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert sent <= LIMIT + chunk  # no more than the limit was read


async def test_a_body_at_the_limit_passes_the_size_check(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    padding = " " * (LIMIT - 2)
    response = await client.post(
        f"{API}/teams", content=f"{{{padding}}}", headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")  # read and parsed: an empty object lacks every field


# --------------------------------------------------------------------------------------------- malformed bodies


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b'{"team_name": ', "application/json", 422, "VALIDATION_ERROR"),
        (b'{"team_name": "\xff"}', "application/json", 422, "VALIDATION_ERROR"),
        (b'{"team_name": "x"}', "text/plain", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"team_name=x", "application/x-www-form-urlencoded", 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b'{"team_name": "x"}', None, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (b"[1, 2]", "application/json", 422, "VALIDATION_ERROR"),
    ],
    ids=["truncated", "not-utf8", "text-plain", "form", "no-content-type", "array"],
)
async def test_malformed_bodies_are_clear_errors(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    content: bytes,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    headers = dict(admin_headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await client.post(f"{API}/teams", content=content, headers=headers)
    body = assert_error(response, status, code)
    if status == 415:
        assert body["details"]["expected"] == "application/json"


def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 100_000], ids=["over-the-limit", "past-the-parser"])
async def test_deeply_nested_json_is_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], depth: int
) -> None:
    document = json.dumps(team([node(0)])).replace('"owner": "team-a"', f'"owner": {nested(depth)}')
    response = await client.post(
        f"{API}/teams", content=document, headers={**admin_headers, "Content-Type": "application/json"}
    )
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert [e["type"] for e in body["details"]["errors"]] == ["json_too_deep"]


async def test_nesting_within_the_limit_is_accepted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: None
) -> None:
    # The body itself, topology, nodes, a node and attributes are 5 levels around "owner".
    document = json.dumps(team([node(0)])).replace('"owner": "team-a"', f'"owner": {nested(MAX_JSON_DEPTH - 5)}')
    response = await client.post(
        f"{API}/teams", content=document, headers={**admin_headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text


async def test_a_huge_string_is_refused_by_its_field_limit(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    response = await client.post(f"{API}/teams", json=team([node(0)], team_name="x" * MiB), headers=admin_headers)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert [e["loc"] for e in body["details"]["errors"]] == [["body", "team_name"]]


# --------------------------------------------------------------------------------------------- topology sizes


async def test_the_largest_allowed_topology_is_accepted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: None
) -> None:
    prompt = "You check this service's health and report what you find. " * 4
    nodes = [node(i, agents=MAX_AGENTS_PER_NODE, prompt=prompt) for i in range(MAX_NODES)]
    edges = [
        {"source_node_id": f"node-{i}", "target_node_id": f"node-{i + 1}", "relation_type": "monitors"}
        for i in range(MAX_NODES - 1)
    ]
    document = team(nodes, edges)
    size = len(json.dumps(document))
    assert 500 * 1024 < size < LIMIT  # a realistic worst case, well inside the body limit
    response = await client.post(f"{API}/teams", json=document, headers=admin_headers)
    assert response.status_code == 201, response.text[:500]
    assert response.json()["topology_summary"] == {
        "node_count": MAX_NODES,
        "agent_count": MAX_NODES * MAX_AGENTS_PER_NODE,
        "edge_count": MAX_NODES - 1,
        "depth": 1,
    }


async def test_over_the_contract_limits_every_problem_is_reported(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: None
) -> None:
    nodes = [node(i) for i in range(MAX_NODES + 1)]
    nodes[0] = node(0, agents=MAX_AGENTS_PER_NODE + 1)
    nodes[1]["agents"][0]["model_id"] = "no-such-model"
    response = await client.post(f"{API}/teams", json=team(nodes), headers=admin_headers)
    body = assert_error(response, 400, "INVALID_TOPOLOGY")
    errors = body["details"]["errors"]
    paths = {(e["code"], e["path"]) for e in errors}
    assert ("LIMIT_EXCEEDED", "topology.nodes") in paths
    assert ("LIMIT_EXCEEDED", "topology.nodes[0].agents") in paths
    assert ("MODEL_NOT_FOUND", "topology.nodes[1].agents[0].model_id") in paths


@pytest.mark.parametrize(
    ("shape", "location"),
    [
        ("nodes", ["body", "topology", "nodes"]),
        ("agents", ["body", "topology", "nodes", 0, "agents"]),
        ("edges", ["body", "topology", "edges"]),
    ],
)
async def test_absurd_topologies_are_refused_while_parsing(
    client: httpx.AsyncClient, admin_headers: dict[str, str], shape: str, location: list[Any]
) -> None:
    if shape == "nodes":
        document = team([node(i) for i in range(HARD_MAX_NODES + 1)])
    elif shape == "agents":
        document = team([node(0, agents=HARD_MAX_AGENTS_PER_NODE + 1)])
    else:
        edge = {"source_node_id": "node-0", "target_node_id": "node-1", "relation_type": "calls"}
        document = team([node(0), node(1)], [edge] * (HARD_MAX_EDGES + 1))
    assert len(json.dumps(document)) < LIMIT
    response = await client.post(f"{API}/teams", json=document, headers=admin_headers)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert [(e["loc"], e["type"]) for e in body["details"]["errors"]] == [(location, "too_long")]


async def test_many_edges_from_one_node_are_checked_in_linear_time(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: None
) -> None:
    # As many edges as the hard cap lets through, all from one node, mostly repeats; one node too many.
    nodes = [node(i) for i in range(MAX_NODES + 1)]
    edges = [
        {"source_node_id": "node-0", "target_node_id": f"node-{1 + i % MAX_NODES}", "relation_type": "calls"}
        for i in range(HARD_MAX_EDGES)
    ]
    response = await client.post(f"{API}/teams", json=team(nodes, edges), headers=admin_headers)
    body = assert_error(response, 400, "INVALID_TOPOLOGY")
    assert error_codes(body) == {"LIMIT_EXCEEDED"}
    warnings = body["details"]["warnings"]
    assert {w["code"] for w in warnings} == {"DUPLICATE_EDGE"}
    assert len(warnings) == HARD_MAX_EDGES - MAX_NODES
