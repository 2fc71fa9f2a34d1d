"""Webhooks that start executions (thin: the rules live in ``triggers.service``)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import status as http_status

from aiops_executor.auth.rate_limits import RATE_LIMITED_RESPONSE, ExecutionOperatorDep
from aiops_executor.core.deps import SessionDep
from aiops_executor.core.openapi import errors
from aiops_executor.services import ServiceContextDep
from aiops_executor.triggers import service
from aiops_executor.triggers.schemas import AlertmanagerPayload, WebhookResult

router = APIRouter(tags=["triggers"])


@router.post(
    "/webhooks/alertmanager",
    response_model=WebhookResult,
    status_code=http_status.HTTP_202_ACCEPTED,
    operation_id="receiveAlertmanagerWebhook",
    summary="Start an investigation from an Alertmanager notification",
    description=(
        "Takes Prometheus Alertmanager's webhook payload (version 4): one alert group per notification. A group "
        "with firing alerts starts one execution (in the background, like `POST /teams/{team_id}/executions`) "
        "whose task is the group's common `summary` and `description` annotations and whose context carries the "
        "labels, the alerts and `externalURL`. The team is `team_id`, else the one the alerts' `aiops_team` "
        "label names. A group whose execution is still pending or running, a resolved group, and a group whose "
        "team cannot run now start nothing; each is listed in `skipped` with its reason. Authenticates with a "
        "JWT, or an API key as Alertmanager's `http_config.authorization` credentials."
    ),
    responses={**errors({404: {"TEAM_NOT_FOUND": "no team has this team_id"}}), **RATE_LIMITED_RESPONSE},
)
async def receive_alertmanager_webhook(
    payload: AlertmanagerPayload,
    principal: ExecutionOperatorDep,
    session: SessionDep,
    context: ServiceContextDep,
    team_id: Annotated[
        uuid.UUID | None, Query(description="the team to run; default: the alerts' aiops_team label")
    ] = None,
) -> WebhookResult:
    return await service.handle_alertmanager(
        session,
        context.executions,
        context.telemetry.metrics,
        payload,
        team_id=team_id,
        actor=principal.actor,
        api_key_id=principal.api_key_id,
    )
