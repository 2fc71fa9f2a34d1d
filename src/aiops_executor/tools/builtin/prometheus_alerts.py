"""The alert that started a run, checked again for one node: does its expression still hold for this node?

A run Alertmanager started carries the alerts in its context, each with its labels and the ``generatorURL`` of
the rule (Prometheus puts the expression there, as ``g0.expr``). An alert is about a node when one of the labels
``instance``, ``job`` or ``service`` equals the node's attribute of the same name; its expression is then
evaluated now, and only the series with those labels count. A series left means the condition still holds:
``failed`` for a critical (or page, error) alert, ``degraded`` otherwise; none means it no longer holds: ``ok``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiops_executor.tools.registry import ToolContext
from aiops_executor.tools.verdicts import Findings

NODE_LABELS = ("instance", "job", "service")
FAILING_SEVERITIES = frozenset({"critical", "page", "error"})
MAX_ALERTS = 5
ALERTMANAGER_SOURCE = "alertmanager"


@dataclass(frozen=True)
class AlertCheck:
    name: str
    expression: str
    severity: str
    labels: Mapping[str, str] = field(default_factory=dict)  # the alert's labels that name this node

    def selects(self, series_labels: Mapping[str, Any]) -> bool:
        return all(series_labels.get(key) == value for key, value in self.labels.items())

    def describe(self) -> str:
        return "{" + ", ".join(f'{key}="{value}"' for key, value in self.labels.items()) + "}"


def expression_of(generator_url: Any) -> str | None:
    """The PromQL expression of a rule, from the ``generatorURL`` Prometheus gives its alerts."""
    if not isinstance(generator_url, str) or not generator_url:
        return None
    try:
        query = parse_qs(urlsplit(generator_url).query)
    except ValueError:
        return None
    expressions = query.get("g0.expr")
    return expressions[0].strip() if expressions and expressions[0].strip() else None


def node_alerts(context: ToolContext) -> list[AlertCheck]:
    """The firing alerts of the run's alert group that are about this node (one per expression)."""
    run_context = context.run_context
    if not isinstance(run_context, Mapping) or run_context.get("source") != ALERTMANAGER_SOURCE:
        return []
    node_values = {key: str(context.attributes[key]) for key in NODE_LABELS if context.attributes.get(key) is not None}
    checks: dict[str, AlertCheck] = {}
    for alert in run_context.get("alerts") or []:
        if not isinstance(alert, Mapping) or alert.get("status") != "firing":
            continue
        found = alert.get("labels")
        labels: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        matching = {key: value for key, value in node_values.items() if labels.get(key) == value}
        expression = expression_of(alert.get("generator_url"))
        if not matching or expression is None or expression in checks:
            continue
        name = str(labels.get("alertname") or "alert")
        checks[expression] = AlertCheck(name, expression, str(labels.get("severity") or "warning"), matching)
    return list(checks.values())[:MAX_ALERTS]


def judge_alerts(results: list[tuple[AlertCheck, list[Any]]], findings: Findings) -> list[dict[str, Any]]:
    """Each alert's verdict for the node, from the series its expression returns now; the report's entries."""
    entries = []
    for check, series in results:
        holding = [s for s in series if isinstance(s, Mapping) and check.selects(s.get("metric") or {})]
        where = check.describe()
        if holding:
            signal = f"alert {check.name} still holds for {where}: {check.expression}"
            (findings.failed if check.severity.lower() in FAILING_SEVERITIES else findings.degraded)(signal)
        else:
            findings.ok(f"alert {check.name} no longer holds for {where}")
        entries.append(
            {
                "alert": check.name,
                "severity": check.severity,
                "query": check.expression,
                "node_labels": dict(check.labels),
                "holds": bool(holding),
                "series": [s.get("metric") for s in holding[:10]],
            }
        )
    return entries
