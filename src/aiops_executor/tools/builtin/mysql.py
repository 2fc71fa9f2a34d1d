"""``mysql_diagnostics``: health of a MySQL or MariaDB server, read in one read-only transaction.

Reads the node attribute ``mysql_dsn`` (``mysql://user:password@host:3306/db``; ``mariadb://`` is accepted too).
Like a PostgreSQL DSN it may hold a password, so it is never an argument. The session is read only (``SET SESSION
TRANSACTION READ ONLY``, then a read-only transaction, rolled back) and its queries are ``SELECT`` and ``SHOW``; an
account with the ``SUPER`` or ``ALL PRIVILEGES`` grant is refused (the connection closed before any diagnostic
query) unless ``AIOPS_DIAGNOSTICS_ALLOW_SUPERUSER=true`` -- grant the diagnostics account ``PROCESS`` (and, to
see replication, ``REPLICATION CLIENT`` on MySQL or ``SLAVE MONITOR`` on MariaDB) instead. The server's address
is checked against the egress policy and connected to as checked. Each section that is refused (privileges,
another server's tables) is reported without losing the others.

Verdicts (thresholds settable per node, ``MYSQL_THRESHOLDS``): failed when the server refuses the connection, does
not answer in time, or has no connection left (``Too many connections``, or the account's own limit); when
connections reach ``connections_failed_percent`` (95) of ``max_connections``, a session has waited for a row
lock ``lock_wait_failed_seconds`` (30), a transaction has been open ``transaction_failed_seconds`` (600), a
replica's threads are stopped or it lags ``replication_lag_failed_seconds`` (300), or a round trip (the best
of three) takes ``round_trip_failed_ms`` (1000); degraded at 80 %, 5 s, 60 s, 30 s and 100 ms. Credentials or a
database the server refuses are ``unknown``: the DSN is ours to fix.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql
from pydantic import BaseModel, ConfigDict, Field

from aiops_executor.core.text import shorten
from aiops_executor.tools.builtin._common import (
    DIAGNOSTICS_SUPERUSER_REFUSED,
    SuperuserRefused,
    best_round_trip_ms,
    egress_address,
    elapsed_ms,
    secret_target,
    thresholds,
)
from aiops_executor.tools.builtin.mysql_verdicts import (
    CANNOT_CONNECT,
    LOST_CONNECTION,
    error_code,
    judge_failure,
    judge_report,
)
from aiops_executor.tools.registry import (
    SETTING_ALLOW_SUPERUSER,
    TOOL_INVALID_TARGET,
    ToolContext,
    ToolError,
    ToolSpec,
    describe_exception,
)
from aiops_executor.tools.verdicts import Findings, judged

DSN_ATTRIBUTE = "mysql_dsn"
DEFAULT_MYSQL_PORT = 3306
MYSQL_THRESHOLDS = {
    "connections_degraded_percent": 80.0,
    "connections_failed_percent": 95.0,
    "lock_wait_degraded_seconds": 5.0,
    "lock_wait_failed_seconds": 30.0,
    "transaction_degraded_seconds": 60.0,
    "transaction_failed_seconds": 600.0,
    "replication_lag_degraded_seconds": 30.0,
    "replication_lag_failed_seconds": 300.0,
    "round_trip_degraded_ms": 100.0,
    "round_trip_failed_ms": 1000.0,
}
_SUPER_GRANTS = ("ALL PRIVILEGES", "SUPER")


class MysqlDiagnosticsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    long_running_seconds: float = Field(
        default=30.0, ge=0, le=86400, description="Report statements and transactions running this many seconds."
    )
    max_rows: int = Field(default=10, ge=1, le=50, description="Most sessions, transactions and lock waits to list.")
    query_chars: int = Field(
        default=300, ge=20, le=2000, description="Truncate statement texts to this many characters."
    )
    timeout_seconds: float = Field(default=10.0, gt=0, le=25, description="Connect and read timeout in seconds.")


def dsn_parts(dsn: str) -> dict[str, Any]:
    parts = urlsplit(dsn.strip())
    if parts.scheme.lower() not in ("mysql", "mariadb") and not parts.scheme.lower().startswith("mysql+"):
        raise ValueError("the DSN must be a mysql:// URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid DSN: {exc}") from None
    return {
        "host": parts.hostname or "localhost",
        "port": port or DEFAULT_MYSQL_PORT,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "db": unquote(parts.path.lstrip("/")) or None,
    }


async def _rows(cursor: Any, statement: str, *params: Any) -> list[dict[str, Any]]:
    await cursor.execute(statement, params or None)
    return list(await cursor.fetchall())


async def _server(cursor: Any, _: MysqlDiagnosticsArgs) -> dict[str, Any]:
    [row] = await _rows(cursor, "SELECT VERSION() AS version, @@read_only AS read_only")
    status = {r["Variable_name"]: r["Value"] for r in await _rows(cursor, "SHOW GLOBAL STATUS LIKE 'Uptime'")}
    return {
        "server_version": row["version"],
        "read_only": bool(row["read_only"]),
        "uptime_seconds": status.get("Uptime"),
    }


async def _connections(cursor: Any, _: MysqlDiagnosticsArgs) -> dict[str, Any]:
    names = ("Threads_connected", "Threads_running", "Max_used_connections", "Aborted_connects")
    status = {r["Variable_name"]: r["Value"] for r in await _rows(cursor, "SHOW GLOBAL STATUS")}
    [limits] = await _rows(cursor, "SELECT @@max_connections AS max_connections")
    connected = int(status.get("Threads_connected", 0))
    maximum = int(limits["max_connections"])
    report: dict[str, Any] = {name.lower(): int(status[name]) for name in names if name in status}
    report.update(max_connections=maximum, usage_percent=round(100 * connected / maximum, 1) if maximum else None)
    return {"connections": report}


async def _long_running(cursor: Any, args: MysqlDiagnosticsArgs) -> dict[str, Any]:
    rows = await _rows(
        cursor,
        "SELECT ID AS id, USER AS user, DB AS db, COMMAND AS command, TIME AS seconds, STATE AS state, "
        "LEFT(INFO, %s) AS query FROM information_schema.PROCESSLIST "
        "WHERE COMMAND NOT IN ('Sleep', 'Daemon', 'Binlog Dump') AND TIME >= %s AND ID <> CONNECTION_ID() "
        "ORDER BY TIME DESC LIMIT %s",
        args.query_chars,
        args.long_running_seconds,
        args.max_rows,
    )
    for row in rows:
        row["query"] = shorten(row["query"] or "", args.query_chars)
    return {"long_running_queries": rows}


async def _transactions(cursor: Any, args: MysqlDiagnosticsArgs) -> dict[str, Any]:
    rows = await _rows(
        cursor,
        "SELECT trx_mysql_thread_id AS thread_id, trx_state AS state, "
        "TIMESTAMPDIFF(SECOND, trx_started, NOW()) AS transaction_seconds, "
        "TIMESTAMPDIFF(SECOND, trx_wait_started, NOW()) AS waiting_seconds, trx_requested_lock_id AS waiting_for, "
        "LEFT(trx_query, %s) AS query FROM information_schema.INNODB_TRX ORDER BY trx_started LIMIT %s",
        args.query_chars,
        args.max_rows * 5,
    )
    lock_waits = [row for row in rows if row["state"] == "LOCK WAIT"]
    blockers = await _blockers(cursor)
    for wait in lock_waits:
        wait["blocked_by"] = blockers.get(wait["thread_id"], [])
    long = [row for row in rows if (row["transaction_seconds"] or 0) >= args.long_running_seconds]
    return {"lock_waits": lock_waits[: args.max_rows], "long_transactions": long[: args.max_rows]}


async def _blockers(cursor: Any) -> dict[int, list[int]]:
    """Waiting thread -> the threads holding what it waits for (MariaDB's and MySQL 5.7's table; MySQL 8's)."""
    statements = (
        "SELECT r.trx_mysql_thread_id AS waiting, b.trx_mysql_thread_id AS blocking "
        "FROM information_schema.INNODB_LOCK_WAITS w "
        "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id "
        "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id",
        "SELECT r.trx_mysql_thread_id AS waiting, b.trx_mysql_thread_id AS blocking "
        "FROM performance_schema.data_lock_waits w "
        "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID "
        "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.BLOCKING_ENGINE_TRANSACTION_ID",
    )
    for statement in statements:
        try:
            rows = await _rows(cursor, statement)
        except pymysql.MySQLError:
            continue
        found: dict[int, list[int]] = {}
        for row in rows:
            found.setdefault(row["waiting"], []).append(row["blocking"])
        return found
    return {}


async def _replication(cursor: Any, _: MysqlDiagnosticsArgs) -> dict[str, Any]:
    rows = await _rows(cursor, "SHOW REPLICA STATUS")
    if not rows:
        return {"replication": {"role": "primary or standalone"}}
    row = rows[0]

    def pick(*names: str) -> Any:
        return next((row[name] for name in names if name in row), None)

    return {
        "replication": {
            "role": "replica",
            "io_running": pick("Replica_IO_Running", "Slave_IO_Running"),
            "sql_running": pick("Replica_SQL_Running", "Slave_SQL_Running"),
            "lag_seconds": pick("Seconds_Behind_Source", "Seconds_Behind_Master"),
            "last_error": pick("Last_Error"),
        }
    }


SECTIONS = (
    ("server", _server),
    ("connections", _connections),
    ("long_running_queries", _long_running),
    ("transactions", _transactions),
    ("replication", _replication),
)


async def _refuse_superuser(cursor: Any, allow: bool) -> None:
    grants = " ".join(str(value) for row in await _rows(cursor, "SHOW GRANTS") for value in row.values()).upper()
    if not allow and any(grant in grants for grant in _SUPER_GRANTS):
        [row] = await _rows(cursor, "SELECT CURRENT_USER() AS account")
        raise SuperuserRefused(row["account"])


async def _close(connection: Any, timeout_seconds: float) -> None:
    """Says goodbye (COM_QUIT), so the server ends the session now; a server that does not answer is dropped."""
    try:
        async with asyncio.timeout(timeout_seconds):
            await connection.ensure_closed()
    except (OSError, TimeoutError, pymysql.MySQLError):
        connection.close()


async def mysql_diagnostics(args: MysqlDiagnosticsArgs, context: ToolContext) -> dict[str, Any]:
    dsn = secret_target(context, DSN_ATTRIBUTE, "MySQL DSN")
    try:
        target = dsn_parts(dsn)
    except ValueError as exc:
        raise ToolError(TOOL_INVALID_TARGET, f"node attribute {DSN_ATTRIBUTE!r}: {describe_exception(exc)}") from None
    limits = thresholds(context, "mysql_diagnostics", MYSQL_THRESHOLDS)
    findings = Findings()
    where = f"{target['host']}:{target['port']}"
    started = time.perf_counter()
    report: dict[str, Any] = {}
    section_errors: dict[str, str] = {}
    try:
        address = await egress_address(context, target["host"], target["port"])
        connection = await aiomysql.connect(
            **{**target, "host": address},
            connect_timeout=args.timeout_seconds,
            autocommit=True,
            cursorclass=aiomysql.DictCursor,
        )
    except (OSError, TimeoutError, pymysql.MySQLError) as exc:
        judge_failure(exc, where, args.timeout_seconds, findings)
        # A server error means it answered (e.g. refused the login); the client's own 2003/2013 that it did not.
        answered = isinstance(exc, pymysql.MySQLError) and error_code(exc) not in (CANNOT_CONNECT, LOST_CONNECTION)
        failure = {"connected": False, "reachable": answered, "error": describe_exception(exc)}
        return judged({**failure, "latency_ms": elapsed_ms(started)}, findings)
    try:
        async with connection.cursor() as cursor:
            await _refuse_superuser(cursor, bool(context.settings.get(SETTING_ALLOW_SUPERUSER)))
            report["connected"] = True
            report["round_trip_ms"] = await best_round_trip_ms(lambda: cursor.execute("SELECT 1"))
            await cursor.execute("SET SESSION TRANSACTION READ ONLY")
            await cursor.execute("START TRANSACTION READ ONLY")
            for name, section in SECTIONS:
                try:
                    report.update(await section(cursor, args))
                except pymysql.MySQLError as exc:
                    section_errors[name] = describe_exception(exc)
            await cursor.execute("ROLLBACK")
    except SuperuserRefused as exc:
        raise ToolError(
            DIAGNOSTICS_SUPERUSER_REFUSED,
            f"the DSN logs in as {exc}, which holds SUPER or ALL PRIVILEGES; diagnostics run with a "
            "least-privileged account (grant it PROCESS) unless AIOPS_DIAGNOSTICS_ALLOW_SUPERUSER=true",
        ) from None
    finally:
        await _close(connection, args.timeout_seconds)
    if section_errors:
        report["section_errors"] = section_errors
    report["latency_ms"] = elapsed_ms(started)
    judge_report(report, limits, findings)
    return judged(report, findings)


MYSQL_DIAGNOSTICS = ToolSpec(
    name="mysql_diagnostics",
    description="Read-only MySQL/MariaDB health: version, connections vs max_connections, long-running "
    "statements and transactions, row-lock waits (who blocks whom), replication state and lag.",
    args_schema=MysqlDiagnosticsArgs,
    run=mysql_diagnostics,
    timeout_seconds=30.0,
    attribute_keys=(DSN_ATTRIBUTE,),
    thresholds=MYSQL_THRESHOLDS,
)
