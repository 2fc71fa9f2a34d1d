"""http_check and prometheus_query against a real local HTTP server (a thread running http.server)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import SETTING_PROMETHEUS_URL, ToolContext, ToolOutcome

BIG_BODY_BYTES = 1536 * 1024
SLOW_SECONDS = 1.0


class LocalServer:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"


def _series(index: int) -> dict[str, str]:
    return {"__name__": "up", "job": "checkout", "instance": f"10.0.0.{index}:8080"}


class Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = parse_qs(parts.query)
        record: LocalServer = self.server.record  # type: ignore[attr-defined]
        record.requests.append((self.command, parts.path, params))
        if parts.path == "/health":
            self._send(
                200,
                b'{"status": "ok"}',
                "application/json",
                {"Cache-Control": "no-store", "X-Request-ID": "req-1", "X-Internal": "hidden"},
            )
        elif parts.path == "/redirect":
            self._send(302, b"", "text/plain", {"Location": "/health"})
        elif parts.path == "/loop":
            self._send(302, b"", "text/plain", {"Location": "/loop"})
        elif parts.path == "/down":
            self._send(503, b"maintenance", "text/plain", {"Retry-After": "30"})
        elif parts.path == "/slow":
            time.sleep(SLOW_SECONDS)
            self._send(200, b"late", "text/plain")
        elif parts.path == "/big":
            self._send(200, b"x" * BIG_BODY_BYTES, "application/octet-stream")
        elif parts.path == "/api/v1/query":
            self._prometheus_instant(params)
        elif parts.path == "/api/v1/query_range":
            self._prometheus_range(params)
        else:
            self._send(200, b"<html>not prometheus</html>", "text/html")

    def _prometheus_instant(self, params: dict[str, list[str]]) -> None:
        query = params["query"][0]
        if query == "everything":
            self._endless_answer()
        elif query == "rate(":
            self._json(400, {"status": "error", "errorType": "bad_data", "error": "1:6: parse error: unclosed paren"})
        elif query == "scalar(1)":
            self._json(200, {"status": "success", "data": {"resultType": "scalar", "result": [1767225600, "1"]}})
        else:
            count = 50 if query == "many" else 2
            result = [{"metric": _series(i), "value": [1767225600.5, str(i % 2)]} for i in range(count)]
            self._json(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    def _endless_answer(self) -> None:
        """A valid answer of 64 MB (a selector that matches every series of a big Prometheus), streamed."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        series = json.dumps({"metric": _series(0), "value": [1767225600.5, "1"]}).encode() + b","
        chunk = series * (65536 // len(series))
        try:
            self.wfile.write(b'{"status": "success", "data": {"resultType": "vector", "result": [')
            for _ in range(64 * 1024 * 1024 // len(chunk)):
                self.wfile.write(chunk)
            self.wfile.write(series[:-1] + b"]}}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading

    def _prometheus_range(self, params: dict[str, list[str]]) -> None:
        start, end, step = (float(params[name][0]) for name in ("start", "end", "step"))
        stamps = [start + i * step for i in range(int((end - start) // step) + 1)]
        result = [
            {"metric": _series(i), "values": [[stamp, str(n * (i + 1))] for n, stamp in enumerate(stamps)]}
            for i in range(3)
        ]
        self._json(200, {"status": "success", "data": {"resultType": "matrix", "result": result}})


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    record = LocalServer(server)
    server.record = record  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield record
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(local_server: LocalServer) -> LocalServer:
    local_server.requests.clear()
    return local_server


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def invoke(name: str, arguments: dict[str, Any], **attributes: Any) -> ToolOutcome:
    return await default_registry().invoke(name, arguments, ToolContext(node_id="n", attributes=attributes))


# ------------------------------------------------------------------------------------------------ http_check


async def test_http_check_uses_the_node_url_with_no_arguments(server: LocalServer) -> None:
    outcome = await invoke("http_check", {}, url=f"{server.base}/health")
    assert outcome.status == "success"
    out = outcome.output
    assert out["reachable"] is True and out["ok"] is True
    assert out["status_code"] == 200
    assert out["final_url"] == f"{server.base}/health"
    assert out["headers"].pop("server").startswith("BaseHTTP")
    assert out["headers"] == {
        "content-type": "application/json",
        "content-length": "16",
        "cache-control": "no-store",
        "x-request-id": "req-1",
    }
    assert out["body_bytes"] == 16 and out["body_preview"] == '{"status": "ok"}'
    assert 0 < out["latency_ms"] <= out["total_ms"]
    assert server.requests == [("GET", "/health", {})]
    assert outcome.verdict == "ok" and out["verdict"] == "ok"
    assert out["signals"][0] == f"HTTP 200 from {server.base.removeprefix('http://')}/health"


async def test_http_check_argument_wins_over_attribute_and_selected_headers(server: LocalServer) -> None:
    outcome = await invoke(
        "http_check",
        {"url": f"{server.base}/health", "method": "HEAD", "report_headers": ["X-Internal"]},
        url=f"{server.base}/down",
    )
    assert outcome.output["status_code"] == 200
    assert outcome.output["headers"] == {"x-internal": "hidden"}
    assert outcome.output["body_bytes"] == 0
    assert server.requests == [("HEAD", "/health", {})]


async def test_http_check_follows_redirects_or_not(server: LocalServer) -> None:
    followed = (await invoke("http_check", {"url": f"{server.base}/redirect"})).output
    assert followed["status_code"] == 200
    assert followed["final_url"] == f"{server.base}/health"
    assert followed["redirects"] == [{"status_code": 302, "url": f"{server.base}/redirect"}]

    kept = (await invoke("http_check", {"url": f"{server.base}/redirect", "follow_redirects": False})).output
    assert kept["status_code"] == 302 and kept["ok"] is True
    assert kept["headers"]["location"] == "/health"


async def test_http_check_redirect_loop_is_a_finding(server: LocalServer) -> None:
    outcome = await invoke("http_check", {"url": f"{server.base}/loop", "max_redirects": 2})
    assert outcome.status == "success"
    assert outcome.output["reachable"] is True and outcome.output["ok"] is False
    assert outcome.output["error_kind"] == "too_many_redirects"
    assert len(server.requests) == 3
    assert outcome.verdict == "failed" and outcome.signals[0].endswith("/loop: too many redirects")


async def test_http_check_unhealthy_status_and_expected_status(server: LocalServer) -> None:
    down = (await invoke("http_check", {}, url=f"{server.base}/down")).output
    assert down["status_code"] == 503 and down["ok"] is False
    assert down["headers"]["retry-after"] == "30"
    # A 5xx is failed, with the body's excerpt in the signal.
    assert down["verdict"] == "failed"
    assert down["signals"][0] == f"HTTP 503 from {server.base.removeprefix('http://')}/down: maintenance"
    expected = (await invoke("http_check", {}, url=f"{server.base}/down", expected_status=503)).output
    assert expected["ok"] is True
    assert expected["verdict"] == "failed", "a 5xx the node expects is still a server error"
    not_expected = (await invoke("http_check", {"url": f"{server.base}/health", "expected_status": [204]})).output
    assert not_expected["ok"] is False
    assert not_expected["verdict"] == "degraded" and "(expected 204)" in not_expected["signals"][0]


async def test_http_check_connection_refused_is_a_finding() -> None:
    outcome = await invoke("http_check", {"url": f"http://127.0.0.1:{closed_port()}/"})
    assert outcome.status == "success"
    assert outcome.output["reachable"] is False and outcome.output["ok"] is False
    assert outcome.output["error_kind"] == "connect"
    assert outcome.output["error"].startswith("ConnectError")
    assert outcome.verdict == "failed" and outcome.signals[0].endswith(": connection refused or unreachable")


async def test_http_check_read_timeout_is_a_finding(server: LocalServer) -> None:
    started = time.perf_counter()
    outcome = await invoke("http_check", {"url": f"{server.base}/slow", "timeout_seconds": 0.2})
    assert time.perf_counter() - started < SLOW_SECONDS
    assert outcome.status == "success"
    assert outcome.output["reachable"] is True and outcome.output["error_kind"] == "timeout"
    assert outcome.verdict == "failed" and outcome.signals[0].endswith("/slow: no answer within 0.2 s")


async def test_http_check_latency_against_the_nodes_thresholds(server: LocalServer) -> None:
    limits = {"http_check": {"latency_degraded_ms": SLOW_SECONDS * 500, "latency_failed_ms": SLOW_SECONDS * 5000}}
    slow = await invoke("http_check", {"url": f"{server.base}/slow"}, thresholds=limits)
    assert slow.output["status_code"] == 200
    assert slow.verdict == "degraded"
    assert slow.signals[0].startswith("answered in ") and slow.signals[0].endswith(f"(limit {SLOW_SECONDS * 500:g} ms)")
    limits["http_check"]["latency_failed_ms"] = SLOW_SECONDS * 900
    assert (await invoke("http_check", {"url": f"{server.base}/slow"}, thresholds=limits)).verdict == "failed"
    typo = await invoke("http_check", {"url": f"{server.base}/health"}, thresholds={"http_check": {"latency": 1}})
    assert typo.status == "error" and typo.output["error_code"] == "TOOL_INVALID_TARGET"
    assert typo.verdict == "unknown"


async def test_http_check_counts_a_large_body_up_to_the_cap(server: LocalServer) -> None:
    out = (await invoke("http_check", {"url": f"{server.base}/big"})).output
    assert out["body_truncated"] is True
    assert 1024 * 1024 <= out["body_bytes"] < BIG_BODY_BYTES
    assert "body_preview" not in out  # not textual


async def test_http_check_refuses_other_schemes_and_missing_targets() -> None:
    bad_argument = await invoke("http_check", {"url": "file:///etc/passwd"})
    assert bad_argument.output["error_code"] == "TOOL_INVALID_ARGUMENTS"
    bad_attribute = await invoke("http_check", {}, url="gopher://example/")
    assert bad_attribute.output["error_code"] == "TOOL_INVALID_TARGET"
    missing = await invoke("http_check", {}, host="127.0.0.1")
    assert missing.output["error_code"] == "TOOL_MISSING_TARGET"


async def test_http_check_never_returns_url_credentials(server: LocalServer) -> None:
    url = f"http://probe:hunter2-pw@{server.base.removeprefix('http://')}/health"
    outcome = await invoke("http_check", {}, url=url)
    assert outcome.output["status_code"] == 200
    assert "hunter2-pw" not in json.dumps(outcome.output)
    assert outcome.output["url"].startswith("http://probe:***@")


# ------------------------------------------------------------------------------------------ prometheus_query


async def test_prometheus_instant_query_from_node_attributes(server: LocalServer) -> None:
    outcome = await invoke("prometheus_query", {"query": 'up{job="checkout"}'}, prometheus_url=server.base)
    assert outcome.status == "success", outcome.output
    out = outcome.output
    assert out["kind"] == "instant" and out["result_type"] == "vector"
    assert out["series_total"] == 2 and out["series_truncated"] is False
    assert out["series"][0] == {"metric": _series(0), "value": [1767225600.5, "0"]}
    assert server.requests == [("GET", "/api/v1/query", {"query": ['up{job="checkout"}']})]
    # up == 0 for one of the two targets: Prometheus cannot scrape it.
    assert outcome.verdict == "failed"
    assert outcome.signals == ['up == 0 for {instance="10.0.0.0:8080", job="checkout"}: Prometheus cannot scrape it']


async def test_prometheus_other_queries_are_judged_only_against_the_nodes_thresholds(server: LocalServer) -> None:
    query = {"query": "errors"}
    unjudged = await invoke("prometheus_query", query, prometheus_url=server.base)
    assert unjudged.verdict == "unknown" and "thresholds.prometheus_query" in unjudged.signals[0]
    limits = {"prometheus_query": {"value_degraded_at": 0.5, "value_failed_at": 5}}
    judged = await invoke("prometheus_query", query, prometheus_url=server.base, thresholds=limits)
    assert judged.verdict == "degraded"
    assert judged.signals == ['errors = 1 for {instance="10.0.0.1:8080", job="checkout"} (limit 0.5)']


async def test_prometheus_url_from_settings_and_default_query(server: LocalServer) -> None:
    context = ToolContext(settings={SETTING_PROMETHEUS_URL: server.base + "/"})
    outcome = await default_registry().invoke("prometheus_query", {}, context)
    assert outcome.status == "success", outcome.output
    assert outcome.output["query"] == "up"
    assert server.requests[0][1] == "/api/v1/query"


async def test_prometheus_query_attribute(server: LocalServer) -> None:
    outcome = await invoke("prometheus_query", {}, prometheus_url=server.base, prometheus_query="scalar(1)")
    assert outcome.output["result_type"] == "scalar"
    assert outcome.output["value"] == [1767225600, "1"]
    assert outcome.verdict == "unknown"


async def test_prometheus_range_query(server: LocalServer) -> None:
    outcome = await invoke(
        "prometheus_query",
        {"query": "rate(http_requests_total[5m])", "range_minutes": 10, "step_seconds": 60, "max_points": 4},
        prometheus_url=server.base,
    )
    assert outcome.status == "success", outcome.output
    out = outcome.output
    assert out["kind"] == "range" and out["result_type"] == "matrix"
    ((_, path, params),) = server.requests
    assert path == "/api/v1/query_range"
    assert float(params["end"][0]) - float(params["start"][0]) == pytest.approx(600, abs=0.01)
    assert params["step"] == ["60"]
    first = out["series"][0]
    assert first["point_count"] == 11
    assert len(first["values"]) == 4
    assert first["min"] == 0 and first["max"] == 10
    assert first["last"] == first["values"][-1]
    assert out["series"][2]["max"] == 30


async def test_prometheus_explicit_range_gets_a_default_step(server: LocalServer) -> None:
    arguments = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}
    outcome = await invoke("prometheus_query", arguments, prometheus_url=server.base)
    assert outcome.status == "success", outcome.output
    params = server.requests[0][2]
    assert params["start"] == ["1767225600.000"] and params["end"] == ["1767229200.000"]
    assert params["step"] == ["60"]


async def test_prometheus_series_are_bounded(server: LocalServer) -> None:
    out = (await invoke("prometheus_query", {"query": "many", "max_series": 5}, prometheus_url=server.base)).output
    assert out["series_total"] == 50 and len(out["series"]) == 5 and out["series_truncated"] is True


async def test_prometheus_errors_are_structured(server: LocalServer) -> None:
    bad_query = await invoke("prometheus_query", {"query": "rate("}, prometheus_url=server.base)
    assert bad_query.status == "error"
    assert bad_query.output["error_code"] == "PROMETHEUS_QUERY_ERROR"
    assert bad_query.output["error_message"].startswith("bad_data: 1:6: parse error")

    not_prometheus = await invoke("prometheus_query", {}, prometheus_url=server.base + "/elsewhere")
    assert not_prometheus.output["error_code"] == "PROMETHEUS_BAD_RESPONSE"

    too_large = await invoke("prometheus_query", {"query": "everything"}, prometheus_url=server.base)
    assert too_large.output["error_code"] == "PROMETHEUS_ANSWER_TOO_LARGE"
    assert "ask for fewer series" in too_large.output["error_message"]

    unreachable = await invoke("prometheus_query", {}, prometheus_url=f"http://127.0.0.1:{closed_port()}")
    assert unreachable.output["error_code"] == "PROMETHEUS_UNREACHABLE"

    missing = await invoke("prometheus_query", {})
    assert missing.output["error_code"] == "TOOL_MISSING_TARGET"

    bad_time = await invoke("prometheus_query", {"start": "yesterday"}, prometheus_url=server.base)
    assert bad_time.output["error_code"] == "TOOL_INVALID_ARGUMENTS"
    reversed_range = await invoke(
        "prometheus_query", {"start": "1767229200", "end": "1767225600"}, prometheus_url=server.base
    )
    assert reversed_range.output["error_code"] == "TOOL_INVALID_ARGUMENTS"


def alert_context(expression: str, **labels: str) -> dict[str, Any]:
    """The context of a run Alertmanager started (``triggers.service.build_context``), with one firing alert."""
    generator = f"http://prometheus:9090/graph?{urlencode({'g0.expr': expression, 'g0.tab': '1'})}"
    alert = {"status": "firing", "labels": {"alertname": "CheckoutDown", **labels}, "generator_url": generator}
    return {"source": "alertmanager", "alerts": [alert]}


async def test_prometheus_evaluates_the_runs_alert_again_for_the_node(server: LocalServer) -> None:
    labels = {"job": "checkout", "instance": "10.0.0.0:8080", "severity": "critical"}
    run_context = alert_context('up{job="checkout"} == 0', **labels)
    # The node is the target at 10.0.0.0 (its up is 0): the alert still holds for it.
    down = ToolContext(attributes={"prometheus_url": server.base, "instance": "10.0.0.0:8080"}, run_context=run_context)
    outcome = await default_registry().invoke("prometheus_query", {}, down)
    assert outcome.status == "success", outcome.output
    assert server.requests == [("GET", "/api/v1/query", {"query": ['up{job="checkout"} == 0']})]
    assert outcome.verdict == "failed"
    assert outcome.signals == ['alert CheckoutDown still holds for {instance="10.0.0.0:8080"}: up{job="checkout"} == 0']
    [entry] = outcome.output["alerts"]
    assert entry["holds"] is True and entry["series"] == [_series(0)]

    # Matched by job, a warning: degraded. The local server answers every query with both series.
    by_job = ToolContext(attributes={"prometheus_url": server.base, "job": "checkout"}, run_context=run_context)
    run_context["alerts"][0]["labels"]["severity"] = "warning"
    assert (await default_registry().invoke("prometheus_query", {}, by_job)).verdict == "degraded"


async def test_an_alert_about_another_node_or_a_query_of_the_models_own_is_not_reevaluated(
    server: LocalServer,
) -> None:
    run_context = alert_context('up{job="checkout"} == 0', job="checkout", instance="10.0.0.0:8080")
    other = ToolContext(attributes={"prometheus_url": server.base, "job": "search"}, run_context=run_context)
    outcome = await default_registry().invoke("prometheus_query", {}, other)
    assert outcome.output["kind"] == "instant" and outcome.output["query"] == "up"
    named = ToolContext(attributes={"prometheus_url": server.base, "job": "checkout"}, run_context=run_context)
    outcome = await default_registry().invoke("prometheus_query", {"query": "rate(x[5m])"}, named)
    assert outcome.output["query"] == "rate(x[5m])"
    # No longer holding: the instance at 10.0.0.5 is not among the series the expression returns now.
    gone = ToolContext(attributes={"prometheus_url": server.base, "instance": "10.0.0.5:8080"}, run_context=run_context)
    run_context["alerts"][0]["labels"]["instance"] = "10.0.0.5:8080"
    healed = await default_registry().invoke("prometheus_query", {}, gone)
    assert healed.verdict == "ok" and healed.signals == [
        'alert CheckoutDown no longer holds for {instance="10.0.0.5:8080"}'
    ]
