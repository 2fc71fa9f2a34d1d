"""Topology imports: the converter's refusals in the contract's terms."""

from __future__ import annotations

from collections.abc import Callable

from aiops_executor.core.disconnect import ClientGone
from aiops_executor.core.errors import ValidationFailed
from aiops_executor.imports.kubernetes import Defaults, import_manifests
from aiops_executor.imports.manifests import ImportStopped, ManifestError
from aiops_executor.imports.schemas import ImportNoteRead, KubernetesImportRequest, KubernetesImportResult


def manifest_refusal(exc: ManifestError) -> ValidationFailed:
    """422 ``VALIDATION_ERROR`` naming the document and line of the problem."""
    return ValidationFailed(
        exc.message,
        details={
            "errors": [{"loc": ["body", "manifests"], "message": exc.message, "type": "manifests_invalid"}],
            "document": exc.document,
            "line": exc.line,
            "column": exc.column,
        },
    )


def import_kubernetes(request: KubernetesImportRequest, stopped: Callable[[], bool]) -> KubernetesImportResult:
    defaults = Defaults(**request.defaults.model_dump())
    try:
        result = import_manifests(request.manifests, defaults, stopped=stopped)
    except ManifestError as exc:
        raise manifest_refusal(exc) from None
    except ImportStopped:
        raise ClientGone from None
    return KubernetesImportResult(
        topology=result.topology, warnings=[ImportNoteRead(**note) for note in result.warnings]
    )
