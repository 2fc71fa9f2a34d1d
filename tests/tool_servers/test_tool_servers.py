"""MCP tool servers: /tool-servers, their tools in /tools, topologies and runs, over stdio and streamable HTTP.

The server is ``tests/mcp_server.py`` (FastMCP): started by the service for stdio, and as a process of the test
on a loopback port for streamable HTTP. Runs use the simulator, whose agents call each of their tools once with
arguments taken from the node's attributes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from aiops_executor.app import create_app
from aiops_executor.core.settings import Settings
from aiops_executor.services import ServiceContext
from aiops_executor.tool_servers import service as tool_servers
from aiops_executor.tool_servers.client import MAX_MESSAGE_BYTES, ServerConfig, ServerUnreachable, ToolServerPool
from aiops_executor.tool_servers.stdio import split_lines
from aiops_executor.tools.builtin import default_registry
from aiops_executor.tools.registry import ToolContext
from tests.conftest import RoleHeaders, make_settings
from tests.helpers import API, REPO_ROOT, add_simulator, assert_error

SERVER_SCRIPT = REPO_ROOT / "tests" / "mcp_server.py"
TOKEN = "tok-0123456789-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stdio_body(name: str = "tools", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "stdio",
        "command": sys.executable,
        "args": [str(SERVER_SCRIPT), "stdio"],
        "env": {"MCP_TEST_TOKEN": TOKEN, **extra.pop("env", {})},
        **extra,
    }


def http_body(port: int, name: str = "tools", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "streamable_http",
        "url": f"http://127.0.0.1:{port}/mcp",
        "headers": {"X-Test-Token": TOKEN},
        **extra,
    }


async def register(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    """Registers a server and lists its tools (registering alone connects to nothing)."""
    created = await client.post(f"{API}/tool-servers", json=body, headers=headers)
    assert created.status_code == 201, created.text
    refreshed = await client.post(f"{API}/tool-servers/{created.json()['id']}/refresh", headers=headers)
    assert refreshed.status_code == 200, refreshed.text
    return dict((await client.get(f"{API}/tool-servers/{created.json()['id']}", headers=headers)).json())


class HttpServer:
    """``tests/mcp_server.py`` over streamable HTTP, as a process of its own (killed for real)."""

    def __init__(self, port: int, marker_dir: Path) -> None:
        self.port = port
        self.marker_dir = marker_dir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "MCP_TEST_MARKER_DIR": str(self.marker_dir)}
        self.process = subprocess.Popen(  # noqa: S603 - the test's own server script
            [sys.executable, str(SERVER_SCRIPT), "http", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the MCP test server exited"
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("the MCP test server did not start listening")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def team_body(name: str, tools: list[str], attributes: dict[str, Any], **agent: Any) -> dict[str, Any]:
    ref = {"model_provider": "local-sim", "model_id": "sim-1"}
    return {
        "team_name": name,
        "timeout_seconds": 120,
        "topology": {
            "nodes": [
                {
                    "node_id": "cluster",
                    "node_name": "Cluster",
                    "node_type": "service",
                    "attributes": attributes,
                    "agents": [{"agent_id": "operator", "agent_name": "Operator", **ref, "tools": tools, **agent}],
                    "supervisor_config": {**ref, "coordination_strategy": "round_robin"},
                }
            ],
            "edges": [],
            "global_supervisor": {**ref, "coordination_strategy": "sequential"},
        },
    }


async def make_team(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    response = await client.post(f"{API}/teams", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["team_id"])


async def run(client: httpx.AsyncClient, headers: dict[str, str], team_id: str) -> dict[str, Any]:
    response = await client.post(
        f"{API}/teams/{team_id}/execute",
        json={"input": {"task": "check the cluster"}, "stream": False},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def events(client: httpx.AsyncClient, headers: dict[str, str], execution_id: str) -> list[dict[str, Any]]:
    page = await client.get(f"{API}/executions/{execution_id}/events", params={"size": 100}, headers=headers)
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


def tool_calls(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["data"]["tool"]: e["data"] for e in items if e["event"] == "tool_call"}


async def audit_calls(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    page = await client.get(
        f"{API}/audit-logs",
        params={"resource_type": "tool_server", "action": "call_tool", "size": 100},
        headers=headers,
    )
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


# ------------------------------------------------------------------------------------------------ the resource


async def test_a_stdio_server_is_registered_with_its_tools_and_its_secrets_masked(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: ServiceContext
) -> None:
    response = await client.post(f"{API}/tool-servers", json=stdio_body(), headers=admin_headers)
    assert response.status_code == 201, response.text
    assert response.json()["tools"] == [] and response.json()["tools_refreshed_at"] is None  # nothing started yet
    server = await register(client, admin_headers, stdio_body("listed"))
    assert server["env"] == {"MCP_TEST_TOKEN": "tok-...cret"}
    assert server["last_error"] is None and server["tools_refreshed_at"]
    tools = {t["name"]: t for t in server["tools"]}
    assert {"echo", "add", "slow", "broken", "secret_echo", "restart_pod"} <= set(tools)
    assert tools["add"]["input_schema"]["required"] == ["a", "b"]
    assert TOKEN not in response.text

    # Stored encrypted: the plaintext is nowhere in the row.
    async with context.database.sessionmaker() as session:
        rows = (await session.execute(text("SELECT * FROM tool_servers"))).mappings().all()
    assert len(rows) == 2 and TOKEN not in repr([dict(row) for row in rows])
    assert all(row["env_encrypted"].startswith("v1.") for row in rows)

    listed = await client.get(f"{API}/tool-servers", headers=admin_headers)
    assert listed.json()["total"] == 2 and listed.json()["items"][0]["id"] == server["id"]  # by name
    assert_error(
        await client.post(f"{API}/tool-servers", json=stdio_body(), headers=admin_headers),
        409,
        "TOOL_SERVER_NAME_EXISTS",
    )

    refreshed = await client.post(f"{API}/tool-servers/{server['id']}/refresh", headers=admin_headers)
    assert refreshed.status_code == 200, refreshed.text
    assert {t["name"] for t in refreshed.json()["tools"]} == set(tools)

    catalogue = await client.get(f"{API}/tools", params={"size": 100}, headers=admin_headers)
    by_name = {t["name"]: t for t in catalogue.json()["items"]}
    assert by_name["listed.add"]["server"] == "listed" and "tools.add" not in by_name
    assert by_name["listed.add"]["args_schema"]["properties"]["a"]["type"] == "integer"
    assert "http_check" in by_name


async def test_updates_replace_secrets_whole_and_check_the_transport(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    server = (await client.post(f"{API}/tool-servers", json=stdio_body(), headers=admin_headers)).json()
    path = f"{API}/tool-servers/{server['id']}"

    kept = await client.put(path, json={"approval_required": True}, headers=admin_headers)
    assert kept.status_code == 200, kept.text
    assert kept.json()["env"] == {"MCP_TEST_TOKEN": "tok-...cret"} and kept.json()["approval_required"] is True

    replaced = await client.put(path, json={"env": {"OTHER": "short"}}, headers=admin_headers)
    assert replaced.json()["env"] == {"OTHER": "****"}

    mixed = await client.put(path, json={"transport": "streamable_http"}, headers=admin_headers)
    body = assert_error(mixed, 422, "VALIDATION_ERROR")
    assert "needs a url" in body["error_message"] and "takes no command" in body["error_message"]

    renamed = await client.put(path, json={"name": "k8s"}, headers=admin_headers)
    assert renamed.json()["name"] == "k8s"
    assert_error(await client.put(path, json={"name": None}, headers=admin_headers), 422, "VALIDATION_ERROR")

    assert (await client.delete(path, headers=admin_headers)).status_code == 204
    assert_error(await client.get(path, headers=admin_headers), 404, "TOOL_SERVER_NOT_FOUND")
    assert_error(await client.post(f"{path}/refresh", headers=admin_headers), 404, "TOOL_SERVER_NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "transport": "stdio"},
        {"name": "x", "transport": "stdio", "command": "c", "url": "http://127.0.0.1:1/mcp"},
        {"name": "x", "transport": "streamable_http", "url": "ftp://127.0.0.1/mcp"},
        {"name": "x", "transport": "streamable_http", "url": "http://user:pw@127.0.0.1/mcp"},
        {"name": "x", "transport": "streamable_http", "url": "http://127.0.0.1/mcp", "env": {"A": "b"}},
        {"name": "x.y", "transport": "stdio", "command": "c"},
        {"name": "x", "transport": "stdio", "command": "c", "env": {"1BAD": "v"}},
        {"name": "x", "transport": "streamable_http", "url": "http://127.0.0.1/mcp", "headers": {"Bad Name": "v"}},
    ],
)
async def test_bodies_that_do_not_fit_are_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str], body: dict[str, Any]
) -> None:
    assert_error(await client.post(f"{API}/tool-servers", json=body, headers=admin_headers), 422, "VALIDATION_ERROR")


async def test_only_admins_write_and_anyone_signed_in_reads(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers: RoleHeaders
) -> None:
    server = (await client.post(f"{API}/tool-servers", json=stdio_body(), headers=admin_headers)).json()
    operator = await role_headers("operator")
    viewer = await role_headers("viewer")
    path = f"{API}/tool-servers/{server['id']}"
    assert_error(await client.post(f"{API}/tool-servers", json=stdio_body("b"), headers=operator), 403, "FORBIDDEN")
    assert_error(await client.put(path, json={"is_active": False}, headers=operator), 403, "FORBIDDEN")
    assert_error(await client.delete(path, headers=operator), 403, "FORBIDDEN")
    assert_error(await client.post(f"{path}/refresh", headers=operator), 403, "FORBIDDEN")
    read = await client.get(path, headers=viewer)
    assert read.status_code == 200 and TOKEN not in read.text
    assert_error(await client.get(f"{API}/tool-servers"), 401, "UNAUTHORIZED")


async def test_an_unreachable_server_is_stored_and_its_refresh_answers_502(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await client.post(f"{API}/tool-servers", json=http_body(free_port()), headers=admin_headers)
    assert created.status_code == 201, created.text
    path = f"{API}/tool-servers/{created.json()['id']}"
    refresh = await client.post(f"{path}/refresh", headers=admin_headers)
    body = assert_error(refresh, 502, "TOOL_SERVER_UNREACHABLE")
    assert TOKEN not in refresh.text and "'tools'" in body["error_message"] and "refused" in body["error_message"]
    stored = (await client.get(path, headers=admin_headers)).json()
    assert stored["tools"] == [] and "refused" in stored["last_error"]

    missing = stdio_body("gone", command="/nonexistent/mcp-server")
    created = await client.post(f"{API}/tool-servers", json=missing, headers=admin_headers)
    refresh = await client.post(f"{API}/tool-servers/{created.json()['id']}/refresh", headers=admin_headers)
    assert "not found" in assert_error(refresh, 502, "TOOL_SERVER_UNREACHABLE")["error_message"]


@asynccontextmanager
async def service(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    from asgi_lifespan import LifespanManager

    from tests.conftest import login

    application = create_app(settings)
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, await login(http, "admin", "admin-password-1")


async def test_production_refuses_stdio_servers_unless_allowed(database_url: str, tmp_path: Path) -> None:
    prod = {"env": "prod", "log_format": "json"}
    async with service(make_settings(database_url, tmp_path / "a", **prod)) as (client, headers):
        refused = await client.post(f"{API}/tool-servers", json=stdio_body(), headers=headers)
        body = assert_error(refused, 422, "VALIDATION_ERROR")
        assert "AIOPS_ALLOW_STDIO_TOOL_SERVERS" in body["error_message"]
    async with service(make_settings(database_url, tmp_path / "b", allow_stdio_tool_servers=True, **prod)) as (
        client,
        headers,
    ):
        allowed = await client.post(f"{API}/tool-servers", json=stdio_body(), headers=headers)
        assert allowed.status_code == 201, allowed.text


async def test_a_url_the_egress_policy_refuses_is_refused(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "a", egress_deny="10.0.0.0/8")
    async with service(settings) as (client, headers):
        refused = await client.post(
            f"{API}/tool-servers", json=http_body(9, url="http://10.1.2.3:9/mcp"), headers=headers
        )
        body = assert_error(refused, 422, "VALIDATION_ERROR")
        assert "10.0.0.0/8" in body["error_message"]


# ------------------------------------------------------------------------------------------------ topologies


async def test_topologies_name_server_tools_like_built_in_ones(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    await add_simulator(client, admin_headers)
    server = await register(client, admin_headers, stdio_body())
    good = await client.post(
        f"{API}/teams", json=team_body("ok", ["tools.echo", "tcp_check"], {}), headers=admin_headers
    )
    assert good.status_code == 201, good.text
    bad = await client.post(
        f"{API}/teams", json=team_body("bad", ["tools.nope", "other.echo"], {}), headers=admin_headers
    )
    errors = assert_error(bad, 400, "INVALID_TOPOLOGY")["details"]["errors"]
    assert [e["code"] for e in errors] == ["TOOL_NOT_FOUND", "TOOL_NOT_FOUND"]

    # A switched-off server lends no tools: its teams no longer validate.
    await client.put(f"{API}/tool-servers/{server['id']}", json={"is_active": False}, headers=admin_headers)
    report = await client.post(f"{API}/teams/{good.json()['team_id']}/validate", headers=admin_headers)
    assert report.json()["valid"] is False


# ------------------------------------------------------------------------------------------------ runs


ATTRIBUTES = {"text": "hello", "a": 2, "b": 3}
RUN_TOOLS = ["tools.echo", "tools.add", "tools.secret_echo", "tools.broken"]


async def _check_run(client: httpx.AsyncClient, headers: dict[str, str], team_id: str) -> dict[str, Any]:
    execution = await run(client, headers, team_id)
    assert execution["status"] == "success", execution
    calls = tool_calls(await events(client, headers, execution["execution_id"]))
    assert calls["tools.echo"]["status"] == "success" and calls["tools.echo"]["output"]["text"] == "echo: hello"
    assert calls["tools.echo"]["input"] == {"text": "hello"}
    assert calls["tools.add"]["output"]["text"] == "5"
    # The server received its secret, and what it said of it was scrubbed.
    assert calls["tools.secret_echo"]["status"] == "success"
    assert calls["tools.secret_echo"]["output"]["text"].endswith("token ***")
    assert calls["tools.broken"]["status"] == "error"
    assert calls["tools.broken"]["output"]["error_code"] == "TOOL_FAILED"
    assert "cannot handle hello" in calls["tools.broken"]["output"]["error_message"]
    agent = execution["result"]["node_results"][0]["agents"][0]
    assert "echo: hello" in agent["output"] and TOKEN not in str(execution)

    audited = [
        a for a in await audit_calls(client, headers) if a["details"]["execution_id"] == execution["execution_id"]
    ]
    assert {a["details"]["tool"] for a in audited} == {"echo", "add", "secret_echo", "broken"}
    echo = next(a for a in audited if a["details"]["tool"] == "echo")
    assert echo["actor"] == f"execution:{execution['execution_id']}"
    assert echo["details"]["arguments"] == {"text": "hello"} and echo["details"]["status"] == "success"
    assert echo["details"]["node_id"] == "cluster" and echo["details"]["agent_id"] == "operator"
    return execution


async def test_an_agent_uses_a_stdio_servers_tools(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    await add_simulator(client, admin_headers)
    await register(client, admin_headers, stdio_body())
    team_id = await make_team(client, admin_headers, team_body("stdio", RUN_TOOLS, ATTRIBUTES))
    await _check_run(client, admin_headers, team_id)
    await _check_run(client, admin_headers, team_id)  # the pooled connection serves the next run too


async def test_an_agent_uses_a_streamable_http_servers_tools(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    await add_simulator(client, admin_headers)
    with http_server(tmp_path) as server:
        created = await register(client, admin_headers, http_body(server.port))
        assert created["last_error"] is None, created
        team_id = await make_team(client, admin_headers, team_body("http", RUN_TOOLS, ATTRIBUTES))
        await _check_run(client, admin_headers, team_id)


def assert_no_evidence(finished: dict[str, Any], reason: str) -> None:
    """The run's only call failed for want of its server: nothing was observed, and the run says so."""
    assert finished["status"] == "failed", finished
    [node] = finished["result"]["node_results"]
    assert node["error_code"] == "NO_EVIDENCE" and node["error"] == f"no tool call observed the resource ({reason} x1)"


async def _wait_for_marker(directory: Path) -> int:
    for _ in range(400):
        markers = list(directory.glob("*.slow"))  # noqa: ASYNC240 - one small directory
        if markers:
            return int(markers[0].stem)
        await asyncio.sleep(0.025)
    raise AssertionError("the slow tool was never called")


async def test_a_http_server_killed_mid_run_is_a_tool_error_and_the_next_run_reconnects(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    await add_simulator(client, admin_headers)
    with http_server(tmp_path) as server:
        await register(client, admin_headers, http_body(server.port))
        slow_team = await make_team(client, admin_headers, team_body("slow", ["tools.slow"], {"seconds": 30}))
        echo_team = await make_team(client, admin_headers, team_body("echo", ["tools.echo"], {"text": "again"}))

        started = time.monotonic()
        execution = asyncio.create_task(run(client, admin_headers, slow_team))
        await _wait_for_marker(tmp_path)
        server.kill()
        finished = await execution
        assert time.monotonic() - started < 20  # the call failed when the server went, not at its timeout
        call = tool_calls(await events(client, admin_headers, finished["execution_id"]))["tools.slow"]
        assert call["status"] == "error" and call["output"]["error_code"] == "TOOL_SERVER_UNREACHABLE"
        assert_no_evidence(finished, "TOOL_SERVER_UNREACHABLE")
        assert "'tools' is unreachable" in call["output"]["error_message"]

        server.start()  # the same port: the server is back
        again = await run(client, admin_headers, echo_team)
        echo = tool_calls(await events(client, admin_headers, again["execution_id"]))["tools.echo"]
        assert echo["status"] == "success" and echo["output"]["text"] == "echo: again"


async def test_a_stdio_server_killed_mid_run_is_a_tool_error_and_the_next_run_restarts_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    await add_simulator(client, admin_headers)
    body = stdio_body(env={"MCP_TEST_MARKER_DIR": str(tmp_path)})
    await register(client, admin_headers, body)
    slow_team = await make_team(client, admin_headers, team_body("slow", ["tools.slow"], {"seconds": 30}))
    echo_team = await make_team(client, admin_headers, team_body("echo", ["tools.echo"], {"text": "again"}))

    execution = asyncio.create_task(run(client, admin_headers, slow_team))
    os.kill(await _wait_for_marker(tmp_path), signal.SIGKILL)
    finished = await execution
    call = tool_calls(await events(client, admin_headers, finished["execution_id"]))["tools.slow"]
    assert call["status"] == "error" and call["output"]["error_code"] == "TOOL_SERVER_UNREACHABLE"
    assert_no_evidence(finished, "TOOL_SERVER_UNREACHABLE")

    again = await run(client, admin_headers, echo_team)
    assert tool_calls(await events(client, admin_headers, again["execution_id"]))["tools.echo"]["status"] == "success"


@pytest.fixture
def limited(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", tool_timeout_seconds=5, tool_output_max_chars=500)


async def test_tool_timeouts_output_limits_and_argument_checks_apply(limited: Settings) -> None:
    async with service(limited) as (client, headers):
        await add_simulator(client, headers)
        await register(client, headers, stdio_body())
        attributes = {"seconds": 30, "text": "x" * 2000, "a": "not a number", "b": 1}
        team_id = await make_team(
            client, headers, team_body("limits", ["tools.slow", "tools.echo", "tools.add"], attributes)
        )
        execution = await run(client, headers, team_id)
        calls = tool_calls(await events(client, headers, execution["execution_id"]))
        assert calls["tools.slow"]["output"]["error_code"] == "TOOL_TIMEOUT"
        assert calls["tools.echo"]["output"].get("truncated") is True, calls["tools.echo"]
        assert calls["tools.add"]["output"]["error_code"] == "TOOL_INVALID_ARGUMENTS"
        assert calls["tools.add"]["output"]["errors"][0]["field"] == "a"
        audited = {a["details"]["tool"]: a["details"] for a in await audit_calls(client, headers)}
        # The timed-out call is audited; the refused one never reached the server.
        assert audited["slow"]["error_code"] == "TOOL_TIMEOUT" and "add" not in audited


async def test_a_switched_off_server_makes_its_tools_fail_as_tool_errors(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: ServiceContext
) -> None:
    await add_simulator(client, admin_headers)
    server = await register(client, admin_headers, stdio_body())
    team_id = await make_team(client, admin_headers, team_body("off", ["tools.echo", "tcp_check"], {"text": "t"}))
    await client.put(f"{API}/tool-servers/{server['id']}", json={"is_active": False}, headers=admin_headers)
    # A new run is refused up front (the team no longer validates) ...
    refused = await client.post(
        f"{API}/teams/{team_id}/execute", json={"input": {"task": "t"}, "stream": False}, headers=admin_headers
    )
    assert_error(refused, 400, "INVALID_TOPOLOGY")
    # ... and a run that was under way (or resumes) gets tool errors saying why, and goes on.
    names = {"tools.echo", "gone.echo"}
    specs = await tool_servers.run_tool_specs(context.database.sessionmaker, context, context.tool_servers, names)
    registry = default_registry().extended(specs)
    off = await registry.invoke("tools.echo", {"text": "t"}, ToolContext())
    assert off.output["error_code"] == "TOOL_SERVER_UNAVAILABLE" and "switched off" in off.output["error_message"]
    gone = await registry.invoke("gone.echo", {}, ToolContext())
    assert "no tool server named 'gone'" in gone.output["error_message"]


async def test_a_message_over_the_limit_is_not_read_and_the_next_call_reconnects(tmp_path: Path) -> None:
    megabytes = MAX_MESSAGE_BYTES // 2**20
    config = ServerConfig(
        id=uuid.uuid4(),
        name="tools",
        transport="streamable_http",
        url="",
        headers={"X-Test-Token": TOKEN},
    )
    pool = ToolServerPool()
    try:
        with http_server(tmp_path) as server:
            config = dataclasses.replace(config, url=f"http://127.0.0.1:{server.port}/mcp")
            with pytest.raises(ServerUnreachable, match=f"the server sent a message larger than {megabytes} MB"):
                await pool.call(config, "flood", {"megabytes": megabytes + 4}, timeout=60)
            answer = await pool.call(config, "echo", {"text": "after"}, timeout=60)
            assert answer.content[0].text == "echo: after"  # type: ignore[union-attr]
    finally:
        await pool.close()


def stdio_config(**env: str) -> ServerConfig:
    body = stdio_body(env=env)
    return ServerConfig(
        id=uuid.uuid4(),
        name="tools",
        transport="stdio",
        command=body["command"],
        args=tuple(body["args"]),
        env=body["env"],
    )


async def test_a_stdio_message_over_the_limit_is_not_read_and_the_next_call_restarts_the_server() -> None:
    megabytes = MAX_MESSAGE_BYTES // 2**20
    pool = ToolServerPool(connect_timeout=60)
    try:
        config = stdio_config()
        first = await pool.connection(config)
        with pytest.raises(ServerUnreachable, match=f"the server sent a message larger than {megabytes} MB"):
            await pool.call(config, "flood", {"megabytes": megabytes + 4}, timeout=60)
        answer = await pool.call(config, "echo", {"text": "after"}, timeout=60)
        assert answer.content[0].text == "echo: after"  # type: ignore[union-attr]
        assert await pool.connection(config) is not first
    finally:
        await pool.close()


async def test_a_stdio_server_gets_its_environment_literally_never_the_services_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIOPS_TEST_CANARY", "the-services-own-secret")
    pool = ToolServerPool(connect_timeout=60)
    try:
        config = stdio_config(MCP_TEST_TOKEN="${AIOPS_TEST_CANARY}")
        answer = await pool.call(config, "secret_echo", {}, timeout=60)
        assert answer.content[0].text == "env token ${AIOPS_TEST_CANARY}"  # type: ignore[union-attr]
    finally:
        await pool.close()


def test_stdio_lines_are_split_across_chunks_and_the_unfinished_rest_is_kept() -> None:
    buffer = bytearray()
    assert split_lines(buffer, b'{"a"') == [] and buffer == b'{"a"'
    assert split_lines(buffer, b':1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}'] and buffer == b'{"c"'
    assert split_lines(buffer, b"\n") == [b'{"c"'] and buffer == b""
