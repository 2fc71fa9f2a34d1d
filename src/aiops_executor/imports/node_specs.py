"""What an imported resource becomes in a topology: its node spec with its agents and their prompts."""

from __future__ import annotations

from typing import Any

from aiops_executor.imports.resources import Resource

PROBE_PROMPTS = {
    "Ingress": "You check that the ingress answers from outside: name resolution, HTTP status, TLS certificate.",
    "Service": "You check that the Service answers on its ports and resolves in the cluster's DNS.",
    "Deployment": "You check that the workload's pods answer their readiness endpoint through their Service.",
    "StatefulSet": "You check that the stateful workload's pods answer through their Service.",
    "DaemonSet": "You check that the node agent's pods answer through their Service.",
}


def node_spec(node: Resource, model: dict[str, str]) -> dict[str, Any]:
    """The node spec of an imported resource: a prober with the tools its attributes allow, a data store
    inspector where the image is a known data store, a round-robin supervisor; every agent on ``model``."""
    kind = node.kind
    agents = [
        {
            "agent_id": "probe",
            "agent_name": f"{kind} prober",
            **model,
            "system_prompt": PROBE_PROMPTS[kind],
            "user_prompt_template": "Check the {node_type} {node_name} for this task: {task}",
            "tools": node.tools,
        }
    ]
    if node.datastore_tools:
        agents.append(
            {
                "agent_id": "datastore",
                "agent_name": "Data store inspector",
                **model,
                "system_prompt": "You read the data store's own health: connections, memory, slow or "
                "blocked queries, replication.",
                "user_prompt_template": "Inspect the data store {node_name} for this task: {task}",
                "tools": node.datastore_tools,
            }
        )
    return {
        "node_id": node.node_id,
        "node_name": f"{kind} {node.obj.namespace}/{node.obj.name}"[:200],
        "node_type": kind.lower(),
        "attributes": node.attributes,
        "agents": agents,
        "supervisor_config": {
            **model,
            "system_prompt": f"You lead the investigation of the {kind} {node.obj.name}.",
            "coordination_strategy": "round_robin",
        },
    }
