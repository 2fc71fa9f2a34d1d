"""Hostile manifests, generated here: each is refused (4xx) by the limit meant for it, and the service goes on
serving. The limits are the importer's (objects, nodes before linking, variables per workload) and the YAML
reader's (expanded values, nesting, documents, safe tags). Time and memory of each refusal are measured by
bench/import_abuse.py (targets: under 2 s, under 100 MB), not here."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from aiops_executor.imports.kubernetes import MAX_VARIABLES_PER_WORKLOAD, import_manifests
from aiops_executor.imports.manifests import ImportStopped, ManifestError
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, login
from tests.helpers import API

IMPORT = f"{API}/topologies/import/kubernetes"
# What each refusal says: the limit that stopped it.
REFUSALS = {
    "billion_laughs": "expands (through its aliases) to more than 200,000 values",
    "many_objects": "more than 1,000 documents",
    "deep_nesting": "maximum nesting depth",
    "python_object": "could not determine a constructor for the tag",
}


def billion_laughs() -> str:
    """28 KB that stands for 10^9 values: each level lists the previous one ten times, nine levels deep."""
    lines = ["kind: ConfigMap", "metadata: {name: laughs}", "data:", f"  l0: &l0 [{', '.join(['lol'] * 10)}]"]
    for level in range(1, 10):
        lines.append(f"  l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    padding = "# " + "x" * 100
    return "\n".join(lines + [padding] * 270)


def environment_bomb() -> str:
    """A Deployment whose containers (aliased) each take a ConfigMap of 1,000 keys through envFrom (aliased):
    30 x 30 x 1,000 variables once expanded, in 28 KB."""
    keys = "\n".join(f"  k{i}: v" for i in range(1000))
    env_from = ", ".join(["*ref"] * 30)
    containers = ", ".join(["*c"] * 30)
    return f"""kind: ConfigMap
metadata: {{name: big}}
data:
{keys}
---
kind: Deployment
metadata: {{name: app}}
x-refs:
  ref: &ref {{configMapRef: {{name: big}}}}
  c: &c {{name: app, image: app, envFrom: [{env_from}]}}
spec:
  template:
    metadata: {{labels: {{app: app}}}}
    spec:
      containers: [{containers}]
"""


def many_objects() -> str:
    """1.9 MB of 10,000 small Services."""
    return "\n---\n".join(
        f"kind: Service\nmetadata: {{name: s{i}}}\nspec: {{selector: {{app: a{i}}}}}" for i in range(10_000)
    )


def deep_nesting() -> str:
    return "kind: Service\nmetadata: {name: deep}\nspec: " + "[" * 10_000 + "]" * 10_000


def python_object() -> str:
    return "kind: Service\nmetadata: {name: evil}\nspec: !!python/object/apply:os.system ['true']"


# The import touches no database: one backend is enough.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "manifest", [billion_laughs, many_objects, deep_nesting, python_object], ids=lambda make: make.__name__
)
async def test_a_hostile_manifest_is_refused_quickly_cheaply_and_the_service_goes_on(
    client: httpx.AsyncClient, admin_headers: dict[str, str], manifest: Callable[[], str]
) -> None:
    response = await client.post(IMPORT, json={"manifests": manifest()}, headers=admin_headers)
    assert response.status_code == 422, response.text[:500]
    assert REFUSALS[manifest.__name__] in response.json()["error_message"]
    assert (await login(client, ADMIN_USERNAME, ADMIN_PASSWORD))["Authorization"]  # still serving


def test_variables_multiplied_by_aliases_are_capped_per_workload() -> None:
    result = import_manifests(environment_bomb())
    assert any(
        f"more than {MAX_VARIABLES_PER_WORKLOAD:,} environment variables" in w["message"] for w in result.warnings
    )


def test_objects_past_the_limit_are_refused_before_any_linking() -> None:
    item = "{{kind: Service, metadata: {{name: s{0}}}, spec: {{selector: {{app: a}}}}}}"
    items = ", ".join(item.format(i) for i in range(1500))
    with pytest.raises(ManifestError, match="more than 1,000 Kubernetes objects"):
        import_manifests(f"kind: List\nitems: [{items}]")
    # Past the node limit (but not the object limit): refused before linking, with the count.
    services = "\n---\n".join(f"kind: Service\nmetadata: {{name: s{i}}}" for i in range(150))
    with pytest.raises(ManifestError, match="make 150 nodes; a team has at most 100"):
        import_manifests(services)


def services(count: int) -> str:
    return "\n---\n".join(f"kind: Service\nmetadata: {{name: s{i}}}" for i in range(count))


def test_an_import_stops_at_the_next_document_once_its_caller_says_stop() -> None:
    asked = 0

    def stopped() -> bool:
        nonlocal asked
        asked += 1
        return asked > 3  # the caller's client went away while the fourth document was read

    with pytest.raises(ImportStopped):
        import_manifests(services(50), stopped=stopped)
    assert asked == 4  # asked after each document, and nothing was read past the answer


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_client_that_disconnects_stops_its_import(app: FastAPI, admin_headers: dict[str, str]) -> None:
    """The app as the server drives it: the body, then the client's disconnect. The import (a few hundred
    documents, several times longer than it takes to notice) stops and the request ends 499."""
    body = json.dumps({"manifests": services(800)}).encode()
    messages = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(k.lower().encode(), v.encode()) for k, v in admin_headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": IMPORT,
        "raw_path": IMPORT.encode(),
        "query_string": b"",
        "headers": [*headers, (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
        "root_path": "",
        "state": {},
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 499
