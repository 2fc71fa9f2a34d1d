"""Password hashing, JWT issue/verify and API key material."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

API_KEY_PREFIX = "aiops_"
_password_hash = PasswordHash((Argon2Hasher(),))
# Verifying against this keeps the timing of "no such user" equal to "wrong password".
_DUMMY_HASH = _password_hash.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _password_hash.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    if password_hash is None:
        _password_hash.verify(password, _DUMMY_HASH)
        return False
    try:
        return _password_hash.verify(password, password_hash)
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
