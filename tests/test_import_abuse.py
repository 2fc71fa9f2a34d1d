"""Hostile manifests, generated here: each is refused (4xx) in under 2 s, costs the process little memory, and
the service goes on serving. The limits are the importer's (objects, nodes before linking, variables per
workload) and the YAML reader's (expanded values, nesting, documents, safe tags)."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

import httpx
import pytest

from aiops_executor.imports.kubernetes import MAX_VARIABLES_PER_WORKLOAD, import_manifests
from tests.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, login
from tests.helpers import API

IMPORT = f"{API}/topologies/import/kubernetes"
MEMORY_BUDGET_BYTES = 100 * 1024 * 1024


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
    body = {"manifests": manifest()}
    tracemalloc.start()
    try:
        started = time.perf_counter()
        response = await client.post(IMPORT, json=body, headers=admin_headers)
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 400 <= response.status_code < 500, response.text[:500]
    assert seconds < 2, f"{manifest.__name__} took {seconds:.2f} s"
    assert peak < MEMORY_BUDGET_BYTES, f"{manifest.__name__} peaked at {peak / 2**20:.0f} MB"
    assert (await login(client, ADMIN_USERNAME, ADMIN_PASSWORD))["Authorization"]  # still serving


def test_variables_multiplied_by_aliases_are_capped_per_workload() -> None:
    started = time.perf_counter()
    result = import_manifests(environment_bomb())
    assert time.perf_counter() - started < 2
    assert any(
        f"more than {MAX_VARIABLES_PER_WORKLOAD:,} environment variables" in w["message"] for w in result.warnings
    )
