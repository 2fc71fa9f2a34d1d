"""An MCP server for the tests, written with the MCP SDK's FastMCP.

    python -m tests.mcp_server stdio
    python -m tests.mcp_server http PORT

``MCP_TEST_MARKER_DIR`` (when set) is where ``slow`` writes ``<pid>.slow`` as it starts, so a test can kill
the server while a call is in flight. The secret the server was given (env ``MCP_TEST_TOKEN`` over stdio,
header ``X-Test-Token`` over HTTP) is what ``secret_echo`` answers with.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.fastmcp import Context, FastMCP

server = FastMCP("aiops-test-tools", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Answers with the text it was given."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@server.tool()
def restart_pod(pod: str) -> str:
    """Restarts a pod (pretends to: it records the restart)."""
    return f"restarted {pod}"


@server.tool()
def broken(text: str) -> str:
    """Always fails."""
    raise ValueError(f"cannot handle {text}")


@server.tool()
async def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    marker_dir = os.environ.get("MCP_TEST_MARKER_DIR")
    if marker_dir:
        Path(marker_dir, f"{os.getpid()}.slow").write_text("started")  # noqa: ASYNC240 - a tiny file, once
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def flood(megabytes: int) -> str:
    """Answers with that many megabytes of text (a tool that dumps a whole log, say)."""
    return "x" * (megabytes * 2**20)


@server.tool()
def secret_echo(ctx: Context) -> str:  # type: ignore[type-arg]
    """Answers with the secret it was given."""
    request = getattr(ctx.request_context, "request", None)
    if request is not None:
        return f"header token {request.headers.get('x-test-token', '')}"
    return f"env token {os.environ.get('MCP_TEST_TOKEN', '')}"


def main() -> None:
    mode = sys.argv[1]
    if mode == "stdio":
        server.run("stdio")
        return
    server.settings.port = int(sys.argv[2])
    server.run("streamable-http")


if __name__ == "__main__":
    main()
