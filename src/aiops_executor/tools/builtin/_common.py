"""Helpers the built-in tools share: argument defaults from node attributes, targets, timings."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from aiops_executor.core import egress
from aiops_executor.tools.registry import (
    EGRESS_DENIED,
    SETTING_EGRESS_POLICY,
    TOOL_INVALID_TARGET,
    TOOL_MISSING_TARGET,
    ToolContext,
    ToolError,
    validation_errors,
)
from aiops_executor.tools.verdicts import THRESHOLDS_ATTRIBUTE

ArgsT = TypeVar("ArgsT", bound=BaseModel)

HOSTNAME_PATTERN = r"^[A-Za-z0-9._:%\[\]\-]+$"
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "postgres": 5432,
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
}
# Attributes that may hold a URL a host and port can be read from, in order of preference.
URL_ATTRIBUTES = ("url", "postgres_dsn", "redis_url")


def fill_from_attributes(args: ArgsT, context: ToolContext, sources: Mapping[str, Sequence[str]]) -> ArgsT:
    """``args`` with every omitted (None) field listed in ``sources`` taken from the first node attribute
    that has a value, re-validated so attribute values get the same checks and coercion as arguments."""
    values = args.model_dump()
    taken: dict[str, str] = {}
    for field_name, attribute_keys in sources.items():
        if values.get(field_name) is not None:
            continue
        for key in attribute_keys:
            if context.attributes.get(key) is not None:
                values[field_name] = context.attributes[key]
                taken[field_name] = key
                break
    if not taken:
        return args
    try:
        return type(args).model_validate(values)
    except ValidationError as exc:
        keys = sorted(taken.values())
        raise ToolError(
            TOOL_INVALID_TARGET,
            f"node attribute(s) {', '.join(keys)} are not valid for this tool",
            {"errors": validation_errors(exc)},
        ) from None


# A diagnostics DSN that logs in with every privilege, refused unless AIOPS_DIAGNOSTICS_ALLOW_SUPERUSER is set.
DIAGNOSTICS_SUPERUSER_REFUSED = "DIAGNOSTICS_SUPERUSER_REFUSED"


class SuperuserRefused(Exception):
    """The DSN logs in as a superuser (the account is the message) and the settings do not allow that."""


def secret_target(context: ToolContext, key: str, what: str) -> str:
    """The node attribute ``key`` holding a DSN or URL that may carry a password (so never an argument)."""
    value = context.attributes.get(key)
    if not value:
        raise missing_target(what, [key])
    if not isinstance(value, str):
        raise ToolError(TOOL_INVALID_TARGET, f"node attribute {key!r} must be a string")
    return value


def missing_target(what: str, attribute_keys: Sequence[str]) -> ToolError:
    keys = " or ".join(repr(key) for key in attribute_keys)
    return ToolError(TOOL_MISSING_TARGET, f"no {what} given and the node has no {keys} attribute")


def host_port_from_url_attributes(context: ToolContext) -> tuple[str, int | None] | None:
    """Host and port of the first URL-like node attribute (``url``, ``postgres_dsn``, ``redis_url``)."""
    for key in URL_ATTRIBUTES:
        value = context.attributes.get(key)
        if not isinstance(value, str) or "://" not in value:
            continue
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            continue
        if parts.hostname:
            scheme = parts.scheme.split("+", 1)[0].lower()
            return parts.hostname, port if port is not None else DEFAULT_PORTS.get(scheme)
    return None


def http_url_or_none(value: str | None) -> str | None:
    """An absolute http(s) URL, stripped; anything else is refused (the tools never follow other schemes)."""
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value.strip()


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


ROUND_TRIP_SAMPLES = 3


async def best_round_trip_ms(ask: Callable[[], Awaitable[Any]]) -> float:
    """The fastest of a few round trips (``ask`` sends ``SELECT 1``): one sample measures this process's own
    scheduling as much as the server's latency; the best of three measures the path and the server."""
    samples = []
    for _ in range(ROUND_TRIP_SAMPLES):
        started = time.perf_counter()
        await ask()
        samples.append(elapsed_ms(started))
    return min(samples)


def as_float(value: Any) -> float | None:
    """``value`` as a finite float, else None (JSON has no NaN or infinity)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def egress_policy(context: ToolContext) -> egress.EgressPolicy:
    """The policy the tool's connections follow (the process's when the context carries none)."""
    return egress.mapping_policy(context.settings, SETTING_EGRESS_POLICY)


def egress_denied(exc: egress.EgressDenied) -> ToolError:
    return ToolError(EGRESS_DENIED, exc.decision.reason, exc.decision.details())


async def egress_address(context: ToolContext, host: str, port: int | None) -> str:
    """The checked address to connect to for ``host:port``; a denial is a ``ToolError`` naming the rule.
    Raises ``egress.EgressUnresolvable`` (an ``OSError``) when the name does not resolve."""
    try:
        decision = await egress.authorize(host, port, egress_policy(context))
    except egress.EgressDenied as exc:
        raise egress_denied(exc) from None
    return decision.address or host


def egress_http_transport(context: ToolContext, **options: Any) -> Any:
    """An httpx transport checking every request and redirect hop against the policy, pinned to the checked IP."""
    import httpx

    return egress.async_transport(httpx, policy=egress_policy(context), **options)


def thresholds(context: ToolContext, tool: str, defaults: Mapping[str, float]) -> dict[str, float]:
    """The tool's thresholds: ``defaults`` with the node's ``thresholds.<tool>`` attribute applied."""
    configured = context.attributes.get(THRESHOLDS_ATTRIBUTE)
    if configured is None:
        return dict(defaults)
    if not isinstance(configured, Mapping):
        raise ToolError(TOOL_INVALID_TARGET, f"node attribute {THRESHOLDS_ATTRIBUTE!r} must be an object")
    mine = configured.get(tool)
    if mine is None:
        return dict(defaults)
    if not isinstance(mine, Mapping):
        raise ToolError(TOOL_INVALID_TARGET, f"node attribute {THRESHOLDS_ATTRIBUTE}.{tool} must be an object")
    values = dict(defaults)
    for name, value in mine.items():
        where = f"{THRESHOLDS_ATTRIBUTE}.{tool}.{name}"
        if name not in defaults:
            known = ", ".join(sorted(defaults))
            raise ToolError(TOOL_INVALID_TARGET, f"node attribute {where} is not a threshold of {tool} ({known})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ToolError(TOOL_INVALID_TARGET, f"node attribute {where} must be a positive number")
        values[name] = float(value)
    return values
