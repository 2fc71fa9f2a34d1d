"""spend under control: budgets (with their periods' counters and the holds of calls in flight), the model-call
ledger behind usage reports, the API key that started a run, and endpoints' rpm/tpm limits

Revision ID: 0009_spend_controls
Revises: 0007_execution_approvals
Create Date: 2026-12-08 01:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_spend_controls"
down_revision: str | None = "0007_execution_approvals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(precision=20, scale=10)


def upgrade() -> None:
    with op.batch_alter_table("provider_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("tpm", sa.Integer(), nullable=True))

    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_key_id", sa.Uuid(), nullable=True))

    op.create_table(
        "budgets",
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("scope_id", sa.Uuid(), nullable=True),
        sa.Column("limit_usd", MONEY, nullable=True),
        sa.Column("limit_tokens", sa.BigInteger(), nullable=True),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("soft_limit_percent", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_budgets_scope", "budgets", ["scope", "scope_id"])

    # One row per budget and period: what the period's recorded calls spent, whether its soft limit was
    # announced, and whether a call was refused for want of budget (then no run starts until it resets or its
    # limits change). Admission locks it, so two processes cannot both spend the last dollar.
    op.create_table(
        "budget_periods",
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_usd", MONEY, nullable=False),
        sa.Column("spent_tokens", sa.BigInteger(), nullable=False),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.Column("exhausted", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["budget_id"], ["budgets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("budget_id", "period_start"),
    )

    # What each model call in flight may still cost, held against a budget until the call has been counted.
    # A hold whose process died expires on its own.
    op.create_table(
        "budget_holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("usd", MONEY, nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["budget_id"], ["budgets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_budget_holds_budget_period", "budget_holds", ["budget_id", "period_start"])
    op.create_index("ix_budget_holds_expires_at", "budget_holds", ["expires_at"])

    # Every successful model call, as the provider reported it: the source of usage reports and of budgets'
    # spend. Kept apart from executions (no foreign key), so that it outlives their retention.
    op.create_table(
        "model_calls",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("team_id", sa.Uuid(), nullable=True),
        sa.Column("api_key_id", sa.Uuid(), nullable=True),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("provider_name", sa.String(length=100), nullable=False),
        sa.Column("model_id", sa.String(length=200), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("cost", MONEY, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_model_calls_created_at", "model_calls", ["created_at"])
    op.create_index("ix_model_calls_team_created", "model_calls", ["team_id", "created_at"])
    op.create_index("ix_model_calls_api_key_created", "model_calls", ["api_key_id", "created_at"])
    op.create_index("ix_model_calls_provider_created", "model_calls", ["provider_id", "created_at"])
    op.create_index("ix_model_calls_execution", "model_calls", ["execution_id"])


def downgrade() -> None:
    op.drop_table("model_calls")
    op.drop_table("budget_holds")
    op.drop_table("budget_periods")
    op.drop_index("ix_budgets_scope", table_name="budgets")
    op.drop_table("budgets")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_column("api_key_id")
    with op.batch_alter_table("provider_endpoints", schema=None) as batch_op:
        batch_op.drop_column("tpm")
        batch_op.drop_column("rpm")
