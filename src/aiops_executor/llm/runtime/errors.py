"""What went wrong talking to a provider, in the service's own terms.

Every client library raises its own exceptions; they are classified here once, so failover and the
HTTP routes agree on what is retryable and which error code a caller sees. Messages never include
request headers or keys: only the provider's status and a bounded excerpt of its error text.
"""

from __future__ import annotations

from dataclasses import dataclass
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


ERROR_CODES = {
    FailureKind.credential: "CREDENTIAL_INVALID",
    FailureKind.rate_limited: "PROVIDER_RATE_LIMITED",
    FailureKind.unreachable: "PROVIDER_UNREACHABLE",
    FailureKind.server: "PROVIDER_ERROR",
    FailureKind.request: "PROVIDER_REQUEST_REJECTED",
    FailureKind.not_found: "PROVIDER_MODEL_NOT_FOUND",
}
HTTP_STATUS = {
    FailureKind.credential: 502,
    FailureKind.rate_limited: 429,
    FailureKind.unreachable: 502,
    FailureKind.server: 502,
    FailureKind.request: 502,
    FailureKind.not_found: 502,
}
# Failures after which another endpoint or credential may succeed.
FAILOVER_KINDS = frozenset(
    {FailureKind.credential, FailureKind.rate_limited, FailureKind.unreachable, FailureKind.server}
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


def _status_of(exc: BaseException) -> int | None:
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


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _excerpt(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ").strip() or type(exc).__name__
    return text[:MAX_MESSAGE]


_BOTO_THROTTLE = {"ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"}
_BOTO_AUTH = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
}
_BOTO_SERVER = {
    "InternalServerException",
    "ServiceUnavailableException",
    "ModelNotReadyException",
    "ModelTimeoutException",
}


def classify(exc: BaseException) -> Failure:
    """Map any client library's exception onto a Failure."""
    import httpx

    name = type(exc).__name__
    module = type(exc).__module__
    message = _excerpt(exc)

    if module.startswith("botocore"):
        error = getattr(exc, "response", {}) or {}
        code = error.get("Error", {}).get("Code", "") if isinstance(error, dict) else ""
        status = _status_of(exc)
        if code in _BOTO_THROTTLE or status == 429:
            return Failure(FailureKind.rate_limited, message, status)
        if code in _BOTO_AUTH or status in (401, 403):
            return Failure(FailureKind.credential, message, status)
        if code in _BOTO_SERVER or (status or 0) >= 500:
            return Failure(FailureKind.server, message, status)
        if code == "ResourceNotFoundException" or status == 404:
            return Failure(FailureKind.not_found, message, status)
        if name in {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}:
            return Failure(FailureKind.unreachable, message)
        if name in {"NoCredentialsError", "PartialCredentialsError"}:
            return Failure(FailureKind.credential, message)
        return Failure(FailureKind.request, message, status)

    transport_error = isinstance(exc, httpx.TransportError | TimeoutError | OSError)
    if ("Connection" in name or "Timeout" in name or transport_error) and _status_of(exc) is None:
        return Failure(FailureKind.unreachable, message)

    status = _status_of(exc)
    if status is None:
        return Failure(FailureKind.request, message)
    if status in (401, 403):
        return Failure(FailureKind.credential, message, status)
    if status == 429:
        return Failure(FailureKind.rate_limited, message, status, _retry_after(exc))
    if status == 404:
        return Failure(FailureKind.not_found, message, status)
    if status >= 500 or status in (408, 409, 529):
        return Failure(FailureKind.server, message, status)
    return Failure(FailureKind.request, message, status)
