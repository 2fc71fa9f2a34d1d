"""``redis_info``: health of a Redis server from ``INFO`` and ``SLOWLOG GET`` (read-only commands only).

Reads the node attribute ``redis_url`` (``redis://[:password@]host:6379/0``, ``rediss://`` for TLS). Like a
database DSN it may hold a password, so it is never an argument. The client refuses to send any command but
``INFO``, ``SLOWLOG GET``, ``PING`` and ``DBSIZE``; the server's address is checked against the egress policy
and (without TLS) connected to as checked.

Verdicts: failed when the server refuses the connection or does not answer ``INFO`` within the timeout (a Redis
that accepts TCP but answers nothing), when memory use reaches ``memory_failed_percent`` (default 98) of
``maxmemory`` or clients reach ``clients_failed_percent`` (default 95) of ``maxclients``, or when a replica's
link to its primary is down; degraded at ``memory_degraded_percent`` (90), ``clients_degraded_percent`` (80),
or when answering took ``latency_degraded_ms`` (500) or more. Credentials the server refuses are ``unknown``:
the node's ``redis_url`` is ours to fix, and nothing was learned about the server's health.
"""

from __future__ import annotations

import asyncio
import errno
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from redis import exceptions as redis_errors
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from aiops_executor.core.text import shorten
from aiops_executor.tools.builtin._common import (
    as_float,
    egress_address,
    egress_policy,
    elapsed_ms,
    secret_target,
    thresholds,
)
from aiops_executor.tools.registry import (
    EGRESS_DENIED,
    TOOL_INVALID_TARGET,
    ToolContext,
    ToolError,
    ToolSpec,
    describe_exception,
)
from aiops_executor.tools.verdicts import Findings, judged

URL_ATTRIBUTE = "redis_url"
DEFAULT_REDIS_PORT = 6379
# The only commands this tool sends (besides the connection handshake: HELLO/AUTH, CLIENT SETINFO, SELECT).
READ_COMMANDS = frozenset({"INFO", "SLOWLOG GET", "PING", "DBSIZE"})


class ReadOnlyRedis(Redis):
    """A client that refuses to send anything but the read commands above."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = " ".join(str(part) for part in args[:2]).upper() if args else ""
        command = str(args[0]).upper() if args else ""
        if command not in READ_COMMANDS and name not in READ_COMMANDS:
            raise redis_errors.RedisError(f"redis_info sends read commands only, not {command}")
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


MAX_KEYSPACE_DBS = 16
REDIS_THRESHOLDS = {
    "memory_degraded_percent": 90.0,
    "memory_failed_percent": 98.0,
    "clients_degraded_percent": 80.0,
    "clients_failed_percent": 95.0,
    "latency_degraded_ms": 500.0,
}

MEMORY_FIELDS = (
    "used_memory",
    "used_memory_human",
    "used_memory_rss_human",
    "used_memory_peak_human",
    "maxmemory",
    "maxmemory_human",
    "maxmemory_policy",
    "mem_fragmentation_ratio",
)
CLIENT_FIELDS = ("connected_clients", "blocked_clients", "maxclients", "rejected_connections")
STATS_FIELDS = (
    "instantaneous_ops_per_sec",
    "total_commands_processed",
    "keyspace_hits",
    "keyspace_misses",
    "evicted_keys",
    "expired_keys",
)
REPLICATION_FIELDS = ("role", "connected_slaves", "master_link_status", "master_last_io_seconds_ago")


class RedisInfoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slowlog_entries: int = Field(
        default=10, ge=0, le=128, description="How many of the latest SLOWLOG entries to list (0: none)."
    )
    command_chars: int = Field(
        default=120, ge=20, le=1000, description="Truncate slow-log command lines to this many characters."
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=15, description="Connect and command timeout in seconds.")


def _pick(info: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: info[name] for name in fields if name in info}


def summarise_info(info: dict[str, Any]) -> dict[str, Any]:
    memory = _pick(info, MEMORY_FIELDS)
    used, limit = as_float(info.get("used_memory")), as_float(info.get("maxmemory"))
    if used is not None and limit:
        memory["usage_percent"] = round(100 * used / limit, 1)
    stats = _pick(info, STATS_FIELDS)
    hits, misses = as_float(info.get("keyspace_hits")) or 0.0, as_float(info.get("keyspace_misses")) or 0.0
    stats["hit_ratio"] = round(hits / (hits + misses), 4) if hits + misses else None
    keyspace = {name: value for name, value in info.items() if name.startswith("db") and isinstance(value, dict)}
    return {
        "version": info.get("redis_version"),
        "mode": info.get("redis_mode"),
        "uptime_seconds": info.get("uptime_in_seconds"),
        "memory": memory,
        "clients": _pick(info, CLIENT_FIELDS),
        "stats": stats,
        "replication": _pick(info, REPLICATION_FIELDS),
        "keyspace": dict(sorted(keyspace.items())[:MAX_KEYSPACE_DBS]),
    }


def _slowlog_entry(entry: dict[str, Any], command_chars: int) -> dict[str, Any]:
    command = entry.get("command", "")
    if isinstance(command, bytes):
        command = command.decode("utf-8", errors="replace")
    started = entry.get("start_time")
    return {
        "id": entry.get("id"),
        "started_at": datetime.fromtimestamp(started, UTC).isoformat() if isinstance(started, int) else None,
        "duration_us": entry.get("duration"),
        "command": shorten(str(command), command_chars),
        "client_address": entry.get("client_address"),
    }


def _judge_failure(exc: Exception, where: str, timeout_seconds: float, findings: Findings) -> None:
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthorizationError):
        findings.unknown(f"{where} refused the credentials of the node's {URL_ATTRIBUTE}")
    elif isinstance(exc, redis_errors.TimeoutError | TimeoutError):
        connected = "connect" not in str(exc).lower()
        findings.failed(
            f"{where}: no answer to INFO within {timeout_seconds:g} s (TCP connection accepted)"
            if connected
            else f"{where}: connect timed out after {timeout_seconds:g} s"
        )
    elif isinstance(exc, redis_errors.ConnectionError | OSError):
        cause = exc.__cause__ or exc.__context__
        refused = isinstance(exc, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError)
        # redis-py words a refused connection "Error 111 connecting to ..." (the errno), with no cause kept.
        refused = refused or f"Error {errno.ECONNREFUSED} " in str(exc) or "refused" in str(exc).lower()
        findings.failed(f"{where}: connection refused" if refused else f"{where}: {describe_exception(exc)}")
    elif isinstance(exc, redis_errors.ResponseError):
        findings.failed(f"{where} answered INFO with an error: {describe_exception(exc)}")
    else:
        findings.unknown(f"{where}: {describe_exception(exc)}")


def _judge_info(summary: dict[str, Any], latency_ms: float, limits: dict[str, float], findings: Findings) -> None:
    memory_percent = summary["memory"].get("usage_percent")
    if memory_percent is not None:
        findings.graded(
            memory_percent,
            limits["memory_degraded_percent"],
            limits["memory_failed_percent"],
            f"memory {summary['memory'].get('used_memory_human')}/{summary['memory'].get('maxmemory_human')} "
            f"({memory_percent:g} % of maxmemory)",
        )
    clients = summary["clients"]
    connected, maximum = as_float(clients.get("connected_clients")), as_float(clients.get("maxclients"))
    if connected is not None and maximum:
        percent = round(100 * connected / maximum, 1)
        findings.graded(
            percent,
            limits["clients_degraded_percent"],
            limits["clients_failed_percent"],
            f"clients {connected:g}/{maximum:g} ({percent:g} %)",
        )
    replication = summary["replication"]
    if replication.get("role") == "slave" and replication.get("master_link_status") not in (None, "up"):
        findings.failed(f"replica's link to its primary is {replication.get('master_link_status')}")
    limit = limits["latency_degraded_ms"]
    findings.graded(latency_ms, limit, float("inf"), f"INFO answered in {latency_ms:g} ms (limit {limit:g})")


def _server_answered(exc: Exception) -> bool:
    """An error reply (e.g. authentication refused) means the server answered; a socket failure that it did not."""
    if isinstance(exc, redis_errors.AuthenticationError):
        return True
    return not isinstance(exc, OSError | redis_errors.ConnectionError | redis_errors.TimeoutError)


async def redis_info(args: RedisInfoArgs, context: ToolContext) -> dict[str, Any]:
    url = secret_target(context, URL_ATTRIBUTE, "Redis URL")
    try:
        options: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        raise ToolError(TOOL_INVALID_TARGET, f"node attribute {URL_ATTRIBUTE!r}: {describe_exception(exc)}") from None
    limits = thresholds(context, "redis_info", REDIS_THRESHOLDS)
    findings = Findings()
    where = str(options.get("path") or f"{options.get('host') or 'localhost'}:{options.get('port') or 6379}")
    started = time.perf_counter()
    if "path" in options:  # unix:// -- no network address the egress policy could check
        policy = egress_policy(context)
        if policy.deny or policy.allow:
            raise ToolError(
                EGRESS_DENIED, "egress denied: a unix socket Redis URL cannot be checked by the egress policy"
            )
    else:
        host, port = str(options.get("host") or "localhost"), int(options.get("port") or DEFAULT_REDIS_PORT)
        try:
            async with asyncio.timeout(args.timeout_seconds):
                address = await egress_address(context, host, port)
        except OSError as exc:  # the name does not resolve (TimeoutError included)
            findings.failed(f"{where}: the name does not resolve")
            unresolved = {"connected": False, "reachable": False, "error": describe_exception(exc)}
            return judged({**unresolved, "latency_ms": elapsed_ms(started)}, findings)
        # Connect to the checked address; over TLS the name stays, for certificate verification.
        if not url.lower().startswith("rediss://"):
            options["host"] = address
        options["port"] = port
    pool = ConnectionPool(
        **{
            **options,
            "socket_timeout": args.timeout_seconds,
            "socket_connect_timeout": args.timeout_seconds,
            "decode_responses": True,
            "retry": Retry(NoBackoff(), 0),  # one attempt: a diagnostic reports the failure, it does not hide it
        }
    )
    client = ReadOnlyRedis(connection_pool=pool)
    try:
        try:
            info = await client.info()
        except (redis_errors.RedisError, OSError) as exc:
            _judge_failure(exc, where, args.timeout_seconds, findings)
            failure = {"connected": False, "reachable": _server_answered(exc), "error": describe_exception(exc)}
            return judged({**failure, "latency_ms": elapsed_ms(started)}, findings)
        latency_ms = elapsed_ms(started)
        summary = summarise_info(info)
        _judge_info(summary, latency_ms, limits, findings)
        report: dict[str, Any] = {"connected": True, "latency_ms": latency_ms, **summary}
        if args.slowlog_entries:
            try:
                entries = await client.slowlog_get(args.slowlog_entries)
                report["slowlog"] = [_slowlog_entry(entry, args.command_chars) for entry in entries]
            except redis_errors.ResponseError as exc:  # e.g. an ACL that forbids SLOWLOG
                report["slowlog_error"] = describe_exception(exc)
        return judged(report, findings)
    finally:
        await client.aclose(close_connection_pool=True)


REDIS_INFO = ToolSpec(
    name="redis_info",
    description="Read-only Redis health: version, memory vs maxmemory, clients, ops/sec, keyspace hit ratio, "
    "keyspace and the latest slow-log entries.",
    args_schema=RedisInfoArgs,
    run=redis_info,
    timeout_seconds=20.0,
    attribute_keys=(URL_ATTRIBUTE,),
    thresholds=REDIS_THRESHOLDS,
)
