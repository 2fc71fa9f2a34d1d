"""The texts supervisors and agents are given.

Every prompt ends with the facts as JSON (the node, its attributes, the task's context, upstream findings)
so that any model, including the offline simulator, sees the same ground truth. Reports from agents and
node teams are written as ``[id] text``, which lets a supervisor (and the simulator) tell who has spoken.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

from aiops_executor.engine.topology import AgentSpec, NodeSpec
from aiops_executor.tools.registry import redact_value, secrets_in

DEFAULT_AGENT_PROMPT = "You are an SRE agent investigating one resource. Use your tools, then report what you found."
DEFAULT_NODE_SUPERVISOR_PROMPT = "You supervise the agents investigating one resource and report their findings."
DEFAULT_GLOBAL_SUPERVISOR_PROMPT = "You coordinate the teams investigating a system and summarise their findings."

MAX_UPSTREAM_CHARS = 2_000
TEMPLATE_FIELDS = ("task", "context", "node_id", "node_name", "node_type", "attributes", "upstream")


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        # An unknown placeholder is left as written rather than failing the run.
        return "{" + key + "}"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def render_template(template: str, fields: Mapping[str, str]) -> str:
    """``str.format`` with the known fields; unknown placeholders and stray braces are kept verbatim."""
    try:
        return string.Formatter().vformat(template, (), _Fields(fields))
    except (ValueError, IndexError, AttributeError, KeyError):
        return template


def node_facts(node: NodeSpec) -> dict[str, Any]:
    """What a model is told about a resource. Passwords in its attributes are for the tools, not the model."""
    return {
        "node_id": node.node_id,
        "node_name": node.node_name,
        "node_type": node.node_type,
        "attributes": redact_value(node.attributes, secrets_in(node.attributes)),
    }


def agent_prompt(
    agent: AgentSpec, node: NodeSpec, task: str, context: Mapping[str, Any], upstream: Mapping[str, str]
) -> str:
    upstream_text = "\n".join(f"[{node_id}] {text[:MAX_UPSTREAM_CHARS]}" for node_id, text in upstream.items())
    fields = {
        "task": task,
        "context": _json(context),
        "node_id": node.node_id,
        "node_name": node.node_name,
        "node_type": node.node_type,
        "attributes": _json(node_facts(node)["attributes"]),
        "upstream": upstream_text,
    }
    parts = [render_template(agent.user_prompt_template, fields), f"Resource facts (JSON): {_json(node_facts(node))}"]
    if context:
        parts.append(f"Task context (JSON): {_json(dict(context))}")
    if upstream_text:
        parts.append(f"Findings from the resources this one depends on:\n{upstream_text}")
    return "\n\n".join(parts)


def report(speaker: str, text: str) -> str:
    return f"[{speaker}] {text}"


def node_supervisor_brief(node: NodeSpec, task: str, context: Mapping[str, Any]) -> str:
    agents = ", ".join(f"{a.agent_id} ({a.agent_name})" for a in node.agents)
    return (
        f"Task: {task}\n"
        f"You supervise the team of resource {node.node_id} ({node.node_name}, a {node.node_type}). "
        f"Your agents: {agents}.\n"
        f"Resource facts (JSON): {_json(node_facts(node))}"
        + (f"\nTask context (JSON): {_json(dict(context))}" if context else "")
    )


def global_supervisor_brief(task: str, context: Mapping[str, Any], nodes: list[NodeSpec]) -> str:
    listing = "\n".join(f"- {n.node_id}: {n.node_name} ({n.node_type})" for n in nodes)
    return f"Task: {task}\nYou coordinate one team per resource of this topology:\n{listing}" + (
        f"\nTask context (JSON): {_json(dict(context))}" if context else ""
    )
