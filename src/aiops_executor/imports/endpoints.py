"""Topology imports (thin: the conversion is ``imports.kubernetes``)."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request

from aiops_executor.auth.dependencies import OperatorDep
from aiops_executor.core.disconnect import run_until_disconnected
from aiops_executor.imports import service
from aiops_executor.imports.schemas import KubernetesImportRequest, KubernetesImportResult

router = APIRouter(tags=["imports"])


@router.post(
    "/topologies/import/kubernetes",
    response_model=KubernetesImportResult,
    operation_id="importKubernetesTopology",
    summary="Make a topology from Kubernetes manifests",
    description=(
        "Reads multi-document YAML as `kubectl get -o yaml` or `helm template` print it (comments, `---`, a "
        "`List`) and returns a topology: a node per Deployment, StatefulSet, DaemonSet, Service and Ingress, "
        "edges Ingress -> Service -> workload (`calls`) and workload -> Service when its environment names "
        "the Service (`depends_on`), and per node a prober agent with the built-in tools its attributes allow. "
        "The topology is not stored: it is the `topology` of a `POST /teams` body as it is. Everything not "
        "understood is listed in `warnings`. Refused with 422 `VALIDATION_ERROR`: YAML that "
        "cannot be parsed (`details.document`, `details.line`, `details.column`), manifests with nothing to "
        "import, or more resources than a team may have."
    ),
)
async def import_kubernetes_topology(
    body: KubernetesImportRequest, request: Request, _: OperatorDep
) -> KubernetesImportResult:
    # In the thread pool, so that parsing a large manifest set does not hold up the event loop (and every other
    # request) meanwhile; stopped when the client goes away.
    return await run_until_disconnected(request, partial(service.import_kubernetes, body))
