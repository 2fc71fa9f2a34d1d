"""``prometheus_query``: an instant or range PromQL query, with a bounded number of series in the answer.

The server comes from the ``prometheus_url`` argument, else the node's ``prometheus_url`` attribute, else
the process setting ``AIOPS_PROMETHEUS_URL``. The query defaults to the node's ``prometheus_query``
attribute, else ``up``.

In a run Alertmanager started, with no query named, the alerts of the run that are about this node are
evaluated again for it instead (see ``prometheus_alerts``): the verdict says whether each still holds.

Verdicts: a PromQL result means nothing by itself, so the verdict is ``unknown`` unless the node says what is
bad: for ``up`` queries a series at 0 is failed (all at 1: ok); for any other query, with
``thresholds.prometheus_query.value_degraded_at`` / ``value_failed_at`` set on the node, the highest latest
value of the series is graded against them (no series: ok). Prometheus being unreachable is ``unknown``.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiops_executor.core.egress import EgressDenied, EgressUnresolvable
from aiops_executor.tools.builtin._common import (
    as_float,
    egress_denied,
    egress_http_transport,
    elapsed_ms,
    fill_from_attributes,
    http_url_or_none,
    missing_target,
    thresholds,
)
from aiops_executor.tools.builtin.prometheus_alerts import AlertCheck, judge_alerts, node_alerts
from aiops_executor.tools.registry import SETTING_PROMETHEUS_URL, ToolContext, ToolError, ToolSpec, describe_exception
from aiops_executor.tools.verdicts import Findings, judged

# Unset (infinite) by default: only the node knows which values of its query are bad.
PROMETHEUS_THRESHOLDS = {"value_degraded_at": float("inf"), "value_failed_at": float("inf")}
_UP_QUERY = re.compile(r"^\s*up\s*(\{[^}]*\})?\s*$")
PROMETHEUS_UNREACHABLE = "PROMETHEUS_UNREACHABLE"
PROMETHEUS_QUERY_ERROR = "PROMETHEUS_QUERY_ERROR"
PROMETHEUS_BAD_RESPONSE = "PROMETHEUS_BAD_RESPONSE"
PROMETHEUS_ANSWER_TOO_LARGE = "PROMETHEUS_ANSWER_TOO_LARGE"
# Read no further than this: parsed, 8 MB of JSON is some 60 MB of objects, and the report keeps a few series.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
DEFAULT_QUERY = "up"
TARGET_POINTS_PER_SERIES = 60
MAX_PROMETHEUS_ERROR_CHARS = 300


class PrometheusQueryArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4000,
        description="PromQL expression. Omit to use the node's 'prometheus_query' attribute, else 'up'.",
    )
    prometheus_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Base URL of the Prometheus server (e.g. http://prometheus:9090). "
        "Omit to use the node's 'prometheus_url' attribute or the service default.",
    )
    range_minutes: int | None = Field(
        default=None,
        ge=1,
        le=7 * 24 * 60,
        description="Run a range query over the last N minutes (omit, with no 'start', for an instant query).",
    )
    start: str | None = Field(
        default=None,
        max_length=40,
        description="Range start, RFC 3339 or Unix seconds; makes this a range query (overrides range_minutes).",
    )
    end: str | None = Field(
        default=None, max_length=40, description="Range end, RFC 3339 or Unix seconds (default now)."
    )
    step_seconds: int | None = Field(
        default=None, ge=1, le=86400, description="Range resolution in seconds (default: about 60 points)."
    )
    time: str | None = Field(
        default=None, max_length=40, description="Evaluation time of an instant query, RFC 3339 or Unix seconds."
    )
    max_series: int = Field(default=20, ge=1, le=100, description="Most series to return.")
    max_points: int = Field(default=30, ge=1, le=500, description="Most (latest) points to return per range series.")
    timeout_seconds: float = Field(default=10.0, gt=0, le=25, description="HTTP timeout in seconds.")

    @field_validator("prometheus_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        return http_url_or_none(value)

    @field_validator("start", "end", "time")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_timestamp(value)
            except ValueError:
                raise ValueError("must be an RFC 3339 time or Unix seconds") from None
        return value

    @model_validator(mode="after")
    def _ordered_range(self) -> PrometheusQueryArgs:
        if self.start is not None and self.end is not None and parse_timestamp(self.start) >= parse_timestamp(self.end):
            raise ValueError("start must be before end")
        return self


def _series(raw: Any, result_type: str, max_points: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {"value": raw}
    entry: dict[str, Any] = {"metric": raw.get("metric", {})}
    if result_type == "vector":
        entry["value"] = raw.get("value")
        return entry
    values = raw.get("values") or []
    pairs = [point for point in values if isinstance(point, list) and len(point) == 2]
    numbers = [n for n in (as_float(value) for _, value in pairs) if n is not None]
    entry.update(
        {
            "point_count": len(values),
            "min": min(numbers) if numbers else None,
            "max": max(numbers) if numbers else None,
            "last": values[-1] if values else None,
            "values": values[-max_points:],
        }
    )
    return entry


def parse_timestamp(text: str) -> float:
    """Unix seconds of an RFC 3339 time or a Unix timestamp, as Prometheus accepts both."""
    number = as_float(text)
    if number is not None:
        return number
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _request(args: PrometheusQueryArgs, query: str) -> tuple[str, str, dict[str, str]]:
    """(query kind, API path, parameters)."""
    if args.start is None and args.range_minutes is None:
        params = {"query": query}
        if args.time is not None:
            params["time"] = args.time
        return "instant", "/api/v1/query", params
    end = parse_timestamp(args.end) if args.end is not None else time.time()
    start = parse_timestamp(args.start) if args.start is not None else end - (args.range_minutes or 0) * 60
    step = args.step_seconds or max(1, int((end - start) // TARGET_POINTS_PER_SERIES))
    params = {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)}
    return "range", "/api/v1/query_range", params


def _prometheus_error(body: Any) -> str | None:
    if isinstance(body, dict) and body.get("status") == "error":
        return f"{body.get('errorType', 'error')}: {str(body.get('error', ''))[:MAX_PROMETHEUS_ERROR_CHARS]}"
    return None


async def prometheus_query(args: PrometheusQueryArgs, context: ToolContext) -> dict[str, Any]:
    # Whether the run's alert is about this node: only when the model named no query of its own.
    checks = node_alerts(context) if args.query is None and args.range_minutes is None and args.start is None else []
    args = fill_from_attributes(args, context, {"prometheus_url": ("prometheus_url",), "query": ("prometheus_query",)})
    base_url = args.prometheus_url or context.settings.get(SETTING_PROMETHEUS_URL)
    if not base_url:
        raise missing_target("prometheus_url", ["prometheus_url"])
    query = args.query or DEFAULT_QUERY
    limits = thresholds(context, "prometheus_query", PROMETHEUS_THRESHOLDS)
    started = time.perf_counter()
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(args.timeout_seconds), trust_env=False, transport=egress_http_transport(context)
    ) as client:
        if checks:
            return await _alerts_report(client, str(base_url), checks, args, started)
        kind, path, params = _request(args, query)
        body, data = await _fetch(client, str(base_url), path, params, query)
    result_type = str(data.get("resultType"))
    result = data.get("result")
    report: dict[str, Any] = {
        "prometheus_url": str(base_url),
        "query": query,
        "kind": kind,
        "result_type": result_type,
        "latency_ms": elapsed_ms(started),
    }
    if kind == "range":
        report["range"] = {"start": params["start"], "end": params["end"], "step_seconds": int(params["step"])}
    if result_type in ("scalar", "string"):
        report["value"] = result
    else:
        series = result if isinstance(result, list) else []
        report["series_total"] = len(series)
        report["series"] = [_series(s, result_type, args.max_points) for s in series[: args.max_series]]
        report["series_truncated"] = len(series) > args.max_series
    if isinstance(body, dict) and body.get("warnings"):
        report["warnings"] = body["warnings"][:10]
    series = result if isinstance(result, list) and result_type in ("vector", "matrix") else []
    return judged(report, _judge(query, series, limits))


async def _fetch(
    client: httpx.AsyncClient, base_url: str, path: str, params: dict[str, str], query: str
) -> tuple[Any, dict[str, Any]]:
    """Prometheus' answer (the whole body, and its ``data``); its failures as ``ToolError``s."""
    try:
        async with client.stream("GET", base_url.rstrip("/") + path, params=params) as response:
            content = await _bounded_body(response, query)
    except EgressDenied as exc:
        raise egress_denied(exc) from None
    except (httpx.HTTPError, EgressUnresolvable) as exc:
        raise ToolError(PROMETHEUS_UNREACHABLE, describe_exception(exc)) from None
    try:
        body = json.loads(content)
    except ValueError:
        raise ToolError(
            PROMETHEUS_BAD_RESPONSE, f"HTTP {response.status_code} with a body that is not JSON", {"path": path}
        ) from None
    error = _prometheus_error(body)
    if error is not None:
        raise ToolError(PROMETHEUS_QUERY_ERROR, error, {"status_code": response.status_code, "query": query})
    data = body.get("data") if isinstance(body, dict) else None
    if response.status_code != 200 or not isinstance(data, dict):
        raise ToolError(PROMETHEUS_BAD_RESPONSE, f"HTTP {response.status_code} without a Prometheus result")
    return body, data


async def _bounded_body(response: httpx.Response, query: str) -> bytes:
    """The answer's bytes, refused past ``MAX_ANSWER_BYTES`` before more of it is read."""
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content.extend(chunk)
        if len(content) > MAX_ANSWER_BYTES:
            raise ToolError(
                PROMETHEUS_ANSWER_TOO_LARGE,
                f"Prometheus answered more than {MAX_ANSWER_BYTES // (1024 * 1024)} MB: ask for fewer series (a "
                "narrower selector, or an aggregation such as sum by (...)) or a coarser step",
                {"query": query},
            )
    return bytes(content)


async def _alerts_report(
    client: httpx.AsyncClient, base_url: str, checks: list[AlertCheck], args: PrometheusQueryArgs, started: float
) -> dict[str, Any]:
    """The run's alerts about this node, each expression evaluated now (see ``prometheus_alerts``)."""
    results = []
    for check in checks:
        _, data = await _fetch(client, base_url, "/api/v1/query", {"query": check.expression}, check.expression)
        result = data.get("result")
        results.append((check, result if isinstance(result, list) and data.get("resultType") == "vector" else []))
    findings = Findings()
    alerts = judge_alerts(results, findings)
    report = {"prometheus_url": base_url, "kind": "alert", "alerts": alerts, "latency_ms": elapsed_ms(started)}
    return judged(report, findings)


def _latest(series: dict[str, Any]) -> float | None:
    point = series.get("value") or (series.get("values") or [None])[-1]
    return as_float(point[1]) if isinstance(point, list) and len(point) == 2 else None


def _label_text(series: dict[str, Any]) -> str:
    metric = series.get("metric")
    labels: dict[str, Any] = metric if isinstance(metric, dict) else {}
    shown = {key: labels[key] for key in ("instance", "job", "service") if key in labels} or labels
    return "{" + ", ".join(f'{key}="{value}"' for key, value in list(shown.items())[:4]) + "}"


def _judge(query: str, series: list[Any], limits: dict[str, float]) -> Findings:
    findings = Findings()
    values = [(entry, _latest(entry)) for entry in series if isinstance(entry, dict)]
    if _UP_QUERY.match(query):
        down = [entry for entry, value in values if value == 0]
        for entry in down[:5]:
            findings.failed(f"up == 0 for {_label_text(entry)}: Prometheus cannot scrape it")
        if not values:
            findings.unknown("up has no series for this selector: Prometheus does not scrape this target")
        elif not down:
            findings.ok(f"up == 1 for {len(values)} target(s)")
        return findings
    degraded_at, failed_at = limits["value_degraded_at"], limits["value_failed_at"]
    if degraded_at == failed_at == float("inf"):
        findings.unjudged(
            "no threshold says which values of this query are bad "
            "(node attribute thresholds.prometheus_query.value_degraded_at / value_failed_at)"
        )
        return findings
    numbers = [(entry, value) for entry, value in values if value is not None]
    if not numbers:
        findings.ok("the query returned no series")
        return findings
    entry, highest = max(numbers, key=lambda pair: pair[1])
    limit = min(degraded_at, failed_at)
    findings.graded(
        highest, degraded_at, failed_at, f"{query} = {highest:g} for {_label_text(entry)} (limit {limit:g})"
    )
    return findings


PROMETHEUS_QUERY = ToolSpec(
    name="prometheus_query",
    description="Run a PromQL instant query (or a range query over the last N minutes) against Prometheus "
    "and return the result type and a bounded number of series.",
    args_schema=PrometheusQueryArgs,
    run=prometheus_query,
    timeout_seconds=30.0,
    attribute_keys=("prometheus_url", "prometheus_query"),
    thresholds=PROMETHEUS_THRESHOLDS,
)
