"""Kubernetes manifests -> a topology (contract: Triggers and imports). A pure library: no web, no database.

``import_manifests`` reads multi-document YAML as ``kubectl get -o yaml`` and ``helm template`` print it
(``---`` separators, comments, empty documents, ``kind: List`` with ``items``) and returns a ``Topology`` that
``POST /teams`` accepts unchanged, plus a warning for everything it did not understand or could not derive.

- Nodes: one per Deployment, StatefulSet, DaemonSet, Service and Ingress; ``node_type`` is the kind in lower
  case; ``node_id`` is ``<kind>.<name>`` (``<namespace>.<kind>.<name>`` when the manifests span several
  namespaces). Attributes: namespace, labels, ports, images and, where derivable, what the built-in probe
  tools read: ``url`` (``http_check``), ``host``/``port`` (``tcp_check``, ``dns_lookup``), ``redis_url``
  (``redis_info``), ``postgres_dsn`` (``postgres_diagnostics``).
- Probe URLs are cluster DNS names (``<service>.<namespace>.svc.<cluster domain>``): the service is expected
  to run inside the cluster, as an in-cluster monitoring tool does. A workload's URL is its readiness probe's
  ``httpGet`` path on the Service port that targets the probe's port; a Service's is that same path, or ``/``
  on a port named or declared HTTP.
- Edges: Ingress -> Service (``calls``, by the Ingress backends), Service -> workload (``calls``, by the
  Service's selector matching the pod template's labels), workload -> Service (``depends_on``) when a
  container's environment (literal values and ConfigMaps in the same manifests) names the Service's DNS name
  with a host part, as in ``redis://redis-cache:6379/0`` or ``orders-db.shop.svc.cluster.local``. A
  ``depends_on`` edge that would close a cycle, or make the dependency chain deeper than a team may be,
  becomes ``integrates`` (no ordering) and says so in a warning.
- Agents: one prober per node with the built-in tools its attributes allow, plus a datastore agent for Redis
  and PostgreSQL images. No secret is ever read: Secrets are not looked into, and a derived DSN carries no
  password (a warning says to add one).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiops_executor.engine.ordering import OrderingGraph
from aiops_executor.engine.topology import MAX_DEPTH, MAX_NODES, RelationType, Topology
from aiops_executor.imports.manifests import (
    WORKLOAD_KINDS,
    ImportNote,
    ImportStopped,
    ManifestError,
    ManifestObject,
    as_list,
    as_map,
    as_str,
    never,
    port_ref,
    read_objects,
    string_map,
)
from aiops_executor.imports.node_specs import node_spec
from aiops_executor.imports.resources import (
    HOST_NAME,
    Edge,
    Ingress,
    Resource,
    Service,
    ServicePort,
    Workload,
    hosts_in,
    is_http,
    port_named,
    secret_env,
)

# The built-in tools the agents get (``tools.builtin``; named here so that the converter needs none of their
# client libraries, and checked against the registry by the tests).
HTTP_CHECK = "http_check"
TCP_CHECK = "tcp_check"
DNS_LOOKUP = "dns_lookup"
TLS_CERTIFICATE = "tls_certificate"
REDIS_INFO = "redis_info"
POSTGRES_DIAGNOSTICS = "postgres_diagnostics"
PROBE_TOOLS = (HTTP_CHECK, TCP_CHECK, DNS_LOOKUP, TLS_CERTIFICATE, REDIS_INFO, POSTGRES_DIAGNOSTICS)

DEFAULT_PROVIDER = "local-sim"
DEFAULT_MODEL = "sim-1"
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
MAX_NODE_ID = 64
# Bounds checked before any linking (which compares workloads with Services): a manifest past them is refused
# at once, whatever its size, rather than after minutes of work (the number of objects: ``manifests``).
MAX_VARIABLES_PER_WORKLOAD = 5_000
REDIS_IMAGES = re.compile(r"(^|/)(redis|redis-stack-server|valkey|keydb)(:|@|$)")
POSTGRES_IMAGES = re.compile(r"(^|/)(postgres|postgresql|postgis|timescaledb[\w-]*|pgvector)(:|@|$)")
# libyaml's loader when PyYAML has it (ten times faster on a large manifest set); the same safe constructors.


@dataclass(frozen=True)
class Defaults:
    """The model every imported agent and supervisor runs on, and the cluster's DNS domain."""

    model_provider: str = DEFAULT_PROVIDER
    model_id: str = DEFAULT_MODEL
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


@dataclass
class ImportResult:
    topology: Topology
    warnings: list[dict[str, Any]]


class _Importer:
    def __init__(self, defaults: Defaults) -> None:
        self.defaults = defaults
        self.warnings: list[ImportNote] = []
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}
        self.workloads: list[Workload] = []
        self.services: list[Service] = []
        self.ingresses: list[Ingress] = []
        self.edges: list[Edge] = []

    def warn(self, message: str, obj: ManifestObject | None = None) -> None:
        self.warnings.append(ImportNote(message, obj.document if obj else None, obj.ref if obj else None))

    # -- objects

    def check_size(self) -> None:
        """A team has at most MAX_NODES nodes: past that, refused before any linking."""
        count = len(self.workloads) + len(self.services) + len(self.ingresses)
        if count > MAX_NODES:
            raise ManifestError(
                f"the manifests make {count} nodes; a team has at most {MAX_NODES}: "
                "import one namespace or application at a time"
            )

    def read(self, objects: list[ManifestObject]) -> None:
        for obj in objects:
            if obj.kind == "ConfigMap":
                self.config_maps[(obj.namespace, obj.name)] = string_map(obj.body.get("data"))
        seen: set[tuple[str, str, str]] = set()
        for obj in objects:
            key = (obj.kind, obj.namespace, obj.name)
            if obj.kind == "ConfigMap":
                continue
            if key in seen:
                self.warn("defined more than once; the first definition is used", obj)
                continue
            seen.add(key)
            if obj.kind in WORKLOAD_KINDS:
                self.workloads.append(self._workload(obj))
            elif obj.kind == "Service":
                self.services.append(self._service(obj))
            else:
                self.ingresses.append(self._ingress(obj))

    def _workload(self, obj: ManifestObject) -> Workload:
        spec = as_map(obj.body.get("spec"))
        template = as_map(spec.get("template"))
        pod_spec = as_map(template.get("spec"))
        node = Workload(obj, pod_labels=string_map(as_map(template.get("metadata")).get("labels")))
        node.containers = [c for c in as_list(pod_spec.get("containers")) if isinstance(c, dict)]
        if not node.containers:
            self.warn("no containers in spec.template.spec.containers", obj)
        for container in node.containers:
            for port in as_list(container.get("ports")):
                number = port_ref(as_map(port).get("containerPort"))
                if isinstance(number, int):
                    node.container_ports[as_str(as_map(port).get("name")) or str(number)] = number
            probe = as_map(as_map(container.get("readinessProbe")).get("httpGet"))
            if node.probe is None and probe:
                node.probe = {
                    "path": as_str(probe.get("path")) or "/",
                    "port": port_ref(probe.get("port")),
                    "scheme": (as_str(probe.get("scheme")) or "HTTP").lower(),
                }
            node.env.extend(self._environment(obj, container))
            if len(node.env) > MAX_VARIABLES_PER_WORKLOAD:
                del node.env[MAX_VARIABLES_PER_WORKLOAD:]
                self.warn(f"more than {MAX_VARIABLES_PER_WORKLOAD:,} environment variables: the rest are not read", obj)
                break
        if not node.pod_labels:
            self.warn("the pod template has no labels: no Service can select it", obj)
        return node

    def _environment(self, obj: ManifestObject, container: dict[str, Any]) -> list[tuple[str, str]]:
        variables: list[tuple[str, str]] = []
        for source in as_list(container.get("envFrom")):
            ref = as_str(as_map(as_map(source).get("configMapRef")).get("name"))
            if ref is not None and (obj.namespace, ref) in self.config_maps:
                variables.extend(self.config_maps[(obj.namespace, ref)].items())
            if len(variables) > MAX_VARIABLES_PER_WORKLOAD:  # aliases can repeat a ConfigMap reference at will
                break
        for entry in as_list(container.get("env")):
            entry = as_map(entry)
            name = as_str(entry.get("name"))
            if name is None:
                continue
            value = entry.get("value")
            if isinstance(value, str):
                variables.append((name, value))
                continue
            key_ref = as_map(as_map(entry.get("valueFrom")).get("configMapKeyRef"))
            data = self.config_maps.get((obj.namespace, as_str(key_ref.get("name")) or ""), {})
            key = as_str(key_ref.get("key"))
            if key is not None and key in data:
                variables.append((name, data[key]))
        return variables

    def _service(self, obj: ManifestObject) -> Service:
        spec = as_map(obj.body.get("spec"))
        node = Service(obj, selector=string_map(spec.get("selector")), external_name=as_str(spec.get("externalName")))
        for entry in as_list(spec.get("ports")):
            entry = as_map(entry)
            port = port_ref(entry.get("port"))
            if not isinstance(port, int):
                self.warn("a port without a numeric port; ignored", obj)
                continue
            node.ports.append(
                ServicePort(
                    name=as_str(entry.get("name")),
                    port=port,
                    target=port_ref(entry.get("targetPort")) or port,
                    protocol=as_str(entry.get("protocol")) or "TCP",
                    app_protocol=as_str(entry.get("appProtocol")),
                )
            )
        if not node.selector and node.external_name is None:
            self.warn("no selector: its endpoints are managed elsewhere, so no workload is linked to it", obj)
        return node

    def _ingress(self, obj: ManifestObject) -> Ingress:
        spec = as_map(obj.body.get("spec"))
        node = Ingress(obj)
        for tls in as_list(spec.get("tls")):
            node.tls_hosts.extend(h for h in as_list(as_map(tls).get("hosts")) if isinstance(h, str))
        default = as_map(spec.get("defaultBackend")) or as_map(spec.get("backend"))
        if default:
            self._backend(node, "(default backend)", default)
        for rule in as_list(spec.get("rules")):
            rule = as_map(rule)
            host = as_str(rule.get("host")) or "*"
            for path in as_list(as_map(rule.get("http")).get("paths")):
                path = as_map(path)
                self._backend(node, f"{host}{as_str(path.get('path')) or '/'}", as_map(path.get("backend")))
        if not node.backends:
            self.warn("no backend Service in its rules", obj)
        return node

    def _backend(self, node: Ingress, rule: str, backend: dict[str, Any]) -> None:
        service = as_map(backend.get("service"))
        if service:  # networking.k8s.io/v1
            name = as_str(service.get("name"))
            port_spec = as_map(service.get("port"))
            port = port_ref(port_spec.get("number")) or port_ref(port_spec.get("name"))
        else:  # networking.k8s.io/v1beta1 and extensions/v1beta1
            name = as_str(backend.get("serviceName"))
            port = port_ref(backend.get("servicePort"))
        if name is None:
            what = "a resource backend" if backend.get("resource") else "a backend without a service name"
            self.warn(f"{rule}: {what}; not linked", node.obj)
            return
        node.backends.append((rule, name, port))

    # -- names

    def assign_ids(self) -> None:
        nodes = self.nodes
        several_namespaces = len({n.obj.namespace for n in nodes}) > 1
        taken: set[str] = set()
        for node in nodes:
            parts = [node.obj.namespace] if several_namespaces else []
            base = ".".join([*parts, node.kind.lower(), node.obj.name])
            node_id = re.sub(r"[^A-Za-z0-9_.-]", "-", base)
            if len(node_id) > MAX_NODE_ID or node_id in taken:
                digest = hashlib.sha256(base.encode()).hexdigest()[:8]
                node_id = f"{node_id[: MAX_NODE_ID - 9]}-{digest}"
            taken.add(node_id)
            node.node_id = node_id

    @property
    def nodes(self) -> list[Resource]:
        return [*self.ingresses, *self.services, *self.workloads]

    def service_host(self, service: Service) -> str:
        if service.external_name is not None:
            return service.external_name
        return f"{service.obj.name}.{service.obj.namespace}.svc.{self.defaults.cluster_domain}"

    def dns_names(self, service: Service) -> set[str]:
        name, namespace = service.obj.name, service.obj.namespace
        return {f"{name}.{namespace}", f"{name}.{namespace}.svc", self.service_host(service)}

    # -- linking

    def link(self) -> None:
        services_by_name = {(s.obj.namespace, s.obj.name): s for s in self.services}
        for ingress in self.ingresses:
            linked: dict[str, list[str]] = {}
            for rule, name, _port in ingress.backends:
                service = services_by_name.get((ingress.obj.namespace, name))
                if service is None:
                    self.warn(f"{rule}: backend Service {name!r} is not in the manifests; not linked", ingress.obj)
                    continue
                linked.setdefault(service.node_id, []).append(rule)
            for target, rules in linked.items():
                self.edges.append(Edge(ingress.node_id, target, RelationType.calls, {"rules": rules}))
        for service in self.services:
            if not service.selector:
                continue
            selected = [
                w
                for w in self.workloads
                if w.obj.namespace == service.obj.namespace
                and w.pod_labels
                and all(w.pod_labels.get(k) == v for k, v in service.selector.items())
            ]
            if not selected:
                self.warn("its selector matches no workload in the manifests", service.obj)
            for workload in selected:
                self.edges.append(
                    Edge(service.node_id, workload.node_id, RelationType.calls, {"selector": service.selector})
                )
        self._dependencies()

    def _dependencies(self) -> None:
        graph_pairs = [(e.target, e.source) for e in self.edges]  # calls: the target runs first
        ids = [n.node_id for n in self.nodes]
        for workload in self.workloads:
            exposes = {e.source for e in self.edges if e.target == workload.node_id}
            for service in self.services:
                if service.node_id in exposes:
                    continue  # its own Service: a workload naming itself is no dependency
                variables = self._variables_naming(workload, service)
                if not variables:
                    continue
                attributes = {"env": variables}
                pairs = [*graph_pairs, (service.node_id, workload.node_id)]
                graph = OrderingGraph.build(ids, pairs)
                relation = RelationType.depends_on
                if graph.find_cycle() is not None:
                    relation = RelationType.integrates
                    self.warn(
                        f"depends on Service {service.obj.name} ({', '.join(variables)}), which depends on it in "
                        "turn: linked as 'integrates' (no order) to keep the topology free of cycles",
                        workload.obj,
                    )
                elif graph.depth() > MAX_DEPTH:
                    relation = RelationType.integrates
                    self.warn(
                        f"depends on Service {service.obj.name}, but the dependency chain would be deeper than "
                        f"{MAX_DEPTH}: linked as 'integrates' (no order)",
                        workload.obj,
                    )
                else:
                    graph_pairs = pairs
                self.edges.append(Edge(workload.node_id, service.node_id, relation, attributes))

    def _variables_naming(self, workload: Workload, service: Service) -> list[str]:
        names = self.dns_names(service)
        same_namespace = workload.obj.namespace == service.obj.namespace
        found: list[str] = []
        for variable, value in workload.env:
            hosts = hosts_in(value)
            if any(h in names or (same_namespace and h == service.obj.name) for h in hosts):
                found.append(variable)
        return sorted(set(found))

    # -- attributes and agents

    def describe(self) -> None:
        for ingress in self.ingresses:
            self._describe_ingress(ingress)
        for service in self.services:
            self._describe_service(service)
        for workload in self.workloads:
            self._describe_workload(workload)

    def _common(self, node: Resource) -> dict[str, Any]:
        metadata = as_map(node.obj.body.get("metadata"))
        return {
            "kind": node.kind,
            "namespace": node.obj.namespace,
            "name": node.obj.name,
            "labels": string_map(metadata.get("labels")),
        }

    def _selected_by(self, workload: Workload) -> list[Service]:
        sources = {e.source for e in self.edges if e.target == workload.node_id and e.relation is RelationType.calls}
        return [s for s in self.services if s.node_id in sources]

    def _workloads_of(self, service: Service) -> list[Workload]:
        targets = {e.target for e in self.edges if e.source == service.node_id and e.relation is RelationType.calls}
        return [w for w in self.workloads if w.node_id in targets]

    def _service_port_for(self, service: Service, workload: Workload, port: int | str | None) -> ServicePort | None:
        """The Service port whose targetPort is the container port ``port`` (by number or name)."""
        if port is None:
            return None
        number = workload.container_ports.get(port) if isinstance(port, str) else port
        names = {name for name, value in workload.container_ports.items() if value == number}
        for candidate in service.ports:
            if candidate.target == number or candidate.target == port or candidate.target in names:
                return candidate
        return None

    def _probe_url(self, service: Service, workload: Workload) -> str | None:
        probe = workload.probe
        if probe is None:
            return None
        port = self._service_port_for(service, workload, probe["port"])
        if port is None:
            return None
        scheme = "https" if probe["scheme"] == "https" else "http"
        return f"{scheme}://{self.service_host(service)}:{port.port}{probe['path']}"

    def _describe_ingress(self, ingress: Ingress) -> None:
        spec = as_map(ingress.obj.body.get("spec"))
        attributes = self._common(ingress)
        class_name = as_str(spec.get("ingressClassName")) or as_str(
            as_map(as_map(ingress.obj.body.get("metadata")).get("annotations")).get("kubernetes.io/ingress.class")
        )
        if class_name:
            attributes["ingress_class"] = class_name
        attributes["rules"] = [{"rule": rule, "service": name, "port": port} for rule, name, port in ingress.backends]
        if ingress.tls_hosts:
            attributes["tls_hosts"] = ingress.tls_hosts
        rule_hosts = [rule.split("/", 1)[0] for rule, _, _ in ingress.backends]
        hosts = [h for h in rule_hosts if HOST_NAME.match(h)]
        if hosts:
            host = hosts[0]
            path = next(rule[len(host) :] for rule, _, _ in ingress.backends if rule.split("/", 1)[0] == host)
            secure = host in ingress.tls_hosts
            attributes["host"] = host
            attributes["port"] = 443 if secure else 80
            attributes["url"] = f"{'https' if secure else 'http'}://{host}{path or '/'}"
            ingress.tools = [HTTP_CHECK, DNS_LOOKUP] + ([TLS_CERTIFICATE] if secure else [])
        else:
            self.warn("no rule names a host: no URL to probe from outside", ingress.obj)
        ingress.attributes = attributes

    def _describe_service(self, service: Service) -> None:
        spec = as_map(service.obj.body.get("spec"))
        attributes = self._common(service)
        attributes["type"] = as_str(spec.get("type")) or "ClusterIP"
        if spec.get("clusterIP") == "None":
            attributes["headless"] = True
        if service.selector:
            attributes["selector"] = service.selector
        attributes["ports"] = [
            {"name": p.name, "port": p.port, "target_port": p.target, "protocol": p.protocol} for p in service.ports
        ]
        tcp_ports = [p for p in service.ports if p.protocol == "TCP"]
        if tcp_ports or service.external_name is not None:
            attributes["host"] = self.service_host(service)
            service.tools = [DNS_LOOKUP]
        if tcp_ports:
            attributes["port"] = tcp_ports[0].port
            service.tools.insert(0, TCP_CHECK)
        url = next((u for w in self._workloads_of(service) if (u := self._probe_url(service, w))), None)
        if url is None:
            http = next((p for p in tcp_ports if is_http(p)), None)
            if http is not None:
                scheme = "https" if (http.name or "").startswith("https") or http.app_protocol == "https" else "http"
                url = f"{scheme}://{self.service_host(service)}:{http.port}/"
        if url is not None:
            attributes["url"] = url
            service.tools.insert(0, HTTP_CHECK)
        service.attributes = attributes

    def _describe_workload(self, workload: Workload) -> None:
        spec = as_map(workload.obj.body.get("spec"))
        attributes = self._common(workload)
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and not isinstance(replicas, bool):
            attributes["replicas"] = replicas
        attributes["images"] = [c["image"] for c in workload.containers if isinstance(c.get("image"), str)]
        attributes["ports"] = [{"name": name, "port": port} for name, port in workload.container_ports.items()]
        if workload.probe is not None:
            attributes["readiness_probe"] = dict(workload.probe)
        services = self._selected_by(workload)
        if services:
            service = services[0]
            attributes["service"] = service.obj.name
            target = workload.probe["port"] if workload.probe else None
            port = self._service_port_for(service, workload, target) or (service.ports[0] if service.ports else None)
            if port is not None:
                attributes["host"] = self.service_host(service)
                attributes["port"] = port.port
                workload.tools.append(TCP_CHECK)
            url = self._probe_url(service, workload)
            if url is not None:
                attributes["url"] = url
                workload.tools.insert(0, HTTP_CHECK)
            elif workload.probe is not None:
                self.warn(
                    f"its readiness probe's port {workload.probe['port']} is not exposed by Service "
                    f"{service.obj.name}: no probe URL",
                    workload.obj,
                )
            self._datastore(workload, service, attributes)
        else:
            self.warn("no Service in the manifests selects it: nothing to probe it with", workload.obj)
        workload.attributes = attributes

    def _datastore(self, workload: Workload, service: Service, attributes: dict[str, Any]) -> None:
        images = attributes["images"]
        env = dict(workload.env)
        host = self.service_host(service)
        if any(REDIS_IMAGES.search(image) for image in images):
            port = self._service_port_for(service, workload, 6379) or port_named(service, "redis") or service.ports[0]
            attributes["redis_url"] = f"redis://{host}:{port.port}/0"
            workload.datastore_tools = [REDIS_INFO]
            if any("PASSWORD" in name for name in env) or any("PASSWORD" in name for name in secret_env(workload)):
                self.warn("Redis seems to require a password: add it to the node's redis_url", workload.obj)
        elif any(POSTGRES_IMAGES.search(image) for image in images):
            port = (
                self._service_port_for(service, workload, 5432) or port_named(service, "postgres") or service.ports[0]
            )
            user = env.get("POSTGRES_USER") or env.get("POSTGRESQL_USERNAME") or "postgres"
            database = env.get("POSTGRES_DB") or env.get("POSTGRESQL_DATABASE") or user
            if HOST_NAME.match(user.lower()) is None or re.fullmatch(r"[\w.-]+", database) is None:
                return
            attributes["postgres_dsn"] = f"postgresql://{user}@{host}:{port.port}/{database}"
            workload.datastore_tools = [POSTGRES_DIAGNOSTICS]
            self.warn(
                "postgres_dsn carries no password (Secrets are never read): add the credentials of a read-only "
                "user to it before running the team",
                workload.obj,
            )

    # -- the topology

    def topology(self) -> Topology:
        nodes = self.nodes
        if not nodes:
            raise ManifestError(
                "the manifests contain no Deployment, StatefulSet, DaemonSet, Service or Ingress to import"
            )
        if len(nodes) > MAX_NODES:
            raise ManifestError(
                f"the manifests make {len(nodes)} nodes; a team has at most {MAX_NODES}: "
                "import one namespace or application at a time"
            )
        linked = {e.source for e in self.edges} | {e.target for e in self.edges}
        isolated = [n.node_id for n in nodes if n.node_id not in linked]
        if isolated and len(nodes) > 1:
            self.warn(f"not linked to any other resource: {', '.join(isolated)} (allow_isolated_nodes is set)")
        model = {"model_provider": self.defaults.model_provider, "model_id": self.defaults.model_id}
        return Topology.model_validate(
            {
                "nodes": [node_spec(node, model) for node in nodes],
                "edges": [
                    {
                        "source_node_id": e.source,
                        "target_node_id": e.target,
                        "relation_type": e.relation.value,
                        "attributes": e.attributes,
                    }
                    for e in self.edges
                ],
                "global_supervisor": {
                    **model,
                    "system_prompt": "You coordinate the investigation of a Kubernetes application: "
                    "the resources a request passes through, from the ingress to the data stores.",
                    "coordination_strategy": "hierarchical",
                },
                "allow_isolated_nodes": bool(isolated) and len(nodes) > 1,
            }
        )


def import_manifests(
    text: str, defaults: Defaults | None = None, *, stopped: Callable[[], bool] = never
) -> ImportResult:
    """The topology of the Kubernetes objects in ``text`` (multi-document YAML), and the warnings. ``stopped`` is
    consulted after each document is read, where the time goes (past that the objects are few and bounded);
    once it is true the import raises ``ImportStopped``."""
    importer = _Importer(defaults or Defaults())
    objects = read_objects(text, importer.warnings, stopped)
    if stopped():
        raise ImportStopped
    importer.read(objects)
    importer.check_size()
    importer.assign_ids()
    importer.link()
    importer.describe()
    topology = importer.topology()
    # In the order of the manifests (sorted is stable: notes about one document keep their order).
    notes = sorted(importer.warnings, key=lambda note: note.document if note.document is not None else 1 << 30)
    return ImportResult(topology, [note.as_dict() for note in notes])
