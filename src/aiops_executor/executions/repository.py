"""The one owner of an execution's status: every transition of an ``executions`` row happens here.

    pending --start--> running --finish--> success | failed | timeout | cancelled
                       running --release--> running, no worker (the process stopped; resumed later)
                       running --resume--> running, attempt + 1 (its process was lost)
                       running --give_up--> failed WORKER_LOST (lost more than AIOPS_MAX_RUN_ATTEMPTS times)

The engine speaks ``RunStatus``; the API speaks ``ExecutionStatus``; ``FINAL_STATUS`` is the one mapping.
Each transition is one short transaction guarded by the status it expects, so two processes can never both
move a row (the loser sees ``None``).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from aiops_executor.core.db import utcnow
from aiops_executor.engine import RunOutcome, RunStatus
from aiops_executor.engine.events import EventType, format_timestamp
from aiops_executor.executions.models import Execution, ExecutionEventRow
from aiops_executor.executions.schemas import UNFINISHED, ExecutionStatus

WORKER_LOST = "WORKER_LOST"

FINAL_STATUS: dict[RunStatus, ExecutionStatus] = {
    RunStatus.success: ExecutionStatus.success,
    RunStatus.failed: ExecutionStatus.failed,
    RunStatus.timeout: ExecutionStatus.timeout,
    RunStatus.cancelled: ExecutionStatus.cancelled,
}


def this_worker() -> str:
    """``host:pid`` of this process, as ``worker_id`` shows it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_is_gone(worker_id: str | None) -> bool:
    """Whether the process named ``worker_id`` is certainly not running any more.

    Only a process on this host can be checked (a pid that no longer exists, or our own pid reused by this
    new process); a process on another host is presumed alive: taking over its runs is the job queue's
    lease, not a guess.
    """
    if worker_id is None:
        return True
    host, _, pid_text = worker_id.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Started:
    """What a process needs to run (or resume) an execution it has just taken."""

    execution: Execution
    attempt: int
    worker_id: str
    resumed: bool
    last_seq: int  # the last stored event; this attempt's events follow it
    elapsed_seconds: float  # running time of the earlier attempts (counts against the timeout)


def add_pending(session: AsyncSession, **columns: Any) -> Execution:
    """A new execution, ``pending`` until a process starts it (committed by the caller)."""
    execution = Execution(id=uuid.uuid4(), status=ExecutionStatus.pending.value, usage={}, attempt=1, **columns)
    session.add(execution)
    return execution


async def _last_event(session: AsyncSession, execution_id: uuid.UUID) -> tuple[int, datetime | None]:
    row = (
        await session.execute(
            select(func.max(ExecutionEventRow.seq), func.max(ExecutionEventRow.timestamp)).where(
                ExecutionEventRow.execution_id == execution_id
            )
        )
    ).one()
    return int(row[0] or 0), row[1]


async def start(
    sessionmaker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID, worker_id: str
) -> Started | None:
    """pending -> running (attempt 1), or a lost running attempt -> running (attempt + 1)."""
    async with sessionmaker() as session, session.begin():
        execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
        if execution is None or execution.status not in UNFINISHED:
            return None
        resumed = execution.status == ExecutionStatus.running.value
        if resumed and not worker_is_gone(execution.worker_id):
            return None
        attempt = execution.attempt + 1 if resumed else 1
        now = utcnow()
        started_at = execution.started_at or now
        last_seq, last_at = await _last_event(session, execution_id)
        elapsed = (last_at - started_at).total_seconds() if resumed and last_at is not None else 0.0
        execution.status = ExecutionStatus.running.value
        execution.started_at = started_at
        execution.attempt = attempt
        execution.worker_id = worker_id
        return Started(execution, attempt, worker_id, resumed, last_seq, max(0.0, elapsed))


def outcome_columns(outcome: RunOutcome) -> dict[str, Any]:
    return {
        "status": FINAL_STATUS[outcome.status].value,
        "completed_at": utcnow(),
        "duration_ms": outcome.duration_ms,
        "result": outcome.result(),
        "structured_output": outcome.structured_output,
        "usage": outcome.usage.as_dict(),
        "error_code": outcome.error_code,
        "error_message": outcome.error_message,
        "error_details": outcome.error_details or None,
        "worker_id": None,
    }


async def finish(session: AsyncSession, execution_id: uuid.UUID, outcome: RunOutcome) -> None:
    """running -> its final status, in the caller's transaction (the one writing the terminal event)."""
    await session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status.in_(UNFINISHED))
        .values(**outcome_columns(outcome))
    )


async def record_last_seq(session: AsyncSession, execution_id: uuid.UUID, seq: int) -> None:
    """The last stored event (in the transaction that stores it)."""
    await session.execute(update(Execution).where(Execution.id == execution_id).values(last_seq=seq))


async def release(session: AsyncSession, execution_id: uuid.UUID) -> None:
    """The process is stopping: the run stays ``running`` with no worker, to be resumed from its checkpoint."""
    await session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status == ExecutionStatus.running.value)
        .values(worker_id=None)
    )


async def give_up(sessionmaker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID, max_attempts: int) -> bool:
    """A run lost ``max_attempts`` times fails with WORKER_LOST, with its terminal event after the last one."""
    async with sessionmaker() as session, session.begin():
        execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
        if execution is None or execution.status != ExecutionStatus.running.value:
            return False
        if not worker_is_gone(execution.worker_id):
            return False
        last_seq, _ = await _last_event(session, execution_id)
        now = utcnow()
        seq = last_seq + 1
        message = (
            f"the process running this execution was lost {execution.attempt} times "
            f"(at most {max_attempts} attempts); it was not resumed again"
        )
        await session.execute(
            insert(ExecutionEventRow).values(
                execution_id=execution.id,
                seq=seq,
                type=EventType.execution_error.value,
                payload={
                    "execution_id": str(execution.id),
                    "team_id": str(execution.team_id),
                    "seq": seq,
                    "timestamp": format_timestamp(now),
                    "status": ExecutionStatus.failed.value,
                    "error_code": WORKER_LOST,
                    "error_message": message,
                },
                timestamp=now,
                created_at=now,
                updated_at=now,
            )
        )
        execution.status = ExecutionStatus.failed.value
        execution.error_code = WORKER_LOST
        execution.error_message = message
        execution.completed_at = now
        execution.last_seq = seq
        execution.worker_id = None
        if execution.started_at is not None:
            execution.duration_ms = int((now - execution.started_at).total_seconds() * 1000)
        return True


async def unfinished(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Execution]:
    """Executions not yet finished, oldest first (at start-up: the ones to start or resume)."""
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(Execution).where(Execution.status.in_(UNFINISHED)).order_by(Execution.created_at)
        )
        return list(rows)
