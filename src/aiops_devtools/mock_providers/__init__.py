"""Local mock LLM provider servers speaking the real OpenAI / Azure OpenAI and Anthropic wire protocols.

They let tests drive the real SDK and LangChain client classes over real HTTP without internet access.
See :class:`MockBehaviour` for what can be steered and :class:`MockLLMServer` / :func:`serve` to run them.
"""

from __future__ import annotations

from .anthropic_server import create_anthropic_app
from .behaviour import (
    DEFAULT_ANTHROPIC_MODELS,
    DEFAULT_API_KEY,
    DEFAULT_OPENAI_MODELS,
    BehaviourUpdate,
    ChatRequest,
    ChatTurn,
    Fault,
    MockBehaviour,
    MockReply,
    RecordedRequest,
    ToolCall,
    ToolSpec,
    default_reply,
    sample_from_schema,
)
from .openai_server import create_openai_app
from .runner import MockLLMServer, create_mock_app, serve, start_mock_server

__all__ = [
    "DEFAULT_ANTHROPIC_MODELS",
    "DEFAULT_API_KEY",
    "DEFAULT_OPENAI_MODELS",
    "BehaviourUpdate",
    "ChatRequest",
    "ChatTurn",
    "Fault",
    "MockBehaviour",
    "MockLLMServer",
    "MockReply",
    "RecordedRequest",
    "ToolCall",
    "ToolSpec",
    "create_anthropic_app",
    "create_mock_app",
    "create_openai_app",
    "default_reply",
    "sample_from_schema",
    "serve",
    "start_mock_server",
]
