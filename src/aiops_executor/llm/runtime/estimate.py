"""How many tokens a call may use, known before it is made: for budgets (what a call in flight may still cost)
and token-per-minute limits (what a call takes from its endpoint's minute).

No tokenizer of the provider is at hand, so the prompt is measured in UTF-8 bytes. Tokenizers of the byte-pair
and sentence-piece families never make a token of less than one byte, so the bytes (plus a few tokens of
framing per message) bound the prompt's tokens from above. The output is bounded by the call's ``max_tokens``
(or the model's ``max_output_tokens``); a call with neither has no bound, and ``default_output_tokens`` stands
in for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from langchain_core.messages import BaseMessage

from aiops_executor.llm.runtime.config import ModelConfig

# Role markers and separators each message adds on the wire, beyond its content (OpenAI's chat format uses 3-4).
FRAMING_TOKENS_PER_MESSAGE = 8
# The prompt's bytes over this is a typical count of tokens (English and JSON run at about 4 bytes a token).
BYTES_PER_TOKEN = 4


@dataclass(frozen=True)
class CallSize:
    """Tokens a call may use: ``prompt_bound`` at most in, ``output_bound`` at most out (see module docstring);
    ``prompt_typical`` is what the prompt usually comes to."""

    prompt_bound: int
    prompt_typical: int
    output_bound: int

    @property
    def tokens_bound(self) -> int:
        return self.prompt_bound + self.output_bound

    @property
    def tokens_typical(self) -> int:
        return self.prompt_typical + self.output_bound

    def cost_bound(self, model: ModelConfig) -> Decimal | None:
        """At most what the call can cost, in USD; None when the model has no price."""
        if model.input_price is None or model.output_price is None:
            return None
        return (model.input_price * self.prompt_bound + model.output_price * self.output_bound) / 1000


def _content_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode())
    return len(json.dumps(content, ensure_ascii=False, default=str).encode())


def call_size(
    model: ModelConfig,
    messages: Sequence[BaseMessage],
    call_kwargs: dict[str, Any],
    params: dict[str, Any],
    *,
    tools: Sequence[Any] | None = None,
    default_output_tokens: int,
) -> CallSize:
    """The size of one call of ``model`` with ``messages`` (and the tools bound to it)."""
    size = 0
    for message in messages:
        size += _content_bytes(message.content)
        tool_calls = getattr(message, "tool_calls", None)
        if tool_calls:
            size += _content_bytes(tool_calls)
    if tools:
        size += _content_bytes([_tool_text(tool) for tool in tools])
    framing = FRAMING_TOKENS_PER_MESSAGE * (len(messages) + 1)
    limit = call_kwargs.get("max_tokens", params.get("max_tokens"))
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        limit = model.max_output_tokens or default_output_tokens
    return CallSize(
        prompt_bound=size + framing,
        prompt_typical=-(-size // BYTES_PER_TOKEN) + framing,
        output_bound=int(limit),
    )


def _tool_text(tool: Any) -> Any:
    """What a bound tool sends: its schema where it has one, else its text."""
    schema = getattr(tool, "args_schema", None)
    name = getattr(tool, "name", None)
    description = getattr(tool, "description", None)
    if name is not None:
        shape: Any = None
        if schema is not None and hasattr(schema, "model_json_schema"):
            shape = schema.model_json_schema()
        elif isinstance(schema, dict):
            shape = schema
        return {"name": name, "description": description, "parameters": shape}
    return tool if isinstance(tool, dict) else str(tool)
