"""The Spend page in a real browser: a budget made, changed and deleted through the page, shown with what its
period spent; the usage report as a table and a bar chart by day."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page, expect

from tests.processes import API
from tests.webconsole.console import ADMIN, OUTPUT, VIEWER, Console, api_team, sign_in

pytestmark = [pytest.mark.timeout(180), pytest.mark.long, pytest.mark.xdist_group("browser")]


def finished_run(console: Console, team_id: str) -> dict[str, object]:
    started = console.api.post(f"{API}/teams/{team_id}/executions", json={"input": {"task": "Is it up?"}})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 60
    while True:
        execution = dict(console.api.get(f"{API}/executions/{started.json()['execution_id']}").json())
        if execution["completed_at"]:
            return execution
        assert time.monotonic() < deadline, execution
        time.sleep(0.2)


def test_budgets_are_kept_and_usage_is_reported_from_the_page(page: Page, console: Console) -> None:
    team = api_team(console, "fast")
    run = finished_run(console, team["team_id"])
    page.goto(f"{console.url}/console/")
    sign_in(page, ADMIN)
    page.get_by_test_id("nav-spend").click()
    expect(page.get_by_role("heading", name="Spend", exact=True)).to_be_visible()
    assert page.title().startswith("Spend")

    form = page.get_by_test_id("budget-form").last
    form.get_by_test_id("budget-scope").select_option("team")
    form.get_by_test_id("budget-target").select_option(label=team["team_name"])
    form.get_by_test_id("budget-limit-usd").fill("5")
    form.get_by_test_id("budget-period").select_option("month")
    form.get_by_test_id("budget-save").click()
    expect(page.get_by_test_id("notice")).to_contain_text("budget created")
    row = page.locator('[data-testid="budget-row"][data-scope="team"]').filter(has_text=team["team_name"])
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("budget-spent")).to_contain_text("$")
    budget = next(b for b in console.api.get(f"{API}/budgets").json()["items"] if b["scope_id"] == team["team_id"])
    assert budget["limit_usd"] == 5 and budget["period"] == "month" and budget["spent_usd"] > 0

    row.get_by_test_id("budget-edit").click()
    editor = page.get_by_test_id("budget-form").first
    editor.get_by_test_id("budget-limit-usd").fill("7.5")
    editor.get_by_test_id("budget-save").click()
    expect(page.get_by_test_id("notice")).to_contain_text("budget saved")
    assert console.api.get(f"{API}/budgets/{budget['id']}").json()["limit_usd"] == 7.5

    # The usage report: by day with its chart, then by team.
    expect(page.get_by_test_id("usage-bar").first).to_be_visible()
    page.get_by_test_id("usage-group").select_option("team")
    page.get_by_test_id("usage-submit").click()
    team_row = page.locator(f'[data-testid="usage-row"][data-key="{team["team_id"]}"]')
    expect(team_row).to_contain_text(team["team_name"])
    usage = run["usage"]
    assert isinstance(usage, dict)
    expect(team_row).to_contain_text(str(usage["input_tokens"]))
    page.screenshot(path=str(OUTPUT / "spend.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f'[data-testid="budget-row"][data-id="{budget["id"]}"]').get_by_test_id("budget-delete").click()
    expect(page.get_by_test_id("notice")).to_contain_text("budget deleted")
    expect(page.locator(f'[data-testid="budget-row"][data-id="{budget["id"]}"]')).to_have_count(0)

    page.get_by_test_id("sign-out").click()
    sign_in(page, VIEWER)
    expect(page.get_by_test_id("nav-spend")).to_be_hidden()
