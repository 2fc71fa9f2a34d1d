"""The service through a Python client generated from its OpenAPI document (openapi-python-client).

Generate the client once (it is a package named ``aiops_client``), then run this script::

    openapi-python-client generate --url http://127.0.0.1:8000/openapi.json \\
        --meta none --output-path aiops_client --config examples/openapi-client.yaml
    python examples/client.py --url http://127.0.0.1:8000 --username admin --password="$(cat .aiops/admin_password)"

It signs in, registers an offline ``simulator`` provider with one model, creates a team of one node that checks
the service's own ``/health`` over HTTP, runs it (waiting for the result) and prints what the run found.
Each call is a typed function of the generated package; an error answer is its ``ErrorResponse`` model.
tests/cli/test_client_examples.py generates the client from a live server and runs this script against it.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any, TypeVar

from aiops_client import AuthenticatedClient, Client
from aiops_client.api.auth import sign_in
from aiops_client.api.executions import execute_team, get_execution
from aiops_client.api.llm import create_model, create_provider
from aiops_client.api.teams import create_team
from aiops_client.models import (
    ErrorResponse,
    ExecuteRequest,
    ExecutionInput,
    ExecutionRead,
    ModelCreate,
    ModelCreateCapabilities,
    ProviderCreate,
    ProviderType,
    TeamSpec,
    TokenRequest,
)

T = TypeVar("T")
SUPPORTED = {"supported": True, "score": 3}


class ApiError(Exception):
    pass


def ok(answer: T | ErrorResponse | None, what: str) -> T:
    """The answer of a call, or an exception with the service's error code and message."""
    if isinstance(answer, ErrorResponse):
        raise ApiError(f"{what}: {answer.error_code}: {answer.error_message}")
    if answer is None:
        raise ApiError(f"{what}: an answer the API does not document")
    return answer


def team_definition(name: str, provider: str, health_url: str) -> TeamSpec:
    model = {"model_provider": provider, "model_id": "sim-1"}
    return TeamSpec.from_dict(
        {
            "team_name": name,
            "description": "Checks the aiops service itself",
            "timeout_seconds": 120,
            "topology": {
                "nodes": [
                    {
                        "node_id": "executor",
                        "node_name": "aiops-agent-executor",
                        "node_type": "service",
                        "attributes": {"url": health_url},
                        "agents": [
                            {
                                "agent_id": "http-probe",
                                "agent_name": "Health prober",
                                **model,
                                "system_prompt": "You check that the service answers its health endpoint.",
                                "tools": ["http_check"],
                            }
                        ],
                        "supervisor_config": {**model, "coordination_strategy": "round_robin"},
                    }
                ],
                "edges": [],
                "global_supervisor": {**model, "coordination_strategy": "parallel"},
                "allow_isolated_nodes": True,
            },
        }
    )


def run(url: str, username: str, password: str, task: str = "Is the service healthy?") -> ExecutionRead:
    """Signs in, sets up a provider, a model and a team, runs the team and returns the finished execution."""
    with Client(base_url=url, timeout=30) as anonymous:
        token = ok(sign_in.sync(client=anonymous, body=TokenRequest(username=username, password=password)), "sign in")
    suffix = uuid.uuid4().hex[:6]
    with AuthenticatedClient(base_url=url, token=token.access_token, timeout=180) as client:
        provider = ok(
            create_provider.sync(
                client=client, body=ProviderCreate(name=f"example-sim-{suffix}", type_=ProviderType.SIMULATOR)
            ),
            "create the provider",
        )
        capabilities: dict[str, Any] = {"chat": SUPPORTED, "function_calling": SUPPORTED}
        ok(
            create_model.sync(
                provider.id,
                client=client,
                body=ModelCreate(
                    model_id="sim-1",
                    name="Simulator",
                    input_price="0.5",
                    output_price="1.5",
                    capabilities=ModelCreateCapabilities.from_dict(capabilities),
                ),
            ),
            "create the model",
        )
        team = ok(
            create_team.sync(
                client=client, body=team_definition(f"example-{suffix}", provider.name, f"{url.rstrip('/')}/health")
            ),
            "create the team",
        )
        finished = ok(
            execute_team.sync(
                team.team_id, client=client, body=ExecuteRequest(input_=ExecutionInput(task=task), stream=False)
            ),
            "run the team",
        )
        return ok(get_execution.sync(finished.execution_id, client=client), "read the execution")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", default="admin")
    parser.add_argument("--password", required=True)
    parser.add_argument("--task", default="Is the service healthy?")
    args = parser.parse_args(argv)
    try:
        execution = run(args.url, args.username, args.password, args.task)
    except ApiError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"execution {execution.execution_id}: {execution.status.value} in {execution.duration_ms} ms")
    if execution.result:
        print(execution.result.summary)
        for node in execution.result.node_results:
            print(f"- {node.node_id}: {node.status} -- {node.output[:200]}")
    usage = execution.usage
    print(f"tokens: {usage.input_tokens} in, {usage.output_tokens} out; cost: {usage.cost} USD")
    return 0 if execution.status.value == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
