"""``aiops-executor run``: a team file through the engine, on the configured database and models.

Steps: start the application context (the embedded default migrates itself and registers the offline
simulator), validate the team against the stored LLM configuration and the tool registry, snapshot its
models, compile, run, and hand every event to a sink -- JSON lines on stdout (``--json``; everything else
goes to stderr) or the live tree. Ctrl-C cancels the run (``ExecutionRun.cancel``) and the partial result
is still printed; a second Ctrl-C interrupts at once.

A file run is not stored: its execution id is fresh, and its team id is derived from the team name so
repeated runs of one file share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from aiops_executor.console.team_file import describe_issue, invalid_topology, model_references
from aiops_executor.console.view import RunView, render_result
from aiops_executor.core.errors import AppError
from aiops_executor.core.settings import Settings
from aiops_executor.engine import CompiledTeam, ExecutionEvent, ExecutionRun, RunOutcome, RunRequest, RunStatus
from aiops_executor.engine.topology import TeamSpec

EXIT_SUCCESS = 0
EXIT_RUN_FAILED = 1  # the run ended failed or timed out
EXIT_INVALID_INPUT = 2  # bad team file, options or topology
EXIT_CANCELLED = 130  # Ctrl-C, as shells report it
REFRESH_SECONDS = 0.1
TEAM_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:aiops-executor:team-file")


@dataclass(frozen=True)
class RunOptions:
    team_file: Path
    task: str
    json_lines: bool = False
    context: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float | None = None  # default: the team's timeout_seconds
    output_schema: dict[str, Any] | None = None


def exit_code(status: RunStatus) -> int:
    if status is RunStatus.success:
        return EXIT_SUCCESS
    if status is RunStatus.cancelled:
        return EXIT_CANCELLED
    return EXIT_RUN_FAILED


def team_id_for(spec: TeamSpec) -> str:
    return str(uuid.uuid5(TEAM_NAMESPACE, spec.team_name))


class EventSink(Protocol):
    def start(self) -> None: ...

    def event(self, event: ExecutionEvent) -> None: ...

    def interrupted(self) -> None: ...

    def finish(self, outcome: RunOutcome) -> None: ...


class JsonLinesSink:
    """One JSON object per event on stdout, as the contract's CLI section says; nothing else there."""

    def __init__(self, err: Console, on_closed: Callable[[], None]) -> None:
        self.err = err
        self.on_closed = on_closed
        self.closed = False

    def start(self) -> None:
        return None

    def event(self, event: ExecutionEvent) -> None:
        if self.closed:
            return
        line = json.dumps(
            # Token deltas are live only: no id, like their SSE messages.
            {"event": event.type.value, "id": None if event.is_live else event.seq, "data": event.payload()},
            ensure_ascii=False,
            default=str,
        )
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (``| head``): stop the run, quietly
            self.closed = True
            _silence_stdout()
            self.on_closed()

    def interrupted(self) -> None:
        self.err.print("[yellow]interrupted: cancelling the run (Ctrl-C again to abort at once)[/yellow]")

    def finish(self, outcome: RunOutcome) -> None:
        if self.closed:
            self.err.print("stdout was closed: the run was cancelled", highlight=False)
        elif outcome.status is not RunStatus.success:
            reason = outcome.error_message or outcome.status.value
            self.err.print(f"run {outcome.status.value}: {reason}", markup=False, highlight=False)


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so the interpreter's last flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):  # not a real file (tests capture stdout)
        pass


class LiveSink:
    """The live tree while the run goes on, then the result."""

    def __init__(self, out: Console, spec: TeamSpec, execution_id: str, structured_requested: bool) -> None:
        self.out = out
        self.spec = spec
        self.execution_id = execution_id
        self.structured_requested = structured_requested
        self.view = RunView.for_team(spec)
        self.live = Live(
            self.view, console=out, auto_refresh=False, transient=False, redirect_stdout=False, redirect_stderr=True
        )
        self._last_refresh = 0.0

    def start(self) -> None:
        self.view.started = time.monotonic()
        self.live.start(refresh=True)

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_refresh >= REFRESH_SECONDS:
            self._last_refresh = now
            self.live.refresh()

    def event(self, event: ExecutionEvent) -> None:
        self.view.apply(event)
        self.refresh(force=event.is_terminal)

    def interrupted(self) -> None:
        self.view.interrupt_note = "cancelling (Ctrl-C again to abort at once)"
        self.refresh(force=True)

    def stop(self) -> None:
        self.live.stop()
        if not self.out.is_terminal:  # rich ends the last frame with a newline only on terminals
            self.out.line()

    def finish(self, outcome: RunOutcome) -> None:
        self.out.print(
            render_result(
                outcome, self.spec, execution_id=self.execution_id, structured_requested=self.structured_requested
            )
        )


@contextlib.contextmanager
def interrupt_cancels(run: ExecutionRun, notify: Callable[[], None]) -> Iterator[None]:
    """While inside, the first Ctrl-C cancels ``run`` cleanly; the next one raises KeyboardInterrupt."""
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        loop.remove_signal_handler(signal.SIGINT)
        notify()
        run.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
        installed = False
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


async def _ticker(sink: LiveSink) -> None:
    """Keeps the spinners and the clock moving while no event arrives."""
    while True:
        await asyncio.sleep(REFRESH_SECONDS * 2)
        sink.refresh()


async def run_team(settings: Settings, spec: TeamSpec, options: RunOptions, *, err: Console) -> int:
    """Runs ``spec`` as the CLI does and returns the process exit code."""
    from aiops_executor.app import start_context
    from aiops_executor.core.logging import configure_logging
    from aiops_executor.llm.runtime.model_source import RuntimeModelSource
    from aiops_executor.teams.service import check_team
    from aiops_executor.tools.builtin import default_registry
    from aiops_executor.tools.registry import tool_settings

    configure_logging(settings)
    app_context = await start_context(settings)  # its failures (database down ...) are the CLI's to explain
    try:
        async with app_context.database.sessionmaker() as session:
            report = await check_team(session, spec)
        for issue in report.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(describe_issue(issue))}", highlight=False)
        if not report.valid:
            invalid_topology(options.team_file, report).print(err)
            return EXIT_INVALID_INPUT

        models = RuntimeModelSource(app_context.model_runtime)
        try:
            await models.snapshot(model_references(spec))
        except AppError as exc:
            err.print(f"[red]{exc.error_code}:[/red] {escape(exc.message)}", highlight=False)
            return EXIT_INVALID_INPUT

        team = CompiledTeam(spec, default_registry(), tool_settings(settings))
        request = RunRequest(
            execution_id=str(uuid.uuid4()),
            team_id=team_id_for(spec),
            task=options.task,
            context=options.context,
            timeout_seconds=float(options.timeout_seconds or spec.timeout_seconds),
            output_schema=options.output_schema,
        )
        run = ExecutionRun(team, request, models, telemetry=app_context.telemetry)
        return await _stream(run, spec, request, options, err)
    finally:
        await app_context.close()


async def _stream(run: ExecutionRun, spec: TeamSpec, request: RunRequest, options: RunOptions, err: Console) -> int:
    live: LiveSink | None = None
    sink: EventSink
    if options.json_lines:
        sink = JsonLinesSink(err, run.cancel)
    else:
        live = LiveSink(Console(), spec, request.execution_id, request.output_schema is not None)
        sink = live
    ticker: asyncio.Task[None] | None = None
    sink.start()
    try:
        if live is not None:
            ticker = asyncio.create_task(_ticker(live))
        with interrupt_cancels(run, sink.interrupted):
            async for event in run.events():
                sink.event(event)
    finally:
        if ticker is not None:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
        if live is not None:
            live.stop()
    outcome = run.outcome
    if outcome is None and run.awaiting:
        # Nobody can decide here: approvals are a feature of the service (its API resumes the run).
        tools = ", ".join(sorted({w.tool for w in run.awaiting}))
        err.print(
            f"the run stopped: {tools} needs a person's approval, which only the service's API can give",
            markup=False,
            highlight=False,
        )
        return EXIT_RUN_FAILED
    if outcome is None:  # the stream always ends with a terminal event; this is a safety net
        err.print("[red]the run ended without an outcome[/red]")
        return EXIT_RUN_FAILED
    sink.finish(outcome)
    return exit_code(outcome.status)
