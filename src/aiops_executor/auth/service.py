"""Users, API keys and sign-in."""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from pathlib import Path

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.audit import service as audit
from aiops_executor.auth.models import ApiKey, Role, User
from aiops_executor.auth.principal import Principal
from aiops_executor.auth.schemas import ApiKeyCreate, ApiKeyCreated, TokenResponse, UserCreate, UserUpdate
from aiops_executor.auth.security import (
    HashCost,
    generate_api_key,
    hash_api_key,
    hash_password,
    issue_access_token,
    verify_password,
)
from aiops_executor.core.changes import apply_changes
from aiops_executor.core.context import AppContext
from aiops_executor.core.db import serialize_transaction, utcnow
from aiops_executor.core.errors import ConflictError, NotFoundError, UnauthorizedError
from aiops_executor.core.pagination import PageParams, paginate
from aiops_executor.core.settings import Settings, write_private_file

logger = structlog.get_logger(__name__)


async def authenticate(session: AsyncSession, context: AppContext, username: str, password: str) -> TokenResponse:
    user = await session.scalar(select(User).where(User.username == username))
    cost = HashCost.from_settings(context.settings)
    if not verify_password(password, user.password_hash if user else None, cost) or user is None or not user.is_active:
        raise UnauthorizedError("invalid username or password")
    issued = issue_access_token(
        user.id,
        user.role,
        secret=context.secrets.jwt_secret,
        algorithm=context.settings.jwt_algorithm,
        lifetime=timedelta(minutes=context.settings.access_token_expire_minutes),
    )
    return TokenResponse(access_token=issued.token, expires_in=issued.expires_in)


async def sign_in(
    session: AsyncSession, context: AppContext, username: str, password: str, address: str
) -> TokenResponse:
    """``authenticate`` behind the sign-in lockout: the way every sign-in (the token endpoint, the console's
    session) goes."""
    # Checked before the password: a locked username is refused even with the right one.
    attempt = await context.rate_limits.logins.begin(username, address)
    try:
        token = await authenticate(session, context, username, password)
        await attempt.succeeded()
    except UnauthorizedError:
        locked = await attempt.failed()
        if locked:
            logger.warning("sign-in locked after repeated failures", locked=locked, client=address)
        raise
    finally:
        await attempt.end()
    return token


async def create_user(session: AsyncSession, data: UserCreate, *, actor: str, cost: HashCost) -> User:
    user = User(username=data.username, password_hash=hash_password(data.password, cost), role=data.role.value)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ConflictError(
            f"username {data.username!r} is taken", error_code="USERNAME_EXISTS", details={"username": data.username}
        ) from None
    audit.record(
        session,
        actor=actor,
        action="create",
        resource_type="user",
        resource_id=user.id,
        details={"username": user.username, "role": user.role},
    )
    await session.commit()
    return user


async def list_users(session: AsyncSession, page: PageParams) -> tuple[list[User], int]:
    return await paginate(session, select(User).order_by(User.created_at, User.id), page)


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError("user", user_id)
    return user


async def _ensure_another_admin(session: AsyncSession, user: User, what: str) -> None:
    """409 ``LAST_ADMIN`` when ``user`` is the last active admin: nobody could administer the service after."""
    if user.role != Role.admin.value or not user.is_active:
        return
    await serialize_transaction(session, "users:admins")
    admins = await session.scalar(
        select(func.count()).select_from(User).where(User.role == Role.admin.value, User.is_active.is_(True))
    )
    if (admins or 0) <= 1:
        raise ConflictError(f"the last admin cannot be {what}", error_code="LAST_ADMIN")


async def update_user(session: AsyncSession, user_id: uuid.UUID, data: UserUpdate, *, actor: str) -> User:
    """Changes a user's role or disables (enables) them; the last active admin keeps both."""
    user = await get_user(session, user_id)
    values = data.model_dump(exclude_unset=True, mode="json")
    if values.get("role", user.role) != Role.admin.value:
        await _ensure_another_admin(session, user, "given another role")
    if values.get("is_active") is False:
        await _ensure_another_admin(session, user, "disabled")
    changed = apply_changes(user, values)
    if changed:
        audit.record(
            session,
            actor=actor,
            action="update",
            resource_type="user",
            resource_id=user.id,
            details={"username": user.username, **{name: values[name] for name in changed}},
        )
    await session.commit()
    return user


async def delete_user(session: AsyncSession, user_id: uuid.UUID, *, actor: str) -> None:
    user = await get_user(session, user_id)
    await _ensure_another_admin(session, user, "deleted")
    await session.delete(user)
    audit.record(
        session,
        actor=actor,
        action="delete",
        resource_type="user",
        resource_id=user_id,
        details={"username": user.username},
    )
    await session.commit()


async def ensure_bootstrap_admin(session: AsyncSession, settings: Settings) -> bool:
    """Create the first admin from settings when no user exists yet. Returns whether one was created."""
    username, password = settings.admin_username, settings.admin_password
    if not username or not password:
        return False
    if await session.scalar(select(func.count()).select_from(User)):
        return False
    try:
        await create_user(
            session,
            UserCreate(username=username, password=password, role=Role.admin),
            actor="system:bootstrap",
            cost=HashCost.from_settings(settings),
        )
    except ConflictError:  # another process starting at the same time created it
        return False
    return True


DEV_ADMIN_USERNAME = "admin"
DEV_ADMIN_PASSWORD_FILE = "admin_password"  # noqa: S105 - a file name


def admin_credentials(settings: Settings) -> tuple[str, str]:
    """The admin a local client (the demo, the lab) signs in as: the configured one, else the dev admin whose
    password ``ensure_dev_admin`` wrote. Raises ``LookupError`` saying what to set."""
    if settings.admin_username and settings.admin_password:
        return settings.admin_username, settings.admin_password
    path = settings.data_dir / DEV_ADMIN_PASSWORD_FILE
    if not path.is_file():
        raise LookupError(f"no admin credentials: set AIOPS_ADMIN_USERNAME/AIOPS_ADMIN_PASSWORD or keep {path}")
    return DEV_ADMIN_USERNAME, path.read_text().strip()


async def ensure_dev_admin(session: AsyncSession, settings: Settings) -> Path | None:
    """In dev mode with no user and no configured admin, create ``admin`` with a random password
    written to a private file in the data dir, so a fresh install can be signed in to."""
    if await session.scalar(select(func.count()).select_from(User)):
        return None
    password = secrets.token_urlsafe(18)
    path = settings.data_dir / DEV_ADMIN_PASSWORD_FILE
    write_private_file(path, password + "\n", replace=True)
    await create_user(
        session,
        UserCreate(username=DEV_ADMIN_USERNAME, password=password, role=Role.admin),
        actor="system:bootstrap",
        cost=HashCost.from_settings(settings),
    )
    return path


async def create_api_key(session: AsyncSession, data: ApiKeyCreate, principal: Principal) -> ApiKeyCreated:
    key = generate_api_key()
    row = ApiKey(
        name=data.name,
        role=data.role.value,
        key_hash=hash_api_key(key),
        key_prefix=key[:10],
        created_by=principal.id if principal.kind == "user" else None,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        actor=principal.actor,
        action="create",
        resource_type="api_key",
        resource_id=row.id,
        details={"name": row.name, "role": row.role},
    )
    await session.commit()
    return ApiKeyCreated(id=row.id, name=row.name, role=Role(row.role), key=key, created_at=row.created_at)


async def list_api_keys(session: AsyncSession, page: PageParams) -> tuple[list[ApiKey], int]:
    live = ApiKey.revoked_at.is_(None)
    return await paginate(session, select(ApiKey).where(live).order_by(ApiKey.created_at, ApiKey.id), page)


async def revoke_api_key(session: AsyncSession, key_id: uuid.UUID, *, actor: str) -> None:
    row = await session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        raise NotFoundError("api_key", key_id)
    row.revoked_at = utcnow()
    audit.record(
        session, actor=actor, action="delete", resource_type="api_key", resource_id=key_id, details={"name": row.name}
    )
    await session.commit()
