"""The built-in diagnostic tools, all read-only. Each module documents the node attributes it reads."""

from __future__ import annotations

from functools import lru_cache

from aiops_executor.tools.builtin.http import HTTP_CHECK
from aiops_executor.tools.builtin.mysql import MYSQL_DIAGNOSTICS
from aiops_executor.tools.builtin.network import DNS_LOOKUP, TCP_CHECK
from aiops_executor.tools.builtin.postgres import POSTGRES_DIAGNOSTICS
from aiops_executor.tools.builtin.prometheus import PROMETHEUS_QUERY
from aiops_executor.tools.builtin.redis import REDIS_INFO
from aiops_executor.tools.builtin.tls import TLS_CERTIFICATE
from aiops_executor.tools.registry import ToolRegistry, ToolSpec

BUILTIN_TOOLS: tuple[ToolSpec, ...] = (
    HTTP_CHECK,
    TCP_CHECK,
    DNS_LOOKUP,
    TLS_CERTIFICATE,
    PROMETHEUS_QUERY,
    POSTGRES_DIAGNOSTICS,
    MYSQL_DIAGNOSTICS,
    REDIS_INFO,
)


@lru_cache(maxsize=1)
def default_registry() -> ToolRegistry:
    """The process-wide registry holding every built-in tool."""
    registry = ToolRegistry()
    for spec in BUILTIN_TOOLS:
        registry.register(spec)
    return registry
