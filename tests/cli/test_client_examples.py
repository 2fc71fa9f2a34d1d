"""What a new user does first, against a real ``aiops-executor serve`` on a free loopback port:

- generates a Python client from the live ``/openapi.json`` with openapi-python-client (without a single
  warning), imports it, and runs ``examples/client.py`` with it: sign in, create a provider and its model,
  create a team, run it, read the result;
- runs the README's curl walk-through as written (only the port is this server's).

The server starts on the embedded default in a directory of its own, as ``./dev serve`` does (the admin's
password in ``.aiops/admin_password``, the offline ``local-sim`` provider seeded). The web shop team of the
walk-through probes ports on this machine that belong to no server of this test (PostgreSQL, Redis, 8080-8083,
9090): they are denied by the egress policy, so its probes report that and send nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO_ROOT
from tests.processes import Process, base_env, free_port

# One worker runs them all, sharing the module's server.
pytestmark = [pytest.mark.long, pytest.mark.xdist_group("client-examples")]
ROOT = REPO_ROOT
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
PACKAGE = "aiops_client"


@dataclass
class Served:
    url: str
    port: int
    workdir: Path

    @property
    def admin_password(self) -> str:
        return (self.workdir / ".aiops" / "admin_password").read_text().strip()


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    workdir = tmp_path_factory.mktemp("first-steps")
    (workdir / "examples").symlink_to(ROOT / "examples")
    port = free_port()
    # The web shop team probes what it names on this machine, as it would for a reader following the README: the
    # local PostgreSQL and Redis (read-only diagnostics) and ports where nothing listens (refused: a finding). A
    # run whose probes were all refused by an egress policy would end failed (NO_EVIDENCE), as it should.
    env = base_env(data_dir=str(workdir / ".aiops"), log_format="json")
    server = Process("serve", ["serve", "--port", str(port)], env, workdir / "serve.log", port=port)
    await server.start()
    try:
        yield Served(server.url, port, workdir)
    finally:
        server.kill(15)


@pytest.fixture(scope="module")
def generated(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The generated client package on ``sys.path``, and what the generator printed."""
    out = tmp_path_factory.mktemp("client")
    document = out / "openapi.json"
    document.write_bytes(httpx.get(f"{served.url}/openapi.json", timeout=30).content)
    generation = subprocess.run(  # noqa: S603 - the pinned generator, fixed arguments
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(document),
            "--meta",
            "none",
            "--output-path",
            str(out / PACKAGE),
            "--config",
            str(ROOT / "examples" / "openapi-client.yaml"),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        # Its post hooks format the client with ruff, a development tool of this project.
        env={**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    printed = generation.stdout + generation.stderr
    assert generation.returncode == 0, printed
    sys.path.insert(0, str(out))
    try:
        yield out / PACKAGE, printed
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def test_the_client_generates_without_warnings_with_a_function_per_operation(generated: tuple[Path, str]) -> None:
    package, printed = generated
    assert "Warning" not in printed and "Error" not in printed, printed
    document = json.loads((package.parent / "openapi.json").read_text())
    operations = [op for item in document["paths"].values() for op in item.values() if "operationId" in op]
    modules = {p.stem for p in (package / "api").rglob("*.py") if p.stem != "__init__"}
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", op["operationId"]).lower() for op in operations}
    assert snake == modules, sorted(snake ^ modules)
    # The stream's event payloads are typed models too.
    models = importlib.import_module(f"{PACKAGE}.models")
    assert hasattr(models, "NodeCompleteEvent") and hasattr(models, "ExecutionCompleteEvent")


def test_examples_client_signs_in_creates_a_provider_and_a_team_runs_it_and_reads_the_result(
    served: Served, generated: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        example = importlib.import_module("client")
        importlib.reload(example)
    finally:
        sys.path.remove(str(ROOT / "examples"))
    execution = example.run(served.url, "admin", served.admin_password)
    assert execution.status.value == "success"
    [node] = execution.result.node_results
    assert node.node_id == "executor" and node.status == "success"
    assert execution.usage.input_tokens > 0 and execution.usage.cost > 0
    # The team really probed the service: the http_check of its /health is in the run's events.
    events = httpx.get(
        f"{served.url}/api/v1/executions/{execution.execution_id}/events",
        headers={"Authorization": f"Bearer {_token(served)}"},
        timeout=30,
    ).json()["items"]
    [probe] = [e["data"] for e in events if e["event"] == "tool_call"]
    assert probe["tool"] == "http_check" and probe["status"] == "success"
    assert probe["output"]["status_code"] == 200, probe["output"]

    # The script as a user runs it.
    # One "=" word: a generated password may start with "-", which argparse would take for an option.
    assert example.main(["--url", served.url, f"--password={served.admin_password}"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"execution [0-9a-f-]{36}: success in \d+ ms", printed), printed
    assert "- executor: success" in printed


def _token(served: Served) -> str:
    answer = httpx.post(
        f"{served.url}/api/v1/auth/token", data={"username": "admin", "password": served.admin_password}, timeout=30
    )
    return str(answer.json()["access_token"])


def readme_walkthrough() -> str:
    """The README's first bash block that signs in: its commands, as a user would paste them."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    return next(block for block in blocks if "/api/v1/auth/token" in block)


def test_the_readme_curl_walkthrough_runs_as_written(served: Served) -> None:
    script = readme_walkthrough()
    assert script.count("localhost:8000") >= 4
    commands = script.replace("localhost:8000", f"127.0.0.1:{served.port}")
    done = subprocess.run(  # noqa: S603 - bash running the README's own commands
        ["/bin/bash", "-euo", "pipefail", "-c", commands],
        cwd=served.workdir,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    # The streamed run: its events in order, ending with the terminal one.
    events = re.findall(r"^event: (\w+)$", out, flags=re.MULTILINE)
    assert events[0] == "execution_start" and "execution_complete" in events, events
    assert events.count("node_complete") == 6  # the web shop's six resources
    # The waited run, read back: the last line is the execution as JSON.
    execution = json.loads(out.strip().splitlines()[-1])
    assert execution["status"] == "success" and len(execution["result"]["node_results"]) == 6
    assert execution["usage"]["input_tokens"] > 0
