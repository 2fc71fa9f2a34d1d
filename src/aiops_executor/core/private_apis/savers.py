"""Items 4 and 5 of the package's list: the checkpoint savers' own tables, which the group-commit savers write
(executions/checkpoints.py) and which Alembic leaves alone (models_registry.py)."""

__all__ = ["POSTGRES_SAVER_TABLES", "SQLITE_SAVER_COLUMNS"]

# Owned and versioned by the PostgreSQL saver's own setup (run by ``migrate``), not by Alembic.
POSTGRES_SAVER_TABLES = frozenset({"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_migrations"})

# The columns AsyncSqliteSaver creates and fills, in the order the group-commit saver writes them.
SQLITE_SAVER_COLUMNS = {
    "checkpoints": (
        "thread_id",
        "checkpoint_ns",
        "checkpoint_id",
        "parent_checkpoint_id",
        "type",
        "checkpoint",
        "metadata",
    ),
    "writes": (
        "thread_id",
        "checkpoint_ns",
        "checkpoint_id",
        "task_id",
        "task_path",
        "idx",
        "channel",
        "type",
        "value",
    ),
}
