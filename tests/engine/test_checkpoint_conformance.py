"""The group-commit checkpointers pass LangGraph's checkpointer conformance suite (langgraph-checkpoint-conformance)
on SQLite and on PostgreSQL, each on a database of its own: every capability the saver has (put, put_writes,
get_tuple, list, delete_thread and the extended ones it implements), the stock saver's contract kept although the
writes go through the group commit."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport

from aiops_executor.executions.checkpoints import (
    Checkpoints,
    GroupCommitPostgresSaver,
    GroupCommitSqliteSaver,
    setup_checkpoints,
)
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.processes import pg


def _failures(report: CapabilityReport) -> dict[str, list[str]]:
    return {name: result.failures for name, result in report.results.items() if result.failures}


async def _conforms(database_url: str, saver_type: type[BaseCheckpointSaver[Any]]) -> None:
    @checkpointer_test(name=saver_type.__name__)
    async def saver() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        checkpoints = Checkpoints(database_url)
        try:
            opened = await checkpoints.open()
            assert isinstance(opened, saver_type)
            yield opened
        finally:
            await checkpoints.close()

    report = await validate(saver)
    assert report.passed_all(), _failures(report)
    assert report.passed_all_base()
    detected = {name for name, result in report.results.items() if result.detected}
    assert {"put", "put_writes", "get_tuple", "list", "delete_thread"} <= detected


async def test_the_sqlite_group_commit_saver_conforms(tmp_path: Path) -> None:
    await _conforms(f"sqlite+aiosqlite:///{tmp_path / 'aiops.db'}", GroupCommitSqliteSaver)


@pytest.mark.postgres
async def test_the_postgres_group_commit_saver_conforms() -> None:
    name = f"aiops_conformance_{uuid.uuid4().hex[:10]}"
    await pg(f'CREATE DATABASE "{name}"')
    url = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    try:
        await setup_checkpoints(url)
        await _conforms(url, GroupCommitPostgresSaver)
    finally:
        await pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
