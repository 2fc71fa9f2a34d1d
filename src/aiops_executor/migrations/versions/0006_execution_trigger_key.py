"""executions.trigger_key: at most one unfinished run per trigger (an Alertmanager alert group)

A partial unique index over the unfinished statuses makes the database refuse a second pending or running
execution for the same trigger, on SQLite and PostgreSQL alike, whatever the processes race to do.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNFINISHED_CONDITION = "status IN ('pending', 'running') AND trigger_key IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger_key", sa.String(length=64), nullable=True))
        batch_op.create_index(
            "uq_executions_trigger_key_unfinished",
            ["trigger_key"],
            unique=True,
            postgresql_where=sa.text(UNFINISHED_CONDITION),
            sqlite_where=sa.text(UNFINISHED_CONDITION),
        )


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("uq_executions_trigger_key_unfinished")
        batch_op.drop_column("trigger_key")
