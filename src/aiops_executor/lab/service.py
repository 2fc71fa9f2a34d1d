"""The lab as a client of this service: sign in, make sure a model is there, create the lab's team and the API key
Alertmanager calls the webhook with -- through the public API, as any user would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from aiops_executor.console.errors import api_refusal
from aiops_executor.lab.system import DIAG_ROLE, LOOPBACK, POSTGRES_DATABASE, LabError, LabState

API = "/api/v1"
TEAM_NAME = "aiops-lab"
SIMULATOR_PROVIDER = "local-sim"
SIMULATOR_MODEL = "sim-1"
CAPABLE = {"supported": True, "score": 3}
RUN_TIMEOUT_SECONDS = 60
PROBE_TIMEOUT_SECONDS = 2

# The postgres node's thresholds, for a lab whose faults must show within seconds: the shop waits for a lock for
# up to 15 s, so waits of seconds are the signal; a lock holder is seconds old, not minutes.
POSTGRES_THRESHOLDS = {
    "lock_wait_degraded_seconds": 1,
    "lock_wait_failed_seconds": 5,
    "transaction_degraded_seconds": 5,
    "transaction_failed_seconds": 30,
    # The lab shares two cores with whatever else runs: its proxy adds milliseconds of scheduling; its slow
    # dependency adds 200 ms, well above this.
    "round_trip_degraded_ms": 150,
}


def _check(response: httpx.Response, step: str) -> Any:
    if response.status_code >= 400:
        raise LabError(f"{step} failed ({api_refusal(response.status_code, response.content)})")
    return response.json() if response.content else {}


@contextlib.contextmanager
def signed_in(service_url: str, username: str, password: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service_url, timeout=30, trust_env=False) as client:
        answer = client.post(f"{API}/auth/token", data={"username": username, "password": password})
        client.headers["Authorization"] = f"Bearer {_check(answer, 'signing in')['access_token']}"
        yield client


def ensure_model(client: httpx.Client, provider: str, model_id: str) -> None:
    """The simulator is registered when missing; any other model must already be configured."""
    providers = _check(client.get(f"{API}/providers", params={"size": 100}), "listing providers")
    items = providers["items"] if isinstance(providers, dict) else providers
    found = next((p for p in items if p["name"] == provider), None)
    if found is None:
        if provider != SIMULATOR_PROVIDER:
            raise LabError(f"no provider named {provider!r} is configured in the service")
        found = _check(
            client.post(f"{API}/providers", json={"name": provider, "type": "simulator"}), "adding the simulator"
        )
    models = _check(client.get(f"{API}/models", params={"provider_id": found["id"], "size": 100}), "listing models")
    model_items = models["items"] if isinstance(models, dict) else models
    if any(m["model_id"] == model_id for m in model_items):
        return
    if provider != SIMULATOR_PROVIDER:
        raise LabError(f"provider {provider!r} has no model {model_id!r}")
    capabilities = {"chat": CAPABLE, "function_calling": CAPABLE, "structured_output": CAPABLE}
    body = {"model_id": model_id, "name": model_id, "capabilities": capabilities}
    _check(client.post(f"{API}/providers/{found['id']}/models", json=body), "adding the simulator's model")


def _agent(agent_id: str, tools: list[str], provider: str, model_id: str, prompt: str) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "agent_name": agent_id.replace("-", " "),
        "model_provider": provider,
        "model_id": model_id,
        "system_prompt": prompt,
        "tools": tools,
    }


def team_body(state: LabState, provider: str, model_id: str) -> dict[str, Any]:
    """gateway -> shop -> postgres, redis (``depends_on``), each node with the probes of its kind."""
    ports = state.ports
    supervisor = {"model_provider": provider, "model_id": model_id, "coordination_strategy": "round_robin"}

    prometheus_url = f"http://{LOOPBACK}:{ports['prometheus']}"
    alert_checker = _agent(
        "alert-checker",
        ["prometheus_query"],
        provider,
        model_id,
        "You check in Prometheus whether the alert that started this run still holds for this component.",
    )

    def node(node_id: str, node_type: str, attributes: dict[str, Any], agents: list[dict[str, Any]]) -> dict[str, Any]:
        # Every node is also looked at in Prometheus: the run's alert about it, else whether it is scraped.
        # The probes' own timeout is an argument the tools take from the node: a hung component shows in 2 s.
        metrics: dict[str, Any] = {
            "prometheus_url": prometheus_url,
            "prometheus_query": f'up{{service="{node_id}"}}',
            "timeout_seconds": PROBE_TIMEOUT_SECONDS,
        }
        return {
            "node_id": node_id,
            "node_name": node_id,
            "node_type": node_type,
            "attributes": {**attributes, **metrics},
            "agents": [*agents, alert_checker],
            "supervisor_config": supervisor,
        }

    gateway_url = f"http://{LOOPBACK}:{ports['gateway']}/checkout"
    shop_url = f"http://{LOOPBACK}:{ports['shop']}/checkout"
    dsn = f"postgresql://{DIAG_ROLE}@{LOOPBACK}:{ports['postgres']}/{POSTGRES_DATABASE}"
    nodes = [
        node(
            "gateway",
            "gateway",
            {"url": gateway_url, "host": LOOPBACK, "port": ports["gateway"], "service": "gateway"},
            [_agent("prober", ["http_check"], provider, model_id, "You check the gateway's checkout path.")],
        ),
        node(
            "shop",
            "service",
            {"url": shop_url, "host": LOOPBACK, "port": ports["shop"], "service": "shop"},
            [_agent("prober", ["http_check"], provider, model_id, "You check the shop's checkout endpoint.")],
        ),
        node(
            "postgres",
            "postgresql",
            {"postgres_dsn": dsn, "service": "postgres", "thresholds": {"postgres_diagnostics": POSTGRES_THRESHOLDS}},
            [_agent("dba", ["postgres_diagnostics"], provider, model_id, "You diagnose the shop's PostgreSQL.")],
        ),
        node(
            "redis",
            "redis",
            {"redis_url": f"redis://{LOOPBACK}:{ports['redis']}/0", "service": "redis"},
            [_agent("cache-inspector", ["redis_info"], provider, model_id, "You diagnose the shop's Redis.")],
        ),
    ]
    edges = [
        {"source_node_id": "gateway", "target_node_id": "shop", "relation_type": "depends_on"},
        {"source_node_id": "shop", "target_node_id": "postgres", "relation_type": "depends_on"},
        {"source_node_id": "shop", "target_node_id": "redis", "relation_type": "depends_on"},
    ]
    return {
        "team_name": TEAM_NAME,
        "description": "The incident lab's shop: a gateway, the shop, its PostgreSQL and its Redis.",
        "timeout_seconds": RUN_TIMEOUT_SECONDS,
        "max_iterations": 10,
        "topology": {
            "nodes": nodes,
            "edges": edges,
            "global_supervisor": {**supervisor, "coordination_strategy": "parallel"},
        },
    }


def ensure_team(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post(f"{API}/teams", json=body)
    if response.status_code != 409:
        return str(_check(response, "creating the lab's team")["team_id"])
    teams = _check(client.get(f"{API}/teams", params={"size": 100}), "listing teams")
    existing = next((t for t in teams["items"] if t["team_name"] == body["team_name"]), None)
    if existing is None:
        raise LabError(f"team {body['team_name']!r} exists but could not be found")
    team_id = str(existing["team_id"])
    _check(client.put(f"{API}/teams/{team_id}", json={**body, "status": "active"}), "updating the lab's team")
    return team_id


def create_api_key(client: httpx.Client) -> tuple[str, str]:
    """An operator key for Alertmanager: (id, key). The key is shown once; the lab writes it to a private file."""
    created = _check(
        client.post(f"{API}/api-keys", json={"name": "aiops-lab-alertmanager", "role": "operator"}),
        "creating an API key",
    )
    return str(created["id"]), str(created["key"])


def revoke_api_key(client: httpx.Client, key_id: str) -> None:
    client.delete(f"{API}/api-keys/{key_id}")
