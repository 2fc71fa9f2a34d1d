"""Request and response bodies of the topology imports."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from aiops_executor.core.text import FREE_TEXT
from aiops_executor.engine.topology import ShortName, Topology
from aiops_executor.imports.kubernetes import DEFAULT_CLUSTER_DOMAIN, DEFAULT_MODEL, DEFAULT_PROVIDER

ClusterDomain = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$", max_length=253)
]


class ImportDefaults(BaseModel):
    """What the imported agents and supervisors run on (default: the offline simulator)."""

    model_config = ConfigDict(extra="forbid")

    model_provider: ShortName = Field(default=DEFAULT_PROVIDER, description="a provider name or id")
    model_id: ShortName = Field(default=DEFAULT_MODEL, description="that provider's model_id")
    cluster_domain: ClusterDomain = Field(
        default=DEFAULT_CLUSTER_DOMAIN, description="the cluster's DNS domain, for the Services' names in probe URLs"
    )


class KubernetesImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    manifests: Annotated[str, StringConstraints(min_length=1), FREE_TEXT] = Field(
        description="multi-document YAML, as `kubectl get -o yaml` or `helm template` print it (a List too)"
    )
    defaults: ImportDefaults = Field(default_factory=ImportDefaults)


class ImportNoteRead(BaseModel):
    document: int | None = Field(description="1-based number of the YAML document it is about")
    resource: str | None = Field(description="`Kind namespace/name` of the object it is about")
    message: str


class KubernetesImportResult(BaseModel):
    """A topology (not yet a team: `POST /teams` takes it as its `topology` unchanged) and what the import
    could not understand or derive."""

    topology: Topology
    warnings: list[ImportNoteRead]
