"""``http_check``: one HTTP request against a service, reported as findings (status, latency, headers).

Reads node attributes ``url`` and ``expected_status`` when the arguments are omitted.

Verdicts: failed when the server cannot be reached or does not answer in time, on a 5xx status, or when the
latency reaches ``latency_failed_ms`` (default 5000); degraded on another unexpected status or when the latency
reaches ``latency_degraded_ms`` (default 1000). A 5xx answer's body excerpt is reported.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from aiops_executor import __version__
from aiops_executor.core.egress import EgressDenied, EgressUnresolvable
from aiops_executor.core.text import shorten
from aiops_executor.tools.builtin._common import (
    egress_denied,
    egress_http_transport,
    elapsed_ms,
    fill_from_attributes,
    http_url_or_none,
    missing_target,
    thresholds,
)
from aiops_executor.tools.registry import ToolContext, ToolSpec, describe_exception
from aiops_executor.tools.verdicts import Findings, judged

DEFAULT_REPORTED_HEADERS = (
    "content-type",
    "content-length",
    "server",
    "cache-control",
    "location",
    "retry-after",
    "etag",
    "last-modified",
    "strict-transport-security",
    "x-request-id",
)
MAX_BODY_BYTES = 1024 * 1024  # counted, not kept: beyond this the size is reported as a lower bound
BODY_PREVIEW_CHARS = 300
TEXTUAL_CONTENT_TYPES = ("text/", "application/json", "application/problem+json", "application/xml")
USER_AGENT = f"aiops-executor-http-check/{__version__}"
HTTP_THRESHOLDS = {"latency_degraded_ms": 1000.0, "latency_failed_ms": 5000.0}


def _single_status_as_list(value: Any) -> Any:
    return [value] if isinstance(value, int) else value


class HttpCheckArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        default=None,
        max_length=2048,
        description="http:// or https:// URL to request. Omit to use the node's 'url' attribute.",
    )
    method: Literal["GET", "HEAD"] = Field(default="GET", description="HTTP method; only read-only methods.")
    timeout_seconds: float = Field(default=5.0, gt=0, le=15, description="Give up after this many seconds.")
    follow_redirects: bool = Field(default=True, description="Follow redirects and report the final URL.")
    max_redirects: int = Field(default=5, ge=0, le=10, description="Most redirects to follow.")
    expected_status: Annotated[list[int] | None, BeforeValidator(_single_status_as_list)] = Field(
        default=None,
        description="Status codes that count as healthy (default: any 2xx or 3xx). "
        "Omit to use the node's 'expected_status' attribute.",
    )
    report_headers: list[str] | None = Field(
        default=None,
        max_length=30,
        description="Response header names to report (default: content-type, server, cache-control and a few more).",
    )
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate for https URLs.")

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        return http_url_or_none(value)


def _failure(exc: httpx.HTTPError) -> tuple[bool, str]:
    """(whether the server was reached, kind of failure)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return False, "connect_timeout"
    if isinstance(exc, httpx.TimeoutException):
        return True, "timeout"
    if isinstance(exc, httpx.ConnectError):
        return False, "connect"
    if isinstance(exc, httpx.TooManyRedirects):
        return True, "too_many_redirects"
    return True, "protocol"


def _is_textual(content_type: str) -> bool:
    return content_type.lower().startswith(TEXTUAL_CONTENT_TYPES)


async def http_check(args: HttpCheckArgs, context: ToolContext) -> dict[str, Any]:
    args = fill_from_attributes(args, context, {"url": ("url",), "expected_status": ("expected_status",)})
    if args.url is None:
        raise missing_target("url", ["url"])
    limits = thresholds(context, "http_check", HTTP_THRESHOLDS)
    wanted_headers = [name.lower() for name in (args.report_headers or DEFAULT_REPORTED_HEADERS)]
    report: dict[str, Any] = {"url": args.url, "method": args.method}
    findings = Findings()
    started = time.perf_counter()
    async with httpx.AsyncClient(
        follow_redirects=args.follow_redirects,
        max_redirects=args.max_redirects,
        timeout=httpx.Timeout(args.timeout_seconds),
        # Every request and redirect hop is checked against the egress policy and sent to the checked address.
        transport=egress_http_transport(context, verify=args.verify_tls),
        # A probe tests the direct path from this host; proxy settings in the environment would hide it.
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    ) as client:
        try:
            async with client.stream(args.method, args.url) as response:
                latency_ms = elapsed_ms(started)
                body_bytes = 0
                preview = bytearray()
                async for chunk in response.aiter_bytes():
                    body_bytes += len(chunk)
                    if len(preview) < BODY_PREVIEW_CHARS:
                        preview.extend(chunk[: BODY_PREVIEW_CHARS - len(preview)])
                    if body_bytes >= MAX_BODY_BYTES:
                        break
        except EgressDenied as exc:
            raise egress_denied(exc) from None
        except EgressUnresolvable as exc:
            findings.failed(f"{_where(args.url)}: the name does not resolve")
            report.update(reachable=False, ok=False, error_kind="connect", error=describe_exception(exc))
            return judged({**report, "latency_ms": elapsed_ms(started)}, findings)
        except httpx.HTTPError as exc:
            reachable, kind = _failure(exc)
            findings.failed(f"{_where(args.url)}: {FAILURE_SIGNALS[kind].format(seconds=args.timeout_seconds)}")
            report.update(reachable=reachable, ok=False, error_kind=kind, error=describe_exception(exc))
            return judged({**report, "latency_ms": elapsed_ms(started)}, findings)
    status = response.status_code
    ok = status in args.expected_status if args.expected_status else 200 <= status < 400
    content_type = response.headers.get("content-type", "")
    report.update(
        {
            "reachable": True,
            "ok": ok,
            "status_code": status,
            "reason": response.reason_phrase,
            "latency_ms": latency_ms,
            "total_ms": elapsed_ms(started),
            "http_version": response.http_version,
            "final_url": str(response.url),
            "redirects": [{"status_code": r.status_code, "url": str(r.url)} for r in response.history],
            "headers": {name: response.headers[name] for name in wanted_headers if name in response.headers},
            "body_bytes": body_bytes,
            "body_truncated": body_bytes >= MAX_BODY_BYTES,
        }
    )
    if preview and _is_textual(content_type):
        report["body_preview"] = shorten(preview.decode("utf-8", errors="replace"), BODY_PREVIEW_CHARS)
    where = _where(str(response.url))
    if status >= 500:
        excerpt = f": {shorten(' '.join(report['body_preview'].split()), 80)}" if report.get("body_preview") else ""
        findings.failed(f"HTTP {status} from {where}{excerpt}")
    elif not ok:
        findings.degraded(f"HTTP {status} from {where} (expected {_expected(args.expected_status)})")
    else:
        findings.ok(f"HTTP {status} from {where}")
    degraded_at, failed_at = limits["latency_degraded_ms"], limits["latency_failed_ms"]
    findings.graded(latency_ms, degraded_at, failed_at, f"answered in {latency_ms:g} ms (limit {degraded_at:g} ms)")
    return judged(report, findings)


FAILURE_SIGNALS = {
    "connect_timeout": "connect timed out after {seconds:g} s",
    "timeout": "no answer within {seconds:g} s",
    "connect": "connection refused or unreachable",
    "too_many_redirects": "too many redirects",
    "protocol": "the answer is not valid HTTP",
}


def _where(url: str) -> str:
    """``host:port/path`` of a URL, for signals (no query string: it may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.netloc.rsplit('@', 1)[-1]}{parts.path or '/'}"


def _expected(statuses: list[int] | None) -> str:
    return ", ".join(str(code) for code in statuses) if statuses else "2xx or 3xx"


HTTP_CHECK = ToolSpec(
    name="http_check",
    description="Send one HTTP GET/HEAD to a URL and report reachability, status code, latency, "
    "redirects, selected headers and body size.",
    args_schema=HttpCheckArgs,
    run=http_check,
    timeout_seconds=20.0,
    attribute_keys=("url", "expected_status"),
    thresholds=HTTP_THRESHOLDS,
)
