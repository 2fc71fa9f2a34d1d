"""Circuit breakers per endpoint: a failing endpoint opens its breaker, calls fail over to the next endpoint, and
after the cool-down exactly one probe goes to it, whose success closes the breaker -- in one process, and shared
by two through Redis. Cool-downs and windows are shortened through the breaker policy (the settings)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.core.metrics import Metrics
from aiops_executor.llm.runtime.breaker import BreakerPolicy, CircuitState, LocalBreakers, Outcome, Verdict
from aiops_executor.llm.runtime.config import EndpointConfig, ModelBinding
from aiops_executor.llm.runtime.errors import Failure, FailureKind, ProviderCallError
from aiops_executor.llm.runtime.shared_state import SharedRuntimeState
from aiops_executor.llm.runtime.state import RuntimeState
from tests.llm.test_limits_redis import DOWN_URL, LinkFactory, link, namespace, our_keys  # noqa: F401 - fixtures
from tests.llm.test_runtime_clients import endpoint, model
from tests.llm.test_runtime_failover import Harness, credential
from tests.mock_providers import OPENAI_KEY

COOLDOWN = 0.5
# Half the calls failing opens the breaker once four calls have been seen; five failures in a row would too.
POLICY = BreakerPolicy(consecutive_failures=5, failure_rate_percent=50, window_calls=4, cooldown_seconds=COOLDOWN)


class Servers:
    """Two endpoints of one provider, each on a mock server of its own: ``flaky`` first, ``spare`` behind it."""

    def __init__(self, flaky: MockLLMServer, spare: MockLLMServer) -> None:
        self.flaky_server, self.spare_server = flaky, spare
        self.flaky = endpoint(flaky.client_base_url, name="flaky", priority=1)
        self.spare = endpoint(spare.client_base_url, name="spare", priority=2)
        self.binding = ModelBinding(model("openai", "gpt-4o-mini"), (self.flaky, self.spare), (credential("k"),))

    def calls_to_flaky(self) -> int:
        return len(self.flaky_server.behaviour.requests_to("/chat/completions"))

    def harness(self, state: RuntimeState) -> Harness:
        return Harness(self.binding, {"k": OPENAI_KEY}, state=state)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    async with (
        MockLLMServer("openai", keys=[OPENAI_KEY]) as flaky,
        MockLLMServer("openai", keys=[OPENAI_KEY]) as spare,
    ):
        yield Servers(flaky, spare)


async def state_of(state: RuntimeState, ep: EndpointConfig) -> CircuitState:
    return (await state.circuit_states([ep.id]))[ep.id]


async def until(state: RuntimeState, ep: EndpointConfig, wanted: CircuitState, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while await state_of(state, ep) is not wanted:
        assert time.monotonic() < deadline, f"the breaker never read {wanted}"
        await asyncio.sleep(0.02)


async def answered_by(harness: Harness) -> str | None:
    reply = await harness.model.ainvoke("hi")
    return reply.response_metadata["aiops_endpoint"]  # type: ignore[no-any-return]


async def open_close_cycle(servers: Servers, harnesses: list[Harness], states: list[RuntimeState]) -> None:
    """Half the calls to ``flaky`` fail: its breaker opens at the fourth; calls go to ``spare`` meanwhile; after
    the cool-down one probe goes to ``flaky`` (the calls made while it is under way go to ``spare``), and its
    success closes the breaker. ``harnesses`` stand for processes (used in turn); ``states`` are theirs."""
    flaky = servers.flaky
    answers = []
    for index in range(4):
        if index % 2:
            servers.flaky_server.behaviour.fail_next(1, 503)
        answers.append(await answered_by(harnesses[index % len(harnesses)]))
        expected = CircuitState.open if index == 3 else CircuitState.closed
        assert [await state_of(s, flaky) for s in states] == [expected] * len(states), index
    assert answers == ["flaky", "spare", "flaky", "spare"], "each failed call failed over to the spare"
    assert servers.calls_to_flaky() == 4

    for harness in harnesses:  # open: every process leaves the endpoint alone
        assert await answered_by(harness) == "spare"
    assert servers.calls_to_flaky() == 4

    await until(states[0], flaky, CircuitState.half_open)  # the cool-down has ended
    servers.flaky_server.behaviour.latency_ms = 300  # the probe is still under way while the next calls come
    answers = await asyncio.gather(*(answered_by(harnesses[i % len(harnesses)]) for i in range(6)))
    assert sorted(answers) == ["flaky"] + ["spare"] * 5, "exactly one probe went to the endpoint"
    assert servers.calls_to_flaky() == 5
    assert [await state_of(s, flaky) for s in states] == [CircuitState.closed] * len(states)

    servers.flaky_server.behaviour.latency_ms = 0
    for harness in harnesses:
        assert await answered_by(harness) == "flaky", "closed again: calls go to the endpoint first"


def runtime_state(**values: Any) -> RuntimeState:
    # No cool-down after a 503 (``cooldown_seconds=0``): the endpoint stays first, so that only its breaker
    # keeps calls away from it.
    return RuntimeState(cooldown_seconds=0, breaker_policy=POLICY, **values)


async def test_a_breaker_opens_fails_over_and_one_probe_closes_it(servers: Servers) -> None:
    metrics = Metrics()
    state = runtime_state(metrics=metrics)
    with capture_logs() as logs:
        await open_close_cycle(servers, [servers.harness(state)], [state])
    changes = [
        (entry["log_level"], entry["circuit_state"], entry["reason"]) for entry in logs if "circuit_state" in entry
    ]
    assert changes == [
        ("warning", "open", "2 of the last 4 calls failed"),
        ("info", "half_open", "its cool-down ended"),
        ("info", "closed", "its probe call succeeded"),
    ]

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"provider": "openai-test", "endpoint": "flaky", **labels})

    assert sample("aiops_model_endpoint_circuit_state") == 0  # closed again
    for to in ("open", "half_open", "closed"):
        assert sample("aiops_model_endpoint_circuit_transitions_total", state=to) == 1


async def test_two_processes_share_one_breaker_and_one_probe(
    servers: Servers,
    link: LinkFactory,  # noqa: F811
    namespace: str,  # noqa: F811
) -> None:
    states: list[RuntimeState] = [
        SharedRuntimeState(link=link(), cooldown_seconds=0, breaker_policy=POLICY) for _ in range(2)
    ]
    await open_close_cycle(servers, [servers.harness(state) for state in states], states)
    # One breaker in Redis, closed with a fresh history (the two calls since), which expires unless calls go on.
    key = f"aiops:breaker:{namespace}endpoint:{servers.flaky.id}"
    assert key in await our_keys(namespace)
    client = states[0].link.client  # type: ignore[attr-defined]
    assert await client.hgetall(key) == {b"consecutive": b"0", b"recent": b"00"}
    assert 0 < await client.pttl(key) <= 3_600_000


async def test_a_failed_probe_reopens_and_a_larger_retry_after_is_honoured(servers: Servers) -> None:
    state = runtime_state()
    harness = servers.harness(state)
    servers.flaky_server.behaviour.fail_next(4, 503)
    for _ in range(4):
        assert await answered_by(harness) == "spare"
    assert await state_of(state, servers.flaky) is CircuitState.open  # all of the last four failed
    await until(state, servers.flaky, CircuitState.half_open)
    servers.flaky_server.behaviour.fail_next(1, 503, retry_after=30)
    assert await answered_by(harness) == "spare"  # the probe failed, and the call failed over
    assert await state_of(state, servers.flaky) is CircuitState.open
    circuit = await state.circuit_admit(servers.flaky, "openai-test")
    assert circuit.verdict is Verdict.open and 28 < circuit.seconds <= 30, "the Retry-After is longer than 0.5 s"
    assert servers.calls_to_flaky() == 5


async def test_failures_that_say_nothing_about_the_endpoint_do_not_count(servers: Servers) -> None:
    state = runtime_state()
    harness = servers.harness(state)
    servers.flaky_server.behaviour.fail_next(6, 400)  # our request was rejected: the endpoint is fine
    for _ in range(6):
        with pytest.raises(ProviderCallError):
            await harness.model.ainvoke("hi")
    assert await state_of(state, servers.flaky) is CircuitState.closed


async def test_every_breaker_open_fails_the_call_naming_them(servers: Servers) -> None:
    state = RuntimeState(cooldown_seconds=0, breaker_policy=BreakerPolicy(consecutive_failures=2, cooldown_seconds=60))
    harness = servers.harness(state)
    for server in (servers.flaky_server, servers.spare_server):
        server.behaviour.fail_next(2, 503)
    for _ in range(2):
        with pytest.raises(ProviderCallError):
            await harness.model.ainvoke("hi")
    with pytest.raises(ProviderCallError) as caught:
        await harness.model.ainvoke("hi")
    message = caught.value.message
    for name in ("flaky", "spare"):
        assert f"endpoint {name!r} with key 'k': not called: its circuit breaker is open" in message, message
    waits = [int(seconds) for seconds in re.findall(r"next probe call in (\d+) s", message)]
    assert len(waits) == 2 and all(58 <= wait <= 60 for wait in waits), message
    assert [a["endpoint"] for a in caught.value.details["attempts"]] == ["flaky", "spare"]
    assert servers.calls_to_flaky() == 2, "no request reached an endpoint whose breaker is open"


async def test_a_probe_without_an_outcome_lets_another_call_probe() -> None:
    """A probe cancelled, rejected for its request, or lost with its process (after its lease)."""
    clock = [0.0]
    breakers = LocalBreakers(BreakerPolicy(consecutive_failures=1, cooldown_seconds=5), clock=lambda: clock[0])
    ep = endpoint("http://unused").id
    assert breakers.record(ep, None, Outcome.failed).state is CircuitState.open
    clock[0] = 5.0
    probe = breakers.admit(ep, lease=60)
    assert probe.verdict is Verdict.probe and probe.opened_probe and probe.probe
    assert breakers.admit(ep, lease=60).verdict is Verdict.probing
    breakers.abandon(ep, probe.probe)
    again = breakers.admit(ep, lease=60)
    assert again.verdict is Verdict.probe and not again.opened_probe
    assert breakers.record(ep, probe.probe, Outcome.succeeded).state is CircuitState.half_open, "not the probe"
    assert breakers.record(ep, again.probe, Outcome.nothing).state is CircuitState.half_open
    assert breakers.admit(ep, lease=1).verdict is Verdict.probe  # its process dies: after its lease...
    clock[0] = 6.5
    assert breakers.admit(ep, lease=60).verdict is Verdict.probe  # ...another call probes


@pytest.fixture(params=["memory", "redis"])
def make_state(request: pytest.FixtureRequest) -> Callable[[], RuntimeState]:
    """States of one process each: in memory (one process), or sharing Redis (any number of them)."""
    if request.param == "memory":
        state = runtime_state()
        return lambda: state
    make_link: LinkFactory = request.getfixturevalue("link")
    return lambda: SharedRuntimeState(link=make_link(), cooldown_seconds=0, breaker_policy=POLICY)


async def test_a_cancelled_probe_call_lets_the_next_call_probe(
    servers: Servers, make_state: Callable[[], RuntimeState]
) -> None:
    first, second = make_state(), make_state()
    harness = servers.harness(first)
    servers.flaky_server.behaviour.fail_next(4, 503)
    for _ in range(4):
        await harness.model.ainvoke("hi")
    await until(first, servers.flaky, CircuitState.half_open)
    servers.flaky_server.behaviour.latency_ms = 1000
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(harness.model.ainvoke("hi"), timeout=0.3)  # the run's deadline, say
    servers.flaky_server.behaviour.latency_ms = 0
    deadline = time.monotonic() + 5  # a shared probe is released in the background
    while (answer := await answered_by(servers.harness(second))) != "flaky":
        assert answer == "spare" and time.monotonic() < deadline
    assert await state_of(second, servers.flaky) is CircuitState.closed


async def test_breakers_and_rate_limits_hold_in_the_process_while_redis_is_unreachable(
    link: LinkFactory,  # noqa: F811
) -> None:
    down = link(DOWN_URL, retry_seconds=0)
    state = SharedRuntimeState(
        link=down, rate_limit_window_seconds=0.3, breaker_policy=BreakerPolicy(consecutive_failures=1)
    )
    ep = endpoint("http://unused", rpm=1)
    with capture_logs() as logs:
        started = time.monotonic()
        for _ in range(2):
            await state.wait_for_rate(ep, lambda: 0)
        assert time.monotonic() - started >= 0.25, "one call a window, in this process"
        circuit = await state.circuit_admit(ep, "p")
        assert circuit.goes and not circuit.shared
        await state.circuit_record(ep, "p", circuit, Failure(FailureKind.server, "503", 503), Outcome.failed)
        assert await state_of(state, ep) is CircuitState.open
        assert not (await state.circuit_admit(ep, "p")).goes
    assert next(e["event"] for e in logs if e["log_level"] == "warning").startswith("Redis unreachable")
