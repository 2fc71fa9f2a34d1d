"""Circuit breakers per endpoint: an endpoint that keeps failing is left alone for a while, then tried with one call.

``closed``: calls go through; each failure that says something about the endpoint (unreachable, timed out, a 5xx
other than the request-specific ones, 429 throttling: ``routing.endpoint_failed``) and each success is counted.
After ``consecutive_failures`` failures in a row, or once ``failure_rate_percent`` of the last ``window_calls``
calls failed (with that many seen), it opens. ``open``: routing skips the endpoint for the cool-down (or the
longer Retry-After of the failure that opened it). Then it is ``half_open``: one call, the probe, is let
through; its success closes the breaker with a fresh history, its failure opens it for another cool-down.
A probe's outcome that says nothing about the endpoint (a rejected request or key, a cancelled call) lets the
next call probe instead. A probe whose process died is replaced once its lease has run out.

Calls let through while the breaker was closed that end while it is open or half-open are not counted: the
breaker has already made up its mind about them.

``LocalBreakers`` keeps the breakers in this process; ``RedisBreakers`` keeps them in Redis, one hash per
endpoint changed by Lua scripts on Redis's clock, so that every process sees one breaker and lets one probe
through between them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from aiops_executor.core.redis_link import RedisLink
from aiops_executor.llm.runtime.limits import REDIS_NOW

FAILED, SUCCEEDED = "1", "0"
# How long the history of a breaker nobody calls through is kept in Redis.
HISTORY_MS = 3_600_000


class CircuitState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class Outcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"  # a failure that says something about the endpoint
    nothing = "nothing"  # the call said nothing about the endpoint (rejected request or key, cancelled)


class Verdict(StrEnum):
    go = "go"  # closed: the call goes through
    probe = "probe"  # half-open: the call goes through as the one probe
    open = "open"  # open: skipped until the cool-down ends
    probing = "probing"  # half-open with its probe under way: skipped


@dataclass(frozen=True)
class BreakerPolicy:
    """When a breaker opens and for how long (the ``AIOPS_CIRCUIT_BREAKER_*`` settings); 0 turns a rule off."""

    consecutive_failures: int = 5
    failure_rate_percent: float = 50.0
    window_calls: int = 20
    cooldown_seconds: float = 30.0

    def trips(self, consecutive: int, recent: str) -> str | None:
        """Why a closed breaker with this history opens, or None."""
        if self.consecutive_failures and consecutive >= self.consecutive_failures:
            return f"{consecutive} failures in a row"
        if self.failure_rate_percent and len(recent) >= self.window_calls:
            failed = recent.count(FAILED)
            if failed * 100 >= self.failure_rate_percent * len(recent):
                return f"{failed} of the last {len(recent)} calls failed"
        return None

    def cooldown(self, retry_after: float | None) -> float:
        return max(self.cooldown_seconds, retry_after or 0.0)


@dataclass(frozen=True)
class CircuitPass:
    """A breaker's answer to a call about to be made: the state it was found in, and for ``open``/``probing``
    the seconds until the next probe may go. ``opened_probe``: this call turned an open breaker half-open."""

    verdict: Verdict
    state: CircuitState
    seconds: float = 0.0
    probe: str | None = None  # the probe's token, to report its outcome with
    opened_probe: bool = False
    shared: bool = False  # decided by the breaker in Redis (else by this process's)

    @property
    def goes(self) -> bool:
        return self.verdict in (Verdict.go, Verdict.probe)


@dataclass(frozen=True)
class Change:
    """A breaker's state after a call's outcome; ``reason`` is set when the outcome changed it."""

    state: CircuitState
    reason: str | None = None
    cooldown: float | None = None  # how long it stays open, when it opened


@dataclass
class Circuit:
    state: CircuitState = CircuitState.closed
    consecutive: int = 0
    recent: str = ""  # the last calls' outcomes, oldest first (FAILED or SUCCEEDED each)
    open_until: float = 0.0
    probe: str | None = None
    probe_until: float = 0.0


class LocalBreakers:
    """The endpoints' breakers in this process (see module docstring)."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.clock = clock
        self._circuits: dict[uuid.UUID, Circuit] = {}

    def admit(self, endpoint_id: uuid.UUID, lease: float) -> CircuitPass:
        circuit = self._circuits.get(endpoint_id)
        if circuit is None or circuit.state is CircuitState.closed:
            return CircuitPass(Verdict.go, CircuitState.closed)
        now = self.clock()
        if circuit.state is CircuitState.open and now < circuit.open_until:
            return CircuitPass(Verdict.open, CircuitState.open, circuit.open_until - now)
        if circuit.state is CircuitState.half_open and circuit.probe is not None and now < circuit.probe_until:
            return CircuitPass(Verdict.probing, CircuitState.half_open, circuit.probe_until - now)
        opened_probe = circuit.state is CircuitState.open
        circuit.state, circuit.probe, circuit.probe_until = CircuitState.half_open, uuid.uuid4().hex, now + lease
        return CircuitPass(Verdict.probe, CircuitState.half_open, probe=circuit.probe, opened_probe=opened_probe)

    def record(
        self, endpoint_id: uuid.UUID, probe: str | None, outcome: Outcome, retry_after: float | None = None
    ) -> Change:
        circuit = self._circuits.setdefault(endpoint_id, Circuit())
        if circuit.state is CircuitState.half_open:
            if probe is None or probe != circuit.probe:
                return Change(circuit.state)
            circuit.probe = None
            if outcome is Outcome.succeeded:
                self._circuits[endpoint_id] = Circuit()
                return Change(CircuitState.closed, "its probe call succeeded")
            if outcome is Outcome.failed:
                cooldown = self.policy.cooldown(retry_after)
                circuit.state, circuit.open_until = CircuitState.open, self.clock() + cooldown
                return Change(CircuitState.open, "its probe call failed", cooldown)
            return Change(circuit.state)
        if circuit.state is CircuitState.open or outcome is Outcome.nothing:
            return Change(circuit.state)
        failed = outcome is Outcome.failed
        circuit.consecutive = circuit.consecutive + 1 if failed else 0
        circuit.recent = (circuit.recent + (FAILED if failed else SUCCEEDED))[-self.policy.window_calls :]
        reason = self.policy.trips(circuit.consecutive, circuit.recent)
        if reason is None:
            return Change(CircuitState.closed)
        cooldown = self.policy.cooldown(retry_after)
        self._circuits[endpoint_id] = Circuit(state=CircuitState.open, open_until=self.clock() + cooldown)
        return Change(CircuitState.open, reason, cooldown)

    def abandon(self, endpoint_id: uuid.UUID, probe: str) -> None:
        """The probe ended without an outcome (cancelled): the next call probes instead."""
        circuit = self._circuits.get(endpoint_id)
        if circuit is not None and circuit.probe == probe:
            circuit.probe = None

    def states(self, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CircuitState]:
        """Each breaker's state now (an open one whose cool-down has ended reads half-open)."""
        now = self.clock()
        shown: dict[uuid.UUID, CircuitState] = {}
        for endpoint_id in endpoint_ids:
            circuit = self._circuits.get(endpoint_id, Circuit())
            cooled = circuit.state is CircuitState.open and now >= circuit.open_until
            shown[endpoint_id] = CircuitState.half_open if cooled else circuit.state
        return shown

    def reset(self) -> None:
        self._circuits.clear()


# KEYS[1]: the breaker (hash: state, open_until, probe, probe_until, consecutive, recent; absent: closed with no
# history). ARGV: a probe token, its lease ms. Returns {verdict, ms until the next probe may go, state before}.
_ADMIT = f"""
{REDIS_NOW}
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {{'go', 0, state}} end
if state == 'open' then
  local reopen = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
  if now < reopen then return {{'open', reopen - now, state}} end
else
  local busy = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
  if redis.call('HEXISTS', KEYS[1], 'probe') == 1 and now < busy then return {{'probing', busy - now, state}} end
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe', ARGV[1], 'probe_until', now + tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + {HISTORY_MS})
return {{'probe', 0, state}}
"""

# KEYS[1]: the breaker. ARGV: outcome (succeeded|failed|nothing), the probe token ('' for a call that is not the
# probe), consecutive failures, failure rate %, window calls, cool-down ms. Returns {state after, why it changed
# ('' when it did not)}.
_RECORD = f"""
{REDIS_NOW}
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local outcome, cooldown = ARGV[1], tonumber(ARGV[6])
if state == 'half_open' then
  if ARGV[2] == '' or redis.call('HGET', KEYS[1], 'probe') ~= ARGV[2] then return {{state, ''}} end
  if outcome == 'succeeded' then
    redis.call('DEL', KEYS[1])
    return {{'closed', 'its probe call succeeded'}}
  end
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  if outcome == 'failed' then
    redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + cooldown)
    redis.call('PEXPIRE', KEYS[1], cooldown + {HISTORY_MS})
    return {{'open', 'its probe call failed'}}
  end
  return {{state, ''}}
end
if state == 'open' or outcome == 'nothing' then return {{state, ''}} end
local consecutive = tonumber(redis.call('HGET', KEYS[1], 'consecutive') or '0')
local recent = redis.call('HGET', KEYS[1], 'recent') or ''
if outcome == 'failed' then
  consecutive = consecutive + 1
  recent = recent .. '{FAILED}'
else
  consecutive = 0
  recent = recent .. '{SUCCEEDED}'
end
local window = tonumber(ARGV[5])
if #recent > window then recent = string.sub(recent, -window) end
local reason = ''
local in_a_row, rate = tonumber(ARGV[3]), tonumber(ARGV[4])
if in_a_row > 0 and consecutive >= in_a_row then
  reason = consecutive .. ' failures in a row'
elseif rate > 0 and #recent >= window then
  local _, failed = string.gsub(recent, '{FAILED}', '')
  if failed * 100 >= rate * #recent then reason = failed .. ' of the last ' .. #recent .. ' calls failed' end
end
if reason ~= '' then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + cooldown)
  redis.call('PEXPIRE', KEYS[1], cooldown + {HISTORY_MS})
  return {{'open', reason}}
end
redis.call('HSET', KEYS[1], 'consecutive', consecutive, 'recent', recent)
redis.call('PEXPIRE', KEYS[1], {HISTORY_MS})
return {{'closed', ''}}
"""

# KEYS[1]: the breaker. ARGV[1]: the probe's token. The probe ended without an outcome: the next call probes.
_ABANDON = """
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then redis.call('HDEL', KEYS[1], 'probe', 'probe_until') end
return 1
"""

# KEYS: breakers. Returns each one's state now (an open one whose cool-down has ended reads half_open).
_STATES = f"""
{REDIS_NOW}
local shown = {{}}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, 'state', 'open_until')
  local state = fields[1] or 'closed'
  if state == 'open' and now >= tonumber(fields[2]) then state = 'half_open' end
  shown[i] = state
end
return shown
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBreakers:
    """The endpoints' breakers shared by every process (see module docstring). Every method raises
    ``RedisUnavailable`` when Redis cannot serve it; the caller then uses this process's ``LocalBreakers``."""

    def __init__(self, link: RedisLink, policy: BreakerPolicy) -> None:
        self.link = link
        self.policy = policy
        self._admit = link.client.register_script(_ADMIT)
        self._record = link.client.register_script(_RECORD)
        self._abandon = link.client.register_script(_ABANDON)
        self._states = link.client.register_script(_STATES)

    def key(self, endpoint_id: uuid.UUID) -> str:
        return self.link.key("breaker", "endpoint", str(endpoint_id))

    async def admit(self, endpoint_id: uuid.UUID, lease: float) -> CircuitPass:
        token = uuid.uuid4().hex
        keys, args = [self.key(endpoint_id)], [token, str(max(1, round(lease * 1000)))]
        verdict, ms, before = await self.link.call("circuit breaker", lambda: self._admit(keys, args))
        decided = Verdict(_text(verdict))
        if decided is Verdict.go:
            return CircuitPass(decided, CircuitState.closed, shared=True)
        if decided is Verdict.probe:
            opened_probe = _text(before) == CircuitState.open
            return CircuitPass(decided, CircuitState.half_open, probe=token, opened_probe=opened_probe, shared=True)
        state = CircuitState.open if decided is Verdict.open else CircuitState.half_open
        return CircuitPass(decided, state, int(ms) / 1000, shared=True)

    async def record(
        self, endpoint_id: uuid.UUID, probe: str | None, outcome: Outcome, retry_after: float | None = None
    ) -> Change:
        policy = self.policy
        cooldown = policy.cooldown(retry_after)
        args = [
            outcome.value,
            probe or "",
            policy.consecutive_failures,
            policy.failure_rate_percent,
            policy.window_calls,
            max(1, round(cooldown * 1000)),
        ]
        keys = [self.key(endpoint_id)]
        state, reason = await self.link.call("circuit breaker", lambda: self._record(keys, args))
        after = CircuitState(_text(state))
        why = _text(reason) or None
        return Change(after, why, cooldown if why and after is CircuitState.open else None)

    async def abandon(self, endpoint_id: uuid.UUID, probe: str) -> None:
        await self.link.call("circuit breaker", lambda: self._abandon([self.key(endpoint_id)], [probe]))

    async def states(self, endpoint_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, CircuitState]:
        if not endpoint_ids:
            return {}
        keys = [self.key(endpoint_id) for endpoint_id in endpoint_ids]
        shown = await self.link.call("circuit breaker", lambda: self._states(keys, []))
        return {endpoint_id: CircuitState(_text(s)) for endpoint_id, s in zip(endpoint_ids, shown, strict=True)}
