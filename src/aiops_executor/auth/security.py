"""Password hashing, JWT issue/verify and API key material."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from aiops_executor.core.settings import Settings

API_KEY_PREFIX = "aiops_"


@dataclass(frozen=True)
class HashCost:
    """The Argon2id cost of new password hashes (``AIOPS_PASSWORD_HASH_*``; argon2-cffi's defaults)."""

    time_cost: int = 3
    memory_kib: int = 65_536

    @classmethod
    def from_settings(cls, settings: Settings) -> HashCost:
        return cls(settings.password_hash_time_cost, settings.password_hash_memory_kib)


@cache
def _hasher(cost: HashCost) -> PasswordHash:
    return PasswordHash((Argon2Hasher(time_cost=cost.time_cost, memory_cost=cost.memory_kib),))


@cache
def _dummy_hash(cost: HashCost) -> str:
    """Verifying against this keeps the timing of "no such user" equal to "wrong password"."""
    return _hasher(cost).hash(secrets.token_urlsafe(16))


def hash_password(password: str, cost: HashCost) -> str:
    return _hasher(cost).hash(password)


def verify_password(password: str, password_hash: str | None, cost: HashCost) -> bool:
    """Whether ``password`` matches; a stored hash is checked at the cost it was made with."""
    if password_hash is None:
        _hasher(cost).verify(password, _dummy_hash(cost))
        return False
    try:
        return _hasher(cost).verify(password, password_hash)
    except Exception:  # an unreadable stored hash must not authenticate
        return False


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int


def issue_access_token(
    user_id: uuid.UUID, role: str, *, secret: str, algorithm: str, lifetime: timedelta
) -> IssuedToken:
    now = datetime.now(UTC)
    claims = {"sub": str(user_id), "role": role, "iat": now, "exp": now + lifetime, "typ": "access"}
    return IssuedToken(jwt.encode(claims, secret, algorithm=algorithm), int(lifetime.total_seconds()))


def decode_access_token(token: str, *, secret: str, algorithm: str) -> uuid.UUID | None:
    try:
        claims = jwt.decode(token, secret, algorithms=[algorithm], options={"require": ["sub", "exp"]})
        if claims.get("typ") != "access":
            return None
        return uuid.UUID(str(claims["sub"]))
    except (jwt.PyJWTError, ValueError):
        return None


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # API keys carry 256 bits of entropy, so a fast digest is enough; a slow KDF would only add latency.
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith(API_KEY_PREFIX)
