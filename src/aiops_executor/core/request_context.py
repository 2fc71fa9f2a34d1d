"""Per-request context (request id) and the outermost ASGI middleware that owns it.

The middleware also turns any unhandled exception into the contract's 500 body: Starlette's own
server-error handler sits outside user middleware, so it could not add ``X-Request-ID``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiops_executor.core.logging import log_context

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID_HEADER = "X-Request-ID"

logger = structlog.get_logger(__name__)


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def origin() -> dict[str, str]:
    """Where work handed to another process comes from: the request id and the W3C trace context, as plain
    strings a job can carry (see ``from_origin``)."""
    carried: dict[str, str] = {}
    request_id = current_request_id()
    if request_id is not None:
        carried["request_id"] = request_id
    propagate.inject(carried)
    return carried


@contextmanager
def from_origin(carried: Mapping[str, str] | None) -> Iterator[None]:
    """Runs the block as if inside the request that handed the work over: its request id on every log line,
    its trace as the current context (a run's trace then links to it)."""
    carried = dict(carried or {})
    request_id = carried.pop("request_id", None)
    if request_id is not None and not _VALID_REQUEST_ID.match(request_id):
        request_id = None
    token = otel_context.attach(propagate.extract(carried)) if carried else None
    try:
        if request_id is None:
            yield
        else:
            with log_context(request_id=request_id):
                yield
    finally:
        if token is not None:
            otel_context.detach(token)


def _note_in_liveness(scope: Scope, error: Exception) -> None:
    """The app's liveness hears of the error (a ``MemoryError`` fails it), once the app has started."""
    context = getattr(getattr(scope.get("app"), "state", None), "context", None)
    if context is not None:
        context.liveness.note_unhandled(error)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else new_request_id()
        token = _request_id.set(request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        response_started = False
        status = 500
        started = time.perf_counter()

        async def send_with_request_id(message: Message) -> None:
            nonlocal response_started, status
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        except Exception as exc:
            logger.exception("unhandled error", path=scope.get("path"), method=scope.get("method"))
            _note_in_liveness(scope, exc)
            if response_started:
                raise
            body = json.dumps(
                {
                    "error_code": "INTERNAL_ERROR",
                    "error_message": "internal server error",
                    "details": {},
                    "request_id": request_id,
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", request_id.encode("latin-1")),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            # The path only: query strings are not logged, as clients sometimes put tokens there.
            logger.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            structlog.contextvars.unbind_contextvars("request_id")
            _request_id.reset(token)
