"""What went wrong talking to a provider, in the service's own terms.

Every client library raises its own exceptions; they are classified here once, so failover and the
HTTP routes agree on what is retryable and which error code a caller sees. Messages never include
request headers or keys: only the provider's status and a bounded excerpt of its error text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from aiops_executor.core.errors import AppError

MAX_MESSAGE = 300


class FailureKind(StrEnum):
    credential = "credential"  # the key is wrong, expired or lacks permission
    rate_limited = "rate_limited"
    unreachable = "unreachable"  # connection refused, DNS, TLS, timeout
    server = "server"  # 5xx / overloaded
    request = "request"  # our request was rejected (4xx other than the above); retrying will not help
    not_found = "not_found"
    denied = "denied"  # the egress policy refuses the endpoint's address; nothing was sent


ERROR_CODES = {
    FailureKind.credential: "CREDENTIAL_INVALID",
    FailureKind.rate_limited: "PROVIDER_RATE_LIMITED",
    FailureKind.unreachable: "PROVIDER_UNREACHABLE",
    FailureKind.server: "PROVIDER_ERROR",
    FailureKind.request: "PROVIDER_REQUEST_REJECTED",
    FailureKind.not_found: "PROVIDER_MODEL_NOT_FOUND",
    FailureKind.denied: "EGRESS_DENIED",
}
HTTP_STATUS = {
    FailureKind.credential: 502,
    FailureKind.rate_limited: 429,
    FailureKind.unreachable: 502,
    FailureKind.server: 502,
    FailureKind.request: 502,
    FailureKind.not_found: 502,
    FailureKind.denied: 422,
}
# Failures after which another endpoint or credential may succeed.
FAILOVER_KINDS = frozenset(
    {FailureKind.credential, FailureKind.rate_limited, FailureKind.unreachable, FailureKind.server, FailureKind.denied}
)


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    message: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def error_code(self) -> str:
        return ERROR_CODES[self.kind]

    @property
    def fails_over(self) -> bool:
        return self.kind in FAILOVER_KINDS


class ProviderCallError(AppError):
    """A provider call failed on every route it could take."""

    def __init__(self, failure: Failure, *, attempts: list[dict[str, Any]] | None = None) -> None:
        super().__init__(
            failure.message,
            error_code=failure.error_code,
            status_code=HTTP_STATUS[failure.kind],
            details={"attempts": attempts or [], **({"provider_status": failure.status} if failure.status else {})},
        )
        self.failure = failure


class NoUsableRouteError(AppError):
    status_code = 409
    error_code = "NO_USABLE_CREDENTIAL"


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        meta = response.get("ResponseMetadata", {})
        code = meta.get("HTTPStatusCode")
        return int(code) if isinstance(code, int) else None
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def retry_after_seconds(headers: Any) -> float | None:
    """A provider's ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), in seconds."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    try:
        if millis is not None:
            return max(0.0, float(millis) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _retry_after(exc: BaseException) -> float | None:
    return retry_after_seconds(getattr(getattr(exc, "response", None), "headers", None))


def excerpt(exc: BaseException) -> str:
    """The provider's own words: the message of its error body where the client library parsed one (with the
    HTTP status), else the library's text."""
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if isinstance(message, str) and message.strip():
        status = status_of(exc)
        text = f"{status} {message}" if status else message
    else:
        text = str(exc)
    text = text.replace("\n", " ").strip() or "no error message"
    return text[:MAX_MESSAGE]


# Error types the OpenAI and Anthropic protocols use for failures on the provider's side.
_SERVER_ERROR_TYPES = frozenset({"server_error", "api_error", "overloaded_error", "internal_server_error"})


def classify_http_failure(exc: BaseException) -> Failure:
    """Map an HTTP client library's exception (openai, anthropic, httpx) onto a Failure. Adapters whose
    library raises other exceptions (botocore) classify those themselves first."""
    import httpx

    from aiops_executor.core.egress import find_denial

    denial = find_denial(exc)
    if denial is not None:  # the SDKs wrap what their transport raised
        return Failure(FailureKind.denied, denial.decision.reason)
    name = type(exc).__name__
    message = excerpt(exc)
    transport_error = isinstance(exc, httpx.TransportError | TimeoutError | OSError)
    if ("Connection" in name or "Timeout" in name or transport_error) and status_of(exc) is None:
        return Failure(FailureKind.unreachable, message)

    status = status_of(exc)
    if status is None:
        # An error event inside a stream that had begun (HTTP 200): the provider failed while answering.
        body = getattr(exc, "body", None)
        error = body.get("error", body) if isinstance(body, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        if kind in _SERVER_ERROR_TYPES:
            return Failure(FailureKind.server, message)
        return Failure(FailureKind.request, message)
    if status in (401, 403):
        return Failure(FailureKind.credential, message, status)
    if status == 429:
        return Failure(FailureKind.rate_limited, message, status, _retry_after(exc))
    if status == 404:
        return Failure(FailureKind.not_found, message, status)
    if status >= 500 or status in (408, 409, 529):
        return Failure(FailureKind.server, message, status, _retry_after(exc))
    return Failure(FailureKind.request, message, status)
