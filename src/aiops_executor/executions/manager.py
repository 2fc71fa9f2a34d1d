"""Runs executions in the background of the process, independent of any HTTP request.

At most ``max_concurrent_executions`` run at once; the rest wait as ``pending``. Each run streams its
events into an ``EventRecorder`` (persisted and broadcast) and ends by writing its outcome in the same
transaction as its last events. A client that disconnects changes nothing; ``cancel`` stops a run within
moments. At start-up, executions a previous process left unfinished are closed as failed.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core.context import AppContext
from aiops_executor.core.db import utcnow
from aiops_executor.engine import CompiledTeam, ExecutionRun, RunOutcome, RunRequest, RunStatus
from aiops_executor.engine.events import EventType, format_timestamp
from aiops_executor.executions.broadcast import Broadcaster, LocalBroadcaster
from aiops_executor.executions.models import Execution, ExecutionEventRow
from aiops_executor.executions.schemas import UNFINISHED, ExecutionStatus
from aiops_executor.executions.store import EventRecorder
from aiops_executor.llm.runtime.model_source import RuntimeModelSource
from aiops_executor.teams.topology import TeamSpec
from aiops_executor.tools.registry import default_registry, tool_settings

logger = structlog.get_logger(__name__)

INTERRUPTED = "EXECUTION_INTERRUPTED"


@dataclass
class ActiveRun:
    execution_id: uuid.UUID
    task: asyncio.Task[None] | None = None
    run: ExecutionRun | None = None
    cancel_requested: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.run is not None:
            self.run.cancel()


def outcome_columns(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "status": outcome.status.value,
        "completed_at": utcnow(),
        "duration_ms": outcome.duration_ms,
        "result": outcome.result(),
        "structured_output": outcome.structured_output,
        "usage": outcome.usage.as_dict(),
        "error_code": outcome.error_code,
        "error_message": outcome.error_message,
        "error_details": outcome.error_details or None,
    }


class ExecutionManager:
    def __init__(self, context: AppContext, broadcaster: Broadcaster | None = None) -> None:
        self.context = context
        self.settings = context.settings
        self.broadcaster: Broadcaster = broadcaster or LocalBroadcaster()
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_executions)
        self._active: dict[uuid.UUID, ActiveRun] = {}
        # Serialises "is this team already running?" with creating the execution, within this process.
        self.admission = asyncio.Lock()
        self._purger: asyncio.Task[None] | None = None

    # -- lifecycle of the manager ----------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._purger = asyncio.create_task(self._purge_periodically(), name="execution-purge")

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
        runs = list(self._active.values())
        for active in runs:
            active.cancel()
            if active.task is not None and active.run is None:
                active.task.cancel()
        await asyncio.gather(*(a.task for a in runs if a.task is not None), return_exceptions=True)

    async def recover(self) -> int:
        """Closes executions a previous process left pending or running, with a terminal event each."""
        async with self.context.database.sessionmaker() as session, session.begin():
            stuck = list(await session.scalars(select(Execution).where(Execution.status.in_(UNFINISHED))))
            for execution in stuck:
                last = await session.scalar(
                    select(func.max(ExecutionEventRow.seq)).where(ExecutionEventRow.execution_id == execution.id)
                )
                message = "the service stopped while this execution was unfinished; run it again"
                now = utcnow()
                seq = (last or 0) + 1
                session.add(
                    ExecutionEventRow(
                        execution_id=execution.id,
                        seq=seq,
                        type=EventType.execution_error.value,
                        payload={
                            "execution_id": str(execution.id),
                            "team_id": str(execution.team_id),
                            "seq": seq,
                            "timestamp": format_timestamp(now),
                            "status": ExecutionStatus.failed.value,
                            "error_code": INTERRUPTED,
                            "error_message": message,
                        },
                        timestamp=now,
                    )
                )
                execution.status = ExecutionStatus.failed.value
                execution.error_code = INTERRUPTED
                execution.error_message = message
                execution.completed_at = now
                execution.last_seq = seq
        if stuck:
            logger.warning("closed executions left unfinished by a previous process", count=len(stuck))
        return len(stuck)

    # -- runs ------------------------------------------------------------------------------------

    def launch(self, execution: Execution) -> ActiveRun:
        """Starts a freshly committed ``pending`` execution in the background."""
        active = ActiveRun(execution.id)
        self._active[execution.id] = active
        self.broadcaster.open(str(execution.id))
        active.task = asyncio.create_task(self._run(active, execution), name=f"execution-{execution.id}")
        return active

    def active(self, execution_id: uuid.UUID) -> ActiveRun | None:
        return self._active.get(execution_id)

    def cancel(self, execution_id: uuid.UUID) -> bool:
        active = self._active.get(execution_id)
        if active is None:
            return False
        active.cancel()
        if active.run is None and active.task is not None:
            active.task.cancel()  # still waiting for a slot
        return True

    async def wait(self, execution_id: uuid.UUID) -> None:
        active = self._active.get(execution_id)
        if active is not None:
            await active.done.wait()

    def running_count(self) -> int:
        return sum(1 for a in self._active.values() if a.run is not None)

    async def _run(self, active: ActiveRun, execution: Execution) -> None:
        spec = TeamSpec.model_validate(execution.team_snapshot)
        source = RuntimeModelSource(self.context.model_runtime)
        request = RunRequest(
            execution_id=str(execution.id),
            team_id=str(execution.team_id),
            task=execution.input["task"],
            context=execution.input.get("context", {}),
            timeout_seconds=execution.timeout_seconds,
            output_schema=execution.output_schema,
        )
        recorder = EventRecorder(
            self.context.database.sessionmaker,
            self.broadcaster,
            execution.id,
            flush_interval=self.settings.event_flush_interval_ms / 1000,
            batch_size=self.settings.event_flush_batch_size,
        )
        team = CompiledTeam(spec, default_registry(), tool_settings(self.settings))
        run = ExecutionRun(team, request, source, telemetry=self.context.telemetry)
        log = logger
        # Every log line of the run (engine, tools, model calls) carries these ids; they are unbound on the
        # way out (the task runs in a copy of the launching request's context anyway).
        with structlog.contextvars.bound_contextvars(execution_id=str(execution.id), team_id=str(execution.team_id)):
            try:
                try:
                    await self._slots.acquire()
                except asyncio.CancelledError:
                    # Cancelled while pending: the run records its start and its cancellation, nothing more.
                    run.cancel()
                    await self._drive(active, run, recorder, log, holding_slot=False)
                    return
                await self._drive(active, run, recorder, log, holding_slot=True)
            finally:
                self._active.pop(execution.id, None)
                active.done.set()

    async def _drive(
        self,
        active: ActiveRun,
        run: ExecutionRun,
        recorder: EventRecorder,
        log: structlog.typing.FilteringBoundLogger,
        *,
        holding_slot: bool,
    ) -> None:
        execution_id = active.execution_id
        try:
            active.run = run
            if active.cancel_requested:
                run.cancel()
            started_at = utcnow()
            async with self.context.database.sessionmaker() as session, session.begin():
                await session.execute(
                    update(Execution)
                    .where(Execution.id == execution_id)
                    .values(status=ExecutionStatus.running.value, started_at=started_at)
                )
            log.info("execution started")
            try:
                await self._snapshot_models(run)
                async for event in run.events():
                    await recorder.add(event)
            finally:
                outcome = run.outcome
                if outcome is None:  # the process is stopping mid-run
                    outcome = RunOutcome(RunStatus.cancelled, "", [], 0, error_message="the service stopped")

                async def finish(session: AsyncSession) -> None:
                    await session.execute(
                        update(Execution).where(Execution.id == execution_id).values(**outcome_columns(outcome))
                    )

                await asyncio.shield(recorder.close(finish))
            log.info("execution finished", status=outcome.status.value, duration_ms=outcome.duration_ms)
        except Exception:
            log.exception("execution could not be recorded")
        finally:
            if holding_slot:
                self._slots.release()

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

    # -- retention -------------------------------------------------------------------------------

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Deletes finished executions (and their events) older than the retention period."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.settings.execution_retention_days)
        async with self.context.database.sessionmaker() as session, session.begin():
            old = select(Execution.id).where(
                Execution.status.not_in(UNFINISHED),
                Execution.completed_at.is_not(None),
                Execution.completed_at < cutoff,
            )
            events = await session.execute(delete(ExecutionEventRow).where(ExecutionEventRow.execution_id.in_(old)))
            executions = await session.execute(delete(Execution).where(Execution.id.in_(old)))
        counts = (int(executions.rowcount or 0), int(events.rowcount or 0))  # type: ignore[attr-defined]
        if counts[0]:
            logger.info("purged old executions", executions=counts[0], events=counts[1])
        return counts

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                logger.exception("purging old executions failed; will retry")
            await asyncio.sleep(self.settings.purge_interval_seconds)
