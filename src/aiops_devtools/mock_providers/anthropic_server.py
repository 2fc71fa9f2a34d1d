"""A local server speaking the Anthropic Messages API wire protocol.

Routes:

* ``POST /v1/messages`` -- non-streaming, and streaming with the real event sequence (``message_start``,
  ``content_block_start``, ``ping``, ``content_block_delta`` with ``text_delta`` / ``input_json_delta``,
  ``content_block_stop``, ``message_delta``, ``message_stop``); ``tool_use`` blocks when tools are given;
  ``output_config.format`` JSON-schema structured output.
* ``POST /v1/messages/count_tokens``.
* ``GET /v1/models`` (``data``, ``has_more``, ``first_id``, ``last_id``; ``limit`` / ``after_id`` /
  ``before_id`` paging) and ``GET /v1/models/{model}``.
* ``/_mock/...`` admin routes, see :func:`~aiops_devtools.mock_providers.behaviour.admin_routes`.

Authentication is the ``x-api-key`` header (``Authorization: Bearer`` is accepted too, as for
``auth_token`` clients); the ``anthropic-version`` header is required, as on the real API.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .behaviour import (
    ChatRequest,
    ChatTurn,
    Fault,
    MockBehaviour,
    MockReply,
    RequestRecorder,
    ToolCall,
    ToolChoiceMode,
    ToolSpec,
    admin_routes,
    estimate_prompt_tokens,
    estimate_tokens,
    random_id,
    request_key,
    split_chunks,
    split_text,
    truncate_to_tokens,
)

MODEL_CREATED_AT = "2025-01-01T00:00:00Z"

_ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _error_object(status: int, message: str | None) -> dict[str, str]:
    error_type, default_message = _ERROR_TYPES.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", "Error.")
    )
    return {"type": error_type, "message": message or default_message}


def anthropic_error(status: int, message: str | None = None, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
    request_id = random_id("req_", 24)
    body = {"type": "error", "error": _error_object(status, message), "request_id": request_id}
    all_headers = {"request-id": request_id}
    all_headers.update(headers or {})
    return JSONResponse(body, status_code=status, headers=all_headers)


def _fault_headers(fault: Fault) -> dict[str, str]:
    if fault.retry_after is None:
        return {}
    return {
        "retry-after": str(max(0, math.ceil(fault.retry_after))),
        "retry-after-ms": str(max(0, round(fault.retry_after * 1000))),
    }


# ---------------------------------------------------------------------------------------------------------------
# Request parsing
# ---------------------------------------------------------------------------------------------------------------


def _blocks_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    parts.append(block["text"])
                elif block.get("type") in ("image", "document"):
                    parts.append(f"[{block['type']}]")
    return "\n".join(parts)


def _parse_messages(system: Any, messages: list[Any]) -> list[ChatTurn]:
    turns: list[ChatTurn] = []
    if system:
        turns.append(ChatTurn(role="system", text=_blocks_text(system)))
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "user"))
        content = message.get("content")
        if isinstance(content, str):
            turns.append(ChatTurn(role=role, text=content))
            continue
        texts: list[str] = []
        calls: list[ToolCall] = []
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "tool_result":
                turns.append(
                    ChatTurn(
                        role="tool", text=_blocks_text(block.get("content")), tool_call_id=block.get("tool_use_id")
                    )
                )
            elif kind == "tool_use":
                tool_input = block.get("input")
                calls.append(
                    ToolCall(
                        name=str(block.get("name", "")),
                        arguments=tool_input if isinstance(tool_input, dict) else {},
                        id=block.get("id"),
                    )
                )
            else:
                text = _blocks_text([block])
                if text:
                    texts.append(text)
        if texts or calls:
            turns.append(ChatTurn(role=role, text="\n".join(texts), tool_calls=calls))
    return turns


def _parse_tools(tools: Any) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    for tool in tools or []:
        # Server tools (web search, code execution...) have a versioned ``type`` and no input schema.
        if not isinstance(tool, dict) or not tool.get("name") or "input_schema" not in tool:
            continue
        schema = tool.get("input_schema")
        specs.append(
            ToolSpec(
                name=str(tool["name"]),
                description=str(tool.get("description") or ""),
                parameters=schema if isinstance(schema, dict) else {},
            )
        )
    return specs


def _parse_tool_choice(choice: Any) -> tuple[ToolChoiceMode, str | None]:
    if not isinstance(choice, dict):
        return "auto", None
    kind = choice.get("type")
    if kind == "none":
        return "none", None
    if kind == "any":
        return "required", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return "forced", str(choice["name"])
    return "auto", None


def parse_messages_request(body: dict[str, Any]) -> ChatRequest:
    tool_choice, forced = _parse_tool_choice(body.get("tool_choice"))
    schema: dict[str, Any] | None = None
    output_config = body.get("output_config")
    output_format = output_config.get("format") if isinstance(output_config, dict) else None
    if output_format is None:
        output_format = body.get("output_format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        raw_schema = output_format.get("schema")
        schema = raw_schema if isinstance(raw_schema, dict) else {}
    max_tokens = body.get("max_tokens")
    return ChatRequest(
        provider="anthropic",
        model=str(body.get("model", "")),
        messages=_parse_messages(body.get("system"), body.get("messages") or []),
        tools=_parse_tools(body.get("tools")),
        tool_choice=tool_choice,
        forced_tool=forced,
        response_schema=schema,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        stream=bool(body.get("stream")),
        raw=body,
    )


# ---------------------------------------------------------------------------------------------------------------
# Response building
# ---------------------------------------------------------------------------------------------------------------


def _usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    }


def _with_ids(reply: MockReply) -> MockReply:
    calls = [ToolCall(name=c.name, arguments=c.arguments, id=c.id or random_id("toolu_")) for c in reply.tool_calls]
    return MockReply(text=reply.text, tool_calls=calls, finish=reply.finish)


def _content_blocks(reply: MockReply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text is not None or not reply.tool_calls:
        blocks.append({"type": "text", "text": reply.text or ""})
    for call in reply.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments_dict()})
    return blocks


def message_body(reply: MockReply, *, model: str, input_tokens: int, message_id: str | None = None) -> dict[str, Any]:
    return {
        "id": message_id or random_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _content_blocks(reply),
        "stop_reason": _STOP_REASONS[reply.finish_reason()],
        "stop_sequence": None,
        "usage": _usage(input_tokens, estimate_tokens(reply.output_text())),
    }


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream_events(
    reply: MockReply,
    *,
    model: str,
    input_tokens: int,
    behaviour: MockBehaviour,
    fault: Fault | None = None,
) -> AsyncIterator[str]:
    """The SSE body of a streamed message, in the event order the real API uses."""
    delay = behaviour.stream_delay_ms / 1000

    async def pause() -> None:
        if delay > 0:
            await asyncio.sleep(delay)

    def error_event(fault: Fault) -> str:
        return _event("error", {"type": "error", "error": _error_object(fault.status, fault.message)})

    start = message_body(reply, model=model, input_tokens=input_tokens)
    start.update(content=[], stop_reason=None, stop_sequence=None, usage=_usage(input_tokens, 1))
    yield _event("message_start", {"type": "message_start", "message": start})
    index = 0
    if reply.text is not None or not reply.tool_calls:
        yield _event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        )
        yield _event("ping", {"type": "ping"})
        for piece in split_text(reply.text or ""):
            await pause()
            yield _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}},
            )
            if fault is not None:
                yield error_event(fault)
                return
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    for call in reply.tool_calls:
        await pause()
        yield _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}},
            },
        )
        for piece in ["", *split_chunks(call.arguments_json())]:
            await pause()
            yield _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
        index += 1
    if fault is not None:
        yield error_event(fault)
        return
    await pause()
    usage = _usage(input_tokens, estimate_tokens(reply.output_text()))
    usage.pop("cache_creation")
    usage.pop("service_tier")
    yield _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP_REASONS[reply.finish_reason()], "stop_sequence": None},
            "usage": usage,
        },
    )
    yield _event("message_stop", {"type": "message_stop"})


def _display_name(model_id: str) -> str:
    return " ".join(part.capitalize() if not part[:1].isdigit() else part for part in model_id.split("-"))


def _model_object(model_id: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": _display_name(model_id), "created_at": MODEL_CREATED_AT}


# ---------------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------------


def create_anthropic_app(behaviour: MockBehaviour | None = None) -> Starlette:
    """An ASGI app implementing the Anthropic Messages API subset, steered by ``behaviour``."""
    behaviour = behaviour if behaviour is not None else MockBehaviour(kind="anthropic")

    async def pre_checks(request: Request) -> Response | None:
        if behaviour.latency_ms > 0:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        key = request.headers.get("x-api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            return anthropic_error(401, "x-api-key header is required")
        if not behaviour.is_valid_key(key):
            return anthropic_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        return None

    async def read_body(request: Request) -> dict[str, Any] | Response:
        try:
            body = await request.json()
        except ValueError:
            return anthropic_error(400, "There was an issue with your request body: invalid JSON")
        if not isinstance(body, dict):
            return anthropic_error(400, "The request body must be a JSON object")
        if not isinstance(body.get("model"), str) or not body["model"]:
            return anthropic_error(400, "model: Field required")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return anthropic_error(400, "messages: at least one message is required")
        if behaviour.strict_models and body["model"] not in behaviour.models:
            return anthropic_error(404, f"model: {body['model']}")
        return body

    async def messages(request: Request) -> Response:
        denied = await pre_checks(request)
        if denied is not None:
            return denied
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            return anthropic_error(400, "max_tokens: Field required")
        if max_tokens < 1:
            return anthropic_error(400, "max_tokens: Input should be greater than or equal to 1")
        stream = bool(body.get("stream"))
        fault = behaviour.take_fault(request_key(request.headers))
        if fault is not None and not (fault.during_stream and stream):
            return anthropic_error(fault.status, fault.message, headers=_fault_headers(fault))

        parsed = parse_messages_request(body)
        reply = _with_ids(truncate_to_tokens(behaviour.next_reply(parsed), parsed.max_tokens))
        input_tokens = estimate_prompt_tokens(body.get("system"), body.get("messages"), body.get("tools"))
        headers = {"request-id": random_id("req_", 24)}
        model = str(body["model"])
        if stream:
            events = stream_events(reply, model=model, input_tokens=input_tokens, behaviour=behaviour, fault=fault)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(message_body(reply, model=model, input_tokens=input_tokens), headers=headers)

    async def count_tokens(request: Request) -> Response:
        denied = await pre_checks(request)
        if denied is not None:
            return denied
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        tokens = estimate_prompt_tokens(body.get("system"), body.get("messages"), body.get("tools"))
        return JSONResponse({"input_tokens": tokens})

    async def list_models(request: Request) -> Response:
        denied = await pre_checks(request)
        if denied is not None:
            return denied
        ids = list(behaviour.models)
        after_id = request.query_params.get("after_id")
        before_id = request.query_params.get("before_id")
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            return anthropic_error(400, "limit: Input should be a valid integer")
        if not 1 <= limit <= 1000:
            return anthropic_error(400, "limit: Input should be between 1 and 1000")
        if after_id is not None:
            ids = ids[ids.index(after_id) + 1 :] if after_id in ids else []
            page, has_more = ids[:limit], len(ids) > limit
        elif before_id is not None:
            ids = ids[: ids.index(before_id)] if before_id in ids else []
            page, has_more = ids[-limit:], len(ids) > limit
        else:
            page, has_more = ids[:limit], len(ids) > limit
        return JSONResponse(
            {
                "data": [_model_object(m) for m in page],
                "has_more": has_more,
                "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None,
            }
        )

    async def retrieve_model(request: Request) -> Response:
        denied = await pre_checks(request)
        if denied is not None:
            return denied
        model_id = str(request.path_params["model"])
        if model_id not in behaviour.models:
            return anthropic_error(404, f"model: {model_id}")
        return JSONResponse(_model_object(model_id))

    routes = [
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        *admin_routes(behaviour),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return anthropic_error(404, "Not Found")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return anthropic_error(405, f"Method not allowed ({request.method} {request.url.path})")

    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestRecorder, behaviour=behaviour)],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.behaviour = behaviour
    return app
