"""Runs executions in the background, independent of any HTTP request.

Two ways to share the work. On the embedded default (SQLite) this one process runs every execution: at most
``max_concurrent_executions`` at once, the rest wait as ``pending``; at start-up, runs left unfinished by a
process that is gone are started or resumed (``attempt`` + 1), or fail with WORKER_LOST after
``max_run_attempts``. On PostgreSQL runs wait in the job queue (``executions.queue``) and any process with a
worker (``serve`` unless ``--no-worker``, ``aiops-executor worker``) takes them: the job is the lease on
the run, a dead worker's jobs are reclaimed and resumed elsewhere, and a cancel reaches the run's worker
through the queue's abort.

Each run executes on the process's checkpointer and streams its events into an ``EventRecorder`` (stored,
then broadcast); it ends by writing its outcome in the same transaction as its last events. A client that
disconnects changes nothing; ``cancel`` stops a run within moments. Stopping the process (SIGTERM) suspends
runs rather than ending them (after ``worker_drain_seconds`` with a queue): they stay ``running`` with no
worker and are resumed from their checkpoints. Status transitions are the repository's
(``executions.repository``).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from procrastinate.job_context import AbortReason
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.core.logging import log_context
from aiops_executor.engine import CompiledTeam, ExecutionEvent, ExecutionRun, Resume, RunOutcome, RunRequest, RunStatus
from aiops_executor.engine.run import EXECUTION_FAILED, terminal_event
from aiops_executor.engine.team import error_message
from aiops_executor.executions import repository
from aiops_executor.executions.broadcast import Broadcaster, LocalBroadcaster
from aiops_executor.executions.checkpoints import Checkpoints
from aiops_executor.executions.compiled_teams import CompiledTeams, snapshot_key
from aiops_executor.executions.models import Execution, ExecutionEventRow
from aiops_executor.executions.queue import AbortReasonSource, QueueWorker, RunQueue
from aiops_executor.executions.schemas import UNFINISHED, ExecutionStatus
from aiops_executor.executions.store import EventRecorder
from aiops_executor.llm.runtime.model_source import RuntimeModelSource
from aiops_executor.services import ServiceContext
from aiops_executor.teams.topology import TeamSpec
from aiops_executor.tool_servers import service as tool_servers
from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import tool_settings

logger = structlog.get_logger(__name__)

# A committed ``pending`` run with no job this long after its creation lost its enqueue (its API process
# died in between); the maintenance enqueues it.
UNQUEUED_GRACE_SECONDS = 5.0
# How often ``stream: false`` requests look at a run another process executes.
WAIT_POLL_SECONDS = 0.25
# How often the embedded default looks for approvals past their deadline (the queue's upkeep does it there).
APPROVAL_SWEEP_SECONDS = 5.0
APPROVAL_TIMEOUT_ACTOR = "system:timeout"


@dataclass
class ActiveRun:
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
    # cancel or suspend: ``_drive`` applies it once the run exists. Cancelling the task there instead would
    # abandon the attempt half-recorded, its execution left running with no process holding it.

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


class ExecutionManager:
    def __init__(self, context: ServiceContext, broadcaster: Broadcaster | None = None) -> None:
        self.context = context
        self.settings = context.settings
        self.broadcaster: Broadcaster = broadcaster or self._default_broadcaster()
        self.checkpoints = Checkpoints(self.settings.resolved_database_url)
        self._compiled = CompiledTeams()
        self.worker_id = repository.this_worker()
        self.queue = (
            RunQueue(
                self.settings.resolved_database_url,
                lease_seconds=self.settings.worker_lease_seconds,
                poll_seconds=self.settings.worker_poll_seconds,
            )
            if self.settings.uses_job_queue
            else None
        )
        self._slots = asyncio.Semaphore(self.settings.max_concurrent_executions)
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
            await self.recover()
            self._background.append(asyncio.create_task(self._expire_periodically(), name="approval-deadlines"))
        else:
            await self.queue.open()
            if self.settings.embedded_worker:
                await self.maintain()
                self._worker = self.queue.worker(
                    self,
                    concurrency=self.settings.worker_concurrency,
                    name=self.worker_id,
                    drain_seconds=self.settings.worker_drain_seconds,
                )
                self._worker.start()
                if not await self._worker.registered():
                    logger.warning("the execution worker has not registered yet; it is not counted as live")
                self._background.append(asyncio.create_task(self._maintain_periodically(), name="queue-upkeep"))
        self._background.append(asyncio.create_task(self._purge_periodically(), name="execution-purge"))

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

    async def maintain(self) -> None:
        """Queue upkeep (PostgreSQL): reclaims the jobs of workers that missed their heartbeats, and enqueues
        unfinished runs that have no job (a process died between committing a run and enqueueing it)."""
        if self.queue is None:
            return
        runs, workers = await self.queue.reclaim_stalled()
        if runs:
            self.context.telemetry.metrics.reclaimed(runs, workers)
        await self.expire_approvals()
        cutoff = datetime.now(UTC) - timedelta(seconds=UNQUEUED_GRACE_SECONDS)
        for execution_id in await repository.orphaned(self.context.database.sessionmaker, cutoff):
            if await self.queue.enqueue(execution_id):
                logger.warning("queued a run that had no job", execution_id=str(execution_id))
        # Last, so that it never holds up the upkeep: a worker's /metrics has no request to read the queue in.
        self.context.telemetry.metrics.queue(await self.context.queue_status())

    async def _maintain_periodically(self) -> None:
        interval = self.settings.worker_lease_seconds / 6
        while True:
            await asyncio.sleep(interval)
            try:
                await self.maintain()
            except Exception as exc:
                logger.warning("queue upkeep failed; will retry", error=str(exc))

    # -- approvals -------------------------------------------------------------------------------

    async def decided(self, execution_id: uuid.UUID, decided: repository.Decided) -> None:
        """After a decision is committed: its event goes live, and a run none of whose calls waits any more is
        handed to whoever runs executions (the queue, or this process), to resume from its checkpoint."""
        self.broadcaster.publish(str(execution_id), decided.event)
        if decided.ready:
            await self.submit(execution_id)

    async def expire_approvals(self) -> int:
        """Rejects the calls nobody decided within ``approval_timeout_seconds``; returns how many."""
        sessionmaker = self.context.database.sessionmaker
        timeout = self.settings.approval_timeout_seconds
        expired = 0
        for execution_id, approval_id in await repository.expired_approvals(sessionmaker, datetime.now(UTC)):
            try:
                async with sessionmaker() as session, session.begin():
                    decided = await repository.decide(
                        session,
                        execution_id,
                        approval_id,
                        approve=False,
                        decided_by=APPROVAL_TIMEOUT_ACTOR,
                        comment=f"no decision within {timeout:g} s",
                    )
                    audit.record(
                        session,
                        actor=APPROVAL_TIMEOUT_ACTOR,
                        action="reject_tool_call",
                        resource_type="execution",
                        resource_id=execution_id,
                        details={"approval_id": str(approval_id), "tool": decided.approval.tool, "reason": "timeout"},
                    )
            except (repository.ApprovalNotFound, repository.ApprovalNotPending):
                continue  # decided (or cancelled) meanwhile, by someone else
            expired += 1
            logger.info("approval timed out; the call is rejected", execution_id=str(execution_id))
            await self.decided(execution_id, decided)
        return expired

    async def _expire_periodically(self) -> None:
        interval = min(APPROVAL_SWEEP_SECONDS, max(0.02, self.settings.approval_timeout_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_approvals()
            except Exception as exc:
                logger.warning("could not reject the approvals past their deadline; will retry", error=str(exc))

    async def recover(self) -> int:
        """Starts or resumes the executions a previous process left unfinished; returns how many."""
        taken = 0
        for execution in await repository.unfinished(self.context.database.sessionmaker):
            if execution.id in self._active:
                continue
            if execution.status == ExecutionStatus.running.value and not repository.worker_is_gone(execution.worker_id):
                logger.info("execution runs in another process", execution_id=str(execution.id))
                continue
            if execution.status == ExecutionStatus.awaiting_approval.value and not await repository.decided_all(
                self.context.database.sessionmaker, execution.id
            ):
                continue  # resumed when its calls are decided
            self.launch(execution.id)
            taken += 1
        if taken:
            logger.warning("resuming executions left unfinished by a previous process", count=taken)
        return taken

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

    async def cancel(self, execution_id: uuid.UUID) -> bool:
        """Cancels a run wherever it is; False when nothing was there to cancel (it finished meanwhile)."""
        active = self._active.get(execution_id)
        if active is not None:
            active.cancel()
            return True
        sessionmaker = self.context.database.sessionmaker
        waiting = await repository.cancel_awaiting(sessionmaker, execution_id)
        if waiting is not None:  # it waited for approvals, held by no process
            if self.queue is not None:
                await self.queue.cancel_waiting(execution_id)
            self.broadcaster.publish(str(execution_id), waiting)
            return True
        if self.queue is None:
            return False
        ended = await repository.cancel_unrun(sessionmaker, execution_id)
        if ended is not None:  # it had not started: its job, if any, will find it cancelled
            await self.queue.cancel_waiting(execution_id)
        elif await self.queue.abort_running(execution_id):
            return True
        else:
            # Running but held by no worker (waiting in the queue to be resumed, or its job is lost).
            await self.queue.cancel_waiting(execution_id)
            ended = await repository.cancel_released(sessionmaker, execution_id)
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
            async with self.context.database.sessionmaker() as session:
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
                started = await repository.start(
                    self.context.database.sessionmaker,
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
                    self.context.telemetry.metrics.run_started(
                        resumed=started.resumed,
                        lost=started.lost,
                        waited_seconds=(datetime.now(UTC) - created).total_seconds() if created else None,
                    )
                    with log_context(team_id=str(started.execution.team_id)):
                        active.finished = await self._drive(active, started)
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
                await self._forget_checkpoints(execution_id)

    async def _compiled_team(self, snapshot: dict[str, Any]) -> CompiledTeam:
        """A run's team with its tools; compiled once per snapshot when all are built in (``compiled_teams``)."""
        key = snapshot_key(snapshot)
        team = self._compiled.get(key)
        if team is not None:
            return team
        spec = TeamSpec.model_validate(snapshot)
        names = {tool for node in spec.topology.nodes for agent in node.agents for tool in agent.tools}
        specs = await tool_servers.run_tool_specs(
            self.context.database.sessionmaker, self.context, self.context.tool_servers, names
        )
        tools = default_registry().extended(specs) if specs else default_registry()
        team = CompiledTeam(spec, tools, tool_settings(self.settings))
        if not specs:
            self._compiled.keep(key, team)
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
            RuntimeModelSource(self.context.model_runtime),
            checkpointer=self.checkpoints.saver,
            resume=resume,
            telemetry=self.context.telemetry,
        )

    async def _drive(self, active: ActiveRun, started: repository.Started) -> bool:
        """Runs one attempt and stores its events and outcome; True when the run finished (False: suspended)."""
        execution_id = active.execution_id
        try:
            run = await self._execution_run(started)
        except Exception as exc:  # no engine will end this attempt: it ends here, with the reason
            await self._fail_unprepared(started, exc)
            return True
        recorder = EventRecorder(
            self.context.database.sessionmaker,
            self.broadcaster,
            execution_id,
            flush_interval=self.settings.event_flush_interval_ms / 1000,
            batch_size=self.settings.event_flush_batch_size,
            owner=started.worker_id,
        )
        active.run = run
        if active.cancel_requested:
            run.cancel()
        elif active.suspend_requested or self._stopping:
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
        recorder = EventRecorder(
            self.context.database.sessionmaker,
            self.broadcaster,
            execution.id,
            flush_interval=self.settings.event_flush_interval_ms / 1000,
            batch_size=self.settings.event_flush_batch_size,
            owner=started.worker_id,
        )
        await recorder.add(event)

        async def final(session: AsyncSession) -> None:
            await repository.finish(session, execution.id, outcome, started.worker_id)

        await asyncio.shield(recorder.close(final))

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
