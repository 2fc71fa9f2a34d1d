"""``aiops-executor demo``: the whole product on the embedded default, offline, in one command.

It starts the HTTP service, signs in as the admin, creates (or refreshes) the team that probes this
machine's PostgreSQL and Redis, executes it over the public API with ``stream: true``, shows the live SSE
stream as a tree, then the execution's result and structured output as ``GET /executions/{id}`` returns it.
Everything goes through the same routes a client would use.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from aiops_executor.auth.service import admin_credentials
from aiops_executor.console.errors import api_refusal
from aiops_executor.console.serving import AppServer
from aiops_executor.console.team_file import InputProblem, load_output_schema, load_team_file
from aiops_executor.console.view import RunView, render_result
from aiops_executor.core.listening import bind_listening_socket
from aiops_executor.core.settings import Settings
from aiops_executor.engine import EventType, ExecutionEvent, NodeResult, RunOutcome, RunStatus, Usage
from aiops_executor.engine.topology import TeamSpec

API = "/api/v1"
CHECKOUT = Path(__file__).resolve().parents[3]
DEFAULT_TEAM_FILE = CHECKOUT / "examples" / "local-machine.json"
DEFAULT_SCHEMA_FILE = CHECKOUT / "examples" / "output-schema.json"
DEMO_TASK = "Check the health of this machine's data stores and report anything an on-call SRE should know."
COMMON_FIELDS = ("execution_id", "team_id", "seq", "timestamp", "node_id", "agent_id", "supervisor_id")
EXIT_OK, EXIT_FAILED = 0, 1


@dataclass(frozen=True)
class DemoOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    team_file: Path = DEFAULT_TEAM_FILE
    schema_file: Path = DEFAULT_SCHEMA_FILE
    task: str = DEMO_TASK
    keep_serving: bool = False


class DemoError(Exception):
    """A step of the demo failed; the message says which and why."""


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """(id, event, data) of each Server-Sent Event in the response."""
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield fields.get("id", ""), fields.get("event", "message"), json.loads("\n".join(data))
            fields, data = {}, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            else:
                fields[name] = value


def event_from_payload(kind: str, payload: dict[str, Any]) -> ExecutionEvent:
    return ExecutionEvent(
        type=EventType(kind),
        execution_id=payload["execution_id"],
        team_id=payload["team_id"],
        seq=int(payload.get("seq") or 0),  # token deltas have none: they are live only
        timestamp=datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")),
        node_id=payload.get("node_id"),
        agent_id=payload.get("agent_id"),
        supervisor_id=payload.get("supervisor_id"),
        data={k: v for k, v in payload.items() if k not in COMMON_FIELDS},
    )


def outcome_from_execution(body: dict[str, Any]) -> RunOutcome:
    """``GET /executions/{id}`` as the outcome the result view renders."""
    result = body.get("result") or {"summary": "", "node_results": []}
    usage = body.get("usage") or {}
    return RunOutcome(
        status=RunStatus(body["status"]),
        summary=result.get("summary", ""),
        node_results=[NodeResult.from_dict(node) for node in result.get("node_results", [])],
        duration_ms=int(body.get("duration_ms") or 0),
        usage=Usage.from_dict(usage),
        supervisor_usage=Usage.from_dict(result.get("supervisor_usage")),
        suspects=list(result.get("suspects") or []),
        structured_output=body.get("structured_output"),
        error_code=body.get("error_code"),
        error_message=body.get("error_message"),
    )


def _admin_credentials(settings: Settings) -> tuple[str, str]:
    try:
        return admin_credentials(settings)
    except LookupError as exc:
        raise DemoError(str(exc)) from None


async def _check(response: httpx.Response, step: str, *, streaming: bool = False) -> dict[str, Any]:
    """The JSON body of a successful response (nothing for a stream); a failed one raises ``DemoError``."""
    if response.status_code >= 400:
        await response.aread()
        raise DemoError(f"{step} failed ({api_refusal(response.status_code, response.content)})")
    if streaming:
        return {}
    return dict(response.json()) if response.content else {}


async def _ensure_team(client: httpx.AsyncClient, spec: TeamSpec, out: Console) -> str:
    """The demo team's id: created, or refreshed from the file when an earlier demo left it."""
    body = spec.model_dump(mode="json")
    response = await client.post(f"{API}/teams", json=body)
    if response.status_code == 409:
        teams = await _check(await client.get(f"{API}/teams", params={"size": 100}), "listing teams")
        existing = next((t for t in teams["items"] if t["team_name"] == spec.team_name), None)
        if existing is None:
            raise DemoError(f"team {spec.team_name!r} exists but could not be found")
        team_id = str(existing["team_id"])
        await _check(await client.put(f"{API}/teams/{team_id}", json={**body, "status": "active"}), "updating the team")
        out.print(f"team [bold]{escape(spec.team_name)}[/bold] refreshed ({team_id})")
        return team_id
    created = await _check(response, "creating the team")
    out.print(f"team [bold]{escape(spec.team_name)}[/bold] created ({created['team_id']})")
    return str(created["team_id"])


async def _start_server(settings: Settings, options: DemoOptions) -> tuple[AppServer, asyncio.Task[None], str]:
    """The service, serving; a busy port or a failed start-up raises, for the CLI's error handler."""
    from aiops_executor.app import create_app

    listening = bind_listening_socket(options.host, options.port)
    started = asyncio.Event()
    server = AppServer(create_app(settings), on_listening=lambda _port: started.set())
    task = asyncio.create_task(server.serve(sockets=[listening]))
    waiting = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if not started.is_set():
        task.result()  # raises the start-up failure
        raise DemoError("the service stopped before it started")
    return server, task, f"http://{options.host}:{server.bound_port}"


async def _stream_run(
    client: httpx.AsyncClient, team_id: str, spec: TeamSpec, body: dict[str, Any], out: Console
) -> str:
    """Runs the team with ``stream: true`` and shows the live tree; returns the execution id."""
    view = RunView.for_team(spec)
    execution_id = ""
    last_refresh = 0.0
    with Live(view, console=out, auto_refresh=False, transient=False) as live:
        async with client.stream("POST", f"{API}/teams/{team_id}/execute", json={**body, "stream": True}) as response:
            await _check(response, "starting the execution", streaming=True)
            execution_id = response.headers["location"].rsplit("/", 1)[-1]
            async for _, kind, payload in sse_events(response):
                if kind == EventType.heartbeat:
                    continue
                event = event_from_payload(kind, payload)
                view.apply(event)
                now = time.monotonic()
                if event.is_terminal or now - last_refresh > 0.1:
                    live.refresh()
                    last_refresh = now
    if not out.is_terminal:  # rich ends the last frame with a newline only on terminals
        out.line()
    return execution_id


async def run_demo(settings: Settings, options: DemoOptions, out: Console, err: Console) -> int:
    try:
        spec = load_team_file(options.team_file)
        schema = load_output_schema(options.schema_file)
    except InputProblem as problem:
        problem.print(err)
        return EXIT_FAILED
    try:
        server, serving, base_url = await _start_server(settings, options)
    except DemoError as exc:
        err.print(f"[red]demo:[/red] {escape(str(exc))}")
        return EXIT_FAILED
    try:
        out.print(
            f"service running at [bold]{base_url}[/bold] "
            f"(API docs at {base_url}/docs, web console at {base_url}/console/)"
        )
        username, password = _admin_credentials(settings)
        async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30, read=None)) as client:
            token = await _check(
                await client.post(f"{API}/auth/token", data={"username": username, "password": password}), "signing in"
            )
            client.headers["Authorization"] = f"Bearer {token['access_token']}"
            team_id = await _ensure_team(client, spec, out)
            body = {"input": {"task": options.task, "context": {}}, "output_schema": schema}
            out.print(f"task: {escape(options.task)}")
            execution_id = await _stream_run(client, team_id, spec, body, out)
            execution = await _check(await client.get(f"{API}/executions/{execution_id}"), "reading the result")
        outcome = outcome_from_execution(execution)
        out.print(render_result(outcome, spec, execution_id=execution_id, structured_requested=True))
        out.print(
            f"events: GET {base_url}{API}/executions/{execution_id}/events · "
            f"re-attach: GET {base_url}{API}/executions/{execution_id}/stream"
        )
        if options.keep_serving:
            out.print(
                f"the service keeps running (this run in the web console: "
                f"{base_url}/console/#/executions/{execution_id}); Ctrl-C stops it"
            )
            await serving
        return EXIT_OK if outcome.status is RunStatus.success else EXIT_FAILED
    except DemoError as exc:
        err.print(f"[red]demo:[/red] {escape(str(exc))}")
        return EXIT_FAILED
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
