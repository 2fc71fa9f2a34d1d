"""Triggers: what starts executions without a person (Prometheus Alertmanager's webhook)."""
