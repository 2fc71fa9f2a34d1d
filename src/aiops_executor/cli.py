"""The ``aiops-executor`` command line.

Every command runs under ``ExplainedFailures``: a failure is reported in one line with an exit code (1 the
request is refused or something unexpected happened, 2 bad settings or options, 3 the database, Redis or a
port is not available; see ``console.errors``) -- never a traceback, unless ``AIOPS_DEBUG`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import TyperException

from aiops_executor.auth.models import Role
from aiops_executor.console.errors import DEBUG_VARIABLE, EXIT_USAGE, CommandFailure, Targets, explain
from aiops_executor.core.files import secure_data_files
from aiops_executor.core.listening import bind_listening_socket
from aiops_executor.core.settings import ConfigurationError, Settings, get_settings, resolve_secrets
from aiops_executor.lab.cli import lab_app

if TYPE_CHECKING:
    from aiops_executor.core.db import Database
    from aiops_executor.core.key_rotation import RotationReport


class ExplainedFailures(TyperGroup):
    """The top-level command group; the one place where a command's failure becomes a message and an exit
    code (typer's own usage errors and explicit exits pass through unchanged)."""

    def invoke(self, ctx: Any) -> Any:  # typer.core._click.Context (typer vendors click privately)
        try:
            return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if os.environ.get(DEBUG_VARIABLE, "").lower() in ("1", "true", "yes"):
                raise
            failure = explain(exc, _failure_targets())
            console.print(failure.message, style="red", markup=False, highlight=False)
            raise typer.Exit(failure.exit_code) from None


def _failure_targets() -> Targets:
    try:
        settings = get_settings()
    except ConfigurationError:
        return Targets()
    return Targets(settings.resolved_database_url, settings.redis_url)


app = typer.Typer(
    cls=ExplainedFailures,
    help="aiops-agent-executor: LLM agent teams for resource topologies.",
    no_args_is_help=True,
)
users_app = typer.Typer(help="Manage users.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage master encryption keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
import_app = typer.Typer(help="Make topologies from what already describes a system.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(lab_app, name="lab")

console = Console(stderr=True, soft_wrap=True)


def _load_settings(*, secrets: bool = True) -> Settings:
    """The settings (bad ones raise ConfigurationError); ``secrets``: also check (in dev, generate) the keys."""
    settings = get_settings()
    if secrets:  # first: a refusal is the only line printed (secret files are written private anyway)
        for path in resolve_secrets(settings).generated:
            console.print(
                f"[yellow]generated a development secret at {path}[/yellow] (set it in the environment for production)"
            )
    # Before the first connection: SQLite does not create the folder (aiosqlite reports that failure from its
    # thread, sometimes after the event loop has closed: a traceback on stderr), and would create the file with
    # the umask's mode.
    tightened = secure_data_files(settings.data_dir, settings.embedded_database_path)
    if tightened:
        console.print(f"[yellow]made data files readable by their owner only:[/yellow] {', '.join(tightened)}")
    return settings


def _require_migrated(settings: Settings) -> None:
    """On PostgreSQL, refuse to go on unless the database is reachable and migrated: the job queue's pool
    would otherwise retry a missing database for half a minute, and queries fail on missing tables. (The
    embedded default migrates itself.)"""
    from aiops_executor.core.migrate import check_migrated

    if not settings.is_embedded_database:
        asyncio.run(check_migrated(settings.resolved_database_url))


async def _migrate(settings: Settings) -> None:
    """The service's schema (Alembic), then the tables of the run checkpointer (its own versioned setup)."""
    from aiops_executor.core.migrate import upgrade_url
    from aiops_executor.executions.checkpoints import setup_checkpoints

    secure_data_files(settings.data_dir, settings.embedded_database_path)
    await upgrade_url(settings.resolved_database_url)
    await setup_checkpoints(settings.resolved_database_url)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Also run executions in this process (default; AIOPS_EMBEDDED_WORKER). --no-worker: API only, "
            "workers run them (PostgreSQL).",
        ),
    ] = True,
) -> None:
    """Start the HTTP API (on the embedded default, migrations are applied first)."""
    if not worker and _load_settings(secrets=False).is_embedded_database:
        raise CommandFailure(
            "--no-worker needs PostgreSQL (AIOPS_DATABASE_URL): "
            "on the embedded SQLite database the API process runs executions itself",
            EXIT_USAGE,
        )
    settings = _load_settings()
    if not worker:
        settings = settings.model_copy(update={"embedded_worker": False})
    _require_migrated(settings)
    listening = bind_listening_socket(host, port)
    from aiops_executor.app import create_app  # after the checks: importing the app takes a while
    from aiops_executor.console.serving import AppServer

    role = "" if settings.is_embedded_database or settings.embedded_worker else " (API only, no worker)"

    def announce(bound_port: int) -> None:
        console.print(f"aiops-executor listening on http://{host}:{bound_port}{role} (docs at /docs)")

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is stopped: exit 0, as with uvicorn.run
        AppServer(create_app(settings), on_listening=announce).run(sockets=[listening])


@app.command("worker")
def worker_command(
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="Runs at once (default: AIOPS_WORKER_CONCURRENCY).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Serve Prometheus metrics at http://0.0.0.0:PORT/metrics.")
    ] = None,
) -> None:
    """Run executions from the job queue (PostgreSQL), without the API. Stops on SIGTERM after draining."""
    from aiops_executor.worker import check_worker_settings, run_worker

    check_worker_settings(_load_settings(secrets=False))
    settings = _load_settings()
    if concurrency is not None:
        settings = settings.model_copy(update={"worker_concurrency": concurrency})
    _require_migrated(settings)
    asyncio.run(run_worker(settings, metrics_port=metrics_port))


@app.command()
def migrate() -> None:
    """Upgrade the database schema to the latest revision."""
    settings = _load_settings()
    asyncio.run(_migrate(settings))
    console.print("database schema is up to date")


@app.command("run")
def run_team_file(
    team_file: Annotated[
        Path, typer.Argument(metavar="TEAM_FILE", help="Team file: the JSON body of POST /teams.", show_default=False)
    ],
    task: Annotated[str, typer.Option("--task", help="What the team should find out.", show_default=False)],
    json_lines: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per event on stdout (logs go to stderr).")
    ] = False,
    context: Annotated[
        str | None, typer.Option(help="Extra facts for the agents, as a JSON object.", show_default=False)
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(min=1, max=1800, help="Run timeout in seconds (default: the team's timeout_seconds)."),
    ] = None,
    output_schema: Annotated[
        Path | None,
        typer.Option(help="JSON Schema file: the result then includes structured output.", show_default=False),
    ] = None,
) -> None:
    """Run a team file through the engine with the configured models and show the live event stream.

    Exits 0 on success, 1 if the run fails or times out, 2 on invalid input or settings, 3 if the database is not
    available, 130 if cancelled with Ctrl-C.
    """
    from aiops_executor.console import runner
    from aiops_executor.console.team_file import InputProblem, load_output_schema, load_team_file, parse_context

    try:
        spec = load_team_file(team_file)
        options = runner.RunOptions(
            team_file=team_file,
            task=task,
            json_lines=json_lines,
            context=parse_context(context),
            timeout_seconds=timeout,
            output_schema=load_output_schema(output_schema),
        )
    except InputProblem as problem:
        problem.print(console)
        raise typer.Exit(runner.EXIT_INVALID_INPUT) from None
    settings = _load_settings()
    raise typer.Exit(asyncio.run(runner.run_team(settings, spec, options, err=console)))


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface the service binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the service (0: any free port).")] = 8000,
    task: Annotated[str | None, typer.Option(help="What the team should find out.", show_default=False)] = None,
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving", help="Leave the service running after the demo run.")
    ] = False,
) -> None:
    """Start the service, create the team that probes this machine's PostgreSQL and Redis, run it over the API,
    and show the live event stream and the structured result (offline, on the embedded default)."""
    from aiops_executor.console import demo as demo_module

    settings = _load_settings()
    if "log_level" not in settings.model_fields_set:
        settings = settings.model_copy(update={"log_level": "WARNING"})  # the live view is the output
    options = demo_module.DemoOptions(
        host=host, port=port, task=task or demo_module.DEMO_TASK, keep_serving=keep_serving
    )
    raise typer.Exit(asyncio.run(demo_module.run_demo(settings, options, Console(), console)))


@app.command()
def purge() -> None:
    """Delete finished executions and their events older than AIOPS_EXECUTION_RETENTION_DAYS (default 30)."""
    from aiops_executor.services import ServiceContext

    settings = _load_settings()
    _require_migrated(settings)

    async def _purge() -> tuple[int, int]:
        if settings.is_embedded_database:
            await _migrate(settings)
        context = ServiceContext.build(settings)
        try:
            return await context.executions.upkeep.purge()
        finally:
            await context.executions.checkpoints.close()
            await context.close()

    executions, events = asyncio.run(_purge())
    console.print(
        f"purged {executions} execution(s) and {events} event(s) older than {settings.execution_retention_days:g} days"
    )


class MockKind(StrEnum):
    openai = "openai"
    anthropic = "anthropic"


@app.command("mock-llm")
def mock_llm(
    kind: Annotated[MockKind, typer.Option(help="Wire protocol: openai (also Azure paths) or anthropic.")] = (
        MockKind.openai
    ),
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="TCP port (default 8811 openai, 8812 anthropic).")] = None,
    key: Annotated[list[str] | None, typer.Option(help="A valid API key (repeatable; default mock-api-key).")] = None,
    model: Annotated[list[str] | None, typer.Option(help="A model id it serves (repeatable).")] = None,
    latency_ms: Annotated[float, typer.Option(help="Delay added to every request.")] = 0.0,
) -> None:
    """Run a local mock LLM provider speaking the real OpenAI or Anthropic HTTP protocol (offline testing)."""
    from aiops_devtools.mock_providers.runner import DEFAULT_PORTS, serve

    listening = bind_listening_socket(host, port if port is not None else DEFAULT_PORTS[kind.value])
    bound = listening.getsockname()[1]
    suffix = "/v1" if kind is MockKind.openai else ""
    console.print(f"mock {kind.value} provider on http://{host}:{bound}{suffix} (steer it at /_mock/behaviour)")
    serve(kind.value, host, bound, keys=key, models=model, latency_ms=latency_ms, log_level="warning", sock=listening)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Option(help="Login name.")],
    password: Annotated[str, typer.Option(help="Password (8+ characters).", prompt=True, hide_input=True)],
    role: Annotated[Role, typer.Option(help="admin, operator or viewer.")] = Role.viewer,
) -> None:
    """Create a user."""
    from pydantic import ValidationError

    from aiops_executor.auth import service
    from aiops_executor.auth.schemas import UserCreate
    from aiops_executor.auth.security import HashCost
    from aiops_executor.core.db import Database

    settings = _load_settings()
    try:
        data = UserCreate(username=username, password=password, role=role)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CommandFailure(f"invalid user: {problems}", EXIT_USAGE) from None

    async def _create() -> None:
        await _migrate(settings)
        database = Database(settings.resolved_database_url)
        try:
            async with database.sessionmaker() as session:
                await service.create_user(session, data, actor="cli", cost=HashCost.from_settings(settings))
        finally:
            await database.dispose()

    asyncio.run(_create())  # an existing username raises AppError: exit 1 with its code and message
    console.print(f"created {role.value} user {username!r}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every stored data key under the current master key (AIOPS_MASTER_KEY_ID)."""
    from aiops_executor.core.crypto import EnvelopeCipher
    from aiops_executor.core.db import Database
    from aiops_executor.core.key_rotation import rotate_master_key
    from aiops_executor.models_registry import metadata

    settings = _load_settings()
    secrets = resolve_secrets(settings)
    cipher = EnvelopeCipher(secrets.master_keys, secrets.master_key_id)

    async def _rotate() -> None:
        await _migrate(settings)
        database = Database(settings.resolved_database_url)
        try:
            report = await rotate_master_key(database.engine, cipher, metadata)
            await _record_rotation(database, report, cipher.current_key_id, actor="cli")
        finally:
            await database.dispose()
        console.print(
            f"re-wrapped {report.rewrapped} secret(s) under key {cipher.current_key_id!r}; "
            f"{report.already_current} already current"
        )
        in_use = ", ".join(f"{key_id}: {count}" for key_id, count in sorted(report.key_ids_in_use.items()))
        console.print(f"key ids in use: {in_use or 'none'}")
        retired = sorted(cipher.key_ids - set(report.key_ids_in_use))
        if retired:
            console.print(f"no secret uses {', '.join(retired)} any more; they can be removed from AIOPS_MASTER_KEYS")
        if report.failed:
            for problem in report.failed:
                console.print(f"[red]could not re-wrap[/red] {problem}")
            raise typer.Exit(1)

    asyncio.run(_rotate())


async def _record_rotation(database: Database, report: RotationReport, key_id: str, *, actor: str) -> None:
    """Audit a rotation (counts and key ids only) in its own transaction."""
    from aiops_executor.audit import service as audit

    async with database.sessionmaker() as session:
        audit.record(
            session,
            actor=actor,
            action="rotate",
            resource_type="master_key",
            resource_id=key_id,
            details={
                "rewrapped": report.rewrapped,
                "already_current": report.already_current,
                "failed": len(report.failed),
                "key_ids_in_use": dict(report.key_ids_in_use),
            },
        )
        await session.commit()


@import_app.command("kubernetes")
def import_kubernetes(
    manifests: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="Multi-document YAML (kubectl get -o yaml, helm template); - reads standard input.",
            show_default=False,
        ),
    ],
    defaults: Annotated[
        str | None,
        typer.Option(
            help='JSON object: {"model_provider", "model_id", "cluster_domain"} (default: local-sim / sim-1).',
            show_default=False,
        ),
    ] = None,
    team_name: Annotated[
        str | None,
        typer.Option(help="Print a team file (the body of POST /teams) with this name instead.", show_default=False),
    ] = None,
) -> None:
    """Print the topology of Kubernetes manifests, as POST /api/v1/topologies/import/kubernetes returns it
    ({"topology", "warnings"}); the warnings also go to stderr, one per line. Needs no database."""
    import json
    import sys

    from pydantic import ValidationError

    from aiops_executor.engine.topology import TeamSpec
    from aiops_executor.imports.kubernetes import Defaults, import_manifests
    from aiops_executor.imports.manifests import ManifestError
    from aiops_executor.imports.schemas import ImportDefaults

    try:
        options = ImportDefaults.model_validate_json(defaults) if defaults is not None else ImportDefaults()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'defaults'}: {e['msg']}" for e in exc.errors())
        raise CommandFailure(f"invalid --defaults: {problems}", EXIT_USAGE) from None
    if str(manifests) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = manifests.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise CommandFailure(f"cannot read {manifests}: {reason}", EXIT_USAGE) from None
    try:
        result = import_manifests(text, Defaults(**options.model_dump()))
    except ManifestError as exc:
        raise CommandFailure(f"{manifests}: {exc.message}", EXIT_USAGE) from None
    for note in result.warnings:
        where = f"document {note['document']}" if note["document"] else ""
        if note["resource"]:
            where = f"{where} ({note['resource']})" if where else note["resource"]
        line = f"warning: {where}: {note['message']}" if where else f"warning: {note['message']}"
        console.print(line, style="yellow", markup=False, highlight=False)
    topology = result.topology.model_dump(mode="json")
    if team_name is not None:
        try:
            document: dict[str, Any] = TeamSpec.model_validate(
                {"team_name": team_name, "topology": topology}
            ).model_dump(mode="json")
        except ValidationError as exc:
            raise CommandFailure(f"invalid --team-name: {exc.errors()[0]['msg']}", EXIT_USAGE) from None
    else:
        document = {"topology": topology, "warnings": result.warnings}
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def main() -> None:  # pragma: no cover - console entry
    app(prog_name="aiops-executor")


if __name__ == "__main__":  # pragma: no cover
    main()
