"""Scale-out benchmark: API and worker processes on PostgreSQL + Redis (a script, not a test).

    .venv/bin/python bench/scale.py                  # all four measurements (about 6 minutes)
    .venv/bin/python bench/scale.py --only takeover,cancel --json figures.json

Every process is a real subprocess (``aiops-executor serve --no-worker`` and ``aiops-executor worker``) on a
throwaway database created on ``--postgres-url`` (migrated, then dropped) and the Redis at ``--redis-url``.
The workload is the offline simulator at a fixed latency per model call; teams as in ``bench/stream.py``
(a chain of nodes, each a prober and a reader).

- **throughput**: runs per minute with one worker and with two (``--runs`` runs of a 3-node team, all
  submitted at once, simulator at 200 ms per call): from the first submission to the last run's end.
- **latency**: ``--executions`` concurrent runs (simulator at ``--stream-latency-ms``, 2 s: a model's pace)
  started through API process A, executed by two workers, with
  ``--subscribers`` SSE clients attached to API process B. Latency = the client's receive time - the event's
  ``timestamp`` (stamped by the worker's engine as the event left the run); both processes share this
  machine's clock. Every subscriber must get the gap-free sequence ending in a terminal event.
- **takeover**: kill -9 a worker while it holds runs; the time until every one of them has been resumed by
  the other worker (``attempt`` 2), and until the first ``execution_resumed`` event is stored.
- **cancel**: ``--cancel-runs`` runs busy on two workers (simulator at ``--stream-latency-ms``), started
  through API process A; ``--cancels`` of them, alternating between the workers, cancelled one at a time
  through API process B. Each figure is from sending the cancel to reading ``cancelled`` back through B
  (polled every 20 ms).

Prints a table (``--json FILE`` also writes the figures); exits 1 when a run fails, a stream loses or repeats an
event, or a target is missed (latency p99 <= 500 ms; takeover within ``AIOPS_WORKER_LEASE_SECONDS`` + 5 s;
every cancel within 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from stream import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    API,
    TASK,
    create_database,
    drop_database,
    expect,
    free_port,
    set_up,
    start_and_watch,
    verify_store,
)
from stream_report import Run, Subscriber, analyse, fmt, percentile

console = Console(highlight=False, width=120)
TERMINAL_STATUSES = {"success", "failed", "timeout", "cancelled"}
LATENCY_P99_TARGET_MS = 500.0  # issue 26: 100 runs x 500 subscribers, 2 API processes + 2 workers
CANCEL_TARGET_SECONDS = 2.0


@dataclass
class Proc:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    url: str | None = None

    @property
    def worker_id(self) -> str:
        return f"{socket.gethostname()}:{self.process.pid}"


class Deployment:
    """Two API processes without workers and ``workers`` worker processes on one database."""

    def __init__(self, data_dir: Path, database_url: str, redis_url: str, lease_seconds: int) -> None:
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIOPS_")}
        self.env.update(
            AIOPS_ENV="dev",
            AIOPS_DATA_DIR=str(data_dir),
            AIOPS_DATABASE_URL=database_url,
            AIOPS_REDIS_URL=redis_url,
            AIOPS_ADMIN_USERNAME=ADMIN_USERNAME,
            AIOPS_ADMIN_PASSWORD=ADMIN_PASSWORD,
            AIOPS_LOG_FORMAT="json",
            AIOPS_LOG_LEVEL="WARNING",
            AIOPS_RATE_LIMIT_EXECUTIONS_PER_MINUTE="0",
            AIOPS_SEED_SIMULATOR="false",  # the benchmark registers its own local-sim models
            AIOPS_WORKER_LEASE_SECONDS=str(lease_seconds),
        )
        self.apis: list[Proc] = []
        self.workers: list[Proc] = []

    async def _spawn(self, name: str, *args: str) -> Proc:
        log_path = self.data_dir / f"{name}.log"
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "aiops_executor.cli", *args, env=self.env, stdout=log, stderr=log
            )
        return Proc(name, process, log_path)

    async def migrate(self) -> None:
        proc = await self._spawn("migrate", "migrate")
        if await proc.process.wait() != 0:
            raise SystemExit(f"migrate failed: {proc.log_path.read_text()[-3000:]}")

    async def start_api(self) -> Proc:
        port = free_port()
        name = f"api-{len(self.apis)}"
        proc = await self._spawn(name, "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port))
        proc.url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=proc.url, timeout=2) as client:
            for _ in range(600):
                if proc.process.returncode is not None:
                    raise SystemExit(f"{name} exited: {proc.log_path.read_text()[-3000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        self.apis.append(proc)
                        return proc
                await asyncio.sleep(0.1)
        raise SystemExit(f"{name} did not start")

    async def start_worker(self, concurrency: int) -> Proc:
        proc = await self._spawn(f"worker-{len(self.workers)}", "worker", "--concurrency", str(concurrency))
        self.workers.append(proc)
        return proc

    async def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.process.returncode is None:
                proc.process.kill()
                await proc.process.wait()
        self.workers.clear()

    async def stop(self) -> None:
        await self.stop_workers()
        for proc in self.apis:
            if proc.process.returncode is None:
                proc.process.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(proc.process.wait(), 20)
                except TimeoutError:
                    proc.process.kill()
                    await proc.process.wait()


async def wait_for_workers(client: httpx.AsyncClient, count: int) -> None:
    for _ in range(300):
        ready = (await client.get("/health/ready")).json()
        if (ready.get("queue") or {}).get("live_workers", 0) >= count:
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{count} workers did not register")


async def statuses(client: httpx.AsyncClient, ids: list[str]) -> list[dict[str, Any]]:
    limit = asyncio.Semaphore(16)

    async def one(execution_id: str) -> dict[str, Any]:
        async with limit:
            return expect(await client.get(f"{API}/executions/{execution_id}"), 200)

    return list(await asyncio.gather(*(one(i) for i in ids)))


async def until_finished(client: httpx.AsyncClient, ids: list[str], limit_seconds: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit_seconds
    while True:
        rows = await statuses(client, ids)
        if all(r["status"] in TERMINAL_STATUSES for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise SystemExit(f"runs did not finish within {limit_seconds:.0f} s")
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------------------------------------ measurements


async def throughput(
    deployment: Deployment, client: httpx.AsyncClient, workers: int, args: argparse.Namespace
) -> float:
    await deployment.stop_workers()
    for _ in range(workers):
        await deployment.start_worker(args.concurrency)
    await wait_for_workers(client, workers)
    team_ids = await set_up_teams(client, args.runs, nodes=3, model_id="sim-fast")
    started = time.monotonic()
    ids = [
        str(expect(await client.post(f"{API}/teams/{team_id}/executions", json=TASK), 202)["execution_id"])
        for team_id in team_ids
    ]
    rows = await until_finished(client, ids, 600)
    elapsed = time.monotonic() - started
    failed = [r for r in rows if r["status"] != "success"]
    if failed:
        raise SystemExit(f"{len(failed)} runs did not succeed: {failed[0].get('error_message')}")
    return len(ids) / elapsed * 60


_team_counter = 0


async def register_models(client: httpx.AsyncClient, latencies: dict[str, float]) -> None:
    """Signs in, then registers the simulator provider ``local-sim`` with one model per fixed latency."""
    await set_up(client, 0, 1, 0)  # signs in, registers local-sim/sim-1 (unused)
    providers = expect(await client.get(f"{API}/providers"), 200)["items"]
    provider_id = next(p["id"] for p in providers if p["name"] == "local-sim")
    supported = {"supported": True, "score": 3}
    for model_id, latency_ms in latencies.items():
        body = {
            "model_id": model_id,
            "name": model_id,
            "default_params": {"latency_ms": latency_ms},
            "capabilities": {"chat": supported, "function_calling": supported, "structured_output": supported},
        }
        expect(await client.post(f"{API}/providers/{provider_id}/models", json=body), 201)


async def set_up_teams(client: httpx.AsyncClient, count: int, nodes: int, model_id: str) -> list[str]:
    """``count`` teams (a team runs one execution at a time) of ``nodes`` nodes on ``model_id``."""
    from stream import team_body

    limit = asyncio.Semaphore(8)

    async def make() -> str:
        global _team_counter
        _team_counter += 1
        body = json.loads(json.dumps(team_body(f"scale-{_team_counter}", nodes)).replace('"sim-1"', f'"{model_id}"'))
        async with limit:
            return str(expect(await client.post(f"{API}/teams", json=body), 201)["team_id"])

    return list(await asyncio.gather(*(make() for _ in range(count))))


async def latency(
    deployment: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient, args: argparse.Namespace
) -> dict[str, Any]:
    await deployment.stop_workers()
    for _ in range(2):
        await deployment.start_worker(args.concurrency)
    await wait_for_workers(a, 2)
    team_ids = await set_up_teams(a, args.executions, nodes=3, model_id="sim-stream")
    per_run = args.subscribers // args.executions
    extra = args.subscribers % args.executions
    runs = [
        Run("", [Subscriber(i * per_run + j) for j in range(per_run + (1 if i < extra else 0))])
        for i in range(len(team_ids))
    ]
    limits = httpx.Limits(max_connections=args.subscribers + 50, max_keepalive_connections=args.subscribers + 50)
    async with httpx.AsyncClient(
        base_url=b.base_url, headers=b.headers, timeout=httpx.Timeout(None, connect=30), limits=limits
    ) as streams:
        await asyncio.gather(*(start_and_watch(a, streams, t, run, 0.0) for t, run in zip(team_ids, runs, strict=True)))
    limit = asyncio.Semaphore(16)
    await asyncio.gather(*(verify_store(a, run, limit) for run in runs))
    analysis = analyse(runs)
    return {"analysis": analysis}


async def takeover(deployment: Deployment, client: httpx.AsyncClient, args: argparse.Namespace) -> dict[str, float]:
    await deployment.stop_workers()
    for _ in range(2):
        await deployment.start_worker(args.concurrency)
    await wait_for_workers(client, 2)
    team_ids = await set_up_teams(client, 40, nodes=3, model_id="sim-fast")
    ids = [
        str(expect(await client.post(f"{API}/teams/{team_id}/executions", json=TASK), 202)["execution_id"])
        for team_id in team_ids
    ]
    victim = deployment.workers[0]
    for _ in range(300):
        rows = await statuses(client, ids)
        held = [r["execution_id"] for r in rows if r["worker_id"] == victim.worker_id and r["status"] == "running"]
        if len(held) >= 5:
            break
        await asyncio.sleep(0.1)
    else:
        raise SystemExit("the first worker never held runs")
    await asyncio.sleep(1.0)
    victim.process.kill()
    killed = time.monotonic()
    first_event = all_resumed = None
    while all_resumed is None:
        if time.monotonic() - killed > 120:
            raise SystemExit("the killed worker's runs were not resumed within 120 s")
        rows = await statuses(client, held)
        resumed = [r for r in rows if r["attempt"] >= 2 or r["status"] in TERMINAL_STATUSES]
        if resumed and first_event is None:
            first_event = time.monotonic() - killed
        if len(resumed) == len(held):
            all_resumed = time.monotonic() - killed
        await asyncio.sleep(0.1)
    rows = await until_finished(client, ids, 600)
    failed = [r for r in rows if r["status"] != "success"]
    if failed:
        raise SystemExit(f"{len(failed)} runs did not succeed after the takeover: {failed[0].get('error_message')}")
    return {"held": float(len(held)), "first_resumed": first_event or 0.0, "all_resumed": all_resumed}


async def cancel(
    deployment: Deployment, a: httpx.AsyncClient, b: httpx.AsyncClient, args: argparse.Namespace
) -> list[float]:
    """Seconds from each cancel sent through B to its run read back ``cancelled`` through B, ascending."""
    await deployment.stop_workers()
    for _ in range(2):
        await deployment.start_worker(args.concurrency)
    await wait_for_workers(a, 2)
    team_ids = await set_up_teams(a, args.cancel_runs, nodes=3, model_id="sim-stream")
    ids = [
        str(expect(await a.post(f"{API}/teams/{team_id}/executions", json=TASK), 202)["execution_id"])
        for team_id in team_ids
    ]
    deadline = time.monotonic() + 120
    while True:
        rows = await statuses(a, ids)
        if all(r["status"] == "running" for r in rows):
            break
        if time.monotonic() > deadline:
            raise SystemExit("the runs did not all start within 120 s")
        await asyncio.sleep(0.1)
    by_worker: dict[str, list[str]] = {}
    for row in rows:
        by_worker.setdefault(row["worker_id"], []).append(str(row["execution_id"]))
    # Alternating between the workers, so that both sides of the cancel's path are measured.
    chosen = [i for pair in zip(*by_worker.values(), strict=False) for i in pair][: args.cancels]
    figures: list[float] = []
    for execution_id in chosen:
        asked = time.monotonic()
        expect(await b.post(f"{API}/executions/{execution_id}/cancel"), 202)
        while expect(await b.get(f"{API}/executions/{execution_id}"), 200)["status"] != "cancelled":
            if time.monotonic() - asked > 60:
                raise SystemExit(f"run {execution_id} was not cancelled within 60 s")
            await asyncio.sleep(0.02)
        figures.append(time.monotonic() - asked)
    for execution_id in ids:
        if execution_id not in chosen:
            await b.post(f"{API}/executions/{execution_id}/cancel")
    await until_finished(a, ids, 120)
    return sorted(figures)


# ------------------------------------------------------------------------------------------------ main


async def bench(args: argparse.Namespace) -> int:
    only = set(args.only.split(","))
    failures: list[str] = []
    recorded: dict[str, Any] = {}
    table = Table(title="Scale-out", show_lines=False)
    table.add_column("measurement")
    table.add_column("figure", justify="right")
    table.add_column("target")
    with tempfile.TemporaryDirectory(prefix="aiops-scale-") as tmp:
        database_url, name = await create_database(args.postgres_url)
        deployment = Deployment(Path(tmp), database_url, args.redis_url, args.lease_seconds)
        try:
            await deployment.migrate()
            api_a = await deployment.start_api()
            api_b = await deployment.start_api()
            async with (
                httpx.AsyncClient(base_url=api_a.url or "", timeout=60) as a,
                httpx.AsyncClient(base_url=api_b.url or "", timeout=60) as b,
            ):
                await register_models(a, {"sim-fast": args.latency_ms, "sim-stream": args.stream_latency_ms})
                token = a.headers["Authorization"]
                b.headers["Authorization"] = token
                if "throughput" in only:
                    for workers in (1, 2):
                        per_minute = await throughput(deployment, a, workers, args)
                        recorded[f"throughput_{workers}_workers_runs_per_minute"] = per_minute
                        table.add_row(
                            f"throughput, {workers} worker(s), {args.runs} runs", f"{per_minute:,.0f} runs/min", ""
                        )
                if "latency" in only:
                    measured = (await latency(deployment, a, b, args))["analysis"]
                    live = measured.live
                    p99 = percentile(measured.latencies, 0.99)
                    table.add_row(
                        f"event -> SSE client on the other API process, {args.executions} runs x "
                        f"{args.subscribers} subscribers: p50 / p99 / max (ms)",
                        f"{fmt(percentile(measured.latencies, 0.5))} / {fmt(p99)} / "
                        f"{fmt(measured.latencies[-1] if measured.latencies else float('nan'))}",
                        f"p99 <= {LATENCY_P99_TARGET_MS:.0f}",
                    )
                    table.add_row(
                        "  live events only: p50 / p99 (ms)",
                        f"{fmt(percentile(live, 0.5))} / {fmt(percentile(live, 0.99))}",
                        "",
                    )
                    table.add_row("  events delivered", f"{len(measured.latencies):,}", "")
                    failures += measured.violations[:20]
                    recorded["latency_ms"] = {
                        "p50": percentile(measured.latencies, 0.5),
                        "p99": p99,
                        "live_p50": percentile(live, 0.5),
                        "live_p99": percentile(live, 0.99),
                        "events": len(measured.latencies),
                    }
                    if p99 > LATENCY_P99_TARGET_MS:
                        failures.append(f"latency p99 {p99:.1f} ms > {LATENCY_P99_TARGET_MS:.0f} ms")
                if "takeover" in only:
                    figures = await takeover(deployment, a, args)
                    table.add_row(
                        f"kill -9 of a worker holding {figures['held']:.0f} runs -> first / all resumed (s)",
                        f"{figures['first_resumed']:.1f} / {figures['all_resumed']:.1f}",
                        f"<= {args.lease_seconds} + 5",
                    )
                    if figures["all_resumed"] > args.lease_seconds + 5:
                        failures.append(f"takeover took {figures['all_resumed']:.1f} s")
                    recorded["takeover"] = figures
                if "cancel" in only:
                    seconds = await cancel(deployment, a, b, args)
                    table.add_row(
                        f"cancel through B of {len(seconds)} of {args.cancel_runs} busy runs on two workers "
                        "-> read back cancelled: p50 / max (s)",
                        f"{percentile(seconds, 0.5):.2f} / {seconds[-1]:.2f}",
                        f"<= {CANCEL_TARGET_SECONDS:.0f}",
                    )
                    recorded["cancel_seconds"] = seconds
                    if seconds[-1] > CANCEL_TARGET_SECONDS:
                        failures.append(f"a cancel took {seconds[-1]:.2f} s")
        finally:
            await deployment.stop()
            await drop_database(args.postgres_url, name)
    console.print(table)
    console.print(
        f"[dim]{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; simulator at "
        f"{args.latency_ms:.0f} ms per call ({args.stream_latency_ms:.0f} ms for latency); "
        f"worker concurrency {args.concurrency}; lease {args.lease_seconds} s[/dim]"
    )
    for failure in failures:
        console.print(f"[red]VIOLATION[/red] {failure}")
    if args.json:
        args.json.write_text(json.dumps({"scale": recorded, "violations": failures}, indent=2))
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--only", default="throughput,latency,takeover,cancel")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=200.0, help="per model call: throughput, takeover")
    parser.add_argument(
        "--stream-latency-ms", type=float, default=2000.0, help="per model call in the latency measurement"
    )
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--lease-seconds", type=int, default=30)
    parser.add_argument("--cancel-runs", type=int, default=40, help="busy runs in the cancel measurement")
    parser.add_argument("--cancels", type=int, default=10, help="of them cancelled one at a time")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    sys.exit(asyncio.run(bench(args)))


if __name__ == "__main__":
    main()
