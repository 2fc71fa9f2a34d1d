"""Who is calling, and may they? Every /api/v1 route depends on exactly one RoleGuard."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from aiops_executor.auth.models import ApiKey, Role, User
from aiops_executor.auth.principal import Principal
from aiops_executor.auth.security import decode_access_token, hash_api_key, looks_like_jwt
from aiops_executor.core.db import utcnow
from aiops_executor.core.deps import ContextDep, SessionDep
from aiops_executor.core.errors import ForbiddenError, UnauthorizedError

# last_used_at is advisory; writing it at most once a minute keeps reads from becoming writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Declares the bearer scheme in the OpenAPI document (``security`` on every guarded operation); the header is
# read and checked by ``RoleGuard`` itself, so that every failure is the contract's 401.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A JWT from POST /api/v1/auth/token, or an API key from POST /api/v1/api-keys",
)


# The web console's session: its access token in an HttpOnly, SameSite=Strict cookie (scripts cannot read it),
# honoured only on requests that also carry the console's header. SameSite keeps other sites' pages from sending
# the cookie, but not other origins of the same site (another port on this host); a custom header they cannot
# add, as the service answers no CORS preflight.
CONSOLE_SESSION_COOKIE = "aiops_console_session"
CONSOLE_HEADER = "X-Aiops-Console"


def console_session_token(request: Request) -> str | None:
    if request.headers.get(CONSOLE_HEADER) != "1":
        return None
    return request.cookies.get(CONSOLE_SESSION_COOKIE) or None


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        session_token = console_session_token(request)
        if session_token is not None:
            return session_token
        raise UnauthorizedError()
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise UnauthorizedError("expected an 'Authorization: Bearer <token>' header")
    return token


class RoleGuard:
    """Authenticates the caller (JWT or API key) and requires at least ``min_role``."""

    def __init__(self, min_role: Role) -> None:
        self.min_role = min_role

    async def __call__(
        self,
        request: Request,
        context: ContextDep,
        session: SessionDep,
        _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        token = _bearer_token(request)
        principal: Principal | None = None
        if looks_like_jwt(token):
            user_id = decode_access_token(
                token, secret=context.secrets.jwt_secret, algorithm=context.settings.jwt_algorithm
            )
            user = await session.get(User, user_id) if user_id else None
            if user is not None and user.is_active:
                principal = Principal("user", user.id, user.username, Role(user.role))
        else:
            api_key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(token)))
            if api_key is not None and api_key.revoked_at is None:
                now = utcnow()
                if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
                    api_key.last_used_at = now
                    await session.commit()
                principal = Principal("api_key", api_key.id, api_key.name, Role(api_key.role))
        # End the lookup's transaction: the handler starts its own when it needs one, and a long request
        # (a stream, a wait) holds no lock or snapshot meanwhile.
        await session.commit()
        if principal is None:
            raise UnauthorizedError("invalid or expired credentials")
        if not principal.role.allows(self.min_role):
            raise ForbiddenError(f"this action requires the {self.min_role.value} role")
        request.state.principal = principal
        return principal

    @property
    def openapi_role(self) -> str:
        """Read by the OpenAPI document (``core/openapi.py``) to say who may call each operation."""
        return self.min_role.value

    def __repr__(self) -> str:
        return f"RoleGuard({self.min_role.value})"


ViewerDep = Annotated[Principal, Depends(RoleGuard(Role.viewer))]
OperatorDep = Annotated[Principal, Depends(RoleGuard(Role.operator))]
AdminDep = Annotated[Principal, Depends(RoleGuard(Role.admin))]
