"""The web console in a real browser: Playwright for Python driving Debian's Chromium (``/usr/bin/chromium``;
``./dev`` installs it with apt-get) against a real ``aiops-executor serve`` on a free loopback port (the fixtures
are in conftest.py, the shared helpers in console.py)."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.helpers import REPO_ROOT
from tests.processes import API
from tests.tool_servers.test_tool_servers import TOKEN, http_server
from tests.webconsole.console import (
    ADMIN,
    MOCK_KEY,
    OUTPUT,
    VIEWER,
    Console,
    api_team,
    approval_team,
    figures,
    hundred_node_team,
    sign_in,
)

ROOT = REPO_ROOT

# One worker runs them all, sharing the session's server and browser.
pytestmark = [pytest.mark.timeout(180), pytest.mark.long, pytest.mark.xdist_group("browser")]


def team_yaml(name: str, model: str) -> str:
    nodes = []
    for node_id, kind, model_of_agent in (
        ("gateway", "gateway", "slow"),
        ("api", "service", "slow"),
        ("db", "database", model),
        ("cache", "cache", "slow"),
    ):
        nodes.append(
            f"""    - node_id: {node_id}
      node_name: {node_id.title()}
      node_type: {kind}
      attributes: {{host: 127.0.0.1, port: 9}}
      agents:
        - {{agent_id: probe, agent_name: Prober, model_provider: ui-sim, model_id: {model_of_agent},
           tools: [tcp_check]}}
      supervisor_config: {{model_provider: ui-sim, model_id: slow, coordination_strategy: round_robin}}
"""
        )
    return f"""team_name: {name}
timeout_seconds: 300
topology:
  nodes:
{"".join(nodes)}  edges:
    - {{source_node_id: gateway, target_node_id: api, relation_type: calls}}
    - {{source_node_id: api, target_node_id: db, relation_type: depends_on}}
    - {{source_node_id: api, target_node_id: cache, relation_type: depends_on}}
  global_supervisor: {{model_provider: ui-sim, model_id: slow, coordination_strategy: hierarchical}}
"""


def create_team_through_the_page(page: Page, console: Console, tmp_path: Path, name: str) -> str:
    """New team from an uploaded YAML file with one problem (an unknown model on node db), shown next to that node;
    fixed in the editor and created. Returns the team id."""
    page.get_by_test_id("nav-teams").click()
    page.get_by_test_id("team-new").click()
    broken = tmp_path / f"{name}.yaml"
    # Two rounds of problems: the request's shape first (422, an unknown relation on edge 1), then the topology's
    # rules (400, an unknown model on node db); each shown next to what it concerns.
    broken.write_text(
        team_yaml(name, "no-such-model").replace(
            "target_node_id: db, relation_type: depends_on", "target_node_id: db, relation_type: needs"
        )
    )
    page.get_by_test_id("team-file").set_input_files(str(broken))
    expect(page.get_by_test_id("team-graph")).to_have_attribute("data-nodes", "4")
    page.get_by_test_id("team-submit").click()
    edge = page.locator('[data-testid="edge-problems"][data-edge-index="1"]')
    expect(edge.get_by_test_id("problem")).to_have_attribute("data-path", "topology.edges[1].relation_type")
    expect(page.get_by_test_id("problem")).to_have_count(1)
    editor = page.get_by_test_id("team-document")
    editor.fill(editor.input_value().replace("relation_type: needs", "relation_type: depends_on"))
    page.get_by_test_id("team-submit").click()
    db = page.locator('[data-testid="node-problems"][data-node-id="db"]')
    expect(db).to_have_attribute("data-problems", "1")
    expect(db.get_by_test_id("problem")).to_contain_text("no-such-model")
    expect(db.get_by_test_id("problem")).to_have_attribute("data-path", "topology.nodes[2].agents[0].model_id")
    for clean in ("gateway", "api", "cache"):
        expect(page.locator(f'[data-testid="node-problems"][data-node-id="{clean}"]')).to_have_attribute(
            "data-problems", "0"
        )
    page.screenshot(path=str(OUTPUT / f"{name}-problem.png"), full_page=True)

    editor.fill(editor.input_value().replace("no-such-model", "slow"))
    page.get_by_test_id("team-submit").click()
    expect(page.get_by_test_id("team-title")).to_have_text(name)
    expect(page.get_by_test_id("team-graph")).to_have_attribute("data-nodes", "4")
    expect(page.get_by_test_id("team-graph")).to_have_attribute("data-edges", "3")
    page.get_by_test_id("team-validate").click()  # re-checked against today's LLM configuration
    expect(page.get_by_test_id("problem-count")).to_have_text("No problems")
    team_id = page.url.rsplit("/", 1)[1]
    assert console.api.get(f"{API}/teams/{team_id}").json()["team_name"] == name
    return team_id


def test_first_load_is_light_and_quick_and_the_providers_are_listed(page: Page, console: Console) -> None:
    sizes: list[int] = []
    page.on("requestfinished", lambda r: sizes.append(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]))
    started = time.monotonic()
    page.goto(f"{console.url}/console/")
    expect(page.get_by_test_id("login-username")).to_be_visible()
    wall_s = time.monotonic() - started
    # From the start of navigation (the page's own clock) to a usable sign-in form.
    interactive_s = page.evaluate("() => performance.now()") / 1000
    first_load, first_requests = sum(sizes), len(sizes)
    # By keyboard alone: the username field has the focus, Tab moves on, Enter signs in.
    page.keyboard.type(ADMIN["username"])
    page.keyboard.press("Tab")
    page.keyboard.type(ADMIN["password"])
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("session-user")).to_contain_text(ADMIN["username"])
    page.get_by_test_id("nav-llm").click()
    expect(page.locator('[data-testid="provider-row"][data-provider-name="local-sim"]')).to_be_visible()
    # The provider types come from the API's own document: the console keeps no list of them.
    types = console.api.get("/openapi.json").json()["components"]["schemas"]["ProviderType"]["enum"]
    expect(page.get_by_test_id("provider-type").locator("option")).to_have_text(types)
    page.locator('[data-testid="provider-row"][data-provider-name="ui-sim"] a').click()
    slow = page.locator('[data-testid="model-row"][data-model-id="slow"]')
    expect(slow.get_by_test_id("model-capabilities")).to_contain_text("function_calling 3/5")
    slow.get_by_test_id("model-test").click()
    expect(slow.get_by_test_id("model-test-result")).to_contain_text("success")

    page.get_by_test_id("nav-llm").click()
    page.locator('[data-testid="provider-row"][data-provider-name="ui-openai"] a').click()
    endpoint = page.locator('[data-testid="endpoint-row"][data-endpoint-name="local-mock"]')
    expect(endpoint.get_by_test_id("endpoint-health")).to_have_text("unknown")
    expect(endpoint.get_by_test_id("endpoint-circuit")).to_have_attribute("data-state", "closed")

    page.get_by_test_id("credential-alias").fill("primary")
    page.get_by_test_id("credential-key").fill(MOCK_KEY)
    page.get_by_test_id("credential-form").get_by_role("button", name="Add credential").click()
    row = page.locator('[data-testid="credential-row"][data-alias="primary"]')
    expect(row.get_by_test_id("credential-masked")).to_have_text(f"{MOCK_KEY[:4]}...{MOCK_KEY[-4:]}")
    row.get_by_test_id("credential-validate").click()
    expect(row.get_by_test_id("credential-status")).to_have_text("valid")
    endpoint.get_by_test_id("endpoint-health-check").click()  # an authenticated call: it needs the key
    expect(endpoint.get_by_test_id("endpoint-health")).to_have_text("healthy")
    expect(page.get_by_test_id("notice")).to_contain_text("local-mock: healthy")
    # Rotated to a key the provider refuses: validation says so.
    wrong = "sk-wrong-" + uuid.uuid4().hex
    expect(row.get_by_test_id("credential-rotate-key")).to_be_hidden()
    row.get_by_test_id("credential-rotate").click()
    row.get_by_test_id("credential-rotate-key").fill(wrong)
    row.get_by_test_id("credential-rotate-save").click()
    expect(row.get_by_test_id("credential-masked")).to_have_text(f"{wrong[:4]}...{wrong[-4:]}")
    row.get_by_test_id("credential-validate").click()
    expect(row.get_by_test_id("credential-status")).to_have_text("invalid")
    expect(page.get_by_test_id("notice")).to_contain_text("not valid")
    for secret in (MOCK_KEY, wrong):
        assert secret not in page.content()
    # Signed out, a reload asks to sign in again: the session cookie is gone.
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("login-username")).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("login-username")).to_be_visible()
    sign_in(page, ADMIN)
    page.get_by_test_id("credential-rotate").click()
    row.get_by_test_id("credential-rotate-key").fill(MOCK_KEY)
    row.get_by_test_id("credential-rotate-save").click()
    expect(row.get_by_test_id("credential-masked")).to_have_text(f"{MOCK_KEY[:4]}...{MOCK_KEY[-4:]}")
    page.get_by_test_id("model-sync").click()
    expect(page.get_by_test_id("notice")).to_contain_text("models synced")
    expect(page.get_by_test_id("model-row").first).to_be_visible()
    figures(
        first_load_bytes=first_load,
        first_load_requests=first_requests,
        sign_in_form_interactive_s=round(interactive_s, 3),
        sign_in_form_wall_clock_s=round(wall_s, 3),
        bytes_until_llm_pages_done=sum(sizes),
    )
    assert first_load < 1_000_000, first_load
    # Interactive within 1 s on an idle machine; the bound leaves room for a busy 2-core CI box.
    assert interactive_s < 3, interactive_s


def test_create_run_reload_mid_run_and_read_the_history(page: Page, console: Console, tmp_path: Path) -> None:
    page.goto(f"{console.url}/console/")
    sign_in(page, ADMIN)
    name = f"shop-{uuid.uuid4().hex[:6]}"
    team_id = create_team_through_the_page(page, console, tmp_path, name)
    page.get_by_test_id("nav-teams").click()
    expect(page.locator(f'[data-testid="team-row"][data-team-name="{name}"]')).to_be_visible()
    page.locator(f'[data-testid="team-row"][data-team-name="{name}"] a').click()

    page.get_by_test_id("execute-task").fill("Why is checkout slow?")
    page.get_by_text("Context, output schema, timeout").click()
    page.get_by_test_id("execute-output-schema").fill((ROOT / "examples" / "output-schema.json").read_text())
    page.get_by_test_id("execute-submit").click()
    expect(page.get_by_test_id("run-status")).to_have_text("running")
    nodes = page.get_by_test_id("node-status")
    expect(nodes).to_have_count(4)
    # db and cache run first (api depends on them); once one of them is done the run is still going.
    expect(page.locator('[data-testid="node-status"][data-status="success"]').first).to_be_visible(timeout=30_000)
    execution_id = page.url.rsplit("/", 1)[1]
    page.screenshot(path=str(OUTPUT / "run-live.png"))
    assert console.api.get(f"{API}/executions/{execution_id}").json()["status"] == "running"
    assert page.locator('[data-testid="node-status"][data-node-id="gateway"]').get_attribute("data-status") in {
        "pending",
        "running",
    }

    page.reload()  # still signed in (the session cookie), and the page re-attaches to the run
    expect(page.get_by_test_id("session-user")).to_contain_text(ADMIN["username"])
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: no script can read the session
    expect(page.get_by_test_id("run-status")).to_have_text("success", timeout=60_000)
    for node_id in ("gateway", "api", "db", "cache"):
        expect(page.locator(f'[data-testid="node-status"][data-node-id="{node_id}"]')).to_have_attribute(
            "data-status", "success"
        )
    events = console.api.get(f"{API}/executions/{execution_id}/events", params={"size": 100}).json()
    # Every stored event once, in the group of the node team and agent it belongs to.
    rows = page.get_by_test_id("timeline-event").evaluate_all(
        """rows => rows.map(r => [Number(r.dataset.seq), r.dataset.event,
             r.closest('[data-testid=node-panel]')?.dataset.nodeId ?? null,
             r.closest('[data-testid=agent-panel]')?.dataset.agentId ?? null])"""
    )
    stored = []
    for after in range(0, events["total"], 100):
        batch = console.api.get(f"{API}/executions/{execution_id}/events", params={"after": after, "size": 100}).json()
        stored += [[e["seq"], e["event"], e["data"].get("node_id"), e["data"].get("agent_id")] for e in batch["items"]]
    assert len(stored) == events["total"]
    assert sorted(rows) == stored
    grouped = {(node_id, agent_id) for _, _, node_id, agent_id in rows}
    assert {(n, "probe") for n in ("gateway", "api", "db", "cache")} | {(None, None)} <= grouped
    assert any(event == "node_supervisor_decision" and agent is None for _, event, _, agent in rows)
    assert "agent_token" not in stored  # token deltas are live only: never stored, never a timeline row
    expect(page.get_by_test_id("tool-call").first).to_contain_text("tcp_check")
    expect(page.get_by_test_id("agent-message").first).not_to_be_empty()
    expect(page.get_by_test_id("structured-output")).to_contain_text("overall_status")
    expect(page.get_by_test_id("node-usage")).to_have_count(4)
    expect(page.get_by_test_id("usage")).to_contain_text("$")
    # Each node's verdict, and the suspects as the API ranks them, causes first.
    result = console.api.get(f"{API}/executions/{execution_id}").json()["result"]
    verdicts = page.get_by_test_id("node-verdict")
    expect(verdicts).to_have_count(4)
    expect(verdicts.first).to_have_text(result["node_results"][0]["verdict"])
    suspects = page.get_by_test_id("suspect")
    expect(suspects).to_have_count(len(result["suspects"]))
    for index, suspect in enumerate(result["suspects"]):
        expect(suspects.nth(index)).to_have_attribute("data-node-id", suspect["node_id"])

    page.get_by_test_id("nav-executions").click()
    page.get_by_test_id("filter-team").select_option(team_id)
    row = page.locator(f'[data-testid="execution-row"][data-execution-id="{execution_id}"]')
    expect(row).to_have_attribute("data-status", "success")
    # Dates in the browser's time zone (this context's is Europe/Berlin), not UTC.
    started_at = console.api.get(f"{API}/executions/{execution_id}").json()["started_at"]
    berlin, utc = page.evaluate(
        """iso => ['Europe/Berlin', 'UTC'].map(timeZone => new Intl.DateTimeFormat(undefined,
             {dateStyle: 'medium', timeStyle: 'medium', timeZone}).format(new Date(iso)))""",
        started_at,
    )
    assert berlin != utc
    expect(row.locator("a")).to_have_text(berlin)
    page.get_by_test_id("filter-status").select_option("failed")
    expect(row).to_have_count(0)
    page.get_by_test_id("filter-status").select_option("success")
    row.locator("a").click()
    expect(page.get_by_test_id("run-status")).to_have_text("success")
    expect(page.get_by_test_id("timeline-event")).to_have_count(events["total"])
    expect(page.get_by_test_id("result-summary")).not_to_be_empty()
    # A finished run opens with its timeline and every node team's group closed; a suspect's evidence opens the
    # groups around its tool call.
    assert page.get_by_test_id("run-timeline").evaluate("d => d.open") is False
    assert page.get_by_test_id("node-panel").evaluate_all("ds => ds.filter(d => d.open).length") == 0
    evidence = next(seq for suspect in result["suspects"] for seq in suspect["evidence_seqs"])
    page.get_by_test_id("suspect-evidence").get_by_text(f"#{evidence}", exact=True).first.click()
    expect(page.locator(f'[data-testid="timeline-event"][data-seq="{evidence}"]')).to_be_visible()
    expect(page.locator(f'[data-testid="timeline-event"][data-seq="{evidence}"]')).to_have_attribute(
        "data-event", "tool_call"
    )


def test_a_run_can_be_cancelled(page: Page, console: Console) -> None:
    team = api_team(console, "slower")
    page.goto(f"{console.url}/console/#/teams/{team['team_id']}")
    sign_in(page, ADMIN)
    page.get_by_test_id("execute-task").fill("Is it up?")
    page.get_by_test_id("execute-submit").click()
    expect(page.get_by_test_id("run-status")).to_have_text("running")
    page.get_by_test_id("execution-cancel").click()
    expect(page.get_by_test_id("run-status")).to_have_text("cancelled", timeout=20_000)
    expect(page.get_by_test_id("execution-cancel")).to_be_hidden()


def test_a_viewer_sees_no_edit_buttons_and_the_api_refuses_anyway(page: Page, console: Console) -> None:
    team = api_team(console, "slow")
    provider = next(p for p in console.api.get(f"{API}/providers").json()["items"] if p["name"] == "ui-sim")
    page.goto(f"{console.url}/console/")
    sign_in(page, VIEWER)
    expect(page.get_by_test_id("team-row").first).to_be_visible()
    expect(page.get_by_test_id("team-new")).to_have_count(0)
    page.goto(f"{console.url}/console/#/teams/{team['team_id']}")
    expect(page.get_by_test_id("team-title")).to_have_text(team["team_name"])
    expect(page.get_by_test_id("team-graph")).to_have_attribute(
        "data-nodes", str(team["topology_summary"]["node_count"])
    )
    for hidden in ("execute-submit", "execute-task", "team-submit", "team-delete", "team-validate"):
        expect(page.get_by_test_id(hidden)).to_have_count(0)
    page.goto(f"{console.url}/console/#/llm/{provider['id']}")
    expect(page.get_by_test_id("provider-title")).to_have_text("ui-sim")
    expect(page.get_by_test_id("model-row").first).to_be_visible()
    for hidden in (
        "provider-toggle",
        "provider-delete",
        "model-test",
        "model-sync",
        "credential-form",
        "endpoint-form",
    ):
        expect(page.get_by_test_id(hidden)).to_have_count(0)
    page.goto(f"{console.url}/console/#/executions")
    expect(page.get_by_test_id("execution-row").first).to_be_visible()
    with httpx.Client(base_url=console.url) as client:
        token = client.post(f"{API}/auth/token", data=VIEWER).json()["access_token"]
        refused = client.post(
            f"{API}/teams/{team['team_id']}/executions",
            json={"input": {"task": "x"}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert refused.status_code == 403 and refused.json()["error_code"] == "FORBIDDEN"


def test_a_hundred_node_topology_draws_and_stays_responsive(page: Page, console: Console) -> None:
    team_id = hundred_node_team(console, "slow")
    sizes: list[int] = []
    page.on("requestfinished", lambda r: sizes.append(r.sizes()["responseBodySize"] + r.sizes()["responseHeadersSize"]))
    page.goto(f"{console.url}/console/")
    sign_in(page, ADMIN)
    started = time.monotonic()
    page.goto(f"{console.url}/console/#/teams/{team_id}")
    expect(page.get_by_test_id("team-graph")).to_have_attribute("data-nodes", "100", timeout=20_000)
    drawn_s = time.monotonic() - started
    with_graph = sum(sizes)  # the whole console so far: the page, its modules, the graph libraries, the API calls
    page.get_by_test_id("team-graph").screenshot(path=str(OUTPUT / "hundred-node-graph.png"))
    page.emulate_media(color_scheme="dark")  # readable in dark too: the page follows the system's scheme
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 20, 25)", background
    page.screenshot(path=str(OUTPUT / "hundred-node-team-dark.png"))
    page.emulate_media(color_scheme="light")
    # Responsive: the page answers input and paints a frame promptly with the graph on it.
    frame_ms = page.evaluate(
        "() => new Promise(r => { const t = performance.now();"
        " requestAnimationFrame(() => r(performance.now() - t)); })"
    )
    started = time.monotonic()
    page.get_by_test_id("nav-executions").click()
    expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    navigate_s = time.monotonic() - started
    figures(
        team_page_with_graph_bytes=with_graph,
        hundred_nodes_drawn_s=round(drawn_s, 3),
        hundred_nodes_frame_ms=round(frame_ms, 1),
        navigate_away_s=round(navigate_s, 3),
    )
    assert with_graph < 1_000_000, with_graph
    assert drawn_s < 10 and frame_ms < 500 and navigate_s < 3, (drawn_s, frame_ms, navigate_s)


def test_the_pages_helpers_parse_streams_and_place_problems(page: Page, console: Console) -> None:
    """The console's own modules, run in the browser: the SSE reader on awkward chunking (a message split across
    reads, CRLF and CR line ends, comments, multi-line data) and problems placed on nodes, agents and edges."""
    page.goto(f"{console.url}/console/")
    result = page.evaluate(
        """async () => {
          const { messages } = await import('./js/sse.js');
          const { placeProblems, locToPath, problemsOf, parseDocument } = await import('./js/topology.js');
          const chunks = [
            ': ping\\n\\nid: 1\\nevent: execution_start\\nda', 'ta: {"seq": 1}\\r\\n\\r\\n',
            'id: 2\\revent: agent_token\\rdata: line one\\rdata: line two\\r\\r',
            'id: 3\\r', '\\nevent: node_complete\\r', '\\ndata: {}\\r\\n\\r', '\\n',  // CRLF split across reads
            'event: heartbeat\\ndata: {}\\n\\n'];
          const encoder = new TextEncoder();
          const body = new ReadableStream({
            start(c) { for (const x of chunks) c.enqueue(encoder.encode(x)); c.close(); },
          });
          const seen = [];
          for await (const m of messages(body)) seen.push(m);
          const placed = placeProblems(problemsOf({ details: { errors: [
            { path: 'topology.nodes[1].agents[0].model_id', message: 'no model', code: 'MODEL_NOT_FOUND' },
            { path: 'topology.nodes[1].node_id', message: 'dup', code: 'DUPLICATE_NODE_ID' },
            { loc: ['body', 'topology', 'edges', 2, 'relation_type'], message: 'bad relation', type: 'enum' },
            { path: 'timeout_seconds', message: 'too long', code: 'LIMIT' },
          ] } }));
          return {
            seen,
            node: placed.nodes.get(1).own.map(p => p.code),
            agent: placed.nodes.get(1).agents.get(0).map(p => p.message),
            edge: placed.edges.get(2).map(p => p.path),
            team: placed.team.map(p => p.path),
            loc: locToPath(['body', 'topology', 'nodes', 0, 'agents', 3, 'tools', 1]),
            yamlError: parseDocument('team_name: [unclosed').error,
            jsonValue: parseDocument('{"team_name": "x"}').value,
          };
        }"""
    )
    assert result["seen"] == [
        {"id": "1", "event": "execution_start", "data": '{"seq": 1}'},
        {"id": "2", "event": "agent_token", "data": "line one\nline two"},
        {"id": "3", "event": "node_complete", "data": "{}"},
        {"id": None, "event": "heartbeat", "data": "{}"},
    ]
    assert result["node"] == ["DUPLICATE_NODE_ID"] and result["agent"] == ["no model"]
    assert result["edge"] == ["topology.edges[2].relation_type"] and result["team"] == ["timeout_seconds"]
    assert result["loc"] == "topology.nodes[0].agents[3].tools[1]"
    assert result["yamlError"].startswith("not valid YAML: line 1") and result["jsonValue"] == {"team_name": "x"}


def test_a_tool_call_waiting_for_approval_is_approved_from_the_page(page: Page, console: Console) -> None:
    team_id = approval_team(console)
    page.goto(f"{console.url}/console/#/teams/{team_id}")
    sign_in(page, ADMIN)
    page.get_by_test_id("execute-task").fill("May I probe it?")
    page.get_by_test_id("execute-submit").click()
    card = page.get_by_test_id("approval")
    expect(card).to_have_attribute("data-status", "pending", timeout=30_000)
    expect(card).to_contain_text("tcp_check")
    expect(page.get_by_test_id("run-status")).to_have_text("awaiting_approval")
    card.get_by_test_id("approval-comment").fill("go ahead")
    card.get_by_test_id("approval-approve").click()
    expect(card).to_have_attribute("data-status", "approved")
    expect(card.get_by_test_id("approval-outcome")).to_contain_text("go ahead")
    expect(page.get_by_test_id("run-status")).to_have_text("success", timeout=60_000)
    expect(page.get_by_test_id("tool-call").first).to_contain_text("tcp_check")
    expect(card.get_by_test_id("approval-approve")).to_be_hidden()


MANIFESTS = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: "nginx:1.27", ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
"""


def test_a_team_is_made_from_kubernetes_manifests(page: Page, console: Console) -> None:
    paths = console.api.get("/openapi.json").json()["paths"]
    if f"{API}/topologies/import/kubernetes" not in paths:
        pytest.skip("this service has no Kubernetes import (POST /topologies/import/kubernetes)")
    page.goto(f"{console.url}/console/#/teams/new")
    sign_in(page, ADMIN)
    page.get_by_text("Import from Kubernetes manifests").click()
    page.get_by_test_id("import-manifests").fill("kind: [broken")
    page.get_by_test_id("import-submit").click()
    expect(page.get_by_test_id("import-notes")).to_contain_text("line")
    name = f"k8s-{uuid.uuid4().hex[:6]}"
    page.get_by_test_id("import-manifests").fill(MANIFESTS)
    page.get_by_test_id("import-team-name").fill(name)
    page.get_by_test_id("import-submit").click()
    expect(page.get_by_test_id("import-notes")).to_contain_text("imported 2 nodes and 1 edges")
    expect(page.get_by_test_id("team-graph")).to_have_attribute("data-nodes", "2")
    page.get_by_test_id("team-submit").click()
    expect(page.get_by_test_id("team-title")).to_have_text(name)


def test_a_tool_server_is_registered_and_its_tools_are_listed(page: Page, console: Console, tmp_path: Path) -> None:
    with http_server(tmp_path) as server:
        page.goto(f"{console.url}/console/")
        sign_in(page, ADMIN)
        page.get_by_test_id("nav-tool-servers").click()
        expect(page).to_have_title(re.compile(r"^Tool servers"))
        form = page.get_by_test_id("tool-server-form")
        form.get_by_test_id("tool-server-name").fill("ui-tools")
        form.get_by_test_id("tool-server-transport").select_option("streamable_http")
        form.get_by_test_id("tool-server-url").fill(f"http://127.0.0.1:{server.port}/mcp")
        form.get_by_test_id("tool-server-headers-add").click()
        form.get_by_test_id("tool-server-headers-name").fill("X-Test-Token")
        secret = form.get_by_test_id("tool-server-headers-value")
        expect(secret).to_have_attribute("type", "password")  # typed masked
        secret.fill(TOKEN)
        form.get_by_test_id("tool-server-save").click()

        # Registered, then its tools are listed at once.
        expect(page.get_by_test_id("tool-server-title")).to_have_text("ui-tools")
        expect(page.locator('[data-testid="tool-server-tool"][data-tool="echo"]')).to_contain_text("ui-tools.echo")
        expect(page.get_by_test_id("tool-server-health")).to_have_text("healthy")
        expect(page).to_have_title(re.compile(r"^ui-tools"))
        stored = console.api.get(f"{API}/tool-servers").json()["items"]
        assert [s["headers"] for s in stored if s["name"] == "ui-tools"] != [] and TOKEN not in json.dumps(stored)

        # Editing keeps the stored secrets when none is typed again.
        edit = page.get_by_test_id("tool-server-form")
        edit.locator('input[name="approval_required"]').check()
        edit.get_by_test_id("tool-server-save").click()
        expect(page.get_by_test_id("notice")).to_contain_text("tool server ui-tools saved")
        saved = next(s for s in console.api.get(f"{API}/tool-servers").json()["items"] if s["name"] == "ui-tools")
        assert saved["approval_required"] is True and list(saved["headers"]) == ["X-Test-Token"]

        # The whole row opens the server: a click beside the link, or Enter on the row.
        page.get_by_test_id("nav-tool-servers").click()
        row = page.locator('[data-testid="tool-server-row"][data-name="ui-tools"]')
        expect(row.get_by_test_id("tool-server-health")).to_have_text("healthy")
        row.locator("td").nth(2).click()
        expect(page.get_by_test_id("tool-server-title")).to_have_text("ui-tools")
        page.go_back()
        row.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("tool-server-title")).to_have_text("ui-tools")

        # A refresh that cannot reach the server says why, and the page keeps the reason.
        server.kill()
        page.get_by_test_id("tool-server-refresh").click()
        expect(page.get_by_test_id("notice")).to_contain_text("TOOL_SERVER_UNREACHABLE")
        expect(page.get_by_test_id("tool-server-error")).to_be_visible()
        expect(page.get_by_test_id("tool-server-health")).to_have_text("unhealthy")

        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("tool-server-delete").click()
        expect(page.get_by_test_id("notice")).to_contain_text("tool server ui-tools deleted")
        expect(page.locator('[data-testid="tool-server-row"][data-name="ui-tools"]')).to_have_count(0)


def test_two_runs_waiting_for_approvals_are_decided_from_the_inbox(page: Page, console: Console) -> None:
    ids = []
    for i in range(2):
        started = console.api.post(
            f"{API}/teams/{approval_team(console)}/executions", json={"input": {"task": f"inbox {i}"}}
        )
        assert started.status_code == 202, started.text
        ids.append(started.json()["execution_id"])
    deadline = time.monotonic() + 60
    while {console.api.get(f"{API}/executions/{i}").json()["status"] for i in ids} != {"awaiting_approval"}:
        assert time.monotonic() < deadline, "the runs did not stop for their approvals"
        time.sleep(0.2)

    page.goto(f"{console.url}/console/#/approvals")
    sign_in(page, ADMIN)
    expect(page).to_have_title(re.compile(r"^Approvals"))
    expect(page.get_by_test_id("approvals-count")).to_have_text("2")
    expect(page.get_by_test_id("approval-row")).to_have_count(2)
    first = page.locator(f'[data-testid="approval-row"][data-execution-id="{ids[0]}"]')
    second = page.locator(f'[data-testid="approval-row"][data-execution-id="{ids[1]}"]')
    expect(first).to_contain_text("tcp_check")
    expect(first).to_contain_text("only / probe")
    first.get_by_test_id("approval-approve").click()
    expect(page.get_by_test_id("approvals-count")).to_have_text("1")
    second.get_by_test_id("approval-comment").fill("not during the incident")
    second.get_by_test_id("approval-reject").click()
    expect(page.get_by_test_id("approvals-empty")).to_be_visible()
    expect(page.get_by_test_id("approvals-count")).to_be_hidden()
    decided = page.locator(f'[data-testid="approval-decided-row"][data-execution-id="{ids[1]}"]')
    expect(decided).to_contain_text(f"rejected by user:{ADMIN['username']}")
    expect(decided).to_contain_text("not during the incident")

    # Both runs go on: neither waits for anyone any more.
    deadline = time.monotonic() + 60
    while "awaiting_approval" in {console.api.get(f"{API}/executions/{i}").json()["status"] for i in ids}:
        assert time.monotonic() < deadline, "a decided run did not resume"
        time.sleep(0.2)


def test_users_api_keys_and_the_audit_log_are_administered_from_the_page(page: Page, console: Console) -> None:
    page.goto(f"{console.url}/console/")
    sign_in(page, ADMIN)
    page.get_by_test_id("nav-admin").click()
    expect(page).to_have_title(re.compile(r"^Administration"))

    page.get_by_test_id("user-username").fill("ui-newcomer")
    page.get_by_test_id("user-password").fill("a-long-password")
    page.get_by_test_id("user-create").click()
    row = page.locator('[data-testid="user-row"][data-username="ui-newcomer"]')
    expect(row.get_by_test_id("user-role")).to_have_value("viewer")
    row.get_by_test_id("user-role").select_option("operator")
    expect(page.get_by_test_id("notice")).to_contain_text("ui-newcomer is now operator")
    page.get_by_test_id("audit-resource").fill("user")
    page.get_by_test_id("audit-action").fill("update")
    page.get_by_test_id("audit-action").press("Enter")
    change = page.locator('[data-testid="audit-row"][data-action="update"]').first
    expect(change).to_contain_text("ui-newcomer")
    expect(change).to_contain_text("operator")
    row.get_by_test_id("user-toggle").click()
    expect(row.get_by_test_id("user-status")).to_have_text("inactive")
    refused = console.api.post(f"{API}/auth/token", data={"username": "ui-newcomer", "password": "a-long-password"})
    assert refused.status_code == 401

    # The last admin cannot be demoted: refused in the API's words, and the menu shows the stored role.
    me = page.locator(f'[data-testid="user-row"][data-username="{ADMIN["username"]}"]')
    me.get_by_test_id("user-role").select_option("viewer")
    expect(page.get_by_test_id("notice")).to_contain_text("LAST_ADMIN")
    expect(me.get_by_test_id("user-role")).to_have_value("admin")

    # An API key: shown once, it works at once; revoked, it stops at once.
    page.get_by_test_id("api-key-name").fill("alertmanager")
    page.get_by_test_id("api-key-create").click()
    key = page.get_by_test_id("api-key-value").inner_text()
    expect(page.locator('[data-testid="api-key-row"][data-name="alertmanager"]')).to_be_visible()
    with httpx.Client(base_url=console.url) as machine:
        bearer = {"Authorization": f"Bearer {key}"}
        assert machine.get(f"{API}/teams", headers=bearer).status_code == 200
        # Alertmanager with that key starts a run; the run's page shows the alert that started it.
        team = api_team(console, "slow")
        alert = json.loads((ROOT / "examples" / "alertmanager" / "checkout-latency-firing.json").read_text())
        webhook = f"{API}/webhooks/alertmanager"
        started = machine.post(webhook, params={"team_id": team["team_id"]}, json=alert, headers=bearer)
        assert started.status_code == 202, started.text
        [run] = started.json()["executions"]
        page.goto(f"{console.url}/console/#/executions/{run['execution_id']}")
        panel = page.get_by_test_id("run-alert")
        expect(panel.get_by_test_id("run-alert-group")).to_have_text(alert["groupKey"])
        expect(panel).to_contain_text("CheckoutHighLatency")
        expect(page.get_by_test_id("run-result")).to_be_visible()
        console.api.post(f"{API}/executions/{run['execution_id']}/cancel")
        page.get_by_test_id("nav-admin").click()
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator('[data-testid="api-key-row"][data-name="alertmanager"]').get_by_test_id("api-key-revoke").click()
        expect(page.locator('[data-testid="api-key-row"][data-name="alertmanager"]')).to_have_count(0)
        assert machine.get(f"{API}/teams", headers=bearer).status_code == 401
    listed = console.api.get(f"{API}/api-keys").json()["items"]
    assert key not in json.dumps(listed)
