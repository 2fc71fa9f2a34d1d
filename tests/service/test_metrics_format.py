"""``GET /metrics`` follows Prometheus's conventions, checked the way ``promtool check metrics`` would:

- both expositions parse cleanly with prometheus-client's parsers (the text format, and OpenMetrics, whose
  parser is strict about every line);
- units in names (``_seconds``, ``_usd``, ``_tokens``, ``_bytes``), counters ending in ``_total``, a HELP for
  every family, no ``_created`` series;
- the process and Python platform collectors are there;
- latency histograms carry the trace id of the traced span they measured as an exemplar (OpenMetrics only).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from aiops_executor.app import create_app
from aiops_executor.core.metrics import Metrics
from aiops_executor.core.settings import Settings
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, login
from tests.executions.test_executions_api import TASK, make_team
from tests.helpers import API, add_simulator
from tests.service.test_telemetry import traced

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# A unit (or a count of things) at the end of every histogram's and of every non-info metric's name.
UNITS = ("_seconds", "_bytes", "_usd", "_tokens", "_ratio", "_info")
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def backend() -> str:
    return "sqlite"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def http(settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(settings, telemetry=traced(exporter))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client


async def _some_traffic(http: httpx.AsyncClient) -> None:
    http.headers.update(await login(http, ADMIN_USERNAME, ADMIN_PASSWORD))
    await add_simulator(http, priced=True)
    team_id = await make_team(http, nodes=1)
    run = await http.post(f"{API}/teams/{team_id}/execute", json={**TASK, "stream": False})
    assert run.status_code == 200 and run.json()["status"] == "success", run.text


async def test_the_text_exposition_follows_the_naming_conventions(http: httpx.AsyncClient) -> None:
    await _some_traffic(http)
    response = await http.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    families = list(parse_text(response.text))
    names = {family.name for family in families}
    problems: list[str] = []
    for family in families:
        if not NAME.match(family.name):
            problems.append(f"{family.name}: not a valid metric name")
        if not family.documentation:
            problems.append(f"{family.name}: no HELP")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                problems.append(f"{sample.name}: a _created series")
            if family.type == "counter" and not sample.name.endswith("_total"):
                problems.append(f"{sample.name}: a counter sample without _total")
        if family.name.startswith("aiops_") and family.type == "histogram" and not family.name.endswith("_seconds"):
            problems.append(f"{family.name}: a histogram without its unit")
        own = family.name.startswith("aiops_") and family.type == "counter"
        if own and "duration" in family.name and not family.name.endswith(UNITS):
            problems.append(f"{family.name}: no unit in the name")
    assert not problems, "\n".join(problems)

    assert "aiops_model_cost_usd" in names and "aiops_model_cost" not in names
    # Process and Python platform collectors (as on Linux).
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert {"python_info", "python_gc_objects_collected"} <= names
    assert {"aiops_execution_queue_depth", "aiops_workers_live"} <= names
    cost = [s for f in families if f.name == "aiops_model_cost_usd" for s in f.samples]
    assert cost and cost[0].name == "aiops_model_cost_usd_total" and cost[0].value > 0


async def test_openmetrics_parses_strictly_and_latency_histograms_carry_trace_exemplars(
    http: httpx.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    await _some_traffic(http)
    response = await http.get("/metrics", headers={"Accept": OPENMETRICS})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(response.text)}
    traces = {format(span.context.trace_id, "032x") for span in exporter.get_finished_spans()}
    spans = {format(span.context.span_id, "016x") for span in exporter.get_finished_spans()}
    for name in (
        "aiops_http_request_duration_seconds",
        "aiops_execution_duration_seconds",
        "aiops_node_team_duration_seconds",
        "aiops_agent_duration_seconds",
        "aiops_model_call_duration_seconds",
        "aiops_tool_call_duration_seconds",
    ):
        exemplars = [s.exemplar for s in families[name].samples if s.exemplar is not None]
        assert exemplars, f"{name}: no exemplar"
        for exemplar in exemplars:
            assert exemplar.labels["trace_id"] in traces and exemplar.labels["span_id"] in spans, name
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)


def test_untraced_observations_have_no_exemplar_and_queue_gauges_follow_the_queue() -> None:
    metrics = Metrics()
    metrics.http_request("GET", "/health", 200, 0.01)
    metrics.queue({"depth": 7, "live_workers": 2})
    metrics.queue(None)  # no job queue (or it could not be read): the gauges keep what they had
    body, content_type = metrics.exposition(OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(body.decode())}
    assert all(s.exemplar is None for s in families["aiops_http_request_duration_seconds"].samples)
    assert families["aiops_execution_queue_depth"].samples[0].value == 7
    assert families["aiops_workers_live"].samples[0].value == 2
