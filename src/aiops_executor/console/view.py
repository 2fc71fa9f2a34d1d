"""The live view of a run and the rendering of its result, with rich.

``RunView`` folds the run's events into a small state (the global supervisor, one entry per node team, one
per agent) and renders it as a tree: status icons, the latest decision per supervisor, the last tool call
per agent and the tail of the tokens an agent is streaming. When the tree would not fit the terminal,
finished node teams fold to one line, then the quiet ones are counted on a single line.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.json import JSON
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from aiops_executor.engine.events import EventType, ExecutionEvent
from aiops_executor.engine.results import RunOutcome, RunStatus
from aiops_executor.engine.topology import TeamSpec

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
TOKEN_TAIL_CHARS = 60
NOTE_CHARS = 90
SUMMARY_MAX_LINES = 20
OUTPUT_LINES_PER_NODE = 3
OUTPUT_LINE_CHARS = 110


class Status(StrEnum):
    pending = "pending"
    running = "running"
    success = "success"
    failed = "failed"
    skipped = "skipped"
    timeout = "timeout"
    cancelled = "cancelled"


_ICONS: dict[Status, tuple[str, str]] = {
    Status.pending: ("○", "dim"),
    Status.success: ("✔", "green"),
    Status.failed: ("✖", "bold red"),
    Status.skipped: ("⊘", "yellow"),
    Status.timeout: ("⏱", "red"),
    Status.cancelled: ("■", "yellow"),
}
_FINISHED = frozenset({Status.success, Status.failed, Status.skipped, Status.timeout, Status.cancelled})


def status_of(value: Any) -> Status:
    try:
        return Status(str(value))
    except ValueError:
        return Status.failed


def icon(status: Status, now: float | None = None) -> Text:
    if status is Status.running:
        frame = SPINNER[int((now if now is not None else time.monotonic()) * 10) % len(SPINNER)]
        return Text(frame, style="bold cyan")
    symbol, style = _ICONS[status]
    return Text(symbol, style=style)


def one_line(text: Any, limit: int) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters."""
    value = str(text or "").strip()
    first = next((line.strip() for line in value.splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 1] + "…"


def flatten(text: str) -> str:
    return " ".join(text.split())


def output_preview(output: Any, limit: int = 70) -> str:
    """A few scalar facts of a tool result (``server_version=15.2, role=primary``), or its error."""
    if not isinstance(output, dict):
        return one_line(output, limit)
    if "error_code" in output or "error_message" in output:
        return one_line(f"{output.get('error_code', 'error')}: {output.get('error_message', '')}", limit)
    facts = [f"{key}={value}" for key, value in output.items() if isinstance(value, str | int | float | bool)]
    return one_line(", ".join(facts[:4]), limit)


@dataclass
class AgentView:
    agent_id: str
    name: str
    status: Status = Status.pending
    tool: Text | None = None
    tokens: str = ""
    message: str = ""


@dataclass
class NodeView:
    node_id: str
    name: str
    node_type: str
    strategy: str
    agents: dict[str, AgentView]
    status: Status = Status.pending
    note: str = ""
    error: str = ""


@dataclass
class RunView:
    """Everything the live tree shows, updated event by event (see ``apply``)."""

    team_name: str
    strategy: str
    nodes: dict[str, NodeView]
    status: Status = Status.pending
    note: str = ""
    events: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    interrupt_note: str = ""

    @classmethod
    def for_team(cls, spec: TeamSpec) -> RunView:
        topology = spec.topology
        nodes = {
            node.node_id: NodeView(
                node.node_id,
                node.node_name,
                node.node_type,
                node.supervisor_config.coordination_strategy.value,
                {agent.agent_id: AgentView(agent.agent_id, agent.agent_name) for agent in node.agents},
            )
            for node in topology.nodes
        }
        return cls(spec.team_name, topology.global_supervisor.coordination_strategy.value, nodes)

    # -- events ------------------------------------------------------------------------------------

    def apply(self, event: ExecutionEvent) -> None:
        self.events += 1
        data = event.data
        node = self.nodes.get(event.node_id) if event.node_id else None
        agent = node.agents.get(event.agent_id) if node is not None and event.agent_id else None
        kind = event.type
        if kind is EventType.execution_start:
            self.status = Status.running
        elif kind is EventType.global_supervisor_decision:
            self.note = one_line(data.get("decision"), NOTE_CHARS)
            for node_id in data.get("next_nodes") or []:
                target = self.nodes.get(str(node_id))
                if target is not None and target.status is Status.pending:
                    target.status = Status.running
        elif kind is EventType.global_supervisor_message:
            self.note = "summary: " + one_line(data.get("message"), NOTE_CHARS)
        elif event.is_terminal:  # may name the node or agent that failed the run
            self._finish(event)
        elif node is not None:
            self._apply_node_event(kind, node, agent, data)

    def _apply_node_event(self, kind: EventType, node: NodeView, agent: AgentView | None, data: dict[str, Any]) -> None:
        if kind is EventType.node_supervisor_decision:
            if node.status is Status.pending:
                node.status = Status.running
            node.note = one_line(data.get("decision"), NOTE_CHARS)
            for agent_id in data.get("next_agents") or []:
                chosen = node.agents.get(str(agent_id))
                if chosen is not None:
                    chosen.status, chosen.tokens = Status.running, ""
        elif kind is EventType.node_supervisor_message:
            node.note = "report: " + one_line(data.get("message"), NOTE_CHARS)
        elif kind is EventType.node_complete:
            self._complete_node(node, data)
        elif agent is None:
            return
        elif kind is EventType.agent_token:
            agent.status = Status.running
            agent.tokens = (agent.tokens + str(data.get("delta", "")))[-4 * TOKEN_TAIL_CHARS :]
        elif kind is EventType.agent_tokens_discarded:
            agent.tokens = ""  # the answer starts again on another endpoint
        elif kind is EventType.tool_call:
            ok = data.get("status") == "success"
            text = Text("⚙ ", style="dim")
            text.append(str(data.get("tool", "tool")), style="bold")
            text.append(" ✔" if ok else " ✖", style="green" if ok else "red")
            duration = data.get("duration_ms")
            if isinstance(duration, int | float):
                text.append(f" {duration:.0f} ms", style="dim")
            preview = output_preview(data.get("output"))
            if preview:
                text.append(f" {preview}", style="dim")
            agent.tool = text
        elif kind is EventType.agent_message:
            agent.status = Status.failed if data.get("status") == "failed" else Status.success
            agent.tokens = ""
            agent.message = one_line(data.get("error") or data.get("message"), NOTE_CHARS)

    @staticmethod
    def _complete_node(node: NodeView, data: dict[str, Any]) -> None:
        node.status = status_of(data.get("status"))
        result = data.get("result") if isinstance(data.get("result"), dict) else {}
        node.error = one_line((result or {}).get("error"), NOTE_CHARS)
        stopped = node.status in (Status.timeout, Status.cancelled)
        for agent in node.agents.values():
            # Agents that never ran were stopped with the run, not needed (priority stopped early), or could
            # not run (skipped node).
            if agent.status is Status.pending:
                agent.status = node.status if stopped else Status.skipped
            elif agent.status is Status.running:
                agent.status = node.status if node.status in _FINISHED else Status.failed

    def _finish(self, event: ExecutionEvent) -> None:
        self.finished = time.monotonic()
        self.status = status_of(event.data.get("status"))
        result = event.data.get("result")
        for body in (result or {}).get("node_results", []) if isinstance(result, dict) else []:
            node = self.nodes.get(str(body.get("node_id")))
            if node is not None and node.status not in _FINISHED:
                self._complete_node(node, {"status": body.get("status"), "result": body})
        if event.type is not EventType.execution_complete:
            message = event.data.get("error_message") or f"run {self.status.value}"
            self.note = one_line(message, NOTE_CHARS)

    # -- rendering ---------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.render(options.max_height if options.height is None else options.height)

    def render(self, height: int) -> Tree:
        now = time.monotonic()
        head = Text.assemble(
            icon(self.status, now),
            " ",
            (self.team_name, "bold"),
            (f"  global supervisor · {self.strategy} · {self.elapsed():.1f} s · {self.events} events", "dim"),
        )
        if self.note:
            head.append(f"  {self.note}", style="italic")
        if self.interrupt_note:
            head.append(f"  {self.interrupt_note}", style="bold yellow")
        head.no_wrap, head.overflow = True, "ellipsis"
        tree = Tree(head, guide_style="dim")
        shown, hidden = self._layout(max(height - 2, 4))
        for node, expanded in shown:
            branch = tree.add(self._node_line(node, now))
            if expanded:
                for agent in node.agents.values():
                    branch.add(self._agent_line(agent, now))
        if hidden:
            counts = Counter(node.status.value for node in hidden)
            listing = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
            tree.add(Text(f"… {len(hidden)} more node teams ({listing})", style="dim"))
        return tree

    def _layout(self, budget: int) -> tuple[list[tuple[NodeView, bool]], list[NodeView]]:
        """Which node teams to show and which of them to expand, within ``budget`` lines."""
        nodes = list(self.nodes.values())
        full = 1 + sum(1 + len(node.agents) for node in nodes)
        if full <= budget:
            return [(node, True) for node in nodes], []
        busy = {node.node_id for node in nodes if node.status in (Status.running, Status.failed)}
        folded = 1 + len(nodes) + sum(len(node.agents) for node in nodes if node.node_id in busy)
        if folded <= budget:
            return [(node, node.node_id in busy) for node in nodes], []
        # Too many even folded: busy teams first (expanded while they fit), then the rest, one line each.
        lines = 2  # the head and the "more" line
        chosen: dict[str, bool] = {}
        for node in sorted(nodes, key=lambda n: n.node_id not in busy):
            cost = 1 + (len(node.agents) if node.node_id in busy else 0)
            if lines + cost <= budget:
                chosen[node.node_id] = node.node_id in busy
                lines += cost
            elif lines + 1 <= budget and node.node_id in busy:
                chosen[node.node_id] = False
                lines += 1
        shown = [(node, chosen[node.node_id]) for node in nodes if node.node_id in chosen]
        return shown, [node for node in nodes if node.node_id not in chosen]

    @staticmethod
    def _node_line(node: NodeView, now: float) -> Text:
        line = Text.assemble(
            icon(node.status, now), " ", (node.node_id, "bold"), (f"  {node.name} · {node.node_type}", "dim")
        )
        finished = sum(1 for a in node.agents.values() if a.status in _FINISHED)
        line.append(f" · {node.strategy} · {finished}/{len(node.agents)} agents", style="dim")
        if node.error:
            line.append(f"  {node.error}", style="red")
        elif node.note:
            line.append(f"  {node.note}", style="italic")
        line.no_wrap, line.overflow = True, "ellipsis"
        return line

    @staticmethod
    def _agent_line(agent: AgentView, now: float) -> Text:
        line = Text.assemble(icon(agent.status, now), " ", agent.agent_id, (f" ({agent.name})", "dim"))
        if agent.tool is not None:
            line.append("  ")
            line.append_text(agent.tool)
        if agent.status is Status.running and agent.tokens:
            line.append(f"  ▸ …{flatten(agent.tokens)[-TOKEN_TAIL_CHARS:]}", style="italic cyan")
        elif agent.message and agent.tool is None:
            line.append(f"  {agent.message}", style="italic dim")
        line.no_wrap, line.overflow = True, "ellipsis"
        return line


# -------------------------------------------------------------------------------------------- the result

_RUN_STYLES = {
    RunStatus.success: "bold green",
    RunStatus.failed: "bold red",
    RunStatus.timeout: "bold red",
    RunStatus.cancelled: "bold yellow",
}


def _clip_lines(text: str, max_lines: int) -> Text:
    lines = text.strip().splitlines() or ["(empty)"]
    body = Text("\n".join(lines[:max_lines]))
    if len(lines) > max_lines:
        body.append(f"\n… {len(lines) - max_lines} more lines (--json prints the full result)", style="dim")
    return body


def _agents_cell(agents: list[dict[str, Any]], expected: int) -> Text:
    ok = sum(1 for a in agents if a.get("status") == "success")
    failed = len(agents) - ok
    cell = Text(f"{ok}/{expected} ✔", style="green" if ok else "dim")
    if failed:
        cell.append(f" {failed} ✖", style="red")
    return cell


def _output_cell(body: dict[str, Any]) -> Text:
    if body.get("error"):
        return Text(one_line(body["error"], OUTPUT_LINE_CHARS * 2), style="red")
    lines = [line.strip() for line in str(body.get("output") or "").splitlines() if line.strip()]
    shown = [line if len(line) <= OUTPUT_LINE_CHARS else line[: OUTPUT_LINE_CHARS - 1] + "…" for line in lines]
    cell = Text("\n".join(shown[:OUTPUT_LINES_PER_NODE]))
    if len(lines) > OUTPUT_LINES_PER_NODE:
        cell.append(f"\n… {len(lines) - OUTPUT_LINES_PER_NODE} more lines", style="dim")
    return cell


def render_result(
    outcome: RunOutcome, spec: TeamSpec, *, execution_id: str, structured_requested: bool
) -> RenderableType:
    """The end of a run: status, error, summary, one row per node team, usage, structured output."""
    parts: list[RenderableType] = []
    title = f"{outcome.status.value} in {outcome.duration_ms / 1000:.2f} s"
    if outcome.status is RunStatus.cancelled:
        title += " (partial result)"
    parts.append(Rule(Text(title, style=_RUN_STYLES[outcome.status]), style="dim"))
    parts.append(Text(f"execution {execution_id}", style="dim"))
    if outcome.error_message:
        error = Text()
        if outcome.error_code:
            error.append(f"{outcome.error_code}: ", style="bold red")
        error.append(outcome.error_message, style="red")
        for item in outcome.error_details.get("errors", []) or []:
            if isinstance(item, dict):
                error.append(f"\n  {item.get('path', '')}: {item.get('message', '')}", style="red")
        parts.append(error)
    if outcome.summary:
        parts.append(Panel(_clip_lines(outcome.summary, SUMMARY_MAX_LINES), title="summary", title_align="left"))

    if outcome.suspects:
        parts.append(_suspects_table(outcome.suspects))

    agents_expected = {node.node_id: len(node.agents) for node in spec.topology.nodes}
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, expand=False)
    table.add_column("node")
    table.add_column("status")
    table.add_column("verdict")
    table.add_column("agents", no_wrap=True)
    table.add_column("output / error", overflow="fold")
    for result in outcome.node_results:
        body = result.as_dict()
        status = status_of(result.status.value)
        table.add_row(
            Text(result.node_id, style="bold"),
            Text.assemble(icon(status), f" {status.value}"),
            Text(result.verdict, style=_VERDICT_STYLES.get(result.verdict, "dim")),
            _agents_cell(body["agents"], agents_expected.get(result.node_id, len(body["agents"]))),
            _output_cell(body),
        )
    parts.append(table)

    usage = outcome.usage
    parts.append(
        Text.assemble(
            ("usage  ", "bold"),
            f"{_count(usage.input_tokens)} input tokens · {_count(usage.output_tokens)} output tokens · "
            f"cost {'unknown' if usage.cost is None else f'{usage.cost:.6f}'}",
        )
    )
    if structured_requested:
        parts.append(Rule(Text("structured output", style="bold"), style="dim", align="left"))
        if outcome.structured_output is None:
            parts.append(Text("(none)", style="dim"))
        else:
            parts.append(JSON.from_data(outcome.structured_output, default=str))
    return Group(*parts)


_VERDICT_STYLES = {"ok": "green", "degraded": "yellow", "failed": "bold red", "unknown": "dim"}


def _suspects_table(suspects: list[dict[str, Any]]) -> Table:
    """The suspects, causes first, with the reasons and the events of the evidence."""
    table = Table(title="suspects", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, expand=False)
    table.add_column("#", justify="right")
    table.add_column("node")
    table.add_column("verdict")
    table.add_column("reasons", overflow="fold")
    table.add_column("events", no_wrap=True)
    for suspect in suspects:
        verdict = str(suspect.get("verdict"))
        table.add_row(
            str(suspect.get("rank")),
            Text(str(suspect.get("node_id")), style="bold"),
            Text(verdict, style=_VERDICT_STYLES.get(verdict, "dim")),
            "\n".join(str(reason) for reason in suspect.get("reasons") or []),
            ", ".join(f"#{seq}" for seq in suspect.get("evidence_seqs") or []),
        )
    return table


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"
