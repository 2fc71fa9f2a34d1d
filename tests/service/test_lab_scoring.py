"""How ``lab run`` scores an investigation, from the execution the service returns (no lab needed)."""

from __future__ import annotations

from typing import Any

from aiops_executor.lab.faults import SCENARIOS
from aiops_executor.lab.scoring import Score, score_result


def execution(suspects: list[str], *, summary: str = "", evidence: list[str] | None = None) -> dict[str, Any]:
    return {
        "status": "success",
        "created_at": "2026-12-07T10:00:00.000Z",
        "started_at": "2026-12-07T10:00:00.250Z",
        "duration_ms": 1500,
        "result": {
            "summary": summary,
            "suspects": [{"node_id": node, "rank": rank} for rank, node in enumerate(suspects, start=1)],
            "node_results": [
                {"node_id": "redis", "evidence": [{"tool": "redis_info", "signals": evidence or []}]},
            ],
        },
    }


def test_the_node_at_fault_first_with_its_signal_and_only_its_dependents_beside_it() -> None:
    scenario = SCENARIOS["redis_hung"]
    score = Score(scenario.name, scenario.node_id)
    signals = ["127.0.0.1:6380: no answer to INFO within 2 s (TCP connection accepted)"]
    score_result(score, scenario, execution(["redis", "shop", "gateway"], evidence=signals), with_model=False)
    assert (score.rank, score.top1, score.top3, score.signal_found) == (1, True, True, True)
    assert score.false_suspects == [] and score.summary_names_node is None
    assert (score.delivery_to_start_seconds, score.run_seconds) == (0.25, 1.5)


def test_a_healthy_node_among_the_suspects_and_a_summary_that_misses_the_cause_are_counted() -> None:
    scenario = SCENARIOS["redis_stopped"]
    score = Score(scenario.name, scenario.node_id)
    found = execution(["postgres", "shop", "redis"], summary="The shop's PostgreSQL is down.")
    score_result(score, scenario, found, with_model=True)
    assert (score.rank, score.top1, score.top3, score.signal_found) == (3, False, True, False)
    assert score.false_suspects == ["postgres"]
    assert score.summary_names_node is False
    named = Score(scenario.name, scenario.node_id)
    score_result(named, scenario, execution(["redis"], summary="Redis refuses connections."), with_model=True)
    assert named.summary_names_node is True
    missing = Score(scenario.name, scenario.node_id)
    score_result(missing, scenario, execution([]), with_model=False)
    assert (missing.rank, missing.top1, missing.top3) == (None, False, False)
