"""Start-up key handling: dev generates once and says so; prod refuses with one line."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from aiops_executor.auth.security import HashCost, hash_password, verify_password
from aiops_executor.core.context import AppContext
from aiops_executor.core.settings import ConfigurationError, Settings, get_settings, resolve_secrets
from tests.conftest import PG_HOST, PG_PORT, PG_USER, make_settings

GOOD_KEY = base64.b64encode(os.urandom(32)).decode()


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)  # type: ignore[arg-type, call-arg]


def test_dev_generates_keys_once_and_reuses_them(tmp_path: Path) -> None:
    first = resolve_secrets(_settings(tmp_path))
    assert len(first.generated) == 2
    key_file = tmp_path / "master_keys.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = resolve_secrets(_settings(tmp_path))
    assert second.generated == []
    assert second.master_keys == first.master_keys
    assert second.jwt_secret == first.jwt_secret
    assert json.loads(key_file.read_text())["current"] == first.master_key_id


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jwt_secret": "j" * 40}, "AIOPS_MASTER_KEYS is not set"),
        ({"master_keys": {"a": GOOD_KEY}}, "AIOPS_JWT_SECRET is not set"),
        ({"master_keys": {"a": "not base64!"}, "jwt_secret": "j" * 40}, "not valid base64"),
        ({"master_keys": {"a": base64.b64encode(b"x" * 16).decode()}, "jwt_secret": "j" * 40}, "32 bytes"),
        ({"master_keys": {"a": GOOD_KEY, "b": GOOD_KEY}, "jwt_secret": "j" * 40}, "AIOPS_MASTER_KEY_ID must name"),
        ({"master_keys": {"a": GOOD_KEY}, "master_key_id": "b", "jwt_secret": "j" * 40}, "is not a key"),
        ({"master_keys": {"a": GOOD_KEY}, "jwt_secret": "short"}, "too short"),
    ],
)
def test_prod_refuses_missing_or_malformed_keys(tmp_path: Path, values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        resolve_secrets(_settings(tmp_path, env="prod", **values))
    assert "\n" not in str(caught.value)
    assert not any(tmp_path.iterdir()), "prod must not generate key files"


def test_dev_still_rejects_a_malformed_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not valid base64"):
        resolve_secrets(_settings(tmp_path, master_keys={"a": "%%%"}))


def test_master_keys_from_environment_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOPS_MASTER_KEYS", json.dumps({"k1": GOOD_KEY}))
    monkeypatch.setenv("AIOPS_ENV", "prod")
    monkeypatch.setenv("AIOPS_JWT_SECRET", "j" * 40)
    resolved = resolve_secrets(_settings(tmp_path))
    assert resolved.master_key_id == "k1"
    assert resolved.master_keys["k1"] == base64.b64decode(GOOD_KEY)


def test_malformed_master_keys_json_is_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIOPS_MASTER_KEYS", "{not json")
    with pytest.raises(ValueError, match="AIOPS_MASTER_KEYS must be a JSON object"):
        _settings(tmp_path)


def test_default_database_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.is_embedded_database
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'aiops.db'}"


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"keys": {"a": "x"}}', '{"current": "a", "keys": ["x"]}', "[]"],
)
def test_dev_refuses_a_damaged_key_file_with_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / "master_keys.json").write_text(content)
    with pytest.raises(ConfigurationError, match="not a valid master key file") as caught:
        resolve_secrets(_settings(tmp_path))
    assert "\n" not in str(caught.value)
    assert (tmp_path / "master_keys.json").read_text() == content, "a damaged key file is never replaced"


def test_dev_refuses_an_empty_jwt_secret_file(tmp_path: Path) -> None:
    (tmp_path / "jwt_secret").write_text("\n")
    with pytest.raises(ConfigurationError, match="jwt_secret is empty"):
        resolve_secrets(_settings(tmp_path, master_keys={"a": GOOD_KEY}))


def test_simulator_is_seeded_on_every_database_unless_switched_off(tmp_path: Path) -> None:
    assert _settings(tmp_path).seed_simulator
    assert _settings(tmp_path, database_url="postgresql+asyncpg://u@h:5432/db").seed_simulator
    assert not _settings(tmp_path, database_url="postgresql+asyncpg://u@h/db", seed_simulator=False).seed_simulator


async def test_first_dev_start_generates_keys_says_so_and_seeds_the_simulator(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The embedded default with nothing configured: keys are generated once (and logged), the schema is
    migrated, and the offline simulator is registered."""
    from asgi_lifespan import LifespanManager
    from sqlalchemy import select

    from aiops_executor.app import create_app
    from aiops_executor.llm.models import LLMModel, Provider

    settings = _settings(tmp_path, log_format="json", admin_username="root", admin_password="root-password-1")
    application = create_app(settings)
    async with LifespanManager(application), application.state.context.database.sessionmaker() as session:
        seeded = (
            await session.execute(
                select(Provider.name, Provider.type, LLMModel.model_id, Provider.description, LLMModel.name).join(
                    LLMModel
                )
            )
        ).all()
    assert [tuple(row[:3]) for row in seeded] == [("local-sim", "simulator", "sim-1")]
    assert "not an AI" in seeded[0][3] and "not an AI" in seeded[0][4]  # labelled as what it is
    logs = capfd.readouterr().err
    assert logs.count("generated a development secret") == 2
    assert str(tmp_path / "master_keys.json") in logs and str(tmp_path / "jwt_secret") in logs

    async with LifespanManager(create_app(settings)):
        pass
    assert "generated a development secret" not in capfd.readouterr().err, "a restart reuses the stored keys"


@pytest.mark.parametrize(
    ("variable", "value", "floor"),
    [("AIOPS_PASSWORD_HASH_TIME_COST", "1", "2"), ("AIOPS_PASSWORD_HASH_MEMORY_KIB", "8192", "19456")],
)
def test_prod_refuses_weak_password_hashing_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, floor: str
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("AIOPS_ENV", "prod")
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(ConfigurationError) as caught:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert str(caught.value) == f"{variable}={value} is too weak for production; use at least {floor}"
    monkeypatch.setenv("AIOPS_ENV", "dev")  # a test or a laptop may go lower
    assert _settings(tmp_path).password_hash_time_cost >= 1


def test_new_hashes_take_the_configured_cost_and_old_ones_still_verify(tmp_path: Path) -> None:
    cheap = HashCost.from_settings(_settings(tmp_path, password_hash_time_cost=1, password_hash_memory_kib=64))
    default = HashCost.from_settings(_settings(tmp_path))
    made_cheap = hash_password("correct-horse", cheap)
    assert made_cheap.startswith("$argon2id$v=19$m=64,t=1,")
    assert hash_password("correct-horse", default).startswith("$argon2id$v=19$m=65536,t=3,")
    # A stored hash is checked at the cost it carries, whatever the process's setting is now.
    assert verify_password("correct-horse", made_cheap, default)
    assert not verify_password("wrong-horse", made_cheap, default)
    assert not verify_password("correct-horse", None, cheap)


async def test_the_database_pool_is_sized_by_the_settings(tmp_path: Path) -> None:
    """Every process may hold ``pool_size + max_overflow`` PostgreSQL connections: operators size both."""
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"
    context = AppContext.build(make_settings(url, tmp_path / "data", database_pool_size=3, database_max_overflow=1))
    try:
        pool = context.database.engine.sync_engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert "Pool size: 3" in pool.status()
    finally:
        await context.database.engine.dispose()
