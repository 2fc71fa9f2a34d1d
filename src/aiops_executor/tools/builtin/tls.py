"""``tls_certificate``: the certificate a TLS server presents, its validity window and whether it verifies.

Attributes read when the arguments are omitted: ``host`` (or ``hostname``) and ``port``, else the host and
port of the node's ``url``; the port defaults to 443.

Verdicts: failed when the server cannot be reached, no TLS session is set up, the certificate does not verify,
has expired or is not yet valid, or expires within ``expiry_failed_days`` (default 3); degraded when it expires
within ``expiry_degraded_days`` (default 14).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field

from aiops_executor.tools.builtin._common import (
    HOSTNAME_PATTERN,
    egress_address,
    elapsed_ms,
    fill_from_attributes,
    host_port_from_url_attributes,
    missing_target,
    thresholds,
)
from aiops_executor.tools.registry import ToolContext, ToolSpec, describe_exception
from aiops_executor.tools.verdicts import Findings, judged

DEFAULT_TLS_PORT = 443
CLOSE_TIMEOUT_SECONDS = 1.0
MAX_SANS = 50
TLS_THRESHOLDS = {"expiry_degraded_days": 14.0, "expiry_failed_days": 3.0}


class TlsCertificateArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=HOSTNAME_PATTERN,
        description="Host name or IP to connect to. Omit to use the node's 'host'/'hostname' attribute "
        "(or the host of its 'url').",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="TLS port. Omit to use the node's 'port' attribute, else 443."
    )
    server_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=HOSTNAME_PATTERN,
        description="Name to send as SNI and to verify the certificate against (default: host).",
    )
    timeout_seconds: float = Field(default=5.0, gt=0, le=15, description="Connect and handshake timeout in seconds.")


def verifying_context() -> ssl.SSLContext:
    """The trust store certificates are verified against (the system's)."""
    return ssl.create_default_context()


def _reading_context() -> ssl.SSLContext:
    # Only ever used after verification has failed and been reported, to still read the certificate.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class _Handshake:
    der: bytes | None
    protocol: str | None
    cipher: str | None


class _Unreachable(Exception):
    """The TCP connection itself failed; anything after it is a TLS problem of a reachable server."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await writer.wait_closed()


async def _handshake(
    host: str, port: int, server_name: str, context: ssl.SSLContext, timeout_seconds: float
) -> _Handshake:
    try:
        async with asyncio.timeout(timeout_seconds):
            _, writer = await asyncio.open_connection(host, port)
    except OSError as exc:  # TimeoutError included
        raise _Unreachable(exc) from None
    try:
        async with asyncio.timeout(timeout_seconds):
            await writer.start_tls(context, server_hostname=server_name)
        tls: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        if tls is None:
            return _Handshake(None, None, None)
        cipher = tls.cipher()
        return _Handshake(tls.getpeercert(binary_form=True), tls.version(), cipher[0] if cipher else None)
    finally:
        await _close(writer)


def _names(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(oid)]


def describe_certificate(der: bytes, now: datetime | None = None) -> dict[str, Any]:
    certificate = x509.load_der_x509_certificate(der)
    now = now or datetime.now(UTC)
    not_after = certificate.not_valid_after_utc
    not_before = certificate.not_valid_before_utc
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in san.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    hash_algorithm = certificate.signature_hash_algorithm
    return {
        "subject": certificate.subject.rfc4514_string(),
        "common_name": next(iter(_names(certificate.subject, NameOID.COMMON_NAME)), None),
        "issuer": certificate.issuer.rfc4514_string(),
        "serial_number": format(certificate.serial_number, "x"),
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "days_until_expiry": (not_after - now).days,
        "expired": not_after <= now,
        "not_yet_valid": not_before > now,
        "self_signed": certificate.subject == certificate.issuer,
        "subject_alt_names": sans[:MAX_SANS],
        "signature_hash": hash_algorithm.name if hash_algorithm else None,
    }


async def tls_certificate(args: TlsCertificateArgs, context: ToolContext) -> dict[str, Any]:
    args = fill_from_attributes(args, context, {"host": ("host", "hostname"), "port": ("port",)})
    host, port = args.host, args.port
    if host is None:
        derived = host_port_from_url_attributes(context)
        if derived is not None:
            host, port = derived[0], port or derived[1]
    if host is None:
        raise missing_target("host", ["host", "hostname", "url"])
    port = port or DEFAULT_TLS_PORT
    server_name = args.server_name or host
    limits = thresholds(context, "tls_certificate", TLS_THRESHOLDS)
    report: dict[str, Any] = {"host": host, "port": port, "server_name": server_name}
    findings = Findings()
    started = time.perf_counter()
    verify_error: str | None = None
    try:
        try:
            async with asyncio.timeout(args.timeout_seconds):
                address = await egress_address(context, host, port)
        except OSError as exc:  # the name does not resolve (TimeoutError included)
            raise _Unreachable(exc) from None
        try:
            handshake = await _handshake(address, port, server_name, verifying_context(), args.timeout_seconds)
        except ssl.SSLCertVerificationError as exc:
            verify_error = exc.verify_message or describe_exception(exc)
            handshake = await _handshake(address, port, server_name, _reading_context(), args.timeout_seconds)
    except _Unreachable as exc:
        error = f"connect timed out after {args.timeout_seconds:g} s" if isinstance(exc.cause, TimeoutError) else None
        error = error or describe_exception(exc.cause)
        findings.failed(f"{host}:{port} unreachable: {error}")
        return judged({**report, "reachable": False, "error": error, "latency_ms": elapsed_ms(started)}, findings)
    except OSError as exc:  # reached the port, no TLS session: plain-text service, protocol mismatch, reset, slow
        failure = f"timed out after {args.timeout_seconds:g} s" if isinstance(exc, TimeoutError) else None
        error = f"TLS handshake failed: {failure or describe_exception(exc)}"
        findings.failed(f"{host}:{port}: {error}")
        report.update(reachable=True, tls=False, error=error, latency_ms=elapsed_ms(started))
        return judged(report, findings)
    report.update(
        {
            "reachable": True,
            "tls": True,
            "verified": verify_error is None,
            "protocol": handshake.protocol,
            "cipher": handshake.cipher,
            "latency_ms": elapsed_ms(started),
        }
    )
    if verify_error is not None:
        report["verify_error"] = verify_error
        findings.failed(f"certificate does not verify: {verify_error}")
    if handshake.der:
        certificate = describe_certificate(handshake.der)
        report["certificate"] = certificate
        _judge_validity(certificate, limits, findings)
    else:
        findings.failed(f"{host}:{port} presented no certificate")
    return judged(report, findings)


def _judge_validity(certificate: dict[str, Any], limits: dict[str, float], findings: Findings) -> None:
    days = certificate["days_until_expiry"]
    if certificate["expired"]:
        findings.failed(f"certificate expired on {certificate['not_after'][:10]}")
    elif certificate["not_yet_valid"]:
        findings.failed(f"certificate is not valid before {certificate['not_before'][:10]}")
    elif days < limits["expiry_failed_days"]:
        findings.failed(f"certificate expires in {days} days")
    elif days < limits["expiry_degraded_days"]:
        findings.degraded(f"certificate expires in {days} days")
    else:
        findings.ok(f"certificate valid for {days} more days")


TLS_CERTIFICATE = ToolSpec(
    name="tls_certificate",
    description="Read the TLS certificate a server presents: subject, issuer, SANs, validity dates, "
    "days until expiry, protocol, and whether it verifies.",
    args_schema=TlsCertificateArgs,
    run=tls_certificate,
    timeout_seconds=20.0,
    attribute_keys=("host", "hostname", "port", "url"),
    thresholds=TLS_THRESHOLDS,
)
