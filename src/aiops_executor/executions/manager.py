"""Runs executions in the background, independent of any HTTP request.

Two ways to share the work. On the embedded default (SQLite) this one process runs every execution: at most
``max_concurrent_executions`` at once, the rest wait as ``pending``; at start-up, runs left unfinished by a
process that is gone are started or resumed (``attempt`` + 1), or fail with WORKER_LOST after
``max_run_attempts``. On PostgreSQL runs wait in the job queue (``executions.queue``) and any process with a
worker (``serve`` unless ``--no-worker``, ``aiops-executor worker``) takes them: the job is the lease on
the run, a dead worker's jobs are reclaimed and resumed elsewhere, and a cancel reaches the run's worker
through the queue's abort.

The manager admits, submits, cancels and waits for runs, and holds the ones this process runs (a slot each);
running one attempt is ``executions.runner``'s, and recovery, queue upkeep, approval deadlines and the
retention purge are ``executions.upkeep``'s. A client that disconnects changes nothing; ``cancel`` stops a
run within moments. Stopping the process (SIGTERM) suspends
runs rather than ending them (after ``worker_drain_seconds`` with a queue): they stay ``running`` with no
worker and are resumed from their checkpoints. Status transitions are the repository's
(``executions.repository``).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import structlog
from procrastinate.job_context import AbortReason
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.core.logging import log_context
from aiops_executor.core.settings import Settings
from aiops_executor.core.telemetry import Telemetry
from aiops_executor.executions import repository
from aiops_executor.executions.broadcast import Broadcaster, LocalBroadcaster
from aiops_executor.executions.checkpoints import Checkpoints
from aiops_executor.executions.models import Execution
from aiops_executor.executions.queue import AbortReasonSource, QueueWorker, RunQueue
from aiops_executor.executions.runner import ActiveRun, AttemptRunner, ServerTools
from aiops_executor.executions.schemas import UNFINISHED, ExecutionStatus
from aiops_executor.executions.upkeep import Upkeep
from aiops_executor.llm.runtime.service import ModelRuntime
from aiops_executor.spend.ledger import SpendLedger

logger = structlog.get_logger(__name__)

# How often ``stream: false`` requests look at a run another process executes.
WAIT_POLL_SECONDS = 0.25


class ExecutionManager:
    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        telemetry: Telemetry,
        model_runtime: ModelRuntime,
        server_tools: ServerTools,
        broadcaster: Broadcaster | None = None,
        spend: SpendLedger | None = None,
    ) -> None:
        self.settings = settings
        # Budgets a run must fit in to start (None: none are kept, e.g. a bare manager in tests).
        self.spend = spend
        self.sessionmaker = sessionmaker
        self.metrics = telemetry.metrics
        self.broadcaster: Broadcaster = broadcaster or self._default_broadcaster()
        self.checkpoints = Checkpoints(settings.resolved_database_url)
        self.worker_id = repository.this_worker()
        self.queue = (
            RunQueue(
                settings.resolved_database_url,
                lease_seconds=settings.worker_lease_seconds,
                poll_seconds=settings.worker_poll_seconds,
            )
            if settings.uses_job_queue
            else None
        )
        self.runner = AttemptRunner(
            sessionmaker=self.sessionmaker,
            broadcaster=self.broadcaster,
            checkpoints=self.checkpoints,
            settings=settings,
            telemetry=telemetry,
            model_runtime=model_runtime,
            server_tools=server_tools,
        )
        self.upkeep = Upkeep(
            sessionmaker=self.sessionmaker,
            settings=settings,
            metrics=self.metrics,
            checkpoints=self.checkpoints,
            queue=self.queue,
            runs=self,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrent_executions)
        self._active: dict[uuid.UUID, ActiveRun] = {}
        # Serialises "is this team already running?" with creating the execution, within this process.
        self.admission = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []
        self._worker: QueueWorker | None = None
        self._stopping = False

    def _default_broadcaster(self) -> Broadcaster:
        # Across processes only where several can share the work: PostgreSQL (the queue) plus Redis.
        if self.settings.uses_job_queue and self.settings.redis_url:
            from aiops_executor.executions.broadcast_redis import RedisBroadcaster

            return RedisBroadcaster(self.settings.redis_url)
        return LocalBroadcaster()

    # -- lifecycle of the manager ----------------------------------------------------------------

    async def start(self) -> None:
        await self.checkpoints.open()
        if self.queue is None:
            await self.upkeep.recover()
            self._background.append(asyncio.create_task(self.upkeep.expire_periodically(), name="approval-deadlines"))
        else:
            await self.queue.open()
            if self.settings.embedded_worker:
                await self.upkeep.maintain()
                self._worker = self.queue.worker(
                    self,
                    concurrency=self.settings.worker_concurrency,
                    name=self.worker_id,
                    drain_seconds=self.settings.worker_drain_seconds,
                )
                self._worker.start()
                if not await self._worker.registered():
                    logger.warning("the execution worker has not registered yet; it is not counted as live")
                self._background.append(asyncio.create_task(self.upkeep.maintain_periodically(), name="queue-upkeep"))
        self._background.append(asyncio.create_task(self.upkeep.purge_periodically(), name="execution-purge"))

    async def stop(self) -> None:
        """Takes no new run; lets runs go on for ``worker_drain_seconds`` (with a queue), then suspends them
        (checkpointed, resumable: handed back to the queue) and ends live streams with a hint to re-attach."""
        self._stopping = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._worker is not None:
            # procrastinate's graceful stop: no new job, the drain, then an abort (shutdown) of the rest.
            await self._worker.stop()
        # Until none is left: a run launched while the others were being suspended (a submission that was under
        # way) must not go on writing once the checkpointer and the database are closed.
        while runs := [a for a in self._active.values() if a.task is not None and not a.task.done()]:
            for active in runs:
                active.suspend()
            await asyncio.gather(*(a.task for a in runs if a.task is not None), return_exceptions=True)
        self.broadcaster.shutdown()
        await self.broadcaster.close()
        await self.checkpoints.close()
        if self.queue is not None:
            await self.queue.close()

    # -- approvals -------------------------------------------------------------------------------

    async def after_decision(self, execution_id: uuid.UUID, decided: repository.Decided) -> None:
        """After a decision is committed: its event goes live, and a run none of whose calls waits any more is
        handed to whoever runs executions (the queue, or this process), to resume from its checkpoint."""
        self.broadcaster.publish(str(execution_id), decided.event)
        if decided.ready:
            await self.submit(execution_id)

    # -- runs ------------------------------------------------------------------------------------

    async def submit(self, execution_id: uuid.UUID) -> None:
        """Hands a committed ``pending`` execution to whoever runs executions: the queue, or this process."""
        if self.queue is None:
            self.launch(execution_id)
            return
        try:
            await self.queue.enqueue(execution_id)
        except Exception as exc:  # committed: the queue upkeep enqueues it once the queue answers again
            logger.warning("could not enqueue the execution; it will be queued later", error=str(exc))

    def launch(self, execution_id: uuid.UUID, *, take_over: bool = False) -> ActiveRun:
        """Starts (or resumes) a committed unfinished execution in the background of this process."""
        existing = self._active.get(execution_id)
        if existing is not None:
            return existing
        active = ActiveRun(execution_id)
        self._active[execution_id] = active
        self.broadcaster.open(str(execution_id))
        active.task = asyncio.create_task(self._run(active, take_over), name=f"execution-{execution_id}")
        return active

    async def run_job(self, execution_id: uuid.UUID, abort_reason: AbortReasonSource) -> None:
        """Runs the execution of a job this process's worker took from the queue (``queue.JobRunner``).

        Holding the job, the process owns the run. An abort asked by a user cancels the run; a worker
        shutdown suspends it and hands it back to the queue, where a worker resumes it from its checkpoint.
        """
        active = self.launch(execution_id, take_over=True)
        try:
            await asyncio.shield(active.done.wait())
            return
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # handled here: the run ends (or is suspended) cleanly first
            if abort_reason() is AbortReason.USER_REQUEST:
                active.cancel()
            else:
                active.suspend()
            await active.done.wait()
        if active.suspended and self.queue is not None:
            await self.queue.enqueue(execution_id)
            logger.info("handed the execution back to the queue", execution_id=str(execution_id))

    def active(self, execution_id: uuid.UUID) -> ActiveRun | None:
        return self._active.get(execution_id)

    def holds(self, execution_id: uuid.UUID) -> bool:
        """Whether this process holds the run (waiting for a slot or running)."""
        return execution_id in self._active

    async def cancel(self, execution_id: uuid.UUID) -> bool:
        """Cancels a run wherever it is; False when nothing was there to cancel (it finished meanwhile)."""
        active = self._active.get(execution_id)
        if active is not None:
            active.cancel()
            return True
        async with self.sessionmaker() as session, session.begin():
            waiting = await repository.cancel_awaiting(session, execution_id)
        if waiting is not None:  # it waited for approvals, held by no process
            if self.queue is not None:
                await self.queue.cancel_waiting(execution_id)
            self.broadcaster.publish(str(execution_id), waiting)
            return True
        if self.queue is None:
            return False
        async with self.sessionmaker() as session, session.begin():
            ended = await repository.cancel_unrun(session, execution_id)
        if ended is not None:  # it had not started: its job, if any, will find it cancelled
            await self.queue.cancel_waiting(execution_id)
        elif await self.queue.abort_running(execution_id):
            return True
        else:
            # Running but held by no worker (waiting in the queue to be resumed, or its job is lost).
            await self.queue.cancel_waiting(execution_id)
            async with self.sessionmaker() as session, session.begin():
                ended = await repository.cancel_released(session, execution_id)
        if ended is None:
            return False
        self.broadcaster.publish(str(execution_id), ended)
        return True

    async def wait(self, execution_id: uuid.UUID) -> None:
        """Returns once the execution has finished, or stopped to wait for approvals."""
        active = self._active.get(execution_id)
        if active is not None and self.queue is None:
            await active.done.wait()
            return
        while True:
            async with self.sessionmaker() as session:
                row = await session.get(Execution, execution_id)
                if row is None or row.status not in UNFINISHED or row.status == ExecutionStatus.awaiting_approval:
                    return
            await asyncio.sleep(WAIT_POLL_SECONDS)

    def running_count(self) -> int:
        return sum(1 for a in self._active.values() if a.run is not None)

    async def _run(self, active: ActiveRun, take_over: bool) -> None:
        execution_id = active.execution_id
        # Every log line of the run (engine, tools, model calls) carries its id; unbound on the way out.
        with log_context(execution_id=str(execution_id)):
            holding_slot = False
            try:
                try:
                    await self._slots.acquire()
                    holding_slot = True
                    active.waiting_for_slot = False
                except asyncio.CancelledError:
                    active.waiting_for_slot = False
                    if active.suspend_requested or self._stopping:
                        active.suspended = True
                        return  # stays pending; a later process (or worker) starts it
                    active.cancel_requested = True  # cancelled while pending: record its start and end
                if self._stopping and not active.cancel_requested:
                    active.suspended = True
                    return  # the process is stopping: it stays as it is, for the next process (or worker)
                async with self.sessionmaker() as session, session.begin():
                    started = await repository.start(
                        session,
                        execution_id,
                        self.worker_id,
                        max_attempts=self.settings.max_run_attempts,
                        take_over=take_over,
                    )
                if isinstance(started, repository.GaveUp):
                    logger.warning("execution lost too many times; failed")
                    self.broadcaster.publish(str(execution_id), started.event)
                    active.finished = True
                elif started is None:
                    logger.info("execution already taken or finished")
                else:
                    created = started.execution.created_at
                    self.metrics.run_started(
                        resumed=started.resumed,
                        lost=started.lost,
                        waited_seconds=(datetime.now(UTC) - created).total_seconds() if created else None,
                    )
                    with log_context(team_id=str(started.execution.team_id)):
                        active.finished = await self.runner.run(active, started, stopping=self._stopping)
                    active.suspended = not active.finished and not active.awaiting
            except Exception:
                logger.exception("execution could not be run")
            finally:
                if holding_slot:
                    self._slots.release()
                self.broadcaster.finish(str(execution_id))
                self._active.pop(execution_id, None)
                active.done.set()
            if active.finished:
                await self.runner.forget_checkpoints(execution_id)
