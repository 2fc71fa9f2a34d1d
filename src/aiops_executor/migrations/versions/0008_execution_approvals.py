"""approvals of tool calls: execution_approvals, and the executions' awaiting_approval status

Revision ID: 0007_execution_approvals
Revises: 0006_tool_servers
Create Date: 2026-12-06 22:35:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_execution_approvals"
down_revision: str | None = "0006_tool_servers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A run waiting for an approval is unfinished too: an alert group's second notification starts no second run.
TRIGGER_INDEX = "uq_executions_trigger_key_unfinished"
UNFINISHED_BEFORE = "status IN ('pending', 'running') AND trigger_key IS NOT NULL"
UNFINISHED_CONDITION = "status IN ('pending', 'running', 'awaiting_approval') AND trigger_key IS NOT NULL"


def _trigger_index(batch_op: object, condition: str) -> None:
    batch_op.create_index(  # type: ignore[attr-defined]
        TRIGGER_INDEX,
        ["trigger_key"],
        unique=True,
        postgresql_where=sa.text(condition),
        sqlite_where=sa.text(condition),
    )


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        # "awaiting_approval" is longer than the 16 characters statuses had.
        batch_op.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32))
        batch_op.add_column(sa.Column("awaiting_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("waited_seconds", sa.Float(), server_default="0", nullable=False))
        batch_op.drop_index(TRIGGER_INDEX)
        _trigger_index(batch_op, UNFINISHED_CONDITION)

    op.create_table(
        "execution_approvals",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("interrupt_id", sa.String(length=64), nullable=False),
        sa.Column("tool", sa.String(length=200), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_execution_approvals_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_approvals")),
    )
    with op.batch_alter_table("execution_approvals", schema=None) as batch_op:
        batch_op.create_index("ix_execution_approvals_execution_id", ["execution_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_execution_approvals_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_table("execution_approvals")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index(TRIGGER_INDEX)
        _trigger_index(batch_op, UNFINISHED_BEFORE)
        batch_op.drop_column("waited_seconds")
        batch_op.drop_column("awaiting_since")
        batch_op.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16))
