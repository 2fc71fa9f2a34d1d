"""The incident lab's network path to a dependency: a TCP proxy that can add latency.

Everything that reaches the lab's PostgreSQL -- the shop, the exporter, the team's diagnostics -- goes through
this proxy, as it would through a network. The ``slow_dependency`` fault sets a delay that each chunk of the
server's answers waits before it is passed on; healing sets it back to 0. The delay is read from a file (in
milliseconds), re-read when it changes, so a fault needs no control channel.

Run: ``python -m aiops_executor.lab.proxy --listen-port P --target-port T --delay-file FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

CHUNK_BYTES = 64 * 1024


class DelayFile:
    """The delay in the file, cached by the file's modification time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: float | None = None
        self._seconds = 0.0

    def seconds(self) -> float:
        try:
            stamp = self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._seconds = max(0.0, float(self.path.read_text().strip() or 0) / 1000)
            except ValueError:
                self._seconds = 0.0
        return self._seconds


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: DelayFile | None) -> None:
    try:
        while chunk := await reader.read(CHUNK_BYTES):
            if delay is not None and (seconds := delay.seconds()):
                await asyncio.sleep(seconds)
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(host: str, listen_port: int, target_port: int, delay: DelayFile) -> None:
    async def connect(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer, None), _pipe(server_reader, client_writer, delay))

    server = await asyncio.start_server(connect, host, listen_port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="The incident lab's TCP proxy with settable latency.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--delay-file", type=Path, required=True)
    options = parser.parse_args()
    asyncio.run(serve(options.host, options.listen_port, options.target_port, DelayFile(options.delay_file)))


if __name__ == "__main__":
    main()
