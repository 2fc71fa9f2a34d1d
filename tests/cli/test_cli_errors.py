"""The command line's failures: a line or two naming the problem, an exit code (1 refused or unexpected,
2 bad settings or options, 3 database/Redis/port not available), never a traceback and never a password.

Each case runs the real CLI as a subprocess with a controlled environment (data dir in a temporary folder, keys
set so that nothing is generated, an explicit database URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis.exceptions
from procrastinate.exceptions import ConnectorException
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

from aiops_executor.cli import app
from aiops_executor.console.errors import EXIT_ENVIRONMENT, EXIT_USAGE, EXIT_USER_ERROR, Targets, explain
from aiops_executor.core.migrate import SchemaNotMigrated
from aiops_executor.core.settings import get_settings
from tests.conftest import PG_HOST, PG_PORT, PG_USER, TEST_MASTER_KEY
from tests.helpers import REPO_ROOT
from tests.processes import base_env, free_port, pg

PASSWORD = "hunter2-cli-secret"
COMMANDS: dict[str, list[str]] = {
    "migrate": ["migrate"],
    "purge": ["purge"],
    "users create": ["users", "create", "--username", "bob", "--password", "long-enough-1", "--role", "operator"],
    "keys rotate": ["keys", "rotate"],
    "serve": ["serve", "--port", "0"],
    "worker": ["worker"],
}
# Commands that migrate the database themselves, so an unmigrated one is no failure for them.
SELF_MIGRATING = {"migrate", "users create", "keys rotate"}
TIMEOUT_SECONDS = 20


def cli(
    tmp_path: Path, *args: str, timeout: float = TIMEOUT_SECONDS, **settings: str
) -> subprocess.CompletedProcess[str]:
    defaults = {
        "data_dir": str(tmp_path / "data"),
        "env": "dev",
        "master_keys": json.dumps({"k1": TEST_MASTER_KEY}),
        "jwt_secret": "cli-errors-jwt-secret-" + "x" * 32,
        "log_level": "WARNING",
    }
    env = base_env(**(defaults | settings))
    env["COLUMNS"] = "200"
    return subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "aiops_executor.cli", *args],
        cwd=tmp_path,  # no stray .env
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_explained(result: subprocess.CompletedProcess[str], exit_code: int, *phrases: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == exit_code, output
    assert "Traceback" not in output, output
    assert len(output.strip().splitlines()) <= 3, output
    assert PASSWORD not in output
    for phrase in phrases:
        assert phrase in output, output
    return output


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database on the local PostgreSQL with no tables at all."""
    name = f"aiops_cli_errors_{uuid.uuid4().hex[:10]}"
    asyncio.run(pg(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.mark.parametrize("command", COMMANDS)
def test_database_down(tmp_path: Path, command: str) -> None:
    port = free_port()  # nothing listens there
    result = cli(
        tmp_path, *COMMANDS[command], database_url=f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{port}/x"
    )
    assert_explained(result, EXIT_ENVIRONMENT, f"cannot reach the database at 127.0.0.1:{port}/x", "connection refused")


@pytest.mark.postgres
@pytest.mark.parametrize("command", COMMANDS)
def test_database_not_migrated(tmp_path: Path, empty_database: str, command: str) -> None:
    # serve refuses before it listens: were it to serve anyway, the timeout ends it and the test fails.
    result = cli(tmp_path, *COMMANDS[command], database_url=empty_database)
    if command in SELF_MIGRATING:
        assert result.returncode == 0, result.stdout + result.stderr
        return
    assert_explained(result, EXIT_ENVIRONMENT, "is not migrated", "run `aiops-executor migrate`")


@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_sqlite_file_in_no_folder_says_so(tmp_path: Path, command: str) -> None:
    (tmp_path / "not-a-dir").write_text("")
    url = f"sqlite+aiosqlite:///{tmp_path / 'not-a-dir' / 'aiops.db'}"
    result = cli(tmp_path, *COMMANDS[command], database_url=url)
    assert_explained(result, EXIT_ENVIRONMENT, f"cannot use {tmp_path / 'not-a-dir'}: it exists and is not a folder")


BAD_DATABASE_URLS = [
    "nonsense://x",
    f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:5432:x/db",
    "postgresql://u@h/db",
]


@pytest.mark.parametrize(
    ("command", "url"),
    [(command, BAD_DATABASE_URLS[0]) for command in COMMANDS] + [("migrate", url) for url in BAD_DATABASE_URLS[1:]],
)
def test_bad_database_url(tmp_path: Path, command: str, url: str) -> None:
    result = cli(tmp_path, *COMMANDS[command], database_url=url)
    output = assert_explained(result, EXIT_USAGE, "AIOPS_DATABASE_URL is not a valid database URL")
    assert len(output.strip().splitlines()) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("command", ["migrate", "worker"])
def test_a_missing_database_is_named(tmp_path: Path, command: str) -> None:
    name = f"aiops_missing_{uuid.uuid4().hex[:8]}"
    url = f"postgresql+asyncpg://{PG_USER}:{PASSWORD}@{PG_HOST}:{PG_PORT}/{name}"
    assert_explained(cli(tmp_path, *COMMANDS[command], database_url=url), EXIT_ENVIRONMENT, name, "does not exist")


@pytest.mark.parametrize(
    ("variable", "value", "phrases"),
    [
        ("env", "staging", ["AIOPS_ENV='staging'", "'dev' or 'prod'"]),
        ("worker_concurrency", "lots", ["AIOPS_WORKER_CONCURRENCY='lots'", "integer"]),
        ("embedded_worker", "perhaps", ["AIOPS_EMBEDDED_WORKER='perhaps'", "true or false"]),
        ("redis_url", "localhost:6379", ["AIOPS_REDIS_URL", "redis://"]),
    ],
)
def test_a_malformed_setting_is_one_line(tmp_path: Path, variable: str, value: str, phrases: list[str]) -> None:
    output = assert_explained(cli(tmp_path, "migrate", **{variable: value}), EXIT_USAGE, *phrases)
    assert len(output.strip().splitlines()) == 1
    assert "pydantic" not in output and "validation error" not in output


def test_a_malformed_secret_setting_is_not_repeated(tmp_path: Path) -> None:
    result = cli(tmp_path, "migrate", master_keys="{" + PASSWORD)
    output = assert_explained(result, EXIT_USAGE, "AIOPS_MASTER_KEYS must be a JSON object")
    assert len(output.strip().splitlines()) == 1


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.mark.parametrize("command", [["serve"], ["mock-llm"], ["demo"]])
def test_a_busy_port_is_reported_before_anything_listens(tmp_path: Path, busy_port: int, command: list[str]) -> None:
    result = cli(tmp_path, *command, "--port", str(busy_port))
    output = assert_explained(
        result, EXIT_ENVIRONMENT, f"port {busy_port} on 127.0.0.1 is already in use; pick another with --port"
    )
    assert len(output.strip().splitlines()) == 1
    assert "listening" not in output and "provider on http" not in output


@pytest.mark.postgres
def test_worker_metrics_port_busy(tmp_path: Path, empty_database: str, busy_port: int) -> None:
    assert cli(tmp_path, "migrate", database_url=empty_database).returncode == 0
    result = cli(tmp_path, "worker", "--metrics-port", str(busy_port), database_url=empty_database)
    assert_explained(result, EXIT_ENVIRONMENT, f"port {busy_port}", "--metrics-port")


def test_run_goes_through_the_same_handler(tmp_path: Path) -> None:
    team_file = REPO_ROOT / "examples" / "local-machine.json"
    port = free_port()
    result = cli(
        tmp_path, "run", str(team_file), "--task", "t", database_url=f"postgresql+asyncpg://u@127.0.0.1:{port}/x"
    )
    assert_explained(result, EXIT_ENVIRONMENT, f"cannot reach the database at 127.0.0.1:{port}/x")


def test_serve_announces_itself_once_listening(tmp_path: Path) -> None:
    port = free_port()
    with subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "aiops_executor.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=base_env(data_dir=str(tmp_path / "data"), log_level="WARNING"),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stderr is not None
            line = ""
            for line in process.stderr:
                if "listening on" in line:
                    break
            assert f"listening on http://127.0.0.1:{port}" in line
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # the announced port accepts connections
        finally:
            process.terminate()
            process.wait(timeout=15)


# -- the explanations themselves, and the handler in-process -------------------------------------------------

TARGETS = Targets(f"postgresql+asyncpg://svc:{PASSWORD}@db.internal:6543/app", f"redis://:{PASSWORD}@cache:6380/0")


def test_a_wrapped_driver_error_is_found_in_the_chain() -> None:
    try:
        try:
            raise psycopg.errors.UndefinedTable('relation "procrastinate_workers" does not exist')
        except psycopg.Error as inner:
            raise ConnectorException("Database error.") from inner
    except ConnectorException as outer:
        failure = explain(outer, TARGETS)
    assert failure.exit_code == EXIT_ENVIRONMENT
    assert failure.message == "the database at db.internal:6543/app is not migrated: run `aiops-executor migrate`"


def test_sqlite_missing_table_and_old_schema_are_not_migrated() -> None:
    import sqlite3

    wrapped = OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: users"))
    wrapped.__cause__ = wrapped.orig
    assert "is not migrated" in explain(wrapped, Targets("sqlite+aiosqlite:////tmp/x.db")).message
    unopenable = OperationalError("SELECT 1", {}, sqlite3.OperationalError("unable to open database file"))
    unopenable.__cause__ = unopenable.orig
    assert explain(unopenable, Targets("sqlite+aiosqlite:////tmp/x.db")).message.startswith(
        "cannot open the SQLite database /tmp/x.db"
    )
    behind = explain(SchemaNotMigrated("0001", "0007"), TARGETS)
    assert behind.exit_code == EXIT_ENVIRONMENT and "at revision 0001, this version needs 0007" in behind.message


def test_redis_down_names_redis_without_its_password() -> None:
    failure = explain(
        redis.exceptions.ConnectionError("Error 111 connecting to cache:6380. Connection refused."), TARGETS
    )
    assert failure.exit_code == EXIT_ENVIRONMENT
    assert failure.message.startswith("cannot reach Redis at cache:6380/0: connection refused")
    assert PASSWORD not in failure.message


def test_an_unexpected_error_is_one_line_with_a_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failure = explain(RuntimeError(f"boom\nsecond line postgresql://u:{PASSWORD}@h/db"), TARGETS)
    assert failure.exit_code == EXIT_USER_ERROR
    assert failure.message.startswith("unexpected error: boom") and "AIOPS_DEBUG=1" in failure.message
    assert "RuntimeError" not in failure.message  # the user's terms, not Python's

    async def broken(*_: object) -> None:
        raise RuntimeError("the disk ate it")

    monkeypatch.setattr("aiops_executor.cli._migrate", broken)
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("AIOPS_")]:
        monkeypatch.delenv(name)
    env = {"AIOPS_DATA_DIR": str(tmp_path / "data")}
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["migrate"], env=env)
    assert result.exit_code == EXIT_USER_ERROR
    assert "unexpected error: the disk ate it" in result.output and "Traceback" not in result.output

    get_settings.cache_clear()
    debugging = CliRunner().invoke(app, ["migrate"], env={**env, "AIOPS_DEBUG": "1"})
    assert isinstance(debugging.exception, RuntimeError)  # the traceback is shown, not explained away
    get_settings.cache_clear()
