"""Team validation as a pure function: every rule, its code and path, all problems at once, and speed."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from aiops_executor.engine.topology import TeamSpec
from aiops_executor.llm.catalog import ModelCatalog, ModelEntry, ProviderEntry
from aiops_executor.teams.validation import (
    ValidationReport,
    validate_team,
)
from tests.helpers import CAPABLE

SIM = uuid.uuid4()
OFF = uuid.uuid4()
GONE = uuid.uuid4()
GONE_TWIN = uuid.uuid4()
FULL_CAPS = {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE}
TOOLS = {"http_check", "dns_lookup"}

MODELS = {
    "sim-1": ModelEntry(uuid.uuid4(), SIM, "sim-1", "chat", "available", FULL_CAPS),
    "plain-1": ModelEntry(uuid.uuid4(), SIM, "plain-1", "chat", "available", {"chat": CAPABLE}),
    "unsupported-1": ModelEntry(
        uuid.uuid4(), SIM, "unsupported-1", "chat", "available", {"function_calling": {"supported": False, "score": 1}}
    ),
    "old-1": ModelEntry(uuid.uuid4(), SIM, "old-1", "chat", "deprecated", FULL_CAPS),
    "maint-1": ModelEntry(uuid.uuid4(), SIM, "maint-1", "chat", "maintenance", FULL_CAPS),
    "embed-1": ModelEntry(uuid.uuid4(), SIM, "embed-1", "embedding", "available", {"embedding": CAPABLE}),
}
CATALOG = ModelCatalog(
    [
        ProviderEntry(SIM, "local-sim", "simulator", is_active=True),
        ProviderEntry(OFF, "switched-off", "openai", is_active=False),
        ProviderEntry(GONE, "gone", "openai", is_active=True, deleted=True),
        ProviderEntry(GONE_TWIN, "local-sim", "openai", is_active=True, deleted=True),  # an older, deleted namesake
    ],
    [*MODELS.values(), ModelEntry(uuid.uuid4(), OFF, "m", "chat", "available", FULL_CAPS)],
)


def agent(agent_id: str = "a1", model_id: str = "sim-1", provider: str = "local-sim", **extra: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "agent_name": agent_id, "model_provider": provider, "model_id": model_id, **extra}


def supervisor(model_id: str = "sim-1", provider: str = "local-sim", **extra: Any) -> dict[str, Any]:
    return {"model_provider": provider, "model_id": model_id, **extra}


def node(node_id: str, *agents: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "node_name": node_id.title(),
        "node_type": "service",
        "agents": list(agents) or [agent()],
        "supervisor_config": extra.pop("supervisor_config", supervisor()),
        **extra,
    }


def edge(source: str, target: str, relation: str = "depends_on") -> dict[str, Any]:
    return {"source_node_id": source, "target_node_id": target, "relation_type": relation}


def spec(
    nodes: list[dict[str, Any]] | None = None, edges: list[dict[str, Any]] | None = None, **extra: Any
) -> TeamSpec:
    topology = {
        "nodes": nodes if nodes is not None else [node("api"), node("db")],
        "edges": edges if edges is not None else [edge("api", "db")],
        "global_supervisor": extra.pop("global_supervisor", supervisor()),
        "allow_isolated_nodes": extra.pop("allow_isolated_nodes", False),
    }
    return TeamSpec.model_validate({"team_name": "t", "topology": topology, **extra})


def check(team: TeamSpec, tools: set[str] = TOOLS) -> ValidationReport:
    return validate_team(team, CATALOG, tools)


def codes(issues: list[Any]) -> list[tuple[str, str]]:
    return [(issue.code, issue.path) for issue in issues]


def test_a_valid_team() -> None:
    team = spec(
        [node("api", agent("probe", tools=["http_check"]), agent("dns", tools=["dns_lookup"])), node("db")],
        [edge("api", "db")],
    )
    report = check(team)
    assert report.valid
    assert (report.errors, report.warnings, report.invalid_nodes, report.missing_references) == ([], [], [], [])
    assert report.model_references == {(SIM, MODELS["sim-1"].id)}


def test_a_single_node_needs_no_edge() -> None:
    assert check(spec([node("only")], [])).valid


def test_duplicate_node_ids() -> None:
    report = check(spec([node("api"), node("db"), node("api")], [edge("api", "db")]))
    assert codes(report.errors) == [("DUPLICATE_NODE_ID", "topology.nodes[2].node_id")]
    assert "topology.nodes[0]" in report.errors[0].message
    assert report.invalid_nodes == ["api"]


def test_duplicate_agent_ids_within_a_node_only() -> None:
    team = spec([node("api", agent("x"), agent("y"), agent("x")), node("db", agent("x"))])
    report = check(team)
    assert codes(report.errors) == [("DUPLICATE_AGENT_ID", "topology.nodes[0].agents[2].agent_id")]
    assert report.invalid_nodes == ["api"]


def test_edges_must_name_existing_nodes() -> None:
    report = check(spec(edges=[edge("api", "db"), edge("api", "cache"), edge("ghost", "db", "calls")]))
    assert codes(report.errors) == [
        ("UNKNOWN_NODE", "topology.edges[1].target_node_id"),
        ("UNKNOWN_NODE", "topology.edges[2].source_node_id"),
    ]
    assert report.missing_references == [
        {"type": "node", "node_id": "cache", "paths": ["topology.edges[1].target_node_id"]},
        {"type": "node", "node_id": "ghost", "paths": ["topology.edges[2].source_node_id"]},
    ]


def test_self_loops() -> None:
    report = check(spec(edges=[edge("api", "db"), edge("db", "db", "monitors")]))
    assert codes(report.errors) == [("SELF_LOOP", "topology.edges[1]")]
    assert report.invalid_nodes == ["db"]


@pytest.mark.parametrize(
    ("edges", "cycle", "path"),
    [
        # api depends on db and db depends on api: each must run before the other.
        ([edge("api", "db"), edge("db", "api")], "api -> db -> api", "topology.edges[0]"),
        ([edge("api", "db", "data_flow"), edge("db", "api", "data_flow")], "api -> db -> api", "topology.edges[1]"),
        # calls/depends_on order the target first, data_flow the source first: these three close a loop.
        (
            [edge("api", "db", "calls"), edge("db", "cache", "depends_on"), edge("api", "cache", "data_flow")],
            "api -> cache -> db -> api",
            "topology.edges[0]",
        ),
    ],
)
def test_cycles_among_ordering_edges_are_named(edges: list[dict[str, Any]], cycle: str, path: str) -> None:
    report = check(spec([node("api"), node("db"), node("cache")], edges, allow_isolated_nodes=True))
    assert codes(report.errors) == [("CYCLE", path)]
    assert report.errors[0].message.endswith(cycle)
    assert sorted(report.invalid_nodes) == sorted(set(cycle.split(" -> ")))


def test_non_ordering_edges_never_form_a_cycle() -> None:
    report = check(spec(edges=[edge("api", "db", "integrates"), edge("db", "api", "monitors")]))
    assert report.valid


def test_isolated_nodes() -> None:
    team = spec([node("api"), node("db"), node("lonely"), node("cache")], [edge("api", "db"), edge("cache", "db")])
    report = check(team)
    assert codes(report.errors) == [("ISOLATED_NODE", "topology.nodes[2]")]
    assert report.invalid_nodes == ["lonely"]
    # Any relation type connects, and the flag allows isolation.
    assert check(
        spec([node("api"), node("db"), node("lonely")], [edge("api", "db"), edge("lonely", "api", "monitors")])
    ).valid
    assert check(spec([node("api"), node("db"), node("lonely")], [edge("api", "db")], allow_isolated_nodes=True)).valid


def test_providers_must_exist_be_live_and_active() -> None:
    team = spec(
        [
            node(
                "api",
                agent("unknown", provider="nope"),
                agent("deleted", provider="gone"),
                agent("inactive", provider="switched-off", model_id="m"),
                agent("by-id", provider=str(SIM)),
            ),
            node("db"),
        ]
    )
    report = check(team)
    assert codes(report.errors) == [
        ("PROVIDER_NOT_FOUND", "topology.nodes[0].agents[0].model_provider"),
        ("PROVIDER_NOT_FOUND", "topology.nodes[0].agents[1].model_provider"),
        ("PROVIDER_INACTIVE", "topology.nodes[0].agents[2].model_provider"),
    ]
    assert "does not exist" in report.errors[0].message
    assert "was deleted" in report.errors[1].message
    assert report.missing_references == [
        {"type": "provider", "model_provider": "nope", "paths": ["topology.nodes[0].agents[0].model_provider"]},
        {"type": "provider", "model_provider": "gone", "paths": ["topology.nodes[0].agents[1].model_provider"]},
    ]
    # The live provider's name wins over a deleted namesake; a deleted one is still reachable by its id.
    assert CATALOG.provider("local-sim") == ProviderEntry(SIM, "local-sim", "simulator", is_active=True)
    assert CATALOG.lookup(str(GONE_TWIN), "sim-1").model is None


def test_models_must_exist_be_usable_and_chat() -> None:
    team = spec(
        [
            node("api", agent("missing", model_id="nope"), agent("deprecated", model_id="old-1")),
            node("db", agent("maintenance", model_id="maint-1"), agent("embedding", model_id="embed-1")),
        ],
        global_supervisor=supervisor("nope"),
    )
    report = check(team)
    assert codes(report.errors) == [
        ("MODEL_NOT_FOUND", "topology.nodes[0].agents[0].model_id"),
        ("MODEL_DEPRECATED", "topology.nodes[0].agents[1].model_id"),
        ("MODEL_TYPE_UNSUPPORTED", "topology.nodes[1].agents[1].model_id"),
        ("MODEL_NOT_FOUND", "topology.global_supervisor.model_id"),
    ]
    assert codes(report.warnings) == [("MODEL_MAINTENANCE", "topology.nodes[1].agents[0].model_id")]
    # One missing reference per distinct model, with every path naming it.
    assert report.missing_references == [
        {
            "type": "model",
            "model_provider": "local-sim",
            "model_id": "nope",
            "paths": ["topology.nodes[0].agents[0].model_id", "topology.global_supervisor.model_id"],
        }
    ]
    assert report.invalid_nodes == ["api", "db"]


def test_a_maintenance_model_only_warns() -> None:
    report = check(spec([node("api", agent(model_id="maint-1")), node("db")]))
    assert report.valid
    assert codes(report.warnings) == [("MODEL_MAINTENANCE", "topology.nodes[0].agents[0].model_id")]


def test_tools_must_be_registered() -> None:
    team = spec([node("api", agent(tools=["http_check", "rm_rf", "http_check"])), node("db")])
    report = check(team)
    assert codes(report.errors) == [("TOOL_NOT_FOUND", "topology.nodes[0].agents[0].tools[1]")]
    assert codes(report.warnings) == [("DUPLICATE_TOOL", "topology.nodes[0].agents[0].tools[2]")]
    assert report.missing_references == [
        {"type": "tool", "tool": "rm_rf", "paths": ["topology.nodes[0].agents[0].tools[1]"]}
    ]
    assert check(team, tools=set()).errors[0].code == "TOOL_NOT_FOUND"


def test_agents_with_tools_need_function_calling() -> None:
    team = spec(
        [
            node(
                "api",
                agent("plain", model_id="plain-1", tools=["http_check"]),
                agent("explicitly-unsupported", model_id="unsupported-1", tools=["http_check"]),
                agent("no-tools", model_id="plain-1"),
            ),
            node("db"),
        ]
    )
    report = check(team)
    assert codes(report.errors) == [
        ("CAPABILITY_MISSING", "topology.nodes[0].agents[0].model_id"),
        ("CAPABILITY_MISSING", "topology.nodes[0].agents[1].model_id"),
    ]
    assert "function_calling" in report.errors[0].message


def test_supervisor_capabilities() -> None:
    team = spec(
        [
            node("api", supervisor_config=supervisor("plain-1", coordination_strategy="adaptive")),
            node("db", supervisor_config=supervisor("plain-1", coordination_strategy="round_robin")),
        ],
        global_supervisor=supervisor("plain-1", coordination_strategy="adaptive"),
    )
    report = check(team)
    assert codes(report.errors) == [
        ("CAPABILITY_MISSING", "topology.nodes[0].supervisor_config.model_id"),
        ("CAPABILITY_MISSING", "topology.global_supervisor.model_id"),
    ]
    assert codes(report.warnings) == [("CAPABILITY_MISSING", "topology.nodes[1].supervisor_config.model_id")]
    relaxed = check(spec(global_supervisor=supervisor("plain-1", coordination_strategy="hierarchical")))
    assert relaxed.valid
    assert codes(relaxed.warnings) == [("CAPABILITY_MISSING", "topology.global_supervisor.model_id")]


def test_supervisor_models_are_checked_like_agents() -> None:
    team = spec(
        [node("api", supervisor_config=supervisor("old-1")), node("db")],
        global_supervisor=supervisor("m", provider="switched-off"),
    )
    assert codes(check(team).errors) == [
        ("MODEL_DEPRECATED", "topology.nodes[0].supervisor_config.model_id"),
        ("PROVIDER_INACTIVE", "topology.global_supervisor.model_provider"),
    ]


def test_duplicate_edges_only_warn() -> None:
    report = check(spec(edges=[edge("api", "db"), edge("api", "db", "monitors"), edge("api", "db")]))
    assert report.valid
    assert codes(report.warnings) == [("DUPLICATE_EDGE", "topology.edges[2]")]


def chain(length: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [node(f"n{i}") for i in range(length)]
    return nodes, [edge(f"n{i + 1}", f"n{i}") for i in range(length - 1)]


@pytest.mark.parametrize(("timeout", "ok"), [(0, False), (1, True), (1800, True), (1801, False), (-5, False)])
def test_timeout_range(timeout: int, ok: bool) -> None:
    report = check(spec(timeout_seconds=timeout))
    assert report.valid is ok
    if not ok:
        assert codes(report.errors) == [("LIMIT_EXCEEDED", "timeout_seconds")]


def test_size_limits() -> None:
    assert check(spec(*chain(10))).valid
    assert codes(check(spec(*chain(11))).errors) == [("LIMIT_EXCEEDED", "topology.edges")]

    nodes = [node(f"n{i}") for i in range(101)]
    many = check(spec(nodes, [edge(f"n{i}", "n0", "monitors") for i in range(1, 101)]))
    assert codes(many.errors) == [("LIMIT_EXCEEDED", "topology.nodes")]
    assert check(spec(nodes[:100], [edge(f"n{i}", "n0", "monitors") for i in range(1, 100)])).valid

    crowded = check(spec([node("api", *[agent(f"a{i}") for i in range(21)]), node("db")]))
    assert codes(crowded.errors) == [("LIMIT_EXCEEDED", "topology.nodes[0].agents")]
    assert crowded.invalid_nodes == ["api"]
    assert check(spec([node("api", *[agent(f"a{i}") for i in range(20)]), node("db")])).valid


def test_every_problem_is_reported_at_once() -> None:
    team = spec(
        [
            node("api", agent("x", tools=["nope"]), agent("x", model_id="plain-1", tools=["http_check"])),
            node("api"),
            node("db", agent("y", provider="ghost")),
            node("lonely"),
            node("cache", agent("z", model_id="old-1")),
        ],
        [edge("api", "db"), edge("db", "api"), edge("cache", "cache"), edge("cache", "nowhere")],
        timeout_seconds=5000,
        global_supervisor=supervisor("missing"),
    )
    report = check(team)
    assert not report.valid
    assert codes(report.errors) == [
        ("LIMIT_EXCEEDED", "timeout_seconds"),
        ("TOOL_NOT_FOUND", "topology.nodes[0].agents[0].tools[0]"),
        ("DUPLICATE_AGENT_ID", "topology.nodes[0].agents[1].agent_id"),
        ("CAPABILITY_MISSING", "topology.nodes[0].agents[1].model_id"),
        ("DUPLICATE_NODE_ID", "topology.nodes[1].node_id"),
        ("PROVIDER_NOT_FOUND", "topology.nodes[2].agents[0].model_provider"),
        ("MODEL_DEPRECATED", "topology.nodes[4].agents[0].model_id"),
        ("SELF_LOOP", "topology.edges[2]"),
        ("UNKNOWN_NODE", "topology.edges[3].target_node_id"),
        ("ISOLATED_NODE", "topology.nodes[3]"),
        ("CYCLE", "topology.edges[0]"),
        ("MODEL_NOT_FOUND", "topology.global_supervisor.model_id"),
    ]
    assert report.invalid_nodes == ["api", "db", "lonely", "cache"]
    assert [ref["type"] for ref in report.missing_references] == ["tool", "provider", "node", "model"]


def largest_team() -> TeamSpec:
    """100 nodes x 20 agents (each with a tool), depth 10: the largest team a topology may describe."""
    nodes = [node(f"n{i}", *[agent(f"a{j}", tools=["http_check"]) for j in range(20)]) for i in range(100)]
    # Ten waves of ten nodes; each node depends on one node of the previous wave.
    edges = [edge(f"n{i}", f"n{i - 10}") for i in range(10, 100)]
    return spec(nodes, edges)


def test_the_largest_team_validates() -> None:
    """Its speed (target: under 50 ms) is measured by bench/validation.py."""
    report = check(largest_team())
    assert report.valid, report.errors
