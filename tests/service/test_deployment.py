"""The container deployment (Dockerfile, docker-compose.yml) agrees with the CLI, and its cluster works.

The image is not built here (no registry for base images in tests). Instead the compose file's own commands
and environment are run as local processes: each app service's ``command`` and ``environment`` (the shared
anchor, ``${VAR:?...}`` filled from a test environment), with only what points at compose service names
rewritten to this machine (``postgres:5432`` -> the local PostgreSQL and a fresh database, ``redis:6379`` ->
the local Redis) and the listening ports moved to free ones. So the file cannot drift from the CLI.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shlex
import subprocess
import time
import tomllib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from typer.core import TyperGroup
from typer.main import get_command

from aiops_executor.cli import app as cli_app
from tests.conftest import PG_HOST, PG_PORT, PG_USER
from tests.helpers import REPO_ROOT, add_simulator
from tests.processes import (
    API,
    EXECUTABLE,
    Process,
    base_env,
    event_log,
    free_port,
    make_team,
    pg,
    run_cli,
    start_run,
    wait_until,
)

ROOT = REPO_ROOT
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APIS = ("api-1", "api-2")
WORKERS = ("worker-1", "worker-2")
APP_SERVICES = ("migrate", *APIS, *WORKERS)
SERVICES = {"postgres", "redis", *APP_SERVICES}
REQUIRED_SECRETS = ("AIOPS_MASTER_KEYS", "AIOPS_MASTER_KEY_ID", "AIOPS_JWT_SECRET", "AIOPS_ADMIN_PASSWORD")
DEFAULT_DRAIN_SECONDS = 30.0


# --- compose file ---------------------------------------------------------------------------------------


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset or empty: compose refuses to start."""


_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution: ``$$``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?error}``, ``${VAR?error}``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["name"], match["op"], match["arg"]
        present = name in env and (op is None or not op.startswith(":") or env[name] != "")
        if op is None:
            return env.get(name, "")
        if op.endswith("-"):
            return env[name] if present else arg
        if not present:
            raise MissingVariable(f"{name}: {arg}")
        return env[name]

    resolved = _VARIABLE.sub(substitute, value)
    assert not re.search(r"\$[A-Za-z_{]", resolved), f"unsupported variable syntax in {value!r}"
    return resolved


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def service_environment(service: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):  # the "NAME=value" form
        raw = dict(item.split("=", 1) for item in raw)
    return {name: interpolate(str(value), env) for name, value in raw.items()}


def service_command(service: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "use the exec form (a list): no shell in between"
    return [interpolate(str(arg), env) for arg in command]


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, (name, args)
    return args[args.index(name) + 1]


def with_option(args: list[str], name: str, value: str) -> list[str]:
    index = args.index(name)
    return [*args[: index + 1], value, *args[index + 2 :]]


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def cli_accepts(args: list[str]) -> None:
    """The CLI parses ``args`` (sub-command and options) without running anything."""
    group = get_command(cli_app)
    assert isinstance(group, TyperGroup)
    name, *rest = args
    command = group.get_command(group.context_class(group), name)
    assert command is not None, f"the CLI has no sub-command {name!r}"
    command.make_context(name, list(rest))


def secrets_env() -> dict[str, str]:
    """What an operator puts in .env: a generated master key, a JWT secret, admin credentials."""
    return {
        "AIOPS_MASTER_KEYS": json.dumps({"deploy-1": base64.b64encode(os.urandom(32)).decode()}),
        "AIOPS_MASTER_KEY_ID": "deploy-1",
        "AIOPS_JWT_SECRET": secrets.token_urlsafe(48),
        "AIOPS_ADMIN_USERNAME": "deploy-admin",
        "AIOPS_ADMIN_PASSWORD": "deploy-" + secrets.token_urlsafe(12),
    }


def test_compose_services_order_and_commands() -> None:
    spec = compose()
    services: dict[str, dict[str, Any]] = spec["services"]
    assert set(services) == SERVICES

    postgres, redis = services["postgres"], services["redis"]
    assert postgres["image"].startswith("postgres:15")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume = postgres["volumes"][0].split(":")[0]
    assert volume in spec["volumes"], "the database lives on a named volume"
    assert redis["image"].startswith("redis:7")

    # One image for every role, built from this directory's Dockerfile.
    images = {json.dumps([services[name].get("image"), services[name].get("build")]) for name in APP_SERVICES}
    assert len(images) == 1, images
    build = services["migrate"]["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE

    env = secrets_env()
    environments = {name: service_environment(services[name], env) for name in APP_SERVICES}
    assert all(e == environments["migrate"] for e in environments.values()), "every app service shares one env"
    shared = environments["migrate"]
    assert shared["AIOPS_ENV"] == "prod"
    assert urlsplit(shared["AIOPS_DATABASE_URL"]).hostname == "postgres"
    assert urlsplit(shared["AIOPS_REDIS_URL"]).hostname == "redis"
    for name in REQUIRED_SECRETS:
        assert shared[name] == env[name]
        # Compose refuses to start without the secret (unset or empty), with a message naming it.
        for missing in ({k: v for k, v in env.items() if k != name}, {**env, name: ""}):
            with pytest.raises(MissingVariable, match=name):
                service_environment(services["migrate"], missing)

    migrate = services["migrate"]
    assert service_command(migrate, env) == ["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"

    host_ports = set()
    for name in (*APIS, *WORKERS):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert "redis" in depends, name
    for name in APIS:
        command = service_command(services[name], env)
        assert command[0] == "serve" and "--no-worker" in command, command
        host, container = services[name]["ports"][0].rsplit(":", 1)
        assert container == option(command, "--port"), "the published port is the one the API listens on"
        assert option(command, "--host") == "0.0.0.0"  # noqa: S104 - in a container: reachable through its port
        host_ports.add(host)
    assert len(host_ports) == len(APIS)
    drain = float(shared.get("AIOPS_WORKER_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
    for name in WORKERS:
        command = service_command(services[name], env)
        assert command[0] == "worker", command
        assert seconds(services[name]["stop_grace_period"]) > drain, "a stopping worker gets to drain"
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f":{option(command, '--metrics-port')}/health" in probe, "a worker's liveness is on its metrics port"

    for name in APP_SERVICES:
        cli_accepts(service_command(services[name], env))


# --- Dockerfile -----------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), one list per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        assert stages, f"{keyword} before FROM"
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def instruction(stage: list[tuple[str, str]], keyword: str) -> str:
    values = [rest for kw, rest in stage if kw == keyword]
    assert values, f"no {keyword}"
    return values[-1]


def image_environment(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_dockerfile_entrypoint_and_cmd_match_the_cli() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage"
    builder, runtime = stages[0], stages[-1]
    assert instruction(builder, "FROM").startswith("python:3.11-slim AS builder")
    assert instruction(runtime, "FROM").startswith("python:3.11-slim")
    assert any(kw == "COPY" and rest.startswith("--from=builder") for kw, rest in runtime)
    assert "wheel" in " ".join(rest for kw, rest in builder if kw == "RUN")

    user = instruction(runtime, "USER").split(":")[0]
    assert user not in ("root", "0") and user == "10001"
    assert "chown" in " ".join(rest for kw, rest in runtime if kw == "RUN")
    assert instruction(runtime, "WORKDIR") == "/app"
    assert image_environment(runtime)["AIOPS_DATA_DIR"] == "/app/data"

    entrypoint = json.loads(instruction(runtime, "ENTRYPOINT"))
    cmd = json.loads(instruction(runtime, "CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert entrypoint == ["aiops-executor"] and entrypoint[0] in scripts
    assert cmd[0] == "serve"
    cli_accepts(cmd)
    shown = subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(EXECUTABLE), cmd[0], "--help"],
        env={**base_env(), "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for arg in cmd[1:]:
        if arg.startswith("--"):
            assert re.search(rf"{re.escape(arg)}\b", shown), f"`aiops-executor {cmd[0]} --help` lists no {arg}"

    port = option(cmd, "--port")
    assert instruction(runtime, "EXPOSE") == port
    healthcheck = instruction(runtime, "HEALTHCHECK")
    assert "urllib" in healthcheck and f"http://127.0.0.1:{port}/health" in healthcheck

    ignored = DOCKERIGNORE.read_text(encoding="utf-8").split()
    for path in (".venv", ".git", ".aiops"):
        assert path in ignored, f".dockerignore lets {path} into the build context"


# --- the compose cluster, as local processes ------------------------------------------------------------


def localise(value: str, database: str) -> str:
    """A URL pointing at a compose service, rewritten to this machine; anything else unchanged."""
    if "://" not in value:
        return value
    parts = urlsplit(value)
    if parts.hostname not in SERVICES:
        return value
    if parts.hostname == "postgres":
        url = make_url(value)
        assert url.port == 5432, value
        local = url.set(username=PG_USER, password=None, host=PG_HOST, port=PG_PORT, database=database)
        return local.render_as_string(hide_password=False)
    if parts.hostname == "redis":
        assert parts.port == 6379, value
        return urlunsplit(parts._replace(netloc="127.0.0.1:6379"))
    raise AssertionError(f"no local stand-in for the compose service in {value!r}")


def local_command(args: list[str]) -> tuple[list[str], int | None]:
    """The command with its listening port moved to a free local one (and that port)."""
    if args[0] == "serve":
        assert option(args, "--port") == "8000"
        port = free_port()
        return with_option(with_option(args, "--port", str(port)), "--host", "127.0.0.1"), port
    if args[0] == "worker":
        port = free_port()
        return with_option(args, "--metrics-port", str(port)), port
    return args, None


async def _metrics(client: httpx.AsyncClient, port: int) -> str:
    for _ in range(200):
        try:
            response = await client.get(f"http://127.0.0.1:{port}/metrics")
        except httpx.TransportError:
            await asyncio.sleep(0.05)
            continue
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text
    raise AssertionError(f"nothing answers on the metrics port {port}")


def _succeeded(metrics: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "aiops_executions_total" and sample.labels.get("status") == "success"
    )


@pytest.mark.postgres
@pytest.mark.long
@pytest.mark.timeout(180)
async def test_the_compose_services_run_as_local_processes(tmp_path: Path) -> None:
    spec = compose()
    services: dict[str, dict[str, Any]] = spec["services"]
    operator_env = secrets_env()
    image_env = image_environment(dockerfile_stages()[-1])
    database = f"aiops_deploy_{uuid.uuid4().hex[:10]}"
    await pg(f'CREATE DATABASE "{database}"')
    processes: list[Process] = []
    try:

        def environment(name: str) -> dict[str, str]:
            # This machine's environment without any AIOPS_ variable; the services run in production.
            env = base_env(fast_hashing=False)
            env.update({k: v for k, v in image_env.items() if k.startswith("AIOPS_")})
            env["AIOPS_DATA_DIR"] = str(tmp_path / name / "data")  # the image's /app/data
            env.update({k: localise(v, database) for k, v in service_environment(services[name], operator_env).items()})
            return env

        migrate = run_cli(environment("migrate"), *service_command(services["migrate"], operator_env))
        assert migrate.returncode == 0, migrate.stderr

        for name in (*APIS, *WORKERS):
            args, port = local_command(service_command(services[name], operator_env))
            processes.append(Process(name, args, environment(name), tmp_path / f"{name}.log", port))
        apis, workers = processes[: len(APIS)], processes[len(APIS) :]
        await asyncio.gather(*(p.start() for p in apis), *(w.start(ready_path=None) for w in workers))

        shared = environment("api-1")
        admin = {"username": shared["AIOPS_ADMIN_USERNAME"], "password": shared["AIOPS_ADMIN_PASSWORD"]}
        async with apis[0].client(admin) as first, apis[1].client(admin) as second:
            await add_simulator(first, name="scale-sim", models={"sim": 20})
            team_id = await make_team(first, nodes=2)
            execution_id = await start_run(first, team_id)
            done = await wait_until(
                first, [execution_id], lambda r: r[execution_id]["status"] not in ("pending", "running"), 90
            )
            assert done[execution_id]["status"] == "success", done[execution_id].get("error_message")

            # Read through the other API process: the same run, with its whole event log.
            row = (await second.get(f"{API}/executions/{execution_id}")).json()
            assert row["status"] == "success"
            log = await event_log(second, execution_id)
            assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
            assert log[-1][1] == "execution_complete"

            deadline = time.monotonic() + 10
            while True:
                ready = await second.get("/health/ready")
                body = ready.json()
                if ready.status_code == 200 and (body.get("queue") or {}).get("live_workers") == len(WORKERS):
                    break
                assert time.monotonic() < deadline, (ready.status_code, body)
                await asyncio.sleep(0.2)
            assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok", body
            assert isinstance(body["queue"]["depth"], int)

        # Each worker's metrics port answers with Prometheus text; the run was counted by the worker that ran
        # it, not by an API process (--no-worker: they run none).
        async with httpx.AsyncClient(timeout=10) as client:
            exposition = [await _metrics(client, worker.port or 0) for worker in workers]
            served = [await _metrics(client, api.port or 0) for api in apis]
            # What compose's health check of a worker asks: its liveness, on the same port.
            alive = [await client.get(f"http://127.0.0.1:{worker.port}/health") for worker in workers]
        for answer in alive:
            assert answer.status_code == 200, answer.text
            assert answer.json()["checks"] == {"event_loop": "ok", "memory": "ok", "database": "ok"}
        for text in exposition:
            assert "# TYPE aiops_executions_active gauge" in text
        assert sum(_succeeded(text) for text in exposition) == 1
        assert sum(_succeeded(text) for text in served) == 0
        for process in processes:
            assert process.running, f"{process.name} exited: {process.log()[-2000:]}"
    finally:
        for process in processes:
            if process.running:
                process.kill()
        await pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
