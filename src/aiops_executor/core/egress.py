"""Egress policy: where the service's outgoing connections (diagnostic tools, provider calls) may go.

Rules come from ``AIOPS_EGRESS_ALLOW`` and ``AIOPS_EGRESS_DENY`` (comma-separated): CIDRs (``10.0.0.0/8``,
``fe80::/10``), addresses (``10.0.0.5``, ``[::1]``), host names with ``*`` globs (``*.internal``,
``db.example.com``), each optionally with a port (``10.0.0.5:5432``, ``[fd00::1]:443``), or a port alone
(``:25``). A connection is checked after name resolution: every address the name resolves to must pass, and
the caller connects to the address that was checked (no DNS-rebinding window). Deny wins over allow; with an
allow list set, anything it does not allow is denied.

Defaults: in ``prod`` link-local addresses, the cloud metadata services and the service's own database and
Redis (host:port of ``AIOPS_DATABASE_URL`` / ``AIOPS_REDIS_URL``) are denied; in ``dev`` everything on this
machine (loopback) is allowed, even outside an allow list, so the demo can probe the local PostgreSQL and Redis.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate

from aiops_executor.core.egress_rules import IPAddress, Rule, normalise_host, parse_rule, parse_rules
from aiops_executor.core.settings import Settings, get_settings

ALLOW_SETTING = "AIOPS_EGRESS_ALLOW"
DENY_SETTING = "AIOPS_EGRESS_DENY"
PROD_DEFAULT = "prod default"
DEV_DEFAULT = "dev default"
EGRESS_DENIED = "EGRESS_DENIED"
RESOLVE_TIMEOUT_SECONDS = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443, "postgres": 5432, "postgresql": 5432, "redis": 6379, "rediss": 6379}

PROD_DEFAULT_DENY = (
    "169.254.0.0/16",
    "fe80::/10",
    "169.254.169.254",
    "fd00:ec2::254",
    "metadata.google.internal",
    "metadata",
    "100.100.100.200",
)
DEV_DEFAULT_ALLOW = ("127.0.0.0/8", "::1", "localhost")
# Headers that carry a provider's credentials; sent only to the endpoint's own origin.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "appid", "proxy-authorization", "cookie")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    host: str
    port: int | None
    address: str | None = None  # the address checked (and to connect to); on a denial, the one denied
    rule: Rule | None = None
    addresses: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        if self.allowed:
            return "allowed"
        target = self.address or self.host
        where = f"{target}:{self.port}" if self.port is not None and self.rule and self.rule.port else target
        if self.rule is None:
            return f"egress denied: {where} is not allowed by {ALLOW_SETTING}"
        return f"egress denied: {where} matches {self.rule.describe()}"

    def details(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "address": self.address,
            "rule": self.rule.text if self.rule else None,
            "rule_source": self.rule.source if self.rule else ALLOW_SETTING,
        }


class EgressDenied(Exception):
    """A connection the egress policy refuses; nothing was sent."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class EgressUnresolvable(OSError):
    """The host name does not resolve, so there is no address to check or connect to."""


@dataclass(frozen=True)
class EgressPolicy:
    deny: tuple[Rule, ...] = ()
    allow: tuple[Rule, ...] = ()
    # Built-in allow rules (dev: this machine); they extend the allow list but never override a deny.
    implicit_allow: tuple[Rule, ...] = ()
    # Deny rules by host name whose addresses are denied too (the service's own database and Redis).
    resolve_deny: tuple[Rule, ...] = field(default=())

    def decide(self, host: str, port: int | None, addresses: Iterable[str]) -> Decision:
        """Whether ``host:port`` may be reached at every one of ``addresses`` (its resolution)."""
        resolved = tuple(dict.fromkeys(str(a) for a in addresses))
        if not resolved:
            return Decision(False, host, port, rule=None)
        for text in resolved:
            address = ipaddress.ip_address(text.split("%", 1)[0])
            denied_by = next((rule for rule in self.deny if rule.matches(host, address, port)), None)
            if denied_by is not None:
                return Decision(False, host, port, text, denied_by, resolved)
            if self.allow and not any(
                rule.matches(host, address, port) for rule in (*self.allow, *self.implicit_allow)
            ):
                return Decision(False, host, port, text, None, resolved)
        return Decision(True, host, port, resolved[0], None, resolved)

    def decide_static(self, host: str, port: int | None) -> Decision | None:
        """A denial that needs no name resolution (a host-name rule, or an address literal), else None."""
        literal = _address_or_none(host)
        if literal is not None:
            decision = self.decide(host, port, [str(literal)])
            return None if decision.allowed else decision
        for rule in self.deny:
            if rule.network is None and rule.matches(host, None, port):
                return Decision(False, host, port, None, rule)
        return None

    def with_resolved_deny(self, extra: Iterable[Rule]) -> EgressPolicy:
        return EgressPolicy((*self.deny, *extra), self.allow, self.implicit_allow, ())


def _address_or_none(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(normalise_host(host).split("%", 1)[0])
    except ValueError:
        return None


def _service_target(url: str | None) -> tuple[str, int] | None:
    if not url or "://" not in url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    scheme = parts.scheme.split("+", 1)[0].lower()
    default = DEFAULT_PORTS.get(scheme)
    return parts.hostname, port or default or 0


def policy_for(settings: Settings) -> EgressPolicy:
    deny = list(parse_rules(settings.egress_deny, DENY_SETTING))
    allow = parse_rules(settings.egress_allow, ALLOW_SETTING)
    implicit: tuple[Rule, ...] = ()
    resolve_deny: list[Rule] = []
    if settings.is_prod:
        deny += parse_rules(PROD_DEFAULT_DENY, DENY_SETTING, PROD_DEFAULT)
        database_url = None if settings.is_embedded_database else settings.resolved_database_url
        for url in (database_url, settings.redis_url):
            target = _service_target(url)
            if target is None:
                continue
            host, port = target
            text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            rule = parse_rule(text, DENY_SETTING, f"{PROD_DEFAULT}: the service's own database or Redis")
            deny.append(rule)
            if rule.host_pattern is not None:
                resolve_deny.append(rule)
    else:
        implicit = parse_rules(DEV_DEFAULT_ALLOW, ALLOW_SETTING, DEV_DEFAULT)
    return EgressPolicy(tuple(deny), allow, implicit, tuple(resolve_deny))


# ------------------------------------------------------------------------------------------ resolution

Resolver = Callable[[str, int | None], Awaitable[list[str]]]


async def system_resolve(host: str, port: int | None) -> list[str]:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def system_resolve_sync(host: str, port: int | None) -> list[str]:
    infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# Replaceable in tests (name resolution stubbed); the sync one serves sync HTTP clients.
resolver: Resolver = system_resolve
sync_resolver: Callable[[str, int | None], list[str]] = system_resolve_sync

_active: EgressPolicy | None = None


def configure(settings: Settings) -> EgressPolicy:
    """Make ``settings``' policy the process's (the provider clients use it)."""
    global _active
    _active = policy_for(settings)
    return _active


def active_policy() -> EgressPolicy:
    global _active
    if _active is None:
        _active = policy_for(get_settings())
    return _active


def reset() -> None:
    global _active
    _active = None
    _resolved_deny.clear()


def _address_rules(rule: Rule, addresses: list[str]) -> list[Rule]:
    """A deny rule naming a host, as one rule per address the host resolves to."""
    return [Rule(rule.text, rule.source, ipaddress.ip_network(a), None, rule.port, rule.note) for a in addresses]


# The addresses of the deny rules that name a host (the service's own database and Redis), kept this long: they
# are checked on every outgoing request, and these names rarely move. A lookup that fails is not kept.
RESOLVED_DENY_TTL_SECONDS = 30.0
_resolved_deny: dict[Rule, tuple[float, list[Rule]]] = {}


def _cached_address_rules(rule: Rule) -> list[Rule] | None:
    cached = _resolved_deny.get(rule)
    if cached is not None and time.monotonic() - cached[0] < RESOLVED_DENY_TTL_SECONDS:
        return cached[1]
    return None


def _keep_address_rules(rule: Rule, addresses: list[str]) -> list[Rule]:
    rules = _address_rules(rule, addresses)
    _resolved_deny[rule] = (time.monotonic(), rules)
    return rules


async def expanded(policy: EgressPolicy) -> EgressPolicy:
    if not policy.resolve_deny:
        return policy
    extra: list[Rule] = []
    for rule in policy.resolve_deny:
        cached = _cached_address_rules(rule)
        if cached is not None:
            extra += cached
            continue
        try:
            extra += _keep_address_rules(rule, await resolver(rule.host_pattern or "", rule.port))
        except (OSError, TimeoutError):
            continue
    return policy.with_resolved_deny(extra)


def _expand_sync(policy: EgressPolicy) -> EgressPolicy:
    if not policy.resolve_deny:
        return policy
    extra: list[Rule] = []
    for rule in policy.resolve_deny:
        cached = _cached_address_rules(rule)
        if cached is not None:
            extra += cached
            continue
        try:
            extra += _keep_address_rules(rule, sync_resolver(rule.host_pattern or "", rule.port))
        except OSError:
            continue
    return policy.with_resolved_deny(extra)


def literal_addresses(policy: EgressPolicy, host: str, port: int | None) -> list[str] | None:
    """What can be decided before any lookup: raises ``EgressDenied`` for a rule on the name or port; the
    address itself when ``host`` is one (None: the name must be resolved)."""
    static = policy.decide_static(host, port)
    if static is not None:
        raise EgressDenied(static)
    literal = _address_or_none(host)
    return [str(literal)] if literal is not None else None


def _allowed(policy: EgressPolicy, host: str, port: int | None, addresses: list[str]) -> Decision:
    decision = policy.decide(host, port, addresses)
    if not decision.allowed:
        raise EgressDenied(decision)
    return decision


async def authorize(host: str, port: int | None, policy: EgressPolicy | None = None) -> Decision:
    """Resolve ``host`` and check every address; returns the allowed decision (connect to ``.address``).
    Raises ``EgressDenied`` (nothing sent), or ``EgressUnresolvable`` when the name does not resolve."""
    policy = await expanded(policy or active_policy())
    addresses = literal_addresses(policy, host, port)
    if addresses is None:
        try:
            addresses = await resolver(normalise_host(host), port)
        except TimeoutError:
            raise EgressUnresolvable(f"resolving {host} timed out") from None
        except OSError as exc:
            raise EgressUnresolvable(f"{host} does not resolve: {exc}") from None
    return _allowed(policy, host, port, addresses)


def authorize_sync(host: str, port: int | None, policy: EgressPolicy | None = None) -> Decision:
    """``authorize`` for synchronous clients."""
    policy = _expand_sync(policy or active_policy())
    addresses = literal_addresses(policy, host, port)
    if addresses is None:
        try:
            addresses = sync_resolver(normalise_host(host), port)
        except OSError as exc:
            raise EgressUnresolvable(f"{host} does not resolve: {exc}") from None
    return _allowed(policy, host, port, addresses)


def url_target(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme.lower())


def static_url_denial(url: str, policy: EgressPolicy | None = None) -> Decision | None:
    """A denial of ``url`` that needs no DNS (for checking configuration when it is written)."""
    try:
        host, port = url_target(url)
    except ValueError:
        return None
    return (policy or active_policy()).decide_static(host, port)


def find_denial(exc: BaseException | None) -> EgressDenied | None:
    """The ``EgressDenied`` behind ``exc`` (client libraries wrap transport errors), if any."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, EgressDenied):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


# ------------------------------------------------------------------------------------------ HTTP clients


def origin_of(scheme: str, host: str, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, normalise_host(host), port or DEFAULT_PORTS.get(scheme)


def _pinned_request(http: Any, request: Any, decision: Decision, credential_origin: Any) -> Any:
    url = request.url
    headers = http.Headers(request.headers)
    if credential_origin is not None and origin_of(url.scheme, url.host, url.port) != credential_origin:
        for name in CREDENTIAL_HEADERS:
            headers.pop(name, None)
    extensions: dict[str, Any] = dict(request.extensions)
    address = decision.address or url.host
    if url.scheme == "https" and _address_or_none(url.host) is None:
        extensions["sni_hostname"] = url.host
    pinned = http.Request(
        request.method, url.copy_with(host=address), headers=headers, stream=request.stream, extensions=extensions
    )
    return pinned


def async_transport(
    http: Any,
    *,
    policy: EgressPolicy | None = None,
    credential_origin: tuple[str, str, int | None] | None = None,
    trace_context: bool = False,
    **transport_options: Any,
) -> Any:
    """An async transport of ``http`` (``httpx`` or the SDKs' ``httpx2``) that checks every request
    (redirects included) against the policy, connects to the checked address (Host header and TLS SNI
    keep the name), and drops credential headers on any request to another origin than ``credential_origin``.
    With ``trace_context`` each request carries the current span's W3C ``traceparent`` (and ``tracestate``).
    """

    class EgressAsyncTransport(http.AsyncBaseTransport):  # type: ignore[misc]
        def __init__(self) -> None:
            self._inner = http.AsyncHTTPTransport(**transport_options)

        async def handle_async_request(self, request: Any) -> Any:
            if trace_context:
                propagate.inject(request.headers)
            url = request.url
            decision = await authorize(url.host, url.port or DEFAULT_PORTS.get(url.scheme), policy)
            return await self._inner.handle_async_request(_pinned_request(http, request, decision, credential_origin))

        async def aclose(self) -> None:
            await self._inner.aclose()

    return EgressAsyncTransport()


def sync_transport(
    http: Any,
    *,
    policy: EgressPolicy | None = None,
    credential_origin: tuple[str, str, int | None] | None = None,
    trace_context: bool = False,
    **transport_options: Any,
) -> Any:
    class EgressTransport(http.BaseTransport):  # type: ignore[misc]
        def __init__(self) -> None:
            self._inner = http.HTTPTransport(**transport_options)

        def handle_request(self, request: Any) -> Any:
            if trace_context:
                propagate.inject(request.headers)
            url = request.url
            decision = authorize_sync(url.host, url.port or DEFAULT_PORTS.get(url.scheme), policy)
            return self._inner.handle_request(_pinned_request(http, request, decision, credential_origin))

        def close(self) -> None:
            self._inner.close()

    return EgressTransport()


def sdk_http_clients(base_url: str | None, default_base_url: str | None = None) -> dict[str, Any]:
    """``http_client`` / ``http_async_client`` for the official SDKs (httpx2), bound to the endpoint's origin."""
    import httpx2

    target = base_url or default_base_url
    credential_origin = None
    if target:
        parts = urlsplit(target)
        if parts.hostname:
            credential_origin = origin_of(parts.scheme, parts.hostname, parts.port)
    # Redirects are followed as the SDKs' own clients do; each hop is checked by the transport, which also
    # drops the credential headers on any hop to another origin (httpx itself strips only Authorization).
    return {
        "http_async_client": httpx2.AsyncClient(
            transport=async_transport(httpx2, credential_origin=credential_origin, trace_context=True),
            trust_env=False,
            follow_redirects=True,
        ),
        "http_client": httpx2.Client(
            transport=sync_transport(httpx2, credential_origin=credential_origin, trace_context=True),
            trust_env=False,
            follow_redirects=True,
        ),
    }


def credential_origin_of(url: str | None) -> tuple[str, str, int | None] | None:
    if not url:
        return None
    parts = urlsplit(url)
    return origin_of(parts.scheme, parts.hostname, parts.port) if parts.hostname else None


def mapping_policy(settings: Mapping[str, Any], key: str) -> EgressPolicy:
    value = settings.get(key)
    return value if isinstance(value, EgressPolicy) else active_policy()


async def resolved_url_denial(url: str, policy: EgressPolicy | None = None) -> Decision | None:
    """A denial of ``url`` after resolving its host, for checking configuration when it is written. A name that
    does not resolve (yet) is not a denial: every call resolves and checks again."""
    try:
        host, port = url_target(url)
    except ValueError:
        return None
    try:
        await authorize(host, port, policy)
    except EgressDenied as denied:
        return denied.decision
    except EgressUnresolvable:
        return None
    return None
