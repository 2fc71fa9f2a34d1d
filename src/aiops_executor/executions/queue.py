"""The job queue executions wait in when several processes share the work: procrastinate, on PostgreSQL.

One job per run (attempt), locked by the execution id: procrastinate never runs two jobs with the same lock at
once, so the worker holding the job owns the run — that is the lease. Workers heartbeat (procrastinate's
``procrastinate_workers``); a worker that misses heartbeats for ``AIOPS_WORKER_LEASE_SECONDS`` is presumed
dead, and ``reclaim_stalled`` puts its jobs back in the queue, where another worker resumes the runs from
their checkpoints. The API process commits an execution, then enqueues its job; a process that dies in
between leaves a committed ``pending`` row with no job, which ``RunQueue.orphaned`` finds and
the workers' maintenance enqueues (``queueing_lock`` keeps a run from waiting twice).

Cancel: a job still waiting is cancelled in the queue; a running one gets procrastinate's abort, which its
worker hears at once (LISTEN/NOTIFY, with polling as a fallback) and turns into a cancelled run.
The schema is procrastinate's own, created by migration 0005.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import structlog
from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.job_context import AbortReason, JobContext
from procrastinate.jobs import Status
from procrastinate.worker import Worker

from aiops_executor.core import request_context
from aiops_executor.executions.checkpoints import postgres_conninfo

logger = structlog.get_logger(__name__)

QUEUE = "executions"
RUN_TASK = "aiops.run_execution"
POOL_MAX_SIZE = 10
HELD = (Status.TODO.value, Status.DOING.value)

AbortReasonSource = Callable[[], AbortReason | None]

ORPHANED = """
    SELECT e.id FROM executions e
    WHERE (e.status = 'running' OR (e.status = 'pending' AND e.created_at < %(pending_before)s)
           OR (e.status = 'awaiting_approval' AND NOT EXISTS (
                 SELECT 1 FROM execution_approvals a WHERE a.execution_id = e.id AND a.status = 'pending')))
      AND NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs j WHERE j.lock = CAST(e.id AS TEXT) AND j.status IN ('todo', 'doing')
      )
    ORDER BY e.created_at
"""


class JobRunner(Protocol):
    """Runs the execution a job names; returns when the run finished, was cancelled or was handed back."""

    def run_job(self, execution_id: uuid.UUID, abort_reason: AbortReasonSource) -> Awaitable[None]: ...


async def run_execution(context: JobContext, execution_id: str, origin: dict[str, str] | None = None) -> None:
    runner: JobRunner = context.additional_context["runner"]
    # The request that started the run (its id in the logs, its trace linked from the run's) is in another process.
    with request_context.from_origin(origin):
        await runner.run_job(uuid.UUID(execution_id), context.abort_reason)


class RunQueue:
    """procrastinate's app for this process: enqueue, cancel, inspect, and run a worker."""

    def __init__(self, database_url: str, *, lease_seconds: float, poll_seconds: float = 1.0) -> None:
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.app = App(
            connector=PsycopgConnector(conninfo=postgres_conninfo(database_url), min_size=1, max_size=POOL_MAX_SIZE)
        )
        self._task = self.app.task(name=RUN_TASK, queue=QUEUE, pass_context=True)(run_execution)
        self._open = False

    async def open(self) -> None:
        if not self._open:
            await self.app.open_async()
            self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self.app.close_async()

    async def enqueue(self, execution_id: uuid.UUID) -> bool:
        """Queues a job for the run; False when one is already waiting (the run is not queued twice)."""
        key = str(execution_id)
        try:
            origin: dict[str, Any] = dict(request_context.origin())
            await self._task.configure(lock=key, queueing_lock=key).defer_async(execution_id=key, origin=origin)
        except AlreadyEnqueued:
            return False
        return True

    async def jobs(self, execution_id: uuid.UUID) -> list[tuple[int, str]]:
        """``(job id, status)`` of the run's jobs that are waiting or running."""
        found = await self.app.job_manager.list_jobs_async(lock=str(execution_id), queue=QUEUE)
        return [(job.id, job.status) for job in found if job.id is not None and job.status in HELD]

    async def cancel_waiting(self, execution_id: uuid.UUID) -> bool:
        """Cancels the run's waiting jobs; True when one was (no worker will take it any more)."""
        cancelled = False
        for job_id, status in await self.jobs(execution_id):
            if status == Status.TODO.value:
                cancelled |= await self.app.job_manager.cancel_job_by_id_async(job_id, delete_job=True)
        return cancelled

    async def abort_running(self, execution_id: uuid.UUID) -> bool:
        """Asks the worker running the run to cancel it; True when a running job was found."""
        requested = False
        for job_id, status in await self.jobs(execution_id):
            if status == Status.DOING.value:
                requested |= await self.app.job_manager.cancel_job_by_id_async(job_id, abort=True)
        return requested

    async def depth(self) -> int:
        """Runs waiting for a worker."""
        row = await self.app.connector.execute_query_one_async(
            "SELECT count(*) AS waiting FROM procrastinate_jobs WHERE queue_name = %(queue)s AND status = 'todo'",
            queue=QUEUE,
        )
        return int(row["waiting"])

    async def live_workers(self) -> int:
        """Workers whose last heartbeat is within the lease."""
        row = await self.app.connector.execute_query_one_async(
            "SELECT count(*) AS live FROM procrastinate_workers "
            "WHERE last_heartbeat > now() - make_interval(secs => %(lease)s)",
            lease=self.lease_seconds,
        )
        return int(row["live"])

    async def status(self) -> dict[str, int]:
        """What health and metrics report of the queue: runs waiting, live workers."""
        depth, workers = await asyncio.gather(self.depth(), self.live_workers())
        return {"depth": depth, "live_workers": workers}

    async def orphaned(self, pending_before: datetime) -> list[uuid.UUID]:
        """Unfinished runs with no job in the queue: a process died between committing a run and enqueueing it
        (``pending`` rows older than ``pending_before``), or a run's job ended without its run."""
        rows = await self.app.connector.execute_query_all_async(ORPHANED, pending_before=pending_before)
        return [uuid.UUID(str(row["id"])) for row in rows]

    async def reclaim_stalled(self) -> tuple[int, int]:
        """Puts the running jobs of workers that missed their heartbeats back in the queue; returns how many
        jobs, and of how many workers (a worker already pruned from procrastinate's table counts once)."""
        reclaimed = 0
        workers: set[int | None] = set()
        stalled = await self.app.job_manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=self.lease_seconds)
        for job in stalled:
            try:
                if not await self._drop_superseded(job.id, job.worker_id):
                    await self.app.job_manager.retry_job(job)
            except Exception as exc:  # another worker reclaimed it first
                logger.info("stalled job already reclaimed", job_id=job.id, error=str(exc))
                continue
            reclaimed += 1
            workers.add(job.worker_id)
            logger.warning("took over the run of a lost worker", execution_id=job.task_kwargs.get("execution_id"))
        return reclaimed, len(workers)

    async def _drop_superseded(self, job_id: int | None, worker_id: int | None) -> bool:
        """Deletes a lost worker's job when its run already waits in a newer one; True when it did.

        A worker can die after it wrote the run's new status (awaiting approval) but before procrastinate marked
        the job finished; the decision then queues a new job for the run. That one cannot start while the old
        job holds the lock, and the old job cannot go back to the queue while the new one holds the queueing
        lock: without this, the run would wait forever. Only a job still held by the lost worker is deleted
        (not one that another process already put back or started)."""
        rows = await self.app.connector.execute_query_all_async(
            "DELETE FROM procrastinate_jobs AS stalled WHERE stalled.id = %(job_id)s AND stalled.status = 'doing' "
            "AND stalled.worker_id IS NOT DISTINCT FROM %(worker_id)s AND EXISTS (SELECT 1 FROM procrastinate_jobs "
            "AS newer WHERE newer.queueing_lock = stalled.queueing_lock AND newer.status = 'todo' "
            "AND newer.id <> stalled.id) RETURNING stalled.id",
            job_id=job_id,
            worker_id=worker_id,
        )
        return bool(rows)

    def worker(self, runner: JobRunner, *, concurrency: int, name: str, drain_seconds: float) -> QueueWorker:
        """A worker taking jobs until ``QueueWorker.stop``: then it takes no new one, lets the running ones go on
        for ``drain_seconds`` and aborts the rest (the runner hands them back)."""
        options: dict[str, Any] = {
            "queues": [QUEUE],
            "name": name,
            "concurrency": concurrency,
            "wait": True,
            "install_signal_handlers": False,
            "listen_notify": True,
            "abort_job_polling_interval": self.poll_seconds,
            "fetch_job_polling_interval": self.poll_seconds,
            "shutdown_graceful_timeout": drain_seconds,
            "update_heartbeat_interval": self.lease_seconds / 3,
            "stalled_worker_timeout": self.lease_seconds,
            "delete_jobs": "always",
            "additional_context": {"runner": runner},
        }
        return QueueWorker(Worker(self.app, **options))


# How long ``QueueWorker.stop`` lets a worker that is still starting finish registering.
REGISTRATION_SECONDS = 5.0


class QueueWorker:
    """procrastinate's worker, stopped gracefully: its registration row is removed on the way out (a worker
    cancelled while registering would stay listed, looking alive, until its heartbeat aged past the lease)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._worker.run(), name="execution-worker")  # type: ignore[no-untyped-call]

    async def registered(self) -> bool:
        """Waits (up to REGISTRATION_SECONDS) until the worker is listed among the live ones; returns whether
        it is. A process that has started its worker says so only then: its readiness counts it."""
        task = self._task
        if task is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REGISTRATION_SECONDS
        # procrastinate offers no event for "registered"; its worker id appears once it is.
        while self._worker.worker_id is None and not task.done() and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        return self._worker.worker_id is not None

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        if await self.registered():
            self._worker.stop()  # type: ignore[no-untyped-call]  # graceful: drain, abort the rest, unregister
        else:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
