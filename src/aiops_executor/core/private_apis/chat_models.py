"""Items 2 and 3 of the package's list: LangChain's streaming rule and a client's calls below its callbacks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

__all__ = ["client_agenerate", "client_astream", "langchain_should_stream"]


def langchain_should_stream(
    model: BaseChatModel, run_manager: AsyncCallbackManagerForLLMRun | None, kwargs: dict[str, Any]
) -> bool:
    """LangChain's own answer (item 2), whatever ``model`` overrides."""
    return BaseChatModel._should_stream(model, async_api=True, run_manager=run_manager, **kwargs)


def client_agenerate(
    client: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
) -> Coroutine[Any, Any, ChatResult]:
    """One whole answer from ``client``, below its callbacks (item 3)."""
    return client._agenerate(messages, stop=stop, **kwargs)


def client_astream(
    client: BaseChatModel, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
) -> AsyncIterator[ChatGenerationChunk]:
    """One streamed answer from ``client``, below its callbacks (item 3)."""
    return client._astream(messages, stop=stop, **kwargs)
