"""What ``mysql_diagnostics`` observed, judged: the failure to connect, or the report against the node's
thresholds (see the tool's module for the rules and defaults)."""

from __future__ import annotations

from typing import Any

import pymysql

from aiops_executor.tools.registry import describe_exception
from aiops_executor.tools.verdicts import Findings

# MySQL's error numbers (client and server) that say what a failed connection means.
TOO_MANY_CONNECTIONS = 1040
ACCOUNT_LIMIT_REACHED = 1226  # max_user_connections and the account's other resource limits
CANNOT_CONNECT = 2003
LOST_CONNECTION = 2013
REFUSED_LOGIN = frozenset({1044, 1045, 1049, 1698})  # access denied (to the database), unknown database


def error_code(exc: BaseException) -> int | None:
    code = exc.args[0] if exc.args else None
    return code if isinstance(code, int) else None


def judge_failure(exc: BaseException, where: str, timeout_seconds: float, findings: Findings) -> None:
    code, text = error_code(exc), str(exc).lower()
    cause = exc.__cause__ or exc.__context__  # PyMySQL wraps the socket's error in its own (2003)
    if isinstance(cause, ConnectionRefusedError):
        text += " refused"
    elif isinstance(cause, TimeoutError):
        text += " timed out"
    if code == TOO_MANY_CONNECTIONS:
        findings.failed(f"{where}: connections exhausted (the server refused a new client: too many connections)")
    elif code == ACCOUNT_LIMIT_REACHED:
        findings.failed(f"{where}: connections exhausted for this account (its max_user_connections is reached)")
    elif code in REFUSED_LOGIN:
        findings.unknown(f"{where} refused the login of the node's mysql_dsn: {describe_exception(exc)}")
    elif isinstance(exc, TimeoutError) or "timed out" in text or code == LOST_CONNECTION:
        findings.failed(f"{where}: no answer within {timeout_seconds:g} s")
    elif "refused" in text or isinstance(exc, ConnectionRefusedError):
        findings.failed(f"{where}: connection refused")
    elif isinstance(exc, pymysql.MySQLError | OSError):
        findings.failed(f"{where}: {describe_exception(exc)}")
    else:
        findings.unknown(f"{where}: {describe_exception(exc)}")


def judge_report(report: dict[str, Any], limits: dict[str, float], findings: Findings) -> None:
    round_trip = report.get("round_trip_ms")
    if round_trip is not None:
        signal = f"query round trip {round_trip:g} ms (limit {limits['round_trip_degraded_ms']:g} ms)"
        findings.graded(round_trip, limits["round_trip_degraded_ms"], limits["round_trip_failed_ms"], signal)
    connections = report.get("connections") or {}
    if connections.get("usage_percent") is not None:
        percent = connections["usage_percent"]
        signal = f"connections {connections.get('threads_connected')}/{connections['max_connections']} ({percent:g} %)"
        findings.graded(percent, limits["connections_degraded_percent"], limits["connections_failed_percent"], signal)
    waits = report.get("lock_waits") or []
    if waits:
        longest = max(waits, key=lambda wait: wait.get("waiting_seconds") or 0)
        seconds = float(longest.get("waiting_seconds") or 0)
        holders = ", ".join(f"thread {thread}" for thread in longest.get("blocked_by") or []) or "another transaction"
        signal = (
            f"{len(waits)} transaction(s) waiting for row locks; thread {longest['thread_id']} has waited "
            f"{seconds:g} s, blocked by {holders}"
        )
        findings.graded(seconds, limits["lock_wait_degraded_seconds"], limits["lock_wait_failed_seconds"], signal)
    transactions = report.get("long_transactions") or []
    if transactions:
        oldest = max(transactions, key=lambda row: row.get("transaction_seconds") or 0)
        seconds = float(oldest.get("transaction_seconds") or 0)
        signal = f"transaction of thread {oldest['thread_id']} open for {seconds:g} s"
        findings.graded(seconds, limits["transaction_degraded_seconds"], limits["transaction_failed_seconds"], signal)
    replication = report.get("replication") or {}
    if replication.get("role") == "replica":
        for thread in ("io_running", "sql_running"):
            if str(replication.get(thread)).lower() != "yes":
                findings.failed(f"replica's {thread.split('_')[0].upper()} thread is not running")
        lag = replication.get("lag_seconds")
        if lag is not None:
            degraded_at, failed_at = (
                limits["replication_lag_degraded_seconds"],
                limits["replication_lag_failed_seconds"],
            )
            findings.graded(float(lag), degraded_at, failed_at, f"replica is {lag} s behind its source")
    for section in report.get("section_errors") or {}:
        findings.unknown(f"section {section} could not be read (see section_errors)")
