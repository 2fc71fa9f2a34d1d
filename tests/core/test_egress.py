"""Egress policy: rules, decisions, prod/dev defaults; tools and provider clients refused as configured,
pinned to the checked address, keys only to the endpoint's origin; endpoint base_url checks.

Real traffic goes only to servers these tests start on loopback. Denied addresses (link-local, metadata) are
never connected to: name resolution is stubbed and the connection layer records every attempt.
"""

from __future__ import annotations

import binascii
import json
import struct
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from aiops_executor.audit.models import AuditLog
from aiops_executor.core import egress
from aiops_executor.core.egress import EgressDenied, EgressPolicy, policy_for
from aiops_executor.core.egress_rules import EgressRuleError, parse_rule
from aiops_executor.core.settings import Settings
from aiops_executor.llm.adapters import adapter_for
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig
from aiops_executor.llm.runtime.errors import FailureKind
from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import SETTING_EGRESS_POLICY, ToolContext
from tests.conftest import make_settings
from tests.helpers import API, assert_error, make_provider

KEY = "sk-egress-test-key-0123456789"


def settings_of(**values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=Path("/tmp/aiops-egress-test"), **values)


def prod(**values: Any) -> EgressPolicy:
    return policy_for(settings_of(env="prod", **values))


def dev(**values: Any) -> EgressPolicy:
    return policy_for(settings_of(env="dev", **values))


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Stubbed name resolution: names map to the addresses given here; anything else does not resolve."""
    table: dict[str, list[str]] = {"localhost": ["127.0.0.1", "::1"]}

    async def fake(host: str, port: int | None) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    def fake_sync(host: str, port: int | None) -> list[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    monkeypatch.setattr(egress, "resolver", fake)
    monkeypatch.setattr(egress, "sync_resolver", fake_sync)
    return table


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host httpx's connection layer is asked to connect to (after the egress transport)."""
    attempts: list[str] = []
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def recording(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.host)
        return await original(self, request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", recording)
    return attempts


@pytest.fixture(autouse=True)
def _fresh_process_policy() -> Iterator[None]:
    egress.reset()
    yield
    egress.reset()


# ------------------------------------------------------------------------------------------ rules


def test_rule_parsing() -> None:
    assert parse_rule("10.0.0.0/8", "X").network is not None
    assert parse_rule("10.0.0.5:5432", "X").port == 5432
    assert parse_rule(":25", "X").port == 25 and parse_rule(":25", "X").network is None
    v6 = parse_rule("[fd00::1]:443", "X")
    assert str(v6.network) == "fd00::1/128" and v6.port == 443
    assert str(parse_rule("fe80::/10", "X").network) == "fe80::/10"
    assert str(parse_rule("::1", "X").network) == "::1/128"
    assert parse_rule("*.Internal", "X").host_pattern == "*.internal"
    assert parse_rule("db.example.com:5432", "X").port == 5432
    for bad in ("10.0.0.1:99999", "a b", "host:port", "[::1]x"):
        with pytest.raises(EgressRuleError):
            parse_rule(bad, "X")


def test_malformed_rules_stop_the_settings() -> None:
    with pytest.raises(ValueError, match="AIOPS_EGRESS_DENY"):
        settings_of(egress_deny="10.0.0.0/8, not a rule")


def test_decisions_cidr_host_port_v4_v6() -> None:
    policy = dev(egress_deny="10.0.0.0/8,*.internal,192.168.1.5:5432,:25,fd00::/8")
    assert not policy.decide("x", 80, ["10.1.2.3"]).allowed
    assert policy.decide("x", 80, ["11.1.2.3"]).allowed
    assert not policy.decide("db.internal", 80, ["11.1.2.3"]).allowed
    assert not policy.decide("x", 5432, ["192.168.1.5"]).allowed
    assert policy.decide("x", 5433, ["192.168.1.5"]).allowed
    assert not policy.decide("mail", 25, ["8.8.8.8"]).allowed
    assert not policy.decide("x", 443, ["fd12::1"]).allowed
    assert not policy.decide("x", 443, ["::ffff:10.0.0.1"]).allowed  # v4-mapped v6
    decision = policy.decide("x", 80, ["11.0.0.1", "10.0.0.1"])  # every address must pass
    assert not decision.allowed and decision.address == "10.0.0.1"
    assert decision.reason == "egress denied: 10.0.0.1 matches AIOPS_EGRESS_DENY rule 10.0.0.0/8"


def test_deny_wins_and_an_allow_list_denies_the_rest() -> None:
    policy = dev(egress_allow="10.0.0.0/8,api.example.com", egress_deny="10.0.0.5")
    assert policy.decide("x", 80, ["10.0.0.4"]).allowed
    assert not policy.decide("x", 80, ["10.0.0.5"]).allowed
    refused = policy.decide("x", 80, ["8.8.8.8"])
    assert not refused.allowed and "not allowed by AIOPS_EGRESS_ALLOW" in refused.reason
    assert policy.decide("api.example.com", 443, ["8.8.8.8"]).allowed
    # dev: this machine stays reachable even outside the allow list
    assert policy.decide("x", 5432, ["127.0.0.1"]).allowed


def test_prod_defaults_deny_link_local_metadata_and_the_service_itself() -> None:
    policy = prod(database_url="postgresql+asyncpg://svc@127.0.0.1:5432/aiops", redis_url="redis://cache.local:6380/0")
    denied = policy.decide("169.254.169.254", 80, ["169.254.169.254"])
    assert not denied.allowed
    assert (
        denied.reason == "egress denied: 169.254.169.254 matches AIOPS_EGRESS_DENY rule 169.254.0.0/16 (prod default)"
    )
    for address in ("fe80::1", "fd00:ec2::254", "100.100.100.200"):
        assert not policy.decide("x", 80, [address]).allowed, address
    assert not policy.decide("metadata.google.internal", 80, ["8.8.8.8"]).allowed
    assert not policy.decide("x", 5432, ["127.0.0.1"]).allowed  # the service's own database
    assert policy.decide("x", 5433, ["127.0.0.1"]).allowed
    assert not policy.decide("cache.local", 6380, ["10.9.9.9"]).allowed  # its own Redis, by name
    assert policy.decide("x", 443, ["8.8.8.8"]).allowed


async def test_prod_own_redis_by_name_is_denied_at_its_addresses(resolve: dict[str, list[str]]) -> None:
    resolve["cache.local"] = ["10.9.9.9"]
    policy = prod(redis_url="redis://cache.local:6380/0")
    with pytest.raises(EgressDenied, match=r"cache\.local:6380"):
        await egress.authorize("10.9.9.9", 6380, policy)
    assert (await egress.authorize("10.9.9.9", 6379, policy)).allowed


async def test_the_services_own_addresses_are_looked_up_once_per_ttl(
    resolve: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve["cache.local"] = ["10.9.9.9"]
    lookups: list[str] = []
    stubbed = egress.resolver

    async def counting(host: str, port: int | None) -> list[str]:
        lookups.append(host)
        return await stubbed(host, port)

    monkeypatch.setattr(egress, "resolver", counting)
    clock = [1000.0]
    monkeypatch.setattr(egress.time, "monotonic", lambda: clock[0])
    policy = prod(redis_url="redis://cache.local:6380/0")
    for _ in range(3):
        with pytest.raises(EgressDenied):
            await egress.authorize("10.9.9.9", 6380, policy)
    assert lookups == ["cache.local"]
    resolve["cache.local"] = ["10.9.9.10"]  # the service's Redis moved
    clock[0] += egress.RESOLVED_DENY_TTL_SECONDS + 1
    with pytest.raises(EgressDenied):
        await egress.authorize("10.9.9.10", 6380, policy)
    assert lookups == ["cache.local", "cache.local"]


def test_dev_defaults_allow_everything_on_this_machine() -> None:
    policy = dev(database_url="postgresql+asyncpg://svc@127.0.0.1:5432/aiops", redis_url="redis://127.0.0.1:6379")
    assert policy.deny == ()
    for address in ("127.0.0.1", "::1", "169.254.169.254"):
        assert policy.decide("x", 5432, [address]).allowed


async def test_a_name_resolving_to_a_denied_address_is_refused(resolve: dict[str, list[str]]) -> None:
    resolve["innocent.example"] = ["93.184.216.34", "169.254.169.254"]
    with pytest.raises(EgressDenied) as caught:
        await egress.authorize("innocent.example", 80, prod())
    assert caught.value.decision.address == "169.254.169.254"
    assert caught.value.decision.rule is not None and caught.value.decision.rule.text == "169.254.0.0/16"


# ------------------------------------------------------------------------------------------ local servers


class Recorder:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server
        self.requests: list[dict[str, str]] = []
        self.redirect_to: str | None = None

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        recorder: Recorder = self.server.recorder  # type: ignore[attr-defined]
        recorder.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if recorder.redirect_to is not None:
            self.send_response(307)
            self.send_header("Location", recorder.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.endswith("/models"):
            body = {
                "object": "list",
                "data": [
                    {
                        "id": "m1",
                        "object": "model",
                        "created": 0,
                        "owned_by": "x",
                        "type": "model",
                        "display_name": "M1",
                        "created_at": "2024-01-01T00:00:00Z",
                    }
                ],
                "has_more": False,
                "first_id": "m1",
                "last_id": "m1",
            }
        else:
            body = {"status": "success", "data": {"resultType": "vector", "result": []}}
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        """Bedrock's Converse API (``POST /model/{id}/converse``), enough for botocore to parse a reply."""
        recorder: Recorder = self.server.recorder  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        recorder.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path.endswith("/converse-stream"):
            self._converse_stream()
            return
        body = {
            "output": {"message": {"role": "assistant", "content": [{"text": "pinned hello"}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5},
            "metrics": {"latencyMs": 1},
        }
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _converse_stream(self) -> None:
        events = [
            ("messageStart", {"role": "assistant"}),
            *[("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}}) for t in ("pinned ", "stream")],
            ("contentBlockStop", {"contentBlockIndex": 0}),
            ("messageStop", {"stopReason": "end_turn"}),
            (
                "metadata",
                {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}, "metrics": {"latencyMs": 1}},
            ),
        ]
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for name, payload in events:
            message = event_stream_message(name, json.dumps(payload).encode())
            self.wfile.write(f"{len(message):x}\r\n".encode() + message + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


def event_stream_message(event_type: str, payload: bytes) -> bytes:
    """One message of AWS's event-stream encoding (what ConverseStream answers with)."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(payload) + 4, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    return prelude + headers + payload + struct.pack(">I", binascii.crc32(prelude + headers + payload))


def _serve(host: str) -> Iterator[Recorder]:
    server = ThreadingHTTPServer((host, 0), RecordingHandler)
    recorder = Recorder(server)
    server.recorder = recorder  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()


@pytest.fixture
def origin() -> Iterator[Recorder]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def other() -> Iterator[Recorder]:
    yield from _serve("127.0.0.2")  # another host of this machine


def tool_context(policy: EgressPolicy, **attributes: Any) -> ToolContext:
    return ToolContext(node_id="n", attributes=attributes, settings={SETTING_EGRESS_POLICY: policy})


async def invoke(name: str, arguments: dict[str, Any], context: ToolContext) -> Any:
    return await default_registry().invoke(name, arguments, context)


# ------------------------------------------------------------------------------------------ tools


async def test_http_check_redirect_to_a_denied_address_is_refused_without_connecting(
    origin: Recorder, connections: list[str]
) -> None:
    origin.redirect_to = "http://169.254.169.254"
    outcome = await invoke("http_check", {"url": origin.base + "/latest"}, tool_context(prod()))
    assert outcome.status == "error"
    assert outcome.output["error_code"] == "EGRESS_DENIED"
    assert "169.254.0.0/16" in outcome.output["error_message"] and outcome.output["rule"] == "169.254.0.0/16"
    assert len(origin.requests) == 1
    assert connections == ["127.0.0.1"]  # never 169.254.169.254


async def test_http_check_name_resolving_to_metadata_is_refused(
    resolve: dict[str, list[str]], connections: list[str]
) -> None:
    resolve["evil.example"] = ["169.254.169.254"]
    outcome = await invoke("http_check", {"url": "http://evil.example/"}, tool_context(prod()))
    assert outcome.output["error_code"] == "EGRESS_DENIED"
    assert connections == []


async def test_http_check_connects_to_the_checked_address_keeping_the_host_header(
    origin: Recorder, resolve: dict[str, list[str]], connections: list[str]
) -> None:
    resolve["svc.test"] = ["127.0.0.1"]
    url = f"http://svc.test:{origin.port}/health"
    outcome = await invoke("http_check", {"url": url}, tool_context(dev()))
    assert outcome.status == "success" and outcome.output["status_code"] == 200, outcome.output
    assert outcome.output["final_url"] == url
    assert connections == ["127.0.0.1"]
    assert origin.requests[0]["host"] == f"svc.test:{origin.port}"


async def test_tools_refused_as_configured_and_allowed_to_loopback_in_dev(origin: Recorder) -> None:
    deny_all_local = dev(egress_deny="127.0.0.0/8")
    targets = [
        ("http_check", {"url": origin.base + "/"}, {}),
        ("tcp_check", {"host": "127.0.0.1", "port": origin.port}, {}),
        ("prometheus_query", {"prometheus_url": origin.base}, {}),
        ("postgres_diagnostics", {}, {"postgres_dsn": "postgresql://nobody@127.0.0.1:5432/postgres"}),
        ("redis_info", {}, {"redis_url": "redis://127.0.0.1:6379/0"}),
        ("tls_certificate", {"host": "127.0.0.1", "port": origin.port}, {}),
    ]
    for name, arguments, attributes in targets:
        outcome = await invoke(name, arguments, tool_context(deny_all_local, **attributes))
        assert outcome.status == "error", (name, outcome.output)
        assert outcome.output["error_code"] == "EGRESS_DENIED", (name, outcome.output)
        assert "AIOPS_EGRESS_DENY rule 127.0.0.0/8" in outcome.output["error_message"]
    assert origin.requests == []

    allowed = dev()
    assert (await invoke("http_check", {"url": origin.base + "/"}, tool_context(allowed))).output["ok"] is True
    tcp = await invoke("tcp_check", {"host": "127.0.0.1", "port": origin.port}, tool_context(allowed))
    assert tcp.output["reachable"] is True
    prom = await invoke("prometheus_query", {"prometheus_url": origin.base}, tool_context(allowed))
    assert prom.status == "success", prom.output
    redis = await invoke("redis_info", {}, tool_context(allowed, redis_url="redis://127.0.0.1:6379/0"))
    assert redis.output["connected"] is True


async def test_prod_denies_the_services_own_database_and_redis_to_tools() -> None:
    policy = prod(database_url="postgresql+asyncpg://svc@127.0.0.1:5432/aiops", redis_url="redis://127.0.0.1:6379/0")
    pg = await invoke(
        "postgres_diagnostics", {}, tool_context(policy, postgres_dsn="postgresql://svc@127.0.0.1:5432/aiops")
    )
    assert pg.output["error_code"] == "EGRESS_DENIED" and "127.0.0.1:5432" in pg.output["error_message"]
    redis = await invoke("redis_info", {}, tool_context(policy, redis_url="redis://127.0.0.1:6379/3"))
    assert redis.output["error_code"] == "EGRESS_DENIED"
    tcp = await invoke("tcp_check", {"host": "localhost", "port": 5432}, tool_context(policy))
    assert tcp.output["error_code"] == "EGRESS_DENIED"


async def test_redis_info_sends_read_commands_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.asyncio.connection import Connection

    sent: list[str] = []
    original = Connection.send_command

    async def recording(self: Connection, *args: Any, **kwargs: Any) -> None:
        sent.append(" ".join(" ".join(str(a) for a in args).split()[:2]).upper())
        await original(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_command", recording)
    outcome = await invoke("redis_info", {}, tool_context(dev(), redis_url="redis://127.0.0.1:6379/0"))
    assert outcome.output["connected"] is True
    # The connection handshake aside (protocol, client name/notifications, auth, database), only reads.
    commands = [c for c in sent if not c.startswith(("HELLO", "CLIENT SETINFO", "CLIENT MAINT", "AUTH", "SELECT"))]
    assert commands and set(commands) <= {"INFO", "SLOWLOG GET"}, sent

    from aiops_executor.tools.builtin.redis import ReadOnlyRedis

    client = ReadOnlyRedis.from_url("redis://127.0.0.1:6379/0")
    try:
        with pytest.raises(Exception, match="read commands only"):
            await client.set("aiops-must-not-exist", "1")
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------------------ provider clients


def endpoint_at(base_url: str) -> EndpointConfig:
    return EndpointConfig(uuid.uuid4(), "e", base_url, None, None, 2.0, 5.0, 0, 0.0, 1)


def _keyed(requests: list[dict[str, str]]) -> int:
    return sum(1 for r in requests if KEY in r.get("authorization", "") or KEY in r.get("x-api-key", ""))


@pytest.mark.parametrize("provider_type", ["openai_compatible", "anthropic"])
async def test_the_key_goes_only_to_the_endpoints_host(provider_type: str, origin: Recorder, other: Recorder) -> None:
    adapter = adapter_for(provider_type)
    secrets = DecryptedSecrets(KEY)
    base = origin.base + "/v1"
    models = await adapter.list_models(endpoint_at(base), secrets)
    assert [m.model_id for m in models] == ["m1"]
    assert _keyed(origin.requests) == 1

    origin.redirect_to = other.base  # the endpoint's host redirects to another host
    models = await adapter.list_models(endpoint_at(base), secrets)
    assert [m.model_id for m in models] == ["m1"]
    assert len(other.requests) == 1 and _keyed(other.requests) == 0
    assert _keyed(origin.requests) == 2


@pytest.fixture
def other_port() -> Iterator[Recorder]:
    yield from _serve("127.0.0.1")


async def test_another_port_of_the_same_machine_is_another_host(origin: Recorder, other_port: Recorder) -> None:
    origin.redirect_to = other_port.base
    models = await adapter_for("openai_compatible").list_models(endpoint_at(origin.base + "/v1"), DecryptedSecrets(KEY))
    assert [m.model_id for m in models] == ["m1"]
    assert _keyed(origin.requests) == 1
    assert len(other_port.requests) == 1 and _keyed(other_port.requests) == 0


async def test_provider_call_to_a_denied_endpoint_sends_nothing(resolve: dict[str, list[str]]) -> None:
    egress._active = prod()
    adapter = adapter_for("openai_compatible")
    with pytest.raises(Exception) as caught:
        await adapter.list_models(endpoint_at("http://169.254.169.254/v1"), DecryptedSecrets(KEY))
    failure = adapter.classify(caught.value)
    assert failure.kind is FailureKind.denied and failure.error_code == "EGRESS_DENIED"
    assert "169.254.0.0/16" in failure.message

    resolve["llm.internal"] = ["fd00:ec2::254"]
    with pytest.raises(Exception) as caught:
        await adapter_for("anthropic").list_models(endpoint_at("https://llm.internal"), DecryptedSecrets(KEY))
    assert adapter_for("anthropic").classify(caught.value).kind is FailureKind.denied


def bedrock_chat(base_url: str) -> Any:
    from aiops_executor.llm.runtime.config import ModelConfig

    model = ModelConfig(
        uuid.uuid4(), uuid.uuid4(), "p", "aws_bedrock", "amazon.nova-lite-v1:0", "nova", "available", None, None
    )
    endpoint = EndpointConfig(uuid.uuid4(), "e", base_url, None, "us-east-1", 2.0, 5.0, 0, 0.0, 1)
    return adapter_for("aws_bedrock").build_client(model, endpoint, DecryptedSecrets("AKIAPINNED", "secret"), {})


def test_bedrock_connects_to_the_checked_address(origin: Recorder, resolve: dict[str, list[str]]) -> None:
    # The name exists only for the egress check: botocore's own lookup of it would fail, so the reply proves the
    # request went to the address the policy checked, with the name kept in the signed Host header.
    resolve["bedrock.pinned.test"] = ["127.0.0.1"]
    reply = bedrock_chat(f"http://bedrock.pinned.test:{origin.port}").invoke("hi")
    assert reply.content == "pinned hello"
    assert reply.usage_metadata and reply.usage_metadata["total_tokens"] == 5
    [request] = origin.requests
    assert request["path"].endswith("/converse")
    assert request["host"] == f"bedrock.pinned.test:{origin.port}"
    assert request["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAPINNED/")


def test_bedrock_streams_through_the_pinned_connection(origin: Recorder, resolve: dict[str, list[str]]) -> None:
    resolve["bedrock.pinned.test"] = ["127.0.0.1"]
    chunks = list(bedrock_chat(f"http://bedrock.pinned.test:{origin.port}").stream("hi"))
    assert "".join(chunk.text for chunk in chunks) == "pinned stream"
    [request] = origin.requests
    assert request["path"].endswith("/converse-stream")


def test_bedrock_to_a_denied_address_sends_nothing(origin: Recorder, resolve: dict[str, list[str]]) -> None:
    egress._active = dev(egress_deny="127.0.0.0/8")
    resolve["bedrock.rebound.test"] = ["127.0.0.1"]
    adapter = adapter_for("aws_bedrock")
    with pytest.raises(Exception) as caught:
        bedrock_chat(f"http://bedrock.rebound.test:{origin.port}").invoke("hi")
    failure = adapter.classify(caught.value)
    assert failure.kind is FailureKind.denied and "127.0.0.0/8" in failure.message
    assert origin.requests == []


def test_chat_clients_carry_the_egress_transport() -> None:
    from aiops_executor.llm.runtime.config import ModelConfig

    model = ModelConfig(uuid.uuid4(), uuid.uuid4(), "p", "openai_compatible", "m", "m", "available", None, None)
    chat = adapter_for("openai_compatible").build_client(
        model, endpoint_at("http://127.0.0.1:9/v1"), DecryptedSecrets(KEY), {}
    )
    assert chat.http_async_client is not None and chat.http_client is not None  # type: ignore[attr-defined]
    anthropic_model = ModelConfig(uuid.uuid4(), uuid.uuid4(), "p", "anthropic", "m", "m", "available", None, None)
    claude = adapter_for("anthropic").build_client(
        anthropic_model, endpoint_at("http://127.0.0.1:9"), DecryptedSecrets(KEY), {}
    )
    transport = claude._async_client._client._transport  # type: ignore[attr-defined]
    assert type(transport).__name__ == "EgressAsyncTransport"


# ------------------------------------------------------------------------------------------ endpoint API


@pytest.fixture
def env() -> str:
    return "dev"  # a test parametrized with env="prod" runs against a production app


@pytest.fixture
def settings(database_url: str, tmp_path: Path, env: str) -> Settings:
    return make_settings(database_url, tmp_path / "data", env=env)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    from asgi_lifespan import LifespanManager

    from aiops_executor.app import create_app

    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.mark.parametrize("env", ["prod"])
async def test_endpoint_with_a_metadata_base_url_is_refused_in_prod(
    client: httpx.AsyncClient, admin_headers: dict[str, str], env: str
) -> None:
    pid = await make_provider(client, admin_headers)
    for url in ("http://169.254.169.254/v1", "http://metadata.google.internal/v1", "http://[fd00:ec2::254]/v1"):
        response = await client.post(
            f"{API}/providers/{pid}/endpoints", json={"name": "meta", "base_url": url}, headers=admin_headers
        )
        body = assert_error(response, 422, "VALIDATION_ERROR")
        assert "egress denied" in body["error_message"] and "AIOPS_EGRESS_DENY rule" in body["error_message"]
    ok = await client.post(
        f"{API}/providers/{pid}/endpoints",
        json={"name": "fine", "base_url": "https://api.example.com/v1"},
        headers=admin_headers,
    )
    assert ok.status_code == 201, ok.text
    moved = await client.put(
        f"{API}/endpoints/{ok.json()['id']}", json={"base_url": "http://169.254.169.254/"}, headers=admin_headers
    )
    body = assert_error(moved, 422, "VALIDATION_ERROR")
    assert "169.254.0.0/16" in body["error_message"]


@pytest.mark.parametrize("env", ["prod"])
async def test_endpoint_whose_name_resolves_to_a_denied_address_is_refused_when_saved(
    client: httpx.AsyncClient, admin_headers: dict[str, str], env: str, resolve: dict[str, list[str]]
) -> None:
    resolve["llm.rebound.example"] = ["93.184.216.34", "169.254.169.254"]
    resolve["llm.fine.example"] = ["93.184.216.34"]
    pid = await make_provider(client, admin_headers)
    refused = await client.post(
        f"{API}/providers/{pid}/endpoints",
        json={"name": "rebound", "base_url": "https://llm.rebound.example/v1"},
        headers=admin_headers,
    )
    body = assert_error(refused, 422, "VALIDATION_ERROR")
    assert "169.254.169.254" in body["error_message"] and "169.254.0.0/16" in body["error_message"]
    # A name that does not resolve (yet) is stored: every call resolves and checks again.
    for name, url in (("fine", "https://llm.fine.example/v1"), ("later", "https://not-yet.example/v1")):
        created = await client.post(
            f"{API}/providers/{pid}/endpoints", json={"name": name, "base_url": url}, headers=admin_headers
        )
        assert created.status_code == 201, created.text
    moved = await client.put(
        f"{API}/endpoints/{created.json()['id']}",
        json={"base_url": "https://llm.rebound.example/v2", "confirm_credentials_for_new_host": True},
        headers=admin_headers,
    )
    assert_error(moved, 422, "VALIDATION_ERROR")
    document = {
        "version": 1,
        "providers": [
            {
                "name": "imported",
                "type": "openai_compatible",
                "endpoints": [{"name": "rebound", "base_url": "https://llm.rebound.example/v1"}],
            }
        ],
    }
    imported = await client.post(f"{API}/config/import", json=document, headers=admin_headers)
    body = assert_error(imported, 422, "VALIDATION_ERROR")
    assert "endpoint 'rebound'" in body["error_message"]
    listed = await client.get(f"{API}/providers", headers=admin_headers)
    assert "imported" not in {p["name"] for p in listed.json()["items"]}


async def test_moving_an_endpoint_to_another_host_needs_confirmation(
    client: httpx.AsyncClient, admin_headers: dict[str, str], app: FastAPI
) -> None:
    pid = await make_provider(client, admin_headers)
    created = await client.post(
        f"{API}/providers/{pid}/endpoints",
        json={"name": "main", "base_url": "https://a.example.com/v1"},
        headers=admin_headers,
    )
    eid = created.json()["id"]
    # No credentials yet: nothing to send anywhere, no confirmation needed.
    free = await client.put(
        f"{API}/endpoints/{eid}", json={"base_url": "https://b.example.com/v1"}, headers=admin_headers
    )
    assert free.status_code == 200, free.text
    cred = await client.post(
        f"{API}/providers/{pid}/credentials", json={"alias": "k", "api_key": KEY}, headers=admin_headers
    )
    assert cred.status_code == 201, cred.text

    same_host = await client.put(
        f"{API}/endpoints/{eid}", json={"base_url": "https://b.example.com/v2"}, headers=admin_headers
    )
    assert same_host.status_code == 200, same_host.text
    for url in ("https://c.example.com/v1", "https://b.example.com:8443/v1", "http://b.example.com/v1"):
        refused = await client.put(f"{API}/endpoints/{eid}", json={"base_url": url}, headers=admin_headers)
        body = assert_error(refused, 409, "CREDENTIAL_CONFIRMATION_REQUIRED")
        assert "confirm_credentials_for_new_host" in body["error_message"]
    unchanged = await client.get(f"{API}/endpoints/{eid}", headers=admin_headers)
    assert unchanged.json()["base_url"] == "https://b.example.com/v2"

    confirmed = await client.put(
        f"{API}/endpoints/{eid}",
        json={"base_url": "https://c.example.com/v1", "confirm_credentials_for_new_host": True},
        headers=admin_headers,
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["base_url"] == "https://c.example.com/v1"
    assert "confirm_credentials_for_new_host" not in confirmed.json()
    async with app.state.context.database.sessionmaker() as session:
        rows = list(
            await session.scalars(
                select(AuditLog).where(AuditLog.resource_type == "endpoint", AuditLog.action == "update")
            )
        )
    assert [r.details.get("credentials_confirmed_for_new_host") for r in rows].count(True) == 1

    imported = await client.post(
        f"{API}/config/import",
        json={
            "providers": [
                {"name": "p", "type": "openai", "endpoints": [{"name": "main", "base_url": "https://d.example.com/v1"}]}
            ]
        },
        headers=admin_headers,
    )
    assert_error(imported, 409, "CREDENTIAL_CONFIRMATION_REQUIRED")
