"""Run-time behaviour shared by the mock OpenAI and Anthropic servers.

A :class:`MockBehaviour` holds everything a test may want to steer: the accepted API keys, the advertised
model ids, a queue of scripted replies, injected faults, per-request latency, and a log of the requests the
server received (with credentials redacted). It is thread safe: the server runs in a background thread while
the test mutates the object from its own thread. The same settings can be changed over HTTP through the
``/_mock/...`` admin routes, see :func:`admin_routes`.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ProviderKind = Literal["openai", "anthropic"]

DEFAULT_API_KEY = "mock-api-key"
DEFAULT_OPENAI_MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini")
DEFAULT_ANTHROPIC_MODELS: tuple[str, ...] = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6")

ADMIN_PREFIX = "/_mock"
ADMIN_TOKEN_HEADER = "x-mock-admin-token"  # noqa: S105 - a header name, not a secret
REDACTED = "REDACTED"

# Header and query-parameter names whose values are credentials and must never reach the request log.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie", "set-cookie", ADMIN_TOKEN_HEADER}
)
_SECRET_QUERY = frozenset({"key", "api-key", "api_key", "apikey", "access_token", "token"})

_ID_ALPHABET = string.ascii_letters + string.digits


def random_id(prefix: str, length: int = 24) -> str:
    """An id shaped like the providers' ones, e.g. ``call_...`` or ``toolu_...``."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


# ---------------------------------------------------------------------------------------------------------------
# Replies and faults
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ToolCall:
    """One tool call the mock model makes. ``arguments`` may be a raw string to send malformed JSON on purpose."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, separators=(",", ":"))

    def arguments_dict(self) -> dict[str, Any]:
        if isinstance(self.arguments, dict):
            return self.arguments
        try:
            parsed = json.loads(self.arguments)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}


@dataclass
class MockReply:
    """What the mock model answers: text, tool calls, or both (text first, as the providers do).

    ``finish`` forces the finish reason: ``"stop"`` / ``"length"`` / ``"tool_calls"`` (OpenAI names; they are
    mapped to ``end_turn`` / ``max_tokens`` / ``tool_use`` for Anthropic). By default it is derived from the
    content.
    """

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: Literal["stop", "length", "tool_calls"] | None = None

    @classmethod
    def of_text(cls, text: str) -> MockReply:
        return cls(text=text)

    @classmethod
    def of_json(cls, value: Any) -> MockReply:
        return cls(text=json.dumps(value))

    @classmethod
    def of_tool_call(cls, name: str, arguments: dict[str, Any] | str | None = None, id: str | None = None) -> MockReply:
        return cls(tool_calls=[ToolCall(name=name, arguments={} if arguments is None else arguments, id=id)])

    def finish_reason(self) -> Literal["stop", "length", "tool_calls"]:
        if self.finish is not None:
            return self.finish
        return "tool_calls" if self.tool_calls else "stop"

    def output_text(self) -> str:
        return (self.text or "") + "".join(call.arguments_json() for call in self.tool_calls)


@dataclass
class Fault:
    """Answer the next ``count`` model requests with HTTP ``status`` instead of a completion.

    ``retry_after`` (seconds, may be fractional) sets the ``retry-after`` and ``retry-after-ms`` headers.
    With ``during_stream`` a streaming request first gets a 200 and some output, then an in-stream error event
    (non-streaming requests get the plain HTTP error).
    """

    status: int = 429
    count: int = 1
    retry_after: float | None = None
    message: str | None = None
    during_stream: bool = False
    only_key: str | None = None  # fault only requests made with this API key (a rate-limited key)


def request_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request authenticated with, from whichever header its provider uses."""
    for name in ("api-key", "x-api-key"):
        if headers.get(name):
            return headers[name]
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass
class RecordedRequest:
    """One request as the server saw it, with credential headers and query parameters redacted."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    timestamp: float
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
            "timestamp": self.timestamp,
            "status": self.status,
        }


# ---------------------------------------------------------------------------------------------------------------
# Provider-neutral view of a chat request
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ToolSpec:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatTurn:
    """One message of the conversation; ``role`` is system, user, assistant or tool."""

    role: str
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None


ToolChoiceMode = Literal["auto", "none", "required", "forced"]


@dataclass
class ChatRequest:
    """The parts of a chat request that decide the reply, whichever provider sent it."""

    provider: ProviderKind
    model: str
    messages: list[ChatTurn]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoiceMode = "auto"
    forced_tool: str | None = None
    response_schema: dict[str, Any] | None = None
    json_mode: bool = False
    max_tokens: int | None = None
    stream: bool = False
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def has_tool_result(self) -> bool:
        return any(turn.role == "tool" for turn in self.messages)

    def last_input(self) -> ChatTurn | None:
        for turn in reversed(self.messages):
            if turn.role in ("user", "tool"):
                return turn
        return None


Responder = Callable[[ChatRequest], MockReply | None]


def summarize(text: str, limit: int = 120) -> str:
    collapsed = " ".join(text.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 3] + "..."


def estimate_tokens(text: str) -> int:
    """Deterministic token estimate: one token per four characters, at least one."""
    return max(1, math.ceil(len(text) / 4))


def estimate_prompt_tokens(*parts: Any) -> int:
    text = "".join(json.dumps(part, sort_keys=True, separators=(",", ":"), default=str) for part in parts)
    return estimate_tokens(text)


def split_text(text: str) -> list[str]:
    """Split into word-sized stream deltas whose concatenation is ``text``."""
    pieces = re.findall(r"\s*\S+|\s+$", text)
    return pieces or ([text] if text else [])


def split_chunks(text: str, size: int = 12) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


# ---------------------------------------------------------------------------------------------------------------
# JSON-schema sample values
# ---------------------------------------------------------------------------------------------------------------

_FORMAT_SAMPLES: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00",
    "email": "x@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def sample_from_schema(
    schema: Mapping[str, Any], *, required_only: bool = True, root: Mapping[str, Any] | None = None, depth: int = 0
) -> Any:
    """Build a value that satisfies ``schema``: strings ``"x"``, numbers ``1``, booleans ``true``...

    With ``required_only`` objects get only their required properties, otherwise all of them.
    """
    root = schema if root is None else root
    if depth > 12:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return sample_from_schema(_resolve_ref(root, ref), required_only=required_only, root=root, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            non_null = [o for o in options if isinstance(o, Mapping) and o.get("type") != "null"]
            choice = non_null[0] if non_null else options[0]
            if combinator == "allOf":
                merged: dict[str, Any] = {}
                for option in options:
                    if isinstance(option, Mapping):
                        merged.update(option)
                choice = merged
            return sample_from_schema(choice, required_only=required_only, root=root, depth=depth + 1)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"

    if kind == "object":
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        names = [name for name in properties if name in required] if required_only else list(properties)
        return {
            name: sample_from_schema(properties[name], required_only=required_only, root=root, depth=depth + 1)
            for name in names
        }
    if kind == "array":
        min_items = int(schema.get("minItems") or 0)
        items = schema.get("items")
        if min_items <= 0 or not isinstance(items, Mapping):
            return []
        item = sample_from_schema(items, required_only=required_only, root=root, depth=depth + 1)
        return [item for _ in range(min_items)]
    if kind in ("integer", "number"):
        return _sample_number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
        return _FORMAT_SAMPLES[fmt]
    min_length = int(schema.get("minLength") or 1)
    return "x" * max(1, min_length)


def _sample_number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 1
    minimum = schema.get("minimum")
    maximum = schema.get("maximum")
    exclusive_minimum = schema.get("exclusiveMinimum")
    exclusive_maximum = schema.get("exclusiveMaximum")
    if isinstance(minimum, int | float) and value < minimum:
        value = minimum
    if isinstance(exclusive_minimum, int | float) and value <= exclusive_minimum:
        value = exclusive_minimum + 1
    if isinstance(maximum, int | float) and value > maximum:
        value = maximum
    if isinstance(exclusive_maximum, int | float) and value >= exclusive_maximum:
        value = exclusive_maximum - 1
    return int(value) if integer else value


def _resolve_ref(root: Mapping[str, Any], ref: str) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            return {}
        node = node[key]
    return node if isinstance(node, Mapping) else {}


# ---------------------------------------------------------------------------------------------------------------
# The behaviour object
# ---------------------------------------------------------------------------------------------------------------


class MockBehaviour:
    """Mutable, thread-safe settings of one mock server.

    Attributes (all may be changed while the server runs):

    * ``valid_keys`` -- API keys that authenticate; ``allow_any_key`` accepts any non-empty key instead.
    * ``models`` -- model ids listed by ``GET /v1/models``; with ``strict_models`` a chat request for another
      model gets the provider's 404.
    * ``latency_ms`` -- delay added before every provider-API request is answered.
    * ``stream_delay_ms`` -- delay between streamed events.
    * ``responder`` -- optional callable consulted when the script queue is empty; returning ``None`` falls back
      to the default behaviour.
    * ``admin_token`` -- if set, the ``/_mock`` admin routes require it in the ``x-mock-admin-token`` header.
    * Dialects of servers that only partly speak the protocol (OpenAI kind): ``reject_tool_choice_required``
      answers a request with ``tool_choice: "required"`` with a 500, as llama.cpp's server and older vLLM and
      Ollama do; ``reject_json_schema`` answers a ``response_format`` JSON Schema with a 400; with
      ``stream_usage`` false a stream never reports usage, whatever ``stream_options`` ask.

    Scripted replies (:meth:`queue_text`, :meth:`queue_tool_call`, :meth:`queue`) and faults (:meth:`fail_next`)
    are consumed one per model request, in order.
    """

    def __init__(
        self,
        *,
        keys: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        kind: ProviderKind = "openai",
        allow_any_key: bool = False,
        strict_models: bool = False,
        latency_ms: float = 0.0,
        stream_delay_ms: float = 0.0,
        responder: Responder | None = None,
        admin_token: str | None = None,
        max_log_entries: int = 1000,
    ) -> None:
        default_models = DEFAULT_OPENAI_MODELS if kind == "openai" else DEFAULT_ANTHROPIC_MODELS
        self._lock = threading.RLock()
        self._initial_keys = set(keys) if keys is not None else {DEFAULT_API_KEY}
        self._initial_models = list(models) if models is not None else list(default_models)
        self.valid_keys: set[str] = set(self._initial_keys)
        self.models: list[str] = list(self._initial_models)
        self.allow_any_key = allow_any_key
        self.strict_models = strict_models
        self.latency_ms = latency_ms
        self.stream_delay_ms = stream_delay_ms
        self.responder = responder
        self.admin_token = admin_token
        self.reject_tool_choice_required = False
        self.reject_json_schema = False
        self.stream_usage = True
        self._initial_settings = (allow_any_key, strict_models, latency_ms, stream_delay_ms, responder)
        self._script: deque[MockReply] = deque()
        self._faults: deque[Fault] = deque()
        self._log: deque[RecordedRequest] = deque(maxlen=max_log_entries)

    # -- keys ------------------------------------------------------------------------------------------------
    def set_keys(self, keys: Iterable[str]) -> None:
        with self._lock:
            self.valid_keys = set(keys)

    def add_key(self, key: str) -> None:
        with self._lock:
            self.valid_keys = {*self.valid_keys, key}

    def remove_key(self, key: str) -> None:
        with self._lock:
            self.valid_keys = self.valid_keys - {key}

    def is_valid_key(self, key: str | None) -> bool:
        if not key:
            return False
        if self.allow_any_key:
            return True
        with self._lock:
            return key in self.valid_keys

    # -- script ----------------------------------------------------------------------------------------------
    def queue(self, *replies: MockReply) -> None:
        with self._lock:
            self._script.extend(replies)

    def queue_text(self, *texts: str) -> None:
        self.queue(*(MockReply(text=text) for text in texts))

    def queue_json(self, value: Any) -> None:
        self.queue(MockReply.of_json(value))

    def queue_tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | str | None = None,
        *,
        id: str | None = None,
        text: str | None = None,
    ) -> None:
        call = ToolCall(name=name, arguments={} if arguments is None else arguments, id=id)
        self.queue(MockReply(text=text, tool_calls=[call]))

    def clear_script(self) -> None:
        with self._lock:
            self._script.clear()

    @property
    def pending_replies(self) -> int:
        with self._lock:
            return len(self._script)

    # -- faults ----------------------------------------------------------------------------------------------
    def fail_next(
        self,
        count: int = 1,
        status: int = 429,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        during_stream: bool = False,
        only_key: str | None = None,
    ) -> None:
        """Answer the next ``count`` model requests with ``status`` (429, 500, 503, 529...);
        with ``only_key``, only requests made with that API key."""
        if count <= 0:
            return
        with self._lock:
            self._faults.append(
                Fault(
                    status=status,
                    count=count,
                    retry_after=retry_after,
                    message=message,
                    during_stream=during_stream,
                    only_key=only_key,
                )
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(fault.count for fault in self._faults)

    def take_fault(self, key: str | None = None) -> Fault | None:
        """The first pending fault that applies to a request made with ``key``, consumed once."""
        with self._lock:
            head = next((f for f in self._faults if f.only_key is None or f.only_key == key), None)
            if head is None:
                return None
            head.count -= 1
            if head.count <= 0:
                self._faults.remove(head)
            return Fault(
                status=head.status,
                count=1,
                retry_after=head.retry_after,
                message=head.message,
                during_stream=head.during_stream,
                only_key=head.only_key,
            )

    # -- request log -----------------------------------------------------------------------------------------
    def record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def requests_to(self, path_suffix: str) -> list[RecordedRequest]:
        return [entry for entry in self.requests if entry.path.endswith(path_suffix)]

    def last_request(self, path_suffix: str | None = None) -> RecordedRequest | None:
        entries = self.requests if path_suffix is None else self.requests_to(path_suffix)
        return entries[-1] if entries else None

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # -- whole state -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the construction-time settings, with an empty script, no faults and an empty log."""
        with self._lock:
            self.valid_keys = set(self._initial_keys)
            self.models = list(self._initial_models)
            (self.allow_any_key, self.strict_models, self.latency_ms, self.stream_delay_ms, self.responder) = (
                self._initial_settings
            )
            self.reject_tool_choice_required = self.reject_json_schema = False
            self.stream_usage = True
            self._script.clear()
            self._faults.clear()
            self._log.clear()

    def snapshot(self) -> dict[str, Any]:
        """The settings as JSON (key values are not included, only their number)."""
        with self._lock:
            return {
                "key_count": len(self.valid_keys),
                "allow_any_key": self.allow_any_key,
                "models": list(self.models),
                "strict_models": self.strict_models,
                "latency_ms": self.latency_ms,
                "stream_delay_ms": self.stream_delay_ms,
                "reject_tool_choice_required": self.reject_tool_choice_required,
                "reject_json_schema": self.reject_json_schema,
                "stream_usage": self.stream_usage,
                "pending_replies": len(self._script),
                "faults": [
                    {
                        "status": f.status,
                        "count": f.count,
                        "retry_after": f.retry_after,
                        "message": f.message,
                        "during_stream": f.during_stream,
                    }
                    for f in self._faults
                ],
                "request_count": len(self._log),
            }

    def apply_update(self, update: BehaviourUpdate) -> None:
        with self._lock:
            if update.reset:
                self.reset()
            if update.valid_keys is not None:
                self.set_keys(update.valid_keys)
            for key in update.add_keys:
                self.add_key(key)
            for key in update.remove_keys:
                self.remove_key(key)
            if update.allow_any_key is not None:
                self.allow_any_key = update.allow_any_key
            if update.models is not None:
                self.models = list(update.models)
            if update.strict_models is not None:
                self.strict_models = update.strict_models
            if update.latency_ms is not None:
                self.latency_ms = update.latency_ms
            if update.stream_delay_ms is not None:
                self.stream_delay_ms = update.stream_delay_ms
            for name in ("reject_tool_choice_required", "reject_json_schema", "stream_usage"):
                value = getattr(update, name)
                if value is not None:
                    setattr(self, name, value)
            if update.clear_script:
                self._script.clear()
            if update.clear_faults:
                self._faults.clear()
            if update.clear_requests:
                self._log.clear()
            for item in update.script:
                self._script.append(item.to_reply())
            for fault in update.faults:
                self.fail_next(
                    fault.count,
                    fault.status,
                    retry_after=fault.retry_after,
                    message=fault.message,
                    during_stream=fault.during_stream,
                )

    # -- deciding the reply ----------------------------------------------------------------------------------
    def next_reply(self, request: ChatRequest) -> MockReply:
        """Scripted reply if one is queued, else the responder's, else :func:`default_reply`."""
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            return scripted
        responder = self.responder
        if responder is not None:
            reply = responder(request)
            if reply is not None:
                return reply
        return default_reply(request)


def default_reply(request: ChatRequest) -> MockReply:
    """The unscripted answer.

    If tools are offered (and ``tool_choice`` allows it) and the conversation has no tool result yet -- or a
    tool call is forced -- the first (or forced) tool is called with arguments built from its schema's required
    properties. Otherwise: a JSON document for structured-output requests, else text echoing the last user or
    tool message.
    """
    if request.tools and request.tool_choice != "none":
        tool: ToolSpec | None = None
        if request.tool_choice == "forced" and request.forced_tool:
            tool = next((t for t in request.tools if t.name == request.forced_tool), None)
        elif request.tool_choice == "required" or not request.has_tool_result:
            tool = request.tools[0]
        if tool is not None:
            arguments = sample_from_schema(tool.parameters) if tool.parameters else {}
            return MockReply(tool_calls=[ToolCall(name=tool.name, arguments=arguments)])
    last = request.last_input()
    summary = summarize(last.text) if last is not None else ""
    if request.response_schema is not None:
        return MockReply(text=json.dumps(sample_from_schema(request.response_schema, required_only=False)))
    if request.json_mode:
        return MockReply(text=json.dumps({"answer": summary}))
    if last is None:
        return MockReply(text="Mock reply.")
    if last.role == "tool":
        return MockReply(text=f"Tool result received: {summary}")
    return MockReply(text=f"Mock reply to: {summary}")


def truncate_to_tokens(reply: MockReply, max_tokens: int | None) -> MockReply:
    """Cut a text-only reply that exceeds ``max_tokens`` and mark it as length-limited."""
    if max_tokens is None or reply.tool_calls or reply.text is None or reply.finish is not None:
        return reply
    if estimate_tokens(reply.text) <= max_tokens:
        return reply
    return MockReply(text=reply.text[: max(1, max_tokens) * 4], finish="length")


# ---------------------------------------------------------------------------------------------------------------
# Admin API and request recording
# ---------------------------------------------------------------------------------------------------------------


class ToolCallUpdate(BaseModel):
    name: str
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    id: str | None = None


class ScriptItem(BaseModel):
    """A scripted reply sent over HTTP: ``text``, ``json`` (serialised to text) and/or ``tool_calls``."""

    text: str | None = None
    json_value: Any = Field(default=None, alias="json")
    tool_calls: list[ToolCallUpdate] = Field(default_factory=list)
    finish: Literal["stop", "length", "tool_calls"] | None = None

    def to_reply(self) -> MockReply:
        text = self.text if self.json_value is None else json.dumps(self.json_value)
        calls = [ToolCall(name=c.name, arguments=c.arguments, id=c.id) for c in self.tool_calls]
        return MockReply(text=text, tool_calls=calls, finish=self.finish)


class FaultUpdate(BaseModel):
    status: int = 429
    count: int = 1
    retry_after: float | None = None
    message: str | None = None
    during_stream: bool = False


class BehaviourUpdate(BaseModel):
    """Body of ``POST /_mock/behaviour``. Every field is optional; ``script`` and ``faults`` are appended."""

    reset: bool = False
    valid_keys: list[str] | None = None
    add_keys: list[str] = Field(default_factory=list)
    remove_keys: list[str] = Field(default_factory=list)
    allow_any_key: bool | None = None
    models: list[str] | None = None
    strict_models: bool | None = None
    latency_ms: float | None = None
    stream_delay_ms: float | None = None
    reject_tool_choice_required: bool | None = None
    reject_json_schema: bool | None = None
    stream_usage: bool | None = None
    clear_script: bool = False
    clear_faults: bool = False
    clear_requests: bool = False
    script: list[ScriptItem] = Field(default_factory=list)
    faults: list[FaultUpdate] = Field(default_factory=list)


def admin_routes(behaviour: MockBehaviour) -> list[Route]:
    """``/_mock`` routes to inspect and steer a server from another process.

    * ``GET /_mock/health`` -- liveness.
    * ``GET /_mock/behaviour`` -- :meth:`MockBehaviour.snapshot`.
    * ``POST /_mock/behaviour`` -- apply a :class:`BehaviourUpdate`; returns the new snapshot.
    * ``POST /_mock/reset`` -- :meth:`MockBehaviour.reset`.
    * ``GET /_mock/requests`` / ``DELETE /_mock/requests`` -- read / clear the redacted request log.
    """

    def authorised(request: Request) -> bool:
        token = behaviour.admin_token
        return token is None or secrets.compare_digest(request.headers.get(ADMIN_TOKEN_HEADER, ""), token)

    def denied() -> JSONResponse:
        return JSONResponse({"error": "invalid or missing x-mock-admin-token"}, status_code=401)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def get_behaviour(request: Request) -> Response:
        if not authorised(request):
            return denied()
        return JSONResponse(behaviour.snapshot())

    async def post_behaviour(request: Request) -> Response:
        if not authorised(request):
            return denied()
        try:
            update = BehaviourUpdate.model_validate_json(await request.body() or b"{}")
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        behaviour.apply_update(update)
        return JSONResponse(behaviour.snapshot())

    async def reset(request: Request) -> Response:
        if not authorised(request):
            return denied()
        behaviour.reset()
        return JSONResponse(behaviour.snapshot())

    async def get_requests(request: Request) -> Response:
        if not authorised(request):
            return denied()
        return JSONResponse({"requests": [entry.to_dict() for entry in behaviour.requests]})

    async def clear_requests(request: Request) -> Response:
        if not authorised(request):
            return denied()
        behaviour.clear_requests()
        return Response(status_code=204)

    return [
        Route(f"{ADMIN_PREFIX}/health", health, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/behaviour", get_behaviour, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/behaviour", post_behaviour, methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/reset", reset, methods=["POST"]),
        Route(f"{ADMIN_PREFIX}/requests", get_requests, methods=["GET"]),
        Route(f"{ADMIN_PREFIX}/requests", clear_requests, methods=["DELETE"]),
    ]


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    redacted: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in _SECRET_HEADERS:
            scheme, _, rest = value.partition(" ")
            value = f"{scheme} {REDACTED}" if rest and scheme.lower() in ("bearer", "basic") else REDACTED
        redacted[lower] = value
    return redacted


def redact_query(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    return {name: (REDACTED if name.lower() in _SECRET_QUERY else value) for name, value in pairs}


class RequestRecorder:
    """ASGI middleware logging every provider-API request (not the admin routes) into the behaviour."""

    def __init__(self, app: ASGIApp, behaviour: MockBehaviour) -> None:
        self.app = app
        self.behaviour = behaviour

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        query_string = scope.get("query_string", b"").decode("latin-1")
        entry = RecordedRequest(
            method=str(scope["method"]),
            path=str(scope["path"]),
            query=redact_query(parse_qsl(query_string, keep_blank_values=True)),
            headers=redact_headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]),
            body=body,
            timestamp=time.time(),
        )
        self.behaviour.record(entry)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = int(message["status"])
            await send(message)

        await self.app(scope, replay, send_and_note)
