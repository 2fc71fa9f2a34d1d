"""What the browser tests share: the console under test (a real ``aiops-executor serve`` on a free loopback
port, with an OpenAI-protocol mock provider and a simulator), the users it knows, and small helpers.

Screenshots go to ``.test-output/webconsole/``; the page-weight and speed figures the README reports are
written to ``.test-output/webconsole/figures.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.helpers import REPO_ROOT
from tests.processes import API

OUTPUT = REPO_ROOT / ".test-output" / "webconsole"
CHROMIUM = Path(os.environ.get("AIOPS_TEST_CHROMIUM", "/usr/bin/chromium"))
ADMIN = {"username": "admin", "password": "console-admin-" + uuid.uuid4().hex[:12]}
VIEWER = {"username": "watcher", "password": "console-viewer-" + uuid.uuid4().hex[:12]}
MOCK_KEY = "console-mock-key-" + uuid.uuid4().hex[:8]
# Every model call of the "slow" model takes this long: a run lasts some seconds, long enough to reload mid-run.
# The "fast" model answers at once (the big runs), "slower" takes 2.5 s a call (a run to cancel).
SLOW_MS = 700
MODEL_LATENCY_MS = {"fast": 0, "slow": SLOW_MS, "slower": 2500}


@dataclass
class Console:
    url: str
    api: httpx.Client
    log: Path


def wait_until_up(process: subprocess.Popen[bytes], url: str, log: Path, **headers: str) -> None:
    with httpx.Client() as client:
        for _ in range(600):
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if client.get(url, headers=headers).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise AssertionError(f"{url} did not come up: {log.read_text()[-3000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def figures(**values: Any) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / "figures.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update(values)
    path.write_text(json.dumps(known, indent=2) + "\n")


def sign_in(page: Page, who: dict[str, str]) -> None:
    page.get_by_test_id("login-username").fill(who["username"])
    page.get_by_test_id("login-password").fill(who["password"])
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("session-user")).to_contain_text(who["username"])


def api_team(console: Console, model: str, *, prefix: str = "single", **agent: Any) -> dict[str, Any]:
    """A one-node team made through the API (for the scenarios that are not about creating one); ``agent``: more
    fields of its one agent (a prober with ``tcp_check``)."""
    ref = {"model_provider": "ui-sim", "model_id": model}
    created = console.api.post(
        f"{API}/teams",
        json={
            "team_name": f"{prefix}-{uuid.uuid4().hex[:6]}",
            "topology": {
                "nodes": [
                    {
                        "node_id": "only",
                        "node_name": "Only",
                        "node_type": "service",
                        "attributes": {"host": "127.0.0.1", "port": 9},
                        "agents": [
                            {"agent_id": "probe", "agent_name": "Prober", **ref, "tools": ["tcp_check"], **agent}
                        ],
                        "supervisor_config": {**ref, "coordination_strategy": "round_robin"},
                    }
                ],
                "edges": [],
                "global_supervisor": {**ref, "coordination_strategy": "parallel"},
            },
        },
    )
    assert created.status_code == 201, created.text
    return dict(console.api.get(f"{API}/teams/{created.json()['team_id']}").json())


def hundred_node_team(console: Console, model: str) -> str:
    """A team of 100 node teams (one agent each, no tools) in ten chains of ten: depth 10 (the limit), every node
    connected. Returns its id."""
    ref = {"model_provider": "ui-sim", "model_id": model}
    nodes = [
        {
            "node_id": f"n{i}",
            "node_name": f"Node {i}",
            "node_type": ["service", "database", "cache", "gateway"][i % 4],
            "agents": [{"agent_id": "a", "agent_name": "A", **ref}],
            "supervisor_config": ref,
        }
        for i in range(100)
    ]
    edges = [
        {"source_node_id": f"n{i}", "target_node_id": f"n{i - 10}", "relation_type": "depends_on"}
        for i in range(10, 100)
    ]
    edges += [{"source_node_id": "n0", "target_node_id": f"n{i}", "relation_type": "monitors"} for i in range(1, 10)]
    created = console.api.post(
        f"{API}/teams",
        json={
            "team_name": f"big-{uuid.uuid4().hex[:6]}",
            "topology": {"nodes": nodes, "edges": edges, "global_supervisor": ref},
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["team_id"])


def approval_team(console: Console) -> str:
    """A team of one node whose one agent's ``tcp_check`` waits for a person's approval; returns its id."""
    return str(api_team(console, "slow", prefix="approve", approval_required_tools=["tcp_check"])["team_id"])
