"""A run's page at the sizes it meets: the demo team's finished run fits in three screens of 1280x800 (the
result first, the timeline closed), and a 100-node run's page keeps up while it streams and when it is read
again. The figures go to ``.test-output/webconsole/figures.json`` and the README; the tests assert what the
page shows, not how fast it was."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.helpers import REPO_ROOT
from tests.processes import API
from tests.webconsole.console import ADMIN, OUTPUT, Console, figures, hundred_node_team, sign_in

pytestmark = [pytest.mark.timeout(180), pytest.mark.long, pytest.mark.xdist_group("browser")]

SCREEN = {"width": 1280, "height": 800}
UNFINISHED = {"pending", "running", "awaiting_approval"}

# Every long task (over 50 ms of the page's main thread) from the page's start, kept for the test to read.
LONG_TASKS = """
window.__longTasks = [];
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); })
  .observe({ type: 'longtask', buffered: true });
"""


def finished(console: Console, execution_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        execution = dict(console.api.get(f"{API}/executions/{execution_id}").json())
        if execution["status"] not in UNFINISHED:
            return execution
        time.sleep(0.2)
    raise AssertionError(f"execution {execution_id} did not finish in {timeout_s} s")


def start(console: Console, team_id: str, task: str, **extra: Any) -> str:
    response = console.api.post(f"{API}/teams/{team_id}/executions", json={"input": {"task": task}, **extra})
    assert response.status_code == 202, response.text
    return str(response.json()["execution_id"])


def long_tasks(page: Page) -> list[float]:
    return [float(d) for d in page.evaluate("() => window.__longTasks.splice(0)")]


def test_the_demo_teams_finished_run_fits_in_three_screens(page: Page, console: Console) -> None:
    team = json.loads((REPO_ROOT / "examples" / "local-machine.json").read_text())
    team["team_name"] = f"demo-{uuid.uuid4().hex[:6]}"
    created = console.api.post(f"{API}/teams", json=team)
    assert created.status_code == 201, created.text  # the embedded default seeds its local-sim provider
    schema = json.loads((REPO_ROOT / "examples" / "output-schema.json").read_text())
    execution_id = start(
        console,
        created.json()["team_id"],
        "Check the health of this machine's data stores and report anything an on-call SRE should know.",
        output_schema=schema,
    )
    execution = finished(console, execution_id)
    assert execution["status"] == "success", execution
    agents = sum(len(node["agents"]) for node in team["topology"]["nodes"])

    page.set_viewport_size(SCREEN)
    page.goto(f"{console.url}/console/#/executions/{execution_id}")
    sign_in(page, ADMIN)
    expect(page.get_by_test_id("run-status")).to_have_text("success")
    expect(page.get_by_test_id("result-summary")).not_to_be_empty()
    expect(page.get_by_test_id("node-result")).to_have_count(len(team["topology"]["nodes"]))
    events = console.api.get(f"{API}/executions/{execution_id}/events", params={"size": 1}).json()["total"]
    expect(page.get_by_test_id("event-count")).to_have_text(str(events))
    expect(page.get_by_test_id("agent-panel")).to_have_count(agents)
    # The result comes first; the timeline is there, closed.
    order = page.evaluate(
        """() => ['run-result', 'run-graph', 'run-timeline'].map(id =>
             document.querySelector(`[data-testid="${id}"]`).getBoundingClientRect().top + window.scrollY)"""
    )
    assert order == sorted(order), order
    assert page.get_by_test_id("run-timeline").evaluate("d => d.open") is False
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.screenshot(path=str(OUTPUT / "demo-run-finished.png"), full_page=True)
    figures(
        demo_run_page_height_px=height,
        demo_run_page_screens=round(height / SCREEN["height"], 2),
        demo_run_events=events,
    )
    assert height <= 3 * SCREEN["height"], height
    # Opened, the timeline holds every event; a node team's group shows its agents' rows.
    page.get_by_test_id("run-timeline").locator("summary").first.click()
    first_node = page.get_by_test_id("node-panel").first
    first_node.locator("summary").first.click()
    expect(first_node.get_by_test_id("tool-call").first).to_be_visible()
    expect(page.get_by_test_id("timeline-event")).to_have_count(events)


def test_a_hundred_node_runs_page_keeps_up_live_and_when_read_again(page: Page, console: Console) -> None:
    team_id = hundred_node_team(console, "fast")
    page.add_init_script(LONG_TASKS)
    page.goto(f"{console.url}/console/")
    sign_in(page, ADMIN)
    execution_id = start(console, team_id, "Is everything up?")

    # Live: the page follows the run as it streams.
    started = time.monotonic()
    page.goto(f"{console.url}/console/#/executions/{execution_id}")
    expect(page.get_by_test_id("run-status")).to_have_text("success", timeout=120_000)
    events = console.api.get(f"{API}/executions/{execution_id}/events", params={"size": 1}).json()["total"]
    expect(page.get_by_test_id("event-count")).to_have_text(str(events), timeout=30_000)
    live_s = time.monotonic() - started
    live_tasks = long_tasks(page)
    expect(page.locator('[data-testid="node-status"][data-status="success"]')).to_have_count(100)
    # Finished while watched, every node team's group has closed by itself.
    assert page.get_by_test_id("node-panel").evaluate_all("ds => ds.filter(d => d.open).length") == 0

    # Read again: the whole stored stream replayed into the page.
    started = time.monotonic()
    page.reload()
    expect(page.get_by_test_id("event-count")).to_have_text(str(events), timeout=60_000)
    expect(page.get_by_test_id("run-status")).to_have_text("success")
    replay_s = time.monotonic() - started
    replay_tasks = long_tasks(page)
    expect(page.get_by_test_id("timeline-event")).to_have_count(events)
    # Still answering: a frame, then a node team's group opened from the keyboard.
    frame_ms = page.evaluate(
        "() => new Promise(r => { const t = performance.now();"
        " requestAnimationFrame(() => r(performance.now() - t)); })"
    )
    started = time.monotonic()
    page.get_by_test_id("run-timeline").locator("summary").first.click()
    group = page.locator('[data-testid="node-panel"][data-node-id="n99"]')
    group.locator("summary").first.focus()
    page.keyboard.press("Enter")
    expect(group.get_by_test_id("timeline-event").first).to_be_visible()
    open_s = time.monotonic() - started
    page.screenshot(path=str(OUTPUT / "hundred-node-run.png"))
    figures(
        hundred_node_run_events=events,
        hundred_node_run_live_s=round(live_s, 2),
        hundred_node_run_live_longest_task_ms=round(max(live_tasks, default=0), 1),
        hundred_node_run_live_long_tasks_ms=round(sum(live_tasks), 1),
        hundred_node_run_replay_s=round(replay_s, 2),
        hundred_node_run_replay_longest_task_ms=round(max(replay_tasks, default=0), 1),
        hundred_node_run_replay_long_tasks_ms=round(sum(replay_tasks), 1),
        hundred_node_run_frame_ms=round(frame_ms, 1),
        hundred_node_run_open_group_s=round(open_s, 3),
    )
