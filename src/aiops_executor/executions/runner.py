"""Runs one attempt of an execution: its engine run, its recorded events, and its end written with the last of them.

The manager (``executions.manager``) decides *when* an attempt runs -- a slot, the queue's job, a cancel or a
stop -- and calls ``AttemptRunner.run`` with the attempt the repository started. The runner builds the team
(compiled once per snapshot when every tool is built in), the model source and the ``ExecutionRun``, streams the
run's events into an ``EventRecorder`` and, in the transaction of the last events, writes how the attempt
ended: finished, waiting for approvals, or released for a later attempt (the process is stopping).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.core.settings import Settings
from aiops_executor.core.telemetry import Telemetry
from aiops_executor.engine import CompiledTeam, ExecutionEvent, ExecutionRun, Resume, RunOutcome, RunRequest, RunStatus
from aiops_executor.engine.failures import error_message
from aiops_executor.engine.run import EXECUTION_FAILED, terminal_event
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.executions import repository
from aiops_executor.executions.broadcast import Broadcaster
from aiops_executor.executions.checkpoints import Checkpoints
from aiops_executor.executions.compiled_teams import CompiledTeams, snapshot_key
from aiops_executor.executions.event_log import EventRecorder
from aiops_executor.llm.runtime.model_source import RuntimeModelSource
from aiops_executor.llm.runtime.service import ModelRuntime
from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import ToolSpec, tool_settings

logger = structlog.get_logger(__name__)

# The registry entries of the tool servers' tools among a run's tool names (``tool_servers.service``).
ServerTools = Callable[[Iterable[str]], Awaitable[list[ToolSpec]]]


@dataclass
class ActiveRun:
    """A run this process holds: waiting for a slot, or running an attempt."""

    execution_id: uuid.UUID
    task: asyncio.Task[None] | None = None
    run: ExecutionRun | None = None
    cancel_requested: bool = False
    suspend_requested: bool = False
    finished: bool = False  # ended here with an outcome (or given up)
    suspended: bool = False  # left checkpointed (or pending) for a later attempt
    awaiting: bool = False  # stopped for approvals: checkpointed, resumed once they are decided
    waiting_for_slot: bool = True
    done: asyncio.Event = field(default_factory=asyncio.Event)

    # Between its slot and its engine (the attempt being recorded, the team compiled) a run only takes note of a
    # cancel or suspend: ``AttemptRunner.run`` applies it once the run exists. Cancelling the task there instead
    # would abandon the attempt half-recorded, its execution left running with no process holding it.

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.run is not None:
            self.run.cancel()
        elif self.task is not None and self.waiting_for_slot:
            self.task.cancel()

    def suspend(self) -> None:
        self.suspend_requested = True
        if self.run is not None:
            self.run.suspend()
        elif self.task is not None and self.waiting_for_slot:
            self.task.cancel()  # it stays pending


class AttemptRunner:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        broadcaster: Broadcaster,
        checkpoints: Checkpoints,
        settings: Settings,
        telemetry: Telemetry,
        model_runtime: ModelRuntime,
        server_tools: ServerTools,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.broadcaster = broadcaster
        self.checkpoints = checkpoints
        self.settings = settings
        self.telemetry = telemetry
        self.model_runtime = model_runtime
        self.server_tools = server_tools
        self.compiled = CompiledTeams()

    async def run(self, active: ActiveRun, started: repository.Started, *, stopping: bool) -> bool:
        """Runs one attempt and stores its events and outcome; True when the run finished (False: it waits for
        approvals, or was suspended). ``stopping``: the process is stopping, the attempt is suspended at once."""
        execution_id = active.execution_id
        try:
            run = await self._execution_run(started)
        except Exception as exc:  # no engine will end this attempt: it ends here, with the reason
            await self._fail_unprepared(started, exc)
            return True
        recorder = self._recorder(started)
        active.run = run
        if active.cancel_requested:
            run.cancel()
        elif active.suspend_requested or stopping:
            run.suspend()
        log = logger.bind(attempt=started.attempt)
        log.info("execution resumed" if started.resumed else "execution started")
        try:
            await self._snapshot_models(run)
            async for event in run.events():
                await recorder.add(event)
        finally:
            outcome = run.outcome
            waiting = run.awaiting
            expires_at = datetime.now(UTC) + timedelta(seconds=self.settings.approval_timeout_seconds)

            async def final(session: AsyncSession) -> None:
                if outcome is None and waiting:  # tool calls wait for people: no process holds the run meanwhile
                    await repository.await_approval(session, execution_id, waiting, expires_at, started.worker_id)
                elif outcome is None:  # suspended: the process is stopping; the checkpoint resumes it
                    await repository.release(session, execution_id, started.worker_id)
                else:
                    await repository.finish(session, execution_id, outcome, started.worker_id)

            await asyncio.shield(recorder.close(final))
        if outcome is None and waiting:
            active.awaiting = True
            log.info("execution waits for approvals", approvals=[str(w.approval_id) for w in waiting])
            return False
        if outcome is None:
            log.info("execution suspended; it resumes from its checkpoint")
            return False
        log.info("execution finished", status=outcome.status.value, duration_ms=outcome.duration_ms)
        return True

    async def forget_checkpoints(self, execution_id: uuid.UUID) -> None:
        """The outcome and the event log are stored: the checkpoints have served their purpose. The manager
        calls this after the run has left its active set, so clean-up never makes a finished run look like it
        is still running."""
        try:
            await self.checkpoints.delete([execution_id])
        except Exception as exc:  # they go with the execution at the retention purge
            logger.warning("could not delete the checkpoints of a finished execution", error=str(exc))

    def _recorder(self, started: repository.Started) -> EventRecorder:
        return EventRecorder(
            self.sessionmaker,
            self.broadcaster,
            started.execution.id,
            flush_interval=self.settings.event_flush_interval_ms / 1000,
            batch_size=self.settings.event_flush_batch_size,
            owner=started.worker_id,
        )

    async def _compiled_team(self, snapshot: dict[str, Any]) -> CompiledTeam:
        """A run's team with its tools; compiled once per snapshot when all are built in (``compiled_teams``)."""
        key = snapshot_key(snapshot)
        team = self.compiled.get(key)
        if team is not None:
            return team
        spec = TeamSpec.model_validate(snapshot)
        names = {tool for node in spec.topology.nodes for agent in node.agents for tool in agent.tools}
        specs = await self.server_tools(names)
        tools = default_registry().extended(specs) if specs else default_registry()
        team = CompiledTeam(spec, tools, tool_settings(self.settings))
        if not specs:
            self.compiled.keep(key, team)
        return team

    async def _execution_run(self, started: repository.Started) -> ExecutionRun:
        execution = started.execution
        request = RunRequest(
            execution_id=str(execution.id),
            team_id=str(execution.team_id),
            task=execution.input["task"],
            context=execution.input.get("context", {}),
            timeout_seconds=execution.timeout_seconds,
            output_schema=execution.output_schema,
            started_at=execution.started_at,
            elapsed_seconds=started.elapsed_seconds,
        )
        resume = (
            Resume(
                started.attempt,
                started.worker_id,
                started.last_seq,
                started.announced,
                decisions=started.decisions,
                tool_call_seqs=started.tool_call_seqs,
            )
            if started.resumed
            else None
        )
        return ExecutionRun(
            await self._compiled_team(execution.team_snapshot),
            request,
            RuntimeModelSource(
                self.model_runtime,
                execution_id=execution.id,
                team_id=execution.team_id,
                api_key_id=execution.api_key_id,
            ),
            checkpointer=self.checkpoints.saver,
            resume=resume,
            telemetry=self.telemetry,
        )

    async def _fail_unprepared(self, started: repository.Started, exc: Exception) -> None:
        """The attempt could not be prepared (its team snapshot, tool servers or checkpointer failed): it ends
        ``failed`` with that reason and its terminal event, not ``running`` until a lease says "lost"."""
        execution = started.execution
        message = f"the run could not be prepared: {error_message(exc) or 'unexpected error'}"
        logger.warning("execution could not be prepared", attempt=started.attempt, error=message)
        outcome = RunOutcome(RunStatus.failed, "", [], 0, error_code=EXECUTION_FAILED, error_message=message)
        pending = terminal_event(outcome, structured=execution.output_schema is not None)
        event = ExecutionEvent(
            pending.type,
            str(execution.id),
            str(execution.team_id),
            started.last_seq + 1,
            datetime.now(UTC),
            data=pending.data,
        )
        recorder = self._recorder(started)
        await recorder.add(event)

        async def final(session: AsyncSession) -> None:
            await repository.finish(session, execution.id, outcome, started.worker_id)

        await asyncio.shield(recorder.close(final))

    async def _snapshot_models(self, run: ExecutionRun) -> None:
        """Loads the configuration of every model the team uses, once, at the start of the run."""
        source = run.models
        if not isinstance(source, RuntimeModelSource):
            return
        topology = run.team.topology
        references = {(topology.global_supervisor.model_provider, topology.global_supervisor.model_id)}
        for node in topology.nodes:
            references.add((node.supervisor_config.model_provider, node.supervisor_config.model_id))
            references.update((a.model_provider, a.model_id) for a in node.agents)
        try:
            await source.snapshot(references)
        except Exception as exc:  # the node teams that need a missing model fail, with this reason
            logger.warning("could not load every model of the team", error=str(exc))
