"""Listening sockets bound before a server announces itself, so that a busy port is reported as such."""

from __future__ import annotations

import errno
import socket

LISTEN_BACKLOG = 2048  # uvicorn's default


class CannotListen(OSError):
    """A port could not be bound; the message is one line naming the address and the option to change."""

    def __init__(self, host: str, port: int, cause: OSError, *, option: str = "--port") -> None:
        self.host, self.port, self.option = host, port, option
        if cause.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is already in use; pick another with {option}"
        else:
            reason = (cause.strerror or str(cause)).lower()
            message = f"cannot listen on {host}:{port}: {reason}"
        super().__init__(cause.errno, message)

    def __str__(self) -> str:
        return str(self.strerror)


def bind_listening_socket(host: str, port: int, *, option: str = "--port") -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port) and listening; ``CannotListen`` if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a restarted server need not wait for the old connections' TIME_WAIT to end.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise CannotListen(host, port, exc, option=option) from exc
    return sock
