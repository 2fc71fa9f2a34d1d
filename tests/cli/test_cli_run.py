"""``aiops-executor run``: the examples end to end on the simulator, input errors, the live view, Ctrl-C.

The runs use the embedded SQLite default in a temporary data dir (the simulator provider is seeded there)
and probe the real local PostgreSQL and Redis through the example topologies.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import validators
from rich.console import Console
from typer.testing import CliRunner

from aiops_executor.cli import app
from aiops_executor.console.team_file import InputProblem, error_path, load_team_file
from aiops_executor.console.view import RunView, render_result
from aiops_executor.core.settings import get_settings
from aiops_executor.engine import EventType, ExecutionEvent, NodeResult, NodeStatus, RunOutcome, RunStatus, Usage
from aiops_executor.engine.results import AgentResult
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.llm.catalog import ModelCatalog, ModelEntry, ProviderEntry
from aiops_executor.llm.schemas import Capability
from aiops_executor.llm.service import SIMULATOR_MODEL, SIMULATOR_PROVIDER
from aiops_executor.teams.validation import validate_team
from aiops_executor.tools.builtin import default_registry
from tests.conftest import fast_hashing_env
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
EXAMPLES = ROOT / "examples"
LOCAL_MACHINE = EXAMPLES / "local-machine.json"
WEBSHOP = EXAMPLES / "webshop.json"
OUTPUT_SCHEMA = EXAMPLES / "output-schema.json"

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name in list(os.environ):
        if name.startswith("AIOPS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    values = {"AIOPS_DATA_DIR": str(tmp_path / "data"), "AIOPS_ENV": "dev", **fast_hashing_env()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


def _run(*args: str) -> tuple[int, str, str]:
    get_settings.cache_clear()
    result = runner.invoke(app, ["run", *args])
    return result.exit_code, result.stdout, result.stderr


def _events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def _check_stream(events: list[dict[str, Any]]) -> None:
    """The contract's JSON lines: gap-free ids from 1, common fields, ids per event kind, one terminal event."""
    stored = [e for e in events if e["event"] not in ("agent_token", "agent_tokens_discarded")]
    assert [e["id"] for e in stored] == list(range(1, len(stored) + 1))
    assert all(e["id"] is None and "seq" not in e["data"] for e in events if e not in stored)  # live only
    assert events[0]["event"] == "execution_start"
    execution_ids = {e["data"]["execution_id"] for e in events}
    assert len(execution_ids) == 1
    uuid.UUID(execution_ids.pop())
    for event in events:
        assert set(event) == {"event", "id", "data"}
        data = event["data"]
        assert data.get("seq") == event["id"]
        assert data["team_id"] and data["timestamp"].endswith("Z")
        kind = event["event"]
        if kind.startswith("node_") or kind in ("agent_message", "agent_token", "tool_call"):
            assert data.get("node_id"), event
        if "supervisor" in kind:
            assert data.get("supervisor_id"), event
        if kind in ("agent_message", "agent_token", "tool_call"):
            assert data.get("agent_id"), event
    terminal = [e for e in events if e["event"] in ("execution_complete", "execution_error", "execution_cancelled")]
    assert terminal == [events[-1]]


def _tool_outputs(events: list[dict[str, Any]], tool: str) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["event"] == "tool_call" and e["data"]["tool"] == tool]


# ------------------------------------------------------------------------------------------- the examples


def test_local_machine_json_stream_has_real_diagnostics(env: dict[str, str]) -> None:
    code, stdout, stderr = _run(str(LOCAL_MACHINE), "--task", "Are the local data stores healthy?", "--json")
    assert code == 0, stderr
    events = _events(stdout)  # nothing but JSON lines on stdout
    _check_stream(events)
    assert events[-1]["event"] == "execution_complete"
    complete = events[-1]["data"]
    assert complete["status"] == "success"
    assert {n["node_id"]: n["status"] for n in complete["result"]["node_results"]} == {
        "postgres": "success",
        "redis": "success",
    }

    (postgres,) = _tool_outputs(events, "postgres_diagnostics")
    assert postgres["status"] == "success" and postgres["node_id"] == "postgres"
    assert postgres["output"]["connected"] is True
    assert postgres["output"]["server_version"][:2].isdigit()  # e.g. "15.20 (Debian ...)"
    assert postgres["output"]["connections"]["max_connections"] > 0

    (redis,) = _tool_outputs(events, "redis_info")
    assert redis["status"] == "success" and redis["node_id"] == "redis"
    assert redis["output"]["connected"] is True and redis["output"]["version"][0].isdigit()

    ports = {e["output"]["port"]: e["output"]["reachable"] for e in _tool_outputs(events, "tcp_check")}
    assert ports == {5432: True, 6379: True}


def test_webshop_runs_and_a_service_that_is_down_is_a_finding(env: dict[str, str]) -> None:
    code, stdout, stderr = _run(str(WEBSHOP), "--task", "Why is checkout slow?", "--json", "--timeout", "60")
    assert code == 0, stderr
    events = _events(stdout)
    _check_stream(events)
    node_results = events[-1]["data"]["result"]["node_results"]
    assert {n["status"] for n in node_results} == {"success"}
    # Nothing listens on the services' ports here: the probes say so, and the run still succeeds.
    http = _tool_outputs(events, "http_check")
    assert http and all(call["status"] == "success" and call["output"]["reachable"] is False for call in http)
    # ... and each such probe is failed evidence: the services are suspects, ranked from the topology.
    assert all(call["verdict"] == "failed" for call in http)
    suspects = events[-1]["data"]["result"]["suspects"]
    assert suspects and suspects[0]["rank"] == 1 and suspects[0]["evidence_seqs"]
    # Hierarchical is dataflow: every node team is dispatched at once; the gateway starts its work only once
    # every node team it calls (catalog, orders) has finished.
    waves = [e["data"]["next_nodes"] for e in events if e["event"] == "global_supervisor_decision"]
    assert len(waves) == 2 and len(waves[0]) == 6 and waves[-1] == []
    gateway_starts = min(i for i, e in enumerate(events) if e["data"].get("node_id") == "gateway")
    finished = [e["data"]["node_id"] for e in events[:gateway_starts] if e["event"] == "node_complete"]
    assert {"catalog", "orders"} <= set(finished)


def test_output_schema_gives_valid_structured_output(env: dict[str, str]) -> None:
    code, stdout, stderr = _run(
        str(LOCAL_MACHINE), "--task", "Write an incident report", "--json", "--output-schema", str(OUTPUT_SCHEMA)
    )
    assert code == 0, stderr
    complete = _events(stdout)[-1]["data"]
    schema = json.loads(OUTPUT_SCHEMA.read_text())
    structured = complete["structured_output"]
    assert not list(validators.validator_for(schema)(schema).iter_errors(structured))
    assert structured["overall_status"] in ("healthy", "degraded", "down", "unknown")


def test_the_live_view_prints_the_tree_and_the_result(env: dict[str, str]) -> None:
    code, stdout, stderr = _run(str(LOCAL_MACHINE), "--task", "Are the local data stores healthy?")
    assert code == 0, stderr
    for expected in ("local-machine-diagnosis", "postgres_diagnostics", "redis_info", "success in", "usage"):
        assert expected in stdout
    assert "✔ postgres" in stdout and "✔ redis" in stdout


def test_examples_pass_validation() -> None:
    provider_id = uuid.uuid4()
    capabilities = {
        c.value: {"supported": True, "score": 3}
        for c in (Capability.chat, Capability.function_calling, Capability.structured_output, Capability.streaming)
    }
    catalog = ModelCatalog(
        [ProviderEntry(provider_id, SIMULATOR_PROVIDER, "simulator", True)],
        [ModelEntry(uuid.uuid4(), provider_id, SIMULATOR_MODEL, "chat", "available", capabilities)],
    )
    for path in (WEBSHOP, LOCAL_MACHINE):
        report = validate_team(load_team_file(path), catalog, default_registry().names())
        assert report.valid, (path.name, report.errors)
        assert not report.warnings, (path.name, report.warnings)
    webshop = load_team_file(WEBSHOP)
    assert {e.relation_type.value for e in webshop.topology.edges} == {
        "calls",
        "depends_on",
        "data_flow",
        "integrates",
        "monitors",
    }
    schema = json.loads(OUTPUT_SCHEMA.read_text())
    validators.validator_for(schema).check_schema(schema)


# ------------------------------------------------------------------------------------------- bad input


def test_a_file_that_is_not_json_gives_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"team_name": "x",\n  "topology": [1, 2,]}')
    code, stdout, stderr = _run(str(bad), "--task", "t", "--json")
    assert code == 2 and stdout == ""
    assert stderr.strip() == f"error: team file {bad} is not valid JSON: Expecting value at line 2, column 21"

    code, stdout, stderr = _run(str(tmp_path / "missing.json"), "--task", "t")
    assert code == 2 and "does not exist" in stderr and stdout == ""


def test_schema_errors_list_each_path(env: dict[str, str], tmp_path: Path) -> None:
    team = json.loads(LOCAL_MACHINE.read_text())
    del team["team_name"]
    team["topology"]["nodes"][1]["agents"][0]["temperature"] = 7
    team["topology"]["edges"] = [{"source_node_id": "postgres", "target_node_id": "redis", "relation_type": "likes"}]
    path = tmp_path / "team.json"
    path.write_text(json.dumps(team))
    code, stdout, stderr = _run(str(path), "--task", "t", "--json")
    assert code == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert lines[0] == f"error: team file {path} is not a valid team definition (3 problems):"
    assert lines[1].startswith("  team_name: Field required")
    assert lines[2].startswith("  topology.nodes[1].agents[0].temperature: ")
    assert lines[3].startswith("  topology.edges[0].relation_type: ")


def test_an_invalid_topology_lists_every_problem_with_its_path(env: dict[str, str], tmp_path: Path) -> None:
    team = json.loads(LOCAL_MACHINE.read_text())
    team["timeout_seconds"] = 5000
    node = team["topology"]["nodes"][0]
    node["agents"][0]["model_id"] = "gpt-nope"
    node["agents"][1]["tools"] = ["postgres_diagnostics", "rm_rf"]
    team["topology"]["edges"] = [{"source_node_id": "postgres", "target_node_id": "ghost", "relation_type": "calls"}]
    path = tmp_path / "team.json"
    path.write_text(json.dumps(team))
    code, stdout, stderr = _run(str(path), "--task", "t", "--json")
    assert code == 2 and stdout == ""
    assert f"error: team file {path} has an invalid topology (4 problems):" in stderr
    for expected in (
        "timeout_seconds: ",
        "topology.nodes[0].agents[0].model_id: ",
        "topology.nodes[0].agents[1].tools[1]: ",
        "topology.edges[0].target_node_id: ",
    ):
        assert f"\n  {expected}" in stderr, expected
    assert "[MODEL_NOT_FOUND]" in stderr and "[TOOL_NOT_FOUND]" in stderr and "[UNKNOWN_NODE]" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--context", "[1, 2]"], "--context must be a JSON object"),
        (["--context", "{oops"], "--context is not valid JSON"),
        (["--output-schema", "/nonexistent/schema.json"], "does not exist"),
    ],
)
def test_bad_options_are_refused(env: dict[str, str], args: list[str], message: str) -> None:
    code, stdout, stderr = _run(str(LOCAL_MACHINE), "--task", "t", "--json", *args)
    assert code == 2 and stdout == "" and message in stderr


def test_error_paths_read_like_the_api() -> None:
    assert error_path(("topology", "nodes", 3, "agents", 0, "model_id")) == "topology.nodes[3].agents[0].model_id"
    assert error_path(()) == "(the whole document)"
    with pytest.raises(InputProblem, match="not a valid team definition"):
        load_team_file(EXAMPLES / "output-schema.json")


# ------------------------------------------------------------------------------------------- the live view


def _event(seq: int, kind: EventType, **fields: Any) -> ExecutionEvent:
    ids = {key: fields.pop(key) for key in ("node_id", "agent_id", "supervisor_id") if key in fields}
    return ExecutionEvent(kind, "e", "t", seq, datetime.now(UTC), data=fields, **ids)


def _render(renderable: Any, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, height=60, color_system=None)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def test_run_view_follows_the_events() -> None:
    view = RunView.for_team(load_team_file(LOCAL_MACHINE))
    postgres = {"node_id": "postgres"}
    probe = {"node_id": "postgres", "agent_id": "port-probe"}
    tcp = {"tool": "tcp_check", "input": {}, "output": {"host": "127.0.0.1", "port": 5432, "reachable": True}}
    stream = [
        _event(1, EventType.execution_start, input={}),
        _event(2, EventType.global_supervisor_decision, decision="run both", next_nodes=["postgres", "redis"]),
        _event(3, EventType.node_supervisor_decision, **postgres, decision="go", next_agents=["port-probe"]),
        _event(4, EventType.tool_call, **probe, **tcp, status="success", duration_ms=1.2),
        _event(5, EventType.agent_token, **probe, delta="the port is"),
        _event(6, EventType.agent_token, **probe, delta=" open"),
    ]
    for event in stream:
        view.apply(event)
    text = _render(view)
    assert "tcp_check ✔ 1 ms host=127.0.0.1, port=5432, reachable=True" in text
    assert "▸ …the port is open" in text
    assert "○ dba" in text and "○ redis-probe" in text

    view.apply(
        _event(7, EventType.agent_message, node_id="postgres", agent_id="port-probe", message="open", status="success")
    )
    view.apply(
        _event(8, EventType.node_complete, node_id="redis", status="skipped", result={"error": "upstream failed"})
    )
    text = _render(view)
    assert "✔ port-probe" in text and "▸" not in text
    assert "⊘ redis" in text and "⊘ redis-probe" in text and "upstream failed" in text


def test_run_view_folds_a_large_team_to_the_terminal_height() -> None:
    team = json.loads(LOCAL_MACHINE.read_text())
    template = team["topology"]["nodes"][0]
    team["topology"]["nodes"] = [{**template, "node_id": f"n{i}"} for i in range(40)]
    view = RunView.for_team(TeamSpec.model_validate(team))
    view.apply(_event(1, EventType.node_supervisor_decision, node_id="n7", decision="go", next_agents=["dba"]))
    lines = view.render(20)
    text = _render(lines)
    assert len(text.splitlines()) <= 20
    assert "n7" in text and "dba" in text  # the busy team stays expanded
    assert "more node teams (" in text


def test_render_result_shows_status_nodes_usage_and_structured_output() -> None:
    spec = load_team_file(LOCAL_MACHINE)
    outcome = RunOutcome(
        RunStatus.cancelled,
        "",
        [
            NodeResult("postgres", NodeStatus.success, "all good\nsecond line", [AgentResult("dba", "fine")]),
            NodeResult("redis", NodeStatus.cancelled, "", error="node team cancelled"),
        ],
        1234,
        Usage(120, 45, Decimal("0.0012")),
        structured_output={"summary": "s"},
        error_message="the execution was cancelled",
    )
    text = _render(render_result(outcome, spec, execution_id="e-1", structured_requested=True))
    assert "cancelled in 1.23 s (partial result)" in text
    assert "the execution was cancelled" in text
    assert "all good" in text and "node team cancelled" in text and "1/2 ✔" in text
    assert "120 input tokens · 45 output tokens · cost 0.001200" in text
    assert '"summary": "s"' in text


def test_render_result_shows_node_verdicts_and_the_suspects_causes_first() -> None:
    spec = load_team_file(LOCAL_MACHINE)
    evidence = [{"seq": 7, "tool": "redis_info", "verdict": "failed", "signals": ["connection refused"]}]
    outcome = RunOutcome(
        RunStatus.success,
        "redis is down",
        [
            NodeResult("postgres", NodeStatus.success, "fine", verdict="ok"),
            NodeResult("redis", NodeStatus.success, "down", verdict="failed", evidence=evidence),
        ],
        10,
        suspects=[
            {
                "node_id": "redis",
                "rank": 1,
                "verdict": "failed",
                "reasons": ["redis_info: connection refused", "1 failing node(s) depend on it"],
                "evidence_seqs": [7],
            }
        ],
    )
    text = _render(render_result(outcome, spec, execution_id="e-1", structured_requested=False))
    assert "suspects" in text and "redis_info: connection refused" in text and "#7" in text
    assert text.index("suspects") < text.index("fine")  # the suspects before the node table
    assert "failed" in text and "ok" in text


def test_render_result_says_unknown_for_usage_a_provider_did_not_report() -> None:
    spec = load_team_file(LOCAL_MACHINE)
    outcome = RunOutcome(RunStatus.success, "done", [], 10, Usage(120, None, None))
    text = _render(render_result(outcome, spec, execution_id="e-1", structured_requested=False))
    assert "120 input tokens · unknown output tokens · cost unknown" in text


# ------------------------------------------------------------------------------------------- Ctrl-C


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_cancels_the_run_and_prints_the_partial_result(env: dict[str, str], tmp_path: Path) -> None:
    # Prepare the data dir, then slow the simulator down so the run is still going when Ctrl-C arrives.
    code, _, stderr = _run(str(LOCAL_MACHINE), "--task", "warm-up", "--json")
    assert code == 0, stderr
    with sqlite3.connect(tmp_path / "data" / "aiops.db") as db:
        db.execute("UPDATE llm_models SET default_params = ? WHERE model_id = ?", ('{"latency_ms": 1000}', "sim-1"))

    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("w") as stderr_sink:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            [sys.executable, "-m", "aiops_executor.cli", "run", str(LOCAL_MACHINE), "--task", "slow", "--json"],
            stdout=subprocess.PIPE,
            stderr=stderr_sink,
            text=True,
            env={**os.environ, **env},
            cwd=tmp_path,
        )
        try:
            assert process.stdout is not None
            lines = []
            for line in process.stdout:  # wait until agents are at work
                lines.append(line)
                if json.loads(line)["event"] == "node_supervisor_decision":
                    break
            process.send_signal(signal.SIGINT)
            lines.append(process.stdout.read())  # the same buffered reader: nothing read ahead is lost
            process.wait(timeout=30)
        finally:
            process.kill()
    stderr = stderr_file.read_text()
    events = _events("".join(lines))
    _check_stream(events)
    assert events[-1]["event"] == "execution_cancelled", stderr
    assert process.returncode == 130
    assert "cancelling the run" in stderr and "Traceback" not in stderr
    assert events[-1]["data"]["status"] == "cancelled"
    assert {n["status"] for n in events[-1]["data"]["result"]["node_results"]} == {"cancelled"}
