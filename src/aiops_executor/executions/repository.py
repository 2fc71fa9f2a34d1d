"""The one owner of an execution's status: every transition of an ``executions`` row happens here.

    pending --start--> running --finish--> success | failed | timeout | cancelled
    pending --cancel_unrun--> cancelled (cancelled before any process took it)
                       running --await_approval--> awaiting_approval, no worker (tool calls wait for people)
             awaiting_approval --decide--> awaiting_approval (one call decided; ``ready`` once none waits)
             awaiting_approval --start--> running, same attempt (every call decided: resumed with the decisions)
             awaiting_approval --cancel_awaiting--> cancelled
                       running --release--> running, no worker (the process stopped; resumed later)
                       running --resume--> running, attempt + 1 (its process was lost)
                       running --give_up--> failed WORKER_LOST (lost more than AIOPS_MAX_RUN_ATTEMPTS times)
                       running --cancel_released--> cancelled (no process held it: it waited in the queue to be resumed)

The engine speaks ``RunStatus``; the API speaks ``ExecutionStatus``; ``FINAL_STATUS`` is the one mapping.
Each transition is guarded by the status it expects, so two processes can never both move a row (the loser
sees ``None``). One convention for transactions: every function works in the session it is given, inside the
caller's transaction (``async with sessionmaker() as session, session.begin():``), and never commits; the
caller keeps that transaction short.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core.db import utcnow
from aiops_executor.engine import RunOutcome, RunStatus
from aiops_executor.engine.approvals import PendingApproval, decision_value
from aiops_executor.engine.events import EventType, format_timestamp
from aiops_executor.executions.broadcast import StreamEvent
from aiops_executor.executions.models import Execution, ExecutionApproval, ExecutionEventRow
from aiops_executor.executions.schemas import UNFINISHED, ApprovalStatus, ExecutionStatus

WORKER_LOST = "WORKER_LOST"


class LeaseLost(Exception):
    """The run is no longer this process's: another worker took it over (this one missed its heartbeats for
    longer than the lease). Whatever this attempt still wanted to write is discarded."""


def _owned_by(execution_id: uuid.UUID, owner: str | None) -> list[Any]:
    conditions: list[Any] = [Execution.id == execution_id]
    if owner is not None:
        conditions.append(Execution.worker_id == owner)
    return conditions


async def _guarded(session: AsyncSession, statement: Any, execution_id: uuid.UUID, owner: str | None) -> int:
    result = cast("CursorResult[Any]", await session.execute(statement))
    changed = int(result.rowcount or 0)
    if owner is not None and changed == 0:
        raise LeaseLost(f"execution {execution_id} was taken over by another worker")
    return changed


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
    lost: bool  # resumed because the earlier attempt's process died (not because it stopped and handed it back)
    last_seq: int  # the last stored event; this attempt's events follow it
    elapsed_seconds: float  # running time of the earlier attempts (counts against the timeout)
    announced: dict[str, dict[str, Any]]  # node id -> result, of the node_complete events already stored
    # Decisions on the tool calls the run waited for, not yet handed to it (interrupt id -> decision).
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    # call id -> seq of the tool_call events already stored (the evidence of a resumed run points at them).
    tool_call_seqs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GaveUp:
    """``start`` found a run lost too many times and failed it (WORKER_LOST); its terminal event."""

    event: StreamEvent


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


async def _earlier_events(session: AsyncSession, execution_id: uuid.UUID) -> tuple[dict[str, Any], dict[str, int]]:
    """What the stored events of earlier attempts tell a resumed run: the results of the node teams they
    announced (node id -> result) and the seq of each tool call (call id -> seq, for the evidence)."""
    of_run, kind = ExecutionEventRow.execution_id == execution_id, ExecutionEventRow.type
    payloads = await session.scalars(select(ExecutionEventRow.payload).where(of_run, kind == "node_complete"))
    announced = {p["node_id"]: p["result"] for p in payloads if p.get("node_id") and isinstance(p.get("result"), dict)}
    call_id = ExecutionEventRow.payload["call_id"].as_string()
    calls = await session.execute(select(call_id, ExecutionEventRow.seq).where(of_run, kind == "tool_call"))
    return announced, {str(call): int(seq) for call, seq in calls if call}


async def start(
    session: AsyncSession,
    execution_id: uuid.UUID,
    worker_id: str,
    *,
    max_attempts: int,
    take_over: bool = False,
) -> Started | GaveUp | None:
    """pending -> running (attempt 1), or a lost running attempt -> running (attempt + 1); None when the run
    is not this process's to start (finished, or held by a live process); ``GaveUp`` when it was lost
    ``max_attempts`` times and has just failed with WORKER_LOST.

    ``take_over``: the caller holds the run's job in the queue, which only a dead worker loses, so the
    worker named in the row is gone whatever this host can tell about it.
    """
    execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
    if execution is None or execution.status not in UNFINISHED:
        return None
    if execution.status == ExecutionStatus.awaiting_approval.value:
        return await _start_decided(session, execution, worker_id)
    resumed = execution.status == ExecutionStatus.running.value
    if resumed and not take_over and not worker_is_gone(execution.worker_id):
        return None
    # A run suspended by a shutdown (no worker) was not lost: only lost attempts count.
    if resumed and execution.worker_id is not None and execution.attempt >= max_attempts:
        return GaveUp(await _give_up(session, execution, max_attempts))
    attempt = execution.attempt + 1 if resumed else 1
    now = utcnow()
    started_at = execution.started_at or now
    last_seq, last_at = await _last_event(session, execution_id)
    elapsed = _elapsed(execution, started_at, last_at) if resumed else 0.0
    announced, call_seqs = await _earlier_events(session, execution_id) if resumed else ({}, {})
    lost = resumed and execution.worker_id is not None  # read before this attempt names its own worker
    execution.status = ExecutionStatus.running.value
    execution.started_at = started_at
    execution.attempt = attempt
    execution.worker_id = worker_id
    started = Started(execution, attempt, worker_id, resumed, lost, last_seq, max(0.0, elapsed), announced)
    return replace(started, tool_call_seqs=call_seqs)


def _elapsed(execution: Execution, started_at: datetime, last_at: datetime | None) -> float:
    """Running time so far: until the last stored event, less the time spent waiting for approvals."""
    if last_at is None:
        return 0.0
    return max(0.0, (last_at - started_at).total_seconds() - (execution.waited_seconds or 0.0))


async def _pending_approvals(session: AsyncSession, execution_id: uuid.UUID) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(ExecutionApproval)
            .where(
                ExecutionApproval.execution_id == execution_id,
                ExecutionApproval.status == ApprovalStatus.pending.value,
            )
        )
        or 0
    )


async def decided_all(session: AsyncSession, execution_id: uuid.UUID) -> bool:
    """Whether no call of the run waits for a decision any more."""
    return await _pending_approvals(session, execution_id) == 0


async def _start_decided(session: AsyncSession, execution: Execution, worker_id: str) -> Started | None:
    """awaiting_approval -> running once no call waits any more; the decisions go to the run (once)."""
    if await _pending_approvals(session, execution.id):
        return None
    decided = await session.scalars(
        select(ExecutionApproval).where(
            ExecutionApproval.execution_id == execution.id,
            ExecutionApproval.delivered.is_(False),
            ExecutionApproval.status.in_((ApprovalStatus.approved.value, ApprovalStatus.rejected.value)),
        )
    )
    decisions: dict[str, dict[str, Any]] = {}
    for approval in decided:
        decision = "approve" if approval.status == ApprovalStatus.approved.value else "reject"
        decisions[approval.interrupt_id] = decision_value(decision, approval.decided_by, approval.comment)
        approval.delivered = True
    now = utcnow()
    if execution.awaiting_since is not None:
        execution.waited_seconds = (execution.waited_seconds or 0.0) + (now - execution.awaiting_since).total_seconds()
    execution.awaiting_since = None
    started_at = execution.started_at or now
    last_seq, last_at = await _last_event(session, execution.id)
    announced, call_seqs = await _earlier_events(session, execution.id)
    execution.status = ExecutionStatus.running.value
    execution.worker_id = worker_id
    return Started(
        execution,
        execution.attempt,
        worker_id,
        resumed=True,
        lost=False,
        last_seq=last_seq,
        elapsed_seconds=_elapsed(execution, started_at, last_at),
        announced=announced,
        decisions=decisions,
        tool_call_seqs=call_seqs,
    )


async def await_approval(
    session: AsyncSession,
    execution_id: uuid.UUID,
    waiting: list[PendingApproval],
    expires_at: datetime,
    owner: str | None = None,
) -> None:
    """running -> awaiting_approval with no worker, and the calls it waits for (in the caller's transaction,
    the one writing their ``approval_requested`` events)."""
    now = utcnow()
    statement = (
        update(Execution)
        .where(*_owned_by(execution_id, owner), Execution.status == ExecutionStatus.running.value)
        .values(status=ExecutionStatus.awaiting_approval.value, worker_id=None, awaiting_since=now)
    )
    await _guarded(session, statement, execution_id, owner)
    known = set(
        await session.scalars(
            select(ExecutionApproval.id).where(ExecutionApproval.id.in_([w.approval_id for w in waiting]))
        )
    )
    for item in waiting:
        if item.approval_id in known:  # asked again for the same call: it keeps its row (and decision)
            continue
        session.add(
            ExecutionApproval(
                id=item.approval_id,
                execution_id=execution_id,
                interrupt_id=item.interrupt_id,
                tool=item.tool[:200],
                input=item.input,
                node_id=item.node_id,
                agent_id=item.agent_id,
                status=ApprovalStatus.pending.value,
                expires_at=expires_at,
                delivered=False,
            )
        )


class ApprovalNotFound(Exception):
    pass


class ApprovalNotPending(Exception):
    """The call was decided already, or its run is not waiting (any more)."""

    def __init__(self, status: str, execution_status: str) -> None:
        super().__init__(status)
        self.status = status
        self.execution_status = execution_status


@dataclass(frozen=True)
class Decided:
    approval: ExecutionApproval
    event: StreamEvent  # its ``approval_resolved`` event, stored
    ready: bool  # no call of the run waits any more: it can be resumed


async def decide(
    session: AsyncSession,
    execution_id: uuid.UUID,
    approval_id: uuid.UUID,
    *,
    approve: bool,
    decided_by: str,
    comment: str | None,
) -> Decided:
    """A waiting call approved or rejected, with its ``approval_resolved`` event, in the caller's transaction."""
    execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
    approval = await session.get(ExecutionApproval, approval_id, populate_existing=True, with_for_update=True)
    if execution is None or approval is None or approval.execution_id != execution_id:
        raise ApprovalNotFound(str(approval_id))
    if approval.status != ApprovalStatus.pending.value or execution.status != ExecutionStatus.awaiting_approval.value:
        raise ApprovalNotPending(approval.status, execution.status)
    approval.status = (ApprovalStatus.approved if approve else ApprovalStatus.rejected).value
    approval.decided_by = decided_by
    approval.comment = comment
    approval.decided_at = utcnow()
    await session.flush()
    event = await _append_event(
        session,
        execution,
        EventType.approval_resolved,
        {
            "approval_id": str(approval.id),
            "decision": "approve" if approve else "reject",
            "decided_by": decided_by,
            "comment": comment,
            "tool": approval.tool,
        },
        node_id=approval.node_id,
        agent_id=approval.agent_id,
    )
    return Decided(approval, event, ready=await _pending_approvals(session, execution_id) == 0)


async def expired_approvals(session: AsyncSession, now: datetime) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(execution id, approval id) of the calls that waited past their deadline, oldest first."""
    rows = await session.execute(
        select(ExecutionApproval.execution_id, ExecutionApproval.id)
        .where(ExecutionApproval.status == ApprovalStatus.pending.value, ExecutionApproval.expires_at <= now)
        .order_by(ExecutionApproval.expires_at)
    )
    return [(row[0], row[1]) for row in rows]


async def cancel_awaiting(session: AsyncSession, execution_id: uuid.UUID) -> StreamEvent | None:
    """awaiting_approval -> cancelled (no process holds it); the calls it waited for are cancelled too."""
    execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
    if execution is None or execution.status != ExecutionStatus.awaiting_approval.value:
        return None
    await session.execute(
        update(ExecutionApproval)
        .where(
            ExecutionApproval.execution_id == execution_id,
            ExecutionApproval.status == ApprovalStatus.pending.value,
        )
        .values(status=ApprovalStatus.cancelled.value, decided_at=utcnow())
    )
    return await _cancelled(session, execution)


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


# The writes of a running attempt name their ``owner`` (its worker id): once another worker has taken the run
# over they match no row and raise ``LeaseLost``, so a process that only looked dead can never write over the
# attempt that replaced it (a fencing token).


async def finish(session: AsyncSession, execution_id: uuid.UUID, outcome: RunOutcome, owner: str | None = None) -> None:
    """running -> its final status, in the caller's transaction (the one writing the terminal event)."""
    statement = (
        update(Execution)
        .where(*_owned_by(execution_id, owner), Execution.status.in_(UNFINISHED))
        .values(**outcome_columns(outcome))
    )
    await _guarded(session, statement, execution_id, owner)


async def record_last_seq(session: AsyncSession, execution_id: uuid.UUID, seq: int, owner: str | None = None) -> None:
    """The last stored event (in the transaction that stores it)."""
    statement = update(Execution).where(*_owned_by(execution_id, owner)).values(last_seq=seq)
    await _guarded(session, statement, execution_id, owner)


async def release(session: AsyncSession, execution_id: uuid.UUID, owner: str | None = None) -> None:
    """The process is stopping: the run stays ``running`` with no worker, to be resumed from its checkpoint."""
    statement = (
        update(Execution)
        .where(*_owned_by(execution_id, owner), Execution.status == ExecutionStatus.running.value)
        .values(worker_id=None)
    )
    await _guarded(session, statement, execution_id, owner)


async def _give_up(session: AsyncSession, execution: Execution, max_attempts: int) -> StreamEvent:
    message = (
        f"the process running this execution was lost {execution.attempt} times "
        f"(at most {max_attempts} attempts); it was not resumed again"
    )
    return await _end_unrun(
        session,
        execution,
        ExecutionStatus.failed,
        EventType.execution_error,
        {"status": ExecutionStatus.failed.value, "error_code": WORKER_LOST, "error_message": message},
        error_code=WORKER_LOST,
        error_message=message,
    )


async def cancel_unrun(session: AsyncSession, execution_id: uuid.UUID) -> StreamEvent | None:
    """pending -> cancelled, before any process started it; returns the terminal event (to publish). None when
    it is not pending any more (a process took it meanwhile: cancel the running run instead)."""
    return await _cancel_unrun(session, execution_id, ExecutionStatus.pending)


async def cancel_released(session: AsyncSession, execution_id: uuid.UUID) -> StreamEvent | None:
    """Cancels a ``running`` run whose job the caller has just cancelled in the queue (it waited there to be
    resumed, so no process runs it)."""
    return await _cancel_unrun(session, execution_id, ExecutionStatus.running)


async def _cancel_unrun(
    session: AsyncSession, execution_id: uuid.UUID, expected: ExecutionStatus
) -> StreamEvent | None:
    execution = await session.get(Execution, execution_id, populate_existing=True, with_for_update=True)
    if execution is None or execution.status != expected.value:
        return None
    return await _cancelled(session, execution)


async def _cancelled(session: AsyncSession, execution: Execution) -> StreamEvent:
    return await _end_unrun(
        session,
        execution,
        ExecutionStatus.cancelled,
        EventType.execution_cancelled,
        {"status": ExecutionStatus.cancelled.value},
        error_code=None,
        error_message=None,
    )


async def _end_unrun(
    session: AsyncSession,
    execution: Execution,
    status: ExecutionStatus,
    event: EventType,
    fields: dict[str, Any],
    *,
    error_code: str | None,
    error_message: str | None,
) -> StreamEvent:
    """Ends a run that no process is running, with its terminal event after the last stored one."""
    stored = await _append_event(session, execution, event, fields)
    now = utcnow()
    execution.status = status.value
    execution.error_code = error_code
    execution.error_message = error_message
    execution.completed_at = now
    execution.worker_id = None
    execution.awaiting_since = None
    execution.started_at = execution.started_at or now
    execution.duration_ms = int((now - execution.started_at).total_seconds() * 1000)
    return stored


async def _append_event(
    session: AsyncSession,
    execution: Execution,
    event: EventType,
    fields: dict[str, Any],
    *,
    node_id: str | None = None,
    agent_id: str | None = None,
) -> StreamEvent:
    """An event after the last stored one, for a run no process is running (so none writes events)."""
    last_seq, _ = await _last_event(session, execution.id)
    now = utcnow()
    seq = last_seq + 1
    payload: dict[str, Any] = {
        "execution_id": str(execution.id),
        "team_id": str(execution.team_id),
        "seq": seq,
        "timestamp": format_timestamp(now),
    }
    if node_id is not None:
        payload["node_id"] = node_id
    if agent_id is not None:
        payload["agent_id"] = agent_id
    payload.update(fields)
    await session.execute(
        insert(ExecutionEventRow).values(
            execution_id=execution.id,
            seq=seq,
            type=event.value,
            payload=payload,
            timestamp=now,
            created_at=now,
            updated_at=now,
        )
    )
    execution.last_seq = seq
    return StreamEvent(seq, event.value, payload)


async def unfinished(session: AsyncSession) -> list[Execution]:
    """Executions not yet finished, oldest first (at start-up: the ones to start or resume)."""
    rows = await session.scalars(
        select(Execution).where(Execution.status.in_(UNFINISHED)).order_by(Execution.created_at)
    )
    return list(rows)
