"""Session-wide mock provider servers for tests (real HTTP on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiops_devtools.mock_providers import MockLLMServer

OPENAI_KEY = "sk-mock-openai-key-0001"
OPENAI_KEY_2 = "sk-mock-openai-key-0002"
ANTHROPIC_KEY = "sk-ant-mock-key-0001"
OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "qwen-plus", "ernie-4.0-8k", "llama3.1"]
ANTHROPIC_MODELS = ["claude-sonnet-4-6", "claude-haiku-4-5"]


@pytest.fixture(scope="session")
def openai_server() -> Iterator[MockLLMServer]:
    with MockLLMServer("openai", keys=[OPENAI_KEY, OPENAI_KEY_2], models=OPENAI_MODELS) as server:
        yield server


@pytest.fixture(scope="session")
def anthropic_server() -> Iterator[MockLLMServer]:
    with MockLLMServer("anthropic", keys=[ANTHROPIC_KEY], models=ANTHROPIC_MODELS) as server:
        yield server


@pytest.fixture
def openai_mock(openai_server: MockLLMServer) -> Iterator[MockLLMServer]:
    openai_server.behaviour.reset()
    yield openai_server
    openai_server.behaviour.reset()


@pytest.fixture
def anthropic_mock(anthropic_server: MockLLMServer) -> Iterator[MockLLMServer]:
    anthropic_server.behaviour.reset()
    yield anthropic_server
    anthropic_server.behaviour.reset()
