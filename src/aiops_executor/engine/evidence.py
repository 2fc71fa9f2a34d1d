"""Evidence: what a run's tool calls observed, per node, and the suspects ranked from it -- with no model.

Each tool call leaves an evidence item (``call_id``, ``tool``, ``verdict``, ``signals``, ``observed``; ``seq``
once its ``tool_call`` event is numbered). A node's verdict is the worst of its evidence, ``unknown`` when no
call judged anything. A node team whose agents have tools but none of whose calls observed its resource (each
refused by a policy, without a target, rejected by a person...) fails with ``NO_EVIDENCE``: the model's words
alone are not evidence. A call that read data nobody judged (an MCP tool's answer, a PromQL result without
thresholds) is ``unknown`` but observed.

Suspects are the degraded or failed nodes, ranked so that a cause comes before its symptoms: a node none of
whose dependencies (transitively) is degraded or failed ranks above the nodes that depend on it; ties are
broken by severity, then by how many failing nodes depend on it, then by topology order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiops_executor.tools.verdicts import SEVERITY, Verdict, worst

NO_EVIDENCE = "NO_EVIDENCE"
MAX_REASONS = 5


def evidence_item(
    call_id: str, tool: str, verdict: Verdict, signals: Sequence[str], error_code: str | None, observed: bool
) -> dict[str, Any]:
    item: dict[str, Any] = {"call_id": call_id, "tool": tool, "verdict": verdict.value, "signals": list(signals)}
    item["observed"] = observed
    if error_code and not observed:
        item["error_code"] = error_code
    return item


def node_verdict(evidence: Iterable[Mapping[str, Any]]) -> Verdict:
    return worst(item["verdict"] for item in evidence)


def no_evidence_reason(evidence: Sequence[Mapping[str, Any]]) -> str | None:
    """Why a node team with tools observed nothing (None when some call observed its resource)."""
    if any(item.get("observed", item["verdict"] != Verdict.unknown) for item in evidence):
        return None
    if not evidence:
        return "no tool call observed the resource: no tool was called"
    reasons = Counter(str(item.get("error_code") or item["tool"]) for item in evidence)
    listed = ", ".join(f"{reason} x{count}" for reason, count in reasons.most_common())
    return f"no tool call observed the resource ({listed})"


def with_seqs(evidence: Iterable[Mapping[str, Any]], seqs: Mapping[str, int]) -> list[dict[str, Any]]:
    """The evidence with the ``seq`` of each call's ``tool_call`` event (None when it is not known)."""
    return [{**item, "seq": seqs.get(str(item.get("call_id")), item.get("seq"))} for item in evidence]


@dataclass(frozen=True)
class NodeEvidence:
    node_id: str
    verdict: Verdict
    evidence: Sequence[Mapping[str, Any]]


def rank_suspects(nodes: Sequence[NodeEvidence], dependencies: Callable[[str], Iterable[str]]) -> list[dict[str, Any]]:
    """``suspects`` of the result: ``[{"node_id", "rank", "verdict", "reasons", "evidence_seqs"}]``.

    ``nodes`` in topology order; ``dependencies(node_id)`` the nodes it depends on directly."""
    verdicts = {node.node_id: node.verdict for node in nodes}
    order = {node.node_id: index for index, node in enumerate(nodes)}
    failing = {node_id for node_id, verdict in verdicts.items() if verdict in (Verdict.degraded, Verdict.failed)}
    if not failing:
        return []
    below = {node_id: _failing_below(node_id, dependencies, failing) for node_id in failing}
    dependents = {node_id: sum(1 for other in failing if node_id in below[other]) for node_id in failing}

    def key(node_id: str) -> tuple[int, int, int, int]:
        return (1 if below[node_id] else 0, -SEVERITY[verdicts[node_id]], -dependents[node_id], order[node_id])

    suspects = []
    by_id = {node.node_id: node for node in nodes}
    for rank, node_id in enumerate(sorted(failing, key=key), start=1):
        node = by_id[node_id]
        bad = [item for item in node.evidence if item["verdict"] in (Verdict.degraded, Verdict.failed)]
        reasons = [_depends_reason(up, verdicts[up]) for up in below[node_id][:MAX_REASONS]]
        reasons += [f"{item['tool']}: {signal}" for item in bad for signal in item["signals"][:2]][:MAX_REASONS]
        if dependents[node_id]:
            reasons.append(f"{dependents[node_id]} failing node(s) depend on it")
        suspects.append(
            {
                "node_id": node_id,
                "rank": rank,
                "verdict": verdicts[node_id].value,
                "reasons": reasons,
                "evidence_seqs": [item["seq"] for item in bad if item.get("seq") is not None],
            }
        )
    return suspects


def _depends_reason(node_id: str, verdict: Verdict) -> str:
    return f"depends on {node_id}, which is {verdict.value}"


def _failing_below(node_id: str, dependencies: Callable[[str], Iterable[str]], failing: set[str]) -> list[str]:
    """The failing nodes ``node_id`` depends on, directly or through others, nearest first."""
    found: list[str] = []
    seen = {node_id}
    frontier = [node_id]
    while frontier:
        following = []
        for current in frontier:
            for up in dependencies(current):
                if up in seen:
                    continue
                seen.add(up)
                following.append(up)
                if up in failing:
                    found.append(up)
        frontier = following
    return found


def ranking_brief(suspects: Sequence[Mapping[str, Any]]) -> str:
    """The ranking as the global supervisor reads it before it summarises."""
    if not suspects:
        return "Ranked suspects (from the tools' verdicts and the topology): none; no node was observed failing."
    lines = ["Ranked suspects (from the tools' verdicts and the topology, computed without a model):"]
    for suspect in suspects:
        lines.append(
            f"{suspect['rank']}. {suspect['node_id']} ({suspect['verdict']}): " + "; ".join(suspect["reasons"])
        )
    lines.append("If your summary disagrees with this ranking, say which node you blame instead and why.")
    return "\n".join(lines)
