"""A chat model that spreads one logical model over every endpoint and credential that can serve it.

Each call goes to the best route first: active endpoints by health then priority, each with every
usable credential (active, not expired, not over quota). Connection errors, 429, 5xx and rejected keys
move the call to the next route, and the failing endpoint or key cools down for a while so that the
calls after it do not keep hitting it. Per-endpoint semaphores cap how many calls are in flight, so a
team of hundreds of agents cannot flood a provider. ``RuntimeState`` keeps both in this process;
``shared_state.SharedRuntimeState`` shares them between processes through Redis.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from operator import itemgetter
from typing import Any

import structlog
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from aiops_executor.core.errors import AppError
from aiops_executor.core.private_apis.chat_models import client_agenerate, client_astream, langchain_should_stream
from aiops_executor.core.telemetry import ChatAttempt, Telemetry
from aiops_executor.engine.models import DISCARDED_TOKENS_KEY
from aiops_executor.llm.adapters import adapter_for
from aiops_executor.llm.adapters.base import JSON_SCHEMA
from aiops_executor.llm.runtime.admission import Admission, admit
from aiops_executor.llm.runtime.calls import CallAttribution, CallGate, CallRecord, CallSink, cost_of
from aiops_executor.llm.runtime.config import (
    CredentialConfig,
    DecryptedSecrets,
    EndpointConfig,
    ModelBinding,
    ModelConfig,
)
from aiops_executor.llm.runtime.errors import Failure, FailureKind, ProviderCallError
from aiops_executor.llm.runtime.estimate import CallSize, call_size
from aiops_executor.llm.runtime.routes import Route
from aiops_executor.llm.runtime.routing import penalise, plan_routes, rejected_earlier
from aiops_executor.llm.runtime.state import RuntimeState, credential_fingerprint

SecretOpener = Callable[[CredentialConfig], Awaitable[DecryptedSecrets]]

logger = structlog.get_logger(__name__)

# How often a streamed answer's deltas are handed to the token listeners (joined); the first goes at once.
HANDOVER_SECONDS = 0.05
TOOLS_KWARG = "_aiops_tools"
TOOL_CHOICE_KWARG = "_aiops_tool_choice"
RESPONSE_SCHEMA_KWARG = "_aiops_response_schema"


MAX_ATTEMPTS_SHOWN = 4


def build_client(
    model: ModelConfig, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None, params: dict[str, Any]
) -> BaseChatModel:
    return adapter_for(model.provider_type).build_client(model, endpoint, secrets, params)


@dataclass
class _TokenCount:
    count: int = 0


async def _stream_to_result(
    client: BaseChatModel,
    messages: list[BaseMessage],
    stop: list[str] | None,
    run_manager: AsyncCallbackManagerForLLMRun | None,
    tokens: _TokenCount,
    kwargs: dict[str, Any],
) -> ChatResult:
    """One streamed answer from ``client``: each delta goes to the callbacks as it arrives, the answer is
    returned whole once the stream has ended (a stream that breaks raises, having counted what it streamed)."""
    chunks: list[AIMessageChunk] = []
    info: dict[str, Any] = {}  # what the chunks say about the answer (why it stopped, which model answered)
    held: list[str] = []  # deltas not yet handed to the listeners
    handed_at = -math.inf

    async def hand_over(listeners: AsyncCallbackManagerForLLMRun) -> None:
        text = "".join(held)
        held.clear()
        await listeners.on_llm_new_token(text, chunk=ChatGenerationChunk(message=AIMessageChunk(content=text)))
        tokens.count += 1

    async for chunk in client_astream(client, messages, stop, kwargs):
        if not isinstance(chunk.message, AIMessageChunk):
            continue
        info.update(chunk.generation_info or {})
        chunks.append(chunk.message)
        delta = chunk.message.content
        if run_manager is not None and delta:
            held.append(delta if isinstance(delta, str) else chunk.message.text)
            # Deltas go to the listeners at most every HANDOVER_SECONDS (the first at once): each hand-over
            # costs every listener a call, and a model streams dozens of deltas a second.
            now = time.monotonic()
            if now - handed_at >= HANDOVER_SECONDS:
                await hand_over(run_manager)
                handed_at = now
    if not chunks:
        raise EmptyStreamError("the provider's stream ended without an answer")
    if held and run_manager is not None:
        await hand_over(run_manager)
    merged = _merged(chunks)
    generation = ChatGeneration(message=message_chunk_to_message(merged), generation_info=info or None)
    return ChatResult(generations=[generation])


def _merged(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    """The whole answer, merged once: adding each chunk to a running sum copies the answer every time."""
    return chunks[0] if len(chunks) == 1 else add_ai_message_chunks(chunks[0], *chunks[1:])


class EmptyStreamError(Exception):
    pass


def _response_attributes(
    message: AIMessage | None, result: ChatResult | None = None, info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What the provider said about its answer: the model that answered, the response id, why it stopped.
    A client's ``_agenerate`` leaves them in the result (``llm_output``, ``generation_info``), which LangChain
    merges into the message only later; a merged stream has them in the message."""
    if message is None:
        return {}
    metadata: dict[str, Any] = {}
    if result is not None:
        metadata.update(result.llm_output or {})
        if result.generations:
            metadata.update(result.generations[0].generation_info or {})
    metadata.update(info or {})
    metadata.update(message.response_metadata or {})
    model = metadata.get("model_name") or metadata.get("model")
    response_id = metadata.get("id")
    if response_id is None and message.id and not message.id.startswith(("run-", "lc_run-")):
        response_id = message.id  # LangChain's clients put the provider's id here; "run-..." ids are its own
    reason = metadata.get("finish_reason") or metadata.get("stop_reason") or metadata.get("done_reason")
    return {
        "response_model": model if isinstance(model, str) else None,
        "response_id": response_id if isinstance(response_id, str) else None,
        "finish_reasons": [reason] if isinstance(reason, str) else [],
    }


async def _announce_discarded(
    run_manager: AsyncCallbackManagerForLLMRun, route: Route, failure: Failure, count: int
) -> None:
    """Tells the token listeners that the deltas streamed by this attempt are void: the answer starts again."""
    marker = AIMessageChunk(
        content="",
        response_metadata={
            DISCARDED_TOKENS_KEY: {
                "discarded_tokens": count,
                "endpoint": route.endpoint.name if route.endpoint else None,
                "reason": failure.message,
            }
        },
    )
    await run_manager.on_llm_new_token("", chunk=ChatGenerationChunk(message=marker))


class FailoverChatModel(BaseChatModel):
    """One logical model over many routes (see module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    binding: ModelBinding
    params: dict[str, Any] = Field(default_factory=dict)
    state: RuntimeState
    open_secrets: SecretOpener
    on_call: CallSink | None = None
    telemetry: Telemetry | None = None  # metrics and spans of every attempt
    # Budgets: every call is admitted before it is made and counted after, for whom ``attribution`` says.
    gate: CallGate | None = None
    attribution: CallAttribution = Field(default_factory=CallAttribution)
    # The output a call without max_tokens (and a model without max_output_tokens) is assumed to stay within.
    default_output_tokens: int = 4096

    _clients: dict[tuple[uuid.UUID | None, uuid.UUID | None], BaseChatModel] = PrivateAttr(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return f"aiops-failover:{self.binding.model.provider_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        model = self.binding.model
        return {"provider": model.provider_name, "model_id": model.model_id}

    def bind_tools(
        self,
        tools: Sequence[Any],
        *,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # Tools are converted per route by the provider's own client, which knows its wire format.
        return self.bind(**{TOOLS_KWARG: list(tools), TOOL_CHOICE_KWARG: tool_choice}, **kwargs)

    @property
    def structured_output_strategies(self) -> tuple[str, ...]:
        """What the provider's servers may understand, best first; what worked last time for this model first."""
        strategies = adapter_for(self.binding.model.provider_type).structured_output
        worked = self.state.structured_output_strategy.get(self.binding.model.id)
        return (worked, *(s for s in strategies if s != worked)) if worked in strategies else strategies

    def remember_structured_output_strategy(self, strategy: str) -> None:
        self.state.structured_output_strategy[self.binding.model.id] = strategy

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: str = "function_calling",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """LangChain's structured output, with each route's own wire format: ``json_schema`` as the provider's
        response format, ``function_calling`` as a call of the schema's tool named in ``tool_choice`` (rather
        than ``"required"``, which several OpenAI-compatible servers reject)."""
        is_model = isinstance(schema, type) and issubclass(schema, BaseModel)
        tool = convert_to_openai_tool(schema)["function"]
        llm: Runnable[LanguageModelInput, Any]
        parser: Runnable[Any, Any]
        if method == "json_schema":
            json_schema = schema.model_json_schema() if is_model else schema  # type: ignore[union-attr]
            llm = self.bind(**{RESPONSE_SCHEMA_KWARG: (tool["name"], json_schema)})
            parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()
        else:
            llm = self.bind_tools([schema], tool_choice=tool["name"])
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)
                if is_model
                else JsonOutputKeyToolsParser(key_name=tool["name"], first_tool_only=True)
            )
        if not include_raw:
            return llm | parser
        parse = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parse.with_fallbacks([unparsed], exception_key="parsing_error")

    async def _client(self, route: Route) -> BaseChatModel:
        key = (route.endpoint.id if route.endpoint else None, route.credential.id if route.credential else None)
        client = self._clients.get(key)
        if client is None:
            secrets = await self.open_secrets(route.credential) if route.credential else None
            client = build_client(self.binding.model, route.endpoint, secrets, self.params)
            self._clients[key] = client
        return client

    async def _client_or_skip(self, route: Route, failures: list[tuple[Route, Failure]]) -> BaseChatModel | None:
        """The route's client, or None when its credential cannot be opened (it is then never tried again)."""
        try:
            return await self._client(route)
        except AppError as exc:
            if route.credential is None:
                raise
            self.state.exhaust(route.credential.id, credential_fingerprint(route.credential))
            failures.append((route, Failure(FailureKind.credential, exc.message)))
            return None

    def _call_kwargs(self, client: BaseChatModel, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(kwargs)
        tools = kwargs.pop(TOOLS_KWARG, None)
        tool_choice = kwargs.pop(TOOL_CHOICE_KWARG, None)
        response_schema = kwargs.pop(RESPONSE_SCHEMA_KWARG, None)
        if tools:
            bound = client.bind_tools(tools, tool_choice=tool_choice)
            if isinstance(bound, RunnableBinding):
                kwargs = {**bound.kwargs, **kwargs}
        if response_schema is not None:
            name, schema = response_schema
            adapter = adapter_for(self.binding.model.provider_type)
            kwargs.update(adapter.structured_request(JSON_SCHEMA, schema, name))
        return kwargs

    def _attempt(self, route: Route) -> ChatAttempt | nullcontext[None]:
        """The span and metrics of one attempt (nothing without telemetry)."""
        if self.telemetry is None:
            return nullcontext()
        endpoint = route.endpoint
        return self.telemetry.chat(
            self.binding.model,
            endpoint.name if endpoint else None,
            endpoint.base_url if endpoint else None,
            self.params,
        )

    async def _record(
        self,
        route: Route,
        outcome: str,
        started: float,
        message: AIMessage | None,
        attempt: ChatAttempt | nullcontext[None],
        error_type: str | None = None,
        result: ChatResult | None = None,
        info: dict[str, Any] | None = None,
    ) -> CallRecord:
        # A failed attempt returned nothing to count; a success without usage metadata is unknown, not free.
        input_tokens: int | None = 0
        output_tokens: int | None = 0
        if message is not None:
            input_tokens, output_tokens = adapter_for(self.binding.model.provider_type).usage(message)
        cost = cost_of(self.binding.model, input_tokens, output_tokens) if message is not None else Decimal(0)
        record = CallRecord(
            model=self.binding.model,
            endpoint_id=route.endpoint.id if route.endpoint else None,
            credential_id=route.credential.id if route.credential else None,
            outcome=outcome,
            latency_ms=(time.perf_counter() - started) * 1000,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
        )
        if isinstance(attempt, ChatAttempt):
            attempt.finish(record, error_type=error_type, **_response_attributes(message, result, info))
        if self.on_call is not None:
            await self.on_call(record)
        return record

    async def _routes_to_try(
        self, failures: list[tuple[Route, Failure]], messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> AsyncIterator[tuple[Route, BaseChatModel, Admission]]:
        """The routes one call tries, in order, with their clients and admissions; ``failures`` (appended to by
        the caller) stops the call after a failure that does not fail over, and skips keys refused during the call."""
        await self.state.load_cooling(self.binding)
        model, size = self.binding.model, partial(self._size, messages, kwargs)
        for route, wait in self._attempt_plan():
            if failures and not failures[-1][1].fails_over:
                return
            if rejected_earlier(route, failures):
                continue
            if wait:
                await asyncio.sleep(wait)
            client = await self._client_or_skip(route, failures)
            if client is None:
                continue
            if (admission := await admit(self.state, route, model, failures, size)) is None:
                continue  # its endpoint's circuit breaker is open (said in ``failures``)
            if failures and self.telemetry is not None:
                self.telemetry.failover(self.binding.model)
            yield route, client, admission

    def _attempt_plan(self) -> Iterator[tuple[Route, float]]:
        """Routes in order; then further rounds for endpoints whose retry_count allows, after retry_interval."""
        routes = plan_routes(self.binding, self.state)
        yield from ((route, 0.0) for route in routes)
        rounds = max((r.endpoint.retry_count for r in routes if r.endpoint), default=0)
        for round_number in range(1, rounds + 1):
            for route in routes:
                if route.endpoint and route.endpoint.retry_count >= round_number:
                    yield route, route.endpoint.retry_interval

    def _exhausted(self, failures: list[tuple[Route, Failure]]) -> ProviderCallError:
        attempts = [route.attempt(f) for route, f in failures]
        last = failures[-1][1] if failures else Failure(FailureKind.unreachable, "no route was tried")
        model = self.binding.model
        tried = "; ".join(f"{route.where()}: {f.message}" for route, f in failures[-MAX_ATTEMPTS_SHOWN:])
        return ProviderCallError(
            Failure(
                last.kind,
                f"model {model.model_id} of provider {model.provider_name!r} failed: {tried}",
                last.status,
            ),
            attempts=attempts,
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        ticket = await self._admit(messages, kwargs)
        done: CallRecord | None = None
        try:
            result, done = await self._generate_on_routes(messages, stop, run_manager, kwargs)
            return result
        finally:
            await self._settle(ticket, done)

    async def _admit(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> object:
        """Passes the call through the gate (a spent budget refuses it here, before any provider sees it)."""
        if self.gate is None:
            return None
        return await self.gate.admit(self.attribution, self.binding.model, self._size(messages, kwargs))

    def _size(self, messages: list[BaseMessage], kwargs: dict[str, Any]) -> CallSize:
        tools, out = kwargs.get(TOOLS_KWARG), self.default_output_tokens
        return call_size(self.binding.model, messages, kwargs, self.params, tools=tools, default_output_tokens=out)

    async def _settle(self, ticket: object, record: CallRecord | None) -> None:
        if self.gate is None:
            return
        try:
            # Counted even when the caller was cancelled meanwhile: the provider was paid all the same.
            await asyncio.shield(self.gate.settle(ticket, record))
        except Exception:  # the answer stands: it was paid for; its hold lapses at its expiry
            logger.exception("a model call's usage could not be recorded", model=self.binding.model.model_id)

    async def _generate_on_routes(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
    ) -> tuple[ChatResult, CallRecord]:
        """The answer of the first route that gives one, with that attempt's record."""
        failures: list[tuple[Route, Failure]] = []
        streaming = langchain_should_stream(self, run_manager, kwargs)
        async for route, client, admission in self._routes_to_try(failures, messages, kwargs):
            started = time.perf_counter()
            tokens = _TokenCount()
            attempt = self._attempt(route)
            try:
                # The attempt's span is current during the call: the provider request carries its traceparent.
                with attempt:
                    async with admission.call():
                        call_kwargs = self._call_kwargs(client, kwargs)
                        if streaming:
                            result = await _stream_to_result(client, messages, stop, run_manager, tokens, call_kwargs)
                        else:
                            result = await client_agenerate(client, messages, stop, call_kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failure = adapter_for(self.binding.model.provider_type).classify(exc)
                failures.append((route, failure))
                await penalise(self.state, route, failure)
                self.state.failovers += 1
                await self._record(route, failure.kind.value, started, None, attempt, failure.error_code)
                logger.warning(
                    "model call failed",
                    **route.describe(),
                    error_code=failure.error_code,
                    status=failure.status,
                    model=self.binding.model.model_id,
                    streamed_tokens=tokens.count,
                )
                if tokens.count and run_manager is not None:
                    await _announce_discarded(run_manager, route, failure, tokens.count)
                continue
            message = result.generations[0].message if result.generations else None
            ai = message if isinstance(message, AIMessage) else None
            record = await self._record(route, "success", started, ai, attempt, result=result)
            if ai is not None:
                ai.response_metadata = {**ai.response_metadata, **self._metadata(route, record.cost)}
            return result, record
        raise self._exhausted(failures)

    def _should_stream(
        self,
        *,
        async_api: bool,
        run_manager: AsyncCallbackManagerForLLMRun | CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> bool:
        # Overrides a private hook of LangChain (core/private_apis, item 2).
        # ``astream()`` asks with stream=True and aggregates the chunks itself. Every other call goes through
        # ``_agenerate``, which streams from the provider when a callback wants tokens and aggregates the answer
        # itself, so that a stream broken mid-way can start again on the next route without garbling it.
        if kwargs.get("stream"):
            return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)
        return False

    def _metadata(self, route: Route, cost: Decimal | None) -> dict[str, Any]:
        model = self.binding.model
        return {
            "aiops_provider": model.provider_name,
            "aiops_model_id": model.model_id,
            "aiops_endpoint": route.endpoint.name if route.endpoint else None,
            "aiops_cost": None if cost is None else float(cost),
        }

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        ticket = await self._admit(messages, kwargs)
        done: list[CallRecord] = []
        try:
            async for chunk in self._stream_on_routes(messages, stop, run_manager, kwargs, done):
                yield chunk
        finally:
            await self._settle(ticket, done[0] if done else None)

    async def _stream_on_routes(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        run_manager: AsyncCallbackManagerForLLMRun | None,
        kwargs: dict[str, Any],
        done: list[CallRecord],
    ) -> AsyncIterator[ChatGenerationChunk]:
        """The chunks of the first route whose stream completes; its attempt's record is appended to ``done``."""
        failures: list[tuple[Route, Failure]] = []
        async for route, client, admission in self._routes_to_try(failures, messages, kwargs):
            started = time.perf_counter()
            emitted = False
            chunks: list[AIMessageChunk] = []
            info: dict[str, Any] = {}
            attempt = self._attempt(route)
            # The span is current only while the stream is read: a generator cannot hold a context across yields.
            current = attempt.current if isinstance(attempt, ChatAttempt) else nullcontext
            try:
                async with admission.call():
                    stream = client._astream(messages, stop=stop, **self._call_kwargs(client, kwargs))
                    while True:
                        with current():
                            try:
                                chunk = await anext(stream)
                            except StopAsyncIteration:
                                break
                        emitted = True
                        info.update(chunk.generation_info or {})
                        if isinstance(chunk.message, AIMessageChunk):
                            chunks.append(chunk.message)
                        if run_manager and isinstance(chunk.message.content, str) and chunk.message.content:
                            await run_manager.on_llm_new_token(chunk.message.content, chunk=chunk)
                        yield chunk
                if not chunks:  # a stream that ended without an answer is a failed attempt, not a success
                    raise EmptyStreamError("the provider's stream ended without an answer")
            except (asyncio.CancelledError, GeneratorExit):
                # The caller stopped reading (or the run was cancelled): the attempt did not complete.
                if isinstance(attempt, ChatAttempt):
                    attempt.finish(self._abandoned(route, started), error_type="cancelled")
                raise
            except Exception as exc:
                failure = adapter_for(self.binding.model.provider_type).classify(exc)
                await penalise(self.state, route, failure)
                await self._record(route, failure.kind.value, started, None, attempt, failure.error_code)
                if emitted:  # part of an answer reached the caller; switching routes would garble it
                    raise ProviderCallError(failure) from None
                failures.append((route, failure))
                self.state.failovers += 1
                continue
            record = await self._record(route, "success", started, _merged(chunks), attempt, info=info)
            done.append(record)
            yield ChatGenerationChunk(
                message=AIMessageChunk(content="", response_metadata=self._metadata(route, record.cost))
            )
            return
        raise self._exhausted(failures)

    def _abandoned(self, route: Route, started: float) -> CallRecord:
        return CallRecord(
            model=self.binding.model,
            endpoint_id=route.endpoint.id if route.endpoint else None,
            credential_id=route.credential.id if route.credential else None,
            outcome="cancelled",
            latency_ms=(time.perf_counter() - started) * 1000,
            input_tokens=None,
            output_tokens=None,
            cost=None,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Synchronous calls run the async path on a private loop (scripts and notebooks)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._agenerate(messages, stop=stop, **kwargs))
        raise RuntimeError("FailoverChatModel is async-first; use ainvoke/astream inside an event loop")
