"""Teams API on both backends: CRUD, validation errors, re-validation and status, references that block
LLM deletes, audit entries and roles."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from aiops_executor.audit.models import AuditLog
from aiops_executor.core.context import AppContext
from aiops_executor.executions.models import Execution
from aiops_executor.llm import catalog
from aiops_executor.llm.catalog import ModelCatalog
from aiops_executor.teams.models import TeamModelReference
from aiops_executor.tools.builtin import default_registry
from tests.conftest import RoleHeaders
from tests.helpers import API, CAPABLE, assert_error, created, make_provider

SIM_CAPS = {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE}


@pytest.fixture
def tool() -> str:
    """A registered tool name (whichever the registry holds)."""
    names = sorted(default_registry().names())
    assert names, "the tool registry is empty"
    return "http_check" if "http_check" in names else names[0]


async def make_model(
    client: httpx.AsyncClient, headers: dict[str, str], provider_id: str, model_id: str, **extra: Any
) -> dict[str, Any]:
    body = {"model_id": model_id, "name": model_id, "capabilities": SIM_CAPS, **extra}
    return await created(client, headers, f"/providers/{provider_id}/models", body)


@pytest.fixture
async def sim(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> dict[str, str]:
    """The offline provider ``local-sim`` with its model ``sim-1`` (ids)."""
    provider_id = await make_provider(client, admin_headers, "local-sim", "simulator")
    model = await make_model(client, admin_headers, provider_id, "sim-1")
    return {"provider_id": provider_id, "model_id": str(model["id"])}


def team_body(name: str = "checkout-diagnosis", tool: str | None = None, model_id: str = "sim-1") -> dict[str, Any]:
    ref = {"model_provider": "local-sim", "model_id": model_id}
    tools = [tool] if tool else []
    return {
        "team_name": name,
        "description": "Why does checkout fail?",
        "timeout_seconds": 300,
        "max_iterations": 50,
        "topology": {
            "nodes": [
                {
                    "node_id": "checkout",
                    "node_name": "Checkout API",
                    "node_type": "service",
                    "attributes": {"url": "http://127.0.0.1:8080/health"},
                    "agents": [
                        {"agent_id": "probe", "agent_name": "Health prober", **ref, "tools": tools},
                        {"agent_id": "reader", "agent_name": "Log reader", **ref},
                    ],
                    "supervisor_config": {**ref, "coordination_strategy": "adaptive"},
                },
                {
                    "node_id": "orders-db",
                    "node_name": "Orders DB",
                    "node_type": "database",
                    "agents": [{"agent_id": "probe", "agent_name": "DB prober", **ref}],
                    "supervisor_config": ref,
                },
            ],
            "edges": [{"source_node_id": "checkout", "target_node_id": "orders-db", "relation_type": "depends_on"}],
            "global_supervisor": {**ref, "coordination_strategy": "hierarchical"},
        },
    }


async def audit_rows(context: AppContext, resource_id: object | None = None) -> list[AuditLog]:
    async with context.database.sessionmaker() as session:
        stmt = select(AuditLog).where(AuditLog.resource_type == "team").order_by(AuditLog.created_at)
        if resource_id is not None:
            stmt = stmt.where(AuditLog.resource_id == str(resource_id))
        return list(await session.scalars(stmt))


async def create_team(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    return str((await created(client, headers, "/teams", body))["team_id"])


async def test_create_get_list_and_audit(
    client: httpx.AsyncClient, role_headers: RoleHeaders, context: AppContext, sim: dict[str, str], tool: str
) -> None:
    operator = await role_headers("operator")
    body = team_body(tool=tool)
    response = await client.post(f"{API}/teams", json=body, headers=operator)
    assert response.status_code == 201, response.text
    team = response.json()
    assert set(team) == {"team_id", "status", "created_at", "topology_summary"}
    assert team["status"] == "created"
    assert team["created_at"].endswith(("Z", "+00:00"))
    assert team["topology_summary"] == {"node_count": 2, "agent_count": 3, "edge_count": 1, "depth": 2}
    team_id = team["team_id"]

    got = await client.get(f"{API}/teams/{team_id}", headers=await role_headers("viewer"))
    assert got.status_code == 200, got.text
    read = got.json()
    assert read["team_id"] == team_id
    assert (read["team_name"], read["description"], read["status"]) == (
        body["team_name"],
        body["description"],
        "active",
    )
    assert (read["timeout_seconds"], read["max_iterations"]) == (300, 50)
    assert read["topology_summary"] == team["topology_summary"]
    assert read["created_at"] == team["created_at"]
    topology = read["topology"]
    assert [n["node_id"] for n in topology["nodes"]] == ["checkout", "orders-db"]
    assert topology["nodes"][0]["agents"][0]["tools"] == [tool]
    assert topology["nodes"][0]["attributes"] == {"url": "http://127.0.0.1:8080/health"}
    assert topology["nodes"][1]["supervisor_config"]["coordination_strategy"] == "round_robin"  # the default
    assert topology["edges"] == [{**body["topology"]["edges"][0], "attributes": {}}]
    assert topology["allow_isolated_nodes"] is False

    listing = (await client.get(f"{API}/teams", headers=operator)).json()
    assert (listing["total"], listing["page"], listing["size"], listing["pages"]) == (1, 1, 20, 1)
    (item,) = listing["items"]
    assert "topology" not in item
    assert {k: v for k, v in read.items() if k != "topology"} == item

    (entry,) = await audit_rows(context, team_id)
    assert entry.action == "create"
    assert entry.actor.startswith("user:operator-")
    assert entry.details == {"name": "checkout-diagnosis", "node_count": 2, "agent_count": 3}
    assert entry.request_id == response.headers["x-request-id"]

    async with context.database.sessionmaker() as session:
        refs = list(await session.scalars(select(TeamModelReference)))
    assert [(str(r.team_id), str(r.provider_id), str(r.model_row_id)) for r in refs] == [
        (team_id, sim["provider_id"], sim["model_id"])
    ]


async def test_the_provider_may_be_named_by_id(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: dict[str, str]
) -> None:
    body = team_body()
    body["topology"]["global_supervisor"]["model_provider"] = sim["provider_id"]
    assert (await client.post(f"{API}/teams", json=body, headers=admin_headers)).status_code == 201


async def test_invalid_topology_reports_every_problem(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: dict[str, str], tool: str
) -> None:
    await make_model(client, admin_headers, sim["provider_id"], "plain-1", capabilities={"chat": CAPABLE})
    body = team_body(tool=tool)
    topology = body["topology"]
    body["timeout_seconds"] = 0
    topology["nodes"][0]["agents"][0]["tools"].append("no-such-tool")
    topology["nodes"][0]["agents"][1]["model_id"] = "missing-model"
    topology["nodes"][1]["agents"].append({**topology["nodes"][1]["agents"][0], "model_id": "plain-1", "tools": [tool]})
    topology["edges"].append({"source_node_id": "orders-db", "target_node_id": "checkout", "relation_type": "calls"})
    topology["edges"].append({"source_node_id": "checkout", "target_node_id": "cache", "relation_type": "calls"})
    topology["global_supervisor"]["model_provider"] = "nobody"

    response = await client.post(f"{API}/teams", json=body, headers=admin_headers)
    error = assert_error(response, 400, "INVALID_TOPOLOGY")
    details = error["details"]
    assert [(e["code"], e["path"]) for e in details["errors"]] == [
        ("LIMIT_EXCEEDED", "timeout_seconds"),
        ("TOOL_NOT_FOUND", "topology.nodes[0].agents[0].tools[1]"),
        ("MODEL_NOT_FOUND", "topology.nodes[0].agents[1].model_id"),
        ("DUPLICATE_AGENT_ID", "topology.nodes[1].agents[1].agent_id"),
        ("CAPABILITY_MISSING", "topology.nodes[1].agents[1].model_id"),
        ("UNKNOWN_NODE", "topology.edges[2].target_node_id"),
        ("CYCLE", "topology.edges[0]"),
        ("PROVIDER_NOT_FOUND", "topology.global_supervisor.model_provider"),
    ]
    assert all(set(e) == {"code", "message", "path"} and e["message"] for e in details["errors"])
    assert "checkout -> orders-db -> checkout" in details["errors"][6]["message"]
    assert details["invalid_nodes"] == ["checkout", "orders-db"]
    assert {(r["type"], tuple(r["paths"])) for r in details["missing_references"]} == {
        ("tool", ("topology.nodes[0].agents[0].tools[1]",)),
        ("model", ("topology.nodes[0].agents[1].model_id",)),
        ("node", ("topology.edges[2].target_node_id",)),
        ("provider", ("topology.global_supervisor.model_provider",)),
    }
    assert "8 problems" in error["error_message"]
    assert (await client.get(f"{API}/teams", headers=admin_headers)).json()["total"] == 0


async def test_request_shape_errors_are_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: dict[str, str]
) -> None:
    bad_id = team_body()
    bad_id["topology"]["nodes"][0]["node_id"] = "has spaces"
    no_agents = team_body()
    no_agents["topology"]["nodes"][0]["agents"] = []
    unknown_field = {**team_body(), "colour": "blue"}
    bad_relation = team_body()
    bad_relation["topology"]["edges"][0]["relation_type"] = "likes"
    for body in (bad_id, no_agents, unknown_field, bad_relation, {}):
        assert_error(await client.post(f"{API}/teams", json=body, headers=admin_headers), 422, "VALIDATION_ERROR")


async def test_team_names_are_unique(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: dict[str, str]
) -> None:
    await create_team(client, admin_headers, team_body("first"))
    second = await create_team(client, admin_headers, team_body("second"))
    error = assert_error(
        await client.post(f"{API}/teams", json=team_body("first"), headers=admin_headers), 409, "TEAM_NAME_EXISTS"
    )
    assert error["details"] == {"name": "first"}
    rename = await client.put(f"{API}/teams/{second}", json={"team_name": "first"}, headers=admin_headers)
    assert_error(rename, 409, "TEAM_NAME_EXISTS")


async def test_list_filter_and_pagination(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: dict[str, str]
) -> None:
    ids = {name: await create_team(client, admin_headers, team_body(name)) for name in ("c-team", "a-team", "b-team")}
    off = await client.put(f"{API}/teams/{ids['b-team']}", json={"status": "inactive"}, headers=admin_headers)
    assert off.status_code == 200, off.text

    everything = (await client.get(f"{API}/teams", headers=admin_headers)).json()
    assert [t["team_name"] for t in everything["items"]] == ["a-team", "b-team", "c-team"]
    inactive = (await client.get(f"{API}/teams", params={"status": "inactive"}, headers=admin_headers)).json()
    assert [t["team_name"] for t in inactive["items"]] == ["b-team"]
    active = (await client.get(f"{API}/teams", params={"status": "active"}, headers=admin_headers)).json()
    assert [t["team_name"] for t in active["items"]] == ["a-team", "c-team"]
    paged = (await client.get(f"{API}/teams", params={"page": 2, "size": 2}, headers=admin_headers)).json()
    assert [t["team_name"] for t in paged["items"]] == ["c-team"]
    assert (paged["total"], paged["page"], paged["size"], paged["pages"]) == (3, 2, 2, 2)
    assert_error(
        await client.get(f"{API}/teams", params={"status": "broken"}, headers=admin_headers), 422, "VALIDATION_ERROR"
    )
    assert_error(await client.get(f"{API}/teams", params={"size": 0}, headers=admin_headers), 422, "VALIDATION_ERROR")


async def test_unknown_teams_are_404(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    missing = uuid.uuid4()
    for method, path, body in [
        ("GET", f"/teams/{missing}", None),
        ("PUT", f"/teams/{missing}", {}),
        ("DELETE", f"/teams/{missing}", None),
        ("POST", f"/teams/{missing}/validate", None),
    ]:
        response = await client.request(method, f"{API}{path}", json=body, headers=admin_headers)
        error = assert_error(response, 404, "TEAM_NOT_FOUND")
        assert error["details"] == {"id": str(missing)}
    assert_error(await client.get(f"{API}/teams/not-a-uuid", headers=admin_headers), 422, "VALIDATION_ERROR")


async def test_update(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext, sim: dict[str, str]
) -> None:
    team_id = await create_team(client, admin_headers, team_body())
    url = f"{API}/teams/{team_id}"
    before = (await client.get(url, headers=admin_headers)).json()

    same = await client.put(
        url, json={"description": before["description"], "timeout_seconds": 300}, headers=admin_headers
    )
    assert same.status_code == 200, same.text
    assert same.json() == before  # nothing changed, nothing recorded

    described = await client.put(url, json={"description": "new words", "max_iterations": 10}, headers=admin_headers)
    assert described.status_code == 200, described.text
    assert (described.json()["description"], described.json()["max_iterations"]) == ("new words", 10)
    assert described.json()["topology"] == before["topology"]

    grown = copy.deepcopy(before["topology"])
    grown["nodes"].append({**copy.deepcopy(grown["nodes"][1]), "node_id": "cache", "node_name": "Cache"})
    grown["edges"].append({"source_node_id": "orders-db", "target_node_id": "cache", "relation_type": "depends_on"})
    reshaped = await client.put(url, json={"topology": grown, "team_name": "renamed"}, headers=admin_headers)
    assert reshaped.status_code == 200, reshaped.text
    assert reshaped.json()["team_name"] == "renamed"
    assert reshaped.json()["topology_summary"] == {"node_count": 3, "agent_count": 4, "edge_count": 2, "depth": 3}

    broken = copy.deepcopy(grown)
    broken["edges"].append({"source_node_id": "cache", "target_node_id": "checkout", "relation_type": "depends_on"})
    error = assert_error(
        await client.put(url, json={"topology": broken}, headers=admin_headers), 400, "INVALID_TOPOLOGY"
    )
    assert [e["code"] for e in error["details"]["errors"]] == ["CYCLE"]
    assert_error(await client.put(url, json={"timeout_seconds": 1801}, headers=admin_headers), 400, "INVALID_TOPOLOGY")
    after_failures = (await client.get(url, headers=admin_headers)).json()
    assert after_failures == reshaped.json()  # a refused update changes nothing

    for bad in ({"status": "error"}, {"team_name": None}, {"topology": None}, {"nodes": []}, {"max_iterations": 0}):
        assert_error(await client.put(url, json=bad, headers=admin_headers), 422, "VALIDATION_ERROR")

    off = await client.put(url, json={"status": "inactive"}, headers=admin_headers)
    assert off.json()["status"] == "inactive"
    on = await client.put(url, json={"status": "active"}, headers=admin_headers)
    assert on.json()["status"] == "active"

    rows = await audit_rows(context, team_id)
    assert [r.action for r in rows] == ["create", "update", "update", "update", "update"]
    assert sorted(rows[1].details["fields"]) == ["description", "max_iterations"]
    assert sorted(rows[2].details["fields"]) == ["agent_count", "depth", "edge_count", "name", "node_count", "topology"]
    assert rows[3].details["fields"] == ["status"]


async def test_delete(
    client: httpx.AsyncClient, role_headers: RoleHeaders, context: AppContext, sim: dict[str, str]
) -> None:
    operator = await role_headers("operator")
    team_id = await create_team(client, operator, team_body())
    response = await client.delete(f"{API}/teams/{team_id}", headers=operator)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get(f"{API}/teams/{team_id}", headers=operator), 404, "TEAM_NOT_FOUND")
    assert_error(await client.delete(f"{API}/teams/{team_id}", headers=operator), 404, "TEAM_NOT_FOUND")
    assert [r.action for r in await audit_rows(context, team_id)] == ["create", "delete"]
    async with context.database.sessionmaker() as session:
        assert list(await session.scalars(select(TeamModelReference))) == []
    # The name is free again.
    assert (await client.post(f"{API}/teams", json=team_body(), headers=operator)).status_code == 201


async def test_validate_tracks_todays_configuration(
    client: httpx.AsyncClient, admin_headers: dict[str, str], context: AppContext, sim: dict[str, str]
) -> None:
    team_id = await create_team(client, admin_headers, team_body())
    validate = f"{API}/teams/{team_id}/validate"
    model_url = f"{API}/models/{sim['model_id']}"

    ok = await client.post(validate, headers=admin_headers)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "valid": True,
        "errors": [],
        "warnings": [],
        "invalid_nodes": [],
        "missing_references": [],
        "status": "active",
    }

    await client.put(model_url, json={"status": "maintenance"}, headers=admin_headers)
    warned = (await client.post(validate, headers=admin_headers)).json()
    assert warned["valid"] is True and warned["status"] == "active"
    assert {w["code"] for w in warned["warnings"]} == {"MODEL_MAINTENANCE"}

    await client.put(model_url, json={"status": "deprecated"}, headers=admin_headers)
    failed = await client.post(validate, headers=admin_headers)
    assert failed.status_code == 200
    result = failed.json()
    assert (result["valid"], result["status"]) == (False, "error")
    assert result["errors"][0] == {
        "code": "MODEL_DEPRECATED",
        "message": "model 'sim-1' of provider 'local-sim' is deprecated",
        "path": "topology.nodes[0].agents[0].model_id",
    }
    assert len(result["errors"]) == 6  # three agents, two node supervisors, the global supervisor
    assert result["invalid_nodes"] == ["checkout", "orders-db"]
    assert (await client.get(f"{API}/teams/{team_id}", headers=admin_headers)).json()["status"] == "error"

    # An invalid team cannot be switched on; it may be switched off, and validation leaves it off.
    team_url = f"{API}/teams/{team_id}"
    assert_error(await client.put(team_url, json={"status": "active"}, headers=admin_headers), 400, "INVALID_TOPOLOGY")
    off = await client.put(team_url, json={"status": "inactive"}, headers=admin_headers)
    assert off.json()["status"] == "inactive"
    assert (await client.post(validate, headers=admin_headers)).json()["status"] == "inactive"

    # Once the configuration is fixed, switching it on (which re-validates) works.
    await client.put(model_url, json={"status": "available"}, headers=admin_headers)
    on = await client.put(team_url, json={"status": "active"}, headers=admin_headers)
    assert on.json()["status"] == "active"

    # Provider switched off: invalid again, and a PUT cannot force it back on.
    provider_status = f"{API}/providers/{sim['provider_id']}/status"
    await client.patch(provider_status, json={"is_active": False}, headers=admin_headers)
    inactive = (await client.post(validate, headers=admin_headers)).json()
    assert {e["code"] for e in inactive["errors"]} == {"PROVIDER_INACTIVE"}
    assert inactive["status"] == "error"
    assert_error(await client.put(team_url, json={"status": "active"}, headers=admin_headers), 400, "INVALID_TOPOLOGY")
    error_teams = (await client.get(f"{API}/teams", params={"status": "error"}, headers=admin_headers)).json()
    assert [t["team_id"] for t in error_teams["items"]] == [team_id]

    # Fixed: validation brings it back to active.
    await client.patch(provider_status, json={"is_active": True}, headers=admin_headers)
    healed = (await client.post(validate, headers=admin_headers)).json()
    assert (healed["valid"], healed["status"]) == (True, "active")

    validations = [r for r in await audit_rows(context, team_id) if r.action == "validate"]
    assert [(r.details["valid"], r.details["status"]) for r in validations] == [
        (True, "active"),
        (True, "active"),
        (False, "error"),
        (False, "inactive"),
        (False, "error"),
        (True, "active"),
    ]
    assert validations[2].details["previous_status"] == "active"


async def test_a_used_provider_or_model_cannot_be_deleted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], sim: dict[str, str]
) -> None:
    spare = await make_model(client, admin_headers, sim["provider_id"], "sim-2")
    unused = await make_model(client, admin_headers, sim["provider_id"], "sim-3")
    team_id = await create_team(client, admin_headers, team_body("uses-sim-1"))
    expected_teams = [{"id": team_id, "name": "uses-sim-1"}]

    provider_delete = await client.delete(f"{API}/providers/{sim['provider_id']}", headers=admin_headers)
    error = assert_error(provider_delete, 409, "PROVIDER_IN_USE")
    assert error["details"]["teams"] == expected_teams
    assert error["details"]["reasons"] == ["team 'uses-sim-1' uses it"]
    assert "uses-sim-1" in error["error_message"]

    model_delete = await client.delete(f"{API}/models/{sim['model_id']}", headers=admin_headers)
    error = assert_error(model_delete, 409, "MODEL_IN_USE")
    assert error["details"] == {"id": sim["model_id"], "provider_id": sim["provider_id"], "teams": expected_teams}
    assert (await client.delete(f"{API}/models/{unused['id']}", headers=admin_headers)).status_code == 204

    # Moving the team to another model frees the first one (references follow updates).
    team = (await client.get(f"{API}/teams/{team_id}", headers=admin_headers)).json()
    moved = team_body("uses-sim-1", model_id="sim-2")
    response = await client.put(f"{API}/teams/{team_id}", json={"topology": moved["topology"]}, headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json()["topology"] != team["topology"]
    assert (await client.delete(f"{API}/models/{sim['model_id']}", headers=admin_headers)).status_code == 204
    assert_error(await client.delete(f"{API}/models/{spare['id']}", headers=admin_headers), 409, "MODEL_IN_USE")

    # Once no team uses the provider, it can go.
    assert (await client.delete(f"{API}/teams/{team_id}", headers=admin_headers)).status_code == 204
    assert (await client.delete(f"{API}/providers/{sim['provider_id']}", headers=admin_headers)).status_code == 204

    # ...and a team naming it is now invalid.
    error = assert_error(
        await client.post(f"{API}/teams", json=team_body(), headers=admin_headers), 400, "INVALID_TOPOLOGY"
    )
    assert {e["code"] for e in error["details"]["errors"]} == {"PROVIDER_NOT_FOUND"}


async def test_roles(client: httpx.AsyncClient, role_headers: RoleHeaders, sim: dict[str, str]) -> None:
    viewer = await role_headers("viewer")
    operator = await role_headers("operator")
    team_id = await create_team(client, operator, team_body())
    url = f"{API}/teams/{team_id}"
    assert (await client.get(f"{API}/teams", headers=viewer)).status_code == 200
    assert (await client.get(url, headers=viewer)).status_code == 200
    assert_error(await client.post(f"{API}/teams", json=team_body("other"), headers=viewer), 403, "FORBIDDEN")
    assert_error(await client.put(url, json={"status": "inactive"}, headers=viewer), 403, "FORBIDDEN")
    assert_error(await client.post(f"{url}/validate", headers=viewer), 403, "FORBIDDEN")
    assert_error(await client.delete(url, headers=viewer), 403, "FORBIDDEN")
    assert_error(await client.get(f"{API}/teams"), 401, "UNAUTHORIZED")
    assert (await client.post(f"{url}/validate", headers=operator)).status_code == 200
    assert (await client.put(url, json={"status": "inactive"}, headers=operator)).status_code == 200
    assert (await client.delete(url, headers=operator)).status_code == 204


async def test_a_reference_deleted_while_saving_is_a_conflict(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    context: AppContext,
    sim: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Validation saw the provider, but it was deleted before the save took its locks: 409, nothing stored."""
    async with context.database.sessionmaker() as session:
        stale = await catalog.load(session)
    assert (await client.delete(f"{API}/providers/{sim['provider_id']}", headers=admin_headers)).status_code == 204

    async def stale_catalog(_session: Any) -> ModelCatalog:
        return stale

    monkeypatch.setattr(catalog, "load", stale_catalog)
    assert_error(await client.post(f"{API}/teams", json=team_body(), headers=admin_headers), 409, "CONFLICT")
    assert (await client.get(f"{API}/teams", headers=admin_headers)).json()["total"] == 0


@pytest.mark.parametrize(("status", "refused"), [("pending", True), ("running", True), ("success", False)])
async def test_a_team_with_an_unfinished_execution_cannot_be_deleted(
    client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    context: AppContext,
    sim: dict[str, str],
    status: str,
    refused: bool,
) -> None:
    team_id = await create_team(client, admin_headers, team_body())
    async with context.database.sessionmaker() as session:
        session.add(
            Execution(
                team_id=uuid.UUID(team_id),
                status=status,
                input={"task": "check"},
                timeout_seconds=60,
                team_snapshot=team_body(),
                requested_by="user:admin",
            )
        )
        await session.commit()
    response = await client.delete(f"{API}/teams/{team_id}", headers=admin_headers)
    if refused:
        assert_error(response, 409, "EXECUTION_RUNNING")
        assert (await client.get(f"{API}/teams/{team_id}", headers=admin_headers)).status_code == 200
    else:
        assert response.status_code == 204
