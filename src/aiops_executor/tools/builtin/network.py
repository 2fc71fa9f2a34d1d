"""``tcp_check`` and ``dns_lookup``: can this process reach a host and port, and what does a name resolve to.

Attributes read when the arguments are omitted: ``tcp_check`` -- ``host``, ``port``, else the host and port
of ``url`` / ``postgres_dsn`` / ``redis_url``; ``dns_lookup`` -- ``hostname``, ``host``, else the host of
those URLs.

Verdicts: ``tcp_check`` is failed when the connection is refused, times out or the name does not resolve,
degraded when connecting took ``connect_degraded_ms`` (default 500) or more. ``dns_lookup`` is failed when the
name does not resolve or the lookup times out, degraded when it took ``lookup_degraded_ms`` (default 1000). A
lookup is checked against the egress policy before it is sent: the name against rules on names, and the system
resolver's name servers (port 53) against rules on addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aiops_executor.core.egress import EgressDenied
from aiops_executor.core.egress_lookup import authorize_lookup
from aiops_executor.tools.builtin._common import (
    HOSTNAME_PATTERN,
    egress_address,
    egress_denied,
    egress_policy,
    elapsed_ms,
    fill_from_attributes,
    host_port_from_url_attributes,
    missing_target,
    thresholds,
)
from aiops_executor.tools.registry import ToolContext, ToolSpec, describe_exception
from aiops_executor.tools.verdicts import Findings, judged

CLOSE_TIMEOUT_SECONDS = 1.0
TCP_THRESHOLDS = {"connect_degraded_ms": 500.0}
DNS_THRESHOLDS = {"lookup_degraded_ms": 1000.0}


class TcpCheckArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=HOSTNAME_PATTERN,
        description="Host name or IP address. Omit to use the node's 'host' attribute (or the host of its 'url').",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="TCP port. Omit to use the node's 'port' attribute."
    )
    timeout_seconds: float = Field(default=3.0, gt=0, le=10, description="Connect timeout in seconds.")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await writer.wait_closed()


async def tcp_check(args: TcpCheckArgs, context: ToolContext) -> dict[str, Any]:
    args = fill_from_attributes(args, context, {"host": ("host",), "port": ("port",)})
    host, port = args.host, args.port
    if host is None or port is None:
        derived = host_port_from_url_attributes(context)
        if derived is not None and host in (None, derived[0]):
            host, port = derived[0], port or derived[1]
    if host is None:
        raise missing_target("host", ["host", "url"])
    if port is None:
        raise missing_target("port", ["port", "url"])
    limits = thresholds(context, "tcp_check", TCP_THRESHOLDS)
    report: dict[str, Any] = {"host": host, "port": port}
    findings = Findings()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(args.timeout_seconds):
            address = await egress_address(context, host, port)
            _, writer = await asyncio.open_connection(address, port)
    except TimeoutError:
        error = f"connect timed out after {args.timeout_seconds:g} s"
        findings.failed(f"{host}:{port}: {error}")
        return judged({**report, "reachable": False, "error": error, "latency_ms": elapsed_ms(started)}, findings)
    except OSError as exc:
        error = describe_exception(exc)
        findings.failed(f"{host}:{port}: {_connect_failure(exc)}")
        return judged({**report, "reachable": False, "error": error, "latency_ms": elapsed_ms(started)}, findings)
    latency_ms = elapsed_ms(started)
    peer = writer.get_extra_info("peername")
    await _close(writer)
    limit = limits["connect_degraded_ms"]
    findings.graded(latency_ms, limit, float("inf"), f"{host}:{port} connected in {latency_ms:g} ms (limit {limit:g})")
    report.update(reachable=True, latency_ms=latency_ms, address=peer[0] if peer else None)
    return judged(report, findings)


def _connect_failure(exc: OSError) -> str:
    """A connect error in a few words: what an operator would say, not the exception's class."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "the name does not resolve"
    return " ".join((exc.strerror or str(exc) or "connect failed").split())


class DnsLookupArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hostname: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=HOSTNAME_PATTERN,
        description="Name to resolve. Omit to use the node's 'hostname' or 'host' attribute "
        "(or the host of its 'url').",
    )
    family: Literal["any", "ipv4", "ipv6"] = Field(default="any", description="Address family: A, AAAA or both.")
    timeout_seconds: float = Field(default=5.0, gt=0, le=10, description="Give up after this many seconds.")


FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


async def dns_lookup(args: DnsLookupArgs, context: ToolContext) -> dict[str, Any]:
    args = fill_from_attributes(args, context, {"hostname": ("hostname", "host")})
    hostname = args.hostname
    if hostname is None:
        derived = host_port_from_url_attributes(context)
        hostname = derived[0] if derived else None
    if hostname is None:
        raise missing_target("hostname", ["hostname", "host", "url"])
    limits = thresholds(context, "dns_lookup", DNS_THRESHOLDS)
    report: dict[str, Any] = {"hostname": hostname, "family": args.family}
    findings = Findings()
    try:  # the lookup is traffic too: to the resolver, about this name
        await authorize_lookup(hostname, egress_policy(context))
    except EgressDenied as exc:
        raise egress_denied(exc) from None
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(args.timeout_seconds):
            infos = await loop.getaddrinfo(
                hostname, None, family=FAMILIES[args.family], type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME
            )
    except TimeoutError:
        error = f"lookup timed out after {args.timeout_seconds:g} s"
        findings.failed(f"{hostname}: {error}")
        return judged({**report, "resolved": False, "error": error, "latency_ms": elapsed_ms(started)}, findings)
    except OSError as exc:  # socket.gaierror: the name does not resolve
        findings.failed(f"{hostname} does not resolve")
        report.update(resolved=False, error=describe_exception(exc), latency_ms=elapsed_ms(started))
        return judged(report, findings)
    ipv4: list[str] = []
    ipv6: list[str] = []
    canonical_name = None
    for family, _, _, canonname, sockaddr in infos:
        canonical_name = canonical_name or canonname or None
        address = str(sockaddr[0])
        bucket = ipv6 if family == socket.AF_INET6 else ipv4
        if address not in bucket:
            bucket.append(address)
    latency_ms = elapsed_ms(started)
    if ipv4 or ipv6:
        limit = limits["lookup_degraded_ms"]
        signal = f"{hostname} resolved to {len(ipv4) + len(ipv6)} address(es) in {latency_ms:g} ms (limit {limit:g})"
        findings.graded(latency_ms, limit, float("inf"), signal)
    else:
        findings.failed(f"{hostname} resolved to no address")
    report.update(
        resolved=bool(ipv4 or ipv6),
        addresses=ipv4 + ipv6,
        ipv4=ipv4,
        ipv6=ipv6,
        canonical_name=canonical_name,
        latency_ms=latency_ms,
    )
    return judged(report, findings)


TCP_CHECK = ToolSpec(
    name="tcp_check",
    description="Open a TCP connection to host:port and report whether it is reachable and how long connecting took.",
    args_schema=TcpCheckArgs,
    run=tcp_check,
    timeout_seconds=15.0,
    attribute_keys=("host", "port", "url", "postgres_dsn", "redis_url"),
    thresholds=TCP_THRESHOLDS,
)

DNS_LOOKUP = ToolSpec(
    name="dns_lookup",
    description="Resolve a host name to its IPv4/IPv6 addresses and report the lookup latency.",
    args_schema=DnsLookupArgs,
    run=dns_lookup,
    timeout_seconds=15.0,
    attribute_keys=("hostname", "host", "url", "postgres_dsn", "redis_url"),
    thresholds=DNS_THRESHOLDS,
)
