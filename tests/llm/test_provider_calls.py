"""Health checks, credential validation, model sync and model tests make real calls to (mock) providers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from aiops_devtools.mock_providers import MockLLMServer
from aiops_executor.llm.adapters import bedrock
from aiops_executor.llm.adapters.openai import OpenAIAdapter
from aiops_executor.services import ServiceContext
from tests.helpers import API, assert_error, created, damage_credential, make_provider
from tests.mock_providers import ANTHROPIC_KEY, OPENAI_KEY

DEAD_URL = "http://127.0.0.1:9/v1"


async def openai_provider(
    client: httpx.AsyncClient, headers: dict[str, str], base_url: str, key: str = OPENAI_KEY, **credential: Any
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    pid = await make_provider(client, headers, "openai-main", "openai")
    endpoint = await created(client, headers, f"/providers/{pid}/endpoints", {"name": "primary", "base_url": base_url})
    cred = await created(
        client, headers, f"/providers/{pid}/credentials", {"alias": "main", "api_key": key, **credential}
    )
    return pid, endpoint, cred


async def test_health_check_healthy_and_persisted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    _, endpoint, _ = await openai_provider(client, admin_headers, openai_mock.client_base_url)
    response = await client.post(f"{API}/endpoints/{endpoint['id']}/health-check", headers=admin_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy" and body["latency_ms"] >= 0 and body["checked_at"].endswith("Z")
    assert body["details"]["model_count"] == len(openai_mock.behaviour.models)
    assert openai_mock.behaviour.last_request("/models") is not None
    stored = (await client.get(f"{API}/endpoints/{endpoint['id']}", headers=admin_headers)).json()
    assert stored["health_status"] == "healthy" and stored["last_health_check"] is not None


async def test_health_check_unreachable_and_rejected_key(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    pid, endpoint, _ = await openai_provider(client, admin_headers, DEAD_URL)
    body = (await client.post(f"{API}/endpoints/{endpoint['id']}/health-check", headers=admin_headers)).json()
    assert body["status"] == "unhealthy" and body["details"]["error_code"] == "PROVIDER_UNREACHABLE"
    assert (await client.get(f"{API}/endpoints/{endpoint['id']}", headers=admin_headers)).json()[
        "health_status"
    ] == "unhealthy"

    live = await created(
        client, admin_headers, f"/providers/{pid}/endpoints", {"name": "live", "base_url": openai_mock.client_base_url}
    )
    openai_mock.behaviour.set_keys(["some-other-key-000000"])
    body = (await client.post(f"{API}/endpoints/{live['id']}/health-check", headers=admin_headers)).json()
    assert body["status"] == "degraded" and body["details"]["error_code"] == "CREDENTIAL_INVALID"
    assert OPENAI_KEY not in str(body)


async def test_validation_marks_valid_and_invalid_keys_and_is_audited(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    pid, _, good = await openai_provider(client, admin_headers, openai_mock.client_base_url)
    response = await client.post(f"{API}/credentials/{good['id']}/validate", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["valid"] is True and "error_code" not in {k for k, v in response.json().items() if v}
    stored = (await client.get(f"{API}/credentials/{good['id']}", headers=admin_headers)).json()
    assert stored["validation_status"] == "valid" and stored["last_validated_at"] is not None

    bad = await created(
        client, admin_headers, f"/providers/{pid}/credentials", {"alias": "bad", "api_key": "sk-not-a-valid-key-123456"}
    )
    result = (await client.post(f"{API}/credentials/{bad['id']}/validate", headers=admin_headers)).json()
    assert result["valid"] is False and result["error_code"] == "CREDENTIAL_INVALID"
    assert "sk-not-a-valid-key-123456" not in str(result)
    assert (await client.get(f"{API}/credentials/{bad['id']}", headers=admin_headers)).json()[
        "validation_status"
    ] == "invalid"

    logs = (
        await client.get(
            f"{API}/audit-logs", headers=admin_headers, params={"action": "validate", "resource_type": "credential"}
        )
    ).json()
    assert {entry["resource_id"] for entry in logs["items"]} == {good["id"], bad["id"]}


async def test_an_expired_key_is_not_sent_to_the_provider(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    expired_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    _, _, cred = await openai_provider(client, admin_headers, openai_mock.client_base_url, expires_at=expired_at)
    result = (await client.post(f"{API}/credentials/{cred['id']}/validate", headers=admin_headers)).json()
    assert result == {**result, "valid": False, "error_code": "CREDENTIAL_EXPIRED"}
    assert openai_mock.behaviour.requests == []


async def test_provider_down_leaves_validation_status_alone(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    _, _, cred = await openai_provider(client, admin_headers, DEAD_URL)
    result = (await client.post(f"{API}/credentials/{cred['id']}/validate", headers=admin_headers)).json()
    assert result["valid"] is False and result["error_code"] == "PROVIDER_UNREACHABLE"
    assert (await client.get(f"{API}/credentials/{cred['id']}", headers=admin_headers)).json()[
        "validation_status"
    ] == "unknown"


async def test_sync_creates_deprecates_and_revives(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer
) -> None:
    pid, _, _ = await openai_provider(client, admin_headers, openai_mock.client_base_url)
    await created(client, admin_headers, f"/providers/{pid}/models", {"model_id": "retired-model", "name": "Old"})
    openai_mock.behaviour.models = ["gpt-4o-mini", "text-embedding-3-small"]

    first = await client.post(f"{API}/providers/{pid}/models/sync", headers=admin_headers)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["created"] == ["gpt-4o-mini", "text-embedding-3-small"]
    assert body["deprecated"] == ["retired-model"] and body["unchanged"] == 0
    types = {m["model_id"]: (m["type"], m["status"]) for m in body["models"]}
    assert types == {
        "gpt-4o-mini": ("chat", "available"),
        "text-embedding-3-small": ("embedding", "available"),
        "retired-model": ("chat", "deprecated"),
    }

    openai_mock.behaviour.models = ["gpt-4o-mini", "retired-model"]
    second = (await client.post(f"{API}/providers/{pid}/models/sync", headers=admin_headers)).json()
    assert second["created"] == [] and second["reactivated"] == ["retired-model"]
    assert second["deprecated"] == ["text-embedding-3-small"] and second["unchanged"] == 1
    listed = (await client.get(f"{API}/models", headers=admin_headers, params={"status": "deprecated"})).json()
    assert [m["model_id"] for m in listed["items"]] == ["text-embedding-3-small"]


async def test_sync_reads_anthropic_and_ollama_catalogues(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    anthropic_mock: MockLLMServer,
    openai_mock: MockLLMServer,
) -> None:
    pid = await make_provider(client, admin_headers, "claude", "anthropic")
    await created(
        client,
        admin_headers,
        f"/providers/{pid}/endpoints",
        {"name": "api", "base_url": anthropic_mock.client_base_url},
    )
    await created(client, admin_headers, f"/providers/{pid}/credentials", {"alias": "k", "api_key": ANTHROPIC_KEY})
    body = (await client.post(f"{API}/providers/{pid}/models/sync", headers=admin_headers)).json()
    assert body["created"] == sorted(anthropic_mock.behaviour.models)

    ollama = await make_provider(client, admin_headers, "gpu-box", "ollama")
    await created(
        client, admin_headers, f"/providers/{ollama}/endpoints", {"name": "local", "base_url": openai_mock.base_url}
    )
    body = (await client.post(f"{API}/providers/{ollama}/models/sync", headers=admin_headers)).json()
    assert body["created"] == sorted(openai_mock.behaviour.models)
    assert openai_mock.behaviour.last_request("/api/tags") is not None


async def test_sync_reads_the_bedrock_catalogue(
    client: httpx.AsyncClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.stub import Stubber

    stubbed = boto3.client(
        "bedrock", region_name="us-east-1", aws_access_key_id="AKIATEST", aws_secret_access_key="secret"
    )
    stubber = Stubber(stubbed)
    stubber.add_response(
        "list_foundation_models",
        {
            "modelSummaries": [
                {
                    "modelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0",
                    "modelId": "amazon.nova-lite-v1:0",
                    "modelName": "Nova Lite",
                    "providerName": "Amazon",
                },
            ]
        },
    )
    seen: dict[str, Any] = {}

    def fake_client(endpoint: Any, secrets: Any, session: Any, config_cls: Any) -> Any:
        seen.update(region=endpoint.region, key=secrets.api_key, secret=secrets.secret_key)
        return stubbed

    monkeypatch.setattr(bedrock, "bedrock_control_client", fake_client)
    pid = await make_provider(client, admin_headers, "bedrock", "aws_bedrock")
    await created(client, admin_headers, f"/providers/{pid}/endpoints", {"name": "use1", "region": "us-east-1"})
    await created(
        client,
        admin_headers,
        f"/providers/{pid}/credentials",
        {"alias": "iam", "api_key": "AKIAREALKEYID0001", "secret_key": "wJalrXUtnFEMI/K7MDENG"},
    )
    with stubber:
        body = (await client.post(f"{API}/providers/{pid}/models/sync", headers=admin_headers)).json()
    assert body["created"] == ["amazon.nova-lite-v1:0"]
    assert body["models"][0]["name"] == "Nova Lite"
    assert seen == {"region": "us-east-1", "key": "AKIAREALKEYID0001", "secret": "wJalrXUtnFEMI/K7MDENG"}


async def test_model_test_runs_a_real_completion(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    pid, _, cred = await openai_provider(client, admin_headers, openai_mock.client_base_url)
    model = await created(client, admin_headers, f"/providers/{pid}/models", {"model_id": "gpt-4o-mini", "name": "m"})
    openai_mock.behaviour.queue_text("OK")
    response = await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {**response.json(), "ok": True, "output": "OK"}
    sent = openai_mock.behaviour.last_request("/chat/completions").body  # type: ignore[union-attr]
    assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 16
    quota = (await client.get(f"{API}/credentials/{cred['id']}", headers=admin_headers)).json()["quota_used"]
    assert quota == 1, "each model call counts against the credential's quota"

    openai_mock.behaviour.set_keys(["rotated-away-000000"])
    context.model_runtime.state.reset()
    failed = (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()
    assert failed["ok"] is False and failed["error_code"] == "CREDENTIAL_INVALID"


async def test_simulator_model_test_needs_no_network(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    pid = await make_provider(client, admin_headers, "sim", "simulator")
    model = await created(client, admin_headers, f"/providers/{pid}/models", {"model_id": "sim-1", "name": "Sim"})
    body = (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()
    assert body["ok"] is True and body["output"].startswith("[simulator]")
    synced = (await client.post(f"{API}/providers/{pid}/models/sync", headers=admin_headers)).json()
    assert synced["unchanged"] == 1 and synced["deprecated"] == []


async def test_provider_calls_on_missing_resources(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    missing = uuid.uuid4()
    assert_error(
        await client.post(f"{API}/endpoints/{missing}/health-check", headers=admin_headers), 404, "ENDPOINT_NOT_FOUND"
    )
    assert_error(
        await client.post(f"{API}/credentials/{missing}/validate", headers=admin_headers), 404, "CREDENTIAL_NOT_FOUND"
    )
    assert_error(
        await client.post(f"{API}/providers/{missing}/models/sync", headers=admin_headers), 404, "PROVIDER_NOT_FOUND"
    )
    assert_error(await client.post(f"{API}/models/{missing}/test", headers=admin_headers), 404, "MODEL_NOT_FOUND")


async def test_health_check_without_a_credential_is_a_conflict(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    pid = await make_provider(client, admin_headers, "keyless", "openai")
    endpoint = await created(client, admin_headers, f"/providers/{pid}/endpoints", {"name": "e"})
    assert_error(
        await client.post(f"{API}/endpoints/{endpoint['id']}/health-check", headers=admin_headers),
        409,
        "NO_USABLE_CREDENTIAL",
    )


async def test_a_fresh_install_gets_the_offline_simulator(database_url: str, tmp_path: Any) -> None:
    from asgi_lifespan import LifespanManager

    from aiops_executor.app import create_app
    from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, login, make_settings

    settings = make_settings(database_url, tmp_path / "data", seed_simulator=True)
    for _ in range(2):  # a restart does not seed twice
        application = create_app(settings)
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                headers = await login(http, ADMIN_USERNAME, ADMIN_PASSWORD)
                providers = (await http.get(f"{API}/providers", headers=headers)).json()
                assert [(p["name"], p["type"]) for p in providers["items"]] == [("local-sim", "simulator")]
                models = (await http.get(f"{API}/models", headers=headers)).json()["items"]
                assert [m["model_id"] for m in models] == ["sim-1"]
                assert models[0]["capabilities"]["function_calling"]["supported"] is True
                tested = (await http.post(f"{API}/models/{models[0]['id']}/test", headers=headers)).json()
                assert tested["ok"] is True

    application = create_app(settings)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            headers = await login(http, ADMIN_USERNAME, ADMIN_PASSWORD)
            pid = (await http.get(f"{API}/providers", headers=headers)).json()["items"][0]["id"]
            assert (await http.delete(f"{API}/providers/{pid}", headers=headers)).status_code == 204
    async with LifespanManager(create_app(settings)):
        pass
    engine_rows = await _provider_names(database_url)
    assert engine_rows == ["local-sim"], "a deleted simulator is not re-seeded"


async def _provider_names(database_url: str) -> list[str]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        names = [row[0] for row in await connection.execute(text("SELECT name FROM providers"))]
    await engine.dispose()
    return names


async def test_quota_and_undecryptable_keys_stop_being_used(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:

    pid, _, limited = await openai_provider(client, admin_headers, openai_mock.client_base_url, quota_limit=1)
    model = await created(client, admin_headers, f"/providers/{pid}/models", {"model_id": "gpt-4o-mini", "name": "m"})
    assert (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()["ok"] is True
    exhausted = (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()
    assert exhausted["ok"] is False and exhausted["error_code"] == "NO_USABLE_CREDENTIAL"

    spare = await created(
        client, admin_headers, f"/providers/{pid}/credentials", {"alias": "spare", "api_key": OPENAI_KEY}
    )
    backup = await created(
        client, admin_headers, f"/providers/{pid}/credentials", {"alias": "backup", "api_key": OPENAI_KEY}
    )
    await damage_credential(context, spare["id"], backup["id"])
    served = (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()
    assert served["ok"] is True, "the undecryptable key is skipped and the next one serves the call"
    statuses = {
        c["alias"]: c["validation_status"]
        for c in (await client.get(f"{API}/providers/{pid}/credentials", headers=admin_headers)).json()["items"]
    }
    assert statuses == {"main": "unknown", "spare": "undecryptable", "backup": "unknown"}
    assert limited["quota_limit"] == 1


async def test_quota_counts_show_at_once_and_fixed_credentials_are_used_again(
    client: httpx.AsyncClient, admin_headers: dict[str, str], openai_mock: MockLLMServer, context: ServiceContext
) -> None:
    from sqlalchemy import update

    from aiops_executor.llm.models import ProviderCredential

    pid, _, cred = await openai_provider(client, admin_headers, openai_mock.client_base_url, quota_limit=1)
    model = await created(client, admin_headers, f"/providers/{pid}/models", {"model_id": "gpt-4o-mini", "name": "m"})
    test_url, cred_url = f"{API}/models/{model['id']}/test", f"{API}/credentials/{cred['id']}"
    assert (await client.get(cred_url, headers=admin_headers)).json()["quota_used"] == 0  # cached now
    assert (await client.post(test_url, headers=admin_headers)).json()["ok"] is True
    usage = context.model_runtime.ledger.totals[("openai-main", "gpt-4o-mini")]  # per-call usage, for callers
    assert (usage.calls, usage.failures) == (1, 0) and usage.input_tokens > 0 and usage.output_tokens > 0
    assert (await client.get(cred_url, headers=admin_headers)).json()["quota_used"] == 1, "the count is not stale"
    listed = (await client.get(f"{API}/providers/{pid}/credentials", headers=admin_headers)).json()["items"]
    assert listed[0]["quota_used"] == 1
    assert (await client.post(test_url, headers=admin_headers)).json()["error_code"] == "NO_USABLE_CREDENTIAL"

    # Raising the quota makes the spent key usable again in this process, without a restart.
    assert (await client.put(cred_url, json={"quota_limit": 3}, headers=admin_headers)).status_code == 200
    assert (await client.post(test_url, headers=admin_headers)).json()["ok"] is True

    # So does re-entering a key that could not be decrypted.
    async with context.database.sessionmaker() as session:
        await session.execute(
            update(ProviderCredential)
            .where(ProviderCredential.id == uuid.UUID(cred["id"]))
            .values(api_key_encrypted=context.cipher.encrypt(OPENAI_KEY, b"some other row"))
        )
        await session.commit()
    context.config_cache.invalidate()
    broken = (await client.post(test_url, headers=admin_headers)).json()
    assert (
        broken["ok"] is False
        and (await client.get(cred_url, headers=admin_headers)).json()["validation_status"] == "undecryptable"
    )
    assert (await client.put(cred_url, json={"api_key": OPENAI_KEY}, headers=admin_headers)).status_code == 200
    assert (await client.post(test_url, headers=admin_headers)).json()["ok"] is True


async def test_provider_failures_map_to_clear_error_codes(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    openai_mock: MockLLMServer,
    context: ServiceContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    pid, endpoint, _ = await openai_provider(client, admin_headers, openai_mock.client_base_url)
    no_retries = await client.put(f"{API}/endpoints/{endpoint['id']}", json={"retry_count": 0}, headers=admin_headers)
    assert no_retries.status_code == 200
    model = await created(client, admin_headers, f"/providers/{pid}/models", {"model_id": "gpt-4o-mini", "name": "m"})
    openai_mock.behaviour.fail_next(10, 429, retry_after=1)
    throttled = (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()
    assert throttled["ok"] is False and throttled["error_code"] == "PROVIDER_RATE_LIMITED"
    openai_mock.behaviour.clear_faults()
    context.model_runtime.state.reset()
    openai_mock.behaviour.fail_next(10, 503)
    down = (await client.post(f"{API}/models/{model['id']}/test", headers=admin_headers)).json()
    assert down["ok"] is False and down["error_code"] == "PROVIDER_ERROR"

    class Throttled(Exception):
        status_code = 429

    async def throttled_catalogue(*_args: Any) -> list[Any]:
        raise Throttled("slow down")

    monkeypatch.setattr(OpenAIAdapter, "list_models", throttled_catalogue)
    assert_error(
        await client.post(f"{API}/providers/{pid}/models/sync", headers=admin_headers), 429, "PROVIDER_RATE_LIMITED"
    )
    monkeypatch.undo()

    dead = await make_provider(client, admin_headers, "dead", "openai")
    await created(client, admin_headers, f"/providers/{dead}/endpoints", {"name": "e", "base_url": DEAD_URL})
    await created(client, admin_headers, f"/providers/{dead}/credentials", {"alias": "k", "api_key": OPENAI_KEY})
    assert_error(
        await client.post(f"{API}/providers/{dead}/models/sync", headers=admin_headers), 502, "PROVIDER_UNREACHABLE"
    )
