"""What ``postgres_diagnostics`` observed, judged: the failure to connect, or the report's sections against the
node's thresholds (see the tool's module for the rules and defaults)."""

from __future__ import annotations

from typing import Any

import asyncpg

from aiops_executor.tools.registry import describe_exception
from aiops_executor.tools.verdicts import Findings

# Login refusals: the DSN (ours) is wrong, which says nothing about the server's health.
_LOGIN_REFUSED = (
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
)


def judge_failure(exc: BaseException, where: str, timeout_seconds: float, findings: Findings) -> None:
    if isinstance(exc, asyncpg.TooManyConnectionsError):
        findings.failed(f"{where}: connections exhausted (the server refused a new client: too many clients)")
    elif isinstance(exc, _LOGIN_REFUSED):
        findings.unknown(f"{where} refused the login of the node's postgres_dsn: {describe_exception(exc)}")
    elif isinstance(exc, asyncpg.CannotConnectNowError):
        findings.failed(f"{where} is not accepting connections (starting up or shutting down)")
    elif isinstance(exc, TimeoutError):
        findings.failed(f"{where}: no answer within {timeout_seconds:g} s")
    elif isinstance(exc, ConnectionRefusedError):
        findings.failed(f"{where}: connection refused")
    elif isinstance(exc, OSError):
        findings.failed(f"{where}: {' '.join((exc.strerror or str(exc) or 'connect failed').split())}")
    else:
        findings.failed(f"{where}: {describe_exception(exc)}")


def judge_report(report: dict[str, Any], limits: dict[str, float], findings: Findings) -> None:
    round_trip = report.get("round_trip_ms")
    if round_trip is not None:
        degraded_at, failed_at = limits["round_trip_degraded_ms"], limits["round_trip_failed_ms"]
        signal = f"query round trip {round_trip:g} ms (limit {degraded_at:g} ms)"
        findings.graded(round_trip, degraded_at, failed_at, signal)
    _connections(report.get("connections"), limits, findings)
    _lock_waits(report, limits, findings)
    _transactions(report.get("long_transactions") or [], limits, findings)
    _replication(report.get("replication"), limits, findings)
    for section in report.get("section_errors") or {}:
        findings.unknown(f"section {section} could not be read (see section_errors)")


def _connections(connections: dict[str, Any] | None, limits: dict[str, float], findings: Findings) -> None:
    if not connections:
        return
    total, maximum = connections["total"], connections["max_connections"]
    available = maximum - (connections.get("superuser_reserved") or 0)
    if available <= 0:
        return
    percent = round(100 * total / available, 1)
    findings.graded(
        percent,
        limits["connections_degraded_percent"],
        limits["connections_failed_percent"],
        f"connections {total}/{available} ({percent:g} %)",
    )


def _lock_waits(report: dict[str, Any], limits: dict[str, float], findings: Findings) -> None:
    waits = report.get("lock_waits") or []
    if not waits:
        return
    blockers = {blocker["pid"]: blocker for blocker in report.get("blocking_sessions") or []}
    longest = max(waits, key=lambda wait: wait["waiting_seconds"])
    holders = []
    for pid in longest["blocked_by"][:3]:
        blocker = blockers.get(pid)
        if blocker is None:
            holders.append(f"pid {pid}")
            continue
        opened = blocker.get("transaction_seconds")
        state = blocker.get("state") or "unknown state"
        holders.append(f"pid {pid} ({state}" + (f", transaction open {opened:g} s)" if opened is not None else ")"))
    seconds = longest["waiting_seconds"]
    signal = (
        f"{len(waits)} session(s) waiting for locks; pid {longest['pid']} has waited {seconds:g} s, "
        f"blocked by {', '.join(holders)}"
    )
    findings.graded(seconds, limits["lock_wait_degraded_seconds"], limits["lock_wait_failed_seconds"], signal)


def _transactions(transactions: list[dict[str, Any]], limits: dict[str, float], findings: Findings) -> None:
    if not transactions:
        return
    oldest = max(transactions, key=lambda t: t["transaction_seconds"])
    seconds = oldest["transaction_seconds"]
    signal = f"transaction of pid {oldest['pid']} ({oldest.get('state') or 'unknown state'}) open for {seconds:g} s"
    findings.graded(seconds, limits["transaction_degraded_seconds"], limits["transaction_failed_seconds"], signal)


def _replication(replication: dict[str, Any] | None, limits: dict[str, float], findings: Findings) -> None:
    if not replication:
        return
    degraded_at, failed_at = limits["replication_lag_degraded_seconds"], limits["replication_lag_failed_seconds"]
    if replication.get("role") == "replica":
        lag = replication.get("replay_lag_seconds")
        if replication.get("replay_paused"):
            findings.degraded("WAL replay is paused on this replica")
        if lag is not None:
            findings.graded(lag, degraded_at, failed_at, f"replica replays {lag:g} s behind its primary")
        return
    for replica in replication.get("replicas") or []:
        lag = replica.get("replay_lag")
        name = replica.get("application_name") or replica.get("client") or "a replica"
        if replica.get("state") not in (None, "streaming"):
            findings.degraded(f"replica {name} is {replica.get('state')}")
        if lag is not None:
            findings.graded(lag, degraded_at, failed_at, f"replica {name} replays {lag:g} s behind")
