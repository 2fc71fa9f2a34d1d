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
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any, Protocol

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
from aiops_executor.llm.runtime.config import (
    CredentialConfig,
    DecryptedSecrets,
    EndpointConfig,
    ModelBinding,
    ModelConfig,
)
from aiops_executor.llm.runtime.errors import Failure, FailureKind, NoUsableRouteError, ProviderCallError

logger = structlog.get_logger(__name__)

# How often a streamed answer's deltas are handed to the token listeners (joined); the first goes at once.
HANDOVER_SECONDS = 0.05
TOOLS_KWARG = "_aiops_tools"
TOOL_CHOICE_KWARG = "_aiops_tool_choice"
RESPONSE_SCHEMA_KWARG = "_aiops_response_schema"


@dataclass(frozen=True)
class Route:
    endpoint: EndpointConfig | None
    credential: CredentialConfig | None

    def describe(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint.name if self.endpoint else None,
            "credential_alias": self.credential.alias if self.credential else None,
        }

    def where(self) -> str:
        """The route in a user's words: ``endpoint 'primary' with key 'main'``."""
        where = f"endpoint {self.endpoint.name!r}" if self.endpoint else "the provider"
        return f"{where} with key {self.credential.alias!r}" if self.credential else where

    def attempt(self, failure: Failure) -> dict[str, Any]:
        """A failed attempt on this route, as error details list it."""
        return {
            **self.describe(),
            "error_code": failure.error_code,
            "error_message": failure.message,
            "status": failure.status,
        }


@dataclass(frozen=True)
class CallRecord:
    """One attempt at a provider, for usage, quota and metrics."""

    model: ModelConfig
    endpoint_id: uuid.UUID | None
    credential_id: uuid.UUID | None
    outcome: str  # "success" or a FailureKind value
    latency_ms: float
    # None: the provider did not report the count, or the model has no price (unknown, not free).
    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cost: Decimal | None = Decimal(0)


CallSink = Callable[[CallRecord], Awaitable[None]]
SecretOpener = Callable[[CredentialConfig], Awaitable[DecryptedSecrets]]


def cost_of(model: ModelConfig, input_tokens: int | None, output_tokens: int | None) -> Decimal | None:
    """Prices are per 1K tokens; unknown (None) when a count or a price is unknown."""
    if input_tokens is None or output_tokens is None or model.input_price is None or model.output_price is None:
        return None
    return model.input_price * input_tokens / 1000 + model.output_price * output_tokens / 1000


CredentialFingerprint = tuple[str, str | None, str | None, int | None]


def credential_fingerprint(credential: CredentialConfig) -> CredentialFingerprint:
    """The parts of a credential whose change (a key re-entered, a new quota limit) can make it usable again."""
    return (
        credential.api_key_encrypted,
        credential.secret_key_encrypted,
        credential.access_token_encrypted,
        credential.quota_limit,
    )


@dataclass
class RuntimeState:
    """Process-wide failover memory: cool-downs and in-flight limits, shared by every model instance.

    Kept in this process; ``SharedRuntimeState`` overrides the async methods to share them across processes.
    """

    cooldown_seconds: float = 30.0
    max_concurrency_per_endpoint: int = 16
    _cooling: dict[tuple[str, uuid.UUID], float] = field(default_factory=dict)
    _semaphores: dict[uuid.UUID, asyncio.Semaphore] = field(default_factory=dict)
    # Credentials that reached their quota or could not be decrypted since their configuration was loaded,
    # with the fingerprint they had then: re-entered keys or a new quota limit make a credential usable again.
    exhausted: dict[uuid.UUID, CredentialFingerprint] = field(default_factory=dict)
    failovers: int = 0
    # The structured-output strategy that last worked for each model (by model row id), tried first next time.
    structured_output_strategy: dict[uuid.UUID, str] = field(default_factory=dict)

    def exhaust(self, credential_id: uuid.UUID, fingerprint: CredentialFingerprint) -> None:
        self.exhausted[credential_id] = fingerprint

    def is_exhausted(self, credential: CredentialConfig) -> bool:
        return self.exhausted.get(credential.id) == credential_fingerprint(credential)

    def cool_down(self, kind: str, key: uuid.UUID, seconds: float | None = None) -> None:
        self._cooling[(kind, key)] = time.monotonic() + (seconds if seconds is not None else self.cooldown_seconds)

    def cooling_until(self, route: Route) -> float:
        now = time.monotonic()
        until = max((self._cooling.get(key, 0.0) for key in cooldown_keys(route)), default=0.0)
        return until if until > now else 0.0

    def cooldown_left(self, kind: str, key: uuid.UUID) -> float | None:
        """Seconds left of a cool-down (None: none), as far as this process knows (see ``load_cooldowns``)."""
        left = self._cooling.get((kind, key), 0.0) - time.monotonic()
        return left if left > 0 else None

    async def load_cooling(self, binding: ModelBinding) -> None:
        """Brings in the cool-downs other processes set on the binding's routes."""
        routes = plan_candidates(binding)
        await self.load_cooldowns({key for route in routes for key in cooldown_keys(route)})

    async def load_cooldowns(self, keys: set[tuple[str, uuid.UUID]]) -> None:
        """Brings in the cool-downs other processes set on these keys; nothing to do in memory."""

    async def share_cool_down(self, kind: str, key: uuid.UUID, seconds: float | None = None) -> None:
        """``cool_down``, and for a shared state the same in every process."""
        self.cool_down(kind, key, seconds)

    @asynccontextmanager
    async def slot(self, endpoint: EndpointConfig | None) -> AsyncIterator[None]:
        """Holds one of the endpoint's concurrent-call slots while the call runs (no limit without one)."""
        semaphore = self.semaphore(endpoint)
        if semaphore is None:
            yield
            return
        async with semaphore:
            yield

    def semaphore(self, endpoint: EndpointConfig | None) -> asyncio.Semaphore | None:
        if endpoint is None:
            return None
        semaphore = self._semaphores.get(endpoint.id)
        if semaphore is None:
            semaphore = asyncio.Semaphore(self.max_concurrency_per_endpoint)
            self._semaphores[endpoint.id] = semaphore
        return semaphore

    def reset(self) -> None:
        self._cooling.clear()


def build_client(
    model: ModelConfig, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None, params: dict[str, Any]
) -> BaseChatModel:
    return adapter_for(model.provider_type).build_client(model, endpoint, secrets, params)


def route_key(endpoint_id: uuid.UUID, credential_id: uuid.UUID) -> uuid.UUID:
    """One endpoint used with one key: what a 429 throttles (the same key may be free elsewhere, another key here)."""
    return uuid.uuid5(endpoint_id, str(credential_id))


def cooldown_keys(route: Route) -> list[tuple[str, uuid.UUID]]:
    keys: list[tuple[str, uuid.UUID]] = []
    if route.endpoint:
        keys.append(("endpoint", route.endpoint.id))
    if route.credential:
        keys.append(("credential", route.credential.id))
    if route.endpoint and route.credential:
        keys.append(("route", route_key(route.endpoint.id, route.credential.id)))
    return keys


def plan_candidates(binding: ModelBinding) -> list[Route]:
    """Every endpoint with every credential, unordered and unfiltered (for reading their cool-downs)."""
    options: list[CredentialConfig | None] = list(binding.credentials) or [None]
    return [Route(endpoint, credential) for endpoint in binding.endpoints for credential in options]


def credential_usable(credential: CredentialConfig, now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    if credential.expires_at is not None and credential.expires_at <= now:
        return False
    return credential.quota_limit is None or credential.quota_used < credential.quota_limit


def plan_routes(binding: ModelBinding, state: RuntimeState, now: datetime | None = None) -> list[Route]:
    """Every route in preference order: routes not cooling down first, each group by health and priority."""
    adapter = adapter_for(binding.model.provider_type)
    if not adapter.takes_endpoints:
        return [Route(None, None)]
    endpoints = sorted(binding.endpoints, key=endpoint_preference)
    credentials = [c for c in binding.credentials if credential_usable(c, now) and not state.is_exhausted(c)]
    if adapter.needs_credential and not credentials:
        raise NoUsableRouteError(
            f"provider {binding.model.provider_name!r} has no usable credential (active, unexpired, within quota)",
            details={"provider": binding.model.provider_name},
        )
    options: list[CredentialConfig | None] = list(credentials) if credentials else [None]
    routes = [Route(endpoint, credential) for endpoint in endpoints for credential in options]
    if not routes:
        raise NoUsableRouteError(
            f"provider {binding.model.provider_name!r} has no active endpoint",
            details={"provider": binding.model.provider_name},
        )
    return cooling_last(routes, state)


class RankedEndpoint(Protocol):
    @property
    def health_status(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def is_default(self) -> bool: ...


def endpoint_preference(endpoint: RankedEndpoint) -> tuple[bool, int, bool]:
    """Failover order: endpoints not known to be down first, then by priority, the default first among equals."""
    return (endpoint.health_status == "unhealthy", endpoint.priority, not endpoint.is_default)


def cooling_last(routes: list[Route], state: RuntimeState) -> list[Route]:
    """The routes in their order, those cooling down moved to the end (soonest free first)."""
    ready = [r for r in routes if not state.cooling_until(r)]
    cooling = sorted((r for r in routes if state.cooling_until(r)), key=state.cooling_until)
    return ready + cooling


# A 500, or an error inside a stream that had begun, is often about the request (llama.cpp answers a request
# form it does not support with a 500): the call fails over, but the endpoint is not cooled down for it.
REQUEST_SPECIFIC_STATUSES = frozenset({500, None})


async def penalise(state: RuntimeState, route: Route, failure: Failure) -> None:
    """Cools down what failed, so the next calls try other routes first: a dead or overloaded endpoint (502,
    503, 504 and their Retry-After), a refused key, an endpoint throttling one key (429 and its Retry-After).
    A rejected request says nothing about the route."""
    if route.endpoint and (
        failure.kind is FailureKind.unreachable
        or (failure.kind is FailureKind.server and failure.status not in REQUEST_SPECIFIC_STATUSES)
    ):
        await state.share_cool_down("endpoint", route.endpoint.id, failure.retry_after)
    elif failure.kind is FailureKind.credential and route.credential:
        await state.share_cool_down("credential", route.credential.id)
    elif failure.kind is FailureKind.rate_limited:
        if route.endpoint and route.credential:
            await state.share_cool_down("route", route_key(route.endpoint.id, route.credential.id), failure.retry_after)
        elif route.endpoint:
            await state.share_cool_down("endpoint", route.endpoint.id, failure.retry_after)
        if route.endpoint:  # shown as degraded in the endpoint's health; routing uses the route's cool-down
            await state.share_cool_down("throttled", route.endpoint.id, failure.retry_after)


MAX_ATTEMPTS_SHOWN = 4


def _rejected_earlier(route: Route, failures: list[tuple[Route, Failure]]) -> bool:
    """A key the provider refused during this call is not offered again in a retry round."""
    return route.credential is not None and any(
        failed.credential is not None
        and failed.credential.id == route.credential.id
        and f.kind is FailureKind.credential
        for failed, f in failures
    )


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
    ) -> Decimal | None:
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
        return cost

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
        failures: list[tuple[Route, Failure]] = []
        streaming = langchain_should_stream(self, run_manager, kwargs)
        await self.state.load_cooling(self.binding)
        for route, wait in self._attempt_plan():
            if failures and not failures[-1][1].fails_over:
                break
            if _rejected_earlier(route, failures):
                continue
            if wait:
                await asyncio.sleep(wait)
            client = await self._client_or_skip(route, failures)
            if client is None:
                continue
            if failures and self.telemetry is not None:
                self.telemetry.failover(self.binding.model)
            started = time.perf_counter()
            tokens = _TokenCount()
            attempt = self._attempt(route)
            try:
                # The attempt's span is current during the call: the provider request carries its traceparent.
                with attempt:
                    async with self.state.slot(route.endpoint):
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
            cost = await self._record(route, "success", started, ai, attempt, result=result)
            if ai is not None:
                ai.response_metadata = {**ai.response_metadata, **self._metadata(route, cost)}
            return result
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
        failures: list[tuple[Route, Failure]] = []
        await self.state.load_cooling(self.binding)
        for route, wait in self._attempt_plan():
            if failures and not failures[-1][1].fails_over:
                break
            if _rejected_earlier(route, failures):
                continue
            if wait:
                await asyncio.sleep(wait)
            client = await self._client_or_skip(route, failures)
            if client is None:
                continue
            if failures and self.telemetry is not None:
                self.telemetry.failover(self.binding.model)
            started = time.perf_counter()
            emitted = False
            chunks: list[AIMessageChunk] = []
            info: dict[str, Any] = {}
            attempt = self._attempt(route)
            # The span is current only while the stream is read: a generator cannot hold a context across yields.
            current = attempt.current if isinstance(attempt, ChatAttempt) else nullcontext
            try:
                async with self.state.slot(route.endpoint):
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
            cost = await self._record(route, "success", started, _merged(chunks), attempt, info=info)
            yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata=self._metadata(route, cost)))
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
