"""The private interfaces of LangGraph and LangChain listed in ``core/private_apis`` keep the shape the service
relies on: each test fails when an upgrade renames one, changes its signature, or stops going through it."""

from __future__ import annotations

import inspect
import uuid
from pathlib import Path
from typing import Any, TypedDict

import aiosqlite
import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import ensure_config
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

from aiops_executor.core.private_apis.chat_models import client_agenerate, client_astream, langchain_should_stream
from aiops_executor.core.private_apis.graphs import CONFIG_KEY_DURABILITY
from aiops_executor.core.private_apis.savers import SQLITE_SAVER_COLUMNS
from aiops_executor.executions.checkpoints import Checkpoints, GroupCommit, GroupCommitPostgresSaver, Statement

CALL_PARAMETERS = ["self", "messages", "stop", "run_manager", "kwargs"]


class _State(TypedDict):
    seen: list[str]


def test_a_graph_hands_its_durability_to_the_graphs_its_nodes_invoke() -> None:
    """The run's graph passes its durability under the key; an agent graph given "exit" under it runs with
    "exit" (item 1: without it the agent graph would inherit the run's "sync")."""

    def inner_step(state: _State) -> _State:
        return {"seen": [*state["seen"], f"inner:{ensure_config()['configurable'][CONFIG_KEY_DURABILITY]}"]}

    inner = StateGraph(_State)
    inner.add_node("step", inner_step)
    inner.add_edge(START, "step")
    inner.add_edge("step", END)
    agent_graph = inner.compile()

    def outer_step(state: _State) -> _State:
        handed = ensure_config()["configurable"][CONFIG_KEY_DURABILITY]
        result = agent_graph.invoke({"seen": [f"outer:{handed}"]}, {"configurable": {CONFIG_KEY_DURABILITY: "exit"}})
        return {"seen": result["seen"]}

    outer = StateGraph(_State)
    outer.add_node("step", outer_step)
    outer.add_edge(START, "step")
    outer.add_edge("step", END)
    run_graph = outer.compile(checkpointer=InMemorySaver())

    result = run_graph.invoke({"seen": []}, {"configurable": {"thread_id": "t"}}, durability="sync")
    assert result["seen"] == ["outer:sync", "inner:exit"]


def _chat_model() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content="disk full on db-1")]))


def test_langchains_streaming_rule_keeps_its_signature_and_answers() -> None:
    parameters = inspect.signature(BaseChatModel._should_stream).parameters
    assert list(parameters) == ["self", "async_api", "run_manager", "kwargs"]
    assert parameters["async_api"].kind is inspect.Parameter.KEYWORD_ONLY
    assert langchain_should_stream(_chat_model(), None, {"stream": True}) is True
    assert langchain_should_stream(_chat_model(), None, {}) is False


async def test_a_clients_generate_and_stream_below_the_callbacks_keep_their_signatures() -> None:
    assert list(inspect.signature(BaseChatModel._agenerate).parameters) == CALL_PARAMETERS
    assert list(inspect.signature(BaseChatModel._astream).parameters) == CALL_PARAMETERS
    question = [HumanMessage(content="why is checkout slow?")]

    result = await client_agenerate(_chat_model(), question, None, {})
    assert result.generations[0].message.content == "disk full on db-1"
    chunks = [chunk.message.content async for chunk in client_astream(_chat_model(), question, None, {})]
    assert "".join(str(c) for c in chunks) == "disk full on db-1"


@pytest.mark.postgres
async def test_the_postgres_saver_writes_through_its_pipeline_cursor(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 4: every write of a save reaches the group commit through ``_cursor(pipeline=True)``."""
    parameters = inspect.signature(AsyncPostgresSaver._cursor).parameters
    assert parameters["pipeline"].kind is inspect.Parameter.KEYWORD_ONLY
    batched: list[Statement] = []
    run = GroupCommit.run

    async def recording(group: GroupCommit, statements: list[Statement]) -> None:
        batched.extend(statements)
        await run(group, statements)

    monkeypatch.setattr(GroupCommit, "run", recording)
    checkpoints = Checkpoints(postgres_url)
    saver = await checkpoints.open()
    assert isinstance(saver, GroupCommitPostgresSaver)
    thread = str(uuid.uuid4())
    try:
        config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"evidence": ["disk full"]}
        checkpoint["channel_versions"] = {"evidence": 1}
        stored = await saver.aput(config, checkpoint, {"source": "loop", "step": 1}, {"evidence": 1})
        await saver.aput_writes(stored, [("evidence", "latency")], task_id="task-1")
        written = " ".join(sql for sql, _ in batched)
        for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"):
            assert f"INSERT INTO {table}" in written, written
        fetched = await saver.aget_tuple(stored)
        assert fetched is not None and fetched.pending_writes == [("task-1", "evidence", "latency")]
    finally:
        await saver.adelete_thread(thread)
        await checkpoints.close()


async def test_the_sqlite_saver_has_the_tables_and_columns_written(tmp_path: Path) -> None:
    """Item 5: the group-commit saver writes the stock saver's rows, so their columns must be these."""
    async with aiosqlite.connect(tmp_path / "checkpoints.db") as conn:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        assert saver.conn is conn and saver.lock is not None
        for table, columns in SQLITE_SAVER_COLUMNS.items():
            described = await (await conn.execute(f"PRAGMA table_info({table})")).fetchall()
            assert tuple(row[1] for row in described) == columns
