"""The command line: migrate, users create, keys rotate, and start-up refusal in prod."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from aiops_executor.audit.models import AuditLog
from aiops_executor.auth.models import User
from aiops_executor.auth.security import HashCost, verify_password
from aiops_executor.cli import app
from aiops_executor.core.crypto import Envelope, EnvelopeCipher, associated_data
from aiops_executor.core.db import Database
from aiops_executor.core.settings import get_settings
from aiops_executor.llm.models import Provider, ProviderCredential

runner = CliRunner()
KEY_1 = base64.b64encode(os.urandom(32)).decode()
KEY_2 = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name in list(os.environ):
        if name.startswith("AIOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    values = {"AIOPS_DATA_DIR": str(tmp_path / "data")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    get_settings.cache_clear()
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def _db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{(tmp_path / 'data' / 'aiops.db').resolve()}"


def test_users_create_on_a_fresh_data_dir(env: dict[str, str], tmp_path: Path) -> None:
    code, output = _invoke(
        "users", "create", "--username", "alice", "--password", "correct-horse", "--role", "operator"
    )
    assert code == 0, output

    async def _check() -> User | None:
        database = Database(_db_url(tmp_path))
        async with database.sessionmaker() as session:
            user = await session.scalar(select(User).where(User.username == "alice"))
        await database.dispose()
        return user

    user = asyncio.run(_check())
    assert user is not None and user.role == "operator"
    assert verify_password("correct-horse", user.password_hash, HashCost())

    code, output = _invoke("users", "create", "--username", "alice", "--password", "correct-horse")
    assert code == 1 and "USERNAME_EXISTS" in output


def test_users_create_rejects_a_short_password(env: dict[str, str]) -> None:
    code, output = _invoke("users", "create", "--username", "bob", "--password", "short")
    assert code == 2 and "password" in output


def test_prod_without_keys_refuses_with_one_line(env: dict[str, str]) -> None:
    code, output = _invoke("migrate", env={"AIOPS_ENV": "prod"})
    assert code == 2
    assert output.strip().count("\n") == 0
    assert "AIOPS_MASTER_KEYS is not set" in output


def test_malformed_master_keys_variable_refuses(env: dict[str, str]) -> None:
    code, output = _invoke("migrate", env={"AIOPS_MASTER_KEYS": "{nope"})
    assert code == 2 and "AIOPS_MASTER_KEYS" in output


def test_keys_rotate_rewraps_under_the_new_key(env: dict[str, str], tmp_path: Path) -> None:
    first = {"AIOPS_MASTER_KEYS": json.dumps({"k1": KEY_1}), "AIOPS_MASTER_KEY_ID": "k1"}
    code, output = _invoke("migrate", env=first)
    assert code == 0, output
    row_id = uuid.uuid4()
    aad = associated_data("provider_credentials", "api_key_encrypted", row_id)

    async def _seed() -> None:
        database = Database(_db_url(tmp_path))
        async with database.sessionmaker() as session:
            provider = Provider(name="p", type="openai")
            session.add(provider)
            await session.flush()
            cipher = EnvelopeCipher({"k1": base64.b64decode(KEY_1)}, "k1")
            session.add(
                ProviderCredential(
                    id=row_id,
                    provider_id=provider.id,
                    alias="a",
                    api_key_masked="****",
                    api_key_encrypted=cipher.encrypt("sk-rotate-me-please", aad),
                )
            )
            await session.commit()
        await database.dispose()

    asyncio.run(_seed())
    both = {"AIOPS_MASTER_KEYS": json.dumps({"k1": KEY_1, "k2": KEY_2}), "AIOPS_MASTER_KEY_ID": "k2"}
    code, output = _invoke("keys", "rotate", env=both)
    assert code == 0, output
    assert "re-wrapped 1 secret(s) under key 'k2'" in output
    assert "k1" in output and "can be removed" in output

    async def _read() -> str:
        database = Database(_db_url(tmp_path))
        async with database.sessionmaker() as session:
            row = await session.get(ProviderCredential, row_id)
        await database.dispose()
        assert row is not None
        return row.api_key_encrypted

    stored = asyncio.run(_read())
    assert Envelope.parse(stored).key_id == "k2"

    async def _audited() -> list[AuditLog]:
        database = Database(_db_url(tmp_path))
        async with database.sessionmaker() as session:
            rows = list(await session.scalars(select(AuditLog).where(AuditLog.resource_type == "master_key")))
        await database.dispose()
        return rows

    [entry] = asyncio.run(_audited())
    assert (entry.actor, entry.action, entry.resource_id) == ("cli", "rotate", "k2")
    assert entry.details["rewrapped"] == 1 and entry.details["key_ids_in_use"] == {"k2": 1}
    assert EnvelopeCipher({"k2": base64.b64decode(KEY_2)}, "k2").decrypt(stored, aad) == "sk-rotate-me-please"


def _auth_headers(kind: str, key: str) -> dict[str, str]:
    if kind == "anthropic":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_mock_llm_serves_each_protocol(env: dict[str, str], kind: str) -> None:
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "aiops_executor.cli",
        "mock-llm",
        "--kind",
        kind,
        "--port",
        str(port),
        "--key",
        "cli-key-1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"{base}/models", headers=_auth_headers(kind, "cli-key-1"))
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "mock-llm did not start"
                time.sleep(0.1)
        assert response.status_code == 200 and response.json()["data"]
        wrong = httpx.get(f"{base}/models", headers=_auth_headers(kind, "nope"))
        assert wrong.status_code == 401
        model = response.json()["data"][0]["id"]
        if kind == "openai":
            path, body = "/chat/completions", {"model": model, "messages": [{"role": "user", "content": "ping"}]}
        else:
            path = "/messages"
            body = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": "ping"}]}
        answered = httpx.post(f"{base}{path}", json=body, headers=_auth_headers(kind, "cli-key-1"))
        assert answered.status_code == 200, answered.text
        assert "ping" in answered.text
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_dev_generates_keys_once_and_says_so(env: dict[str, str], tmp_path: Path) -> None:
    code, output = _invoke("migrate")
    assert code == 0, output
    data = tmp_path / "data"
    assert f"generated a development secret at {data / 'master_keys.json'}" in output
    assert f"generated a development secret at {data / 'jwt_secret'}" in output
    code, output = _invoke("migrate")
    assert code == 0 and "generated" not in output


def test_a_damaged_dev_key_file_refuses_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "master_keys.json").write_text("{truncated")
    code, output = _invoke("migrate")
    assert code == 2
    assert output.strip().count("\n") == 0 and "not a valid master key file" in output


# What the commands that call no model (migrate, users, keys, purge) load: not the web framework, not LangChain's
# chat models and LangSmith (together more than a second of every such command's start-up).
MODEL_FREE_COMMAND_MODULES = [
    "aiops_executor.cli",
    "aiops_executor.core.migrate",
    "aiops_executor.models_registry",
    "aiops_executor.executions.checkpoints",
    "aiops_executor.auth.service",
    "aiops_executor.core.key_rotation",
    "aiops_executor.audit.service",
]
HEAVY_FOR_A_COMMAND = ["fastapi", "langsmith", "langchain_core.language_models.chat_models", "langgraph.graph"]


def test_commands_that_call_no_model_start_without_the_web_framework_or_langchain() -> None:
    script = (
        "import importlib, json, sys\n"
        f"for name in {MODEL_FREE_COMMAND_MODULES!r}: importlib.import_module(name)\n"
        f"print(json.dumps([name for name in {HEAVY_FOR_A_COMMAND!r} if name in sys.modules]))"
    )
    loaded = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(loaded.stdout) == []
