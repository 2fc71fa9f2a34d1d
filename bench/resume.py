"""Resume benchmark: kill -9 a real ``aiops-executor serve`` mid-run, start it again, time the way back.

    .venv/bin/python bench/resume.py                    # SQLite (embedded default) and PostgreSQL
    .venv/bin/python bench/resume.py --backends sqlite --nodes 100 --json figures.json

A team of ``--nodes`` independent node teams (2 agents each, global strategy ``parallel``; half of them on
the simulator at ``--latency-ms`` per call, half at six times that) runs until the fast half has finished;
the server is killed
with SIGKILL and started again on the same data. Figures: the time from the new process's spawn until
``/health`` answers, until the resumed run's first new event (``execution_resumed``) reaches a client that
re-attached with its ``Last-Event-ID``, and until the run ends; and how many node teams ran again (must be 0
of those that had finished). A script, not a test: it exits 1 when the run does not end ``success`` or a
finished node team ran again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from rich.table import Table
from stream import (
    API,
    SUPPORTED,
    console,
    create_database,
    drop_database,
    expect,
    set_up,
    start_server,
    stop_server,
    team_body,
)

SLOW_MODEL = "sim-slow"


def parallel_team(nodes: int) -> dict[str, Any]:
    """Independent node teams; every second one uses the slow model, so it is mid-flight when the fast ones end."""
    body = team_body("resume", nodes)
    body["topology"]["edges"] = []
    body["topology"]["global_supervisor"]["coordination_strategy"] = "parallel"
    for node in body["topology"]["nodes"][1::2]:
        for ref in [*node["agents"], node["supervisor_config"]]:
            ref["model_id"] = SLOW_MODEL
    return body


async def add_slow_model(client: httpx.AsyncClient, latency_ms: float) -> None:
    providers = expect(await client.get(f"{API}/providers"), 200)
    provider = next(p for p in providers["items"] if p["name"] == "local-sim")
    body = {
        "model_id": SLOW_MODEL,
        "name": "Slow simulator",
        "default_params": {"latency_ms": latency_ms},
        "capabilities": {"chat": SUPPORTED, "function_calling": SUPPORTED, "structured_output": SUPPORTED},
    }
    expect(await client.post(f"{API}/providers/{provider['id']}/models", json=body), 201)


async def follow(
    client: httpx.AsyncClient,
    execution_id: str,
    seen: list[tuple[int, str, dict[str, Any]]],
    last_id: int | None = None,
    first_new: asyncio.Event | None = None,
) -> None:
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    with contextlib.suppress(httpx.TransportError):
        async with aconnect_sse(client, "GET", f"{API}/executions/{execution_id}/stream", headers=headers) as source:
            async for message in source.aiter_sse():
                if message.event in ("heartbeat", "agent_token", "agent_tokens_discarded") or not message.data:
                    continue  # heartbeats and token deltas (live only) are not part of the event log
                seen.append((int(message.id), message.event, json.loads(message.data)))
                if first_new is not None:
                    first_new.set()


async def measure(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="aiops-resume-") as folder:
        data_dir = Path(folder)
        database_url, database = (None, None)
        if backend == "postgresql":
            database_url, database = await create_database(args.postgres_url)
        try:
            return await _measure(data_dir, database_url, args)
        finally:
            if database:
                await drop_database(args.postgres_url, database)


async def _measure(data_dir: Path, database_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    server = await start_server(data_dir, database_url, 100)
    before: list[tuple[int, str, dict[str, Any]]] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            await set_up(client, 0, args.nodes, args.latency_ms)
            await add_slow_model(client, args.latency_ms * 6)
            team = expect(await client.post(f"{API}/teams", json=parallel_team(args.nodes)), 201)
            run = expect(
                await client.post(f"{API}/teams/{team['team_id']}/executions", json={"input": {"task": "t"}}), 202
            )
            execution_id = run["execution_id"]
            follower = asyncio.create_task(follow(client, execution_id, before))
            while sum(kind == "node_complete" for _, kind, _ in before) < (args.nodes + 1) // 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            finished = {d["node_id"] for _, kind, d in before if kind == "node_complete"}
            server.process.send_signal(signal.SIGKILL)
            await server.process.wait()
            await asyncio.wait_for(follower, 10)
    finally:
        await stop_server(server)

    spawned = time.perf_counter()
    server = await start_server(data_dir, database_url, 100)
    ready = time.perf_counter() - spawned
    after: list[tuple[int, str, dict[str, Any]]] = []
    first_new = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            token = expect(
                await client.post(f"{API}/auth/token", data={"username": "bench-admin", "password": _password()}), 200
            )
            client.headers["Authorization"] = f"Bearer {token['access_token']}"
            follower = asyncio.create_task(follow(client, execution_id, after, before[-1][0], first_new))
            await first_new.wait()
            first_event = time.perf_counter() - spawned
            await follower
            ended = time.perf_counter() - spawned
            execution = expect(await client.get(f"{API}/executions/{execution_id}"), 200)
    finally:
        await stop_server(server)
    rerun = {d.get("node_id") for _, _, d in after} & finished
    return {
        "finished_before": len(finished),
        "ready_s": ready,
        "first_event_s": first_event,
        "first_event": after[0][1] if after else None,
        "ended_s": ended,
        "status": execution["status"],
        "attempt": execution["attempt"],
        "rerun": len(rerun),
        "gap_free": [s for s, _, _ in before + after] == list(range(1, len(before) + len(after) + 1)),
    }


def _password() -> str:
    import stream

    return stream.ADMIN_PASSWORD


async def main(args: argparse.Namespace) -> int:
    table = Table(
        title=f"resume after kill -9: {args.nodes} node teams x 2 agents, simulator at {args.latency_ms:.0f} ms"
    )
    for column in (
        "backend",
        "finished before kill",
        "restart -> /health",
        "restart -> first new event",
        "restart -> run ends",
        "status",
        "attempt",
        "finished teams run again",
        "log gap-free",
    ):
        table.add_column(column)
    failed = False
    measured = {}
    for backend in args.backends.split(","):
        figures = measured[backend] = await measure(backend, args)
        failed |= figures["status"] != "success" or figures["rerun"] != 0 or not figures["gap_free"]
        table.add_row(
            backend,
            str(figures["finished_before"]),
            f"{figures['ready_s']:.2f} s",
            f"{figures['first_event_s']:.2f} s ({figures['first_event']})",
            f"{figures['ended_s']:.2f} s",
            figures["status"],
            str(figures["attempt"]),
            str(figures["rerun"]),
            str(figures["gap_free"]),
        )
    console.print(table)
    if args.json is not None:
        args.json.write_text(json.dumps(measured, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=500.0)
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this file")
    sys.exit(asyncio.run(main(parser.parse_args())))
