"""Serving the API from the command line (``serve``, ``demo``) on a socket the caller has already bound.

uvicorn runs an app's lifespan itself and, when start-up fails, logs the traceback and exits. ``AppServer``
runs the lifespan in its own start-up instead, so a failure (database down, not migrated ...) propagates as
the exception it is, for the command line's error handler to explain in one line; and it tells the caller
once it is listening, which is only true after the app has started.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette


class AppServer(uvicorn.Server):
    def __init__(self, app: Starlette, *, log_level: str = "warning", on_listening: Callable[[int], None]) -> None:
        super().__init__(uvicorn.Config(app, lifespan="off", log_level=log_level))
        self.app = app
        self.on_listening = on_listening
        self._app_lifespan = contextlib.AsyncExitStack()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        state = await self._app_lifespan.enter_async_context(self.app.router.lifespan_context(self.app))
        if state:
            self.lifespan.state.update(state)
        try:
            await super().startup(sockets=sockets)
        except BaseException:
            await self._app_lifespan.aclose()
            raise
        self.on_listening(self.bound_port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets=sockets)
        finally:
            await self._app_lifespan.aclose()

    @property
    def bound_port(self) -> int:
        return int(self.servers[0].sockets[0].getsockname()[1])
