"""HTTP routes of the LLM configuration: reads need viewer, every write and provider call needs admin."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi import status as http_status

from aiops_executor.auth.dependencies import AdminDep, ViewerDep
from aiops_executor.core.deps import ContextDep, PageQuery, SessionDep
from aiops_executor.core.openapi import errors
from aiops_executor.core.pagination import Page
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
from aiops_executor.teams.references import teams_using

router = APIRouter(tags=["llm"])

NO_CONTENT = http_status.HTTP_204_NO_CONTENT
CREATED = http_status.HTTP_201_CREATED


PROVIDER_404 = {404: "PROVIDER_NOT_FOUND"}
ENDPOINT_404 = {404: "ENDPOINT_NOT_FOUND"}
CREDENTIAL_404 = {404: "CREDENTIAL_NOT_FOUND"}
MODEL_404 = {404: "MODEL_NOT_FOUND"}
PROVIDER_NAME = {"PROVIDER_NAME_EXISTS": "another provider has this name"}
LIMIT = {"LIMIT_EXCEEDED": "the provider has as many of these as it may"}
UNUSABLE = {
    "PROVIDER_MISCONFIGURED": "the provider's settings cannot make a client",
    "NO_ACTIVE_ENDPOINT": "the provider has no active endpoint",
    "NO_USABLE_CREDENTIAL": "the provider has no usable credential",
    "CREDENTIAL_UNDECRYPTABLE": "a stored key cannot be decrypted (a different master key)",
}
PROVIDER_FAILED = {
    "CREDENTIAL_INVALID": "every key was refused",
    "PROVIDER_UNREACHABLE": "no endpoint could be reached",
    "PROVIDER_ERROR": "the provider failed (5xx)",
    "PROVIDER_REQUEST_REJECTED": "the provider rejected the request",
    "PROVIDER_MODEL_NOT_FOUND": "the provider does not know the model",
}


def _no_content() -> Response:
    return Response(status_code=NO_CONTENT)


# --------------------------------------------------------------------------------------------- providers


@router.post(
    "/providers",
    response_model=ProviderRead,
    status_code=CREATED,
    operation_id="createProvider",
    summary="Register an LLM provider",
    description="A provider is a vendor account (`type`: openai, anthropic, azure_openai, bedrock, ...) whose "
    "endpoints, credentials and models are added next. Its name is unique.",
    responses=errors({409: PROVIDER_NAME}),
)
async def create_provider(
    data: ProviderCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ProviderRead:
    return await service.create_provider(session, context, data, actor=principal.actor)


@router.get(
    "/providers",
    response_model=Page[ProviderRead],
    operation_id="listProviders",
    summary="List providers",
    description="Providers by name, a page at a time; filter by `type` and `is_active`. Deleted ones are not listed.",
)
async def list_providers(
    _: ViewerDep,
    session: SessionDep,
    context: ContextDep,
    page: PageQuery,
    type: Annotated[ProviderType | None, Query(description="only providers of this type")] = None,
    is_active: Annotated[bool | None, Query()] = None,
) -> Page[ProviderRead]:
    return await service.list_providers(session, context, page, provider_type=type, is_active=is_active)


@router.get(
    "/providers/{provider_id}",
    response_model=ProviderRead,
    operation_id="getProvider",
    summary="Read a provider",
    description="The provider's settings.",
    responses=errors(PROVIDER_404),
)
async def get_provider(provider_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep) -> ProviderRead:
    return await service.get_provider(session, context, provider_id)


@router.put(
    "/providers/{provider_id}",
    response_model=ProviderRead,
    operation_id="updateProvider",
    summary="Update a provider",
    description="A partial update: omitted fields keep their value.",
    responses=errors({**PROVIDER_404, 409: PROVIDER_NAME}),
)
async def update_provider(
    provider_id: uuid.UUID, data: ProviderUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ProviderRead:
    return await service.update_provider(session, context, provider_id, data, actor=principal.actor)


@router.patch(
    "/providers/{provider_id}/status",
    response_model=ProviderRead,
    operation_id="setProviderStatus",
    summary="Switch a provider on or off",
    description="An inactive provider's models are not called; teams naming them fail validation until it is "
    "active again.",
    responses=errors(PROVIDER_404),
)
async def set_provider_status(
    provider_id: uuid.UUID, data: ProviderStatusUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ProviderRead:
    return await service.set_provider_status(session, context, provider_id, data.is_active, actor=principal.actor)


@router.delete(
    "/providers/{provider_id}",
    status_code=NO_CONTENT,
    operation_id="deleteProvider",
    summary="Delete a provider",
    description="A soft delete: the provider, with its endpoints, credentials and models, is no longer usable "
    "or listed. Refused while a team references one of its models.",
    responses=errors({**PROVIDER_404, 409: {"PROVIDER_IN_USE": "a team references one of its models"}}),
)
async def delete_provider(
    provider_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep
) -> Response:
    await service.delete_provider(session, context, provider_id, actor=principal.actor, in_use=teams_using)
    return _no_content()


# --------------------------------------------------------------------------------------------- endpoints


@router.post(
    "/providers/{provider_id}/endpoints",
    response_model=EndpointRead,
    status_code=CREATED,
    operation_id="createEndpoint",
    summary="Add an endpoint to a provider",
    description="An access point (`base_url`, region, priority, timeouts, concurrency) calls are routed to, "
    "by priority, with failover. A `base_url` the egress policy denies is refused with 422.",
    responses=errors(
        {**PROVIDER_404, 409: {"ENDPOINT_NAME_EXISTS": "the provider has an endpoint of this name", **LIMIT}}
    ),
)
async def create_endpoint(
    provider_id: uuid.UUID, data: EndpointCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> EndpointRead:
    return await service.create_endpoint(session, context, provider_id, data, actor=principal.actor)


@router.get(
    "/providers/{provider_id}/endpoints",
    response_model=Page[EndpointRead],
    operation_id="listEndpoints",
    summary="List a provider's endpoints",
    description="The provider's endpoints by priority, each with its health, any cool-down in force and the "
    "state of its circuit breaker (`circuit_state`).",
    responses=errors(PROVIDER_404),
)
async def list_endpoints(
    provider_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ServiceContextDep, page: PageQuery
) -> Page[EndpointRead]:
    listed = await service.list_endpoints(session, context, provider_id, page)
    return listed.model_copy(update={"items": await provider_calls.with_cooldowns(context.model_runtime, listed.items)})


@router.get(
    "/endpoints/{endpoint_id}",
    response_model=EndpointRead,
    operation_id="getEndpoint",
    summary="Read an endpoint",
    description="The endpoint's settings, last health check, any cool-down in force (`cooldown_seconds`) and the "
    "state of its circuit breaker (`circuit_state`).",
    responses=errors(ENDPOINT_404),
)
async def get_endpoint(
    endpoint_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ServiceContextDep
) -> EndpointRead:
    [shown] = await provider_calls.with_cooldowns(
        context.model_runtime, [await service.get_endpoint(session, context, endpoint_id)]
    )
    return shown


@router.put(
    "/endpoints/{endpoint_id}",
    response_model=EndpointRead,
    operation_id="updateEndpoint",
    summary="Update an endpoint",
    description="A partial update. Moving `base_url` to another origin while the provider has credentials needs "
    "`confirm_credentials_for_new_host: true` (the keys would go there).",
    responses=errors(
        {
            **ENDPOINT_404,
            409: {
                "ENDPOINT_NAME_EXISTS": "the provider has an endpoint of this name",
                "CREDENTIAL_CONFIRMATION_REQUIRED": "base_url moves to another origin; confirm the keys may go there",
            },
        }
    ),
)
async def update_endpoint(
    endpoint_id: uuid.UUID,
    data: EndpointUpdateRequest,
    principal: AdminDep,
    session: SessionDep,
    context: ServiceContextDep,
) -> EndpointRead:
    updated = await service.update_endpoint(session, context, endpoint_id, data, actor=principal.actor)
    [shown] = await provider_calls.with_cooldowns(context.model_runtime, [updated])
    return shown


@router.delete(
    "/endpoints/{endpoint_id}",
    status_code=NO_CONTENT,
    operation_id="deleteEndpoint",
    summary="Delete an endpoint",
    description="Calls are no longer routed to it.",
    responses=errors(ENDPOINT_404),
)
async def delete_endpoint(
    endpoint_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep
) -> Response:
    await service.delete_endpoint(session, context, endpoint_id, actor=principal.actor)
    return _no_content()


@router.post(
    "/endpoints/{endpoint_id}/health-check",
    response_model=HealthCheckResult,
    operation_id="checkEndpointHealth",
    summary="Check an endpoint's health now",
    description="Calls the endpoint (trying the next key when one is refused), records and answers its health "
    "and latency. An unreachable endpoint is a result (`unhealthy`), not an error.",
    responses=errors({**ENDPOINT_404, 409: UNUSABLE}),
)
async def health_check_endpoint(
    endpoint_id: uuid.UUID, _: AdminDep, session: SessionDep, context: ServiceContextDep
) -> HealthCheckResult:
    return await provider_calls.check_endpoint_health(session, context.model_runtime, endpoint_id)


# --------------------------------------------------------------------------------------------- credentials


@router.post(
    "/providers/{provider_id}/credentials",
    response_model=CredentialRead,
    status_code=CREATED,
    operation_id="createCredential",
    summary="Add a credential to a provider",
    description="Stores an API key (and the provider's other secrets) encrypted; answers only its masked form. "
    "Keys are write-only from here on.",
    responses=errors(
        {**PROVIDER_404, 409: {"CREDENTIAL_ALIAS_EXISTS": "the provider has a credential of this alias", **LIMIT}}
    ),
)
async def create_credential(
    provider_id: uuid.UUID, data: CredentialCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> CredentialRead:
    return await service.create_credential(session, context, provider_id, data, actor=principal.actor)


@router.get(
    "/providers/{provider_id}/credentials",
    response_model=Page[CredentialRead],
    operation_id="listCredentials",
    summary="List a provider's credentials",
    description="The provider's credentials, masked, with their validation status.",
    responses=errors(PROVIDER_404),
)
async def list_credentials(
    provider_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep, page: PageQuery
) -> Page[CredentialRead]:
    return await service.list_credentials(session, context, provider_id, page)


@router.get(
    "/credentials/{credential_id}",
    response_model=CredentialRead,
    operation_id="getCredential",
    summary="Read a credential",
    description="The credential, masked (`sk-1...cdef`), with its validation status and expiry.",
    responses=errors(CREDENTIAL_404),
)
async def get_credential(
    credential_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep
) -> CredentialRead:
    return await service.get_credential(session, context, credential_id)


@router.put(
    "/credentials/{credential_id}",
    response_model=CredentialRead,
    operation_id="updateCredential",
    summary="Update a credential",
    description="A partial update; a new key replaces the stored one (and resets its validation status).",
    responses=errors(
        {**CREDENTIAL_404, 409: {"CREDENTIAL_ALIAS_EXISTS": "the provider has a credential of this alias"}}
    ),
)
async def update_credential(
    credential_id: uuid.UUID, data: CredentialUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> CredentialRead:
    return await service.update_credential(session, context, credential_id, data, actor=principal.actor)


@router.delete(
    "/credentials/{credential_id}",
    status_code=NO_CONTENT,
    operation_id="deleteCredential",
    summary="Delete a credential",
    description="The key is deleted and no longer used.",
    responses=errors(CREDENTIAL_404),
)
async def delete_credential(
    credential_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep
) -> Response:
    await service.delete_credential(session, context, credential_id, actor=principal.actor)
    return _no_content()


@router.post(
    "/credentials/{credential_id}/validate",
    response_model=CredentialValidation,
    operation_id="validateCredential",
    summary="Check a credential against the provider",
    description="Asks the provider's endpoints in turn until one answers. A refused key is a result "
    "(`valid: false`, status `invalid`); when every endpoint is down the status is left alone and the answer "
    "names each endpoint tried.",
    responses=errors(
        {
            **CREDENTIAL_404,
            409: {
                "CREDENTIAL_EXPIRED": "the credential is past its expiry",
                "CREDENTIAL_UNDECRYPTABLE": UNUSABLE["CREDENTIAL_UNDECRYPTABLE"],
                "NO_ACTIVE_ENDPOINT": UNUSABLE["NO_ACTIVE_ENDPOINT"],
                "PROVIDER_MISCONFIGURED": UNUSABLE["PROVIDER_MISCONFIGURED"],
            },
        }
    ),
)
async def validate_credential(
    credential_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> CredentialValidation:
    return await provider_calls.validate_credential(
        session, context.model_runtime, credential_id, actor=principal.actor
    )


# --------------------------------------------------------------------------------------------- models


@router.post(
    "/providers/{provider_id}/models",
    response_model=ModelRead,
    status_code=CREATED,
    operation_id="createModel",
    summary="Add a model to a provider",
    description="Registers a model the provider serves (`model_id`, type, capabilities, context window, prices "
    "per 1K tokens in USD, default parameters) so that teams can name it.",
    responses=errors({**PROVIDER_404, 409: {"MODEL_ID_EXISTS": "the provider has a model with this model_id"}}),
)
async def create_model(
    provider_id: uuid.UUID, data: ModelCreate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ModelRead:
    return await service.create_model(session, context, provider_id, data, actor=principal.actor)


@router.post(
    "/providers/{provider_id}/models/sync",
    response_model=ModelSyncResult,
    operation_id="syncModels",
    summary="Sync a provider's models from its catalogue",
    description="Reads the provider's model list from the first route that answers: models new to it are "
    "added, those the provider no longer lists are deprecated, and deprecated ones it lists again reactivated.",
    responses=errors(
        {
            **PROVIDER_404,
            409: UNUSABLE,
            422: {"VALIDATION_ERROR": "", "EGRESS_DENIED": "the egress policy refuses every endpoint"},
            429: {"PROVIDER_RATE_LIMITED": "the provider rate-limited every route"},
            502: PROVIDER_FAILED,
        }
    ),
)
async def sync_models(
    provider_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ServiceContextDep
) -> ModelSyncResult:
    return await provider_calls.sync_models(session, context.model_runtime, provider_id, actor=principal.actor)


@router.get(
    "/models",
    response_model=Page[ModelRead],
    operation_id="listModels",
    summary="List models",
    description="Models of every provider, a page at a time; filter by `provider_id`, `type`, `capability` and "
    "`status`.",
)
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


@router.get(
    "/models/by-capability/{capability}",
    response_model=Page[ModelRead],
    operation_id="listModelsByCapability",
    summary="List the models with a capability",
    description="The models that support the capability (e.g. `tool_calling`), best suited first; deprecated "
    "ones are left out.",
)
async def models_by_capability(
    capability: Capability, _: ViewerDep, session: SessionDep, context: ContextDep, page: PageQuery
) -> Page[ModelRead]:
    return await service.models_by_capability(session, context, capability, page)


@router.get(
    "/models/{model_id}",
    response_model=ModelRead,
    operation_id="getModel",
    summary="Read a model",
    description="The model's settings, capabilities and prices.",
    responses=errors(MODEL_404),
)
async def get_model(model_id: uuid.UUID, _: ViewerDep, session: SessionDep, context: ContextDep) -> ModelRead:
    return await service.get_model(session, context, model_id)


@router.put(
    "/models/{model_id}",
    response_model=ModelRead,
    operation_id="updateModel",
    summary="Update a model",
    description="A partial update: omitted fields keep their value.",
    responses=errors({**MODEL_404, 409: {"MODEL_ID_EXISTS": "the provider has a model with this model_id"}}),
)
async def update_model(
    model_id: uuid.UUID, data: ModelUpdate, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ModelRead:
    return await service.update_model(session, context, model_id, data, actor=principal.actor)


@router.delete(
    "/models/{model_id}",
    status_code=NO_CONTENT,
    operation_id="deleteModel",
    summary="Delete a model",
    description="Refused while a team names the model.",
    responses=errors({**MODEL_404, 409: {"MODEL_IN_USE": "a team names this model"}}),
)
async def delete_model(model_id: uuid.UUID, principal: AdminDep, session: SessionDep, context: ContextDep) -> Response:
    await service.delete_model(session, context, model_id, actor=principal.actor, in_use=teams_using)
    return _no_content()


@router.post(
    "/models/{model_id}/test",
    response_model=ModelTestResult,
    operation_id="testModel",
    summary="Send a test prompt to a model",
    description="A one-word prompt through the model runtime (with failover), answering the reply and the "
    "latency; a failed call is a result (`ok: false` with its error code), not an error.",
    responses=errors({**MODEL_404, 409: UNUSABLE}),
)
async def test_model(
    model_id: uuid.UUID, _: AdminDep, session: SessionDep, context: ServiceContextDep
) -> ModelTestResult:
    return await provider_calls.run_model_test(session, context.model_runtime, model_id)


# --------------------------------------------------------------------------------------------- export / import


@router.get(
    "/config/export",
    response_model=ConfigDocument,
    operation_id="exportConfig",
    summary="Export the LLM configuration",
    description="Every provider with its endpoints, credentials (without their secrets) and models, as one "
    "document that `importConfig` accepts.",
)
async def export_config(_: AdminDep, session: SessionDep) -> ConfigDocument:
    return await config_io.export_config(session)


@router.post(
    "/config/import",
    response_model=ImportResult,
    operation_id="importConfig",
    summary="Import an LLM configuration",
    description="Creates or updates the document's providers, endpoints and models by name, in one transaction "
    "(all or nothing); never moves an existing endpoint to another host.",
    responses=errors({409: {"CONFLICT": "the import conflicted with a concurrent change; retry it"}}),
)
async def import_config(
    doc: ConfigDocument, principal: AdminDep, session: SessionDep, context: ContextDep
) -> ImportResult:
    return await config_io.import_config(session, context, doc, actor=principal.actor)
