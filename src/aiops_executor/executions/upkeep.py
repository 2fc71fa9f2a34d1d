"""What keeps executions moving when nobody asks: recovery at start-up, the queue's upkeep, approvals past their
deadline, and the retention purge -- each once, and as a loop the manager starts.

Upkeep never runs a run itself: it hands runs to the manager (``Runs``), which decides where they run.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.audit import service as audit
from aiops_executor.core.metrics import Metrics
from aiops_executor.core.settings import Settings
from aiops_executor.executions import repository
from aiops_executor.executions.checkpoints import Checkpoints
from aiops_executor.executions.models import Execution, ExecutionEventRow
from aiops_executor.executions.queue import RunQueue
from aiops_executor.executions.schemas import UNFINISHED, ExecutionStatus
from aiops_executor.spend import repository as spend_repository

logger = structlog.get_logger(__name__)

# A committed ``pending`` run with no job this long after its creation lost its enqueue (its API process
# died in between); the upkeep enqueues it.
UNQUEUED_GRACE_SECONDS = 5.0
# How often the embedded default looks for approvals past their deadline (the queue's upkeep does it there).
APPROVAL_SWEEP_SECONDS = 5.0
APPROVAL_TIMEOUT_ACTOR = "system:timeout"


class Runs(Protocol):
    """The manager, as upkeep sees it."""

    def holds(self, execution_id: uuid.UUID) -> bool: ...

    def launch(self, execution_id: uuid.UUID) -> object: ...

    def after_decision(self, execution_id: uuid.UUID, decided: repository.Decided) -> Awaitable[None]: ...


class Upkeep:
    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        metrics: Metrics,
        checkpoints: Checkpoints,
        queue: RunQueue | None,
        runs: Runs,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.queue = queue
        self.runs = runs

    # -- once ------------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Starts or resumes the executions a previous process left unfinished (embedded default, no queue);
        returns how many."""
        async with self.sessionmaker() as session:
            unfinished = await repository.unfinished(session)
        taken = 0
        for execution in unfinished:
            if self.runs.holds(execution.id):
                continue
            if execution.status == ExecutionStatus.running.value and not repository.worker_is_gone(execution.worker_id):
                logger.info("execution runs in another process", execution_id=str(execution.id))
                continue
            if execution.status == ExecutionStatus.awaiting_approval.value:
                async with self.sessionmaker() as session:
                    if not await repository.decided_all(session, execution.id):
                        continue  # resumed when its calls are decided
            self.runs.launch(execution.id)
            taken += 1
        if taken:
            logger.warning("resuming executions left unfinished by a previous process", count=taken)
        return taken

    async def maintain(self) -> None:
        """Queue upkeep (PostgreSQL): reclaims the jobs of workers that missed their heartbeats, and enqueues
        unfinished runs that have no job (a process died between committing a run and enqueueing it)."""
        if self.queue is None:
            return
        runs, workers = await self.queue.reclaim_stalled()
        if runs:
            self.metrics.reclaimed(runs, workers)
        await self.expire_approvals()
        cutoff = datetime.now(UTC) - timedelta(seconds=UNQUEUED_GRACE_SECONDS)
        for execution_id in await self.queue.orphaned(cutoff):
            if await self.queue.enqueue(execution_id):
                logger.warning("queued a run that had no job", execution_id=str(execution_id))
        # Last, so that it never holds up the upkeep: a worker's /metrics has no request to read the queue in.
        self.metrics.queue(await self.queue.status())

    async def expire_approvals(self) -> int:
        """Rejects the calls nobody decided within ``approval_timeout_seconds``; returns how many."""
        timeout = self.settings.approval_timeout_seconds
        async with self.sessionmaker() as session:
            expired_calls = await repository.expired_approvals(session, datetime.now(UTC))
        expired = 0
        for execution_id, approval_id in expired_calls:
            try:
                async with self.sessionmaker() as session, session.begin():
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
            await self.runs.after_decision(execution_id, decided)
        return expired

    async def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Deletes finished executions older than the retention period, with their events and checkpoints; and
        the budget holds of calls whose process died before counting them (they stopped counting at expiry)."""
        now = now or datetime.now(UTC)
        cutoff = now - timedelta(days=self.settings.execution_retention_days)
        async with self.sessionmaker() as session, session.begin():
            await spend_repository.purge_expired_holds(session, now)
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

    # -- loops -----------------------------------------------------------------------------------

    async def maintain_periodically(self) -> None:
        await _every(self.settings.worker_lease_seconds / 6, self.maintain, "queue upkeep failed; will retry")

    async def expire_periodically(self) -> None:
        interval = min(APPROVAL_SWEEP_SECONDS, max(0.02, self.settings.approval_timeout_seconds / 4))
        await _every(interval, self.expire_approvals, "could not reject the approvals past their deadline; will retry")

    async def purge_periodically(self) -> None:
        while True:
            try:
                await self.purge()
            except Exception:
                logger.exception("purging old executions failed; will retry")
            await asyncio.sleep(self.settings.purge_interval_seconds)


async def _every(interval: float, work: Callable[[], Awaitable[object]], failure: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await work()
        except Exception as exc:
            logger.warning(failure, error=str(exc))
