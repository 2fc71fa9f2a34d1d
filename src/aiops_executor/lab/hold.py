"""A fault that needs a process to last: PostgreSQL connections held until none is left, or a table lock held in
an open transaction. It holds until it is stopped (``lab heal`` or ``lab down``).

Run: ``python -m aiops_executor.lab.hold connections|lock --dsn DSN``.
"""

from __future__ import annotations

import argparse
import asyncio

import asyncpg

MAX_CONNECTIONS = 200


async def hold_connections(dsn: str) -> None:
    """Opens connections until the server refuses one for want of slots, and keeps them."""
    held: list[asyncpg.Connection] = []
    while len(held) < MAX_CONNECTIONS:
        try:
            held.append(await asyncpg.connect(dsn, timeout=5))
        except asyncpg.TooManyConnectionsError:
            break
    print(f"holding {len(held)} connections", flush=True)
    await asyncio.Event().wait()


async def hold_lock(dsn: str) -> None:
    """Locks the shop's orders table in a transaction left open: the shop's writes wait behind it."""
    connection = await asyncpg.connect(dsn, timeout=5)
    await connection.execute("BEGIN")
    await connection.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    print("holding the lock on orders", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Hold a PostgreSQL fault of the incident lab.")
    parser.add_argument("what", choices=["connections", "lock"])
    parser.add_argument("--dsn", required=True)
    options = parser.parse_args()
    hold = hold_connections if options.what == "connections" else hold_lock
    asyncio.run(hold(options.dsn))


if __name__ == "__main__":
    main()
