"""The web console's serving (``GET /console/``): its files, their security headers, that the page's modules all
resolve and that the wheel ships them; and ``GET /executions``, the history list it reads."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from aiops_executor.webconsole.endpoints import FILES, STATIC_DIR
from tests.helpers import API, REPO_ROOT, add_simulator, assert_error
from tests.processes import team_body

ROOT = REPO_ROOT
OWN_SOURCES = sorted(
    p for p in STATIC_DIR.rglob("*") if p.suffix in {".js", ".html", ".css"} and "vendor" not in p.parts
)


@pytest.fixture
def backend() -> str:
    return "sqlite"


async def test_the_console_is_served_with_a_strict_content_security_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/console/")
    assert page.status_code == 200
    assert "set-cookie" not in page.headers
    assert page.headers["content-type"].startswith("text/html")
    assert 'data-testid="login-username"' not in page.text  # the sign-in form is built by the script
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-request-id"]

    redirect = await client.get("/console", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/console/"


async def test_modules_are_served_as_javascript_and_revalidated_by_etag(client: httpx.AsyncClient) -> None:
    module = await client.get("/console/vendor/cytoscape/cytoscape.esm.min.mjs")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    assert module.headers["content-security-policy"]
    again = await client.get(
        "/console/vendor/cytoscape/cytoscape.esm.min.mjs", headers={"If-None-Match": module.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    licence = await client.get("/console/vendor/cytoscape/LICENSE")
    assert licence.status_code == 200 and "Permission is hereby granted" in licence.text


@pytest.mark.parametrize(
    "path",
    [
        "/console/nothing.js",
        "/console/../app.py",
        "/console/%2e%2e/endpoints.py",
        "/console/..%2fendpoints.py",
        "/console/static/../endpoints.py",
        "/console/vendor/",
        "/console/js",
    ],
)
async def test_only_the_console_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404, (path, response.status_code)
    if response.headers.get("content-type", "").startswith("application/json"):
        assert_error(response, 404, "NOT_FOUND")
    assert "__init__" not in response.text and "import" not in response.text


def _imports(source: str) -> list[str]:
    static = re.findall(r"""^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]""", source, re.MULTILINE)
    dynamic = re.findall(r"""import\(\s*['"]([^'"]+)['"]\s*\)""", source)
    return static + dynamic


def test_every_module_the_page_loads_is_served() -> None:
    """A renamed or missing module would leave a blank page: every import of the console's own scripts, and every
    file index.html names, is one the service serves."""
    index = (STATIC_DIR / "index.html").read_text()
    referenced = re.findall(r'(?:src|href)="([^"#:]+)"', index)
    assert "js/app.js" in referenced
    problems = [ref for ref in referenced if ref not in FILES]
    for path in OWN_SOURCES:
        if path.suffix != ".js":
            continue
        for target in _imports(path.read_text()):
            assert target.startswith("."), (path, target)  # no bare specifiers: there is no bundler
            resolved = (path.parent / target).resolve().relative_to(STATIC_DIR).as_posix()
            if resolved not in FILES:
                problems.append(f"{path.relative_to(STATIC_DIR)} imports {target}")
    assert not problems


def test_the_console_renders_data_as_text_and_loads_nothing_from_elsewhere() -> None:
    for path in OWN_SOURCES:
        source = path.read_text()
        for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert risky not in source, f"{path.name} uses {risky}"
        # No token kept where other scripts or a later visit could read it.
        for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
            assert storage not in source, f"{path.name} uses {storage}"
        external = [u for u in re.findall(r"https?://[^\s'\"`)]+", source) if not u.startswith("http://127.0.0.1")]
        assert not external, f"{path.name} refers to {external}"
        assert "<script>" not in source and " style=" not in source, f"{path.name} has inline script or style"


def test_the_wheel_ships_every_console_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["aiops_executor"]
    package = STATIC_DIR.parents[1]
    shipped = {p for pattern in patterns for p in package.glob(pattern) if p.is_file()}
    missing = [name for name in FILES if STATIC_DIR / name not in shipped]
    assert not missing


# --- GET /executions: the history the console lists ---------------------------------------------------------


async def test_executions_of_every_team_filtered_by_team_status_and_time(
    client: httpx.AsyncClient, admin_headers: dict[str, str], role_headers
) -> None:  # type: ignore[no-untyped-def]
    client.headers.update(admin_headers)
    await add_simulator(client, name="scale-sim", models={"sim": 0})
    teams = []
    for _ in range(2):
        created = await client.post(f"{API}/teams", json=team_body(1))
        assert created.status_code == 201, created.text
        teams.append(created.json()["team_id"])
    runs = []
    for team_id in [teams[0], teams[0], teams[1]]:
        run = await client.post(f"{API}/teams/{team_id}/execute", json={"input": {"task": "check"}, "stream": False})
        assert run.status_code == 200, run.text
        runs.append(run.json())
    client.headers.clear()
    viewer = await role_headers("viewer")

    everything = await client.get(f"{API}/executions", headers=viewer)
    assert everything.status_code == 200, everything.text
    body = everything.json()
    assert body["total"] == 3 and {r["execution_id"] for r in body["items"]} == {r["execution_id"] for r in runs}
    created_at = [r["started_at"] for r in body["items"]]
    assert created_at == sorted(created_at, reverse=True)  # newest first

    first_team = (await client.get(f"{API}/executions", params={"team_id": teams[0]}, headers=viewer)).json()
    assert first_team["total"] == 2 and {r["team_id"] for r in first_team["items"]} == {teams[0]}
    assert (await client.get(f"{API}/executions", params={"status": "success"}, headers=viewer)).json()["total"] == 3
    assert (await client.get(f"{API}/executions", params={"status": "failed"}, headers=viewer)).json()["total"] == 0

    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    recent = await client.get(f"{API}/executions", params={"created_after": hour_ago}, headers=viewer)
    assert recent.json()["total"] == 3
    old = await client.get(f"{API}/executions", params={"created_before": hour_ago}, headers=viewer)
    assert old.json()["total"] == 0
    window = await client.get(
        f"{API}/executions", params={"created_after": hour_ago, "created_before": in_an_hour, "size": 2}, headers=viewer
    )
    assert window.json()["total"] == 3 and len(window.json()["items"]) == 2 and window.json()["pages"] == 2

    # A time without a zone is ambiguous: refused rather than guessed.
    naive = await client.get(f"{API}/executions", params={"created_after": "2026-01-01T00:00:00"}, headers=viewer)
    assert_error(naive, 422, "VALIDATION_ERROR")
    assert_error(
        await client.get(f"{API}/executions", params={"status": "done"}, headers=viewer), 422, "VALIDATION_ERROR"
    )
    assert_error(await client.get(f"{API}/executions"), 401, "UNAUTHORIZED")


# --- the console's session: the token in an HttpOnly cookie ---------------------------------------------------

CONSOLE = {"X-Aiops-Console": "1"}


async def test_the_console_session_keeps_the_token_in_an_httponly_cookie(client: httpx.AsyncClient) -> None:
    from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME

    credentials = {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    opened = await client.post("/console/session", data=credentials, headers=CONSOLE)
    assert opened.status_code == 200, opened.text
    assert set(opened.json()) == {"expires_in"}  # the token is never in a body a script could read
    cookie = opened.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert cookie.startswith("aiops_console_session=") and {"httponly", "path", "max-age", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/" in cookie.lower()
    token = cookie.split(";")[0].split("=", 1)[1]
    client.cookies.set("aiops_console_session", token)

    me = await client.get(f"{API}/users/me", headers=CONSOLE)
    assert me.status_code == 200 and me.json()["username"] == ADMIN_USERNAME
    # Without the console's header the cookie is not a session: what another origin's page could make a browser send.
    assert_error(await client.get(f"{API}/users/me"), 401, "UNAUTHORIZED")
    assert_error(await client.post(f"{API}/providers", json={"name": "x", "type": "openai"}), 401, "UNAUTHORIZED")
    # An Authorization header wins over the cookie.
    assert_error(
        await client.get(f"{API}/users/me", headers={**CONSOLE, "Authorization": "Bearer nope"}), 401, "UNAUTHORIZED"
    )

    closed = await client.delete("/console/session", headers=CONSOLE)
    assert closed.status_code == 204
    assert (
        closed.headers["set-cookie"].startswith('aiops_console_session=""')
        or "max-age=0" in closed.headers["set-cookie"].lower()
    )


async def test_the_console_session_refuses_what_the_token_endpoint_refuses(client: httpx.AsyncClient) -> None:
    from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME

    wrong = await client.post(
        "/console/session", data={"username": ADMIN_USERNAME, "password": "nope"}, headers=CONSOLE
    )
    assert_error(wrong, 401, "UNAUTHORIZED")
    assert "set-cookie" not in wrong.headers
    # A sign-in form on another origin cannot add the header: no session from it.
    foreign = await client.post("/console/session", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD})
    assert_error(foreign, 403, "FORBIDDEN")
    assert "set-cookie" not in foreign.headers
    assert_error(await client.post("/console/session", data={"username": ""}, headers=CONSOLE), 422, "VALIDATION_ERROR")
    assert_error(await client.delete("/console/session"), 403, "FORBIDDEN")
