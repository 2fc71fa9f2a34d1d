"""Structured output through the OpenAI protocol against a real llama.cpp server (see tests/llamacpp.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from langchain_openai import ChatOpenAI

from tests.llamacpp import LlamaCppServer, llamacpp_unavailable, start_llamacpp_server

INCIDENT: dict[str, Any] = {
    "title": "incident",
    "description": "A short incident report",
    "type": "object",
    "properties": {
        "severity": {"type": "string", "enum": ["low", "medium", "high"]},
        "affected_hosts": {"type": "integer", "minimum": 0},
        "services": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
        "summary": {"type": "string", "maxLength": 60},
    },
    "required": ["severity", "affected_hosts", "services", "summary"],
    "additionalProperties": False,
}
PROMPT = "The disks of 3 database hosts are full and the orders service is down. Report the incident."


@pytest.fixture(scope="module")
def llamacpp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    reason = llamacpp_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with start_llamacpp_server(log_path=tmp_path_factory.mktemp("llamacpp") / "server.log") as server:
        yield server


def chat(server: LlamaCppServer) -> ChatOpenAI:
    # ChatOpenAI sends max_tokens as max_completion_tokens, which this server ignores: the bound goes in the body.
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="unused",
        model=server.model,
        temperature=0,
        max_retries=0,
        timeout=90,
        extra_body={"max_tokens": 160},
    )


def test_server_lists_its_model(llamacpp: LlamaCppServer) -> None:
    response = httpx.get(f"{llamacpp.base_url}/models", timeout=10, trust_env=False)
    assert response.status_code == 200
    assert [model["id"] for model in response.json()["data"]] == [llamacpp.model]


def test_json_schema_response_format_yields_valid_json(llamacpp: LlamaCppServer) -> None:
    """The schema goes as llama.cpp's ``json_object`` + ``schema``; its grammar makes the reply validate."""
    reply = chat(llamacpp).bind(response_format={"type": "json_object", "schema": INCIDENT}).invoke(PROMPT)
    assert isinstance(reply.content, str)
    jsonschema.validate(json.loads(reply.content), INCIDENT)
    assert reply.response_metadata["finish_reason"] == "stop", reply.response_metadata


def test_function_calling_structured_output_validates(llamacpp: LlamaCppServer) -> None:
    """A named tool_choice (what ``method="function_calling"`` sends) is grammar-constrained too."""
    out = chat(llamacpp).with_structured_output(INCIDENT, method="function_calling").invoke(PROMPT)
    assert isinstance(out, dict)
    jsonschema.validate(out, INCIDENT)


def test_openai_json_schema_response_format_is_refused(llamacpp: LlamaCppServer) -> None:
    """This server version knows no ``json_schema`` response format: ``method="json_schema"`` cannot be used."""
    with pytest.raises(openai.InternalServerError) as refused:
        chat(llamacpp).with_structured_output(INCIDENT, method="json_schema").invoke(PROMPT)
    assert refused.value.status_code == 500
    assert "Input should be 'text' or 'json_object'" in str(refused.value)
