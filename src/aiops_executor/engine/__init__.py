"""Compiles a validated topology into a LangGraph graph and runs it. No FastAPI and no SQL in here.

team = CompiledTeam(spec, default_registry(), tool_settings)
run = ExecutionRun(team, RunRequest(execution_id, team_id, task), models)
async for event in run.events():
    ...
run.outcome
"""

from aiops_executor.engine.events import EventType, ExecutionEvent
from aiops_executor.engine.models import ModelSource, Usage
from aiops_executor.engine.results import NodeResult, NodeStatus, RunOutcome, RunStatus
from aiops_executor.engine.run import ExecutionRun, Resume, RunRequest
from aiops_executor.engine.team import CompiledTeam

__all__ = [
    "CompiledTeam",
    "EventType",
    "ExecutionEvent",
    "ExecutionRun",
    "ModelSource",
    "NodeResult",
    "NodeStatus",
    "Resume",
    "RunOutcome",
    "RunRequest",
    "RunStatus",
    "Usage",
]
