"""Connections to MCP servers over stdio and streamable HTTP, pooled per process.

A connection lives in a task of its own: the MCP SDK's sessions are async context managers whose task groups
must be entered and left by the same task, while tool calls come from many. Calls share a connection (MCP
multiplexes requests). A connection is dropped when a call on it fails for a reason other than the tool's own
(the process exited, the HTTP server went away, the session expired), and one that has been idle for a while is
pinged before it is used again, so a server that restarted is reconnected on its next use. A call is never
repeated: a tool may act (restart a pod), and a call cut off half-way may have done so.

Streamable-HTTP connections go through the egress policy (every request, on the checked address).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from aiops_executor.core import egress
from aiops_executor.core.text import shorten

# The MCP SDK is imported when a process first talks to a tool server: importing it costs every process some
# 0.2 s of CPU at start-up (the CLI, each API process, each worker), and most never use a tool server.
if TYPE_CHECKING:
    from langchain_mcp_adapters.sessions import Connection
    from mcp import ClientSession
    from mcp.types import CallToolResult, Tool

logger = structlog.get_logger(__name__)

# A connection unused for this long is pinged before a call, since its server may have restarted meanwhile.
IDLE_PING_SECONDS = 5.0
PING_TIMEOUT_SECONDS = 3.0
MAX_TOOL_PAGES = 100
MAX_MESSAGE_CHARS = 500
# The largest JSON-RPC message read from a server (a tool's answer, a list of tools), over either transport.
MAX_MESSAGE_BYTES = 16 * 2**20
TOO_LARGE = f"the server sent a message larger than {MAX_MESSAGE_BYTES // 2**20} MB"


class ServerUnreachable(Exception):
    """The server could not be reached, or the connection broke; ``message`` says so in the user's terms."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerRefused(Exception):
    """The server answered a request with a protocol error (unknown tool, invalid arguments, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ServerConfig:
    """What connecting to one server takes, its secrets in plaintext (in memory only; never in its repr)."""

    id: uuid.UUID
    name: str
    transport: str
    command: str | None = None
    args: tuple[str, ...] = ()
    url: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    approval_required: bool = False
    # Changes whenever the stored server does: a pooled connection of an older version is replaced.
    version: str = ""

    @property
    def secrets(self) -> set[str]:
        """The secret values, to scrub from anything the server or its errors say."""
        return {value for value in (*self.env.values(), *self.headers.values()) if len(value) >= 4}


def describe_failure(exc: BaseException) -> str:
    """One line naming what broke, from the exception and what caused it (no class names, no traceback)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(describe_failure(inner) for inner in exc.exceptions))
    denial = egress.find_denial(exc)
    if denial is not None:
        return denial.decision.reason
    if isinstance(exc, FileNotFoundError):
        return f"the command was not found ({exc.filename or exc})"
    if isinstance(exc, PermissionError):
        return f"the command may not be run ({exc.filename or exc})"
    if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
        return "the connection was refused or could not be made"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"the server answered HTTP {exc.response.status_code}"
    if _is_mcp_error(exc):
        return f"the server said: {exc.error.message}"  # type: ignore[attr-defined]
    text = str(exc).strip()
    if text:
        return shorten(" ".join(text.split()), MAX_MESSAGE_CHARS)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        return describe_failure(cause)
    return "the connection broke"


def _is_mcp_error(exc: BaseException) -> bool:
    """Whether the SDK raised it (the SDK is loaded already when one of its errors exists)."""
    errors = sys.modules.get("mcp.shared.exceptions")
    return errors is not None and isinstance(exc, errors.McpError)


def _unfinished_message_bytes(pending: int, tail: bytes, chunk: bytes) -> int:
    """Bytes since the last end of an SSE event (a blank line) once ``chunk`` is read; a JSON body has none, so
    all of it counts. ``tail`` is the end of the previous chunk, where a blank line may have begun."""
    data = tail + chunk
    end = max((i + len(blank) for blank in (b"\n\n", b"\r\n\r\n") if (i := data.rfind(blank)) >= 0), default=-1)
    if end > len(tail):  # an event ended in this chunk
        return len(data) - end
    return pending + len(chunk)


class _WatchedStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any, on_broken: Callable[[str | None], None]) -> None:
        self._inner = inner
        self._on_broken = on_broken

    async def __aiter__(self) -> AsyncIterator[bytes]:
        pending, tail = 0, b""
        try:
            async for chunk in self._inner:
                pending = _unfinished_message_bytes(pending, tail, chunk)
                tail = chunk[-3:]
                if pending > MAX_MESSAGE_BYTES:
                    # Read no further: a message is held whole in memory (and parsed) before anyone sees it.
                    self._on_broken(TOO_LARGE)
                    raise httpx.ReadError("message too large")
                yield chunk
        except httpx.TransportError as exc:
            if not isinstance(exc, httpx.TimeoutException):
                self._on_broken(None)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _WatchedTransport(httpx.AsyncBaseTransport):
    """Reports a connection that broke (refused, reset, a response stream cut off) at once. The MCP SDK leaves
    a request whose response stream was cut off waiting until its read timeout; the pool fails it instead."""

    def __init__(self, inner: httpx.AsyncBaseTransport, on_broken: Callable[[str | None], None]) -> None:
        self._inner = inner
        self._on_broken = on_broken

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            if not isinstance(exc, httpx.TimeoutException):
                self._on_broken(None)
            raise
        response.stream = _WatchedStream(response.stream, self._on_broken)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def _http_client_factory(policy: egress.EgressPolicy | None, url: str, on_broken: Callable[[str | None], None]) -> Any:
    """httpx clients for the MCP SDK whose every request (redirects too) is checked against the egress policy
    and sent to the checked address; headers with credentials go to the server's own origin only."""
    origin = egress.credential_origin_of(url)

    def factory(
        headers: dict[str, str] | None = None, timeout: httpx.Timeout | None = None, auth: httpx.Auth | None = None
    ) -> httpx.AsyncClient:
        transport = egress.async_transport(httpx, policy=policy, credential_origin=origin)
        return httpx.AsyncClient(
            headers=headers,
            timeout=timeout if timeout is not None else httpx.Timeout(30.0, read=300.0),
            auth=auth,
            transport=_WatchedTransport(transport, on_broken),
            follow_redirects=False,
        )

    return factory


def _ignore(_reason: str | None = None) -> None:
    return None


def connection_of(
    config: ServerConfig,
    *,
    policy: egress.EgressPolicy | None,
    timeout: float,
    on_broken: Callable[[str | None], None] = _ignore,
) -> Connection:
    """The langchain-mcp-adapters connection for ``config``'s streamable-HTTP server (stdio has its own transport,
    ``tool_servers/stdio.py``)."""
    if not config.url:
        raise ServerUnreachable("the server has no url")
    return {
        "transport": "streamable_http",
        "url": config.url,
        "headers": dict(config.headers),
        "timeout": timedelta(seconds=timeout),
        "httpx_client_factory": _http_client_factory(policy, config.url, on_broken),
    }


@contextlib.asynccontextmanager
async def _session_of(
    config: ServerConfig,
    *,
    policy: egress.EgressPolicy | None,
    connect_timeout: float,
    on_broken: Callable[[str | None], None],
) -> AsyncIterator[ClientSession]:
    # The SDK and its adapters are imported on first use: see the imports.
    if config.transport == "stdio":
        from aiops_executor.tool_servers.stdio import stdio_session

        if not config.command:
            raise ServerUnreachable("the server has no command")
        stdio = stdio_session(
            config.command,
            config.args,
            config.env,
            max_message_bytes=MAX_MESSAGE_BYTES,
            on_too_large=lambda: on_broken(TOO_LARGE),
        )
        async with stdio as session:
            yield session
        return
    from langchain_mcp_adapters.sessions import create_session

    connection = connection_of(config, policy=policy, timeout=connect_timeout, on_broken=on_broken)
    async with create_session(connection) as session:
        yield session


class McpConnection:
    """One live session with one server, owned by a background task."""

    def __init__(self, config: ServerConfig, *, policy: egress.EgressPolicy | None, connect_timeout: float) -> None:
        self.config = config
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._session: ClientSession | None = None
        self._ready: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._broke = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None
        self.last_used = time.monotonic()
        self.broken = False
        # What broke the connection, when the transport knows better than "it broke".
        self._broken_reason: str | None = None

    def _mark_broken(self, reason: str | None = None) -> None:
        self.broken = True
        self._broken_reason = self._broken_reason or reason
        self._broke.set()

    @property
    def alive(self) -> bool:
        return not self.broken and self._owner is not None and not self._owner.done()

    async def open(self) -> None:
        """Starts the server (stdio) or the session (HTTP) and completes the MCP handshake."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._owner = asyncio.create_task(self._own(), name=f"mcp-{self.config.name}")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await asyncio.shield(self._ready)
        except TimeoutError:
            await self.close()
            raise ServerUnreachable(
                f"the server did not complete the MCP handshake within {self._connect_timeout:g} s"
            ) from None
        except ServerUnreachable:
            await self.close()
            raise

    async def _own(self) -> None:
        assert self._ready is not None
        session_of = _session_of(
            self.config, policy=self._policy, connect_timeout=self._connect_timeout, on_broken=self._mark_broken
        )
        try:
            async with session_of as session:
                await session.initialize()
                self._session = session
                self._ready.set_result(None)
                await self._stop.wait()
        except asyncio.CancelledError:
            if not self._ready.done():
                self._ready.set_exception(ServerUnreachable("the connection was closed"))
            raise
        except BaseException as exc:  # anything the transport raises: the connection is over
            message = describe_failure(exc)
            if not self._ready.done():
                self._ready.set_exception(ServerUnreachable(message))
            else:
                logger.info("MCP connection ended", server=self.config.name, reason=message)
        finally:
            self.broken = True
            self._session = None

    async def close(self) -> None:
        self.broken = True
        self._stop.set()
        owner = self._owner
        if owner is None or owner.done():
            return
        try:
            async with asyncio.timeout(5.0):
                await asyncio.shield(owner)
        except (TimeoutError, Exception):
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner

    async def _request(self, what: str, coroutine: Any) -> Any:
        """Awaits one request, failing at once if the connection ends meanwhile (a dead process, say)."""
        session = self._session
        owner = self._owner
        if session is None or owner is None or not self.alive:
            coroutine.close()
            raise ServerUnreachable("the connection is closed")
        request = asyncio.ensure_future(coroutine)
        broke = asyncio.ensure_future(self._broke.wait())
        try:
            done, _ = await asyncio.wait({request, owner, broke}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            request.cancel()
            raise
        finally:
            broke.cancel()
        if request not in done:
            request.cancel()
            with contextlib.suppress(BaseException):
                await request
            self.broken = True
            raise ServerUnreachable(self._broken_reason or f"the connection to the server broke during {what}")
        self.last_used = time.monotonic()
        from mcp.shared.exceptions import McpError  # loaded by the session already

        try:
            return request.result()
        except McpError as exc:
            if exc.error.code in (-32000, 32600, -32600) and "session" in exc.error.message.lower():
                self.broken = True  # an expired session (the server restarted): reconnect next time
                raise ServerUnreachable(f"the server no longer knows this session ({exc.error.message})") from None
            if "connection closed" in exc.error.message.lower():
                self.broken = True
                raise ServerUnreachable("the connection to the server was closed") from None
            raise ServerRefused(describe_failure(exc)) from None
        except (ServerUnreachable, ServerRefused):
            raise
        except Exception as exc:
            self.broken = True
            raise ServerUnreachable(describe_failure(exc)) from None

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                assert self._session is not None
                await self._request("a ping", self._session.send_ping())
            return True
        except (TimeoutError, ServerUnreachable, ServerRefused, AssertionError):
            self.broken = True
            return False

    async def list_tools(self) -> list[Tool]:
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            assert self._session is not None
            page = await self._request("listing its tools", self._session.list_tools(cursor=cursor))
            tools.extend(page.tools)
            cursor = page.nextCursor
            if not cursor:
                return tools
        raise ServerRefused(f"the server listed more than {MAX_TOOL_PAGES} pages of tools")

    async def call_tool(self, name: str, arguments: dict[str, Any], timeout: float) -> CallToolResult:  # noqa: ASYNC109
        if self._session is None:
            raise ServerUnreachable("the connection is closed")
        call = self._session.call_tool(name, arguments, read_timeout_seconds=timedelta(seconds=timeout))
        result: CallToolResult = await self._request(f"the call of {name}", call)
        return result


class ToolServerPool:
    """This process's connections, one per server (and version of its configuration)."""

    def __init__(self, *, policy: egress.EgressPolicy | None = None, connect_timeout: float = 15.0) -> None:
        self._policy = policy
        self._connect_timeout = connect_timeout
        self._connections: dict[uuid.UUID, McpConnection] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._closed = False

    def connect_timeout(self) -> float:
        return self._connect_timeout

    async def open_once(self, config: ServerConfig) -> McpConnection:
        """A connection of its own (not pooled): the caller closes it."""
        connection = McpConnection(config, policy=self._policy, connect_timeout=self._connect_timeout)
        await connection.open()
        return connection

    async def connection(self, config: ServerConfig) -> McpConnection:
        """The pooled live connection to ``config``'s server, (re)connecting when there is none or it broke."""
        if self._closed:
            raise ServerUnreachable("the service is shutting down")
        lock = self._locks.setdefault(config.id, asyncio.Lock())
        async with lock:
            current = self._connections.get(config.id)
            if current is not None and current.config.version == config.version and current.alive:
                idle = time.monotonic() - current.last_used
                if idle < IDLE_PING_SECONDS or await current.ping():
                    return current
                logger.info("MCP server did not answer a ping; reconnecting", server=config.name)
            if current is not None:
                self._connections.pop(config.id, None)
                await current.close()
            fresh = await self.open_once(config)
            self._connections[config.id] = fresh
            return fresh

    # The timeout is the MCP request's own read timeout, under the caller's.
    async def call(
        self,
        config: ServerConfig,
        tool: str,
        arguments: dict[str, Any],
        timeout: float,  # noqa: ASYNC109
    ) -> CallToolResult:
        connection = await self.connection(config)
        try:
            return await connection.call_tool(tool, arguments, timeout)
        except ServerUnreachable:
            await self.drop(config.id, connection)
            raise

    async def drop(self, server_id: uuid.UUID, connection: McpConnection | None = None) -> None:
        """Closes the pooled connection of a server (only ``connection``, when given)."""
        current = self._connections.get(server_id)
        if current is None or (connection is not None and current is not connection):
            if connection is not None:
                await connection.close()
            return
        self._connections.pop(server_id, None)
        await current.close()

    async def close(self) -> None:
        self._closed = True
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
