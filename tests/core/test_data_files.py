"""What a start-up leaves on disk and in the database: private data files, and the offline simulator."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from aiops_executor.app import create_app
from aiops_executor.core.db import Database, utcnow
from aiops_executor.llm.models import LLMModel, Provider
from aiops_executor.llm.service.seed import SIMULATOR_MODEL, SIMULATOR_PROVIDER
from tests.conftest import make_settings


@pytest.fixture
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # what most systems run with: new files 0644, new folders 0755
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _dev_install(data_dir: Path) -> FastAPI:
    """The service in dev on the embedded default, with nothing configured: on its first start it generates
    the keys, the admin's password and the database, and (with its worker) the checkpoint database."""
    settings = make_settings(
        f"sqlite+aiosqlite:///{data_dir / 'aiops.db'}",
        data_dir,
        master_keys={},
        master_key_id=None,
        jwt_secret=None,
        admin_username=None,
        admin_password=None,
    )
    return create_app(settings)


async def _start(app: FastAPI) -> None:
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/health/ready")).status_code == 200


async def test_a_fresh_install_keeps_its_files_to_its_owner(tmp_path: Path, usual_umask: None) -> None:
    data_dir = tmp_path / "data"
    await _start(_dev_install(data_dir))
    names = {path.name for path in data_dir.iterdir()}
    assert {"aiops.db", "aiops.checkpoints.db", "master_keys.json", "jwt_secret", "admin_password"} <= names, names
    assert _mode(data_dir) == 0o700
    for path in data_dir.iterdir():
        assert _mode(path) == 0o600, (path, oct(_mode(path)))


async def test_files_left_readable_are_tightened_at_start_up(tmp_path: Path, usual_umask: None) -> None:
    data_dir = tmp_path / "data"
    await _start(_dev_install(data_dir))
    data_dir.chmod(0o755)
    loose = [data_dir / "aiops.db", data_dir / "master_keys.json", data_dir / "aiops.checkpoints.db"]
    for path in loose:
        path.chmod(0o644)
    app = _dev_install(data_dir)  # before capturing: the app configures logging
    with capture_logs() as logs:
        await _start(app)
    assert _mode(data_dir) == 0o700
    for path in data_dir.iterdir():
        assert _mode(path) == 0o600, (path, oct(_mode(path)))
    said = [entry for entry in logs if entry["event"] == "made data files readable by their owner only"]
    assert len(said) == 1 and set(said[0]["paths"]) == {str(data_dir), *map(str, loose)}, said


async def _count(database_url: str, *, live: bool = False) -> tuple[int, int] | int:
    database = Database(database_url)
    try:
        async with database.sessionmaker() as session:
            providers = select(func.count()).select_from(Provider).where(Provider.name == SIMULATOR_PROVIDER)
            if live:
                return int(await session.scalar(providers.where(Provider.deleted_at.is_(None))) or 0)
            models = select(func.count()).select_from(LLMModel).where(LLMModel.model_id == SIMULATOR_MODEL)
            return int(await session.scalar(providers) or 0), int(await session.scalar(models) or 0)
    finally:
        await database.dispose()


async def test_the_simulator_is_registered_once_on_every_database_even_by_processes_starting_together(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    apps = [
        create_app(make_settings(database_url, tmp_path / f"data-{index}", seed_simulator=True)) for index in range(3)
    ]
    managers = [LifespanManager(app) for app in apps]
    await asyncio.gather(*(manager.__aenter__() for manager in managers))
    try:
        assert await _count(database_url) == (1, 1)
    finally:
        for manager in managers:
            await manager.__aexit__(None, None, None)
    # Deleted by an admin (a soft delete), it stays deleted: a provider existed.
    database = Database(database_url)
    try:
        async with database.sessionmaker() as session:
            await session.execute(update(Provider).values(deleted_at=utcnow()))
            await session.commit()
    finally:
        await database.dispose()
    async with LifespanManager(create_app(make_settings(database_url, tmp_path / "data-again", seed_simulator=True))):
        assert await _count(database_url, live=True) == 0
