"""One budget, twenty runs at once, two service processes on PostgreSQL (each with its worker) and the project's
OpenAI-protocol mock server on loopback: the calls the processes make never spend more than the budget (give or
take one call), and the budget, the usage report and the runs agree on what was spent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_MASTER_KEY
from tests.helpers import CAPABLE
from tests.processes import API, Process, base_env, free_port, run_cli, scratch_database, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.long]

ADMIN = {"username": "budget-admin", "password": "budget-password-1"}
MOCK_KEY = "budget-mock-key"
RUNS = 20


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    return base_env(
        data_dir=str(data_dir),
        database_url=database_url,
        redis_url="redis://127.0.0.1:6379/0",
        master_keys=json.dumps({"budget-1": TEST_MASTER_KEY}),
        master_key_id="budget-1",
        jwt_secret="budget-jwt-secret-" + "x" * 32,
        admin_username=ADMIN["username"],
        admin_password=ADMIN["password"],
        log_level="WARNING",
        rate_limit_executions_per_minute="0",
        allow_concurrent_team_executions="true",
        worker_poll_seconds="0.2",
    )


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[str]:
    async with scratch_database("aiops_budget") as url:
        migrated = run_cli(_env(url, tmp_path / "data"), "migrate")
        assert migrated.returncode == 0, migrated.stderr
        yield url


async def _mock_ready(port: int, mock: Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            assert mock.running, mock.log()[-3000:]
            with suppress(httpx.TransportError):
                models = await client.get(
                    f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {MOCK_KEY}"}
                )
                if models.status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"the mock provider did not start: {mock.log()[-3000:]}")


async def _provider(client: httpx.AsyncClient, mock_port: int) -> str:
    provider = (await client.post(f"{API}/providers", json={"name": "mock", "type": "openai"})).json()
    for path, body in (
        ("endpoints", {"name": "local", "base_url": f"http://127.0.0.1:{mock_port}/v1", "is_default": True}),
        ("credentials", {"alias": "key", "api_key": MOCK_KEY}),
        (
            "models",
            {
                "model_id": "mock-gpt",
                "name": "mock-gpt",
                "input_price": "0.5",
                "output_price": "1.5",
                "max_output_tokens": 64,
                "capabilities": {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE},
            },
        ),
    ):
        response = await client.post(f"{API}/providers/{provider['id']}/{path}", json=body)
        assert response.status_code == 201, response.text
    return str(provider["id"])


def _team() -> dict[str, Any]:
    ref = {"model_provider": "mock", "model_id": "mock-gpt"}
    return {
        "team_name": "budgeted",
        "timeout_seconds": 120,
        "topology": {
            "nodes": [
                {
                    "node_id": node_id,
                    "node_name": node_id,
                    "node_type": "service",
                    "agents": [{"agent_id": "reader", "agent_name": "Reader", **ref}],
                    "supervisor_config": {**ref, "coordination_strategy": "round_robin"},
                }
                for node_id in ("api", "db")
            ],
            "edges": [],
            "global_supervisor": {**ref, "coordination_strategy": "parallel"},
            "allow_isolated_nodes": True,
        },
    }


def _all_finished(rows: dict[str, dict[str, Any]]) -> bool:
    return all(row["completed_at"] for row in rows.values())


async def _finished_here(process: Process) -> float:
    async with httpx.AsyncClient(base_url=process.url) as client:
        text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("aiops_executions_total{")
    )


@pytest.mark.timeout(300)
async def test_twenty_runs_on_two_processes_never_overspend_one_budget(database: str, tmp_path: Path) -> None:
    env = _env(database, tmp_path / "data")
    mock_port = free_port()
    mock = Process("mock", ["mock-llm", "--port", str(mock_port), "--key", MOCK_KEY], env, tmp_path / "mock.log")
    apis = [
        Process(f"api-{i}", ["serve", "--port", str(port)], env, tmp_path / f"api-{i}.log", port)
        for i, port in enumerate((free_port(), free_port()))
    ]
    try:
        await mock.start(ready_path=None)
        await _mock_ready(mock_port, mock)
        await asyncio.gather(*(api.start() for api in apis))
        async with apis[0].client(ADMIN) as a, apis[1].client(ADMIN) as b:
            await _provider(a, mock_port)
            team = await a.post(f"{API}/teams", json=_team())
            assert team.status_code == 201, team.text
            team_id = team.json()["team_id"]
            # One run alone, to learn what a run costs here.
            probe = (await a.post(f"{API}/teams/{team_id}/executions", json={"input": {"task": "probe"}})).json()
            rows = await wait_until(a, [probe["execution_id"]], _all_finished, 60)
            one_run = Decimal(str(rows[probe["execution_id"]]["usage"]["cost"]))
            assert one_run > 0
            # Room for about a third of the twenty runs beyond the probe.
            limit = (one_run * (1 + Decimal(RUNS) / 3)).quantize(Decimal("0.0000000001"))
            created = await a.post(
                f"{API}/budgets", json={"scope": "team", "scope_id": team_id, "limit_usd": str(limit), "period": "day"}
            )
            assert created.status_code == 201, created.text
            budget_id = created.json()["id"]

            async def start(client: httpx.AsyncClient) -> str | None:
                response = await client.post(f"{API}/teams/{team_id}/executions", json={"input": {"task": "go"}})
                if response.status_code == 429:  # the budget ran out before this start
                    assert response.json()["error_code"] == "BUDGET_EXCEEDED"
                    return None
                assert response.status_code == 202, response.text
                return str(response.json()["execution_id"])

            started = await asyncio.gather(*(start(a if i % 2 else b) for i in range(RUNS)))
            ids = [i for i in started if i is not None]
            rows = await wait_until(a, ids, _all_finished, 180)
            outcomes = [(row["status"], row.get("error_message") or "") for row in rows.values()]
            # Both processes ran some of them (each counts the runs it finished).
            assert all(await asyncio.gather(*(_finished_here(api) for api in apis))), outcomes
            refused = [row for row in rows.values() if row["status"] == "failed"]
            assert refused or len(ids) < RUNS, outcomes  # the budget stopped some runs, at start or on the way
            assert all("exhausted" in (row.get("error_message") or "") for row in refused), outcomes

            shown = (await a.get(f"{API}/budgets/{budget_id}")).json()
            spent = Decimal(str(shown["spent_usd"]))
            (usage,) = (await a.get(f"{API}/usage", params={"group_by": "team"})).json()
            assert Decimal(str(usage["cost"])) == pytest.approx(spent)
            by_runs = sum(Decimal(str(row["usage"]["cost"])) for row in rows.values()) + one_run
            assert Decimal(str(usage["cost"])) == pytest.approx(by_runs)
            # Never more than the limit: every call was admitted only if the most it could cost still fitted
            # (the largest call here is far below one run's cost).
            assert spent <= limit, (spent, limit)
            assert shown["exhausted"] is True
    finally:
        for process in (*apis, mock):
            if process.running:
                process.kill()
