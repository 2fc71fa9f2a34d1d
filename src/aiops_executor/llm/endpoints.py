"""HTTP routes of the LLM configuration: reads need viewer, every write and provider call needs admin."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http_status

from aiops_executor.auth.dependencies import AdminDep, ViewerDep
from aiops_executor.core.deps import ContextDep, SessionDep
from aiops_executor.core.errors import error_responses
from aiops_executor.core.pagination import Page, PageQuery
from aiops_executor.llm import config_io, provider_calls, service
from aiops_executor.llm.provider_calls import CredentialValidation, HealthCheckResult, ModelSyncResult, ModelTestResult
from aiops_executor.llm.schemas import (
    Capability,
    ConfigDocument,
    CredentialCreate,
    CredentialRead,
    CredentialUpdate,
    EndpointCreate,
    EndpointRead,
    ImportResult,
    ModelCreate,
    ModelRead,
    ModelStatus,
    ModelType,
    ModelUpdate,
    ProviderCreate,
    ProviderRead,
    ProviderStatusUpdate,
    ProviderType,
    ProviderUpdate,
)
from aiops_executor.llm.service import EndpointUpdateRequest
from aiops_executor.services import ServiceContextDep

router = APIRouter(tags=["llm"])

NO_CONTENT = http_status.HTTP_204_NO_CONTENT
CREATED = http_status.HTTP_201_CREATED


def _no_content() -> Response:
    return Response(status_code=NO_CONTENT)


# --------------------------------------------------------------------------------------------- providers


@router.post("/providers", response_model=ProviderRead, status_code=CREATED, responses=error_responses(409))
async def create_provider(
    data: ProviderCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ProviderRead:
    return await service.create_provider(session, context, data, actor=principal.actor)


@router.get("/providers", response_model=Page[ProviderRead])
async def list_providers(
    _: ViewerDep,
    session: SessionDep,
    context: ContextDep,
    page: PageQuery,
    type: Annotated[ProviderType | None, Query(description="only providers of this type")] = None,
    is_active: Annotated[bool | None, Query()] = None,
) -> Page[ProviderRead]:
    return await service.list_providers(session, context, page, provider_type=type, is_active=is_active)


@router.get("/providers/{provider_id}", response_model=ProviderRead, responses=error_responses(404))
async def get_provider(provider_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep) -> ProviderRead:
    return await service.get_provider(session, context, provider_id)


@router.put("/providers/{provider_id}", response_model=ProviderRead, responses=error_responses(404, 409))
async def update_provider(
    provider_id: uuid.UUID, data: ProviderUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ProviderRead:
    return await service.update_provider(session, context, provider_id, data, actor=principal.actor)


@router.patch("/providers/{provider_id}/status", response_model=ProviderRead, responses=error_responses(404))
async def set_provider_status(
    provider_id: uuid.UUID, data: ProviderStatusUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ProviderRead:
    return await service.set_provider_status(session, context, provider_id, data.is_active, actor=principal.actor)


@router.delete("/providers/{provider_id}", status_code=NO_CONTENT, responses=error_responses(404, 409))
async def delete_provider(
    provider_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep
) -> Response:
    await service.delete_provider(session, context, provider_id, actor=principal.actor)
    return _no_content()


# --------------------------------------------------------------------------------------------- endpoints


@router.post(
    "/providers/{provider_id}/endpoints",
    response_model=EndpointRead,
    status_code=CREATED,
    responses=error_responses(404, 409),
)
async def create_endpoint(
    provider_id: uuid.UUID, data: EndpointCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> EndpointRead:
    return await service.create_endpoint(session, context, provider_id, data, actor=principal.actor)


@router.get("/providers/{provider_id}/endpoints", response_model=Page[EndpointRead], responses=error_responses(404))
async def list_endpoints(
    provider_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ServiceContextDep, page: PageQuery
) -> Page[EndpointRead]:
    listed = await service.list_endpoints(session, context, provider_id, page)
    return listed.model_copy(update={"items": await provider_calls.with_cooldowns(context, listed.items)})


@router.get("/endpoints/{endpoint_id}", response_model=EndpointRead, responses=error_responses(404))
async def get_endpoint(
    endpoint_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ServiceContextDep
) -> EndpointRead:
    [shown] = await provider_calls.with_cooldowns(context, [await service.get_endpoint(session, context, endpoint_id)])
    return shown


@router.put("/endpoints/{endpoint_id}", response_model=EndpointRead, responses=error_responses(404, 409))
async def update_endpoint(
    endpoint_id: uuid.UUID,
    data: EndpointUpdateRequest,
    principal: AdminDep,
    session: SessionDep,
    context: ContextDep,
) -> EndpointRead:
    return await service.update_endpoint(session, context, endpoint_id, data, actor=principal.actor)


@router.delete("/endpoints/{endpoint_id}", status_code=NO_CONTENT, responses=error_responses(404))
async def delete_endpoint(
    endpoint_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep
) -> Response:
    await service.delete_endpoint(session, context, endpoint_id, actor=principal.actor)
    return _no_content()


@router.post(
    "/endpoints/{endpoint_id}/health-check", response_model=HealthCheckResult, responses=error_responses(404, 409)
)
async def health_check_endpoint(
    endpoint_id: uuid.UUID, _: AdminDep, session: SessionDep, context: ServiceContextDep
) -> HealthCheckResult:
    return await provider_calls.check_endpoint_health(session, context, endpoint_id)


# --------------------------------------------------------------------------------------------- credentials


@router.post(
    "/providers/{provider_id}/credentials",
    response_model=CredentialRead,
    status_code=CREATED,
    responses=error_responses(404, 409),
)
async def create_credential(
    provider_id: uuid.UUID, data: CredentialCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> CredentialRead:
    return await service.create_credential(session, context, provider_id, data, actor=principal.actor)


@router.get("/providers/{provider_id}/credentials", response_model=Page[CredentialRead], responses=error_responses(404))
async def list_credentials(
    provider_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep, page: PageQuery
) -> Page[CredentialRead]:
    return await service.list_credentials(session, context, provider_id, page)


@router.get("/credentials/{credential_id}", response_model=CredentialRead, responses=error_responses(404))
async def get_credential(
    credential_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep
) -> CredentialRead:
    return await service.get_credential(session, context, credential_id)


@router.put("/credentials/{credential_id}", response_model=CredentialRead, responses=error_responses(404, 409))
async def update_credential(
    credential_id: uuid.UUID, data: CredentialUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> CredentialRead:
    return await service.update_credential(session, context, credential_id, data, actor=principal.actor)


@router.delete("/credentials/{credential_id}", status_code=NO_CONTENT, responses=error_responses(404))
async def delete_credential(
    credential_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep
) -> Response:
    await service.delete_credential(session, context, credential_id, actor=principal.actor)
    return _no_content()


@router.post(
    "/credentials/{credential_id}/validate", response_model=CredentialValidation, responses=error_responses(404, 409)
)
async def validate_credential(
    credential_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> CredentialValidation:
    return await provider_calls.validate_credential(session, context, credential_id, actor=principal.actor)


# --------------------------------------------------------------------------------------------- models


@router.post(
    "/providers/{provider_id}/models",
    response_model=ModelRead,
    status_code=CREATED,
    responses=error_responses(404, 409),
)
async def create_model(
    provider_id: uuid.UUID, data: ModelCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ModelRead:
    return await service.create_model(session, context, provider_id, data, actor=principal.actor)


@router.post(
    "/providers/{provider_id}/models/sync",
    response_model=ModelSyncResult,
    responses=error_responses(404, 409, 429, 502),
)
async def sync_models(
    provider_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> ModelSyncResult:
    return await provider_calls.sync_models(session, context, provider_id, actor=principal.actor)


@router.get("/models", response_model=Page[ModelRead])
async def list_models(
    _: ViewerDep,
    session: SessionDep,
    context: ContextDep,
    page: PageQuery,
    provider_id: uuid.UUID | None = None,
    type: Annotated[ModelType | None, Query()] = None,
    capability: Annotated[Capability | None, Query(description="only models supporting it")] = None,
    status: Annotated[ModelStatus | None, Query()] = None,
) -> Page[ModelRead]:
    return await service.list_models(
        session, context, page, provider_id=provider_id, model_type=type, capability=capability, status=status
    )


@router.get("/models/by-capability/{capability}", response_model=Page[ModelRead])
async def models_by_capability(
    capability: Capability, _: ViewerDep, session: SessionDep, context: ContextDep, page: PageQuery
) -> Page[ModelRead]:
    return await service.models_by_capability(session, context, capability, page)


@router.get("/models/{model_id}", response_model=ModelRead, responses=error_responses(404))
async def get_model(model_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep) -> ModelRead:
    return await service.get_model(session, context, model_id)


@router.put("/models/{model_id}", response_model=ModelRead, responses=error_responses(404, 409))
async def update_model(
    model_id: uuid.UUID, data: ModelUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ModelRead:
    return await service.update_model(session, context, model_id, data, actor=principal.actor)


@router.delete("/models/{model_id}", status_code=NO_CONTENT, responses=error_responses(404, 409))
async def delete_model(model_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep) -> Response:
    await service.delete_model(session, context, model_id, actor=principal.actor)
    return _no_content()


@router.post("/models/{model_id}/test", response_model=ModelTestResult, responses=error_responses(404, 409))
async def test_model(
    model_id: uuid.UUID, _: AdminDep, session: SessionDep, context: ServiceContextDep
) -> ModelTestResult:
    return await provider_calls.run_model_test(session, context, model_id)


# --------------------------------------------------------------------------------------------- export / import


@router.get("/config/export", response_model=ConfigDocument)
async def export_config(_: AdminDep, session: SessionDep) -> ConfigDocument:
    return await config_io.export_config(session)


@router.post("/config/import", response_model=ImportResult, responses=error_responses(409))
async def import_config(
    doc: ConfigDocument, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ImportResult:
    return await config_io.import_config(session, context, doc, actor=principal.actor)
