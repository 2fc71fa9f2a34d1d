"""MCP tool-call overhead: a tool of an MCP server against a built-in tool, through the same registry path.

    .venv/bin/python bench/mcp_tools.py [--calls 300] [--json FILE]

Each call goes through ``ToolRegistry.invoke`` (argument checks, timeout, output limit, redaction), as an
agent's calls do. The built-in tool is ``tcp_check`` against a closed loopback port (one refused connect: the
cheapest real probe); the MCP tool is ``echo`` of ``tests/mcp_server.py`` (FastMCP) over stdio and over
streamable HTTP on loopback, on a pooled connection opened before timing (the first call of a process also
pays for starting or connecting to the server: reported separately). Audit writes are left out (an in-memory
auditor): they cost one small database insert per call, like any audited action.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from aiops_executor.tool_servers.client import ServerConfig, ToolServerPool  # noqa: E402
from aiops_executor.tool_servers.tools import ToolCallRecord, server_tool_spec  # noqa: E402
from aiops_executor.tools.builtin import default_registry  # noqa: E402
from aiops_executor.tools.registry import ToolContext  # noqa: E402

SERVER = ROOT / "tests" / "mcp_server.py"
ECHO = {
    "name": "echo",
    "description": "echo",
    "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def no_audit(_: ToolCallRecord) -> None:
    return None


async def timed(invoke: Any, calls: int) -> list[float]:
    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        outcome = await invoke()
        durations.append((time.perf_counter() - started) * 1000)
        assert outcome.status == "success", outcome.output
    return durations


FIGURES: dict[str, dict[str, float]] = {}


def line(label: str, durations: list[float]) -> str:
    ordered = sorted(durations)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    FIGURES[label] = {"median_ms": statistics.median(ordered), "p95_ms": p95, "mean_ms": statistics.mean(ordered)}
    return f"| {label} | {statistics.median(ordered):.2f} | {p95:.2f} | {statistics.mean(ordered):.2f} |"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this file")
    options = parser.parse_args()
    context = ToolContext(node_id="n", attributes={})
    builtin = default_registry()
    rows = [
        line(
            "built-in `tcp_check` (refused loopback port)",
            await timed(
                lambda: builtin.invoke("tcp_check", {"host": "127.0.0.1", "port": 9, "timeout_seconds": 1}, context),
                options.calls,
            ),
        )
    ]

    port = free_port()
    command = [sys.executable, str(SERVER), "http", str(port)]
    http = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603, ASYNC220
    try:
        for _ in range(200):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            await asyncio.sleep(0.05)
        pool = ToolServerPool()
        configs = {
            "stdio": ServerConfig(
                uuid.uuid4(), "bench_stdio", "stdio", command=sys.executable, args=(str(SERVER), "stdio")
            ),
            "streamable HTTP": ServerConfig(
                uuid.uuid4(), "bench_http", "streamable_http", url=f"http://127.0.0.1:{port}/mcp"
            ),
        }
        for label, config in configs.items():
            spec = server_tool_spec(config, ECHO, pool, no_audit, timeout_seconds=30)
            registry = builtin.extended([spec])
            started = time.perf_counter()
            first = await registry.invoke(spec.name, {"text": "hi"}, context)
            assert first.status == "success", first.output
            connect_ms = (time.perf_counter() - started) * 1000
            FIGURES[f"MCP over {label}: first call of a process"] = {"ms": connect_ms}
            durations = await timed(
                lambda registry=registry, name=spec.name: registry.invoke(name, {"text": "hi"}, context), options.calls
            )
            rows.append(line(f"MCP `echo` over {label}, pooled", durations))
            rows.append(
                f"| MCP over {label}: first call of a process (start/connect + handshake) | {connect_ms:.0f} | | |"
            )
        await pool.close()
    finally:
        http.kill()
    print(f"{options.calls} sequential calls each; milliseconds per call\n")
    print("| tool call | median | p95 | mean |\n|---|---|---|---|")
    print("\n".join(rows))
    if options.json is not None:
        options.json.write_text(json.dumps(FIGURES, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
