"""``deploy/grafana/aiops-executor.json`` queries only what the service exports.

Every PromQL expression of the dashboard (panel targets and template variable queries) names metrics the
service's registry has -- with the suffixes their types expose (``_total``; ``_bucket``/``_sum``/``_count``) --
and groups or filters only by labels those metrics carry (plus ``le``, and ``job``/``instance`` that Prometheus
adds). The dashboard covers what operators asked for: runs, node failures, model latency and errors per
endpoint, tokens and cost per team, queue depth.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from aiops_executor.core.metrics import Metrics
from tests.helpers import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "aiops-executor.json"
SCRAPE_LABELS = {"job", "instance"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "inf", "nan",
}  # fmt: skip
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def exported() -> dict[str, set[str]]:
    """Every sample name the service can expose, with the labels of its metric."""
    metrics = Metrics()
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        labels = {label for sample in family.samples for label in sample.labels}
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
        for suffix in suffixes.get(family.type, [""]):
            names[family.name + suffix] = set(labels)
    # Labelled metrics have no sample until observed: their label names come from the metric objects.
    for metric in vars(metrics).values():
        labelnames = getattr(metric, "_labelnames", None)
        name = getattr(metric, "_name", None)
        if labelnames is None or name is None:
            continue
        for sample_name in [n for n in names if n == name or n.startswith(name + "_")]:
            names[sample_name] |= set(labelnames)
        if getattr(metric, "_type", "") == "histogram":
            names[name + "_bucket"].add("le")
    return names


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict) and query.get("query"):
            found.append((f"variable {variable['name']}", query["query"]))
    return found


def referenced(expr: str) -> tuple[set[str], set[str]]:
    """The metric names an expression selects and the label names it matches or groups by."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals say nothing about names
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= {m.group(1) for m in re.finditer(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", matchers)}
    text = re.sub(r"\{[^}]*\}", " ", text)
    for grouping in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, with Grafana's $__rate_interval
    variable = re.match(r"\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_]\w*)\s*\)\s*$", text)
    if variable:
        return {variable.group(1)}, {variable.group(2)}
    metrics = set()
    for match in IDENTIFIER.finditer(text):
        word = match.group(0)
        after = text[match.end() :].lstrip()
        if after.startswith("(") or word in PROMQL_WORDS or text[match.start() - 1 : match.start()] == "$":
            continue
        metrics.add(word)
    return metrics, labels


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_the_parser_finds_metrics_and_labels() -> None:
    metrics, labels = referenced(
        'histogram_quantile(0.95, sum by (le, endpoint) (rate(aiops_model_call_duration_seconds_bucket{job=~"$job",'
        'outcome!="success"}[$__rate_interval]))) / sum(aiops_executions_active)'
    )
    assert metrics == {"aiops_model_call_duration_seconds_bucket", "aiops_executions_active"}
    assert labels == {"le", "endpoint", "job", "outcome"}
    assert referenced("label_values(aiops_http_requests_total, job)") == ({"aiops_http_requests_total"}, {"job"})


def test_every_expression_names_exported_metrics_and_their_labels(dashboard: dict[str, Any]) -> None:
    names = exported()
    problems = []
    found = expressions(dashboard)
    assert len(found) >= 20
    for where, expr in found:
        metrics, labels = referenced(expr)
        if not metrics:
            problems.append(f"{where}: no metric in {expr!r}")
        known = set(SCRAPE_LABELS)
        for metric in metrics:
            if metric not in names:
                problems.append(f"{where}: {metric} is not exported")
            else:
                known |= names[metric]
        if unknown := labels - known:
            problems.append(f"{where}: labels {sorted(unknown)} are not on {sorted(metrics)}")
    assert not problems, "\n".join(problems)


def test_the_dashboard_covers_what_operators_watch(dashboard: dict[str, Any]) -> None:
    used: set[str] = set()
    grouped: set[str] = set()
    for _, expr in expressions(dashboard):
        metrics, labels = referenced(expr)
        used |= metrics
        if "aiops_model_call" in expr:
            grouped |= labels
    assert {"aiops_executions_total", "aiops_execution_duration_seconds_bucket"} <= used  # runs
    assert "aiops_node_team_duration_seconds_count" in used  # node failures
    assert {"aiops_model_call_duration_seconds_bucket", "aiops_model_calls_total"} <= used and "endpoint" in grouped
    assert {"aiops_team_tokens_total", "aiops_team_cost_usd_total"} <= used  # tokens and cost per team
    assert "aiops_execution_queue_depth" in used
    # Every panel has a title, a description and a unique id; the data source is a variable.
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["title"] and panel["description"], panel["id"]
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
