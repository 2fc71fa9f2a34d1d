"""The service's error types and the contract's error body. The command line uses them too, so this module imports
no web framework; ``core.http_errors`` renders them as responses."""

from __future__ import annotations

from typing import Any

from aiops_executor.core.request_context import current_request_id


class AppError(Exception):
    """An expected failure with a stable error code, rendered as the contract's error body."""

    status_code = 400
    error_code = "BAD_REQUEST"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        extra_fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code
        if status_code is not None:
            self.status_code = status_code
        self.details = details or {}
        self.headers = headers
        # Fields the contract names next to the error body for this error (e.g. ``partial_result``).
        self.extra_fields = extra_fields or {}


class NotFoundError(AppError):
    status_code = 404

    def __init__(self, resource: str, resource_id: object) -> None:
        super().__init__(
            f"{resource.replace('_', ' ')} {resource_id} not found",
            error_code=f"{resource.upper()}_NOT_FOUND",
            details={"id": str(resource_id)},
        )


class ConflictError(AppError):
    status_code = 409
    error_code = "CONFLICT"


class ValidationFailed(AppError):
    status_code = 422
    error_code = "VALIDATION_ERROR"


class UnauthorizedError(AppError):
    status_code = 401
    error_code = "UNAUTHORIZED"

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ForbiddenError(AppError):
    status_code = 403
    error_code = "FORBIDDEN"


def error_body(error_code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "error_code": error_code,
        "error_message": message,
        "details": details or {},
        "request_id": current_request_id(),
    }
