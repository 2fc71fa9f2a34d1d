"""Alertmanager notifications become executions: one per alert group with firing alerts.

Rules (contract: Triggers and imports):

- The team is the ``team_id`` parameter, else the one the firing alerts name in their ``aiops_team`` label
  (a team name or id). A group whose firing alerts name different teams is skipped (``AMBIGUOUS_TEAM``):
  Alertmanager's route should group by ``aiops_team``.
- The task is the group's common ``summary`` and ``description`` annotations; without a common summary, the
  alerts' own summaries (or names) are listed. The context carries the labels, every alert of the group and
  ``externalURL``, so the agents can see what fired, where, and since when.
- A group whose execution is still pending or running starts no second one (``TRIGGER_RUNNING``): the run
  is started through ``executions.service.start_execution`` with the group key as its trigger, and the
  database's unique index holds that rule when deliveries race. Every other refusal of that service (the team
  is already running, is not active, no longer validates) is reported as the skip's reason, never as an error
  of the whole notification, so Alertmanager does not retry a delivery that cannot succeed.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core.errors import AppError
from aiops_executor.core.metrics import Metrics
from aiops_executor.executions import service as executions_service
from aiops_executor.executions.manager import ExecutionManager
from aiops_executor.executions.schemas import ExecutionInput, ExecutionRequest
from aiops_executor.teams import service as teams_service
from aiops_executor.teams.models import Team
from aiops_executor.triggers.schemas import (
    TEAM_LABEL,
    Alert,
    AlertmanagerPayload,
    SkippedGroup,
    SkipReason,
    StartedExecution,
    WebhookResult,
)

logger = structlog.get_logger(__name__)

SOURCE = "alertmanager"
MAX_TASK_CHARS = 20_000
MAX_LISTED_ALERTS = 20
# Alertmanager's "no end yet" (0001-01-01T00:00:00Z) is not a time anyone should read.
_NO_END_YEAR = 1


class _Skip(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def alert_name(alert: Alert) -> str:
    return alert.labels.get("alertname", "") or "(unnamed alert)"


def build_task(payload: AlertmanagerPayload, firing: list[Alert]) -> str:
    """What the team is asked: the common summary and description, else the firing alerts one per line."""
    summary = payload.common_annotations.get("summary", "").strip()
    description = payload.common_annotations.get("description", "").strip()
    lines: list[str] = []
    if not summary:
        names = sorted({alert_name(a) for a in firing})
        summary = f"Investigate {len(firing)} firing alert(s): {', '.join(names)}."
        for alert in firing[:MAX_LISTED_ALERTS]:
            text = (alert.annotations.get("summary") or alert.annotations.get("description") or "").strip()
            where = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k != "alertname")
            lines.append(f"- {alert_name(alert)} ({where}){': ' + text if text else ''}")
        if len(firing) > MAX_LISTED_ALERTS:
            lines.append(f"- ... and {len(firing) - MAX_LISTED_ALERTS} more (see the context)")
    task = "\n\n".join(part for part in (summary, "\n".join(lines), description) if part)
    return task if len(task) <= MAX_TASK_CHARS else task[: MAX_TASK_CHARS - 3] + "..."


def _alert_context(alert: Alert) -> dict[str, Any]:
    ended = alert.ends_at is not None and alert.ends_at.year > _NO_END_YEAR
    return {
        "status": alert.status.value,
        "labels": alert.labels,
        "annotations": alert.annotations,
        "starts_at": alert.starts_at.isoformat() if alert.starts_at is not None else None,
        "ends_at": alert.ends_at.isoformat() if ended and alert.ends_at is not None else None,
        "generator_url": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def build_context(payload: AlertmanagerPayload) -> dict[str, Any]:
    """What the agents are shown about the alert group (``input.context`` of the execution)."""
    return {
        "source": SOURCE,
        "group_key": payload.group_key,
        "status": payload.status.value,
        "receiver": payload.receiver,
        "external_url": payload.external_url,
        "group_labels": payload.group_labels,
        "labels": payload.common_labels,
        "annotations": payload.common_annotations,
        "alerts": [_alert_context(alert) for alert in payload.alerts],
        "truncated_alerts": payload.truncated_alerts,
    }


async def _team_by_label(session: AsyncSession, firing: list[Alert], common: dict[str, str]) -> Team:
    names = (
        {common[TEAM_LABEL]}
        if common.get(TEAM_LABEL)
        else {a.labels[TEAM_LABEL] for a in firing if a.labels.get(TEAM_LABEL)}
    )
    if not names:
        raise _Skip(
            SkipReason.NO_TEAM,
            f"no team: the webhook has no team_id parameter and the alerts have no {TEAM_LABEL!r} label",
        )
    if len(names) > 1:
        raise _Skip(
            SkipReason.AMBIGUOUS_TEAM,
            f"the firing alerts name several teams in {TEAM_LABEL!r} ({', '.join(sorted(names))}); "
            f"group by {TEAM_LABEL} in the Alertmanager route, or pass team_id",
        )
    (name,) = names
    team = await teams_service.find_team(session, name)
    if team is None:
        raise _Skip(SkipReason.TEAM_NOT_FOUND, f"no team named {name!r} (the alerts' {TEAM_LABEL!r} label)")
    return team


async def handle_alertmanager(
    session: AsyncSession,
    manager: ExecutionManager,
    metrics: Metrics,
    payload: AlertmanagerPayload,
    *,
    team_id: uuid.UUID | None,
    actor: str,
    api_key_id: uuid.UUID | None = None,
) -> WebhookResult:
    """Starts the execution of one Alertmanager notification's alert group, or says why it starts none.
    An unknown ``team_id`` is the caller's configuration error: 404 ``TEAM_NOT_FOUND``."""
    group_key = payload.group_key
    firing = payload.firing
    started: list[StartedExecution] = []
    skipped: list[SkippedGroup] = []
    if team_id is not None:
        # Before anything else: a receiver pointing at a team that does not exist must fail loudly.
        team: Team | None = await teams_service.get_team_row(session, team_id)
    else:
        team = None
    await session.commit()
    try:
        if not firing:
            raise _Skip(
                SkipReason.RESOLVED, f"no firing alerts (the group is {payload.status.value}): nothing to investigate"
            )
        if team is None:
            team = await _team_by_label(session, firing, payload.common_labels)
            await session.commit()
        request = ExecutionRequest(
            input=ExecutionInput(task=build_task(payload, firing), context=build_context(payload))
        )
        try:
            execution = await executions_service.start_execution(
                session,
                manager,
                team.id,
                request,
                actor=actor,
                api_key_id=api_key_id,
                trigger=executions_service.trigger_key(SOURCE, group_key),
            )
        except executions_service.TriggerRunning as exc:
            await session.rollback()
            skipped.append(
                SkippedGroup(
                    group_key=group_key,
                    reason=f"an execution for this alert group is still pending or running: {exc.execution_id}",
                    code=exc.error_code,
                    execution_id=exc.execution_id,
                )
            )
        except AppError as exc:
            await session.rollback()
            raise _Skip(exc.error_code, exc.message) from None
        else:
            started.append(StartedExecution(execution_id=execution.id, group_key=group_key, team_id=team.id))
    except _Skip as skip:
        skipped.append(SkippedGroup(group_key=group_key, reason=skip.reason, code=skip.code))
    for outcome in ["started"] * len(started) + [skip.code for skip in skipped]:
        metrics.alert_group(outcome)
    logger.info(
        "alertmanager notification",
        group_key=group_key,
        status=payload.status.value,
        alerts=len(payload.alerts),
        firing=len(firing),
        started=[str(s.execution_id) for s in started],
        skipped=[s.code for s in skipped],
    )
    return WebhookResult(executions=started, skipped=skipped)
