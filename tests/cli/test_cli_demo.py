"""``aiops-executor demo`` (the README's first command ends in it) and ``aiops-executor purge``."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiops_executor.console.demo import sse_events
from tests.helpers import REPO_ROOT
from tests.processes import base_env

ROOT = REPO_ROOT
# One worker runs the demo once for the tests that read what it leaves (it takes seconds of CPU).
pytestmark = [pytest.mark.long, pytest.mark.xdist_group("demo")]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {**base_env(data_dir=str(data_dir), env="dev"), "COLUMNS": "120", **extra}


def cli(data_dir: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [sys.executable, "-m", "aiops_executor.cli", *args],
        cwd=data_dir.parent,
        env=clean_env(data_dir, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def first_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    """The demo on a fresh data directory: the directory it left, and what it printed."""
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    yield data_dir, cli(data_dir, "demo", "--port", "0")
    shutil.rmtree(data_dir.parent, ignore_errors=True)


def copy_of(data_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    return copy


def test_demo_runs_the_local_machine_team_over_the_api_offline(
    first_demo: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    demo_dir, first = first_demo
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert "service running at http://127.0.0.1:" in out
    assert "team local-machine-diagnosis created" in out
    assert "success in" in out and "structured output" in out
    assert "postgres_diagnostics" in out or "server_version" in out or "PostgreSQL" in out
    assert '"overall_status"' in out

    # The execution and its events are stored in the embedded database, like any API run.
    with sqlite3.connect(demo_dir / "aiops.db") as db:
        status, last_seq = db.execute("SELECT status, last_seq FROM executions").fetchone()
        events = db.execute("SELECT count(*), max(seq) FROM execution_events").fetchone()
    assert status == "success" and events == (last_seq, last_seq)

    data_dir = copy_of(demo_dir, tmp_path)
    again = cli(data_dir, "demo", "--port", "0")  # a second demo reuses and refreshes the team
    assert again.returncode == 0, again.stdout + again.stderr
    assert "team local-machine-diagnosis refreshed" in again.stdout


def test_purge_deletes_what_is_older_than_the_retention(
    first_demo: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    demo_dir, first = first_demo
    assert first.returncode == 0, first.stdout + first.stderr
    data_dir = copy_of(demo_dir, tmp_path)
    kept = cli(data_dir, "purge")
    assert kept.returncode == 0 and "purged 0 execution(s)" in kept.stderr + kept.stdout
    with sqlite3.connect(data_dir / "aiops.db") as db:
        old = (datetime.now(UTC) - timedelta(days=45)).strftime("%Y-%m-%d %H:%M:%S.%f")
        db.execute("UPDATE executions SET completed_at = ?", (old,))
    purged = cli(data_dir, "purge")
    assert purged.returncode == 0 and "purged 1 execution(s)" in purged.stderr + purged.stdout
    with sqlite3.connect(data_dir / "aiops.db") as db:
        assert db.execute("SELECT count(*) FROM executions").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM execution_events").fetchone() == (0,)


class _Lines:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    async def aiter_lines(self):  # type: ignore[no-untyped-def]
        for line in self.lines:
            yield line


async def test_the_demo_reads_server_sent_events_as_the_wire_sends_them() -> None:
    wire = [
        ": ping",
        "id: 1",
        "event: execution_start",
        'data: {"seq": 1}',
        "",
        "event: heartbeat",
        'data: {"seq": 1}',
        "",
    ]
    events = [e async for e in sse_events(_Lines(wire))]  # type: ignore[arg-type]
    assert events == [("1", "execution_start", {"seq": 1}), ("", "heartbeat", {"seq": 1})]
