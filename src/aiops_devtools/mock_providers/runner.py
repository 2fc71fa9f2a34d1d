"""Run a mock provider server on a real TCP port, in a background thread or in the foreground.

Typical test use::

    with MockLLMServer("openai") as server:
        llm = ChatOpenAI(base_url=server.client_base_url, api_key=server.api_key, model="gpt-4o-mini")
        server.behaviour.queue_text("hello")
        assert llm.invoke("hi").content == "hello"

``async with MockLLMServer(...)`` works the same from async tests (start and stop run off the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Literal, Self

import uvicorn
from starlette.applications import Starlette

from .anthropic_server import create_anthropic_app
from .behaviour import DEFAULT_API_KEY, MockBehaviour, ProviderKind
from .openai_server import create_openai_app

logger = logging.getLogger(__name__)

DEFAULT_PORTS: dict[ProviderKind, int] = {"openai": 8811, "anthropic": 8812}


def create_mock_app(kind: ProviderKind, behaviour: MockBehaviour | None = None) -> Starlette:
    """The ASGI app for ``kind`` ("openai" -- which also serves the Azure paths -- or "anthropic")."""
    if kind == "openai":
        return create_openai_app(behaviour)
    if kind == "anthropic":
        return create_anthropic_app(behaviour)
    msg = f"unknown mock server kind {kind!r}; expected 'openai' or 'anthropic'"
    raise ValueError(msg)


def _check_kind(kind: str) -> ProviderKind:
    if kind == "openai":
        return "openai"
    if kind == "anthropic":
        return "anthropic"
    msg = f"unknown mock server kind {kind!r}; expected 'openai' or 'anthropic'"
    raise ValueError(msg)


class MockLLMServer:
    """A mock provider server running under uvicorn in a daemon thread.

    ``port=0`` picks a free port. After :meth:`start` (or entering the context manager) ``base_url`` is
    ``http://127.0.0.1:<port>``; ``client_base_url`` is what to pass as ``base_url`` to the provider client
    (``.../v1`` for OpenAI, the bare URL for Anthropic); ``azure_endpoint`` is for ``AzureChatOpenAI``.
    """

    def __init__(
        self,
        kind: Literal["openai", "anthropic"] = "openai",
        *,
        behaviour: MockBehaviour | None = None,
        keys: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        startup_timeout: float = 10.0,
    ) -> None:
        self.kind: ProviderKind = _check_kind(kind)
        self.behaviour = behaviour if behaviour is not None else MockBehaviour(kind=kind, keys=keys, models=models)
        self.app = create_mock_app(self.kind, self.behaviour)
        self.host = host
        self._requested_port = port
        self._log_level = log_level
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # -- addresses -------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            msg = "the mock server is not running"
            raise RuntimeError(msg)
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def client_base_url(self) -> str:
        """``base_url`` for the provider SDK / LangChain class of this kind."""
        return f"{self.base_url}/v1" if self.kind == "openai" else self.base_url

    @property
    def azure_endpoint(self) -> str:
        return self.base_url

    @property
    def api_key(self) -> str:
        """A key the server currently accepts (the default one if it is still valid)."""
        keys = sorted(self.behaviour.valid_keys)
        if DEFAULT_API_KEY in keys or not keys:
            return DEFAULT_API_KEY
        return keys[0]

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._port is not None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving and block until the port is bound; returns ``base_url``."""
        if self._thread is not None:
            return self.base_url
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self._requested_port,
            log_level=self._log_level,
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"mock-{self.kind}-llm", daemon=True)
        self._server, self._thread = server, thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._server, self._thread = None, None
                server.should_exit = True
                msg = f"mock {self.kind} server failed to start on {self.host}:{self._requested_port}"
                raise RuntimeError(msg)
            time.sleep(0.005)
        sockets = server.servers[0].sockets
        self._port = int(sockets[0].getsockname()[1])
        return self.base_url

    def stop(self, timeout: float = 5.0) -> None:
        """Ask uvicorn to exit and wait for the thread (open streams are cut after ``timeout``)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._server, self._thread, self._port = None, None, None

    async def astart(self) -> str:
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.astart()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.astop()


def start_mock_server(
    kind: Literal["openai", "anthropic"] = "openai",
    *,
    behaviour: MockBehaviour | None = None,
    keys: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    port: int = 0,
) -> MockLLMServer:
    """Start a background server and return it (call ``.stop()`` when done)."""
    server = MockLLMServer(kind, behaviour=behaviour, keys=keys, models=models, port=port)
    server.start()
    return server


def serve(
    kind: str = "openai",
    host: str = "127.0.0.1",
    port: int | None = None,
    keys: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    *,
    log_level: str = "info",
    allow_any_key: bool = False,
    latency_ms: float = 0.0,
    admin_token: str | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve a mock provider in the foreground until interrupted (for ``aiops-executor mock-llm``).

    ``port=None`` uses the kind's default port (8811 for OpenAI, 8812 for Anthropic). Without ``keys`` the
    only valid key is ``mock-api-key``. It can be steered at run time through ``POST /_mock/behaviour``.
    ``sock``: a socket the caller already bound to ``host:port`` (so that it could report a busy port itself).
    """
    checked = _check_kind(kind)
    behaviour = MockBehaviour(
        kind=checked,
        keys=keys if keys else None,
        models=models if models else None,
        allow_any_key=allow_any_key,
        latency_ms=latency_ms,
        admin_token=admin_token,
    )
    app = create_mock_app(checked, behaviour)
    bound_port = DEFAULT_PORTS[checked] if port is None else port
    suffix = "/v1" if checked == "openai" else ""
    logger.info(
        "mock %s server: base URL http://%s:%d%s, %d valid key(s), models %s",
        checked,
        host,
        bound_port,
        suffix,
        len(behaviour.valid_keys),
        ", ".join(behaviour.models),
    )
    if sock is None:
        uvicorn.run(app, host=host, port=bound_port, log_level=log_level, lifespan="off", ws="none")
    else:
        server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="off", ws="none"))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how it is stopped, as with uvicorn.run
            server.run(sockets=[sock])
