"""What the engine needs from the outside world to get chat models, and the usage it reports back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from langchain_core.language_models.chat_models import BaseChatModel


def _plus(left: Any, right: Any) -> Any:
    return None if left is None or right is None else left + right


@dataclass(frozen=True)
class Usage:
    """Tokens and cost (USD). ``None`` means unknown: a provider did not report a count, or a price is missing.

    Unknown is contagious when adding up, so a total never claims a precision it does not have.
    """

    input_tokens: int | None = 0
    output_tokens: int | None = 0
    cost: Decimal | None = Decimal(0)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            _plus(self.input_tokens, other.input_tokens),
            _plus(self.output_tokens, other.output_tokens),
            _plus(self.cost, other.cost),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": None if self.cost is None else float(self.cost),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any] | None) -> Usage:
        if not body:
            return cls()
        cost = body.get("cost", 0)
        return cls(
            body.get("input_tokens", 0),
            body.get("output_tokens", 0),
            None if cost is None else Decimal(str(cost)),
        )


class UsageMeter:
    """Adds up the usage of the model calls made while it is the current meter (see ``metering``), and passes
    it on to the meter that was current when it was made, so an outer scope sees its inner scopes' calls."""

    def __init__(self, parent: UsageMeter | None = None) -> None:
        self.parent = parent
        self.total = Usage()

    def add(self, usage: Usage) -> None:
        self.total = self.total + usage
        if self.parent is not None:
            self.parent.add(usage)


_current_meter: ContextVar[UsageMeter | None] = ContextVar("aiops_usage_meter", default=None)


@contextmanager
def metering() -> Iterator[UsageMeter]:
    """A new meter that receives the usage of every model call made in this context (and the tasks it starts)."""
    meter = UsageMeter(_current_meter.get())
    token = _current_meter.set(meter)
    try:
        yield meter
    finally:
        _current_meter.reset(token)


def report_usage(usage: Usage) -> None:
    """Called by a model source once per successful provider call. The engine attributes the usage to the node
    team or supervisor whose work made the call: the meter is carried by the context, so concurrent node teams
    sharing one chat model are still told apart."""
    meter = _current_meter.get()
    if meter is not None:
        meter.add(usage)


# A model whose streamed answer broke and starts again (on another endpoint) sends its token listeners an empty
# chunk whose ``response_metadata[DISCARDED_TOKENS_KEY]`` says how many deltas it streamed are void, and why.
DISCARDED_TOKENS_KEY = "aiops_discarded"


class ModelSource(Protocol):
    """Hands out chat models for the topology's model references.

    Implementations resolve ``provider`` as a provider name or id, apply ``overrides`` (temperature,
    max_tokens) over the model's defaults, and call ``report_usage`` after each successful provider call.
    """

    async def chat_model(self, provider: str, model_id: str, overrides: dict[str, Any]) -> BaseChatModel: ...

    def halt(self) -> RunHalt | None:
        """Why every further model call of this run is refused (a spent budget), once one was: the run then
        ends failed with it, its partial result kept. None while calls go through."""
        ...


@dataclass(frozen=True)
class RunHalt:
    """A reason that ends the whole run rather than one step (``error_code`` as the contract names it)."""

    error_code: str
    message: str
    details: dict[str, Any]
