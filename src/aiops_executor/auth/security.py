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
def _hashing(cost: HashCost) -> tuple[PasswordHash, str]:
    """The hasher for ``cost`` and a hash of nothing anyone knows: verifying against it keeps "no such user" as
    slow as "wrong password". Both are made on the first use of either path, so neither path's first call is the
    only one to pay for it."""
    hasher = PasswordHash((Argon2Hasher(time_cost=cost.time_cost, memory_cost=cost.memory_kib),))
    return hasher, hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str, cost: HashCost) -> str:
    return _hashing(cost)[0].hash(password)


def verify_password(password: str, password_hash: str | None, cost: HashCost) -> bool:
    """Whether ``password`` matches; a stored hash is checked at the cost it was made with."""
    hasher, dummy_hash = _hashing(cost)
    if password_hash is None:
        hasher.verify(password, dummy_hash)
        return False
    try:
        return hasher.verify(password, password_hash)
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
