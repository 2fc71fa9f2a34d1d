"""The Kubernetes resources an import turns into nodes (workloads, Services, Ingresses), the edges between them,
and what is read off them: HTTP ports, ports by name, Secret-fed variables, host names in a value."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiops_executor.engine.topology import RelationType
from aiops_executor.imports.manifests import ManifestObject, as_list, as_map

HTTP_PORT_NAMES = re.compile(r"^(https?|web|http-.*|https-.*)$")
DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_NAME = re.compile(rf"^{DNS_LABEL}(?:\.{DNS_LABEL})*$")
ENV_SEPARATORS = re.compile(r"[\s,;]+")


@dataclass
class ServicePort:
    name: str | None
    port: int
    target: int | str
    protocol: str
    app_protocol: str | None


@dataclass
class Resource:
    obj: ManifestObject
    node_id: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)
    datastore_tools: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.obj.kind


@dataclass
class Workload(Resource):
    pod_labels: dict[str, str] = field(default_factory=dict)
    containers: list[dict[str, Any]] = field(default_factory=list)
    container_ports: dict[str, int] = field(default_factory=dict)  # name -> number
    probe: dict[str, Any] | None = None  # {"path", "port", "scheme"} of the first readiness httpGet
    env: list[tuple[str, str]] = field(default_factory=list)  # (variable, value)


@dataclass
class Service(Resource):
    selector: dict[str, str] = field(default_factory=dict)
    ports: list[ServicePort] = field(default_factory=list)
    external_name: str | None = None


@dataclass
class Ingress(Resource):
    backends: list[tuple[str, str, int | str | None]] = field(default_factory=list)  # (rule, service, port)
    tls_hosts: list[str] = field(default_factory=list)


@dataclass
class Edge:
    source: str
    target: str
    relation: RelationType
    attributes: dict[str, Any]


def is_http(port: ServicePort) -> bool:
    if port.app_protocol in ("http", "https", "kubernetes.io/h2c"):
        return True
    return port.name is not None and HTTP_PORT_NAMES.match(port.name) is not None


def port_named(service: Service, fragment: str) -> ServicePort | None:
    return next((p for p in service.ports if p.name and fragment in p.name), None)


def secret_env(workload: Workload) -> list[str]:
    """Names of variables set from Secrets (their values are never read)."""
    return [
        str(as_map(entry).get("name"))
        for container in workload.containers
        for entry in as_list(container.get("env"))
        if as_map(as_map(as_map(entry).get("valueFrom")).get("secretKeyRef"))
    ]


def hosts_in(value: str) -> set[str]:
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
