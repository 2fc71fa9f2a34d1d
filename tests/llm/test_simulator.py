"""The offline simulator model behaves by its published rules through LangChain's interfaces."""

from __future__ import annotations

import time
from typing import Any, Literal

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from aiops_executor.llm.simulator import LABEL, SimulatorChatModel, conversation_context, json_objects_in

calls: list[dict[str, Any]] = []


@tool
def http_check(url: str, timeout_seconds: float = 5.0) -> dict[str, Any]:
    """Fetch a URL and report its status."""
    calls.append({"tool": "http_check", "url": url, "timeout_seconds": timeout_seconds})
    return {"url": url, "status_code": 503}


@tool
def tcp_check(host: str, port: int) -> dict[str, Any]:
    """Open a TCP connection."""
    calls.append({"tool": "tcp_check", "host": host, "port": port})
    return {"host": host, "port": port, "open": True}


class Route(BaseModel):
    next: Literal["probe", "logs", "FINISH"]
    reason: str


class Issue(BaseModel):
    severity: Literal["low", "medium", "high"]
    description: str = Field(max_length=50)


class Report(BaseModel):
    summary: str
    issues: list[Issue] = Field(min_length=2)
    confidence: float = Field(ge=0.5, le=1)


def test_json_objects_are_found_in_text() -> None:
    text = 'Node {"url": "http://x", "nested": {"port": 5432}} and {broken and {"b": 1}'
    assert json_objects_in(text) == [{"url": "http://x", "nested": {"port": 5432}}, {"b": 1}]
    context = conversation_context([SystemMessage('{"host": "db"}'), HumanMessage(text)])
    assert context["url"] == "http://x" and context["port"] == 5432 and context["host"] == "db"


async def test_agent_calls_each_tool_once_with_node_attributes_then_reports() -> None:
    calls.clear()
    agent = create_agent(SimulatorChatModel(), tools=[http_check, tcp_check], system_prompt="You probe.")
    attributes = '{"url": "http://127.0.0.1:9/health", "host": "127.0.0.1", "port": 6379}'
    result = await agent.ainvoke({"messages": [HumanMessage(f"Check the node. Attributes: {attributes}")]})
    assert sorted(c["tool"] for c in calls) == ["http_check", "tcp_check"]
    assert {"tool": "http_check", "url": "http://127.0.0.1:9/health", "timeout_seconds": 5.0} in calls
    assert {"tool": "tcp_check", "host": "127.0.0.1", "port": 6379} in calls
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.content.startswith(LABEL)
    assert "status_code" in final.content and "503" in final.content
    assert final.usage_metadata and final.usage_metadata["output_tokens"] > 0


async def test_routing_picks_the_first_choice_not_yet_reported_then_finishes() -> None:
    router = SimulatorChatModel().with_structured_output(Route)
    first = await router.ainvoke([HumanMessage("who next?")])
    assert isinstance(first, Route) and first.next == "probe"
    second = await router.ainvoke([HumanMessage("who next?"), AIMessage("[probe] all good")])
    assert isinstance(second, Route) and second.next == "logs"
    done = await router.ainvoke([HumanMessage("who next?"), AIMessage("[probe] ok"), AIMessage("[logs] ok")])
    assert isinstance(done, Route) and done.next == "FINISH"


async def test_structured_output_satisfies_the_schema_and_carries_the_reports() -> None:
    report = (
        await SimulatorChatModel()
        .with_structured_output(Report)
        .ainvoke([HumanMessage("summarise"), AIMessage("[checkout] http_check returned 503")])
    )
    assert isinstance(report, Report)
    assert "503" in report.summary and report.summary.startswith(LABEL)
    assert len(report.issues) == 2 and report.confidence >= 0.5
    raw = await SimulatorChatModel().with_structured_output(Report.model_json_schema()).ainvoke([HumanMessage("x")])
    Report.model_validate(raw)


async def test_streams_tokens_and_reports_usage() -> None:
    chunks = [chunk async for chunk in SimulatorChatModel().astream([HumanMessage("hello"), AIMessage("a b c")])]
    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 3
    assert "".join(texts).startswith(LABEL)
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata["total_tokens"] > 0


async def test_streamed_tool_calls_are_reassembled() -> None:
    model = SimulatorChatModel().bind_tools([tcp_check])
    merged = None
    async for chunk in model.astream([HumanMessage('{"host": "h", "port": 1}')]):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert merged.tool_calls == [
        {"name": "tcp_check", "args": {"host": "h", "port": 1}, "id": merged.tool_calls[0]["id"], "type": "tool_call"}
    ]


async def test_is_deterministic_and_honours_latency() -> None:
    messages = [HumanMessage("same input"), ToolMessage("out", tool_call_id="1", name="t")]
    model = SimulatorChatModel(latency_ms=30)
    started = time.perf_counter()
    first = await model.ainvoke(messages)
    elapsed = time.perf_counter() - started
    second = await model.ainvoke(messages)
    assert first.content == second.content
    assert elapsed >= 0.03


async def test_structured_output_lists_one_item_per_resource_that_reported() -> None:
    report_schema = {
        "title": "Report",
        "description": "An incident report.",
        "type": "object",
        "properties": {
            "overall": {"type": "string", "enum": ["unknown", "healthy", "down"]},
            "findings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "node_id": {"type": "string"},
                        "status": {"type": "string", "enum": ["unknown", "healthy", "down"]},
                        "detail": {"type": "string"},
                    },
                },
            },
        },
    }
    conversation = [
        SystemMessage("You coordinate."),
        HumanMessage("Task: is the shop up?"),
        AIMessage('[web] (success) http_check: {"reachable": true, "status_code": 200}'),
        AIMessage('[db] (success) tcp_check: {"reachable": false, "error": "refused"}'),
        HumanMessage("Answer with JSON."),
    ]
    model = SimulatorChatModel().with_structured_output(report_schema)
    answer = await model.ainvoke(conversation)
    assert [f["node_id"] for f in answer["findings"]] == ["web", "db"]
    assert [f["status"] for f in answer["findings"]] == ["healthy", "down"]
    assert '"reachable": false' in answer["findings"][1]["detail"]
    assert answer["overall"] == "down"  # one resource is down: the whole reads as bad news
