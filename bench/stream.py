"""Streaming benchmark: event-to-client latency of the SSE API under load (a script, not a test).

    .venv/bin/python bench/stream.py                       # embedded default (SQLite in a temp dir)
    .venv/bin/python bench/stream.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/stream.py --json figures.json   # the figures as JSON too

The service runs in a **subprocess** (``aiops-executor serve``, one uvicorn worker, default settings apart
from those printed), so the client's CPU is not charged to the server's event loop; both share the machine
and its clock. On PostgreSQL the URL names the server and user only: a throwaway database is created on it
(through the ``postgres`` database), migrated, used and dropped.

Set-up (not measured): log in as the bootstrap admin, register the offline ``simulator`` provider
``local-sim`` with model ``sim-1`` at a fixed ``latency_ms`` per model call, create one team per execution
(a team runs one execution at a time by default): ``--nodes`` nodes in a ``depends_on`` chain, each with a
prober (one ``tcp_check`` on a closed local port) and a reader, global strategy ``hierarchical``.

Measured: every execution is started with ``POST /teams/{id}/executions`` (202, background; all at once
unless ``--ramp-seconds``) and its share of the subscribers attaches at once with ``GET
/executions/{id}/stream``. For each event a subscriber receives, latency = receive time - the event's
``timestamp`` (stamped when the engine emitted it). The table splits events by when they were emitted:
before the subscriber's GET was sent (they can only come from the store replay), while the GET was being
answered (replay or the store), after the stream was attached (the live path). Every
subscriber must receive the gap-free sequence 1..N ending in a terminal event, N being the number of events
the store holds for that execution, and every execution must succeed; any violation is printed loudly,
the server log is kept, and the exit code is 1.

The sse-starlette keep-alive comment (``: ping`` every 15 s) reaches httpx-sse 0.4 as an empty message
carrying the last id; the SSE spec dispatches nothing for it, so it is counted as a ping and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import pstats
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from httpx_sse import aconnect_sse
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url

from aiops_executor.core.migrate import upgrade_url
from aiops_executor.executions.checkpoints import setup_checkpoints

sys.path.insert(0, str(Path(__file__).parent))
from stream_report import LIVE, Run, Subscriber, analyse, json_figures, latency_row, write_csv

API = "/api/v1"
ADMIN_USERNAME = "bench-admin"
ADMIN_PASSWORD = "bench-password-" + uuid.uuid4().hex[:8]
TASK = {"input": {"task": "Why is checkout slow?", "context": {"ticket": "BENCH-1"}}}
SUPPORTED = {"supported": True, "score": 3}

# Non-default settings of the server under test, besides data dir, database, admin and the concurrency cap
# (at least --executions): more than 60 execution requests a minute; its own local-sim provider, not the seeded one.
SERVER_SETTINGS = {"AIOPS_RATE_LIMIT_EXECUTIONS_PER_MINUTE": "0", "AIOPS_SEED_SIMULATOR": "false"}

console = Console(highlight=False, width=120)


# ------------------------------------------------------------------------------------------------ server


@dataclass
class Server:
    url: str
    process: asyncio.subprocess.Process
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_server(
    data_dir: Path, database_url: str | None, max_concurrent: int, profile: Path | None = None
) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOPS_")}
    env.update(
        AIOPS_ENV="dev",
        AIOPS_DATA_DIR=str(data_dir),
        AIOPS_ADMIN_USERNAME=ADMIN_USERNAME,
        AIOPS_ADMIN_PASSWORD=ADMIN_PASSWORD,
        AIOPS_LOG_FORMAT="json",
        **SERVER_SETTINGS,
        AIOPS_MAX_CONCURRENT_EXECUTIONS=str(max_concurrent),
    )
    if database_url:
        env["AIOPS_DATABASE_URL"] = database_url
    log_path = data_dir / "server.log"
    log = log_path.open("wb")
    command = [sys.executable, "-m", "aiops_executor.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if profile is not None:
        command[1:1] = ["-m", "cProfile", "-o", str(profile)]
    process = await asyncio.create_subprocess_exec(*command, cwd=data_dir, env=env, stdout=log, stderr=log)
    log.close()
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    async with httpx.AsyncClient(base_url=server.url, timeout=2) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.returncode is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/health/ready")).status_code == 200:
                    return server
            await asyncio.sleep(0.1)
    await stop_server(server)
    raise SystemExit(f"the server did not become ready; its log:\n{log_path.read_text()[-4000:]}")


async def stop_server(server: Server) -> None:
    if server.process.returncode is None:
        # Ctrl-C: uvicorn shuts down gracefully, and a profiled server (--profile-server) writes its stats.
        server.process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(server.process.wait(), 20)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()


# ------------------------------------------------------------------------------------------------ PostgreSQL


async def _pg_admin(url: str) -> asyncpg.Connection:
    parts = make_url(url)
    return await asyncpg.connect(
        host=parts.host or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        database="postgres",
    )


async def create_database(url: str) -> tuple[str, str]:
    """A fresh, migrated database on the server ``url`` names: (its URL, its name)."""
    name = f"aiops_bench_{uuid.uuid4().hex[:12]}"
    connection = await _pg_admin(url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    bench_url = make_url(url).set(database=name).render_as_string(hide_password=False)
    await upgrade_url(bench_url)
    await setup_checkpoints(bench_url)
    return bench_url, name


async def drop_database(url: str, name: str) -> None:
    connection = await _pg_admin(url)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


# ------------------------------------------------------------------------------------------------ set-up


def team_body(name: str, nodes: int) -> dict[str, Any]:
    ref = {"model_provider": "local-sim", "model_id": "sim-1"}
    node_ids = [f"n{i}" for i in range(nodes)]
    return {
        "team_name": name,
        "timeout_seconds": 600,
        "topology": {
            "nodes": [
                {
                    "node_id": node_id,
                    "node_name": f"Node {node_id}",
                    "node_type": "service",
                    "attributes": {"host": "127.0.0.1", "port": 9},
                    "agents": [
                        {"agent_id": "probe", "agent_name": "Prober", **ref, "tools": ["tcp_check"]},
                        {"agent_id": "reader", "agent_name": "Reader", **ref},
                    ],
                    "supervisor_config": {**ref, "coordination_strategy": "round_robin"},
                }
                for node_id in node_ids
            ],
            "edges": [
                {"source_node_id": a, "target_node_id": b, "relation_type": "depends_on"}
                for a, b in itertools.pairwise(node_ids)
            ],
            "global_supervisor": {**ref, "coordination_strategy": "hierarchical"},
            "allow_isolated_nodes": True,
        },
    }


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise SystemExit(
            f"{response.request.method} {response.request.url.path} answered {response.status_code}, "
            f"expected {status}: {response.text[:500]}"
        )
    return dict(response.json())


async def set_up(client: httpx.AsyncClient, teams: int, nodes: int, latency_ms: float) -> list[str]:
    token = expect(
        await client.post(f"{API}/auth/token", data={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}), 200
    )
    client.headers["Authorization"] = f"Bearer {token['access_token']}"
    provider = expect(await client.post(f"{API}/providers", json={"name": "local-sim", "type": "simulator"}), 201)
    expect(
        await client.post(
            f"{API}/providers/{provider['id']}/models",
            json={
                "model_id": "sim-1",
                "name": "Simulator",
                "default_params": {"latency_ms": latency_ms},
                "capabilities": {"chat": SUPPORTED, "function_calling": SUPPORTED, "structured_output": SUPPORTED},
            },
        ),
        201,
    )
    limit = asyncio.Semaphore(8)

    async def make(i: int) -> str:
        async with limit:
            created = expect(await client.post(f"{API}/teams", json=team_body(f"bench-{i}", nodes)), 201)
            return str(created["team_id"])

    return list(await asyncio.gather(*(make(i) for i in range(teams))))


# ------------------------------------------------------------------------------------------------ measurement


async def subscribe(client: httpx.AsyncClient, subscriber: Subscriber) -> None:
    path = f"{API}/executions/{subscriber.execution_id}/stream"
    received = subscriber.received
    subscriber.sent_at = time.time()
    try:
        async with aconnect_sse(client, "GET", path) as source:
            if source.response.status_code != 200:
                body = (await source.response.aread()).decode(errors="replace")
                subscriber.error = f"HTTP {source.response.status_code}: {body[:300]}"
                return
            subscriber.attached_at = time.time()
            async for message in source.aiter_sse():
                received.append((message.id, message.event, message.data, time.time()))
    except (httpx.HTTPError, ValueError) as exc:
        subscriber.error = f"{type(exc).__name__}: {exc}"


async def start_and_watch(
    control: httpx.AsyncClient, streams: httpx.AsyncClient, team_id: str, run: Run, delay: float
) -> None:
    await asyncio.sleep(delay)
    try:
        response = await control.post(f"{API}/teams/{team_id}/executions", json=TASK)
    except httpx.HTTPError as exc:
        failure = f"start failed: {type(exc).__name__}: {exc}"
    else:
        failure = "" if response.status_code == 202 else f"start answered {response.status_code}: {response.text[:300]}"
    if failure:
        for subscriber in run.subscribers:
            subscriber.error = failure
        return
    run.execution_id = str(response.json()["execution_id"])
    for subscriber in run.subscribers:
        subscriber.execution_id = run.execution_id
    await asyncio.gather(*(subscribe(streams, s) for s in run.subscribers))


async def verify_store(client: httpx.AsyncClient, run: Run, limit: asyncio.Semaphore) -> None:
    """The execution's final status and how many events the store holds for it."""
    if not run.execution_id:
        return
    async with limit:
        try:
            execution = await client.get(f"{API}/executions/{run.execution_id}")
            run.status = str(execution.json()["status"]) if execution.status_code == 200 else execution.text[:200]
            page = await client.get(f"{API}/executions/{run.execution_id}/events", params={"size": 1})
            run.stored_events = int(page.json()["total"]) if page.status_code == 200 else -1
        except httpx.HTTPError as exc:
            run.status = f"unknown ({type(exc).__name__}: {exc})"
            run.stored_events = -1


# ------------------------------------------------------------------------------------------------ main


async def bench(args: argparse.Namespace) -> int:
    if args.subscribers < args.executions:
        raise SystemExit("--subscribers must be at least --executions (every execution gets a subscriber)")
    with tempfile.TemporaryDirectory(prefix="aiops-bench-") as tmp:
        data_dir = Path(tmp)
        database_url, pg_name = None, None
        if args.database_url:
            database_url, pg_name = await create_database(args.database_url)
        backend = "PostgreSQL" if database_url else "SQLite (embedded default)"
        server = None
        try:
            server = await start_server(data_dir, database_url, max(100, args.executions), args.profile_server)
            return await measure(args, server, backend)
        finally:
            if server is not None:
                await stop_server(server)
                if args.profile_server is not None and args.profile_server.exists():
                    console.print(f"\nserver profile (cProfile, whole process life) in {args.profile_server}:")
                    stats = pstats.Stats(str(args.profile_server), stream=sys.stdout)
                    stats.sort_stats("tottime").print_stats(25)
            if pg_name is not None:
                await drop_database(args.database_url, pg_name)


async def measure(args: argparse.Namespace, server: Server, backend: str) -> int:
    timeout = httpx.Timeout(args.timeout, connect=30)
    # Two clients: one for the API calls, one whose pool holds a connection per SSE subscriber.
    control_limits = httpx.Limits(max_connections=args.executions + 10)
    stream_limits = httpx.Limits(max_connections=args.subscribers, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(base_url=server.url, limits=control_limits, timeout=timeout) as control,
        httpx.AsyncClient(base_url=server.url, limits=stream_limits, timeout=timeout) as streams,
    ):
        console.print(f"set-up: {args.executions} teams of {args.nodes} nodes on {backend} ...")
        team_ids = await set_up(control, args.executions, args.nodes, args.latency_ms)
        streams.headers["Authorization"] = control.headers["Authorization"]

        subscribers = [Subscriber(i) for i in range(args.subscribers)]
        runs = [Run("", subscribers[i :: args.executions]) for i in range(args.executions)]
        console.print(f"measuring: {args.executions} executions, {args.subscribers} subscribers ...")
        load_before = os.getloadavg()[0]
        client_cpu, server_cpu = time.process_time(), server.cpu_seconds()
        started = time.time()
        step = args.ramp_seconds / args.executions
        watchers = (
            start_and_watch(control, streams, t, r, i * step)
            for i, (t, r) in enumerate(zip(team_ids, runs, strict=True))
        )
        try:
            await asyncio.wait_for(asyncio.gather(*watchers), args.timeout)
            timed_out = False
        except TimeoutError:
            timed_out = True
        client_cpu, server_cpu = time.process_time() - client_cpu, server.cpu_seconds() - server_cpu
        load_after = os.getloadavg()[0]
        limit = asyncio.Semaphore(10)
        await asyncio.gather(*(verify_store(control, r, limit) for r in runs))

    result = analyse(runs)
    if args.csv is not None:
        write_csv(args.csv, runs)
    if timed_out:
        result.violations.insert(0, f"the run did not finish within --timeout {args.timeout:g} s")
    wall = (result.last_receive or time.time()) - started
    produced = sum(r.stored_events for r in runs)

    table = Table(title=f"SSE event-to-client latency, {backend}")
    table.add_column("measured")
    table.add_column("count", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p99 ms", justify="right")
    table.add_column("max ms", justify="right")
    latency_row(table, "all delivered", result.latencies)
    latency_row(table, "  emitted before the GET was sent", result.before)
    latency_row(table, "  emitted while it was answered", result.attaching)
    latency_row(table, "  emitted after the stream attached", result.live)
    latency_row(table, "  terminal events", result.terminal)
    latency_row(table, "stream attach (GET -> headers)", result.attach)
    console.print()
    console.print(table)

    summary = Table(show_header=False, box=None)
    for name, value in (
        ("server", f"subprocess `aiops-executor serve` (1 uvicorn worker), {backend}"),
        ("server settings", ", ".join(f"{k}={v}" for k, v in SERVER_SETTINGS.items()) + ", others default"),
        ("machine", f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"),
        ("executions", f"{args.executions} (one team each, {args.nodes} nodes in a chain, 2 agents per node)"),
        ("subscribers", f"{args.subscribers} ({args.subscribers / args.executions:g} per execution)"),
        ("simulator latency", f"{args.latency_ms:g} ms per model call"),
        ("starts", f"spread over {args.ramp_seconds:g} s" if args.ramp_seconds else "all at once"),
        ("events stored", f"{produced:,} ({produced / max(1, args.executions):.0f} per execution)"),
        ("live deltas delivered", f"{sum(result.kinds[kind] for kind in LIVE):,} (agent_token: never stored)"),
        ("events delivered", f"{len(result.latencies):,} (+ {result.heartbeats} heartbeats, {result.pings} pings)"),
        ("wall time", f"{wall:.1f} s (first start to last event received)"),
        ("throughput", f"{len(result.latencies) / wall:,.0f} events/s delivered, {produced / wall:,.0f} produced"),
        ("CPU", f"server {server_cpu:.1f} s, client {client_cpu:.1f} s"),
        ("load average (1 min)", f"{load_before:.2f} before, {load_after:.2f} after (other processes skew figures)"),
        ("gap-free 1..N + terminal", "yes, every subscriber" if not result.violations else "NO"),
    ):
        summary.add_row(name, value)
    console.print(summary)

    if args.json is not None:
        figures = json_figures(result, backend, vars(args), produced, wall, (server_cpu, client_cpu))
        args.json.write_text(json.dumps({**figures, "load_average": [load_before, load_after]}, indent=2))

    if result.violations:
        console.print(f"\n[bold red]VIOLATIONS ({len(result.violations)}):[/bold red]")
        for line in result.violations[:50]:
            console.print(f"[red]  {line}[/red]")
        if len(result.violations) > 50:
            console.print(f"[red]  ... and {len(result.violations) - 50} more[/red]")
        kept = Path(tempfile.gettempdir()) / f"aiops-bench-server-{int(time.time())}.log"
        shutil.copyfile(server.log_path, kept)
        console.print(f"server log kept at {kept}")
        return 1
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=100, help="concurrent executions (default 100)")
    parser.add_argument("--subscribers", type=int, default=500, help="SSE subscribers in all (default 500)")
    parser.add_argument("--latency-ms", type=float, default=2000, help="simulator delay per model call (default 2000)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes per team, in a depends_on chain (default 3)")
    parser.add_argument(
        "--ramp-seconds",
        type=float,
        default=0,
        help="spread the starts evenly over this many seconds (default 0: all at once, the runs then move in step)",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL server to use, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/postgres; a temporary "
        "database is created on it and dropped (default: SQLite in a temp dir)",
    )
    parser.add_argument(
        "--profile-server",
        type=Path,
        metavar="FILE",
        help="run the server under cProfile, save its stats to FILE and print the top functions (slows it down)",
    )
    parser.add_argument(
        "--csv", type=Path, metavar="FILE", help="also write every delivery: subscriber, seq, event, emitted, received"
    )
    parser.add_argument("--timeout", type=float, default=300, help="give up on the measurement after this (s)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this file")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the server under test, e.g. AIOPS_EVENT_FLUSH_INTERVAL_MS=25 (repeatable)",
    )
    args = parser.parse_args()
    for setting in args.setting:
        name, _, value = setting.partition("=")
        SERVER_SETTINGS[name] = value
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
