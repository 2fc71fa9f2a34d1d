"""Verdicts of tool outcomes, node verdicts, NO_EVIDENCE and the ranking of suspects on hand-made topologies."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from aiops_executor.engine.evidence import (
    NodeEvidence,
    evidence_item,
    no_evidence_reason,
    node_verdict,
    rank_suspects,
    ranking_brief,
    with_seqs,
)
from aiops_executor.tools.builtin._common import thresholds
from aiops_executor.tools.registry import ToolContext, ToolError
from aiops_executor.tools.verdicts import Findings, Verdict, outcome_verdict, worst


def node(node_id: str, verdict: str, *signals: str, seq: int = 1) -> NodeEvidence:
    evidence = [{"call_id": f"c-{node_id}", "tool": "probe", "verdict": verdict, "signals": list(signals), "seq": seq}]
    return NodeEvidence(node_id, Verdict(verdict), evidence)


def deps(edges: dict[str, list[str]]) -> object:
    def dependencies(node_id: str) -> Iterable[str]:
        return edges.get(node_id, [])

    return dependencies


def ranked(suspects: list[dict[str, object]]) -> list[str]:
    return [str(s["node_id"]) for s in sorted(suspects, key=lambda s: int(str(s["rank"])))]


def test_a_chain_ranks_the_deepest_failing_dependency_first() -> None:
    # gateway -> shop -> redis (depends_on): the symptom at the top, the cause at the bottom.
    nodes = [
        node("gateway", "failed", "HTTP 502 from /", seq=3),
        node("shop", "failed", "HTTP 500 from /checkout", seq=2),
        node("redis", "failed", "connection refused", seq=1),
    ]
    suspects = rank_suspects(nodes, deps({"gateway": ["shop"], "shop": ["redis"]}))  # type: ignore[arg-type]

    assert ranked(suspects) == ["redis", "shop", "gateway"]
    first, second, third = suspects
    assert first["evidence_seqs"] == [1]
    assert any("connection refused" in reason for reason in first["reasons"])
    assert "2 failing node(s) depend on it" in first["reasons"]
    assert second["reasons"][0] == "depends on redis, which is failed"
    assert third["reasons"][:2] == ["depends on shop, which is failed", "depends on redis, which is failed"]


def test_a_healthy_node_in_between_does_not_hide_the_cause() -> None:
    nodes = [node("web", "degraded", "answered in 3000 ms"), node("api", "ok"), node("db", "failed", "refused")]
    suspects = rank_suspects(nodes, deps({"web": ["api"], "api": ["db"]}))  # type: ignore[arg-type]

    assert ranked(suspects) == ["db", "web"]
    assert "api" not in ranked(suspects)


def test_a_diamond_blames_the_shared_dependency() -> None:
    #      top
    #     /   \
    #  left   right
    #     \   /
    #     bottom
    nodes = [
        node("top", "failed"),
        node("left", "degraded"),
        node("right", "ok"),
        node("bottom", "failed"),
    ]
    edges = {"top": ["left", "right"], "left": ["bottom"], "right": ["bottom"]}
    suspects = rank_suspects(nodes, deps(edges))  # type: ignore[arg-type]

    # bottom first; then the symptoms by severity: top (failed) before left (degraded).
    assert ranked(suspects) == ["bottom", "top", "left"]


def test_two_independent_faults_rank_by_severity_then_by_how_many_depend_on_them() -> None:
    nodes = [
        node("cache", "degraded"),
        node("queue", "failed"),
        node("db", "failed"),
        node("worker", "failed"),
    ]
    # worker depends on db; queue and cache stand alone.
    suspects = rank_suspects(nodes, deps({"worker": ["db"]}))  # type: ignore[arg-type]

    # Roots first: db (failed, one failing dependent), queue (failed, none), cache (degraded); then worker.
    assert ranked(suspects) == ["db", "queue", "cache", "worker"]


def test_unknown_and_ok_nodes_are_never_suspects() -> None:
    nodes = [node("a", "unknown"), node("b", "ok")]
    assert rank_suspects(nodes, deps({"a": ["b"]})) == []  # type: ignore[arg-type]
    assert "none" in ranking_brief([])


def test_the_brief_lists_the_ranking_and_asks_for_reasons_to_disagree() -> None:
    suspects = rank_suspects([node("db", "failed", "refused")], deps({}))  # type: ignore[arg-type]
    brief = ranking_brief(suspects)
    assert "1. db (failed)" in brief and "refused" in brief
    assert "why" in brief


def test_node_verdict_is_the_worst_observation_and_unknown_without_one() -> None:
    items = [
        evidence_item("1", "tcp_check", Verdict.ok, ["connected"], None, True),
        evidence_item("2", "http_check", Verdict.degraded, ["slow"], None, True),
        evidence_item("3", "redis_info", Verdict.unknown, ["EGRESS_DENIED: denied"], "EGRESS_DENIED", False),
    ]
    assert node_verdict(items) is Verdict.degraded
    assert node_verdict(items[2:]) is Verdict.unknown
    assert node_verdict([]) is Verdict.unknown
    assert worst(["unknown", "failed", "ok"]) is Verdict.failed


def test_no_evidence_names_the_reasons_with_counts() -> None:
    denied = [evidence_item(str(i), "tcp_check", Verdict.unknown, ["x"], "EGRESS_DENIED", False) for i in range(4)]
    missing = [evidence_item("m", "redis_info", Verdict.unknown, ["y"], "TOOL_MISSING_TARGET", False)]
    reason = no_evidence_reason(denied + missing)
    assert reason == "no tool call observed the resource (EGRESS_DENIED x4, TOOL_MISSING_TARGET x1)"
    assert no_evidence_reason([]) == "no tool call observed the resource: no tool was called"
    assert (
        no_evidence_reason([*denied, evidence_item("o", "tcp_check", Verdict.failed, ["refused"], None, True)]) is None
    )
    # Data read but judged by nobody (an MCP tool's answer) is still an observation.
    unjudged = evidence_item("u", "k8s.get_pods", Verdict.unknown, ["no verdict"], None, True)
    assert no_evidence_reason([*denied, unjudged]) is None


def test_evidence_gets_the_seq_of_its_tool_call_event() -> None:
    items = [evidence_item("a", "t", Verdict.ok, [], None, True), evidence_item("b", "t", Verdict.ok, [], None, True)]
    assert [item["seq"] for item in with_seqs(items, {"a": 7})] == [7, None]


@pytest.mark.parametrize(
    ("status", "output", "builtin", "expected", "observed"),
    [
        ("success", {"verdict": "failed", "signals": ["refused"]}, True, Verdict.failed, True),
        ("success", {"reachable": True}, True, Verdict.unknown, False),
        ("success", {"verdict": "unknown", "signals": ["credentials refused"]}, True, Verdict.unknown, False),
        ("success", {"verdict": "unknown", "signals": ["no threshold"], "observed": True}, True, Verdict.unknown, True),
        ("error", {"error_code": "EGRESS_DENIED", "error_message": "egress denied"}, True, Verdict.unknown, False),
        ("error", {"error_code": "TOOL_MISSING_TARGET", "error_message": "no url"}, True, Verdict.unknown, False),
        ("error", {"error_code": "TOOL_INVALID_ARGUMENTS", "error_message": "bad"}, True, Verdict.unknown, False),
        ("error", {"error_code": "TOOL_TIMEOUT", "error_message": "did not finish"}, True, Verdict.failed, True),
        ("error", {"error_code": "TOOL_TIMEOUT", "error_message": "did not finish"}, False, Verdict.unknown, False),
        ("error", {"error_code": "TOOL_SERVER_UNAVAILABLE", "error_message": "down"}, False, Verdict.unknown, False),
        ("success", {"text": "all good", "verdict": "ok"}, False, Verdict.unknown, True),
        (
            "success",
            {"structured_content": {"verdict": "degraded", "signals": ["lag 40 s"]}},
            False,
            Verdict.degraded,
            True,
        ),
    ],
)
def test_outcome_verdicts(
    status: str, output: dict[str, object], builtin: bool, expected: Verdict, observed: bool
) -> None:
    judgement = outcome_verdict(status, output, builtin=builtin)
    assert judgement.verdict is expected
    assert judgement.observed is observed
    assert judgement.signals, "every verdict names what set it"


def test_findings_keep_the_signals_that_set_the_verdict() -> None:
    findings = Findings()
    findings.ok("connected in 2 ms")
    findings.degraded("clients 85/100 (85 %)")
    findings.failed("memory 99 % of maxmemory")
    assert findings.report() == {"verdict": "failed", "signals": ["memory 99 % of maxmemory", "clients 85/100 (85 %)"]}
    healthy = Findings()
    healthy.ok("connected in 2 ms")
    healthy.unknown("slowlog refused")
    assert healthy.report() == {"verdict": "ok", "signals": ["connected in 2 ms"]}
    nothing = Findings()
    nothing.unknown("credentials refused")
    assert nothing.report() == {"verdict": "unknown", "signals": ["credentials refused"]}


def test_thresholds_come_from_the_node_and_typos_are_refused() -> None:
    defaults = {"latency_degraded_ms": 1000.0}
    context = ToolContext(attributes={"thresholds": {"http_check": {"latency_degraded_ms": 250}}})
    assert thresholds(context, "http_check", defaults) == {"latency_degraded_ms": 250.0}
    assert thresholds(ToolContext(), "http_check", defaults) == defaults
    for bad in ({"latency_degraded": 5}, {"latency_degraded_ms": -1}, {"latency_degraded_ms": "fast"}, "x"):
        with pytest.raises(ToolError) as refused:
            thresholds(ToolContext(attributes={"thresholds": {"http_check": bad}}), "http_check", defaults)
        assert refused.value.error_code == "TOOL_INVALID_TARGET"
