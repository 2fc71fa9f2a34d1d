"""tcp_check, dns_lookup and tls_certificate against real local sockets and a self-signed TLS server."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiops_executor.core import egress, egress_lookup
from aiops_executor.tools.builtin import default_registry, tls
from aiops_executor.tools.registry import SETTING_EGRESS_POLICY, ToolContext, ToolOutcome

CERT_VALID_DAYS = 10


async def invoke(name: str, arguments: dict[str, Any], **attributes: Any) -> ToolOutcome:
    return await default_registry().invoke(name, arguments, ToolContext(node_id="n", attributes=attributes))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.fixture
async def open_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_hang_up, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


# ------------------------------------------------------------------------------------------------- tcp_check


async def test_tcp_check_open_port_from_attributes(open_port: int) -> None:
    outcome = await invoke("tcp_check", {}, host="127.0.0.1", port=str(open_port))
    assert outcome.status == "success"
    assert outcome.output["reachable"] is True
    assert outcome.output["port"] == open_port
    assert outcome.output["address"] == "127.0.0.1"
    assert outcome.output["latency_ms"] >= 0
    assert outcome.verdict == "ok" and outcome.signals[0].startswith(f"127.0.0.1:{open_port} connected in ")


async def test_tcp_check_closed_port_is_a_finding() -> None:
    outcome = await invoke("tcp_check", {"host": "127.0.0.1", "port": closed_port()})
    assert outcome.status == "success"
    assert outcome.output["reachable"] is False
    assert outcome.output["error"].startswith("ConnectionRefusedError")
    assert outcome.verdict == "failed" and outcome.signals[0].endswith(": connection refused")


async def test_tcp_check_reads_host_and_port_from_a_url_attribute(open_port: int) -> None:
    outcome = await invoke("tcp_check", {}, url=f"http://127.0.0.1:{open_port}/health")
    assert (outcome.output["host"], outcome.output["port"], outcome.output["reachable"]) == (
        "127.0.0.1",
        open_port,
        True,
    )
    from_dsn = await invoke("tcp_check", {}, postgres_dsn="postgresql://u:pw@127.0.0.1/db")
    assert from_dsn.output["port"] == 5432


async def test_tcp_check_missing_or_invalid_target() -> None:
    missing = await invoke("tcp_check", {}, host="127.0.0.1")
    assert missing.output["error_code"] == "TOOL_MISSING_TARGET"
    # Nothing was observed of the target: the node's configuration is ours to fix.
    assert missing.verdict == "unknown" and missing.signals[0].startswith("TOOL_MISSING_TARGET: ")
    invalid = await invoke("tcp_check", {}, host="127.0.0.1", port="http")
    assert invalid.output["error_code"] == "TOOL_INVALID_TARGET"
    assert invalid.output["errors"][0]["field"] == "port"
    out_of_range = await invoke("tcp_check", {"host": "127.0.0.1", "port": 70000})
    assert out_of_range.output["error_code"] == "TOOL_INVALID_ARGUMENTS"


# ------------------------------------------------------------------------------------------------ dns_lookup


async def test_dns_lookup_localhost() -> None:
    outcome = await invoke("dns_lookup", {"hostname": "localhost", "family": "ipv4"})
    assert outcome.status == "success"
    assert outcome.output["resolved"] is True
    assert "127.0.0.1" in outcome.output["ipv4"]
    assert outcome.output["ipv6"] == []
    assert outcome.verdict == "ok"


async def test_dns_lookup_from_host_attribute_and_ip_literal() -> None:
    outcome = await invoke("dns_lookup", {}, host="127.0.0.1")
    assert outcome.output["hostname"] == "127.0.0.1"
    assert outcome.output["addresses"] == ["127.0.0.1"]


def lookups_sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names the event loop is asked to resolve from now on."""
    sent: list[str] = []
    original = asyncio.BaseEventLoop.getaddrinfo

    async def recording(self: asyncio.BaseEventLoop, host: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(host))
        return await original(self, host, *args, **kwargs)

    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", recording)
    return sent


async def lookup_under(policy: egress.EgressPolicy, hostname: str) -> ToolOutcome:
    context = ToolContext(settings={SETTING_EGRESS_POLICY: policy})
    return await default_registry().invoke("dns_lookup", {"hostname": hostname}, context)


async def test_dns_lookup_under_a_deny_all_policy_sends_no_query(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = lookups_sent(monkeypatch)
    deny_all = egress.EgressPolicy(deny=egress.parse_rules("0.0.0.0/0,::/0", "test"))
    outcome = await lookup_under(deny_all, "localhost")
    assert outcome.status == "error" and outcome.output["error_code"] == "EGRESS_DENIED"
    assert outcome.verdict == "unknown" and not outcome.observed
    assert sent == []


async def test_dns_lookup_checks_the_name_and_the_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = lookups_sent(monkeypatch)
    by_name = egress.EgressPolicy(deny=egress.parse_rules("*.corp.test", "test"))
    assert (await lookup_under(by_name, "db.corp.test")).output["error_code"] == "EGRESS_DENIED"
    monkeypatch.setattr(egress_lookup, "system_nameservers", lambda: ["192.0.2.53"])
    resolver_denied = egress.EgressPolicy(deny=egress.parse_rules("192.0.2.53:53", "test"))
    denied = await lookup_under(resolver_denied, "localhost")
    assert denied.output["error_code"] == "EGRESS_DENIED" and "192.0.2.53" in denied.output["error_message"]
    assert sent == []
    # A resolver the policy allows is asked.
    allowed = await lookup_under(egress.EgressPolicy(deny=egress.parse_rules("192.0.2.99:53", "test")), "localhost")
    assert allowed.output["resolved"] is True and sent == ["localhost"]


def test_the_system_resolvers_name_servers_are_read_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# comment\nsearch corp.test\nnameserver 10.0.0.53\nnameserver fd00::53\nnameserver bogus\n")
    assert egress_lookup.system_nameservers(str(conf)) == ["10.0.0.53", "fd00::53"]
    assert egress_lookup.system_nameservers(str(tmp_path / "missing")) == ["127.0.0.1"]


async def test_dns_lookup_unknown_name_is_a_finding() -> None:
    outcome = await invoke("dns_lookup", {"hostname": "no-such-host.invalid", "timeout_seconds": 3})
    assert outcome.status == "success"
    assert outcome.output["resolved"] is False
    assert outcome.output["error"]
    assert outcome.verdict == "failed" and outcome.signals == ["no-such-host.invalid does not resolve"]


# ------------------------------------------------------------------------------------------- tls_certificate


@dataclass(frozen=True)
class TlsServer:
    port: int
    cert_file: Path
    not_after: datetime


def _self_signed(directory: Path) -> tuple[Path, Path, datetime]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "localhost"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "aiops")]
    )
    now = datetime.now(UTC).replace(microsecond=0)
    not_after = now + timedelta(days=CERT_VALID_DAYS, hours=12)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0xA10B5)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, not_after


async def _serve_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):  # the prober may hang up mid-handshake
        await reader.read(1)
    writer.close()


@pytest.fixture(scope="module")
async def tls_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsServer]:
    cert_file, key_file, not_after = _self_signed(tmp_path_factory.mktemp("tls"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server = await asyncio.start_server(_serve_tls, "127.0.0.1", 0, ssl=context)
    yield TlsServer(server.sockets[0].getsockname()[1], cert_file, not_after)
    server.close()
    await server.wait_closed()


async def test_tls_self_signed_is_read_and_reported_unverified(tls_server: TlsServer) -> None:
    outcome = await invoke("tls_certificate", {}, host="127.0.0.1", port=tls_server.port)
    assert outcome.status == "success", outcome.output
    out = outcome.output
    assert out["reachable"] is True and out["tls"] is True
    assert out["verified"] is False
    assert "self-signed" in out["verify_error"] or "self signed" in out["verify_error"]
    assert out["protocol"] in ("TLSv1.2", "TLSv1.3")
    cert = out["certificate"]
    assert cert["common_name"] == "localhost"
    assert cert["subject"] == "O=aiops,CN=localhost"
    assert cert["issuer"] == cert["subject"] and cert["self_signed"] is True
    assert cert["subject_alt_names"] == ["localhost", "127.0.0.1"]
    assert cert["serial_number"] == "a10b5"
    assert cert["not_after"] == tls_server.not_after.isoformat()
    assert cert["days_until_expiry"] == CERT_VALID_DAYS
    assert cert["expired"] is False
    assert cert["signature_hash"] == "sha256"
    assert outcome.verdict == "failed" and outcome.signals[0].startswith("certificate does not verify: ")


async def test_tls_verified_against_a_trusted_issuer(tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def trusting() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(tls_server.cert_file))

    monkeypatch.setattr(tls, "verifying_context", trusting)
    good = await invoke("tls_certificate", {"host": "127.0.0.1", "port": tls_server.port, "server_name": "localhost"})
    assert good.output["verified"] is True
    assert "verify_error" not in good.output
    # Expiry against the thresholds: within the default 14 days it is degraded; the node may say otherwise.
    assert good.verdict == "degraded" and good.signals == [f"certificate expires in {CERT_VALID_DAYS} days"]
    target = {"host": "127.0.0.1", "port": tls_server.port, "server_name": "localhost"}
    relaxed = await invoke("tls_certificate", target, thresholds={"tls_certificate": {"expiry_degraded_days": 5}})
    assert relaxed.verdict == "ok" and relaxed.signals == [f"certificate valid for {CERT_VALID_DAYS} more days"]
    soon = {"tls_certificate": {"expiry_failed_days": CERT_VALID_DAYS + 1}}
    assert (await invoke("tls_certificate", target, thresholds=soon)).verdict == "failed"

    wrong_name = await invoke(
        "tls_certificate", {"host": "127.0.0.1", "port": tls_server.port, "server_name": "api.example.com"}
    )
    assert wrong_name.output["verified"] is False
    assert "mismatch" in wrong_name.output["verify_error"].lower()
    assert wrong_name.output["certificate"]["common_name"] == "localhost"


async def test_tls_host_and_port_from_an_https_url_attribute(tls_server: TlsServer) -> None:
    outcome = await invoke("tls_certificate", {}, url=f"https://127.0.0.1:{tls_server.port}/")
    assert outcome.output["port"] == tls_server.port
    assert outcome.output["certificate"]["common_name"] == "localhost"


async def test_tls_against_a_plain_tcp_service_is_a_finding(open_port: int) -> None:
    outcome = await invoke("tls_certificate", {"host": "127.0.0.1", "port": open_port, "timeout_seconds": 2})
    assert outcome.status == "success"
    assert outcome.output["reachable"] is True and outcome.output["tls"] is False
    assert outcome.output["error"].startswith("TLS handshake failed")
    assert outcome.verdict == "failed"


async def test_tls_closed_port_is_a_finding() -> None:
    outcome = await invoke("tls_certificate", {"host": "127.0.0.1", "port": closed_port()})
    assert outcome.status == "success"
    assert outcome.output["reachable"] is False
    assert outcome.verdict == "failed" and "unreachable" in outcome.signals[0]


def test_describe_certificate_expired(tmp_path: Path) -> None:
    cert_file, _, not_after = _self_signed(tmp_path)
    der = x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)
    later = not_after + timedelta(days=3)
    described = tls.describe_certificate(der, now=later)
    assert described["expired"] is True
    assert described["days_until_expiry"] == -3
