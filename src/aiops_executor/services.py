"""Wires the domain services onto the core context.

``core.context.AppContext`` holds only core resources (settings, database, keys, cache, telemetry, rate
limits). ``ServiceContext`` adds the process's domain services, built on first use: the model runtime and the
execution manager. The app and the CLI build a ``ServiceContext``; code that needs those services asks for one
(``ServiceContextDep`` in endpoints).
"""

from __future__ import annotations

import functools
from functools import cached_property
from typing import Annotated

from fastapi import Depends

from aiops_executor.core.context import AppContext
from aiops_executor.core.deps import ContextDep
from aiops_executor.core.egress import policy_for
from aiops_executor.executions.manager import ExecutionManager
from aiops_executor.llm.runtime.service import ModelRuntime
from aiops_executor.spend.ledger import SpendLedger
from aiops_executor.tool_servers import service as tool_server_service
from aiops_executor.tool_servers.client import ToolServerPool


class ServiceContext(AppContext):
    """The core context plus the domain services of one service process (``ServiceContext.build(settings)``
    returns one: ``AppContext.build`` builds the class it is called on)."""

    @cached_property
    def model_runtime(self) -> ModelRuntime:
        """Turns stored LLM configuration into chat models; holds the process's failover state. Every call
        passes the spend ledger (budgets, usage)."""
        return ModelRuntime(self, gate=self.spend_ledger)

    @cached_property
    def spend_ledger(self) -> SpendLedger:
        """Admits model calls against budgets and records each one for usage reports."""
        return SpendLedger(
            self.database.sessionmaker,
            self.config_cache,
            self.telemetry.metrics,
            hold_seconds=self.settings.budget_hold_seconds,
        )

    @cached_property
    def executions(self) -> ExecutionManager:
        """Runs executions in the background of this process."""
        return ExecutionManager(
            settings=self.settings,
            sessionmaker=self.database.sessionmaker,
            telemetry=self.telemetry,
            model_runtime=self.model_runtime,
            spend=self.spend_ledger,
            server_tools=functools.partial(
                tool_server_service.run_tool_specs, self.database.sessionmaker, self, self.tool_servers
            ),
        )

    @cached_property
    def tool_servers(self) -> ToolServerPool:
        """This process's connections to MCP tool servers (checked against the egress policy)."""
        return ToolServerPool(
            policy=policy_for(self.settings), connect_timeout=self.settings.tool_server_connect_timeout_seconds
        )

    async def close(self) -> None:
        if "tool_servers" in self.__dict__:  # built on first use; stops the stdio servers it started
            await self.tool_servers.close()
        await super().close()

    async def queue_status(self) -> dict[str, int] | None:
        queue = self.executions.queue
        return None if queue is None else await queue.status()


def get_service_context(context: ContextDep) -> ServiceContext:
    if not isinstance(context, ServiceContext):
        raise TypeError("the app's context is not a ServiceContext; build it with ServiceContext.build")
    return context


ServiceContextDep = Annotated[ServiceContext, Depends(get_service_context)]
