"""What bench/stream.py (and bench/scale.py) measured: per-delivery latencies, the checks of every stream, and the
figures as a table and as JSON."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.table import Table

TERMINAL = {"execution_complete", "execution_error", "execution_cancelled"}
LIVE = {"agent_token", "agent_tokens_discarded"}  # token deltas: live only, never stored


@dataclass
class Subscriber:
    index: int
    execution_id: str = ""
    sent_at: float = 0.0  # wall clock when the GET was sent
    attached_at: float = 0.0  # ... and when its 200 response headers arrived
    received: list[tuple[str, str, str, float]] = field(default_factory=list)  # (id, event, data, time)
    error: str | None = None


@dataclass
class Run:
    execution_id: str
    subscribers: list[Subscriber]
    stored_events: int = 0
    status: str = ""


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def to_epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


@dataclass
class Analysis:
    latencies: list[float] = field(default_factory=list)  # ms, every non-heartbeat event
    before: list[float] = field(default_factory=list)  # emitted before the GET was sent: from the store
    attaching: list[float] = field(default_factory=list)  # emitted while the GET was being answered
    live: list[float] = field(default_factory=list)  # emitted after the stream was attached
    terminal: list[float] = field(default_factory=list)
    heartbeats: int = 0
    pings: int = 0
    last_receive: float = 0.0
    violations: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    attach: list[float] = field(default_factory=list)  # ms from sending the GET to its response headers


def analyse(runs: list[Run]) -> Analysis:
    result = Analysis()
    for run in runs:
        if not run.execution_id:
            result.violations.append(f"an execution did not start: {run.subscribers[0].error}")
            continue
        if run.status != "success":
            result.violations.append(f"execution {run.execution_id} ended with status {run.status!r}")
        for subscriber in run.subscribers:
            who = f"subscriber {subscriber.index} (execution {subscriber.execution_id or '-'})"
            if subscriber.error:
                result.violations.append(f"{who}: {subscriber.error}")
            if subscriber.attached_at:
                result.attach.append((subscriber.attached_at - subscriber.sent_at) * 1000)
            seqs: list[int] = []
            last_kind = ""
            for sse_id, kind, data, received_at in subscriber.received:
                if not data and kind == "message":
                    # A ``: ping`` comment of sse-starlette. httpx-sse 0.4 dispatches it as an empty message
                    # carrying the last id; the SSE spec says an empty data buffer dispatches nothing.
                    result.pings += 1
                    continue
                try:
                    payload = json.loads(data)
                except ValueError:
                    result.violations.append(f"{who}: undecodable message id={sse_id!r} event={kind!r} data={data!r}")
                    continue
                result.last_receive = max(result.last_receive, received_at)
                if kind == "heartbeat":
                    result.heartbeats += 1
                    continue
                if kind in LIVE:
                    # Live only: no id line (httpx-sse repeats the last id) and no seq in the payload.
                    if "seq" in payload:
                        result.violations.append(f"{who}: a live {kind} carries seq {payload['seq']!r}")
                else:
                    if str(payload.get("seq")) != sse_id:
                        result.violations.append(f"{who}: id {sse_id!r} but payload seq {payload.get('seq')!r}")
                    seqs.append(int(sse_id))
                    last_kind = kind
                result.kinds[kind] += 1
                emitted = to_epoch(payload["timestamp"])
                latency = (received_at - emitted) * 1000
                result.latencies.append(latency)
                if emitted < subscriber.sent_at:
                    result.before.append(latency)
                elif emitted < subscriber.attached_at:
                    result.attaching.append(latency)
                else:
                    result.live.append(latency)
                if kind in TERMINAL:
                    result.terminal.append(latency)
            expected = list(range(1, run.stored_events + 1))
            if seqs != expected:
                missing = sorted(set(expected) - set(seqs))
                duplicated = sorted(s for s, n in Counter(seqs).items() if n > 1)
                result.violations.append(
                    f"{who}: got {len(seqs)} events, the store holds {run.stored_events}; "
                    f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, duplicated {duplicated[:10]}, "
                    f"in order: {seqs == sorted(seqs)}"
                )
            if last_kind not in TERMINAL:
                result.violations.append(f"{who}: the stream ended without a terminal event (last: {last_kind!r})")
    for values in (result.latencies, result.before, result.attaching, result.live, result.terminal, result.attach):
        values.sort()
    return result


def write_csv(path: Path, runs: list[Run]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subscriber", "execution_id", "seq", "event", "emitted", "received", "attached"])
        for run in runs:
            for subscriber in run.subscribers:
                for sse_id, kind, data, received_at in subscriber.received:
                    if not data:
                        continue
                    emitted = to_epoch(json.loads(data)["timestamp"])
                    row = [subscriber.index, run.execution_id, sse_id, kind, emitted, received_at, subscriber.sent_at]
                    writer.writerow(row)


def known(value: float) -> float | None:
    """JSON has no NaN: a figure with nothing to measure is null."""
    return None if math.isnan(value) else value


def fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def latency_row(table: Table, name: str, values: list[float]) -> None:
    table.add_row(
        name,
        f"{len(values):,}",
        fmt(percentile(values, 0.5)),
        fmt(percentile(values, 0.99)),
        fmt(values[-1] if values else math.nan),
    )


def json_figures(
    result: Analysis, backend: str, options: dict[str, Any], stored: int, wall: float, cpu: tuple[float, float]
) -> dict[str, Any]:
    """The figures of one measurement, for ``--json``."""
    executions = int(options["executions"])
    return {
        "backend": backend,
        "executions": executions,
        "subscribers": options["subscribers"],
        "latency_ms_per_model_call": options["latency_ms"],
        "nodes": options["nodes"],
        "stored_events": stored,
        "stored_events_per_execution": stored / max(1, executions),
        "delivered": len(result.latencies),
        "live_deltas_delivered": sum(result.kinds[kind] for kind in LIVE),
        "latency_ms": {
            name: {"count": len(values), "p50": known(percentile(values, 0.5)), "p99": known(percentile(values, 0.99))}
            for name, values in (
                ("all", result.latencies),
                ("before_get", result.before),
                ("while_attaching", result.attaching),
                ("after_attach", result.live),
                ("terminal", result.terminal),
                ("attach", result.attach),
            )
        },
        "wall_seconds": wall,
        "server_cpu_seconds": cpu[0],
        "client_cpu_seconds": cpu[1],
        "violations": len(result.violations),
    }
