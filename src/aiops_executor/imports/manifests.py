"""Reading Kubernetes manifests: multi-document YAML (``---``, comments, empty documents, ``kind: List``) into
the objects an import looks at, within bounds, with a note for everything it ignores. No secret is read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from aiops_executor.imports.yaml_bounds import YamlTooLarge, bounded_documents

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
NODE_KINDS = (*WORKLOAD_KINDS, "Service", "Ingress")
# Read for the environment of workloads; no node, no warning.
USED_KINDS = ("ConfigMap",)
# A manifest with more objects is refused before any linking.
MAX_OBJECTS = 1_000


class ImportStopped(Exception):
    """The caller's ``stopped()`` turned true (its client went away): the import ended part-way."""


def never() -> bool:
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
class ManifestObject:
    kind: str
    name: str
    namespace: str
    document: int
    body: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def yaml_mark(exc: yaml.YAMLError) -> tuple[int | None, int | None, str]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context} and {problem}" if context and problem else str(problem)
    if mark is None:
        return None, None, text
    return mark.line + 1, mark.column + 1, text


def documents(text: str) -> Iterator[tuple[int, Any]]:
    """(1-based document number, parsed document) of a multi-document YAML stream, read within bounds."""
    number = 0
    try:
        for number, document in bounded_documents(text):
            yield number, document
    except YamlTooLarge as exc:
        raise ManifestError(f"the manifests are too large to import: {exc}", document=exc.document) from None
    except yaml.YAMLError as exc:
        line, column, problem = yaml_mark(exc)
        where = f"document {number + 1}" + (f", line {line}, column {column}" if line is not None else "")
        raise ManifestError(
            f"not valid YAML: {where}: {problem}", document=number + 1, line=line, column=column
        ) from None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def string_map(value: Any) -> dict[str, str]:
    """A string-to-string map (labels, selectors, ConfigMap data). Kubernetes takes only strings there; an
    unquoted ``true`` or ``8080`` in YAML is something ``kubectl apply`` refuses, so it is dropped."""
    return {k: v for k, v in as_map(value).items() if isinstance(k, str) and isinstance(v, str)}


def port_ref(value: Any) -> int | str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value:
        return int(value) if value.isdigit() else value
    return None


def read_objects(text: str, warnings: list[ImportNote], stopped: Callable[[], bool]) -> list[ManifestObject]:
    found: list[ManifestObject] = []
    for number, document in documents(text):
        if stopped():
            raise ImportStopped
        if document is None:
            continue  # an empty document (Helm prints them for disabled templates)
        if not isinstance(document, dict):
            warnings.append(
                ImportNote("not a Kubernetes object (a YAML mapping with kind and metadata); ignored", number)
            )
            continue
        kind = as_str(document.get("kind"))
        items = document.get("items")
        if kind is not None and kind.endswith("List") and isinstance(items, list):
            for index, item in enumerate(items):
                collect(item, number, warnings, found, f"item {index}")
        else:
            collect(document, number, warnings, found, None)
        if len(found) > MAX_OBJECTS:
            raise ManifestError(
                f"the manifests hold more than {MAX_OBJECTS:,} Kubernetes objects: import one namespace or "
                "application at a time",
                document=number,
            )
    return found


def collect(
    document: Any, number: int, warnings: list[ImportNote], found: list[ManifestObject], position: str | None
) -> None:
    where = f"{position}: " if position else ""
    if not isinstance(document, dict):
        warnings.append(ImportNote(f"{where}not a Kubernetes object; ignored", number))
        return
    kind = as_str(document.get("kind"))
    metadata = as_map(document.get("metadata"))
    name = as_str(metadata.get("name"))
    if kind is None or name is None:
        warnings.append(ImportNote(f"{where}an object without kind or metadata.name; ignored", number))
        return
    namespace = as_str(metadata.get("namespace")) or "default"
    obj = ManifestObject(kind, name, namespace, number, document)
    if kind == "Secret":
        warnings.append(ImportNote("Secrets are never read (no secret enters a topology); ignored", number, obj.ref))
        return
    if kind not in NODE_KINDS and kind not in USED_KINDS:
        warnings.append(ImportNote(f"kind {kind} makes no node of a topology; ignored", number, obj.ref))
        return
    found.append(obj)
