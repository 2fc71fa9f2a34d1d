"""``postgres_diagnostics``: health of a PostgreSQL server, read in one read-only transaction.

Reads the node attribute ``postgres_dsn`` (``postgresql://user:password@host:5432/db``; the SQLAlchemy form
``postgresql+asyncpg://`` is accepted too). The DSN is never an argument: it may hold a password, and
arguments are shown in the run's events. Nothing here writes: the connection starts with
``default_transaction_read_only=on``, ``statement_timeout`` and ``lock_timeout`` as server settings, the
session is a read-only transaction, and each section runs in its own savepoint so one that is refused
(permissions, old server) is reported without losing the others. A DSN that logs in as a superuser is refused
(the connection closed before any diagnostic query) unless ``AIOPS_DIAGNOSTICS_ALLOW_SUPERUSER=true``. The
server's address is checked against the egress policy and connected to as checked.

Verdicts (thresholds settable per node, see ``POSTGRES_THRESHOLDS``): failed when the server refuses the
connection, does not answer in time, or has no connection left for a new client; when client connections reach
``connections_failed_percent`` (95) of those available to ordinary roles, a session has waited for a lock
``lock_wait_failed_seconds`` (30), a transaction has been open ``transaction_failed_seconds`` (600), or a
replica lags ``replication_lag_failed_seconds`` (300). Degraded at ``connections_degraded_percent`` (80),
``lock_wait_degraded_seconds`` (5), ``transaction_degraded_seconds`` (60) and
``replication_lag_degraded_seconds`` (30); a query's round trip (the best of three ``SELECT 1``) is judged
against
``round_trip_degraded_ms`` (100) and ``round_trip_failed_ms`` (1000). A login the server refuses (wrong
password, unknown database) is ``unknown``: the DSN is ours to fix, and nothing was learned of the server's health.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg
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
from aiops_executor.tools.builtin.postgres_verdicts import judge_failure, judge_report
from aiops_executor.tools.registry import (
    SETTING_ALLOW_SUPERUSER,
    TOOL_INVALID_TARGET,
    ToolContext,
    ToolError,
    ToolSpec,
    describe_exception,
)
from aiops_executor.tools.verdicts import Findings, judged

DSN_ATTRIBUTE = "postgres_dsn"
APPLICATION_NAME = "aiops-executor-diagnostics"
_SQLALCHEMY_DRIVER = re.compile(r"^(postgres(?:ql)?)\+\w+://", re.IGNORECASE)
DEFAULT_POSTGRES_PORT = 5432
POSTGRES_THRESHOLDS = {
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


class PostgresDiagnosticsArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    long_running_seconds: float = Field(
        default=30.0, ge=0, le=86400, description="Report non-idle queries running longer than this many seconds."
    )
    max_queries: int = Field(default=10, ge=1, le=50, description="Most long-running queries and lock waits to list.")
    query_chars: int = Field(default=300, ge=20, le=2000, description="Truncate query texts to this many characters.")
    timeout_seconds: float = Field(
        default=10.0, gt=0, le=25, description="Connect timeout and per-statement timeout in seconds."
    )


def normalise_dsn(dsn: str) -> str:
    return _SQLALCHEMY_DRIVER.sub(lambda m: f"{m.group(1)}://", dsn.strip())


def dsn_target(dsn: str) -> tuple[str, int]:
    """Host and port a DSN connects to (one host; ``localhost`` when it names none)."""
    try:
        parts = urlsplit(normalise_dsn(dsn))
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid DSN: {exc}") from None
    if parts.scheme.lower() not in ("postgres", "postgresql"):
        raise ValueError("the DSN must be a postgresql:// URL")
    if "," in parts.netloc:
        raise ValueError("a DSN with several hosts is not supported")
    return parts.hostname or "localhost", port or DEFAULT_POSTGRES_PORT


@asynccontextmanager
async def read_only_session(
    dsn: str,
    timeout_seconds: float,
    *,
    address: str | None = None,
    port: int | None = None,
    allow_superuser: bool = False,
) -> AsyncIterator[asyncpg.Connection]:
    """A read-only connection (server setting ``default_transaction_read_only``) inside a read-only
    transaction whose statements time out; rolled back at the end. ``address``/``port``: where to connect
    (the egress-checked address of the DSN's host). A superuser login is refused unless ``allow_superuser``."""
    timeout_ms = str(int(timeout_seconds * 1000))
    connection = await asyncpg.connect(
        dsn=normalise_dsn(dsn),
        host=address,
        port=port,
        timeout=timeout_seconds,
        # The server's statement_timeout should fire first: its error names the statement.
        command_timeout=timeout_seconds + 1,
        statement_cache_size=0,  # one-shot session; also keeps it usable behind transaction-pooling proxies
        server_settings={
            "application_name": APPLICATION_NAME,
            "default_transaction_read_only": "on",
            "statement_timeout": timeout_ms,
            "lock_timeout": timeout_ms,
            "idle_in_transaction_session_timeout": str(int(timeout_seconds * 4000)),
        },
    )
    try:
        # The server's own flag, not a pg_roles lookup: a scan of pg_roles fails ("invalid role OID") when
        # another session drops a role meanwhile.
        superuser = await connection.fetchval("SELECT current_setting('is_superuser')::boolean")
        if superuser and not allow_superuser:
            raise SuperuserRefused(str(await connection.fetchval("SELECT current_user")))
        transaction = connection.transaction(readonly=True)
        await transaction.start()
        await connection.execute(
            "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $1, true)", timeout_ms
        )
        try:
            yield connection
        finally:
            await transaction.rollback()
    except BaseException:
        # Cancelled or failed mid-conversation: do not wait on a polite close.
        connection.terminate()
        raise
    await connection.close(timeout=timeout_seconds)


async def _server(connection: asyncpg.Connection, _: PostgresDiagnosticsArgs) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        SELECT current_setting('server_version') AS version,
               pg_is_in_recovery() AS in_recovery,
               current_database() AS database,
               current_user AS "user",
               EXTRACT(EPOCH FROM clock_timestamp() - pg_postmaster_start_time())::float8 AS uptime_seconds,
               pg_database_size(current_database()) AS size_bytes,
               pg_size_pretty(pg_database_size(current_database())) AS size
        """
    )
    return {
        "server_version": row["version"],
        "role": "replica" if row["in_recovery"] else "primary",
        "database": row["database"],
        "user": row["user"],
        "uptime_seconds": round(row["uptime_seconds"], 1),
        "database_size_bytes": row["size_bytes"],
        "database_size": row["size"],
    }


async def _connections(connection: asyncpg.Connection, _: PostgresDiagnosticsArgs) -> dict[str, Any]:
    rows = await connection.fetch(
        """
        SELECT coalesce(state, 'unknown') AS state, count(*)::int AS count
        FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC
        """
    )
    limits = await connection.fetchrow(
        """
        SELECT current_setting('max_connections')::int AS max_connections,
               current_setting('superuser_reserved_connections')::int AS reserved
        """
    )
    total = sum(row["count"] for row in rows)
    max_connections = limits["max_connections"]
    return {
        "connections": {
            "total": total,
            "max_connections": max_connections,
            "superuser_reserved": limits["reserved"],
            "usage_percent": round(100 * total / max_connections, 1) if max_connections else None,
            "by_state": {row["state"]: row["count"] for row in rows},
        }
    }


async def _long_running(connection: asyncpg.Connection, args: PostgresDiagnosticsArgs) -> dict[str, Any]:
    rows = await connection.fetch(
        """
        SELECT pid, usename, datname, state, wait_event_type, wait_event,
               EXTRACT(EPOCH FROM clock_timestamp() - query_start)::float8 AS seconds,
               left(query, $2) AS query
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND state IS DISTINCT FROM 'idle' AND pid <> pg_backend_pid()
          AND query_start < clock_timestamp() - make_interval(secs => $1)
        ORDER BY query_start
        LIMIT $3
        """,
        args.long_running_seconds,
        args.query_chars,
        args.max_queries,
    )
    return {
        "long_running_queries": [
            {
                "pid": row["pid"],
                "user": row["usename"],
                "database": row["datname"],
                "state": row["state"],
                "duration_seconds": round(row["seconds"], 2),
                "wait_event": _wait_event(row["wait_event_type"], row["wait_event"]),
                "query": shorten(row["query"] or "", args.query_chars),
            }
            for row in rows
        ]
    }


async def _long_transactions(connection: asyncpg.Connection, args: PostgresDiagnosticsArgs) -> dict[str, Any]:
    rows = await connection.fetch(
        """
        SELECT pid, usename, state, EXTRACT(EPOCH FROM clock_timestamp() - xact_start)::float8 AS seconds,
               left(query, $2) AS query
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND xact_start < clock_timestamp() - make_interval(secs => $1)
        ORDER BY xact_start
        LIMIT $3
        """,
        args.long_running_seconds,
        args.query_chars,
        args.max_queries,
    )
    return {
        "long_transactions": [
            {
                "pid": row["pid"],
                "user": row["usename"],
                "state": row["state"],
                "transaction_seconds": round(row["seconds"], 2),
                "query": shorten(row["query"] or "", args.query_chars),
            }
            for row in rows
        ]
    }


async def _lock_waits(connection: asyncpg.Connection, args: PostgresDiagnosticsArgs) -> dict[str, Any]:
    rows = await connection.fetch(
        """
        SELECT pid, usename, wait_event_type, wait_event, pg_blocking_pids(pid) AS blocked_by,
               EXTRACT(EPOCH FROM clock_timestamp() - query_start)::float8 AS seconds,
               left(query, $1) AS query
        FROM pg_stat_activity
        WHERE cardinality(pg_blocking_pids(pid)) > 0
        ORDER BY query_start
        LIMIT $2
        """,
        args.query_chars,
        args.max_queries,
    )
    blocking_pids = sorted({pid for row in rows for pid in row["blocked_by"]})
    blockers = await connection.fetch(
        """
        SELECT pid, usename, state, EXTRACT(EPOCH FROM clock_timestamp() - xact_start)::float8 AS xact_seconds,
               left(query, $2) AS query
        FROM pg_stat_activity WHERE pid = ANY($1::int[])
        """,
        blocking_pids,
        args.query_chars,
    )
    return {
        "lock_waits": [
            {
                "pid": row["pid"],
                "user": row["usename"],
                "blocked_by": list(row["blocked_by"]),
                "waiting_seconds": round(row["seconds"] or 0.0, 2),
                "wait_event": _wait_event(row["wait_event_type"], row["wait_event"]),
                "query": shorten(row["query"] or "", args.query_chars),
            }
            for row in rows
        ],
        "blocking_sessions": [
            {
                "pid": row["pid"],
                "user": row["usename"],
                "state": row["state"],
                "transaction_seconds": round(row["xact_seconds"], 2) if row["xact_seconds"] is not None else None,
                "query": shorten(row["query"] or "", args.query_chars),
            }
            for row in blockers
        ],
    }


async def _replication(connection: asyncpg.Connection, _: PostgresDiagnosticsArgs) -> dict[str, Any]:
    if await connection.fetchval("SELECT pg_is_in_recovery()"):
        row = await connection.fetchrow(
            """
            SELECT EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8 AS lag_seconds,
                   pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::float8 AS replay_bytes,
                   pg_is_wal_replay_paused() AS paused
            """
        )
        return {
            "replication": {
                "role": "replica",
                "replay_lag_seconds": round(row["lag_seconds"], 2) if row["lag_seconds"] is not None else None,
                "received_not_replayed_bytes": row["replay_bytes"],
                "replay_paused": row["paused"],
            }
        }
    rows = await connection.fetch(
        """
        SELECT application_name, client_addr::text AS client, state, sync_state,
               EXTRACT(EPOCH FROM write_lag)::float8 AS write_lag,
               EXTRACT(EPOCH FROM flush_lag)::float8 AS flush_lag,
               EXTRACT(EPOCH FROM replay_lag)::float8 AS replay_lag,
               pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 AS replay_lag_bytes
        FROM pg_stat_replication ORDER BY application_name
        """
    )
    return {"replication": {"role": "primary", "replicas": [dict(row) for row in rows]}}


async def _activity(connection: asyncpg.Connection, _: PostgresDiagnosticsArgs) -> dict[str, Any]:
    row = await connection.fetchrow(
        """
        SELECT xact_commit, xact_rollback, deadlocks, temp_bytes, blks_hit, blks_read, conflicts
        FROM pg_stat_database WHERE datname = current_database()
        """
    )
    if row is None:
        return {}
    reads = row["blks_hit"] + row["blks_read"]
    return {
        "database_stats": {
            "commits": row["xact_commit"],
            "rollbacks": row["xact_rollback"],
            "deadlocks": row["deadlocks"],
            "temp_bytes": row["temp_bytes"],
            "recovery_conflicts": row["conflicts"],
            "cache_hit_ratio": round(row["blks_hit"] / reads, 4) if reads else None,
        }
    }


def _wait_event(kind: str | None, name: str | None) -> str | None:
    return f"{kind}:{name}" if kind and name else kind or name


Section = Callable[[asyncpg.Connection, PostgresDiagnosticsArgs], Awaitable[dict[str, Any]]]
SECTIONS: tuple[tuple[str, Section], ...] = (
    ("server", _server),
    ("connections", _connections),
    ("long_running_queries", _long_running),
    ("long_transactions", _long_transactions),
    ("lock_waits", _lock_waits),
    ("replication", _replication),
    ("database_stats", _activity),
)


async def postgres_diagnostics(args: PostgresDiagnosticsArgs, context: ToolContext) -> dict[str, Any]:
    dsn = secret_target(context, DSN_ATTRIBUTE, "PostgreSQL DSN")
    try:
        host, port = dsn_target(dsn)
    except ValueError as exc:
        raise ToolError(TOOL_INVALID_TARGET, f"node attribute {DSN_ATTRIBUTE!r}: {describe_exception(exc)}") from None
    limits = thresholds(context, "postgres_diagnostics", POSTGRES_THRESHOLDS)
    findings = Findings()
    where = f"{host}:{port}"
    started = time.perf_counter()
    report: dict[str, Any] = {}
    section_errors: dict[str, str] = {}
    allow_superuser = bool(context.settings.get(SETTING_ALLOW_SUPERUSER))
    try:
        address = await egress_address(context, host, port)
        session = read_only_session(
            dsn, args.timeout_seconds, address=address, port=port, allow_superuser=allow_superuser
        )
        async with session as connection:
            report["connected"] = True
            report["round_trip_ms"] = await best_round_trip_ms(lambda: connection.fetchval("SELECT 1"))
            for name, section in SECTIONS:
                try:
                    async with connection.transaction():  # a savepoint: a refused section leaves the rest usable
                        report.update(await section(connection, args))
                except asyncpg.PostgresError as exc:
                    section_errors[name] = describe_exception(exc)
    except SuperuserRefused as exc:
        raise ToolError(
            DIAGNOSTICS_SUPERUSER_REFUSED,
            f"the DSN logs in as superuser {exc}; diagnostics run with a least-privileged role "
            "(grant it pg_monitor) unless AIOPS_DIAGNOSTICS_ALLOW_SUPERUSER=true",
        ) from None
    except ValueError as exc:  # asyncpg's DSN parsing (ClientConfigurationError is a ValueError too)
        if report.get("connected"):
            raise
        raise ToolError(TOOL_INVALID_TARGET, f"node attribute {DSN_ATTRIBUTE!r}: {describe_exception(exc)}") from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if report.get("connected"):
            raise
        judge_failure(exc, where, args.timeout_seconds, findings)
        failure = {
            "connected": False,
            # A PostgreSQL error means the server answered (e.g. refused the login); a socket error that it did not.
            "reachable": isinstance(exc, asyncpg.PostgresError),
            "error": describe_exception(exc),
        }
        return judged({**failure, "latency_ms": elapsed_ms(started)}, findings)
    if section_errors:
        report["section_errors"] = section_errors
    report["latency_ms"] = elapsed_ms(started)
    judge_report(report, limits, findings)
    return judged(report, findings)


POSTGRES_DIAGNOSTICS = ToolSpec(
    name="postgres_diagnostics",
    description="Read-only PostgreSQL health: version, role, connections vs max_connections, long-running "
    "queries and transactions, lock waits (who blocks whom), replication lag, database size and cache hit ratio.",
    args_schema=PostgresDiagnosticsArgs,
    run=postgres_diagnostics,
    timeout_seconds=30.0,
    attribute_keys=(DSN_ATTRIBUTE,),
    thresholds=POSTGRES_THRESHOLDS,
)
