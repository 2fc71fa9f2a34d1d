"""Re-wrap every stored data key under the current master key.

Secrets themselves are not re-encrypted, so rotation is cheap and safe to run while the service is
serving: every process holds the whole keyring, and each row switches from the old key id to the new
one in a single conditional UPDATE, which loses nothing if a concurrent write replaced the value.

The caller passes the complete metadata (``aiops_executor.models_registry.metadata``): core knows no domain's
tables.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Column, MetaData, Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from aiops_executor.core.crypto import DecryptionError, EnvelopeCipher, associated_data

ENCRYPTED_SUFFIX = "_encrypted"
BATCH_SIZE = 200


@dataclass
class RotationReport:
    rewrapped: int = 0
    already_current: int = 0
    failed: list[str] = field(default_factory=list)
    key_ids_in_use: Counter[str] = field(default_factory=Counter)


def encrypted_columns(metadata: MetaData) -> list[tuple[Table, Column[str]]]:
    return [
        (table, column)
        for table in metadata.sorted_tables
        for column in table.columns
        if column.name.endswith(ENCRYPTED_SUFFIX)
    ]


async def rotate_master_key(engine: AsyncEngine, cipher: EnvelopeCipher, metadata: MetaData) -> RotationReport:
    report = RotationReport()
    for table, column in encrypted_columns(metadata):
        last_id = None
        while True:
            query = select(table.c.id, column).where(column.is_not(None)).order_by(table.c.id).limit(BATCH_SIZE)
            if last_id is not None:
                query = query.where(table.c.id > last_id)
            async with engine.connect() as connection:
                rows = (await connection.execute(query)).all()
            if not rows:
                break
            last_id = rows[-1][0]
            async with engine.begin() as connection:
                for row_id, stored in rows:
                    aad = associated_data(table.name, column.name, row_id)
                    try:
                        rewrapped = cipher.rewrap(stored, aad)
                    except DecryptionError as exc:
                        report.failed.append(f"{table.name}.{column.name} {row_id}: {exc}")
                        report.key_ids_in_use[_key_id_or_unknown(stored)] += 1
                        continue
                    if rewrapped == stored:
                        report.already_current += 1
                    else:
                        result = await connection.execute(
                            update(table).where(table.c.id == row_id, column == stored).values({column.name: rewrapped})
                        )
                        if result.rowcount:
                            report.rewrapped += 1
                    report.key_ids_in_use[cipher.current_key_id] += 1
    return report


def _key_id_or_unknown(stored: str) -> str:
    try:
        return EnvelopeCipher.key_id_of(stored)
    except DecryptionError:
        return "<unreadable>"
