"""How every failure becomes a response in the contract's shape: the documented error body and the app's
exception handlers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from aiops_executor.core.errors import AppError, error_body


class ErrorResponse(BaseModel):
    """The contract's body of every non-2xx response (documented as such in the OpenAPI document)."""

    error_code: str = Field(description="stable UPPER_SNAKE code, e.g. TEAM_NOT_FOUND")
    error_message: str = Field(description="human readable")
    details: dict[str, Any] = Field(description="machine-readable specifics; may be empty")
    request_id: str | None = Field(description="the X-Request-ID of the request")


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "BAD_REQUEST (or a domain code such as INVALID_TOPOLOGY): the request cannot be processed",
    401: "UNAUTHORIZED: missing, invalid or expired credentials",
    403: "FORBIDDEN: the caller's role does not allow this",
    404: "<RESOURCE>_NOT_FOUND: the resource does not exist",
    405: "METHOD_NOT_ALLOWED: the path does not support this method (see Allow)",
    408: "EXECUTION_TIMEOUT: the run timed out",
    409: "a CONFLICT-family code: the request conflicts with the current state",
    413: "PAYLOAD_TOO_LARGE: the request body exceeds AIOPS_MAX_REQUEST_BODY_BYTES",
    415: "UNSUPPORTED_MEDIA_TYPE: the body is not in a media type this operation accepts",
    422: "VALIDATION_ERROR: the request does not match the documented schema",
    429: "RATE_LIMITED: too many requests; retry after Retry-After seconds",
    500: "INTERNAL_ERROR: an unexpected failure (never with a stack trace)",
    502: "the provider failed or could not be reached",
}


def error_response(
    status_code: int,
    error_code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(error_code, message, details), status_code=status_code, headers=headers)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Pydantic echoes the rejected input; it may be a secret (an oversized api_key), so it is dropped.
    return [
        {"loc": list(err.get("loc", ())), "message": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        if exc.extra_fields:
            body = {**exc.extra_fields, **error_body(exc.error_code, exc.message, exc.details)}
            return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
        return error_response(exc.status_code, exc.error_code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "VALIDATION_ERROR", "request validation failed", {"errors": _validation_errors(exc)})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        unreadable = _unreadable_body(exc)
        if unreadable is not None:
            return unreadable
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR" if exc.status_code < 500 else "INTERNAL_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(exc.status_code, code, message, headers=headers)


_ROUTABLE_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. The router's own ``Allow`` names only the first route whose
    path matched, although ``GET /teams/{id}`` and ``PUT /teams/{id}`` are separate routes."""
    routes = request.app.router.routes
    return [
        method
        for method in _ROUTABLE_METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]


def _unreadable_body(exc: StarletteHTTPException) -> JSONResponse | None:
    """FastAPI answers a body it could not decode with a bare 400 "There was an error parsing the body"; say why."""
    if exc.status_code != 400:
        return None
    if isinstance(exc.__cause__, RecursionError):
        problem = {"loc": ["body"], "message": "JSON nested too deeply", "type": "json_too_deep"}
    elif isinstance(exc.__cause__, UnicodeDecodeError):
        problem = {"loc": ["body"], "message": "the body is not valid UTF-8", "type": "json_invalid"}
    else:
        return None
    return error_response(422, "VALIDATION_ERROR", "request validation failed", {"errors": [problem]})
