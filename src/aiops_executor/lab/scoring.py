"""``lab run``: each scenario's fault injected, the alert real rules raise awaited, the run Alertmanager starts
followed to its result, the fault healed -- and the investigation scored.

Scores per scenario: seconds from the fault to the firing alert, from Alertmanager's delivery (the execution's
creation by the webhook) to the run's start, the run's duration; the rank of the node at fault among the
``suspects`` (top-1, top-3); whether its evidence carries the fault's signal; false suspects (suspects that are
neither the node at fault nor a node depending on it); with a model, whether the summary names the right node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import httpx

from aiops_executor.lab import service
from aiops_executor.lab.faults import Scenario
from aiops_executor.lab.system import LabError, LabState

# Which nodes depend on which (transitively): a failing dependent of the node at fault is a symptom, not a false
# suspect.
DEPENDENTS = {"redis": {"shop", "gateway"}, "postgres": {"shop", "gateway"}, "shop": {"gateway"}, "gateway": set()}
TERMINAL = {"success", "failed", "timeout", "cancelled"}
POLL_SECONDS = 0.2


@dataclass
class Score:
    scenario: str
    node_id: str
    execution_id: str | None = None
    status: str | None = None
    fault_to_alert_seconds: float | None = None
    alert: str | None = None
    delivery_to_start_seconds: float | None = None
    run_seconds: float | None = None
    rank: int | None = None
    top1: bool = False
    top3: bool = False
    signal_found: bool = False
    suspects: list[str] = field(default_factory=list)
    false_suspects: list[str] = field(default_factory=list)
    summary_names_node: bool | None = None
    healed: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class Investigation:
    """Watches Prometheus and the service for one scenario."""

    def __init__(self, state: LabState, client: httpx.Client) -> None:
        self.state = state
        self.client = client
        self.prometheus = httpx.Client(base_url=state.prometheus_url, timeout=5, trust_env=False)

    def close(self) -> None:
        self.prometheus.close()

    def firing(self) -> list[str]:
        body = self.prometheus.get("/api/v1/alerts").json()
        return [a["labels"]["alertname"] for a in body["data"]["alerts"] if a["state"] == "firing"]

    def checkout_healthy(self) -> bool:
        body = self.prometheus.get("/api/v1/query", params={"query": 'probe_success{job="checkout"}'}).json()
        result = body["data"]["result"]
        return bool(result) and all(float(r["value"][1]) == 1 for r in result)

    def executions(self) -> list[dict[str, Any]]:
        response = self.client.get(f"{service.API}/teams/{self.state.team_id}/executions", params={"size": 100})
        body = response.json()
        return list(body["items"] if isinstance(body, dict) else body)

    def all_finished(self) -> bool:
        return all(e["status"] in TERMINAL for e in self.executions())

    def execution(self, execution_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"{service.API}/executions/{execution_id}").json())

    def until(self, what: str, check: Callable[[], Any], seconds: float) -> Any:
        deadline = time.monotonic() + seconds
        while True:
            found = check()
            if found:
                return found
            if time.monotonic() > deadline:
                raise LabError(f"{what} within {seconds:g} s")
            time.sleep(POLL_SECONDS)


def run_scenario(
    scenario: Scenario, state: LabState, client: httpx.Client, *, seconds: float, with_model: bool
) -> Score:
    score = Score(scenario.name, scenario.node_id)
    watch = Investigation(state, client)
    try:
        watch.until(
            "the system did not become healthy", lambda: not watch.firing() and watch.checkout_healthy(), seconds
        )
        watch.until("a run of the team was still going", lambda: watch.all_finished(), seconds)
        known = {e["execution_id"] for e in watch.executions()}
        injected = time.monotonic()
        scenario.inject(state)
        try:
            alerts = watch.until("no alert fired", watch.firing, seconds)
            score.fault_to_alert_seconds = round(time.monotonic() - injected, 2)
            score.alert = ", ".join(sorted(alerts))
            new = watch.until(
                "Alertmanager started no run",
                lambda: [e for e in watch.executions() if e["execution_id"] not in known],
                seconds,
            )
            execution_id = sorted(new, key=lambda e: e["created_at"])[0]["execution_id"]
            score.execution_id = execution_id
            done = watch.until(
                "the run did not finish",
                lambda: (e := watch.execution(execution_id))["status"] in TERMINAL and e,
                seconds + service.RUN_TIMEOUT_SECONDS,
            )
        finally:
            scenario.heal(state)
            score.healed = True
        score_result(score, scenario, done, with_model=with_model)
    except LabError as exc:
        score.error = str(exc)
    finally:
        watch.close()
    return score


def score_result(score: Score, scenario: Scenario, execution: dict[str, Any], *, with_model: bool) -> None:
    score.status = execution["status"]
    created, started = _time(execution.get("created_at")), _time(execution.get("started_at"))
    if created and started:
        score.delivery_to_start_seconds = round(max(0.0, (started - created).total_seconds()), 2)
    if execution.get("duration_ms") is not None:
        score.run_seconds = round(execution["duration_ms"] / 1000, 2)
    result = execution.get("result") or {}
    suspects = sorted(result.get("suspects") or [], key=lambda s: s["rank"])
    score.suspects = [s["node_id"] for s in suspects]
    rank = next((s["rank"] for s in suspects if s["node_id"] == scenario.node_id), None)
    score.rank = rank
    score.top1 = rank == 1
    score.top3 = rank is not None and rank <= 3
    allowed = {scenario.node_id} | DEPENDENTS.get(scenario.node_id, set())
    score.false_suspects = [node for node in score.suspects if node not in allowed]
    node: dict[str, Any] = next((n for n in result.get("node_results") or [] if n["node_id"] == scenario.node_id), {})
    signals = " ".join(signal for item in node.get("evidence") or [] for signal in item.get("signals") or [])
    score.signal_found = scenario.signal.lower() in signals.lower()
    if with_model:
        score.summary_names_node = scenario.node_id.lower() in str(result.get("summary") or "").lower()
