"""Alertmanager's webhook payload (version 4) and the webhook's answer.

The payload models follow Alertmanager's documented webhook format: ``version``, ``groupKey``,
``truncatedAlerts``, ``status``, ``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
``externalURL`` and ``alerts`` (each with ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``generatorURL``, ``fingerprint``). Fields a later Alertmanager adds are ignored rather than refused, so an
upgrade of Alertmanager does not stop its notifications; what is there is checked strictly. Only what the service
needs is required -- the alerts: look-alikes of Alertmanager (and some of its test fixtures) leave out an alert's
``status`` (it takes the group's, else ``endsAt`` says), the group's ``status`` (firing when an alert is),
``version`` (4) or ``groupKey`` (made from the group's labels), or ``startsAt``; a notification answered 4xx is
dropped by Alertmanager without a retry.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator

from aiops_executor.core.json_types import JSON_INT, JsonDatetime
from aiops_executor.core.text import FREE_TEXT, NAME_TEXT

# Prometheus label names and values are arbitrary UTF-8 (names since Prometheus 3); what the database and
# the prompts cannot take (NUL, control characters in names) is refused.
LabelName = Annotated[str, StringConstraints(min_length=1, max_length=1000), NAME_TEXT]
LabelValue = Annotated[str, StringConstraints(max_length=20_000), FREE_TEXT]
MAX_LABELS = 500
# Said explicitly: pydantic would document a key pattern as ``patternProperties``, which leaves the values of
# any other key unconstrained in the document (and clients, and fuzzers, would believe them allowed).
_LABELS_SCHEMA = {
    "type": "object",
    "maxProperties": MAX_LABELS,
    "propertyNames": {
        "type": "string",
        "minLength": 1,
        "maxLength": 1000,
        "pattern": f"^[^{NAME_TEXT.forbidden[1:-1]}]*$",
    },
    "additionalProperties": {
        "type": "string",
        "maxLength": 20_000,
        "pattern": f"^[^{FREE_TEXT.forbidden[1:-1]}]*$",
    },
}
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=MAX_LABELS), WithJsonSchema(_LABELS_SCHEMA)]
Url = Annotated[str, StringConstraints(max_length=4000), NAME_TEXT]

MAX_ALERTS = 1000
TEAM_LABEL = "aiops_team"


class AlertStatus(StrEnum):
    firing = "firing"
    resolved = "resolved"


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Alert(_Tolerant):
    status: AlertStatus
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    starts_at: JsonDatetime | None = Field(default=None, alias="startsAt")
    # Alertmanager sends 0001-01-01T00:00:00Z for an alert that has not ended.
    ends_at: JsonDatetime | None = Field(default=None, alias="endsAt")
    generator_url: Url = Field(default="", alias="generatorURL")
    fingerprint: Annotated[str, StringConstraints(max_length=200), NAME_TEXT] = ""


class AlertmanagerPayload(_Tolerant):
    """One notification of Alertmanager's webhook receiver: one alert group."""

    version: Literal["4"] = Field(default="4", description="the webhook payload version; only 4 exists")
    group_key: Annotated[str, StringConstraints(min_length=1, max_length=20_000), FREE_TEXT] = Field(
        alias="groupKey", description="identifies the alert group across notifications"
    )
    truncated_alerts: Annotated[int, Field(ge=0), JSON_INT] = Field(default=0, alias="truncatedAlerts")
    status: AlertStatus
    receiver: Annotated[str, StringConstraints(max_length=1000), NAME_TEXT] = ""
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: Url = Field(default="", alias="externalURL")
    alerts: list[Alert] = Field(max_length=MAX_ALERTS)

    @model_validator(mode="before")
    @classmethod
    def _complete(cls, data: Any) -> Any:
        """Fills in what a look-alike left out (see the module's docstring); what is there is not changed."""
        if not isinstance(data, dict) or not isinstance(data.get("alerts"), list):
            return data
        data = dict(data)
        group_status = data.get("status")
        alerts = []
        for alert in data["alerts"]:
            if isinstance(alert, dict) and "status" not in alert:
                known = group_status in (AlertStatus.firing.value, AlertStatus.resolved.value)
                alert = {**alert, "status": group_status if known else _status_by_end(alert.get("endsAt"))}
            alerts.append(alert)
        data["alerts"] = alerts
        if "status" not in data:
            firing = any(isinstance(a, dict) and a.get("status") == AlertStatus.firing.value for a in alerts)
            data["status"] = (AlertStatus.firing if firing else AlertStatus.resolved).value
        if "groupKey" not in data and "group_key" not in data:
            labels = data.get("groupLabels") or data.get("commonLabels") or {}
            data["groupKey"] = "{}:" + json.dumps(labels, sort_keys=True, default=str)
        return data

    @property
    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts if alert.status is AlertStatus.firing]


def _status_by_end(ends_at: Any) -> str:
    """An alert with no ``status``: firing unless its ``endsAt`` is a real time in the past."""
    if not isinstance(ends_at, str) or not ends_at or ends_at.startswith("0001-"):
        return AlertStatus.firing.value
    try:
        ended = datetime.fromisoformat(ends_at.replace("Z", "+00:00"))
    except ValueError:
        return AlertStatus.firing.value  # the field's own check reports it
    if ended.tzinfo is None:
        ended = ended.replace(tzinfo=UTC)
    return (AlertStatus.resolved if ended <= datetime.now(UTC) else AlertStatus.firing).value


class SkipReason(StrEnum):
    """Why an alert group started no execution (``code`` of a skipped entry)."""

    RESOLVED = "RESOLVED"  # no firing alert in the group
    NO_TEAM = "NO_TEAM"  # no team_id parameter and no aiops_team label
    AMBIGUOUS_TEAM = "AMBIGUOUS_TEAM"  # the firing alerts name several teams
    TEAM_NOT_FOUND = "TEAM_NOT_FOUND"  # the aiops_team label names no team
    # Otherwise the code of the refusal the executions service gave (e.g. TRIGGER_RUNNING: this group's run is
    # still pending or running; EXECUTION_RUNNING, TEAM_NOT_ACTIVE, INVALID_TOPOLOGY).


class StartedExecution(BaseModel):
    execution_id: uuid.UUID
    group_key: str
    team_id: uuid.UUID


class SkippedGroup(BaseModel):
    group_key: str
    reason: str = Field(description="why no execution was started, in words")
    code: str = Field(description="RESOLVED, NO_TEAM, AMBIGUOUS_TEAM, TEAM_NOT_FOUND or the refusal's error code")
    execution_id: uuid.UUID | None = Field(
        default=None, description="for TRIGGER_RUNNING: the group's execution that is still pending or running"
    )


class WebhookResult(BaseModel):
    """``202``: the executions started (one per alert group with firing alerts) and the groups skipped."""

    executions: list[StartedExecution]
    skipped: list[SkippedGroup]
