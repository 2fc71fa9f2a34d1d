"""MCP over stdio, with every message bounded before it is parsed.

The MCP SDK's stdio client keeps whatever a server writes without a newline in one growing string: a server that
dumps a 5 GB log as one answer (or never ends a line) would take the service's memory with it. This transport
reads the server's output in chunks, refuses a message larger than ``max_message_bytes`` (calling ``on_too_large``, and
closing the pipe so the server stops writing) and otherwise speaks the protocol as the SDK does: one JSON-RPC
message per line, stdin closed first on shutdown, then the process group terminated if it lingers.

The server's environment is the SDK's minimal default (PATH, HOME, ...) plus the server's own variables, taken
literally: ``${NAME}`` is never expanded from the service's environment, whose variables hold its secrets.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress

import anyio
from anyio.abc import Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import ClientSession, types
from mcp.client.stdio import get_default_environment
from mcp.os.posix.utilities import terminate_posix_process_tree
from mcp.shared.message import SessionMessage

# How long a server may take to exit once its stdin is closed, before its process group is terminated.
EXIT_GRACE_SECONDS = 2.0
_CHUNK_BYTES = 2**16


def split_lines(buffer: bytearray, chunk: bytes) -> list[bytes]:
    """Appends ``chunk`` to ``buffer`` and takes the complete lines out of it; the unfinished rest stays."""
    searched = len(buffer)
    buffer += chunk
    lines: list[bytes] = []
    start = 0
    while (end := buffer.find(b"\n", searched)) >= 0:
        lines.append(bytes(buffer[start:end]))
        start = searched = end + 1
    del buffer[:start]
    return lines


def _message_of(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.JSONRPCMessage.model_validate_json(line))
    except Exception as exc:  # not a JSON-RPC message: the session reports it and goes on, as over HTTP
        return exc


async def _read_messages(
    process: Process,
    sink: MemoryObjectSendStream[SessionMessage | Exception],
    max_message_bytes: int,
    on_too_large: Callable[[], None],
) -> None:
    assert process.stdout is not None
    buffer = bytearray()
    async with sink:
        with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            while True:
                lines = split_lines(buffer, await process.stdout.receive(_CHUNK_BYTES))
                if len(buffer) > max_message_bytes or any(len(line) > max_message_bytes for line in lines):
                    on_too_large()
                    # Closing our end of the pipe makes the server's next write fail, so it stops writing.
                    await process.stdout.aclose()
                    return
                for line in lines:
                    if line.strip():
                        await sink.send(_message_of(line))


async def _write_messages(process: Process, source: MemoryObjectReceiveStream[SessionMessage]) -> None:
    assert process.stdin is not None
    async with source:
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for message in source:
                line = message.message.model_dump_json(by_alias=True, exclude_none=True) + "\n"
                await process.stdin.send(line.encode())


async def _stop(process: Process) -> None:
    if process.stdin is not None:
        with suppress(Exception):
            await process.stdin.aclose()
    try:
        with anyio.fail_after(EXIT_GRACE_SECONDS):
            await process.wait()
    except TimeoutError:
        await terminate_posix_process_tree(process, EXIT_GRACE_SECONDS)
    except ProcessLookupError:
        pass


@asynccontextmanager
async def stdio_session(
    command: str,
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    max_message_bytes: int,
    on_too_large: Callable[[], None],
) -> AsyncIterator[ClientSession]:
    """A session (not yet initialised) with a server started as ``command args``; the process ends with it."""
    incoming_sink, incoming = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    outgoing, outgoing_source = anyio.create_memory_object_stream[SessionMessage](0)
    try:
        process = await anyio.open_process(
            [command, *args],
            env={**get_default_environment(), **env},
            stderr=sys.stderr,
            # Its own process group, so that whatever the server starts is terminated with it.
            start_new_session=True,
        )
    except BaseException:
        for stream in (incoming_sink, incoming, outgoing, outgoing_source):
            stream.close()
        raise
    async with anyio.create_task_group() as tasks, process:
        tasks.start_soon(_read_messages, process, incoming_sink, max_message_bytes, on_too_large)
        tasks.start_soon(_write_messages, process, outgoing_source)
        try:
            async with ClientSession(incoming, outgoing) as session:
                yield session
        finally:
            await _stop(process)
            for stream in (incoming, outgoing):
                stream.close()
