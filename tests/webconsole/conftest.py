"""The browser tests' fixtures: one console server for the whole session of the worker that runs them (every
browser test is in the ``browser`` xdist group), one Chromium per module, and a fresh browser context per test."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.helpers import CAPABLE
from tests.processes import API, EXECUTABLE, base_env, free_port
from tests.webconsole.console import (
    ADMIN,
    CHROMIUM,
    MOCK_KEY,
    MODEL_LATENCY_MS,
    OUTPUT,
    VIEWER,
    Console,
    stop,
    wait_until_up,
)


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console") / "data"
    port = free_port()
    env = base_env(
        data_dir=str(data_dir),
        env="dev",
        admin_username=ADMIN["username"],
        admin_password=ADMIN["password"],
        rate_limit_auth_per_minute="0",
        login_max_failures="0",
        login_max_failures_per_ip="0",
    )
    log = data_dir.parent / "serve.log"
    mock_port = free_port()
    with log.open("ab") as out:
        # An OpenAI-protocol provider on loopback: health checks, key validation and model sync really call it.
        mock = subprocess.Popen(  # noqa: S603 - our own console script
            [str(EXECUTABLE), "mock-llm", "--port", str(mock_port), "--key", MOCK_KEY], env=env, stdout=out, stderr=out
        )
        process = subprocess.Popen(  # noqa: S603 - our own console script
            [str(EXECUTABLE), "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, f"{url}/health", log)
        wait_until_up(mock, f"http://127.0.0.1:{mock_port}/v1/models", log, Authorization=f"Bearer {MOCK_KEY}")
        with httpx.Client(base_url=url, timeout=30) as client:
            token = client.post(f"{API}/auth/token", data=ADMIN).json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            assert client.post(f"{API}/users", json={**VIEWER, "role": "viewer"}).status_code == 201
            openai = client.post(f"{API}/providers", json={"name": "ui-openai", "type": "openai"}).json()
            endpoint = client.post(
                f"{API}/providers/{openai['id']}/endpoints",
                json={"name": "local-mock", "base_url": f"http://127.0.0.1:{mock_port}/v1", "is_default": True},
            )
            assert endpoint.status_code == 201, endpoint.text
            provider = client.post(f"{API}/providers", json={"name": "ui-sim", "type": "simulator"}).json()
            for model_id, latency in MODEL_LATENCY_MS.items():
                created = client.post(
                    f"{API}/providers/{provider['id']}/models",
                    json={
                        "model_id": model_id,
                        "name": model_id,
                        "input_price": 0.5,
                        "output_price": 1.5,
                        "default_params": {"latency_ms": latency},
                        "capabilities": {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE},
                    },
                )
                assert created.status_code == 201, created.text
            yield Console(url, client, log)
    finally:
        stop(process)
        stop(mock)


# Per module: a running Playwright holds an event loop in this thread, which the asyncio tests that this worker
# runs next could not start theirs beside.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail(
            f"the browser tests need Chromium at {CHROMIUM}: install it with 'apt-get install -y chromium' "
            "(./dev does so when apt-get is available), or set AIOPS_TEST_CHROMIUM to its path"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Europe/Berlin")
    tab = context.new_page()
    violations: list[str] = []
    errors: list[str] = []
    tab.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    OUTPUT.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(OUTPUT / f"{request.node.name}.png"))
    context.close()
    assert not violations, violations
    assert not errors, errors
