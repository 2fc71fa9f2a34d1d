"""What bench/stream.py's runs cost without the service around them (a script, not a test).

    .venv/bin/python bench/stream_floor.py                  # 100 runs, 2 s per model call, as bench/stream.py
    .venv/bin/python bench/stream_floor.py --json floor.json

bench/stream.py charges the server's CPU for 100 runs of its 3-node team, with 5 SSE subscribers each, through
HTTP, the database and the event fan-out. This script runs the same team, the same 100 runs at once and the same
simulator latency **in this process**, with nothing of the service: no HTTP, no database, no subscribers, an
in-memory checkpointer. It prints the process's CPU for three variants:

- ``plain``: a hand-written ``langchain.agents.create_agent`` loop making the same model calls (bench/engine.py's
  plain loop), no checkpointer, no streaming -- LangChain's own cost;
- ``engine``: the engine (``CompiledTeam`` built per run, as the service does for a team it has not run
  before, and ``ExecutionRun``), token streaming off;
- ``engine+tokens``: the same with token streaming on (the service's default).

The difference between bench/stream.py's server CPU and ``engine+tokens`` is what the service adds per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from rich.console import Console
from rich.table import Table

from aiops_executor.engine import CompiledTeam, ExecutionRun, RunRequest
from aiops_executor.engine.topology import TeamSpec
from aiops_executor.tools.builtin import default_registry

sys.path.insert(0, str(Path(__file__).parent))
from stream import team_body

import engine as engine_bench

TASK = "Is the service healthy?"


def stream_team(nodes: int) -> TeamSpec:
    """bench/stream.py's team, its model references pointed at bench/engine.py's simulator source."""
    body = team_body("floor", nodes)
    ref = {"model_provider": engine_bench.PROVIDER, "model_id": engine_bench.MODEL}
    topology = body["topology"]
    for node in topology["nodes"]:
        node["supervisor_config"].update(ref)
        for agent in node["agents"]:
            agent.update(ref)
    topology["global_supervisor"].update(ref)
    return TeamSpec.model_validate(body)


def engine_runs(spec: TeamSpec, runs: int, latency_ms: float, stream_tokens: bool) -> Callable[[], Awaitable[str]]:
    saver = InMemorySaver()

    async def one() -> str:
        team = CompiledTeam(spec, default_registry(), {})
        request = RunRequest(str(uuid.uuid4()), "bench", TASK, timeout_seconds=1800)
        run = ExecutionRun(
            team, request, engine_bench.SimulatorSource(latency_ms), stream_tokens=stream_tokens, checkpointer=saver
        )
        async for _ in run.events():
            pass
        assert run.outcome is not None
        return run.outcome.status.value

    return at_once(one, runs)


def at_once(one: Callable[[], Awaitable[str]], runs: int) -> Callable[[], Awaitable[str]]:
    """``runs`` of ``one`` at once; their status, or every status seen, comma-separated."""

    async def all_runs() -> str:
        statuses = set(await asyncio.gather(*(one() for _ in range(runs))))
        return statuses.pop() if len(statuses) == 1 else ",".join(sorted(statuses))

    return all_runs


def plain_runs(spec: TeamSpec, runs: int, latency_ms: float) -> Callable[[], Awaitable[str]]:
    class AtLatency(engine_bench.CountingSimulator):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(latency_ms=latency_ms, **kwargs)

    # The plain loop builds its models and tools from these module names: the stream team's tools are real ones.
    engine_bench.CountingSimulator = AtLatency  # type: ignore[misc]
    engine_bench.bench_registry = default_registry
    return at_once(engine_bench.plain_loop(spec), runs)


async def measure(name: str, work: Callable[[], Awaitable[str]]) -> dict[str, Any]:
    engine_bench.Counters.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    status = await work()
    return {
        "variant": name,
        "cpu_s": round(time.process_time() - cpu, 2),
        "wall_s": round(time.perf_counter() - wall, 1),
        "model_calls": engine_bench.Counters.model_calls,
        "status": status,
    }


async def main(args: argparse.Namespace) -> int:
    spec = stream_team(args.nodes)
    variants: dict[str, Callable[[], Callable[[], Awaitable[str]]]] = {
        "engine+tokens": lambda: engine_runs(spec, args.executions, args.latency_ms, stream_tokens=True),
        "engine": lambda: engine_runs(spec, args.executions, args.latency_ms, stream_tokens=False),
        "plain": lambda: plain_runs(spec, args.executions, args.latency_ms),  # last: it patches bench/engine.py
    }
    # One process, a fixed order: the caches LangChain fills on first use are cold for the first variant only,
    # which is the one the service's figures compare with.
    rows = [await measure(name, make()) for name, make in variants.items()]
    table = Table(title=f"{args.executions} runs of bench/stream.py's team at once, without the service")
    for column in ("variant", "CPU s", "wall s", "model calls", "runs ended"):
        table.add_column(column)
    for row in rows:
        figures = (f"{row['cpu_s']:.2f}", f"{row['wall_s']:.1f}", str(row["model_calls"]), row["status"])
        table.add_row(row["variant"], *figures)
    Console(width=120).print(table)
    Console(width=120).print(engine_bench.machine())
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": engine_bench.machine(), "rows": rows}, indent=2))
    return 0 if all(row["status"] == "success" for row in rows) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=100, help="runs at once (default 100, as bench/stream.py)")
    parser.add_argument("--latency-ms", type=float, default=2000, help="simulator delay per model call (default 2000)")
    parser.add_argument("--nodes", type=int, default=3, help="nodes per team, in a depends_on chain (default 3)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this file")
    sys.exit(asyncio.run(main(parser.parse_args())))
