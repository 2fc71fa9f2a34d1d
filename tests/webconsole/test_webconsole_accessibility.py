"""Every page of the console, with data on it, checked by axe-core (pinned in webconsole/package-lock.json as a
development dependency; ``./dev test`` installs it with npm ci) in the light and the dark colour scheme: no
serious or critical violation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import REPO_ROOT
from tests.processes import API
from tests.tool_servers.test_tool_servers import http_body, http_server
from tests.webconsole.console import ADMIN, OUTPUT, Console, api_team, approval_team, figures, sign_in

pytestmark = [pytest.mark.timeout(180), pytest.mark.long, pytest.mark.xdist_group("browser")]

AXE = REPO_ROOT / "webconsole" / "node_modules" / "axe-core" / "axe.min.js"
SERIOUS = {"serious", "critical"}


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        pytest.fail(f"axe-core is missing at {AXE}: run ./dev test (it runs npm ci in webconsole/)")
    return AXE.read_text()


def audit(page: Page, axe_source: str) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (run through the DevTools protocol, which the page's
    Content-Security-Policy does not govern)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source)
    found = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] }).then(r => r.violations)")
    return [
        {
            "rule": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "targets": [node["target"] for node in v["nodes"]][:5],
        }
        for v in found
    ]


def wait_for_status(console: Console, execution_id: str, statuses: set[str]) -> None:
    deadline = time.monotonic() + 60
    while console.api.get(f"{API}/executions/{execution_id}").json()["status"] not in statuses:
        assert time.monotonic() < deadline, f"{execution_id} never reached {statuses}"
        time.sleep(0.2)


@pytest.fixture
def waiting_run(console: Console) -> Iterator[str]:
    """A run waiting for a person's approval (the inbox has a row), rejected afterwards."""
    team_id = approval_team(console)
    started = console.api.post(f"{API}/teams/{team_id}/executions", json={"input": {"task": "Is it up?"}})
    assert started.status_code == 202, started.text
    execution_id = str(started.json()["execution_id"])
    wait_for_status(console, execution_id, {"awaiting_approval"})
    yield execution_id
    approvals = f"{API}/executions/{execution_id}/approvals"
    for item in console.api.get(approvals).json()["items"]:
        if item["status"] == "pending":
            console.api.post(f"{approvals}/{item['approval_id']}", json={"decision": "reject"})


def test_every_page_has_no_serious_or_critical_accessibility_violation(
    page: Page, console: Console, axe_source: str, waiting_run: str, tmp_path: Path
) -> None:
    team = api_team(console, "fast")
    budget = console.api.post(
        f"{API}/budgets", json={"scope": "team", "scope_id": team["team_id"], "limit_usd": "100", "period": "day"}
    )
    assert budget.status_code == 201, budget.text
    started = console.api.post(f"{API}/teams/{team['team_id']}/executions", json={"input": {"task": "Is it up?"}})
    execution_id = started.json()["execution_id"]
    wait_for_status(console, execution_id, {"success", "failed"})
    provider = next(p for p in console.api.get(f"{API}/providers").json()["items"] if p["name"] == "ui-sim")
    with http_server(tmp_path) as server:
        registered = console.api.post(f"{API}/tool-servers", json=http_body(server.port, name="a11y-tools"))
        assert registered.status_code == 201, registered.text
        tool_server_id = registered.json()["id"]
        assert console.api.post(f"{API}/tool-servers/{tool_server_id}/refresh").status_code == 200

        def open_run_groups() -> None:
            page.get_by_test_id("run-timeline").locator("summary").first.click()
            page.get_by_test_id("node-panel").first.locator("summary").first.click()
            expect(page.get_by_test_id("tool-call").first).to_be_visible()

        # Each page, and what shows that it has drawn its data (and, for the run, its timeline opened).
        pages: list[tuple[str, str, Callable[[], None] | None]] = [
            ("#/teams", '[data-testid="team-row"]', None),
            ("#/teams/new", '[data-testid="team-document"]', None),
            (f"#/teams/{team['team_id']}", '[data-testid="team-graph"][data-nodes="1"]', None),
            ("#/executions", '[data-testid="execution-row"]', None),
            (f"#/executions/{execution_id}", '[data-testid="result-summary"]', None),
            (f"#/executions/{execution_id}", '[data-testid="result-summary"]', open_run_groups),
            (f"#/executions/{waiting_run}", '[data-testid="approval"]', None),
            ("#/llm", '[data-testid="provider-row"]', None),
            (f"#/llm/{provider['id']}", '[data-testid="model-row"]', None),
            ("#/tool-servers", '[data-testid="tool-server-row"]', None),
            (f"#/tool-servers/{tool_server_id}", '[data-testid="tool-server-tool"]', None),
            ("#/approvals", f'[data-testid="approval-row"][data-execution-id="{waiting_run}"]', None),
            ("#/admin", '[data-testid="audit-row"]', None),
            ("#/spend", '[data-testid="usage-bar"]', None),
        ]
        problems: dict[str, list[dict[str, Any]]] = {}
        checked = 0
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
            page.goto(f"{console.url}/console/")
            expect(page.get_by_test_id("login-username")).to_be_visible()
            problems[f"{scheme} sign-in"] = audit(page, axe_source)
            sign_in(page, ADMIN)
            for route, ready, then in pages:
                page.goto(f"{console.url}/console/{route}")
                expect(page.locator(ready).first).to_be_attached()
                if then:
                    then()
                problems[f"{scheme} {route}{' (opened)' if then else ''}"] = audit(page, axe_source)
            page.get_by_test_id("sign-out").click()
            checked += len(pages) + 1
    # Every finding, minor ones too, for whoever mends them.
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "accessibility.json").write_text(json.dumps(problems, indent=2) + "\n")
    serious = {where: [v for v in found if v["impact"] in SERIOUS] for where, found in problems.items()}
    serious = {where: found for where, found in serious.items() if found}
    figures(
        accessibility_pages_checked=checked,
        accessibility_serious_or_critical=sum(len(v) for v in serious.values()),
        accessibility_minor_or_moderate=sum(len(v) for v in problems.values()) - sum(len(v) for v in serious.values()),
    )
    assert not serious, serious
