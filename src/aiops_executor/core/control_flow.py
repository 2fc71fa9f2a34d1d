"""LangGraph's control flow is not a failure: the one rule every ``except Exception`` around work inside a graph
applies first (a tool call, a model call, an agent, a node team)."""

from __future__ import annotations

from langgraph.errors import GraphBubbleUp


def pass_control_flow(exc: BaseException) -> None:
    """Re-raises LangGraph's control-flow exceptions (an interrupt waiting for a person's approval, a command
    for a parent graph): they must reach the graph, which pauses the run or routes it."""
    if isinstance(exc, GraphBubbleUp):
        raise exc
