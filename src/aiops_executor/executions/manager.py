"""Runs executions in the background of the process, independent of any HTTP request.

At most ``max_concurrent_executions`` run at once; the rest wait as ``pending``. Each run executes on the
process's checkpointer and streams its events into an ``EventRecorder`` (stored, then broadcast); it ends by
writing its outcome in the same transaction as its last events. A client that disconnects changes nothing;
``cancel`` stops a run within moments. Stopping the process (SIGTERM) suspends runs rather than ending them:
they stay ``running`` with no worker and are resumed from their checkpoints. At start-up, runs left unfinished
by a process that is gone are started or resumed (``attempt`` + 1), or fail with WORKER_LOST after
``max_run_attempts``. Status transitions are the repository's (``executions.repository``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.engine import CompiledTeam, ExecutionRun, Resume, RunRequest
from aiops_executor.executions import repository
from aiops_executor.executions.broadcast import Broadcaster, LocalBroadcaster
from aiops_executor.executions.checkpoints import Checkpoints
from aiops_executor.executions.models import Execution, ExecutionEventRow
from aiops_executor.executions.schemas import UNFINISHED, ExecutionStatus
from aiops_executor.executions.store import EventRecorder
from aiops_executor.llm.runtime.model_source import RuntimeModelSource
from aiops_executor.services import ServiceContext
from aiops_executor.teams.topology import TeamSpec
from aiops_executor.tools.registry import default_registry, tool_settings

logger = structlog.get_logger(__name__)


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


class ExecutionManager:
    def __init__(self, context: ServiceContext, broadcaster: Broadcaster | None = None) -> None:
        self.context = context
        self.settings = context.settings
        self.broadcaster: Broadcaster = broadcaster or LocalBroadcaster()
        self.checkpoints = Checkpoints(self.settings.resolved_database_url)
        self.worker_id = repository.this_worker()
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_executions)
        self._active: dict[uuid.UUID, ActiveRun] = {}
        # Serialises "is this team already running?" with creating the execution, within this process.
        self.admission = asyncio.Lock()
        self._purger: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle of the manager ----------------------------------------------------------------

    async def start(self) -> None:
        await self.checkpoints.open()
        await self.recover()
        self._purger = asyncio.create_task(self._purge_periodically(), name="execution-purge")

    async def stop(self) -> None:
        """Suspends every run (checkpointed, resumable) and ends live streams with a hint to re-attach."""
        self._stopping = True
        if self._purger is not None:
            self._purger.cancel()
            await asyncio.gather(self._purger, return_exceptions=True)
        runs = list(self._active.values())
        for active in runs:
            if active.run is not None:
                active.run.suspend()
            elif active.task is not None:
                active.task.cancel()  # still waiting for a slot: it stays pending
        await asyncio.gather(*(a.task for a in runs if a.task is not None), return_exceptions=True)
        self.broadcaster.shutdown()
        await self.checkpoints.close()

    async def recover(self) -> int:
        """Starts or resumes the executions a previous process left unfinished; returns how many."""
        taken = 0
        for execution in await repository.unfinished(self.context.database.sessionmaker):
            if execution.id in self._active:
                continue
            if execution.status == ExecutionStatus.running.value:
                if not repository.worker_is_gone(execution.worker_id):
                    logger.info("execution runs in another process", execution_id=str(execution.id))
                    continue
                # A run suspended by a shutdown (no worker) was not lost: only lost attempts count.
                if execution.worker_id is not None and execution.attempt >= self.settings.max_run_attempts:
                    if await repository.give_up(
                        self.context.database.sessionmaker, execution.id, self.settings.max_run_attempts
                    ):
                        logger.warning("execution lost too many times; failed", execution_id=str(execution.id))
                    continue
            self.launch(execution.id)
            taken += 1
        if taken:
            logger.warning("resuming executions left unfinished by a previous process", count=taken)
        return taken

    # -- runs ------------------------------------------------------------------------------------

    def launch(self, execution_id: uuid.UUID) -> ActiveRun:
        """Starts (or resumes) a committed unfinished execution in the background."""
        active = ActiveRun(execution_id)
        self._active[execution_id] = active
        self.broadcaster.open(str(execution_id))
        active.task = asyncio.create_task(self._run(active), name=f"execution-{execution_id}")
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

    async def _run(self, active: ActiveRun) -> None:
        execution_id = active.execution_id
        # Every log line of the run (engine, tools, model calls) carries its id; unbound on the way out.
        with structlog.contextvars.bound_contextvars(execution_id=str(execution_id)):
            holding_slot = finished = False
            try:
                try:
                    await self._slots.acquire()
                    holding_slot = True
                except asyncio.CancelledError:
                    if self._stopping:
                        return  # stays pending; the next process starts it
                    active.cancel_requested = True  # cancelled while pending: record its start and end
                started = await repository.start(self.context.database.sessionmaker, execution_id, self.worker_id)
                if started is None:
                    logger.info("execution already taken or finished")
                    self.broadcaster.finish(str(execution_id))
                    return
                with structlog.contextvars.bound_contextvars(team_id=str(started.execution.team_id)):
                    finished = await self._drive(active, started)
            except Exception:
                logger.exception("execution could not be run")
            finally:
                if holding_slot:
                    self._slots.release()
                self._active.pop(execution_id, None)
                active.done.set()
            if finished:
                await self._forget_checkpoints(execution_id)

    def _execution_run(self, started: repository.Started) -> ExecutionRun:
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
        resume = Resume(started.attempt, started.worker_id, started.last_seq) if started.resumed else None
        team = CompiledTeam(
            TeamSpec.model_validate(execution.team_snapshot), default_registry(), tool_settings(self.settings)
        )
        return ExecutionRun(
            team,
            request,
            RuntimeModelSource(self.context.model_runtime),
            checkpointer=self.checkpoints.saver,
            resume=resume,
            telemetry=self.context.telemetry,
        )

    async def _drive(self, active: ActiveRun, started: repository.Started) -> bool:
        """Runs one attempt and stores its events and outcome; True when the run finished (False: suspended)."""
        execution_id = active.execution_id
        run = self._execution_run(started)
        recorder = EventRecorder(
            self.context.database.sessionmaker,
            self.broadcaster,
            execution_id,
            flush_interval=self.settings.event_flush_interval_ms / 1000,
            batch_size=self.settings.event_flush_batch_size,
        )
        active.run = run
        if active.cancel_requested:
            run.cancel()
        elif self._stopping:
            run.suspend()
        log = logger.bind(attempt=started.attempt)
        log.info("execution resumed" if started.resumed else "execution started")
        try:
            await self._snapshot_models(run)
            async for event in run.events():
                await recorder.add(event)
        finally:
            outcome = run.outcome

            async def final(session: AsyncSession) -> None:
                if outcome is None:  # suspended: the process is stopping; the checkpoint resumes it
                    await repository.release(session, execution_id)
                else:
                    await repository.finish(session, execution_id, outcome)

            await asyncio.shield(recorder.close(final))
        if outcome is None:
            log.info("execution suspended; it resumes from its checkpoint")
            return False
        log.info("execution finished", status=outcome.status.value, duration_ms=outcome.duration_ms)
        return True

    async def _forget_checkpoints(self, execution_id: uuid.UUID) -> None:
        """The outcome and the event log are stored: the checkpoints have served their purpose. Done after the
        run has left the active set, so clean-up never makes a finished run look like it is still running."""
        try:
            await self.checkpoints.delete([execution_id])
        except Exception as exc:  # they go with the execution at the retention purge
            logger.warning("could not delete the checkpoints of a finished execution", error=str(exc))

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
        """Deletes finished executions older than the retention period, with their events and checkpoints."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.settings.execution_retention_days)
        async with self.context.database.sessionmaker() as session, session.begin():
            old = list(
                await session.scalars(
                    select(Execution.id).where(
                        Execution.status.not_in(UNFINISHED),
                        Execution.completed_at.is_not(None),
                        Execution.completed_at < cutoff,
                    )
                )
            )
            if not old:
                return 0, 0
            events = await session.execute(delete(ExecutionEventRow).where(ExecutionEventRow.execution_id.in_(old)))
            executions = await session.execute(delete(Execution).where(Execution.id.in_(old)))
        # After the rows: a checkpoint without its execution is never read again, the reverse would break a read.
        await self.checkpoints.delete(old)
        counts = (int(executions.rowcount or 0), int(events.rowcount or 0))  # type: ignore[attr-defined]
        logger.info("purged old executions", executions=counts[0], events=counts[1])
        return counts

    async def _purge_periodically(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                logger.exception("purging old executions failed; will retry")
            await asyncio.sleep(self.settings.purge_interval_seconds)
