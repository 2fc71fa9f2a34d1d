from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from fastapi import APIRouter, Form, Response, status

from aiops_executor.auth import service
from aiops_executor.auth.dependencies import AdminDep, ViewerDep
from aiops_executor.auth.rate_limits import RATE_LIMITED_RESPONSE, AuthClientDep
from aiops_executor.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    TokenRequest,
    TokenResponse,
    UserCreate,
    UserRead,
)
from aiops_executor.core.deps import ContextDep, SessionDep
from aiops_executor.core.errors import NotFoundError, error_responses
from aiops_executor.core.pagination import Page, PageQuery

router = APIRouter(tags=["auth"])
logger = structlog.get_logger(__name__)


@router.post(
    "/auth/token", response_model=TokenResponse, responses={**error_responses(400, 401), **RATE_LIMITED_RESPONSE}
)
async def issue_token(
    address: AuthClientDep,
    form: Annotated[TokenRequest, Form()],
    session: SessionDep,
    context: ContextDep,
) -> TokenResponse:
    return await service.sign_in(session, context, form.username, form.password, address)


@router.post("/users", response_model=UserRead, status_code=status.HTTP_201_CREATED, responses=error_responses(409))
async def create_user(data: UserCreate, principal: AdminDep, session: SessionDep) -> UserRead:
    return UserRead.model_validate(await service.create_user(session, data, actor=principal.actor))


@router.get("/users", response_model=Page[UserRead])
async def list_users(_: AdminDep, session: SessionDep, page: PageQuery) -> Page[UserRead]:
    rows, total = await service.list_users(session, offset=page.offset, limit=page.size)
    return Page[UserRead].build([UserRead.model_validate(r) for r in rows], total, page)


@router.get("/users/me", response_model=UserRead, responses=error_responses(404))
async def read_me(principal: ViewerDep, session: SessionDep) -> UserRead:
    if principal.kind != "user":
        raise NotFoundError("user", principal.id)
    return UserRead.model_validate(await service.get_user(session, principal.id))


# ``:uuid``: ``/users/me`` is not a user id, so ``DELETE /users/me`` is 405 rather than a UUID parse error.
@router.delete("/users/{user_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404, 409))
async def delete_user(user_id: uuid.UUID, principal: AdminDep, session: SessionDep) -> Response:
    await service.delete_user(session, user_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def create_api_key(data: ApiKeyCreate, principal: AdminDep, session: SessionDep) -> ApiKeyCreated:
    return await service.create_api_key(session, data, principal)


@router.get("/api-keys", response_model=Page[ApiKeyRead])
async def list_api_keys(_: AdminDep, session: SessionDep, page: PageQuery) -> Page[ApiKeyRead]:
    rows, total = await service.list_api_keys(session, offset=page.offset, limit=page.size)
    return Page[ApiKeyRead].build([ApiKeyRead.model_validate(r) for r in rows], total, page)


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404))
async def revoke_api_key(key_id: uuid.UUID, principal: AdminDep, session: SessionDep) -> Response:
    await service.revoke_api_key(session, key_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
