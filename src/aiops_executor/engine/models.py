"""What the engine needs from the outside world to get chat models, and the usage it reports back."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from langchain_core.language_models.chat_models import BaseChatModel


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "cost": float(self.cost)}


class ModelSource(Protocol):
    """Hands out chat models for the topology's model references and counts what a run used.

    One source serves one run: ``usage()`` is that run's total. Implementations resolve ``provider`` as a
    provider name or id and apply ``overrides`` (temperature, max_tokens) over the model's defaults.
    """

    async def chat_model(self, provider: str, model_id: str, overrides: dict[str, Any]) -> BaseChatModel: ...

    def usage(self) -> Usage: ...
