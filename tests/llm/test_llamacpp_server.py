"""Structured output through the OpenAI protocol against a real llama.cpp server (see tests/llamacpp.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from langchain_openai import ChatOpenAI

from aiops_executor.core.context import AppContext
from aiops_executor.engine import EventType, RunStatus
from tests.engine.test_engine_providers import CAPABILITIES, run
from tests.engine_support import agent, node, team
from tests.helpers import created, make_provider
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
# One worker runs them all, sharing the module's server (the model takes a core of its own).
pytestmark = [pytest.mark.long, pytest.mark.xdist_group("llamacpp")]
PROMPT = "The disks of 3 database hosts are full and the orders service is down. Report the incident."


@pytest.fixture(scope="module")
def llamacpp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    reason = llamacpp_unavailable()
    if reason is not None:
        if os.environ.get("AIOPS_TEST_LLAMACPP_PYTHON"):  # ./dev test provides the server: it must be there
            pytest.fail(reason)
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


# --------------------------------------------------------------------------------------------- the service on it


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def test_a_team_with_an_output_schema_runs_on_llamacpp(
    llamacpp: LlamaCppServer, client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext
) -> None:
    """The whole path on a real server: the provider configured through the API, the run through the model
    runtime, and the structured result although this server refuses the first strategy (json_schema)."""
    provider_id = await make_provider(client, admin_headers, "cloud", "openai_compatible")
    endpoint = {"name": "llamacpp", "base_url": llamacpp.base_url, "timeout_read": 120, "retry_count": 0}
    await created(client, admin_headers, f"/providers/{provider_id}/endpoints", endpoint)
    await created(client, admin_headers, f"/providers/{provider_id}/credentials", {"alias": "k", "api_key": "unused"})
    model = {
        "model_id": llamacpp.model,
        "name": "SmolLM2 135M",
        "capabilities": CAPABILITIES,
        "default_params": {"temperature": 0, "max_tokens": 96},
    }
    await created(client, admin_headers, f"/providers/{provider_id}/models", model)
    spec = team(
        # Round robin: this tiny model, asked to route, honestly chooses to finish before any agent worked.
        [node("db", [agent("reader", tools=(), provider="cloud")], "round_robin", supervisor_provider="cloud")],
        strategy="parallel",
        global_provider="cloud",
    )
    data = spec.model_dump()
    data["topology"]["global_supervisor"]["model_id"] = llamacpp.model
    data["topology"]["nodes"][0]["supervisor_config"]["model_id"] = llamacpp.model
    data["topology"]["nodes"][0]["agents"][0]["model_id"] = llamacpp.model

    execution, events, _ = await run(context, type(spec).model_validate(data), output_schema=INCIDENT)

    assert execution.outcome is not None, events[-1].data
    terminal = events[-1].data
    assert execution.outcome.status is RunStatus.success, (terminal.get("error_message"), terminal.get("errors"))
    jsonschema.validate(execution.outcome.structured_output, INCIDENT)
    assert [e.data["status"] for e in events if e.type == EventType.agent_message] == ["success"]
