"""Running a compiled team: the event stream, checkpoints, resume, timeout, cancellation and the outcome.

Every run executes on a LangGraph checkpointer with ``thread_id = execution_id`` (the caller's, or an
in-memory one), in ``sync`` durability: each finished step is stored before the next begins, so a run
whose process died continues from its last finished step when it is started again with ``resume``.

The graph runs in a task of its own and hands its events over a queue, so a timeout or a cancel stops it
at once (the cancellation reaches in-flight model and tool calls) while the consumer still receives
every event emitted so far, then exactly one terminal event. The outcome is read from the checkpointed
state, so a run stopped early still returns what its finished node teams found.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, StateSnapshot, StreamMode

from aiops_executor.core.telemetry import Telemetry, default_telemetry
from aiops_executor.core.text import shorten
from aiops_executor.engine.approvals import PendingApproval, pending_from
from aiops_executor.engine.events import LIVE_EVENTS, EventType, ExecutionEvent, PendingEvent, format_timestamp
from aiops_executor.engine.evidence import node_verdict, with_seqs
from aiops_executor.engine.failures import error_message
from aiops_executor.engine.models import DISCARDED_TOKENS_KEY, ModelSource, Usage
from aiops_executor.engine.results import AgentResult, NodeResult, NodeStatus, RunOutcome, RunStatus
from aiops_executor.engine.state import RUN_KEY, RunSettings, TeamRun
from aiops_executor.engine.team import CompiledTeam
from aiops_executor.engine.tokens import DEFAULT_INTERVAL_SECONDS, TokenCoalescer
from aiops_executor.engine.tool_calls import AGENT_ID_KEY, NODE_ID_KEY

EXECUTION_TIMEOUT = "EXECUTION_TIMEOUT"
EXECUTION_FAILED = "EXECUTION_FAILED"
SCHEMA_GENERATION_FAILED = "SCHEMA_GENERATION_FAILED"
NODE_TEAM_TASK = "node_team"
MAX_ERROR_MESSAGE = 2000
MAX_NODE_REASON = 500  # per node team in a run's error message, so that several fit


@dataclass(frozen=True)
class RunRequest:
    execution_id: str
    team_id: str
    task: str
    context: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 300.0
    output_schema: dict[str, Any] | None = None
    # When the run first started; a resumed run keeps it, so its duration is the whole run's.
    started_at: datetime | None = None
    # Running time spent by earlier attempts, which counts against ``timeout_seconds``.
    elapsed_seconds: float = 0.0

    @property
    def input(self) -> dict[str, Any]:
        return {"task": self.task, "context": self.context}


@dataclass(frozen=True)
class Resume:
    """Continue a run whose earlier attempt was lost, from its last checkpoint."""

    attempt: int
    worker_id: str | None
    after_seq: int  # the last stored event of the earlier attempts; this attempt's events follow it
    # Node teams whose ``node_complete`` earlier attempts announced (node id -> its result), checkpointed or
    # not: a crash between announcing a node team and checkpointing it must not run it again.
    announced: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # Decisions on the tool calls the run waited for (interrupt id -> ``approvals.decision_value``).
    decisions: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    # The seq of each stored ``tool_call`` event of the earlier attempts (call id -> seq), for the evidence.
    tool_call_seqs: Mapping[str, int] = field(default_factory=dict)


@dataclass
class _End:
    how: str  # "done", "timeout", "cancelled", "crashed" or "awaiting" (tool calls wait for approval)
    error: BaseException | None = None
    waiting: list[PendingApproval] = field(default_factory=list)


class ExecutionRun:
    """One attempt at a run of a team. Iterate ``events()`` once; ``cancel()`` from anywhere; read ``outcome``."""

    def __init__(
        self,
        team: CompiledTeam,
        request: RunRequest,
        models: ModelSource,
        *,
        checkpointer: BaseCheckpointSaver[Any] | None = None,
        resume: Resume | None = None,
        stream_tokens: bool = True,
        token_interval: float = DEFAULT_INTERVAL_SECONDS,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.team = team
        self.request = request
        self.models = models
        self.resume = resume
        self.telemetry = telemetry or default_telemetry()
        self.settings = RunSettings(
            max_iterations=team.spec.max_iterations, output_schema=request.output_schema, stream_tokens=stream_tokens
        )
        self.checkpointer: BaseCheckpointSaver[Any] = checkpointer or InMemorySaver()
        self.graph = team.graph_with(self.checkpointer)
        self.team_run = TeamRun(
            team,
            models,
            self.settings,
            self.telemetry,
            announced=dict(resume.announced) if resume else {},
            execution_id=request.execution_id,
            context=request.context,
        )
        steps = 2 * (len(team.nodes) + self.settings.max_iterations) + 10
        self.config: RunnableConfig = {
            "configurable": {"thread_id": request.execution_id, RUN_KEY: self.team_run},
            "recursion_limit": steps,
        }
        self.outcome: RunOutcome | None = None
        # The tool calls this attempt stopped to wait for (then ``outcome`` stays None: the run is not over).
        self.awaiting: list[PendingApproval] = []
        self._seq = resume.after_seq if resume else 0
        # call id -> seq of its tool_call event, so that evidence can point at it.
        self._call_seqs: dict[str, int] = dict(resume.tool_call_seqs) if resume else {}
        self._tokens = TokenCoalescer(token_interval)
        self._task: asyncio.Task[_End] | None = None
        self._cancel_requested = False
        self._stopping = False

    # -- control ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stops the run promptly; the event stream then ends with ``execution_cancelled``."""
        self._cancel_requested = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def suspend(self) -> None:
        """Stops the run without concluding it (the process is shutting down): the event stream ends with no
        terminal event and ``outcome`` stays None; the checkpoint lets a later attempt resume the run."""
        self._stopping = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    # -- the stream ------------------------------------------------------------------------------

    def _stamp(self, event: PendingEvent) -> ExecutionEvent:
        if event.type not in LIVE_EVENTS:  # a live event keeps the seq of the stored event it follows
            self._seq += 1
        data = event.data
        if event.type is EventType.tool_call and isinstance(data.get("call_id"), str):
            self._call_seqs[data["call_id"]] = self._seq
        elif event.type is EventType.node_complete and isinstance(data.get("result"), dict):
            # Every tool_call of the node was stamped before (one queue, in order): its evidence gets their seqs.
            # A copy: the result is also the node's state in the graph, which must not change under it.
            result = data["result"]
            data = {**data, "result": {**result, "evidence": with_seqs(result.get("evidence") or [], self._call_seqs)}}
        return ExecutionEvent(
            type=event.type,
            execution_id=self.request.execution_id,
            team_id=self.request.team_id,
            seq=self._seq,
            timestamp=datetime.now(UTC),
            node_id=event.node_id,
            agent_id=event.agent_id,
            supervisor_id=event.supervisor_id,
            data=data,
        )

    def _first_event(self, started_at: datetime) -> PendingEvent:
        # An attempt that stored nothing (its process died between taking the run and its first event) left no
        # ``execution_start``: the run starts here, as far as any client can tell.
        if self.resume is None or self.resume.after_seq == 0:
            return PendingEvent(
                EventType.execution_start,
                data={"input": self.request.input, "started_at": format_timestamp(started_at)},
            )
        return PendingEvent(
            EventType.execution_resumed,
            data={
                "attempt": self.resume.attempt,
                "worker_id": self.resume.worker_id,
                "resumed_after_seq": self.resume.after_seq,
            },
        )

    async def events(self) -> AsyncIterator[ExecutionEvent]:
        started_at = self.request.started_at or datetime.now(UTC)
        yield self._stamp(self._first_event(started_at))
        queue: asyncio.Queue[PendingEvent | _End | None] = asyncio.Queue()
        span = self.telemetry.start_execution(self.request.execution_id, self.request.team_id)
        self._task = asyncio.create_task(
            self._drive(queue), name=f"execution-{self.request.execution_id}", context=self.telemetry.run_context(span)
        )
        # The end marker comes from the task's completion, so it arrives even if the task is cancelled
        # before it ever ran.
        self._task.add_done_callback(lambda task: queue.put_nowait(_ending(task)))
        if self._cancel_requested or self._stopping:
            self._task.cancel()
        try:
            while True:
                item = await self._next(queue)
                if isinstance(item, _End):
                    break
                # Deltas held back by the coalescer (see ``_drive``) go out once due, before what came after them.
                for due in self._tokens.due():
                    yield self._stamp(due)
                if item is not None:
                    yield self._stamp(item)
        finally:
            if not self._task.done():
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        if self._stopping and not self._cancel_requested:
            span.end()  # not a finished execution: no status, no metric; the next attempt opens its own span
            return
        if item.how == "awaiting":
            self.awaiting = item.waiting
            for waiting in item.waiting:
                yield self._stamp(
                    PendingEvent(
                        EventType.approval_requested,
                        node_id=waiting.node_id,
                        agent_id=waiting.agent_id,
                        data={"approval_id": str(waiting.approval_id), "tool": waiting.tool, "input": waiting.input},
                    )
                )
            span.end()  # the run goes on when the calls are decided, in an attempt of its own
            return
        duration_ms = int((datetime.now(UTC) - started_at).total_seconds() * 1000)
        self.outcome = await self._conclude(item, duration_ms)
        self.telemetry.finish_execution(
            span, self.outcome.status.value, self.outcome.duration_ms / 1000, self.outcome.error_code
        )
        usage = self.outcome.usage
        self.telemetry.metrics.team_usage(
            self.team.spec.team_name,
            usage.input_tokens,
            usage.output_tokens,
            None if usage.cost is None else float(usage.cost),
        )
        yield self._stamp(self._terminal_event(self.outcome))

    async def _next(self, queue: asyncio.Queue[PendingEvent | _End | None]) -> PendingEvent | _End | None:
        """The graph's next event; None when held token deltas may have fallen due first."""
        wait = self._tokens.wait_seconds()
        if wait is None:
            return await queue.get()
        try:
            async with asyncio.timeout(wait):
                return await queue.get()
        except TimeoutError:
            return None

    async def _drive(self, queue: asyncio.Queue[PendingEvent | _End | None]) -> _End:
        modes: list[StreamMode] = ["custom"]
        if self.settings.stream_tokens:
            modes.append("messages")
        snapshot = await self.graph.aget_state(self.config)
        graph_input: dict[str, Any] | Command[Any] | None = None
        if snapshot.created_at is None:  # nothing checkpointed yet: start from the beginning
            graph_input = {"task": self.request.task, "context": self.request.context, "node_results": {}}
        else:
            for node_id, body in _checkpointed_results(snapshot).items():
                self.team_run.dataflow.finish(node_id, body)
            decisions = dict(self.resume.decisions) if self.resume is not None else {}
            if decisions:
                graph_input = Command(resume=decisions)
        budget = max(0.0, self.request.timeout_seconds - self.request.elapsed_seconds)
        try:
            async with asyncio.timeout(budget):
                async for _namespace, mode, chunk in self.graph.astream(
                    graph_input, self.config, stream_mode=modes, subgraphs=True, durability="sync"
                ):
                    if mode == "custom" and isinstance(chunk, PendingEvent):
                        if chunk.type is EventType.agent_message:
                            self._tokens.drop(chunk.node_id, chunk.agent_id)  # the message has their text
                        queue.put_nowait(chunk)
                    elif mode == "messages":
                        self._on_token(_token_event(chunk), queue)
        except TimeoutError:
            return _End("timeout")
        waiting = await self._waiting()
        if waiting:
            return _End("awaiting", waiting=waiting)
        return _End("done")

    def _on_token(self, token: PendingEvent | None, queue: asyncio.Queue[PendingEvent | _End | None]) -> None:
        """Coalesces deltas where they arrive: most never cross the queue (a model streams dozens a second)."""
        if token is None:
            return
        if token.type is EventType.agent_tokens_discarded:
            self._tokens.drop(token.node_id, token.agent_id)
        elif token.type is EventType.agent_token:
            holding = self._tokens.holding
            token = self._tokens.add(token)
            if token is None:
                if not holding:
                    queue.put_nowait(None)  # wakes the consumer, which now waits for the held deltas to fall due
                return
        queue.put_nowait(token)

    async def _waiting(self) -> list[PendingApproval]:
        """The tool calls the graph stopped to wait for (its pending approval interrupts)."""
        snapshot = await self.graph.aget_state(self.config)
        waiting: list[PendingApproval] = []
        seen: set[str] = set()
        for interrupt in snapshot.interrupts:
            pending = pending_from(self.request.execution_id, interrupt.id, interrupt.value)
            if pending is not None and interrupt.id not in seen:
                seen.add(interrupt.id)
                waiting.append(pending)
        return waiting

    # -- the outcome -----------------------------------------------------------------------------

    async def _partial_turns(self, snapshot: StateSnapshot) -> dict[str, list[AgentResult]]:
        """The agent turns each unfinished node team had checkpointed (its subgraph's own namespace)."""
        turns: dict[str, list[AgentResult]] = {}
        for task in snapshot.tasks:
            if task.name != NODE_TEAM_TASK or task.result:
                continue
            ns_config: RunnableConfig = {
                "configurable": {"thread_id": self.request.execution_id, "checkpoint_ns": f"{task.name}:{task.id}"}
            }
            saved = await self.checkpointer.aget_tuple(ns_config)
            if saved is None:
                continue
            values = saved.checkpoint.get("channel_values", {})
            node_id = values.get("node_id")
            if isinstance(node_id, str):
                turns[node_id] = [AgentResult(**t) for t in values.get("turns", [])]
        return turns

    async def _node_results(self, snapshot: StateSnapshot, unfinished: NodeStatus) -> list[NodeResult]:
        finished = _checkpointed_results(snapshot)
        partial = await self._partial_turns(snapshot) if len(finished) < len(self.team.order) else {}
        results = []
        for node_id in self.team.order:
            body = finished.get(node_id)
            if body is not None:
                results.append(NodeResult.from_dict(body))
                continue
            meter = self.team_run.node_meters.get(node_id)
            turns = partial.get(node_id, [])
            evidence = [item for turn in turns for item in turn.evidence]
            results.append(
                NodeResult(
                    node_id,
                    unfinished,
                    "",
                    turns,
                    error=f"node team {unfinished.value}",
                    usage=meter.total if meter is not None else Usage(),
                    verdict=node_verdict(evidence).value,
                    evidence=evidence,
                )
            )
        for result in results:
            result.evidence = with_seqs(result.evidence, self._call_seqs)
        return results

    async def _conclude(self, end: _End, duration_ms: int) -> RunOutcome:
        snapshot = await self.graph.aget_state(self.config)
        values = snapshot.values if isinstance(snapshot.values, dict) else {}
        unfinished = {"timeout": NodeStatus.timeout}.get(end.how, NodeStatus.cancelled)
        nodes = await self._node_results(snapshot, unfinished)
        supervisor_usage = Usage.from_dict(values.get("supervisor_usage"))
        usage = supervisor_usage
        for node in nodes:
            usage = usage + node.usage
        outcome = RunOutcome(
            RunStatus.success,
            str(values.get("summary", "")) if end.how == "done" else "",
            nodes,
            duration_ms,
            usage,
            supervisor_usage=supervisor_usage,
            suspects=self.team.suspects({node.node_id: node.as_dict() for node in nodes}),
        )
        halt = self.models.halt()
        if halt is not None and end.how in ("done", "crashed"):
            # A spent budget refused a model call: the run could not do its work, whatever its steps made of it.
            outcome.status = RunStatus.failed
            outcome.error_code = halt.error_code
            outcome.error_message = shorten(halt.message, MAX_ERROR_MESSAGE)
            outcome.error_details = dict(halt.details)
            return outcome
        if end.how == "timeout":
            outcome.status = RunStatus.timeout
            outcome.error_code = EXECUTION_TIMEOUT
            outcome.error_message = f"the execution exceeded its timeout of {self.request.timeout_seconds:g} s"
            return outcome
        if end.how == "cancelled":
            outcome.status = RunStatus.cancelled
            outcome.error_message = "the execution was cancelled"
            return outcome
        if end.how == "crashed":
            message = error_message(end.error) if end.error is not None else ""
            outcome.status = RunStatus.failed
            outcome.error_code = EXECUTION_FAILED
            # When every node team had failed, that is the news, whatever broke afterwards.
            outcome.error_message = _node_teams_failed(nodes) or shorten(
                f"the global supervisor failed: {message or 'unexpected error'}", MAX_ERROR_MESSAGE
            )
            return outcome
        if snapshot.next:
            # The graph paused without finishing (an interrupt waiting for input): not a success.
            outcome.status = RunStatus.failed
            outcome.error_code = EXECUTION_FAILED
            outcome.error_message = f"the run stopped before it finished, waiting at {', '.join(snapshot.next)}"
            return outcome
        node_failures = _node_teams_failed(nodes)
        failure = node_failures or values.get("failure")
        if failure:
            outcome.status = RunStatus.failed
            outcome.error_code = EXECUTION_FAILED
            outcome.error_message = shorten(str(failure), MAX_ERROR_MESSAGE)
            return outcome
        structured = values.get("structured")
        if structured is not None:
            outcome.structured_output = structured["output"]
            if not structured["valid"]:
                outcome.status = RunStatus.failed
                outcome.error_code = SCHEMA_GENERATION_FAILED
                outcome.error_message = (
                    f"the structured output did not match output_schema after {structured['attempts']} attempts"
                )
                outcome.error_details = {"errors": structured["errors"], "partial_output": structured["output"]}
        return outcome

    def _terminal_event(self, outcome: RunOutcome) -> PendingEvent:
        return terminal_event(outcome, structured=self.request.output_schema is not None)


def terminal_event(outcome: RunOutcome, *, structured: bool) -> PendingEvent:
    """The event a run ends with: ``execution_complete``, ``execution_cancelled`` or ``execution_error``."""
    data: dict[str, Any] = {
        "status": outcome.status.value,
        "duration_ms": outcome.duration_ms,
        "result": outcome.result(),
        "usage": outcome.usage.as_dict(),
    }
    if structured:
        data["structured_output"] = outcome.structured_output
    if outcome.status is RunStatus.success:
        return PendingEvent(EventType.execution_complete, data=data)
    if outcome.status is RunStatus.cancelled:
        return PendingEvent(EventType.execution_cancelled, data=data)
    data.update(error_code=outcome.error_code, error_message=outcome.error_message, **outcome.error_details)
    return PendingEvent(EventType.execution_error, data=data)


def _node_teams_failed(nodes: list[NodeResult]) -> str | None:
    """Why the run failed when none of its node teams succeeded: each node team and its reason (None when one
    succeeded, or some did not finish)."""
    if not nodes or any(n.status not in (NodeStatus.failed, NodeStatus.skipped) for n in nodes):
        return None
    every = all(n.status is NodeStatus.failed for n in nodes)
    message = "every node team failed: " if every else "no node team succeeded: "
    reasons = [f"{n.node_id}: {shorten(n.error or n.output or n.status.value, MAX_NODE_REASON)}" for n in nodes]
    message += reasons[0]
    for index, reason in enumerate(reasons[1:], start=1):
        more = f"; and {len(reasons) - index} more"
        if len(message) + len(reason) + len(more) + 2 > MAX_ERROR_MESSAGE:
            return message + more
        message += "; " + reason
    return message


def _checkpointed_results(snapshot: StateSnapshot) -> dict[str, dict[str, Any]]:
    """Node results in the checkpoint: those of finished steps, and those of node teams that finished within
    the step that was interrupted (their writes are stored even though the step is not complete)."""
    values = snapshot.values if isinstance(snapshot.values, dict) else {}
    results = dict(values.get("node_results") or {})
    for task in snapshot.tasks:
        if isinstance(task.result, dict):
            results.update(task.result.get("node_results") or {})
    return results


def _ending(task: asyncio.Task[_End]) -> _End:
    if task.cancelled():
        return _End("cancelled")
    error = task.exception()
    return _End("crashed", error=error) if error is not None else task.result()


def _token_event(chunk: Any) -> PendingEvent | None:
    message, metadata = chunk
    agent_id = metadata.get(AGENT_ID_KEY) if isinstance(metadata, dict) else None
    if agent_id is None or not isinstance(message, AIMessageChunk):
        return None
    node_id = metadata.get(NODE_ID_KEY)
    discarded = message.response_metadata.get(DISCARDED_TOKENS_KEY)
    if isinstance(discarded, dict):
        return PendingEvent(EventType.agent_tokens_discarded, node_id=node_id, agent_id=agent_id, data=discarded)
    delta = message.content if isinstance(message.content, str) else message.text
    if not delta:
        return None
    return PendingEvent(EventType.agent_token, node_id=node_id, agent_id=agent_id, data={"delta": delta})
