"""teams and the configured models they reference

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:10:12.737913
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("max_iterations", sa.Integer(), nullable=False),
        sa.Column("topology", sa.JSON(), nullable=False),
        sa.Column("node_count", sa.Integer(), nullable=False),
        sa.Column("agent_count", sa.Integer(), nullable=False),
        sa.Column("edge_count", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_teams_name")),
    )
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_teams_status"), ["status"], unique=False)

    op.create_table(
        "team_model_references",
        sa.Column("team_id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("model_row_id", sa.Uuid(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_row_id"],
            ["llm_models.id"],
            name=op.f("fk_team_model_references_model_row_id_llm_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["providers.id"],
            name=op.f("fk_team_model_references_provider_id_providers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_team_model_references_team_id_teams"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_team_model_references")),
        sa.UniqueConstraint("team_id", "model_row_id", name=op.f("uq_team_model_references_team_id_model_row_id")),
    )
    with op.batch_alter_table("team_model_references", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_team_model_references_model_row_id"), ["model_row_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_team_model_references_provider_id"), ["provider_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("team_model_references", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_team_model_references_provider_id"))
        batch_op.drop_index(batch_op.f("ix_team_model_references_model_row_id"))

    op.drop_table("team_model_references")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_teams_status"))

    op.drop_table("teams")
