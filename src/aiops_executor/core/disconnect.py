"""Blocking work for a request, in a worker thread, that stops when its client goes away.

A client that gives up (a timeout, Ctrl-C) reads no answer, so work done for it after that is wasted CPU. The
work gets a ``stopped()`` to consult between its steps; once the client has disconnected it turns true, the
work raises ``ClientGone`` and the request ends with 499 (the status proxies log for a request its client
closed), which reaches no one but the request log and the metrics.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from aiops_executor.core.errors import AppError

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499


class ClientGone(AppError):
    status_code = CLIENT_CLOSED_REQUEST
    error_code = "CLIENT_CLOSED_REQUEST"

    def __init__(self) -> None:
        super().__init__("the client closed the request; its work was stopped")


async def _wait_for_disconnect(request: Request, gone: threading.Event) -> None:
    # The body has been read, so the next message the server has for this request is its disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def run_until_disconnected(request: Request, work: Callable[[Callable[[], bool]], T]) -> T:
    """``work(stopped)`` in the thread pool, so the event loop serves other requests meanwhile; ``stopped()``
    is true once the client has disconnected."""
    gone = threading.Event()
    watcher = asyncio.create_task(_wait_for_disconnect(request, gone))
    try:
        return await run_in_threadpool(work, gone.is_set)
    finally:
        watcher.cancel()
