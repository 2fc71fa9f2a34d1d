"""job queue: procrastinate's schema, on PostgreSQL only

Runs wait in procrastinate's job queue when the database is PostgreSQL (the embedded SQLite default runs them
in its one process). The schema is procrastinate's own, from the installed package: pyproject pins the 3.10
series, and a later series brings its own migration files, applied by a later revision.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

from alembic import op
from procrastinate.schema import SchemaManager
from sqlalchemy.engine import Connection
from sqlalchemy.util import await_only

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROP_PROCRASTINATE = r"""
DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs,
    procrastinate_workers CASCADE;
DO $$
DECLARE f record;
BEGIN
    FOR f IN SELECT oid::regprocedure AS signature FROM pg_proc WHERE proname LIKE 'procrastinate\_%' LOOP
        EXECUTE 'DROP FUNCTION IF EXISTS ' || f.signature || ' CASCADE';
    END LOOP;
END $$;
DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type, procrastinate_job_status CASCADE;
"""


def _execute_script(bind: Connection, script: str) -> None:
    """Several statements with plpgsql bodies and no parameters: asyncpg runs them only outside a prepared
    statement (its simple query protocol), in the migration's transaction."""
    if bind.dialect.driver == "asyncpg":
        driver_connection = bind.connection.driver_connection
        assert driver_connection is not None
        await_only(driver_connection.execute(script))
    else:
        bind.exec_driver_sql(script)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _execute_script(bind, SchemaManager.get_schema())


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _execute_script(bind, DROP_PROCRASTINATE)
