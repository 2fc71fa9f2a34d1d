"""A run's trace across processes, as a real OTLP/HTTP receiver gets it: a caller's ``traceparent`` reaches an
API process (``serve --no-worker``), the job carries the trace context to a worker process, and the worker's
run spans -- with OpenTelemetry's GenAI attributes -- continue the caller's trace under the API's request span.

Both processes export to one receiver on the loopback interface, which decodes the protobuf bodies with
``opentelemetry-proto``; each process has its own ``service.name``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_MASTER_KEY
from tests.helpers import add_simulator
from tests.processes import API, Process, base_env, free_port, make_team, run_cli, scratch_database, wait_until
from tests.service.test_telemetry import _CollectorServer, collector  # noqa: F401 - the receiver fixture

pytestmark = [pytest.mark.postgres, pytest.mark.long]

ADMIN = {"username": "trace-admin", "password": "trace-password-1"}
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@dataclass(frozen=True)
class Exported:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    status: int
    attributes: dict[str, Any]


def exported(receiver: _CollectorServer) -> list[Exported]:
    spans = []
    for _, request in list(receiver.received):
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes: dict[str, Any] = {}
                    for a in span.attributes:
                        kind = a.value.WhichOneof("value")
                        value = getattr(a.value, kind)
                        attributes[a.key] = [v.string_value for v in value.values] if kind == "array_value" else value
                    spans.append(
                        Exported(
                            resource["service.name"],
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.kind,
                            span.status.code,
                            attributes,
                        )
                    )
    return spans


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with scratch_database("aiops_trace") as url:
        yield url


@pytest.mark.timeout(180)
async def test_a_callers_trace_continues_through_the_api_and_the_job_into_a_worker(
    database: str,
    tmp_path: Path,
    collector: _CollectorServer,  # noqa: F811
) -> None:
    env = base_env(
        data_dir=str(tmp_path / "data"),
        database_url=database,
        master_keys=json.dumps({"trace-1": TEST_MASTER_KEY}),
        master_key_id="trace-1",
        jwt_secret="trace-jwt-secret-" + "x" * 32,
        admin_username=ADMIN["username"],
        admin_password=ADMIN["password"],
        log_level="WARNING",
        worker_lease_seconds="6",  # queue upkeep every second
        otlp_endpoint=f"http://127.0.0.1:{collector.server_address[1]}",
    )
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export within a tenth of a second, not five
    assert run_cli(env, "migrate").returncode == 0
    port = free_port()
    api = Process(
        "api",
        ["serve", "--no-worker", "--port", str(port)],
        {**env, "AIOPS_OTEL_SERVICE_NAME": "api"},
        tmp_path / "api.log",
        port,
    )
    metrics_port = free_port()
    worker = Process(
        "worker",
        ["worker", "--concurrency", "2", "--metrics-port", str(metrics_port)],
        {**env, "AIOPS_OTEL_SERVICE_NAME": "worker"},
        tmp_path / "worker.log",
    )
    try:
        await asyncio.gather(api.start(), worker.start(ready_path=None))
        async with api.client(ADMIN) as client:
            await add_simulator(client, name="scale-sim", models={"sim": 0})
            team_id = await make_team(client, nodes=1)
            started = await client.post(
                f"{API}/teams/{team_id}/executions",
                json={"input": {"task": "Is anything down?"}},
                headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            )
            assert started.status_code == 202, started.text
            execution_id = started.json()["execution_id"]
            await wait_until(client, [execution_id], lambda r: r[execution_id]["status"] == "success", 60)

        # The worker's own metrics: its queue upkeep reads the queue's gauges (no request does, there).
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as scraper:
            while True:
                scrape = {
                    sample.name: sample.value
                    for family in text_string_to_metric_families((await scraper.get("/metrics")).text)
                    for sample in family.samples
                }
                # Both gauges are read at an upkeep: one may still show the queue as it was when the run was taken.
                settled = scrape.get("aiops_workers_live") == 1 and scrape.get("aiops_execution_queue_depth") == 0
                if settled or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        assert scrape["aiops_workers_live"] == 1 and scrape["aiops_execution_queue_depth"] == 0
        assert scrape["aiops_executions_total"] == 1 and scrape["aiops_model_calls_total"] >= 1

        deadline = time.monotonic() + 30
        while True:
            spans = [s for s in exported(collector) if s.trace_id == CALLER_TRACE]
            if any(s.name == "execution" and s.service == "worker" for s in spans) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    finally:
        for process in (api, worker):
            if process.running:
                process.kill(15)

    [request] = [s for s in spans if s.service == "api" and s.name == f"POST {API}/teams/{{team_id}}/executions"]
    assert request.parent_id == CALLER_SPAN
    [execution] = [s for s in spans if s.name == "execution"]
    assert execution.service == "worker", "the run is traced by the process that ran it"
    assert execution.parent_id == request.span_id, "under the request that started it, in another process"
    assert execution.attributes["aiops.execution.id"] == execution_id
    assert execution.attributes["gen_ai.conversation.id"] == execution_id

    worker_spans = [s for s in spans if s.service == "worker"]
    agents = [s for s in worker_spans if s.name.startswith("invoke_agent ")]
    tools = [s for s in worker_spans if s.name.startswith("execute_tool ")]
    chats = [s for s in worker_spans if s.name.startswith("chat ")]
    assert len(agents) == 2 and len(tools) == 1 and chats
    assert {a.attributes["gen_ai.agent.id"] for a in agents} == {"probe", "reader"}
    assert all(a.attributes["gen_ai.operation.name"] == "invoke_agent" for a in agents)
    [tool] = tools
    assert tool.attributes["gen_ai.tool.name"] == "tcp_check" and tool.attributes["gen_ai.tool.call.id"]
    assert tool.parent_id in {a.span_id for a in agents}
    for chat in chats:
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.request.model"] == "sim"
        assert chat.attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.kind == 3  # SPAN_KIND_CLIENT
