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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from aiops_executor.engine.ordering import OrderingGraph
from aiops_executor.engine.topology import MAX_DEPTH, MAX_NODES, RelationType, Topology
from aiops_executor.imports.yaml_bounds import YamlTooLarge, bounded_documents

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
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
NODE_KINDS = (*WORKLOAD_KINDS, "Service", "Ingress")
# Read for the environment of workloads; no node, no warning.
USED_KINDS = ("ConfigMap",)
MAX_NODE_ID = 64
# Bounds checked before any linking (which compares workloads with Services): a manifest past them is refused
# at once, whatever its size, rather than after minutes of work.
MAX_OBJECTS = 1_000
MAX_VARIABLES_PER_WORKLOAD = 5_000
HTTP_PORT_NAMES = re.compile(r"^(https?|web|http-.*|https-.*)$")
DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = re.compile(rf"^{DNS_LABEL}(?:\.{DNS_LABEL})*$")
REDIS_IMAGES = re.compile(r"(^|/)(redis|redis-stack-server|valkey|keydb)(:|@|$)")
POSTGRES_IMAGES = re.compile(r"(^|/)(postgres|postgresql|postgis|timescaledb[\w-]*|pgvector)(:|@|$)")
ENV_SEPARATORS = re.compile(r"[\s,;]+")
# libyaml's loader when PyYAML has it (ten times faster on a large manifest set); the same safe constructors.


@dataclass(frozen=True)
class Defaults:
    """The model every imported agent and supervisor runs on, and the cluster's DNS domain."""

    model_provider: str = DEFAULT_PROVIDER
    model_id: str = DEFAULT_MODEL
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN


class ImportStopped(Exception):
    """The caller's ``stopped()`` turned true (its client went away): the import ended part-way."""


def _never() -> bool:
    return False


class ManifestError(ValueError):
    """The manifests cannot be read: not YAML (``line`` and ``column`` are 1-based), or nothing to import."""

    def __init__(
        self, message: str, *, document: int | None = None, line: int | None = None, column: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.document = document
        self.line = line
        self.column = column


@dataclass(frozen=True)
class ImportNote:
    message: str
    document: int | None = None
    resource: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"document": self.document, "resource": self.resource, "message": self.message}


@dataclass
class ImportResult:
    topology: Topology
    warnings: list[dict[str, Any]]


# --------------------------------------------------------------------------------------------- reading


@dataclass
class _Object:
    kind: str
    name: str
    namespace: str
    document: int
    body: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _mark(exc: yaml.YAMLError) -> tuple[int | None, int | None, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context} and {problem}" if context and problem else str(problem)
    if mark is None:
        return None, None, text
    return mark.line + 1, mark.column + 1, text


def _documents(text: str) -> Iterator[tuple[int, Any]]:
    """(1-based document number, parsed document) of a multi-document YAML stream, read within bounds."""
    number = 0
    try:
        for number, document in bounded_documents(text):
            yield number, document
    except YamlTooLarge as exc:
        raise ManifestError(f"the manifests are too large to import: {exc}", document=exc.document) from None
    except yaml.YAMLError as exc:
        line, column, problem = _mark(exc)
        where = f"document {number + 1}" + (f", line {line}, column {column}" if line is not None else "")
        raise ManifestError(
            f"not valid YAML: {where}: {problem}", document=number + 1, line=line, column=column
        ) from None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _labels(value: Any) -> dict[str, str]:
    """A string-to-string map (labels, selectors, ConfigMap data). Kubernetes takes only strings there; an
    unquoted ``true`` or ``8080`` in YAML is something ``kubectl apply`` refuses, so it is dropped."""
    return {k: v for k, v in _map(value).items() if isinstance(k, str) and isinstance(v, str)}


def _port_ref(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value:
        return int(value) if value.isdigit() else value
    return None


def _objects(text: str, warnings: list[ImportNote], stopped: Callable[[], bool]) -> list[_Object]:
    found: list[_Object] = []
    for number, document in _documents(text):
        if stopped():
            raise ImportStopped
        if document is None:
            continue  # an empty document (Helm prints them for disabled templates)
        if not isinstance(document, dict):
            warnings.append(
                ImportNote("not a Kubernetes object (a YAML mapping with kind and metadata); ignored", number)
            )
            continue
        kind = _str(document.get("kind"))
        items = document.get("items")
        if kind is not None and kind.endswith("List") and isinstance(items, list):
            for index, item in enumerate(items):
                _collect(item, number, warnings, found, f"item {index}")
        else:
            _collect(document, number, warnings, found, None)
        if len(found) > MAX_OBJECTS:
            raise ManifestError(
                f"the manifests hold more than {MAX_OBJECTS:,} Kubernetes objects: import one namespace or "
                "application at a time",
                document=number,
            )
    return found


def _collect(
    document: Any, number: int, warnings: list[ImportNote], found: list[_Object], position: str | None
) -> None:
    where = f"{position}: " if position else ""
    if not isinstance(document, dict):
        warnings.append(ImportNote(f"{where}not a Kubernetes object; ignored", number))
        return
    kind = _str(document.get("kind"))
    metadata = _map(document.get("metadata"))
    name = _str(metadata.get("name"))
    if kind is None or name is None:
        warnings.append(ImportNote(f"{where}an object without kind or metadata.name; ignored", number))
        return
    namespace = _str(metadata.get("namespace")) or "default"
    obj = _Object(kind, name, namespace, number, document)
    if kind == "Secret":
        warnings.append(ImportNote("Secrets are never read (no secret enters a topology); ignored", number, obj.ref))
        return
    if kind not in NODE_KINDS and kind not in USED_KINDS:
        warnings.append(ImportNote(f"kind {kind} makes no node of a topology; ignored", number, obj.ref))
        return
    found.append(obj)


# --------------------------------------------------------------------------------------------- model


@dataclass
class _ServicePort:
    name: str | None
    port: int
    target: int | str
    protocol: str
    app_protocol: str | None


@dataclass
class _Node:
    obj: _Object
    node_id: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)
    datastore_tools: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.obj.kind


@dataclass
class _Workload(_Node):
    pod_labels: dict[str, str] = field(default_factory=dict)
    containers: list[dict[str, Any]] = field(default_factory=list)
    container_ports: dict[str, int] = field(default_factory=dict)  # name -> number
    probe: dict[str, Any] | None = None  # {"path", "port", "scheme"} of the first readiness httpGet
    env: list[tuple[str, str]] = field(default_factory=list)  # (variable, value)


@dataclass
class _Service(_Node):
    selector: dict[str, str] = field(default_factory=dict)
    ports: list[_ServicePort] = field(default_factory=list)
    external_name: str | None = None


@dataclass
class _Ingress(_Node):
    backends: list[tuple[str, str, int | str | None]] = field(default_factory=list)  # (rule, service, port)
    tls_hosts: list[str] = field(default_factory=list)


@dataclass
class _Edge:
    source: str
    target: str
    relation: RelationType
    attributes: dict[str, Any]


class _Importer:
    def __init__(self, defaults: Defaults) -> None:
        self.defaults = defaults
        self.warnings: list[ImportNote] = []
        self.config_maps: dict[tuple[str, str], dict[str, str]] = {}
        self.workloads: list[_Workload] = []
        self.services: list[_Service] = []
        self.ingresses: list[_Ingress] = []
        self.edges: list[_Edge] = []

    def warn(self, message: str, obj: _Object | None = None) -> None:
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

    def read(self, objects: list[_Object]) -> None:
        for obj in objects:
            if obj.kind == "ConfigMap":
                self.config_maps[(obj.namespace, obj.name)] = _labels(obj.body.get("data"))
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

    def _workload(self, obj: _Object) -> _Workload:
        spec = _map(obj.body.get("spec"))
        template = _map(spec.get("template"))
        pod_spec = _map(template.get("spec"))
        node = _Workload(obj, pod_labels=_labels(_map(template.get("metadata")).get("labels")))
        node.containers = [c for c in _list(pod_spec.get("containers")) if isinstance(c, dict)]
        if not node.containers:
            self.warn("no containers in spec.template.spec.containers", obj)
        for container in node.containers:
            for port in _list(container.get("ports")):
                number = _port_ref(_map(port).get("containerPort"))
                if isinstance(number, int):
                    node.container_ports[_str(_map(port).get("name")) or str(number)] = number
            probe = _map(_map(container.get("readinessProbe")).get("httpGet"))
            if node.probe is None and probe:
                node.probe = {
                    "path": _str(probe.get("path")) or "/",
                    "port": _port_ref(probe.get("port")),
                    "scheme": (_str(probe.get("scheme")) or "HTTP").lower(),
                }
            node.env.extend(self._environment(obj, container))
            if len(node.env) > MAX_VARIABLES_PER_WORKLOAD:
                del node.env[MAX_VARIABLES_PER_WORKLOAD:]
                self.warn(f"more than {MAX_VARIABLES_PER_WORKLOAD:,} environment variables: the rest are not read", obj)
                break
        if not node.pod_labels:
            self.warn("the pod template has no labels: no Service can select it", obj)
        return node

    def _environment(self, obj: _Object, container: dict[str, Any]) -> list[tuple[str, str]]:
        variables: list[tuple[str, str]] = []
        for source in _list(container.get("envFrom")):
            ref = _str(_map(_map(source).get("configMapRef")).get("name"))
            if ref is not None and (obj.namespace, ref) in self.config_maps:
                variables.extend(self.config_maps[(obj.namespace, ref)].items())
            if len(variables) > MAX_VARIABLES_PER_WORKLOAD:  # aliases can repeat a ConfigMap reference at will
                break
        for entry in _list(container.get("env")):
            entry = _map(entry)
            name = _str(entry.get("name"))
            if name is None:
                continue
            value = entry.get("value")
            if isinstance(value, str):
                variables.append((name, value))
                continue
            key_ref = _map(_map(entry.get("valueFrom")).get("configMapKeyRef"))
            data = self.config_maps.get((obj.namespace, _str(key_ref.get("name")) or ""), {})
            key = _str(key_ref.get("key"))
            if key is not None and key in data:
                variables.append((name, data[key]))
        return variables

    def _service(self, obj: _Object) -> _Service:
        spec = _map(obj.body.get("spec"))
        node = _Service(obj, selector=_labels(spec.get("selector")), external_name=_str(spec.get("externalName")))
        for entry in _list(spec.get("ports")):
            entry = _map(entry)
            port = _port_ref(entry.get("port"))
            if not isinstance(port, int):
                self.warn("a port without a numeric port; ignored", obj)
                continue
            node.ports.append(
                _ServicePort(
                    name=_str(entry.get("name")),
                    port=port,
                    target=_port_ref(entry.get("targetPort")) or port,
                    protocol=_str(entry.get("protocol")) or "TCP",
                    app_protocol=_str(entry.get("appProtocol")),
                )
            )
        if not node.selector and node.external_name is None:
            self.warn("no selector: its endpoints are managed elsewhere, so no workload is linked to it", obj)
        return node

    def _ingress(self, obj: _Object) -> _Ingress:
        spec = _map(obj.body.get("spec"))
        node = _Ingress(obj)
        for tls in _list(spec.get("tls")):
            node.tls_hosts.extend(h for h in _list(_map(tls).get("hosts")) if isinstance(h, str))
        default = _map(spec.get("defaultBackend")) or _map(spec.get("backend"))
        if default:
            self._backend(node, "(default backend)", default)
        for rule in _list(spec.get("rules")):
            rule = _map(rule)
            host = _str(rule.get("host")) or "*"
            for path in _list(_map(rule.get("http")).get("paths")):
                path = _map(path)
                self._backend(node, f"{host}{_str(path.get('path')) or '/'}", _map(path.get("backend")))
        if not node.backends:
            self.warn("no backend Service in its rules", obj)
        return node

    def _backend(self, node: _Ingress, rule: str, backend: dict[str, Any]) -> None:
        service = _map(backend.get("service"))
        if service:  # networking.k8s.io/v1
            name = _str(service.get("name"))
            port_spec = _map(service.get("port"))
            port = _port_ref(port_spec.get("number")) or _port_ref(port_spec.get("name"))
        else:  # networking.k8s.io/v1beta1 and extensions/v1beta1
            name = _str(backend.get("serviceName"))
            port = _port_ref(backend.get("servicePort"))
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
    def nodes(self) -> list[_Node]:
        return [*self.ingresses, *self.services, *self.workloads]

    def service_host(self, service: _Service) -> str:
        if service.external_name is not None:
            return service.external_name
        return f"{service.obj.name}.{service.obj.namespace}.svc.{self.defaults.cluster_domain}"

    def dns_names(self, service: _Service) -> set[str]:
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
                self.edges.append(_Edge(ingress.node_id, target, RelationType.calls, {"rules": rules}))
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
                    _Edge(service.node_id, workload.node_id, RelationType.calls, {"selector": service.selector})
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
                self.edges.append(_Edge(workload.node_id, service.node_id, relation, attributes))

    def _variables_naming(self, workload: _Workload, service: _Service) -> list[str]:
        names = self.dns_names(service)
        same_namespace = workload.obj.namespace == service.obj.namespace
        found: list[str] = []
        for variable, value in workload.env:
            hosts = _hosts_in(value)
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

    def _common(self, node: _Node) -> dict[str, Any]:
        metadata = _map(node.obj.body.get("metadata"))
        return {
            "kind": node.kind,
            "namespace": node.obj.namespace,
            "name": node.obj.name,
            "labels": _labels(metadata.get("labels")),
        }

    def _selected_by(self, workload: _Workload) -> list[_Service]:
        sources = {e.source for e in self.edges if e.target == workload.node_id and e.relation is RelationType.calls}
        return [s for s in self.services if s.node_id in sources]

    def _workloads_of(self, service: _Service) -> list[_Workload]:
        targets = {e.target for e in self.edges if e.source == service.node_id and e.relation is RelationType.calls}
        return [w for w in self.workloads if w.node_id in targets]

    def _service_port_for(self, service: _Service, workload: _Workload, port: int | str | None) -> _ServicePort | None:
        """The Service port whose targetPort is the container port ``port`` (by number or name)."""
        if port is None:
            return None
        number = workload.container_ports.get(port) if isinstance(port, str) else port
        names = {name for name, value in workload.container_ports.items() if value == number}
        for candidate in service.ports:
            if candidate.target == number or candidate.target == port or candidate.target in names:
                return candidate
        return None

    def _probe_url(self, service: _Service, workload: _Workload) -> str | None:
        probe = workload.probe
        if probe is None:
            return None
        port = self._service_port_for(service, workload, probe["port"])
        if port is None:
            return None
        scheme = "https" if probe["scheme"] == "https" else "http"
        return f"{scheme}://{self.service_host(service)}:{port.port}{probe['path']}"

    def _describe_ingress(self, ingress: _Ingress) -> None:
        spec = _map(ingress.obj.body.get("spec"))
        attributes = self._common(ingress)
        class_name = _str(spec.get("ingressClassName")) or _str(
            _map(_map(ingress.obj.body.get("metadata")).get("annotations")).get("kubernetes.io/ingress.class")
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

    def _describe_service(self, service: _Service) -> None:
        spec = _map(service.obj.body.get("spec"))
        attributes = self._common(service)
        attributes["type"] = _str(spec.get("type")) or "ClusterIP"
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
            http = next((p for p in tcp_ports if _is_http(p)), None)
            if http is not None:
                scheme = "https" if (http.name or "").startswith("https") or http.app_protocol == "https" else "http"
                url = f"{scheme}://{self.service_host(service)}:{http.port}/"
        if url is not None:
            attributes["url"] = url
            service.tools.insert(0, HTTP_CHECK)
        service.attributes = attributes

    def _describe_workload(self, workload: _Workload) -> None:
        spec = _map(workload.obj.body.get("spec"))
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

    def _datastore(self, workload: _Workload, service: _Service, attributes: dict[str, Any]) -> None:
        images = attributes["images"]
        env = dict(workload.env)
        host = self.service_host(service)
        if any(REDIS_IMAGES.search(image) for image in images):
            port = self._service_port_for(service, workload, 6379) or _named(service, "redis") or service.ports[0]
            attributes["redis_url"] = f"redis://{host}:{port.port}/0"
            workload.datastore_tools = [REDIS_INFO]
            if any("PASSWORD" in name for name in env) or any("PASSWORD" in name for name in _secret_env(workload)):
                self.warn("Redis seems to require a password: add it to the node's redis_url", workload.obj)
        elif any(POSTGRES_IMAGES.search(image) for image in images):
            port = self._service_port_for(service, workload, 5432) or _named(service, "postgres") or service.ports[0]
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
                "nodes": [self._node_spec(node, model) for node in nodes],
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

    def _node_spec(self, node: _Node, model: dict[str, str]) -> dict[str, Any]:
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


PROBE_PROMPTS = {
    "Ingress": "You check that the ingress answers from outside: name resolution, HTTP status, TLS certificate.",
    "Service": "You check that the Service answers on its ports and resolves in the cluster's DNS.",
    "Deployment": "You check that the workload's pods answer their readiness endpoint through their Service.",
    "StatefulSet": "You check that the stateful workload's pods answer through their Service.",
    "DaemonSet": "You check that the node agent's pods answer through their Service.",
}


def _is_http(port: _ServicePort) -> bool:
    if port.app_protocol in ("http", "https", "kubernetes.io/h2c"):
        return True
    return port.name is not None and HTTP_PORT_NAMES.match(port.name) is not None


def _named(service: _Service, fragment: str) -> _ServicePort | None:
    return next((p for p in service.ports if p.name and fragment in p.name), None)


def _secret_env(workload: _Workload) -> list[str]:
    """Names of variables set from Secrets (their values are never read)."""
    return [
        str(_map(entry).get("name"))
        for container in workload.containers
        for entry in _list(container.get("env"))
        if _map(_map(_map(entry).get("valueFrom")).get("secretKeyRef"))
    ]


def _hosts_in(value: str) -> set[str]:
    """Host names an environment value points at: ``redis://cache:6379/0``, ``jdbc:postgresql://db/orders``,
    ``host=db port=5432``, ``cache:6379,replica:6379``, a bare ``orders-db``. Paths, users and schemes are
    not hosts."""
    hosts: set[str] = set()
    for piece in ENV_SEPARATORS.split(value.strip()):
        if "=" in piece and "://" not in piece:
            piece = piece.split("=", 1)[1]
        if "://" in piece:
            rest = piece.rsplit("://", 1)[1]
            authority = rest.split("/", 1)[0].split("?", 1)[0]
            authority = authority.rsplit("@", 1)[-1]
            try:
                host = urlsplit(f"//{authority}").hostname or ""
            except ValueError:
                continue
        else:
            host = piece.split("/", 1)[0].split(":", 1)[0]
        host = host.rstrip(".")  # cluster DNS names are lower case; "Hello" in prose is no host
        if host and HOST_NAME.match(host):
            hosts.add(host)
    return hosts


def import_manifests(
    text: str, defaults: Defaults | None = None, *, stopped: Callable[[], bool] = _never
) -> ImportResult:
    """The topology of the Kubernetes objects in ``text`` (multi-document YAML), and the warnings. ``stopped`` is
    consulted after each document is read, where the time goes (past that the objects are few and bounded);
    once it is true the import raises ``ImportStopped``."""
    importer = _Importer(defaults or Defaults())
    objects = _objects(text, importer.warnings, stopped)
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
