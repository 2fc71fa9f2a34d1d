"""Prometheus metrics of one service process, served at ``GET /metrics`` (see ``core/http_telemetry.py``).

Every ``Metrics`` has its own registry (not prometheus-client's global one), so each app, and each test, counts
for itself. Labels carry only bounded values: route templates, methods, statuses, outcomes, tool names and the
configured provider, endpoint, model and team names -- never an execution, team, node or agent id.

Conventions (Prometheus's, checked by tests/service/test_metrics_format.py): the unit is in the name (``_seconds``,
``_usd``, ``_tokens``), counters end in ``_total``, no ``_created`` series (they double every counter's series
for a value nobody graphs). The process (CPU, memory, file descriptors), Python platform and garbage-collector
collectors come with every registry. Latency histograms carry the trace id of the observed span as an exemplar
when it was traced; exemplars exist in the OpenMetrics format only, which ``GET /metrics`` answers to scrapers
that ask for it (``Accept: application/openmetrics-text``, as Prometheus does with exemplar storage on).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Protocol

from opentelemetry import trace
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

# Process-wide in prometheus-client: no registry of this process exposes ``_created`` series.
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "aiops"
UNMATCHED_ROUTE = "<unmatched>"

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MODEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# A circuit breaker's states, as the values of its gauge.
CIRCUIT_STATES = ("closed", "half_open", "open")

# Tool error codes worth their own outcome; any other error counts as "error".
TOOL_OUTCOMES = {
    "TOOL_TIMEOUT": "timeout",
    "TOOL_INVALID_ARGUMENTS": "invalid_arguments",
    "TOOL_NOT_FOUND": "not_found",
}


class ModelDescription(Protocol):
    """What metrics and traces read off a configured model (the model runtime's ``ModelConfig``)."""

    @property
    def provider_name(self) -> str: ...

    @property
    def provider_type(self) -> str: ...

    @property
    def model_id(self) -> str: ...


class ModelCallRecord(Protocol):
    """What metrics and traces read off one provider attempt (the model runtime's ``CallRecord``)."""

    @property
    def model(self) -> ModelDescription: ...

    @property
    def outcome(self) -> str: ...

    @property
    def latency_ms(self) -> float: ...

    @property
    def input_tokens(self) -> int | None: ...

    @property
    def output_tokens(self) -> int | None: ...

    @property
    def cost(self) -> Decimal | None: ...


def trace_exemplar() -> dict[str, str] | None:
    """The current span's trace and span ids, when it is sampled: the exemplar of an observation made in it."""
    context = trace.get_current_span().get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def tool_outcome(status: str, output: dict[str, object]) -> str:
    if status == "success":
        return "success"
    return TOOL_OUTCOMES.get(str(output.get("error_code")), "error")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.http_requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP request latency (until the response body ends).",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.executions = Counter(
            f"{PREFIX}_executions", "Finished executions by final status.", ["status"], registry=r
        )
        self.execution_duration = Histogram(
            f"{PREFIX}_execution_duration_seconds",
            "Execution wall time by final status.",
            ["status"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.active_executions = Gauge(f"{PREFIX}_executions_active", "Executions running now.", registry=r)
        self.node_team_duration = Histogram(
            f"{PREFIX}_node_team_duration_seconds",
            "Node team wall time by final status.",
            ["status"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.agent_duration = Histogram(
            f"{PREFIX}_agent_duration_seconds",
            "Agent turn wall time by status.",
            ["status"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.model_calls = Counter(
            f"{PREFIX}_model_calls",
            "Provider calls (each failover attempt counts) by provider, model, endpoint and outcome.",
            ["provider", "model", "endpoint", "outcome"],
            registry=r,
        )
        self.model_duration = Histogram(
            f"{PREFIX}_model_call_duration_seconds",
            "Provider call latency by provider, model, endpoint and outcome.",
            ["provider", "model", "endpoint", "outcome"],
            buckets=MODEL_BUCKETS,
            registry=r,
        )
        self.model_tokens = Counter(
            f"{PREFIX}_model_tokens",
            "Tokens by provider, model and type (input or output).",
            ["provider", "model", "type"],
            registry=r,
        )
        self.model_cost = Counter(
            f"{PREFIX}_model_cost_usd",
            "Cost in USD of model calls at the configured prices, by provider and model.",
            ["provider", "model"],
            registry=r,
        )
        self.team_tokens = Counter(
            f"{PREFIX}_team_tokens",
            "Tokens of finished executions by team name and type (input or output); unknown counts are left out.",
            ["team", "type"],
            registry=r,
        )
        self.team_cost = Counter(
            f"{PREFIX}_team_cost_usd",
            "Cost in USD of finished executions by team name (executions of unknown cost are left out).",
            ["team"],
            registry=r,
        )
        self.failovers = Counter(
            f"{PREFIX}_model_failovers",
            "Model calls moved on to another route after a failed attempt.",
            ["provider", "model"],
            registry=r,
        )
        self.circuit_state = Gauge(
            f"{PREFIX}_model_endpoint_circuit_state",
            "Each endpoint's circuit breaker as this process last found it: 0 closed, 1 half_open, 2 open.",
            ["provider", "endpoint"],
            registry=r,
        )
        self.circuit_transitions = Counter(
            f"{PREFIX}_model_endpoint_circuit_transitions",
            "Circuit breakers changing state, by the state they changed to (counted by the process that changed it).",
            ["provider", "endpoint", "state"],
            registry=r,
        )
        self.tool_calls = Counter(
            f"{PREFIX}_tool_calls", "Tool calls by tool and outcome.", ["tool", "outcome"], registry=r
        )
        self.tool_duration = Histogram(
            f"{PREFIX}_tool_call_duration_seconds",
            "Tool call latency by tool and outcome.",
            ["tool", "outcome"],
            buckets=TOOL_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_execution_queue_wait_seconds",
            "Time from an execution's creation to the start of its first attempt.",
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.resumes = Counter(
            f"{PREFIX}_execution_resumes",
            "Attempts that resumed a run from its checkpoint, by why the earlier one ended: lost (its process "
            "died) or handed_back (its process stopped).",
            ["reason"],
            registry=r,
        )
        self.lost_workers = Counter(
            f"{PREFIX}_workers_lost",
            "Workers found dead (no heartbeat within the lease) whose runs this process put back in the queue.",
            registry=r,
        )
        self.reclaimed_runs = Counter(
            f"{PREFIX}_runs_reclaimed",
            "Runs of lost workers put back in the queue by this process.",
            registry=r,
        )
        self.alert_groups = Counter(
            f"{PREFIX}_alert_groups",
            "Alert groups of Alertmanager notifications, by outcome: started, or the skip's code (RESOLVED, "
            "TRIGGER_RUNNING, TEAM_NOT_FOUND, ...).",
            ["outcome"],
            registry=r,
        )
        self.budget_events = Counter(
            f"{PREFIX}_budget_events",
            "Budgets crossing their soft limit (warning, once per period) and model calls refused because a budget "
            "was spent (exceeded), by the budget's scope.",
            ["scope", "kind"],
            registry=r,
        )
        self.sse_subscribers = Gauge(
            f"{PREFIX}_sse_subscribers", "Clients following a live execution stream in this process.", registry=r
        )
        self.queue_depth = Gauge(
            f"{PREFIX}_execution_queue_depth",
            "Runs waiting in the job queue for a worker (PostgreSQL; read at each scrape of an API process and "
            "at each queue upkeep of a worker).",
            registry=r,
        )
        self.live_workers = Gauge(
            f"{PREFIX}_workers_live",
            "Workers with a heartbeat within the lease (PostgreSQL; read at each scrape of an API process and at "
            "each queue upkeep of a worker).",
            registry=r,
        )

    # -- recording -------------------------------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds, trace_exemplar())

    def execution(self, status: str, seconds: float) -> None:
        self.executions.labels(status).inc()
        self.execution_duration.labels(status).observe(seconds, trace_exemplar())

    def alert_group(self, outcome: str) -> None:
        self.alert_groups.labels(outcome).inc()

    def node_team(self, status: str, seconds: float) -> None:
        self.node_team_duration.labels(status).observe(seconds, trace_exemplar())

    def agent(self, status: str, seconds: float) -> None:
        self.agent_duration.labels(status).observe(seconds, trace_exemplar())

    def model_call(self, record: ModelCallRecord, endpoint: str | None = None) -> None:
        """One provider attempt; ``endpoint`` is the configured endpoint's name (empty: a provider without one)."""
        provider, model, where = record.model.provider_name, record.model.model_id, endpoint or ""
        self.model_calls.labels(provider, model, where, record.outcome).inc()
        self.model_duration.labels(provider, model, where, record.outcome).observe(
            record.latency_ms / 1000, trace_exemplar()
        )
        if record.input_tokens:
            self.model_tokens.labels(provider, model, "input").inc(record.input_tokens)
        if record.output_tokens:
            self.model_tokens.labels(provider, model, "output").inc(record.output_tokens)
        if record.cost:
            self.model_cost.labels(provider, model).inc(float(record.cost))

    def team_usage(self, team: str, input_tokens: int | None, output_tokens: int | None, cost: float | None) -> None:
        """The usage of a finished execution, for the per-team totals (team names are configuration, like
        provider and model names: as few as the teams)."""
        if input_tokens:
            self.team_tokens.labels(team, "input").inc(input_tokens)
        if output_tokens:
            self.team_tokens.labels(team, "output").inc(output_tokens)
        if cost:
            self.team_cost.labels(team).inc(cost)

    def failover(self, provider: str, model: str) -> None:
        self.failovers.labels(provider, model).inc()

    def circuit(self, provider: str, endpoint: str, state: str, *, changed: bool = False) -> None:
        """An endpoint's circuit breaker found in ``state`` (``changed``: this process changed it to that)."""
        self.circuit_state.labels(provider, endpoint).set(CIRCUIT_STATES.index(state))
        if changed:
            self.circuit_transitions.labels(provider, endpoint, state).inc()

    def tool_call(self, tool: str, outcome: str, seconds: float) -> None:
        self.tool_calls.labels(tool, outcome).inc()
        self.tool_duration.labels(tool, outcome).observe(seconds, trace_exemplar())

    def run_started(self, *, resumed: bool, lost: bool, waited_seconds: float | None) -> None:
        if resumed:
            self.resumes.labels("lost" if lost else "handed_back").inc()
        elif waited_seconds is not None:
            self.queue_wait.observe(max(0.0, waited_seconds))

    def budget_event(self, scope: str, kind: str) -> None:
        self.budget_events.labels(scope, kind).inc()

    def reclaimed(self, runs: int, workers: int) -> None:
        self.reclaimed_runs.inc(runs)
        self.lost_workers.inc(workers)

    def watch(self, *, active_executions: Callable[[], float], sse_subscribers: Callable[[], float]) -> None:
        """Gauges read at scrape time from the objects that know (the execution manager, the broadcaster)."""
        self.active_executions.set_function(active_executions)
        self.sse_subscribers.set_function(sse_subscribers)

    def queue(self, status: dict[str, int] | None) -> None:
        if status is not None:
            self.queue_depth.set(status["depth"])
            self.live_workers.set(status["live_workers"])

    def render(self) -> bytes:
        """Prometheus's text format."""
        return generate_latest(self.registry)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body and content type for a scraper's ``Accept`` header: OpenMetrics (with exemplars) when it
        asks for it, else Prometheus's text format."""
        if "application/openmetrics-text" in accept:
            return generate_openmetrics(self.registry), OPENMETRICS_CONTENT_TYPE  # type: ignore[no-untyped-call]
        return self.render(), CONTENT_TYPE_LATEST
