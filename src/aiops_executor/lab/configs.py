"""The incident lab's configuration files: nginx (the gateway), Prometheus with its alert rules, the blackbox
exporter and Alertmanager, whose receiver is this service's Alertmanager webhook.

Intervals are short (scrape and evaluation every second, an alert after a second of its condition) so that a
scenario takes seconds, not minutes; the rules are the ones a user of this stack would write: checkout failing
or slower than its objective as the blackbox exporter sees it through the gateway, and each component down as
its exporter sees it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The shop's latency objective: checkout through the gateway answers within this many seconds.
LATENCY_OBJECTIVE_SECONDS = 0.5
PROBE_TIMEOUT_SECONDS = 0.9
ALERT_AFTER = "1s"


@dataclass(frozen=True)
class Ports:
    gateway: int
    shop: int
    postgres: int  # the proxy the shop and everyone else use
    postgres_server: int  # the server behind it
    redis: int
    prometheus: int
    alertmanager: int
    blackbox: int
    postgres_exporter: int
    redis_exporter: int


def nginx_conf(lab_dir: Path, ports: Ports, *, user: str | None) -> str:
    temp = lab_dir / "nginx"
    return f"""# The lab's gateway: a reverse proxy in front of the shop.
{f"user {user};" if user else ""}
worker_processes 1;
daemon off;
pid {temp / "nginx.pid"};
error_log {temp / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    server {{
        listen 127.0.0.1:{ports.gateway};
        location / {{
            proxy_pass http://127.0.0.1:{ports.shop};
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


def blackbox_conf() -> str:
    return f"""modules:
  http_2xx:
    prober: http
    timeout: {PROBE_TIMEOUT_SECONDS}s
    http:
      preferred_ip_protocol: ip4
      valid_status_codes: [200]
"""


def prometheus_conf(ports: Ports, rules_file: Path) -> str:
    gateway = f"http://127.0.0.1:{ports.gateway}/checkout"
    return f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [{json.dumps(str(rules_file))}]
alerting:
  alertmanagers:
    - static_configs: [{{targets: ["127.0.0.1:{ports.alertmanager}"]}}]
scrape_configs:
  - job_name: checkout
    metrics_path: /probe
    params: {{module: [http_2xx]}}
    static_configs: [{{targets: ["{gateway}"], labels: {{service: gateway}}}}]
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__param_target], target_label: instance}}
      - {{target_label: __address__, replacement: "127.0.0.1:{ports.blackbox}"}}
  - job_name: shop
    static_configs: [{{targets: ["127.0.0.1:{ports.shop}"], labels: {{service: shop}}}}]
  - job_name: postgres
    static_configs: [{{targets: ["127.0.0.1:{ports.postgres_exporter}"], labels: {{service: postgres}}}}]
  - job_name: redis
    static_configs: [{{targets: ["127.0.0.1:{ports.redis_exporter}"], labels: {{service: redis}}}}]
"""


def alert_rules(team: str) -> str:
    """The alerting rules, labelled with the team that investigates them (``aiops_team``)."""
    rules = [
        (
            "CheckoutFailing",
            'probe_success{job="checkout"} == 0',
            "critical",
            "Checkout through the gateway is failing",
            "The blackbox probe of {{ $labels.instance }} fails.",
        ),
        (
            "CheckoutSlow",
            f'probe_duration_seconds{{job="checkout"}} > {LATENCY_OBJECTIVE_SECONDS}',
            "warning",
            "Checkout is slower than its objective",
            f"Checkout through the gateway takes longer than {LATENCY_OBJECTIVE_SECONDS} s.",
        ),
        ("RedisDown", "redis_up == 0", "critical", "Redis is down", "The Redis exporter cannot reach Redis."),
        ("PostgresDown", "pg_up == 0", "critical", "PostgreSQL is down", "The exporter cannot query PostgreSQL."),
        ("ShopDown", 'up{job="shop"} == 0', "critical", "The shop is down", "Prometheus cannot scrape the shop."),
    ]
    lines = ["groups:", "  - name: aiops-lab", "    interval: 1s", "    rules:"]
    for name, expression, severity, summary, description in rules:
        lines += [
            f"      - alert: {name}",
            f"        expr: {json.dumps(expression)}",
            f"        for: {ALERT_AFTER}",
            f"        labels: {{aiops_team: {json.dumps(team)}, severity: {severity}}}",
            f"        annotations: {{summary: {json.dumps(summary)}, description: {json.dumps(description)}}}",
        ]
    return "\n".join(lines) + "\n"


def alertmanager_conf(webhook_url: str, credentials_file: Path) -> str:
    """One notification per team's incident: the team's alerts are grouped, and a group whose run is still
    going starts no second one (the webhook's rule)."""
    return f"""route:
  receiver: aiops-executor
  group_by: [aiops_team]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: aiops-executor
    webhook_configs:
      - url: {json.dumps(webhook_url)}
        send_resolved: false
        http_config:
          authorization:
            type: Bearer
            credentials_file: {json.dumps(str(credentials_file))}
"""
