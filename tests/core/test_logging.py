"""Logs: secrets never reach the output (json and console), and lines inside a run carry its ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from aiops_executor.core.logging import configure_logging
from aiops_executor.core.redaction import REDACTED, is_secret_key, redact_text, redact_value
from tests.conftest import make_settings
from tests.helpers import API, CAPABLE

# Secrets recognisable by their shape, wherever they appear.
SHAPED = {
    "openai": "sk-proj-Zx81LmQ2vB7nK4pT9wR3yU6",
    "anthropic": "sk-ant-api03-Hq7Ff2Kp9Lm4Nx8Rt1Vw5Yz3",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0.Qk3x9Pv2Lm8Rt5Wy1Zn4Hb7",
    "aws_key_id": "AKIA4EXAMPLEZQ7WXY2M",
    "aws_temp_key_id": "ASIA4EXAMPLEBN3KLT6P",
}
BEARER_TOKEN = "opaqueBearerTok3n-9f8e7d6c5b"
URL_PASSWORD = "Url-Pa55word-4d3c"
# Secrets with no recognisable shape: only their name gives them away.
PASSWORD = "correct horse battery staple"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
API_KEY = "plainvalue-7c6b5a4"
ALL_SECRETS = [*SHAPED.values(), BEARER_TOKEN, URL_PASSWORD, PASSWORD, AWS_SECRET, API_KEY]


def _log_every_way() -> None:
    log = structlog.get_logger("test")
    dsn = f"postgresql://svc:{URL_PASSWORD}@db.internal:5432/app"
    for name, secret in SHAPED.items():
        log.info("as a field", kind=name, value=secret)
        log.info("nested", kind=name, outer={"inner": [{"deep": (secret, 1)}]})
        log.info(f"in the message {secret} for {name}")
        try:
            raise RuntimeError(f"provider refused {secret}")
        except RuntimeError:
            log.exception("in an exception", kind=name)
    log.info("header", headers={"Authorization": f"Bearer {BEARER_TOKEN}", "Accept": "application/json"})
    log.info(f"calling with Authorization: Bearer {BEARER_TOKEN}")
    log.info("dsn", url=dsn, nested={"urls": [dsn]})
    log.info(f"connecting to {dsn}")
    log.info("named", password=PASSWORD, aws_secret_access_key=AWS_SECRET, api_key=API_KEY)
    log.info("named nested", config={"db": {"Password": PASSWORD}, "aws": [{"secretAccessKey": AWS_SECRET}]})
    log.info(f"env AWS_SECRET_ACCESS_KEY={AWS_SECRET} api_key: {API_KEY}")
    log.info("json text", body=json.dumps({"password": PASSWORD, "user": "bob"}))
    try:
        try:
            raise ValueError(f"login failed for {dsn} with password={API_KEY}")
        except ValueError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError:
        log.exception("chained exception")
    log.error("exception as a field", error=ValueError(f"bad aws_secret_access_key={AWS_SECRET}"))


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_secret_reaches_the_output(fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(make_settings("sqlite+aiosqlite://", tmp_path, log_format=fmt))
    capsys.readouterr()
    _log_every_way()
    output = capsys.readouterr().err

    for secret in ALL_SECRETS:
        assert secret not in output, f"{secret!r} reached the {fmt} output"
    # The fragments of multi-word or path-like secrets are gone too.
    for fragment in ("horse battery", "K7MDENG", "Pa55word"):
        assert fragment not in output
    # What is not secret survives, so the test saw real output.
    assert output.count(REDACTED) >= 30
    for kept in ("db.internal:5432/app", "application/json", "provider refused", "Traceback", '"user": "bob"'):
        assert kept in output or kept.replace('"', '\\"') in output, kept
    if fmt == "json":
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        assert len(lines) == 5 * 4 + 10
        assert all(line["level"] for line in lines)


def test_shapes_and_names() -> None:
    assert redact_text("token sk-abcdefghijklmnop here") == f"token {REDACTED} here"
    assert redact_text("Authorization: Basic dXNlcjpwYXNzd29yZA==") == f"Authorization: Basic {REDACTED}"
    assert redact_text("redis://:pw-1234@cache:6379/0") == f"redis://:{REDACTED}@cache:6379/0"
    assert redact_text("{'client_secret': 'a b c'}") == f"{{'client_secret': '{REDACTED}'}}"
    assert redact_text("password=[REDACTED]") == "password=[REDACTED]"
    # Counts, ids, masked forms and prose are left alone.
    for benign in (
        "max_tokens=5 tokens: 7 prompt_tokens=3",
        "api_key_masked=sk-1...cdef",
        "expected an 'Authorization: Bearer <token>' header",
        "invalid or expired credentials",
        "task-runner-123456789 disk-usage",
        "https://example.com:8443/path?q=1",
    ):
        assert redact_text(benign) == benign
    for name in ("password", "api_key", "apiKey", "X-Api-Key", "Authorization", "clientSecret", "credentials"):
        assert is_secret_key(name), name
    for name in ("credential_id", "token_type", "max_tokens", "input_tokens", "api_key_masked", "event", "path"):
        assert not is_secret_key(name), name
    event = {"event": "x", "usage": {"input_tokens": 10}, "token": 3, "has_secret_key": True, "secret": None}
    assert redact_value(event) == event


def test_redaction_keeps_values_without_secrets() -> None:
    marker = object()
    assert redact_value(marker) is marker
    assert redact_value({"n": 1.5, "ok": True, "items": ["a", 2]}) == {"n": 1.5, "ok": True, "items": ["a", 2]}
    assert redact_value({"secret": {"nested": "x"}, "passwords": ["a", "b"]}) == {
        "secret": REDACTED,
        "passwords": REDACTED,
    }
    assert redact_value(b"key sk-abcdefghijklmnop") == f"key {REDACTED}"


# ------------------------------------------------------------------------------------------- run context


async def _model(client: httpx.AsyncClient, headers: dict[str, str], name: str, provider_type: str) -> None:
    provider = await client.post(f"{API}/providers", json={"name": name, "type": provider_type}, headers=headers)
    assert provider.status_code == 201, provider.text
    model = await client.post(
        f"{API}/providers/{provider.json()['id']}/models",
        json={"model_id": "m-1", "name": "m", "capabilities": {"chat": CAPABLE, "function_calling": CAPABLE}},
        headers=headers,
    )
    assert model.status_code == 201, model.text


def _team(nodes: list[str]) -> dict[str, Any]:
    sim = {"model_provider": "sim", "model_id": "m-1"}
    # The agent's provider has no endpoint: every call fails, so the agent fails and so does its node team.
    broken = {"model_provider": "no-endpoint", "model_id": "m-1"}
    return {
        "team_name": "logged",
        "topology": {
            "nodes": [
                {
                    "node_id": node_id,
                    "node_name": node_id,
                    "node_type": "service",
                    "agents": [{"agent_id": f"{node_id}-agent", "agent_name": "a", **broken}],
                    "supervisor_config": {**sim, "coordination_strategy": "round_robin"},
                }
                for node_id in nodes
            ],
            "edges": [],
            "global_supervisor": {**sim, "coordination_strategy": "parallel"},
            "allow_isolated_nodes": True,
        },
    }


async def test_lines_inside_a_run_carry_its_ids(
    client: httpx.AsyncClient, admin_headers: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    await _model(client, admin_headers, "sim", "simulator")
    await _model(client, admin_headers, "no-endpoint", "openai")
    created = await client.post(f"{API}/teams", json=_team(["web", "db"]), headers=admin_headers)
    assert created.status_code == 201, created.text
    team_id = created.json()["team_id"]
    capsys.readouterr()

    response = await client.post(
        f"{API}/teams/{team_id}/execute",
        json={"input": {"task": "check"}, "stream": False},
        headers={**admin_headers, "X-Request-ID": "run-request-1"},
    )
    assert response.status_code == 200, response.text
    execution_id = response.json()["execution_id"]
    await client.get("/health", headers={"X-Request-ID": "after-the-run"})

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    run_ids = {"execution_id": execution_id, "team_id": team_id, "request_id": "run-request-1"}

    agent_failed = [line for line in lines if line["event"] == "agent failed"]
    assert {(line["node_id"], line["agent_id"]) for line in agent_failed} == {("web", "web-agent"), ("db", "db-agent")}
    for line in agent_failed:
        assert line.items() >= run_ids.items() and line["level"] == "warning" and line["error"]

    node_finished = [line for line in lines if line["event"] == "node team finished"]
    assert {line["node_id"] for line in node_finished} == {"web", "db"}
    for line in node_finished:
        assert line.items() >= run_ids.items() and line["status"] == "failed"
        assert "agent_id" not in line  # an agent's id does not outlive its step

    finished = next(line for line in lines if line["event"] == "execution finished")
    assert finished.items() >= run_ids.items()
    assert "node_id" not in finished and "agent_id" not in finished

    after = next(line for line in lines if line["event"] == "request" and line["request_id"] == "after-the-run")
    assert "execution_id" not in after and "node_id" not in after
