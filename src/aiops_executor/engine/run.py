"""Running a compiled team: the event stream, timeout, cancellation and the outcome.

The graph runs in a task of its own and hands its events over a queue, so a timeout or a cancel stops it
at once (the cancellation reaches in-flight model and tool calls) while the consumer still receives
every event emitted so far, then exactly one terminal event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableConfig
from langgraph.types import StreamMode

from aiops_executor.core.telemetry import Telemetry, default_telemetry
from aiops_executor.engine.events import EventType, ExecutionEvent, PendingEvent, format_timestamp
from aiops_executor.engine.models import ModelSource
from aiops_executor.engine.results import AgentResult, NodeResult, NodeStatus, RunOutcome, RunStatus
from aiops_executor.engine.team import AGENT_ID_KEY, NODE_ID_KEY, RUN_KEY, CompiledTeam, RunSettings, TeamRun

EXECUTION_TIMEOUT = "EXECUTION_TIMEOUT"
EXECUTION_FAILED = "EXECUTION_FAILED"
SCHEMA_GENERATION_FAILED = "SCHEMA_GENERATION_FAILED"


@dataclass(frozen=True)
class RunRequest:
    execution_id: str
    team_id: str
    task: str
    context: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float = 300.0
    output_schema: dict[str, Any] | None = None

    @property
    def input(self) -> dict[str, Any]:
        return {"task": self.task, "context": self.context}


@dataclass
class _End:
    how: str  # "done", "timeout", "cancelled" or "crashed"
    state: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None


class ExecutionRun:
    """One run of a team. Iterate ``events()`` once; ``cancel()`` from anywhere; read ``outcome`` at the end."""

    def __init__(
        self,
        team: CompiledTeam,
        request: RunRequest,
        models: ModelSource,
        *,
        stream_tokens: bool = True,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.team = team
        self.request = request
        self.models = models
        self.telemetry = telemetry or default_telemetry()
        self.settings = RunSettings(
            max_iterations=team.spec.max_iterations, output_schema=request.output_schema, stream_tokens=stream_tokens
        )
        self.outcome: RunOutcome | None = None
        self._seq = 0
        self._task: asyncio.Task[_End] | None = None
        self._cancel_requested = False
        self._finished: dict[str, dict[str, Any]] = {}
        self._agent_outputs: dict[str, list[AgentResult]] = {}

    # -- control ---------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stops the run promptly; the event stream then ends with ``execution_cancelled``."""
        self._cancel_requested = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    # -- the stream ------------------------------------------------------------------------------

    def _stamp(self, event: PendingEvent) -> ExecutionEvent:
        self._seq += 1
        return ExecutionEvent(
            type=event.type,
            execution_id=self.request.execution_id,
            team_id=self.request.team_id,
            seq=self._seq,
            timestamp=datetime.now(UTC),
            node_id=event.node_id,
            agent_id=event.agent_id,
            supervisor_id=event.supervisor_id,
            data=event.data,
        )

    async def events(self) -> AsyncIterator[ExecutionEvent]:
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        yield self._stamp(
            PendingEvent(
                EventType.execution_start,
                data={"input": self.request.input, "started_at": format_timestamp(started_at)},
            )
        )
        queue: asyncio.Queue[PendingEvent | _End] = asyncio.Queue()
        span = self.telemetry.start_execution(self.request.execution_id, self.request.team_id)
        self._task = asyncio.create_task(
            self._drive(queue), name=f"execution-{self.request.execution_id}", context=self.telemetry.run_context(span)
        )
        # The end marker comes from the task's completion, so it arrives even if the task is cancelled
        # before it ever ran.
        self._task.add_done_callback(lambda task: queue.put_nowait(_ending(task)))
        if self._cancel_requested:
            self._task.cancel()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    break
                self._observe(item)
                yield self._stamp(item)
        finally:
            if not self._task.done():
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        self.outcome = self._conclude(item, int((time.perf_counter() - started) * 1000))
        self.telemetry.finish_execution(
            span, self.outcome.status.value, self.outcome.duration_ms / 1000, self.outcome.error_code
        )
        yield self._stamp(self._terminal_event(self.outcome))

    async def _drive(self, queue: asyncio.Queue[PendingEvent | _End]) -> _End:
        team_run = TeamRun(self.team, self.models, self.settings, self.telemetry)
        steps = 2 * (len(self.team.nodes) + self.settings.max_iterations) + 10
        config: RunnableConfig = {"configurable": {RUN_KEY: team_run}, "recursion_limit": steps}
        modes: list[StreamMode] = ["custom", "values"]
        if self.settings.stream_tokens:
            modes.append("messages")
        initial: dict[str, Any] = {"task": self.request.task, "context": self.request.context, "node_results": {}}
        end = _End("done")
        try:
            async with asyncio.timeout(self.request.timeout_seconds):
                async for namespace, mode, chunk in self.team.graph.astream(
                    initial, config, stream_mode=modes, subgraphs=True
                ):
                    if mode == "custom" and isinstance(chunk, PendingEvent):
                        queue.put_nowait(chunk)
                    elif mode == "messages":
                        token = _token_event(chunk)
                        if token is not None:
                            queue.put_nowait(token)
                    elif mode == "values" and not namespace and isinstance(chunk, dict):
                        end.state = chunk
        except TimeoutError:
            return _End("timeout")
        return end

    def _observe(self, event: PendingEvent) -> None:
        """Keeps what finished so far, so a run stopped early still returns partial results."""
        if event.type is EventType.node_complete and event.node_id:
            self._finished[event.node_id] = event.data["result"]
        elif event.type is EventType.agent_message and event.node_id and event.agent_id:
            self._agent_outputs.setdefault(event.node_id, []).append(
                AgentResult(
                    event.agent_id,
                    str(event.data.get("message", "")),
                    str(event.data.get("status", "success")),
                    event.data.get("error"),
                )
            )

    # -- the outcome -----------------------------------------------------------------------------

    def _node_results(self, unfinished: NodeStatus) -> list[NodeResult]:
        results = []
        for node_id in self.team.order:
            body = self._finished.get(node_id)
            if body is None:
                agents = self._agent_outputs.get(node_id, [])
                results.append(NodeResult(node_id, unfinished, "", agents, error=f"node team {unfinished.value}"))
            else:
                results.append(
                    NodeResult(
                        node_id,
                        NodeStatus(body["status"]),
                        body["output"],
                        [AgentResult(**a) for a in body["agents"]],
                        body.get("error"),
                    )
                )
        return results

    def _conclude(self, end: _End, duration_ms: int) -> RunOutcome:
        usage = self.models.usage()
        if end.how == "timeout":
            return RunOutcome(
                RunStatus.timeout,
                "",
                self._node_results(NodeStatus.timeout),
                duration_ms,
                usage,
                error_code=EXECUTION_TIMEOUT,
                error_message=f"the execution exceeded its timeout of {self.request.timeout_seconds:g} s",
            )
        if end.how == "cancelled":
            return RunOutcome(
                RunStatus.cancelled,
                "",
                self._node_results(NodeStatus.cancelled),
                duration_ms,
                usage,
                error_message="the execution was cancelled",
            )
        if end.how == "crashed":
            error = end.error or RuntimeError("unknown failure")
            message = getattr(error, "message", None) or str(error) or type(error).__name__
            return RunOutcome(
                RunStatus.failed,
                "",
                self._node_results(NodeStatus.cancelled),
                duration_ms,
                usage,
                error_code=EXECUTION_FAILED,
                error_message=f"the global supervisor failed: {type(error).__name__}: {message}"[:2000],
            )
        nodes = self._node_results(NodeStatus.cancelled)
        outcome = RunOutcome(RunStatus.success, str(end.state.get("summary", "")), nodes, duration_ms, usage)
        structured = end.state.get("structured")
        if structured is not None:
            outcome.structured_output = structured["output"]
            if not structured["valid"]:
                outcome.status = RunStatus.failed
                outcome.error_code = SCHEMA_GENERATION_FAILED
                outcome.error_message = (
                    f"the structured output did not match output_schema after {structured['attempts']} attempts"
                )
                outcome.error_details = {"errors": structured["errors"], "partial_output": structured["output"]}
        if outcome.status is RunStatus.success and not any(n.status is NodeStatus.success for n in nodes):
            outcome.status = RunStatus.failed
            outcome.error_code = EXECUTION_FAILED
            outcome.error_message = "no node team completed its work"
        return outcome

    def _terminal_event(self, outcome: RunOutcome) -> PendingEvent:
        data: dict[str, Any] = {
            "status": outcome.status.value,
            "duration_ms": outcome.duration_ms,
            "result": outcome.result(),
            "usage": outcome.usage.as_dict(),
        }
        if self.request.output_schema is not None:
            data["structured_output"] = outcome.structured_output
        if outcome.status is RunStatus.success:
            return PendingEvent(EventType.execution_complete, data=data)
        if outcome.status is RunStatus.cancelled:
            return PendingEvent(EventType.execution_cancelled, data=data)
        data.update(error_code=outcome.error_code, error_message=outcome.error_message, **outcome.error_details)
        return PendingEvent(EventType.execution_error, data=data)


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
    delta = message.content if isinstance(message.content, str) else message.text
    if not delta:
        return None
    return PendingEvent(
        EventType.agent_token, node_id=metadata.get(NODE_ID_KEY), agent_id=agent_id, data={"delta": delta}
    )
