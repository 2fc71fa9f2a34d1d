"""Endpoints' rpm/tpm limits: calls wait for room, and the server never sees more than the limit in a window --
counted where it matters, at the (mock) provider. Windows are shortened through the window setting."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import pytest

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.llm.runtime.config import ModelBinding
from aiops_executor.llm.runtime.limits import LocalRateLimiter, RedisRateLimiter, WindowLog
from aiops_executor.llm.runtime.shared_state import SharedRuntimeState
from aiops_executor.llm.runtime.state import RuntimeState
from tests.helpers import REPO_ROOT
from tests.llm.test_limits_redis import REDIS_URL, LinkFactory, link, namespace  # noqa: F401 - their fixtures
from tests.llm.test_runtime_clients import endpoint, model
from tests.llm.test_runtime_failover import Harness, credential
from tests.mock_providers import OPENAI_KEY

# The server notes a request when it arrives, which trails the moment the limiter let it go by the request's own
# trip through the loopback (a few milliseconds, more on a busy machine): windows are counted this much shorter.
TRANSIT_SECONDS = 0.15


def most_in_a_window(times: Sequence[float], window: float) -> int:
    """The most of ``times`` that any window of this length holds, wherever it starts (a busiest window starts
    at one of them)."""
    ordered = sorted(times)
    return max((bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


def arrivals(server: MockLLMServer) -> list[float]:
    return [request.timestamp for request in server.behaviour.requests_to("/chat/completions")]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------ the log


def test_the_window_log_admits_by_requests_and_tokens() -> None:
    log = WindowLog()
    assert [log.take(0.0, 10.0, 3, None, 0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert log.take(4.0, 10.0, 3, None, 0) == 6.0  # the calls at 0 leave the window at 10
    assert log.take(9.5, 10.0, 3, None, 0) == 0.5
    assert [log.take(10.0, 10.0, 3, None, 0) for _ in range(4)] == [0.0, 0.0, 0.0, 10.0]

    tokens = WindowLog()
    assert tokens.take(0.0, 60.0, None, 100, 60) == 0.0
    assert tokens.take(5.0, 60.0, None, 100, 30) == 0.0
    assert tokens.take(6.0, 60.0, None, 100, 20) == 54.0  # 110 > 100 until the 60-token call leaves at 60
    assert tokens.take(60.0, 60.0, None, 100, 20) == 0.0
    # A call larger than a whole minute's tokens waits for the log to empty, then goes alone.
    assert tokens.take(61.0, 60.0, None, 100, 500) == 59.0  # the call at 60 leaves at 120
    assert tokens.take(120.0, 60.0, None, 100, 500) == 0.0
    assert tokens.take(121.0, 60.0, None, 100, 1) == 59.0  # and everything waits until it has left


async def test_a_wait_for_room_can_be_cancelled_and_takes_no_room() -> None:
    clock = ManualClock()
    limiter = LocalRateLimiter(window_seconds=5.0, clock=clock)
    limited = endpoint("http://unused", rpm=1)
    await limiter.wait(limited, 0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(limiter.wait(limited, 0), timeout=0.05)  # a run's deadline, say
    clock.now += 5.0
    assert limiter.take(limited, 0) == 0.0, "the cancelled call took no room"
    unlimited = endpoint("http://unused")
    state = RuntimeState(rate_limit_window_seconds=5.0)
    for _ in range(100):
        await state.wait_for_rate(unlimited, lambda: pytest.fail("no tpm limit: the call is not measured"))


# ------------------------------------------------------------------------------------------ one process


async def test_an_rpm_limit_spreads_calls_over_windows_in_one_process() -> None:
    window = 1.0
    async with MockLLMServer("openai", keys=[OPENAI_KEY]) as server:
        limited = endpoint(server.client_base_url, rpm=3)
        harness = Harness(
            ModelBinding(model("openai", "gpt-4o-mini"), (limited,), (credential("k"),)),
            {"k": OPENAI_KEY},
            state=RuntimeState(rate_limit_window_seconds=window),
        )
        await asyncio.gather(*(harness.model.ainvoke(f"call {i}") for i in range(6)))
        seen = arrivals(server)
    assert harness.outcomes() == ["success"] * 6, "calls over the limit wait; none fails"
    assert len(seen) == 6
    assert most_in_a_window(seen, window - TRANSIT_SECONDS) == 3
    assert window - TRANSIT_SECONDS <= max(seen) - min(seen) < 2 * window, "the second three in the next window"


async def test_a_tpm_limit_counts_each_call_at_its_expected_size() -> None:
    window = 0.5
    async with MockLLMServer("openai", keys=[OPENAI_KEY]) as server:
        # max_tokens 60 and a short prompt: about 80 tokens a call, so a 100-token minute takes one at a time.
        limited = endpoint(server.client_base_url, tpm=100)
        harness = Harness(
            ModelBinding(model("openai", "gpt-4o-mini"), (limited,), (credential("k"),)),
            {"k": OPENAI_KEY},
            state=RuntimeState(rate_limit_window_seconds=window),
            params={"max_tokens": 60},
        )
        await asyncio.gather(*(harness.model.ainvoke("hi") for _ in range(3)))
        seen = sorted(arrivals(server))
        gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
        assert len(seen) == 3 and all(gap >= window - TRANSIT_SECONDS for gap in gaps), gaps

        # A call larger than the whole minute's tokens is not held back for ever: it goes alone.
        server.behaviour.clear_requests()
        started = time.monotonic()
        await harness.model.ainvoke("hi", max_tokens=1000)
        assert time.monotonic() - started < 2 * window
        assert len(arrivals(server)) == 1


# --------------------------------------------------------------------------------------- across processes


async def test_redis_limits_count_tokens_and_let_an_oversized_call_go_alone(
    link: LinkFactory,  # noqa: F811
    namespace: str,  # noqa: F811
) -> None:
    window = 0.5
    states = [SharedRuntimeState(link=link(), rate_limit_window_seconds=window) for _ in range(2)]
    limited = endpoint("http://unused", tpm=100)
    limiter = states[0].rate_limiter
    assert isinstance(limiter, RedisRateLimiter)
    started = time.monotonic()
    await states[0].wait_for_rate(limited, lambda: 60)
    await states[1].wait_for_rate(limited, lambda: 30)
    assert time.monotonic() - started < window / 2, "90 of 100 tokens: both at once"
    await states[1].wait_for_rate(limited, lambda: 30)
    waited = time.monotonic() - started
    assert window * 0.8 <= waited < window * 2, "120 > 100: until the 60-token call has left the window"
    await states[0].wait_for_rate(limited, lambda: 500)  # more than tpm: once the log is empty, alone
    assert time.monotonic() - started < window * 4
    client = states[0].link.client
    calls_key, tokens_key = limiter.keys(limited)
    assert await client.zcard(calls_key) == 1 and int(await client.get(tokens_key)) == 500
    assert 0 < await client.pttl(calls_key) <= window * 1000


@pytest.mark.long
async def test_an_rpm_limit_holds_across_two_processes(namespace: str) -> None:  # noqa: F811
    """Twice the limit of calls from two processes at once: spread over two windows, never more than the limit
    in one window at the server."""
    window, rpm = 1.5, 3
    async with MockLLMServer("openai", keys=[OPENAI_KEY]) as server:
        spec: dict[str, Any] = {
            "redis_url": REDIS_URL,
            "namespace": namespace,
            "window_seconds": window,
            "base_url": server.client_base_url,
            "endpoint_id": str(uuid.uuid4()),
            "rpm": rpm,
            "api_key": OPENAI_KEY,
            "calls": rpm,
        }
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.llm.rate_limited_caller",
                json.dumps(spec),
                cwd=REPO_ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(2)
        ]
        try:
            for process in processes:
                assert process.stdout is not None and process.stderr is not None
                line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
                assert line.strip() == b"ready", line + await process.stderr.read()
            outputs = await asyncio.wait_for(
                asyncio.gather(*(process.communicate(b"go\n") for process in processes)), timeout=60
            )
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        seen = arrivals(server)
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err.decode()
        answered = json.loads(out.splitlines()[-1])
        assert answered == ["primary"] * rpm, "each call was answered; none failed for want of room"
    assert len(seen) == 2 * rpm
    assert most_in_a_window(seen, window - TRANSIT_SECONDS) == rpm
    assert window - TRANSIT_SECONDS <= max(seen) - min(seen) < 2 * window, "the second half in the next window"
