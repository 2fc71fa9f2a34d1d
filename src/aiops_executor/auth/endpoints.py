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
    UserUpdate,
)
from aiops_executor.auth.security import HashCost
from aiops_executor.core.deps import ContextDep, PageQuery, SessionDep
from aiops_executor.core.errors import NotFoundError
from aiops_executor.core.openapi import errors
from aiops_executor.core.pagination import Page

router = APIRouter(tags=["auth"])
logger = structlog.get_logger(__name__)


@router.post(
    "/auth/token",
    response_model=TokenResponse,
    operation_id="signIn",
    summary="Sign in: exchange a username and password for an access token",
    description="OAuth2 password form (`application/x-www-form-urlencoded`: `username`, `password`). Answers a "
    "JWT to send as `Authorization: Bearer <token>` until it expires (`expires_in` seconds). Repeated failures "
    "lock the username, and the client address, for a while, even for the right password.",
    responses={
        **errors({401: {"UNAUTHORIZED": "wrong username or password, or sign-in locked after repeated failures"}}),
        **RATE_LIMITED_RESPONSE,
    },
)
async def issue_token(
    address: AuthClientDep,
    form: Annotated[TokenRequest, Form()],
    session: SessionDep,
    context: ContextDep,
) -> TokenResponse:
    return await service.sign_in(session, context, form.username, form.password, address)


@router.post(
    "/users",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    operation_id="createUser",
    summary="Create a user",
    description="Creates a user with a role (`admin`, `operator` or `viewer`) who can then sign in.",
    responses=errors({409: {"USERNAME_EXISTS": "the username is taken"}}),
)
async def create_user(data: UserCreate, principal: AdminDep, session: SessionDep, context: ContextDep) -> UserRead:
    cost = HashCost.from_settings(context.settings)
    return UserRead.model_validate(await service.create_user(session, data, actor=principal.actor, cost=cost))


@router.get(
    "/users",
    response_model=Page[UserRead],
    operation_id="listUsers",
    summary="List users",
    description="Users, a page at a time (never their password hashes).",
)
async def list_users(_: AdminDep, session: SessionDep, page: PageQuery) -> Page[UserRead]:
    rows, total = await service.list_users(session, page)
    return Page[UserRead].build([UserRead.model_validate(r) for r in rows], total, page)


@router.get(
    "/users/me",
    response_model=UserRead,
    operation_id="getCurrentUser",
    summary="Who am I",
    description="The signed-in user. Called with an API key, which is no user, it answers 404.",
    responses=errors({404: {"USER_NOT_FOUND": "the caller is an API key, not a user"}}),
)
async def read_me(principal: ViewerDep, session: SessionDep) -> UserRead:
    if principal.kind != "user":
        raise NotFoundError("user", principal.id)
    return UserRead.model_validate(await service.get_user(session, principal.id))


@router.patch(
    "/users/{user_id:uuid}",
    response_model=UserRead,
    operation_id="updateUser",
    summary="Change a user's role, or disable them",
    description="Sets `role` and/or `is_active`. A disabled user cannot sign in and their tokens stop working at "
    "once. The last active admin can be neither demoted nor disabled.",
    responses=errors({404: "USER_NOT_FOUND", 409: {"LAST_ADMIN": "the last active admin keeps the role"}}),
)
async def update_user(user_id: uuid.UUID, data: UserUpdate, principal: AdminDep, session: SessionDep) -> UserRead:
    return UserRead.model_validate(await service.update_user(session, user_id, data, actor=principal.actor))


# ``:uuid``: ``/users/me`` is not a user id, so ``DELETE /users/me`` is 405 rather than a UUID parse error.
@router.delete(
    "/users/{user_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="deleteUser",
    summary="Delete a user",
    description="Deletes the user; their tokens stop working at once. The last admin cannot be deleted.",
    responses=errors({404: "USER_NOT_FOUND", 409: {"LAST_ADMIN": "the last admin cannot be deleted"}}),
)
async def delete_user(user_id: uuid.UUID, principal: AdminDep, session: SessionDep) -> Response:
    await service.delete_user(session, user_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    operation_id="createApiKey",
    summary="Create an API key",
    description="Creates a key for a machine client with a role. The answer carries the key itself, this once "
    "only: just a hash of it is stored. Send it as `Authorization: Bearer <key>`.",
)
async def create_api_key(data: ApiKeyCreate, principal: AdminDep, session: SessionDep) -> ApiKeyCreated:
    return await service.create_api_key(session, data, principal)


@router.get(
    "/api-keys",
    response_model=Page[ApiKeyRead],
    operation_id="listApiKeys",
    summary="List API keys",
    description="API keys (name, role, when last used, whether revoked), a page at a time; never the keys.",
)
async def list_api_keys(_: AdminDep, session: SessionDep, page: PageQuery) -> Page[ApiKeyRead]:
    rows, total = await service.list_api_keys(session, page)
    return Page[ApiKeyRead].build([ApiKeyRead.model_validate(r) for r in rows], total, page)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="revokeApiKey",
    summary="Revoke an API key",
    description="The key stops working at once.",
    responses=errors({404: "API_KEY_NOT_FOUND"}),
)
async def revoke_api_key(key_id: uuid.UUID, principal: AdminDep, session: SessionDep) -> Response:
    await service.revoke_api_key(session, key_id, actor=principal.actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
