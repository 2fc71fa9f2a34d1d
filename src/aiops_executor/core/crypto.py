"""AES-256-GCM envelope encryption for stored secrets.

Each secret gets its own random data key. The secret is sealed with the data key, and the data key
is wrapped by a master key named by its key id. Both layers bind associated data naming the row and
column the ciphertext belongs to, so a ciphertext copied into another row or column fails to open.
Rotating the master key re-wraps data keys only; the sealed secrets are left untouched.

Stored form (ASCII): ``v1.<key_id>.<b64 wrap nonce+wrapped data key>.<b64 nonce+ciphertext>``.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = "v1"
NONCE_BYTES = 12
DATA_KEY_BYTES = 32


class DecryptionError(Exception):
    """A ciphertext could not be opened (unknown key id, tampering, or wrong row/column)."""


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def associated_data(table: str, column: str, row_id: object) -> bytes:
    return f"{table}:{column}:{row_id}".encode()


@dataclass(frozen=True)
class Envelope:
    key_id: str
    wrapped_key: bytes
    sealed: bytes

    def serialize(self) -> str:
        return ".".join((FORMAT_VERSION, self.key_id, _b64e(self.wrapped_key), _b64e(self.sealed)))

    @classmethod
    def parse(cls, stored: str) -> Envelope:
        parts = stored.split(".")
        if len(parts) != 4 or parts[0] != FORMAT_VERSION:
            raise DecryptionError("unrecognised ciphertext format")
        try:
            return cls(parts[1], _b64d(parts[2]), _b64d(parts[3]))
        except ValueError as exc:
            raise DecryptionError("corrupt ciphertext encoding") from exc


class EnvelopeCipher:
    def __init__(self, master_keys: dict[str, bytes], current_key_id: str) -> None:
        if current_key_id not in master_keys:
            raise ValueError(f"current master key id {current_key_id!r} is not in the keyring")
        if any(len(key) != 32 for key in master_keys.values()):
            raise ValueError("master keys must be 32 bytes")
        self._master_keys = dict(master_keys)
        self.current_key_id = current_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._master_keys)

    def _master(self, key_id: str) -> AESGCM:
        try:
            return AESGCM(self._master_keys[key_id])
        except KeyError:
            raise DecryptionError(f"master key id {key_id!r} is not in the keyring") from None

    @staticmethod
    def _wrap_aad(aad: bytes, key_id: str) -> bytes:
        return b"wrap:" + key_id.encode() + b":" + aad

    def encrypt(self, plaintext: str, aad: bytes) -> str:
        data_key = AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + AESGCM(data_key).encrypt(nonce, plaintext.encode("utf-8"), aad)
        return self._wrap(data_key, aad, self.current_key_id, sealed).serialize()

    def _wrap(self, data_key: bytes, aad: bytes, key_id: str, sealed: bytes) -> Envelope:
        wrap_nonce = os.urandom(NONCE_BYTES)
        wrapped = wrap_nonce + self._master(key_id).encrypt(wrap_nonce, data_key, self._wrap_aad(aad, key_id))
        return Envelope(key_id, wrapped, sealed)

    def _unwrap(self, envelope: Envelope, aad: bytes) -> bytes:
        wrapped = envelope.wrapped_key
        try:
            return self._master(envelope.key_id).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], self._wrap_aad(aad, envelope.key_id)
            )
        except InvalidTag:
            raise DecryptionError("data key could not be unwrapped") from None

    def decrypt(self, stored: str, aad: bytes) -> str:
        envelope = Envelope.parse(stored)
        data_key = self._unwrap(envelope, aad)
        sealed = envelope.sealed
        try:
            return AESGCM(data_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad).decode("utf-8")
        except InvalidTag:
            raise DecryptionError("secret could not be decrypted") from None

    def rewrap(self, stored: str, aad: bytes) -> str:
        """Re-wrap the data key under the current master key; the sealed secret is kept byte for byte."""
        envelope = Envelope.parse(stored)
        if envelope.key_id == self.current_key_id:
            return stored
        data_key = self._unwrap(envelope, aad)
        return self._wrap(data_key, aad, self.current_key_id, envelope.sealed).serialize()

    @staticmethod
    def key_id_of(stored: str) -> str:
        return Envelope.parse(stored).key_id


def mask_secret(secret: str) -> str:
    """First 4 and last 4 characters around ``...``; fully ``****`` when shorter than 12."""
    if len(secret) < 12:
        return "****"
    return f"{secret[:4]}...{secret[-4:]}"
