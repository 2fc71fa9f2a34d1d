"""Imports every ORM module so ``Base.metadata`` is complete (Alembic autogenerate, tests)."""

from aiops_executor.audit import models as audit_models  # noqa: F401
from aiops_executor.auth import models as auth_models  # noqa: F401
from aiops_executor.core.db import Base
from aiops_executor.executions import models as executions_models  # noqa: F401
from aiops_executor.llm import models as llm_models  # noqa: F401
from aiops_executor.teams import models as teams_models  # noqa: F401

metadata = Base.metadata
