"""Runs of one team snapshot share its compiled graphs; a team naming an MCP server's tools is compiled per run
(the server's row may change between runs), and a changed team is compiled anew."""

from __future__ import annotations

import httpx

from aiops_executor.executions.compiled_teams import CompiledTeams, snapshot_key
from aiops_executor.services import ServiceContext
from tests.helpers import API, add_simulator
from tests.tool_servers.test_tool_servers import make_team, register, run, stdio_body, team_body

FINISHED = ("success", "failed")


def test_the_cache_keeps_the_most_recently_used_teams_by_snapshot() -> None:
    assert snapshot_key({"a": 1, "b": [1, 2]}) == snapshot_key({"b": [1, 2], "a": 1})
    assert snapshot_key({"a": 1}) != snapshot_key({"a": 2})
    teams = CompiledTeams(max_teams=2)
    first, second, third = object(), object(), object()
    teams.keep("1", first)  # type: ignore[arg-type]
    teams.keep("2", second)  # type: ignore[arg-type]
    assert teams.get("1") is first  # now the most recently used
    teams.keep("3", third)  # type: ignore[arg-type]
    assert teams.get("2") is None and teams.get("1") is first and teams.get("3") is third and len(teams) == 2


async def test_runs_of_one_snapshot_share_its_compiled_team(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: ServiceContext
) -> None:
    compiled = context.executions.runner.compiled
    await add_simulator(client, admin_headers)
    # Port 9 is closed: the probe observes that (the run's verdict does not matter here, only that it ran).
    target = {"host": "127.0.0.1", "port": 9}
    team_id = await make_team(client, admin_headers, team_body("shared", ["tcp_check"], target))
    for _ in range(2):
        assert (await run(client, admin_headers, team_id))["status"] in FINISHED
    assert len(compiled) == 1
    # A change of the team is a new snapshot: compiled for its runs, beside the old one.
    changed = {"timeout_seconds": 90}
    assert (await client.put(f"{API}/teams/{team_id}", json=changed, headers=admin_headers)).status_code == 200
    assert (await run(client, admin_headers, team_id))["status"] in FINISHED
    assert len(compiled) == 2
    # An MCP server's tools are read for each run: such a team is never kept.
    await register(client, admin_headers, stdio_body())
    mcp_team = await make_team(client, admin_headers, team_body("mcp", ["tools.echo"], {"text": "hi"}))
    assert (await run(client, admin_headers, mcp_team))["status"] == "success"
    assert len(compiled) == 2
