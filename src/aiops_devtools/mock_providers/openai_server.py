"""A local server speaking the OpenAI (and Azure OpenAI) Chat Completions wire protocol.

Routes:

* ``POST /v1/chat/completions`` -- non-streaming and SSE streaming (``stream: true``, with
  ``stream_options.include_usage``), tool calls, ``response_format`` ``json_schema`` / ``json_object``.
* ``GET /v1/models`` and ``GET /v1/models/{model}``.
* Azure: ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` and
  ``GET /openai/models?api-version=...`` authenticated with the ``api-key`` header (or an Entra ``Bearer``
  token), plus the v1 form ``/openai/v1/chat/completions`` and ``/openai/v1/models``.
* ``/_mock/...`` admin routes, see :func:`~aiops_devtools.mock_providers.behaviour.admin_routes`.

What the model answers is decided by the shared :class:`~aiops_devtools.mock_providers.behaviour.MockBehaviour`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
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

MODEL_CREATED = 1_700_000_000
SYSTEM_FINGERPRINT = "fp_mock"

_ERROR_TYPES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Access denied."),
    404: ("invalid_request_error", "not_found", "Not found."),
    408: ("server_error", "timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", "service_unavailable", "The engine is currently overloaded, please try again later."),
}


def openai_error(
    status: int,
    message: str | None = None,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    default_type, default_code, default_message = _ERROR_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    body = {
        "error": {
            "message": message or default_message,
            "type": type_ or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
    }
    all_headers = {"x-request-id": random_id("req_", 32)}
    all_headers.update(headers or {})
    return JSONResponse(body, status_code=status, headers=all_headers)


def _fault_headers(fault: Fault) -> dict[str, str]:
    if fault.retry_after is None:
        return {}
    return {
        "retry-after": str(max(0, math.ceil(fault.retry_after))),
        "retry-after-ms": str(max(0, round(fault.retry_after * 1000))),
    }


def _fault_error_object(fault: Fault) -> dict[str, Any]:
    default_type, default_code, default_message = _ERROR_TYPES.get(fault.status, ("server_error", None, "Error."))
    return {"message": fault.message or default_message, "type": default_type, "param": None, "code": default_code}


# ---------------------------------------------------------------------------------------------------------------
# Request parsing
# ---------------------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    parts.append(part["text"])
                elif part.get("type") in ("image_url", "input_image"):
                    parts.append("[image]")
                elif part.get("type") in ("input_audio", "file"):
                    parts.append(f"[{part['type']}]")
        return "\n".join(parts)
    return str(content)


def _parse_messages(messages: list[Any]) -> list[ChatTurn]:
    turns: list[ChatTurn] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role", "user"))
        if role == "developer":
            role = "system"
        if role == "function":
            role = "tool"
        calls: list[ToolCall] = []
        for raw in message.get("tool_calls") or []:
            if not isinstance(raw, dict):
                continue
            function = raw.get("function") or {}
            calls.append(
                ToolCall(
                    name=str(function.get("name", "")),
                    arguments=str(function.get("arguments", "")),
                    id=raw.get("id"),
                )
            )
        turns.append(
            ChatTurn(
                role=role,
                text=_content_text(message.get("content")),
                tool_calls=calls,
                tool_call_id=message.get("tool_call_id"),
            )
        )
    return turns


def _parse_tools(tools: Any) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function") or {}
        if not isinstance(function, dict) or not function.get("name"):
            continue
        parameters = function.get("parameters")
        specs.append(
            ToolSpec(
                name=str(function["name"]),
                description=str(function.get("description") or ""),
                parameters=parameters if isinstance(parameters, dict) else {},
            )
        )
    return specs


def _parse_tool_choice(choice: Any) -> tuple[ToolChoiceMode, str | None]:
    if choice in ("none", "auto", "required"):
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function") or {}
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str):
            return "forced", name
    return "auto", None


def parse_chat_request(body: dict[str, Any], *, model: str) -> ChatRequest:
    tool_choice, forced = _parse_tool_choice(body.get("tool_choice"))
    response_format = body.get("response_format")
    schema: dict[str, Any] | None = None
    json_mode = False
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema") or {}
            raw_schema = spec.get("schema") if isinstance(spec, dict) else None
            schema = raw_schema if isinstance(raw_schema, dict) else {}
        elif response_format.get("type") == "json_object":
            json_mode = True
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    return ChatRequest(
        provider="openai",
        model=model,
        messages=_parse_messages(body.get("messages") or []),
        tools=_parse_tools(body.get("tools")),
        tool_choice=tool_choice,
        forced_tool=forced,
        response_schema=schema,
        json_mode=json_mode,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        stream=bool(body.get("stream")),
        raw=body,
    )


# ---------------------------------------------------------------------------------------------------------------
# Response building
# ---------------------------------------------------------------------------------------------------------------


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _with_ids(reply: MockReply) -> MockReply:
    calls = [ToolCall(name=c.name, arguments=c.arguments, id=c.id or random_id("call_")) for c in reply.tool_calls]
    return MockReply(text=reply.text, tool_calls=calls, finish=reply.finish)


_CONTENT_FILTER_OK = {
    name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual", "violence")
}


def completion_body(
    reply: MockReply, *, model: str, prompt_tokens: int, azure: bool = False, completion_id: str | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text if reply.text is not None or not reply.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json()}}
            for call in reply.tool_calls
        ]
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason()}
    body: dict[str, Any] = {
        "id": completion_id or random_id("chatcmpl-", 29),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(prompt_tokens, estimate_tokens(reply.output_text())),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    if azure:
        choice["content_filter_results"] = _CONTENT_FILTER_OK
        body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": _CONTENT_FILTER_OK}]
        body.pop("service_tier")
    return body


def _sse(data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"


async def stream_events(
    reply: MockReply,
    *,
    model: str,
    prompt_tokens: int,
    include_usage: bool,
    behaviour: MockBehaviour,
    fault: Fault | None = None,
) -> AsyncIterator[str]:
    """The SSE body of a streamed completion, ending with ``data: [DONE]``."""
    completion_id = random_id("chatcmpl-", 29)
    created = int(time.time())
    delay = behaviour.stream_delay_ms / 1000

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        data: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            data["usage"] = None
        return _sse(data)

    async def pause() -> None:
        if delay > 0:
            await asyncio.sleep(delay)

    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if reply.text is None and reply.tool_calls:
        first["content"] = None
    yield chunk(first)
    for piece in split_text(reply.text or ""):
        await pause()
        yield chunk({"content": piece})
        if fault is not None:
            yield _sse({"error": _fault_error_object(fault)})
            return
    for index, call in enumerate(reply.tool_calls):
        await pause()
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        for piece in split_chunks(call.arguments_json()):
            await pause()
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    if fault is not None:
        yield _sse({"error": _fault_error_object(fault)})
        return
    await pause()
    yield chunk({}, reply.finish_reason())
    if include_usage:
        yield _sse(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT,
                "choices": [],
                "usage": _usage(prompt_tokens, estimate_tokens(reply.output_text())),
            }
        )
    yield _sse("[DONE]")


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": "mock"}


# ---------------------------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------------------------


def create_openai_app(behaviour: MockBehaviour | None = None) -> Starlette:
    """An ASGI app implementing the OpenAI / Azure OpenAI subset, steered by ``behaviour``."""
    behaviour = behaviour if behaviour is not None else MockBehaviour(kind="openai")

    async def pre_checks(request: Request, *, azure: bool, needs_api_version: bool) -> Response | None:
        if behaviour.latency_ms > 0:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        key: str | None = None
        if azure:
            key = request.headers.get("api-key")
        authorization = request.headers.get("authorization", "")
        if key is None and authorization:
            scheme, _, token = authorization.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
            if key is None:
                return openai_error(401, "Invalid authorization header; expected 'Bearer <key>'.")
        if key is None:
            message = (
                "Access denied due to missing subscription key. Make sure to include the api-key header."
                if azure
                else "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return openai_error(401, message, code="missing_api_key" if not azure else "401")
        if not behaviour.is_valid_key(key):
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint."
                if azure
                else f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            return openai_error(401, message, code="invalid_api_key" if not azure else "401")
        if needs_api_version and not request.query_params.get("api-version"):
            return openai_error(404, "Resource not found", code="404")
        return None

    async def chat(request: Request, *, deployment: str | None, azure: bool, needs_api_version: bool) -> Response:
        denied = await pre_checks(request, azure=azure, needs_api_version=needs_api_version)
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return openai_error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return openai_error(400, "The request body must be a JSON object.")
        model = body.get("model") or deployment
        if not isinstance(model, str) or not model:
            return openai_error(400, "you must provide a model parameter", param="model", code=None)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return openai_error(
                400, "Invalid 'messages': empty array. Expected an array with minimum length 1.", param="messages"
            )
        if behaviour.strict_models and deployment is None and model not in behaviour.models:
            return openai_error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        if deployment is not None and behaviour.strict_models and deployment not in behaviour.models:
            return openai_error(404, "The API deployment for this resource does not exist.", code="DeploymentNotFound")
        stream = bool(body.get("stream"))
        if behaviour.reject_tool_choice_required and body.get("tool_choice") == "required":
            # llama.cpp's server: its chat template cannot force a tool call.
            return openai_error(500, 'Unsupported tool_choice: "required"')
        response_format = body.get("response_format")
        wants_schema = isinstance(response_format, dict) and response_format.get("type") == "json_schema"
        if behaviour.reject_json_schema and wants_schema:
            return openai_error(400, "response_format type 'json_schema' is not supported", param="response_format")
        fault = behaviour.take_fault(request_key(request.headers))
        if fault is not None and not (fault.during_stream and stream):
            return openai_error(fault.status, fault.message, headers=_fault_headers(fault))

        parsed = parse_chat_request(body, model=model)
        reply = _with_ids(truncate_to_tokens(behaviour.next_reply(parsed), parsed.max_tokens))
        prompt_tokens = estimate_prompt_tokens(body.get("messages"), body.get("tools"), body.get("response_format"))
        headers = {"x-request-id": random_id("req_", 32), "openai-processing-ms": "1"}
        if stream:
            options = body.get("stream_options")
            include_usage = behaviour.stream_usage and isinstance(options, dict) and bool(options.get("include_usage"))
            events = stream_events(
                reply,
                model=model,
                prompt_tokens=prompt_tokens,
                include_usage=include_usage,
                behaviour=behaviour,
                fault=fault,
            )
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        return JSONResponse(
            completion_body(reply, model=model, prompt_tokens=prompt_tokens, azure=azure), headers=headers
        )

    async def chat_completions(request: Request) -> Response:
        return await chat(request, deployment=None, azure=False, needs_api_version=False)

    async def azure_chat_completions(request: Request) -> Response:
        deployment = str(request.path_params["deployment"])
        return await chat(request, deployment=deployment, azure=True, needs_api_version=True)

    async def azure_v1_chat_completions(request: Request) -> Response:
        return await chat(request, deployment=None, azure=True, needs_api_version=False)

    async def list_models(request: Request, *, azure: bool, needs_api_version: bool) -> Response:
        denied = await pre_checks(request, azure=azure, needs_api_version=needs_api_version)
        if denied is not None:
            return denied
        return JSONResponse({"object": "list", "data": [_model_object(m) for m in list(behaviour.models)]})

    async def models(request: Request) -> Response:
        return await list_models(request, azure=False, needs_api_version=False)

    async def azure_models(request: Request) -> Response:
        return await list_models(request, azure=True, needs_api_version=True)

    async def azure_v1_models(request: Request) -> Response:
        return await list_models(request, azure=True, needs_api_version=False)

    async def ollama_tags(request: Request) -> Response:
        # Ollama's native catalogue (its OpenAI-compatible API lives under /v1 on the same server).
        # Ollama itself takes no key; a key sent anyway must still be a valid one here.
        if request.headers.get("authorization"):
            denied = await pre_checks(request, azure=False, needs_api_version=False)
            if denied is not None:
                return denied
        return JSONResponse(
            {
                "models": [
                    {"name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z", "size": 0, "details": {}}
                    for m in list(behaviour.models)
                ]
            }
        )

    async def retrieve_model(request: Request) -> Response:
        denied = await pre_checks(request, azure=False, needs_api_version=False)
        if denied is not None:
            return denied
        model_id = str(request.path_params["model"])
        if model_id not in behaviour.models:
            return openai_error(
                404,
                f"The model '{model_id}' does not exist",
                code="model_not_found",
                param="model",
            )
        return JSONResponse(_model_object(model_id))

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/openai/deployments/{deployment}/chat/completions", azure_chat_completions, methods=["POST"]),
        Route("/openai/models", azure_models, methods=["GET"]),
        Route("/openai/v1/chat/completions", azure_v1_chat_completions, methods=["POST"]),
        Route("/openai/v1/models", azure_v1_models, methods=["GET"]),
        Route("/api/tags", ollama_tags, methods=["GET"]),
        *admin_routes(behaviour),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return openai_error(404, f"Invalid URL ({request.method} {request.url.path})", code=None)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return openai_error(405, f"Method not allowed ({request.method} {request.url.path})", code=None)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestRecorder, behaviour=behaviour)],
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.behaviour = behaviour
    return app
