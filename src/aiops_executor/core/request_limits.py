"""Limits on request bodies: their size (an ASGI middleware), media type and JSON nesting (a dependency).

Both reject before any work proportional to the body is done, with the contract's error body:

- ``BodySizeLimitMiddleware``: a declared ``Content-Length`` above ``AIOPS_MAX_REQUEST_BODY_BYTES`` is refused
  before the application runs; a body without one (chunked) is counted as it streams in and refused as soon as
  it passes the limit, so no more than the limit is ever held in memory. Both answer 413 ``PAYLOAD_TOO_LARGE``.
- ``check_json_body``: a route taking JSON refuses a body of another media type with 415
  ``UNSUPPORTED_MEDIA_TYPE``, and a JSON body nested more than ``MAX_JSON_DEPTH`` levels with 422
  ``VALIDATION_ERROR`` (type ``json_too_deep``), before the body is validated or stored. Pydantic cannot serialize
  deeper than a few hundred levels and the JSON codec recurses, so such a body would otherwise fail later
  and unpredictably. (A body deeper than the JSON parser's own recursion limit is refused the same way by the
  error handlers.)

The middleware sits inside ``RequestContextMiddleware`` so that every refusal carries ``X-Request-ID``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, params
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiops_executor.core.errors import AppError
from aiops_executor.core.http_errors import error_response

PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
# Deeper than any sensible request (a team topology, an output JSON schema, a run's context) and far below
# where pydantic's serializer or the JSON codec give up.
MAX_JSON_DEPTH = 64


class BodyTooLargeError(StarletteHTTPException):
    """Raised from ``receive`` once a streamed body passes the limit.

    An ``HTTPException`` on purpose: FastAPI re-raises those from body parsing (anything else becomes a bare
    400), and the error handlers render it as 413 ``PAYLOAD_TOO_LARGE``.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return f"the request body exceeds the limit of {limit} bytes"


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_body_bytes
        response = error_response(413, PAYLOAD_TOO_LARGE, too_large_message(limit), {"max_bytes": limit})
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError:
            # Normally rendered by the error handlers; this covers a reader outside FastAPI's body parsing.
            if response_started:
                raise
            await self._refuse(scope, receive, send)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests more than ``limit`` arrays/objects; stops at the first too deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def check_json_body(request: Request) -> None:
    """Router dependency for the JSON body of a route, run before the body is validated.

    - A route that takes a JSON body refuses a non-empty body of another media type with 415
      ``UNSUPPORTED_MEDIA_TYPE`` (FastAPI would pass the raw bytes on and report a puzzling type error).
    - A JSON body nested deeper than ``MAX_JSON_DEPTH`` is refused with 422 ``VALIDATION_ERROR``
      (``json_too_deep``). FastAPI has already parsed it, so ``request.json()`` returns the parsed value.
    """
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if not _is_json(media_type):
        body_field = getattr(request.scope.get("route"), "body_field", None)
        takes_json = body_field is not None and not isinstance(body_field.field_info, params.Form)
        if takes_json and await request.body():
            raise AppError(
                f"this operation takes an application/json body, not {media_type or 'an untyped one'}",
                error_code="UNSUPPORTED_MEDIA_TYPE",
                status_code=415,
                details={"content_type": media_type or None, "expected": "application/json"},
            )
        return
    try:
        too_deep = json_depth_exceeds(await request.json(), MAX_JSON_DEPTH)
    except RecursionError:
        too_deep = True
    except ValueError:
        return  # not JSON at all: a route with a body reports that itself, others ignore the body
    if too_deep:
        message = f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
        raise RequestValidationError([{"type": "json_too_deep", "loc": ("body",), "msg": message, "input": None}])
