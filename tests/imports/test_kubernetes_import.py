"""Kubernetes manifests -> topology: the shapes kubectl and Helm print (List, comments, ``---``), the nodes
and edges they make, warnings for what is not understood, bad YAML named by document and line, and the
result accepted by ``POST /teams`` unchanged. The converter is exercised as a library, over HTTP and by the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from aiops_executor.cli import app as cli_app
from aiops_executor.imports.kubernetes import PROBE_TOOLS, Defaults, import_manifests
from aiops_executor.imports.manifests import ManifestError
from aiops_executor.imports.resources import hosts_in
from aiops_executor.tools.builtin import default_registry
from tests.conftest import RoleHeaders
from tests.helpers import API, REPO_ROOT, add_simulator, assert_error

EXAMPLES = REPO_ROOT / "examples" / "kubernetes"
WEBSHOP = EXAMPLES / "webshop.yaml"
WEBSHOP_TOPOLOGY = EXAMPLES / "webshop-topology.json"
IMPORT = f"{API}/topologies/import/kubernetes"

# `kubectl get deployments,services -n payments -o yaml`: a List with the server's fields (status, uid,
# managedFields, resourceVersion) that the importer has no use for.
KUBECTL_LIST = """\
apiVersion: v1
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    annotations:
      deployment.kubernetes.io/revision: "4"
    creationTimestamp: "2026-11-30T09:12:44Z"
    generation: 4
    labels:
      app: payments
    managedFields:
    - apiVersion: apps/v1
      fieldsType: FieldsV1
      fieldsV1:
        f:spec:
          f:replicas: {}
      manager: kubectl-client-side-apply
      operation: Update
    name: payments
    namespace: payments
    resourceVersion: "918273"
    uid: 2b0c6a43-5c1e-4f43-9d53-7f0d4a5c7e11
  spec:
    progressDeadlineSeconds: 600
    replicas: 2
    selector:
      matchLabels:
        app: payments
    template:
      metadata:
        creationTimestamp: null
        labels:
          app: payments
      spec:
        containers:
        - env:
          - name: LEDGER_ADDR
            value: ledger.payments.svc.cluster.local:7000
          - name: FRAUD_CHECK_URL
            value: http://fraud.risk.svc.cluster.local/score
          image: registry.example.com/payments:5.2.0
          imagePullPolicy: IfNotPresent
          name: payments
          ports:
          - containerPort: 8443
            name: https
            protocol: TCP
          readinessProbe:
            failureThreshold: 3
            httpGet:
              path: /health/ready
              port: 8443
              scheme: HTTPS
            periodSeconds: 10
        dnsPolicy: ClusterFirst
        restartPolicy: Always
  status:
    availableReplicas: 2
    readyReplicas: 2
    replicas: 2
- apiVersion: apps/v1
  kind: DaemonSet
  metadata:
    name: ledger
    namespace: payments
    uid: 7d1e4b2a-0000-4000-8000-000000000002
  spec:
    selector:
      matchLabels:
        app: ledger
    template:
      metadata:
        labels:
          app: ledger
      spec:
        containers:
        - image: registry.example.com/ledger:1.0.3
          name: ledger
          ports:
          - containerPort: 7000
            name: grpc
- apiVersion: v1
  kind: Service
  metadata:
    name: payments
    namespace: payments
    uid: 7d1e4b2a-0000-4000-8000-000000000003
  spec:
    clusterIP: 10.96.14.7
    clusterIPs:
    - 10.96.14.7
    ports:
    - name: https
      port: 443
      protocol: TCP
      targetPort: 8443
    selector:
      app: payments
    sessionAffinity: None
    type: ClusterIP
  status:
    loadBalancer: {}
- apiVersion: v1
  kind: Service
  metadata:
    name: ledger
    namespace: payments
  spec:
    ports:
    - name: grpc
      port: 7000
      targetPort: grpc
    selector:
      app: ledger
kind: List
metadata:
  resourceVersion: ""
"""


def edges(topology: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(e["source_node_id"], e["target_node_id"], e["relation_type"]) for e in topology["edges"]}


def node(topology: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in topology["nodes"] if n["node_id"] == node_id)


def messages(warnings: list[dict[str, Any]]) -> list[str]:
    return [f"{w['resource']}: {w['message']}" for w in warnings]


def webshop() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = import_manifests(WEBSHOP.read_text())
    return result.topology.model_dump(mode="json"), result.warnings


def test_the_helm_rendered_web_shop_makes_its_nodes_and_edges() -> None:
    topology, warnings = webshop()

    assert [(n["node_id"], n["node_type"]) for n in topology["nodes"]] == [
        ("ingress.webshop", "ingress"),
        ("service.frontend", "service"),
        ("service.checkout", "service"),
        ("service.orders-db", "service"),
        ("service.redis-cache", "service"),
        ("deployment.frontend", "deployment"),
        ("deployment.checkout", "deployment"),
        ("deployment.redis-cache", "deployment"),
        ("statefulset.orders-db", "statefulset"),
    ]
    assert edges(topology) == {
        ("ingress.webshop", "service.frontend", "calls"),
        ("ingress.webshop", "service.checkout", "calls"),
        ("service.frontend", "deployment.frontend", "calls"),
        ("service.checkout", "deployment.checkout", "calls"),
        ("service.orders-db", "statefulset.orders-db", "calls"),
        ("service.redis-cache", "deployment.redis-cache", "calls"),
        # from the environment: a literal value, and two values of a ConfigMap taken with envFrom
        ("deployment.frontend", "service.checkout", "depends_on"),
        ("deployment.checkout", "service.orders-db", "depends_on"),
        ("deployment.checkout", "service.redis-cache", "depends_on"),
    }
    checkout_db = next(
        e
        for e in topology["edges"]
        if e["target_node_id"] == "service.orders-db" and e["relation_type"] == "depends_on"
    )
    assert checkout_db["attributes"] == {"env": ["DATABASE_URL"]}
    assert topology["allow_isolated_nodes"] is False
    assert topology["global_supervisor"]["coordination_strategy"] == "hierarchical"

    # Everything not understood, in the order of the documents; the ConfigMap was used, so it is no warning.
    assert messages(warnings) == [
        "ServiceAccount shop/webshop: kind ServiceAccount makes no node of a topology; ignored",
        "Secret shop/orders-db-credentials: Secrets are never read (no secret enters a topology); ignored",
        "StatefulSet shop/orders-db: postgres_dsn carries no password (Secrets are never read): add the "
        "credentials of a read-only user to it before running the team",
        "HorizontalPodAutoscaler shop/checkout: kind HorizontalPodAutoscaler makes no node of a topology; ignored",
    ]
    assert [w["document"] for w in warnings] == [1, 2, 11, 12]


def test_attributes_carry_what_the_probe_tools_read() -> None:
    topology, _ = webshop()

    ingress = node(topology, "ingress.webshop")
    assert ingress["attributes"]["url"] == "https://shop.example.com/"
    assert ingress["attributes"]["tls_hosts"] == ["shop.example.com"]
    assert ingress["attributes"]["ingress_class"] == "nginx"
    assert ingress["agents"][0]["tools"] == ["http_check", "dns_lookup", "tls_certificate"]

    # The readiness probe's path, on the Service port whose targetPort is the probe's (named) port.
    frontend = node(topology, "deployment.frontend")
    assert frontend["attributes"]["url"] == "http://frontend.shop.svc.cluster.local:80/healthz"
    assert frontend["attributes"]["images"] == ["ghcr.io/example/webshop-frontend:1.14.2"]
    assert frontend["attributes"]["replicas"] == 3
    assert frontend["attributes"]["namespace"] == "shop"
    assert frontend["attributes"]["labels"]["app.kubernetes.io/version"] == "1.14.2"
    assert frontend["attributes"]["ports"] == [{"name": "http", "port": 3000}]
    assert frontend["agents"][0]["tools"] == ["http_check", "tcp_check"]
    service = node(topology, "service.checkout")
    assert service["attributes"]["url"] == "http://checkout.shop.svc.cluster.local:8080/ready"
    assert (service["attributes"]["host"], service["attributes"]["port"]) == ("checkout.shop.svc.cluster.local", 8080)
    assert [p["name"] for p in service["attributes"]["ports"]] == ["http", "metrics"]

    redis = node(topology, "deployment.redis-cache")
    assert redis["attributes"]["redis_url"] == "redis://redis-cache.shop.svc.cluster.local:6379/0"
    assert [a["tools"] for a in redis["agents"]] == [["tcp_check"], ["redis_info"]]
    database = node(topology, "statefulset.orders-db")
    assert database["attributes"]["postgres_dsn"] == "postgresql://shop@orders-db.shop.svc.cluster.local:5432/orders"
    assert node(topology, "service.orders-db")["attributes"]["headless"] is True
    assert "url" not in database["attributes"]  # an exec probe gives no URL
    # No secret value anywhere: not the Secret's data, not the variables taken from it.
    assert "c3VwZXItc2VjcmV0" not in json.dumps(topology)


def test_the_committed_example_topology_is_what_the_importer_makes_now() -> None:
    topology, warnings = webshop()
    committed = json.loads(WEBSHOP_TOPOLOGY.read_text())
    assert committed == {"topology": topology, "warnings": warnings}, (
        "regenerate with: aiops-executor import kubernetes examples/kubernetes/webshop.yaml "
        "> examples/kubernetes/webshop-topology.json"
    )


def test_a_kubectl_list_across_namespaces() -> None:
    result = import_manifests(KUBECTL_LIST, Defaults(model_provider="openai-prod", model_id="gpt-4o-mini"))
    topology = result.topology.model_dump(mode="json")

    assert [n["node_id"] for n in topology["nodes"]] == [
        "service.payments",
        "service.ledger",
        "deployment.payments",
        "daemonset.ledger",
    ]
    assert edges(topology) == {
        ("service.payments", "deployment.payments", "calls"),
        ("service.ledger", "daemonset.ledger", "calls"),
        ("deployment.payments", "service.ledger", "depends_on"),  # host:port, the full cluster name
    }
    payments = node(topology, "deployment.payments")
    assert payments["attributes"]["url"] == "https://payments.payments.svc.cluster.local:443/health/ready"
    ledger = node(topology, "service.ledger")
    assert "url" not in ledger["attributes"]  # a gRPC port: no HTTP probe
    assert ledger["agents"][0]["tools"] == ["tcp_check", "dns_lookup"]
    assert {n["agents"][0]["model_provider"] for n in topology["nodes"]} == {"openai-prod"}
    assert {n["supervisor_config"]["model_id"] for n in topology["nodes"]} == {"gpt-4o-mini"}
    # fraud.risk.svc is not in the manifests: no edge, no warning about it.
    assert result.warnings == []


def test_several_namespaces_qualify_the_node_ids_and_bare_names_resolve_only_in_their_own() -> None:
    manifests = """
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: a}
spec: {selector: {app: cache}, ports: [{port: 6379}]}
---
apiVersion: v1
kind: Service
metadata: {name: cache, namespace: b}
spec: {selector: {app: cache}, ports: [{port: 6379}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: a}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web:1, env: [{name: CACHE, value: "cache:6379"}]}]
"""
    result = import_manifests(manifests)
    topology = result.topology.model_dump(mode="json")
    assert [n["node_id"] for n in topology["nodes"]] == ["a.service.cache", "b.service.cache", "a.deployment.web"]
    assert edges(topology) == {("a.deployment.web", "a.service.cache", "depends_on")}
    assert topology["allow_isolated_nodes"] is True
    assert any("b.service.cache" in m and "not linked" in m for m in messages(result.warnings))


def test_mutual_dependencies_stay_free_of_cycles() -> None:
    manifests = "\n---\n".join(
        f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: app, image: app:1, env: [{{name: PEER, value: "http://{peer}"}}, {{name: SELF, value: "http://{name}"}}]}}]
"""
        for name, peer in (("alpha", "beta"), ("beta", "alpha"))
    )
    result = import_manifests(manifests)
    topology = result.topology.model_dump(mode="json")
    assert edges(topology) == {
        ("service.alpha", "deployment.alpha", "calls"),
        ("service.beta", "deployment.beta", "calls"),
        ("deployment.alpha", "service.beta", "depends_on"),
        ("deployment.beta", "service.alpha", "integrates"),  # would have closed alpha -> beta -> alpha
    }
    assert any("integrates" in m and "cycles" in m for m in messages(result.warnings))


def test_what_is_not_understood_is_warned_about() -> None:
    manifests = """
# a comment-only document, then an empty one
---
---
just a string
---
apiVersion: v1
kind: Service
metadata: {name: external-db}
spec: {ports: [{port: 5432}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        backend: {service: {name: missing, port: {number: 80}}}
      - path: /static
        backend: {resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: static}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
---
kind: Deployment
metadata: {}
"""
    result = import_manifests(manifests)
    found = messages(result.warnings)
    assert "None: not a Kubernetes object (a YAML mapping with kind and metadata); ignored" in found
    assert (
        "Service default/external-db: no selector: its endpoints are managed elsewhere, so no workload is linked to it"
        in found
    )
    assert (
        "Ingress default/web: web.example.com/: backend Service 'missing' is not in the manifests; not linked" in found
    )
    assert "Ingress default/web: web.example.com/static: a resource backend; not linked" in found
    assert "CronJob default/nightly: kind CronJob makes no node of a topology; ignored" in found
    assert "None: an object without kind or metadata.name; ignored" in found
    assert [n["node_id"] for n in result.topology.model_dump()["nodes"]] == ["ingress.web", "service.external-db"]


def test_older_ingress_versions_name_their_backends_differently() -> None:
    manifests = """
apiVersion: extensions/v1beta1
kind: Ingress
metadata:
  name: legacy
  annotations: {kubernetes.io/ingress.class: traefik}
spec:
  backend: {serviceName: web, servicePort: 80}
  rules:
  - host: legacy.example.com
    http:
      paths:
      - path: /api
        backend: {serviceName: api, servicePort: http}
---
{kind: Service, apiVersion: v1, metadata: {name: web}, spec: {selector: {app: web}, ports: [{port: 80}]}}
---
{kind: Service, apiVersion: v1, metadata: {name: api}, spec: {selector: {app: api}, ports: [{name: http, port: 8080}]}}
"""
    result = import_manifests(manifests)
    topology = result.topology.model_dump(mode="json")
    assert edges(topology) == {("ingress.legacy", "service.web", "calls"), ("ingress.legacy", "service.api", "calls")}
    ingress = node(topology, "ingress.legacy")
    assert ingress["attributes"]["ingress_class"] == "traefik"
    assert ingress["attributes"]["url"] == "http://legacy.example.com/api"
    assert node(topology, "service.api")["attributes"]["url"] == "http://api.default.svc.cluster.local:8080/"


@pytest.mark.parametrize(
    ("value", "hosts"),
    [
        ("redis://:pw@redis-cache:6379/0", {"redis-cache"}),
        ("jdbc:postgresql://orders-db.shop.svc.cluster.local:5432/orders", {"orders-db.shop.svc.cluster.local"}),
        ("host=orders-db port=5432 dbname=orders", {"orders-db", "5432", "orders"}),
        ("cache-0:6379,cache-1:6379", {"cache-0", "cache-1"}),
        ("http://checkout:8080/api/orders", {"checkout"}),
        ("/var/run/app.sock", set()),
        ("Hello, World!", set()),
    ],
)
def test_hosts_in_environment_values(value: str, hosts: set[str]) -> None:
    assert hosts_in(value) == hosts


@pytest.mark.parametrize(
    ("manifests", "document", "line"),
    [
        ("kind: Service\nmetadata: {name: a\n", 1, 3),  # an unclosed flow mapping, found at the end
        ("kind: Service\nmetadata:\n  name: a\n---\nkind: Deployment\nmetadata:\n  name: [b\n  x: y\n", 2, 8),
        ("a: 1\n---\nb: 2\n---\n\tc: 3\n", 3, 5),  # a tab where indentation is expected
    ],
)
def test_bad_yaml_names_the_document_and_the_line(manifests: str, document: int, line: int) -> None:
    with pytest.raises(ManifestError) as caught:
        import_manifests(manifests)
    assert (caught.value.document, caught.value.line) == (document, line)
    assert f"document {document}, line {line}," in caught.value.message


def test_nothing_to_import_is_an_error() -> None:
    with pytest.raises(ManifestError, match="no Deployment, StatefulSet, DaemonSet, Service or Ingress"):
        import_manifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")


def test_the_agents_tools_are_registered_builtin_tools() -> None:
    assert set(PROBE_TOOLS) <= default_registry().names()


# ----------------------------------------------------------------------------------------- over HTTP


@pytest.mark.parametrize("manifests", [WEBSHOP.read_text(), KUBECTL_LIST], ids=["helm", "kubectl-list"])
async def test_the_imported_topology_passes_team_validation_unchanged(
    client: httpx.AsyncClient, admin_headers: dict[str, str], manifests: str
) -> None:
    await add_simulator(client, admin_headers)
    imported = await client.post(IMPORT, json={"manifests": manifests}, headers=admin_headers)
    assert imported.status_code == 200, imported.text
    body = imported.json()
    assert set(body) == {"topology", "warnings"}

    created = await client.post(
        f"{API}/teams", json={"team_name": "imported", "topology": body["topology"]}, headers=admin_headers
    )
    assert created.status_code == 201, created.text
    team = await client.get(f"{API}/teams/{created.json()['team_id']}", headers=admin_headers)
    assert team.json()["topology"] == body["topology"]


async def test_the_import_endpoint_takes_defaults_and_refuses_bad_yaml_with_its_line(
    client: httpx.AsyncClient, role_headers: RoleHeaders
) -> None:
    operator = await role_headers("operator")
    body = {
        "manifests": KUBECTL_LIST,
        "defaults": {"model_provider": "p", "model_id": "m", "cluster_domain": "k8s.internal"},
    }
    imported = await client.post(IMPORT, json=body, headers=operator)
    assert imported.status_code == 200, imported.text
    payments = node(imported.json()["topology"], "deployment.payments")
    assert payments["attributes"]["url"] == "https://payments.payments.svc.k8s.internal:443/health/ready"
    assert payments["agents"][0]["model_provider"] == "p"

    manifests = "kind: Service\nmetadata: {name: a}\n---\nkind: Service\nmetadata:\n  name: b\n   labels: x\n"
    bad = await client.post(IMPORT, json={"manifests": manifests}, headers=operator)
    error = assert_error(bad, 422, "VALIDATION_ERROR")
    assert (error["details"]["document"], error["details"]["line"], error["details"]["column"]) == (2, 7, 10)
    assert "document 2, line 7, column 10: mapping values are not allowed" in error["error_message"]
    assert error["details"]["errors"][0]["loc"] == ["body", "manifests"]

    assert_error(
        await client.post(IMPORT, json={"manifests": "kind: List\nitems: []\n"}, headers=operator),
        422,
        "VALIDATION_ERROR",
    )
    assert_error(
        await client.post(IMPORT, json={"manifests": KUBECTL_LIST, "extra": 1}, headers=operator),
        422,
        "VALIDATION_ERROR",
    )
    viewer = await role_headers("viewer")
    assert_error(await client.post(IMPORT, json={"manifests": KUBECTL_LIST}, headers=viewer), 403, "FORBIDDEN")
    assert_error(await client.post(IMPORT, json={"manifests": KUBECTL_LIST}), 401, "UNAUTHORIZED")


# ----------------------------------------------------------------------------------------- the CLI


def test_the_cli_prints_the_same_document_as_the_api(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_app, ["import", "kubernetes", str(WEBSHOP)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(WEBSHOP_TOPOLOGY.read_text())
    assert "warning: document 2 (Secret shop/orders-db-credentials): Secrets are never read" in result.stderr

    team = CliRunner().invoke(
        cli_app,
        ["import", "kubernetes", "-", "--team-name", "webshop", "--defaults", '{"model_id": "sim-2"}'],
        input=KUBECTL_LIST,
    )
    assert team.exit_code == 0, team.output
    spec = json.loads(team.stdout)
    assert spec["team_name"] == "webshop" and spec["timeout_seconds"] == 300
    assert {n["agents"][0]["model_id"] for n in spec["topology"]["nodes"]} == {"sim-2"}


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["-"], "a: [1\n", "-: not valid YAML: document 1, line 2, column 1:"),
        (["missing.yaml"], None, "cannot read missing.yaml: No such file or directory"),
        (["-", "--defaults", '{"model": 1}'], "", "invalid --defaults: model: Extra inputs are not permitted"),
        (["-", "--defaults", "{"], "", "invalid --defaults:"),
    ],
)
def test_the_cli_fails_in_one_line_with_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], stdin: str | None, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_app, ["import", "kubernetes", *args], input=stdin)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
