"""The offline ``simulator`` chat model: deterministic, rule-based, and clearly not an AI.

It speaks LangChain's chat-model interface (tool calling, structured output, token streaming), so the
engine drives it exactly like a real provider. Its rules:

- A forced tool choice (that is how ``with_structured_output`` asks): it calls that tool at once with
  an instance of its schema assembled from what the conversation reported.
- Routing schemas (an ``enum`` of choices such as agents or nodes plus ``FINISH``) are answered by
  picking the first choice whose report (a text containing ``[choice]``) the conversation does not hold
  yet, and ``FINISH`` when every choice has reported.
- Tools bound: it calls each tool it has not called yet, once, with arguments taken from the JSON
  objects in the conversation (the node's attributes), then reports what the tools returned.
- Otherwise it summarises the latest reports in the conversation.

Every text it writes starts with ``[simulator]``.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

LABEL = "[simulator]"
FINISH = "FINISH"
MAX_REPORT_CHARS = 1200
_decoder = json.JSONDecoder()


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _text_of(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "".join(parts)


def json_objects_in(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object embedded in free text, in order."""
    found: list[dict[str, Any]] = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = _decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


def conversation_context(messages: Sequence[BaseMessage]) -> dict[str, Any]:
    """Merge the JSON objects stated by the system and the user (later ones win, nested ones flattened)."""
    context: dict[str, Any] = {}

    def absorb(obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            if isinstance(value, dict):
                absorb(value)
            context.setdefault(key, value)

    for message in reversed(messages):
        if isinstance(message, SystemMessage | HumanMessage):
            for obj in json_objects_in(_text_of(message)):
                absorb(obj)
    return context


def _reports(messages: Sequence[BaseMessage]) -> list[str]:
    """What others reported: tool results and model texts after the first human message (the brief)."""
    first_human = next((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), len(messages))
    reports = []
    for message in messages[first_human + 1 :]:
        if isinstance(message, SystemMessage | HumanMessage):
            continue
        text = _text_of(message).strip()
        if text:
            reports.append(text)
    return reports


# How the engine hands a supervisor the suspects it ranked from the tools' verdicts (engine.evidence).
RANKING_HEADING = "Ranked suspects"


def _summary(messages: Sequence[BaseMessage]) -> str:
    reports = _reports(messages)
    if not reports:
        task = next((_text_of(m) for m in messages if isinstance(m, HumanMessage)), "")
        return f"{LABEL} No findings were reported for: {task[:200]}".strip()
    body = "\n".join(f"- {report[:MAX_REPORT_CHARS]}" for report in reports[-10:])
    # The simulator has no judgment of its own: it agrees with the engine's ranking, and says so first.
    ranking = next(
        (text for m in messages if isinstance(m, HumanMessage) and (text := _text_of(m)).startswith(RANKING_HEADING)),
        None,
    )
    lead = f"{ranking[:MAX_REPORT_CHARS]}\n" if ranking else ""
    return f"{LABEL} {lead}Summary of {len(reports)} report(s):\n{body}"


_SPEAKER = re.compile(r"^\[([A-Za-z0-9_.-]{1,64})\] (.*)$", re.DOTALL)
# Speakers whose reports are not about one resource.
_NOT_RESOURCES = frozenset({"simulator", "global_supervisor"})
# Property names that identify the resource an item of a list is about.
_IDENTITY_FIELDS = ("node_id", "resource_id", "resource", "node", "component", "service", "id", "name")
# Tool results that mean something is wrong; enum options read as bad news, then as good news.
_BAD_SIGNS = (
    '"reachable": false',
    '"connected": false',
    '"ok": false',
    '"verified": false',
    "(failed)",
    "(skipped)",
    "(verdict failed",
    "(verdict degraded",
)
_BAD_OPTIONS = ("down", "unhealthy", "failed", "critical", "degraded", "high", "error", "unknown")
_GOOD_OPTIONS = ("healthy", "ok", "up", "success", "passing", "low", "info", "none")


def _verdict_of(tool_result: str) -> str:
    """`` (verdict failed: signal; signal)`` of a tool result that states one (said first: a long result is cut)."""
    try:
        stated = json.loads(tool_result)
    except ValueError:
        return ""
    if not isinstance(stated, dict):
        return ""
    verdict, signals = stated.get("verdict"), stated.get("signals")
    if not isinstance(verdict, str):
        return ""
    listed = "; ".join(str(signal) for signal in signals[:3]) if isinstance(signals, list) else ""
    return f" (verdict {verdict}: {listed})" if listed else f" (verdict {verdict})"


def _resource_reports(messages: Sequence[BaseMessage]) -> dict[str, str]:
    """Reports written as ``[speaker] text`` (how supervisors hear agents and node teams), by speaker."""
    found: dict[str, str] = {}
    for report in _reports(messages):
        match = _SPEAKER.match(report)
        if match and match.group(1) not in _NOT_RESOURCES:
            found[match.group(1)] = match.group(2)
    return found


class _SchemaFiller:
    """Builds a value satisfying a JSON Schema from the conversation's facts.

    A list of objects with an identity property (``node_id``, ``resource``, ...) gets one item per resource
    that reported, each filled from that resource's report; enum values such as a status are read off the
    report (a failed probe reads as bad news).
    """

    def __init__(
        self,
        root: dict[str, Any],
        context: dict[str, Any],
        summary: str,
        spoken: str,
        resources: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.context = context
        self.summary = summary
        self.spoken = spoken
        self.resources = resources or {}

    def focused_on(self, resource: str) -> _SchemaFiller:
        """A filler for one item about ``resource``: its report is the text, its id the identity."""
        text = f"{LABEL} {self.resources[resource]}"
        return _SchemaFiller(self.root, {**self.context, **dict.fromkeys(_IDENTITY_FIELDS, resource)}, text, text)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        seen = 0
        while "$ref" in schema and seen < 32:
            ref = str(schema["$ref"])
            target: Any = self.root
            for part in ref.lstrip("#/").split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            seen += 1
        return schema

    def value(self, schema: dict[str, Any], name: str = "", depth: int = 0) -> Any:
        schema = self.resolve(schema)
        if depth > 12:
            return None
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self.choose(list(schema["enum"]), name)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                options = [self.resolve(o) for o in schema[combinator]]
                non_null = [o for o in options if o.get("type") != "null"] or options
                return self.value(non_null[0], name, depth + 1)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.resolve(part))
            return self.value(merged, name, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or (kind is None and "properties" in schema):
            return self.object(schema, depth)
        if kind == "array":
            items = self.resolve(schema.get("items", {}))
            per_resource = self.per_resource(items, schema, depth)
            if per_resource:
                return per_resource
            item = self.value(items, name, depth + 1)
            return [item] * max(1, int(schema.get("minItems", 1)))
        if kind in ("integer", "number"):
            return self.number(schema, name, integer=kind == "integer")
        if kind == "boolean":
            known = self.context.get(name)
            return known if isinstance(known, bool) else True
        if kind == "null":
            return None
        return self.string(schema, name)

    def per_resource(self, items: dict[str, Any], schema: dict[str, Any], depth: int) -> list[Any]:
        properties = items.get("properties", {})
        if not self.resources or not any(field in properties for field in _IDENTITY_FIELDS):
            return []
        limit = schema.get("maxItems")
        chosen = list(self.resources)[: limit if isinstance(limit, int) else None]
        if len(chosen) < int(schema.get("minItems", 0)):
            return []
        return [self.focused_on(resource).object(items, depth + 1) for resource in chosen]

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        return {key: self.value(sub, key, depth + 1) for key, sub in properties.items()}

    def choose(self, options: list[Any], name: str) -> Any:
        known = self.context.get(name)
        if known in options:
            return known
        # Routing: the first option the conversation has not heard from yet; FINISH once all have spoken.
        if FINISH in options:
            pending = [o for o in options if o != FINISH and f"[{o}]" not in self.spoken]
            return pending[0] if pending else FINISH
        # Anything else (a status, a severity): bad news when the reports hold any, else good news.
        bad = any(sign in self.summary for sign in _BAD_SIGNS)
        for preferred in _BAD_OPTIONS if bad else _GOOD_OPTIONS:
            if preferred in options:
                return preferred
        return options[0]

    def number(self, schema: dict[str, Any], name: str, *, integer: bool) -> int | float:
        known = self.context.get(name)
        value: float = known if isinstance(known, int | float) and not isinstance(known, bool) else 0
        if "minimum" in schema:
            value = max(value, schema["minimum"])
        if "exclusiveMinimum" in schema:
            value = max(value, schema["exclusiveMinimum"] + 1)
        if "maximum" in schema:
            value = min(value, schema["maximum"])
        return int(value) if integer else float(value)

    def string(self, schema: dict[str, Any], name: str) -> str:
        known = self.context.get(name)
        if isinstance(known, str):
            text = known
        elif known is not None and not isinstance(known, dict | list):
            text = str(known)
        elif schema.get("format") == "date-time":
            text = "1970-01-01T00:00:00Z"
        elif schema.get("format") == "uri":
            text = "http://127.0.0.1/"
        else:
            text = self.summary if name else LABEL
        max_length = schema.get("maxLength")
        if isinstance(max_length, int):
            text = text[:max_length]
        min_length = schema.get("minLength")
        if isinstance(min_length, int) and len(text) < min_length:
            text = text.ljust(min_length, ".")
        return text


def tool_arguments(parameters: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Arguments for a tool call: properties known from the context, plus required ones filled in."""
    filler = _SchemaFiller(parameters, context, LABEL, "")
    properties: dict[str, Any] = parameters.get("properties", {})
    required = set(parameters.get("required", []))
    return {
        key: context[key] if key in context else filler.value(schema, key)
        for key, schema in properties.items()
        if key in context or key in required
    }


STRUCTURED_OUTPUT_STRATEGIES = ("tool_calling",)


class SimulatorChatModel(BaseChatModel):
    """Deterministic offline chat model (see module docstring)."""

    model_id: str = "sim-1"
    latency_ms: float = Field(default=0.0, ge=0)

    @property
    def _llm_type(self) -> str:
        return "aiops-simulator"

    @property
    def structured_output_strategies(self) -> tuple[str, ...]:
        """Its rules answer structured requests as tool calls only (see ``engine.structured``)."""
        return STRUCTURED_OUTPUT_STRATEGIES

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "latency_ms": self.latency_ms}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    # -- the rules -------------------------------------------------------------------------------

    def respond(self, messages: Sequence[BaseMessage], **kwargs: Any) -> AIMessage:
        tools: list[dict[str, Any]] = kwargs.get("tools") or []
        functions = [t["function"] for t in tools if t.get("type") == "function"]
        context = conversation_context(messages)
        spoken = "\n".join(_text_of(m) for m in messages if not isinstance(m, SystemMessage))

        forced = self._forced(functions, kwargs.get("tool_choice"))
        if forced is not None:
            target = forced
            schema = target.get("parameters", {})
            filler = _SchemaFiller(schema, context, _summary(messages), spoken, _resource_reports(messages))
            args = filler.object(schema, 0)
            return self._message("", [self._call(target["name"], args, len(messages))], messages)

        called = {call["name"] for m in messages if isinstance(m, AIMessage) for call in m.tool_calls}
        pending = [f for f in functions if f["name"] not in called]
        if pending:
            calls = [
                self._call(f["name"], tool_arguments(f.get("parameters", {}), context), len(messages) + i)
                for i, f in enumerate(pending)
            ]
            return self._message("", calls, messages)

        results = [m for m in messages if isinstance(m, ToolMessage)]
        if results:
            lines = [f"{LABEL} Tool results:"]
            for result in results:
                text = _text_of(result)
                lines.append(f"- {result.name or 'tool'}{_verdict_of(text)}: {text[:MAX_REPORT_CHARS]}")
            return self._message("\n".join(lines), [], messages)
        return self._message(_summary(messages), [], messages)

    @staticmethod
    def _forced(functions: list[dict[str, Any]], tool_choice: Any) -> dict[str, Any] | None:
        """The tool a forced ``tool_choice`` demands (structured output forces one), else None."""
        if not functions or tool_choice in (None, "auto", "none"):
            return None
        if tool_choice in ("any", "required", True):
            return functions[0]
        name = tool_choice
        if isinstance(tool_choice, dict):
            name = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
        return next((f for f in functions if f["name"] == name), None)

    @staticmethod
    def _call(name: str, args: dict[str, Any], index: int) -> ToolCall:
        return ToolCall(name=name, args=args, id=f"sim_call_{index}_{name}"[:64], type="tool_call")

    @staticmethod
    def _message(text: str, calls: list[ToolCall], messages: Sequence[BaseMessage]) -> AIMessage:
        prompt = "".join(_text_of(m) for m in messages)
        output_tokens = estimate_tokens(text + "".join(json.dumps(c["args"]) for c in calls))
        input_tokens = estimate_tokens(prompt)
        usage = UsageMetadata(
            input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
        )
        return AIMessage(content=text, tool_calls=calls, usage_metadata=usage)

    # -- LangChain plumbing ------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, **kwargs))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        return ChatResult(generations=[ChatGeneration(message=self.respond(messages, **kwargs))])

    def _chunks(self, message: AIMessage) -> Iterator[AIMessageChunk]:
        text = str(message.content)
        words = text.split(" ") if text else []
        for index, word in enumerate(words):
            yield AIMessageChunk(content=word if index == 0 else " " + word)
        yield AIMessageChunk(
            content="",
            tool_call_chunks=[
                {"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i, "type": "tool_call_chunk"}
                for i, c in enumerate(message.tool_calls)
            ],
            usage_metadata=message.usage_metadata,
            chunk_position="last",
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        for chunk in self._chunks(self.respond(messages, **kwargs)):
            if run_manager and isinstance(chunk.content, str) and chunk.content:
                run_manager.on_llm_new_token(chunk.content)
            yield ChatGenerationChunk(message=chunk)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        for chunk in self._chunks(self.respond(messages, **kwargs)):
            if run_manager and isinstance(chunk.content, str) and chunk.content:
                await run_manager.on_llm_new_token(chunk.content)
            yield ChatGenerationChunk(message=chunk)
