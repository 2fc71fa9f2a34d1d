"""After credentials are created, rotated, validated and used, their plaintext is nowhere: not in any
API response, not in any database row of any table, not in the logs."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.core.context import AppContext
from aiops_executor.models_registry import metadata
from tests.helpers import API, created, make_provider
from tests.mock_providers import OPENAI_KEY

WRONG_KEY = "sk-hygiene-wrong-key-7f3e9a2b1c"
SECRET_KEY = "aws-secret-hygiene-QmFzZTY0U2VjcmV0"
ACCESS_TOKEN = "session-hygiene-token-0a9b8c7d6e"
ROTATED_KEY = "sk-hygiene-rotated-key-5d4c3b2a1f"


async def test_plaintext_secrets_appear_nowhere(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    context: AppContext,
    openai_mock: MockLLMServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secrets = [OPENAI_KEY, WRONG_KEY, SECRET_KEY, ACCESS_TOKEN, ROTATED_KEY]
    responses: list[httpx.Response] = []

    async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
        response = await client.request(method, f"{API}{path}", headers=admin_headers, **kwargs)  # type: ignore[arg-type]
        responses.append(response)
        return response

    pid = await make_provider(client, admin_headers, "hygiene", "openai")
    await created(
        client, admin_headers, f"/providers/{pid}/endpoints", {"name": "mock", "base_url": openai_mock.client_base_url}
    )
    good = (
        await call(
            "POST",
            f"/providers/{pid}/credentials",
            json={"alias": "good", "api_key": OPENAI_KEY, "secret_key": SECRET_KEY, "access_token": ACCESS_TOKEN},
        )
    ).json()
    bad = (await call("POST", f"/providers/{pid}/credentials", json={"alias": "bad", "api_key": WRONG_KEY})).json()
    model = (await call("POST", f"/providers/{pid}/models", json={"model_id": "gpt-4o-mini", "name": "m"})).json()

    await call("POST", f"/credentials/{good['id']}/validate")
    await call("POST", f"/credentials/{bad['id']}/validate")
    await call("POST", f"/models/{model['id']}/test")
    await call("PUT", f"/credentials/{bad['id']}", json={"api_key": ROTATED_KEY})
    await call("POST", f"/credentials/{bad['id']}/validate")  # fails: the rotated key is unknown to the provider
    await call("POST", f"/providers/{pid}/credentials", json={"alias": "x" * 500, "api_key": WRONG_KEY})  # 422
    await call("POST", f"/providers/{pid}/credentials", json={"alias": "long", "api_key": WRONG_KEY * 30})  # 422
    for path in ("/providers/{pid}/credentials", "/credentials/{cid}", "/config/export", "/audit-logs?size=100"):
        await call("GET", path.format(pid=pid, cid=good["id"]))

    assert len(responses) == 14 and all(r.status_code < 500 for r in responses)
    for response in responses:
        for secret in secrets:
            assert secret not in response.text, f"{response.request.url} leaked a secret"

    async with context.database.engine.connect() as connection:
        for table in metadata.sorted_tables:
            rows = (await connection.execute(text(f"SELECT * FROM {table.name}"))).all()  # noqa: S608
            dump = repr(rows)
            for secret in secrets:
                assert secret not in dump, f"table {table.name} holds a plaintext secret"

    logs = capfd.readouterr().err
    assert '"event": "request"' in logs and "/validate" in logs, "the log capture saw the requests"
    for secret in secrets:
        assert secret not in logs
