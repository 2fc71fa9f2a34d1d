"""Imports every ORM module so ``Base.metadata`` is complete (Alembic autogenerate, tests), and tells the
service's own tables from the ones other libraries own in the same database."""

from aiops_executor.audit import models as audit_models  # noqa: F401
from aiops_executor.auth import models as auth_models  # noqa: F401
from aiops_executor.core.db import Base
from aiops_executor.core.private_apis.savers import POSTGRES_SAVER_TABLES
from aiops_executor.executions import models as executions_models  # noqa: F401
from aiops_executor.llm import models as llm_models  # noqa: F401
from aiops_executor.spend import models as spend_models  # noqa: F401
from aiops_executor.teams import models as teams_models  # noqa: F401
from aiops_executor.tool_servers import models as tool_servers_models  # noqa: F401

metadata = Base.metadata

# procrastinate's job queue (PostgreSQL): its schema comes from the package (migration 0005), not from models.
QUEUE_TABLE_PREFIX = "procrastinate_"


def is_service_schema(name: str | None, type_: str, *_: object) -> bool:
    """Alembic's ``include_name``: everything but the checkpointer's and the job queue's tables."""
    if type_ != "table" or name is None:
        return True
    return name not in POSTGRES_SAVER_TABLES and not name.startswith(QUEUE_TABLE_PREFIX)
