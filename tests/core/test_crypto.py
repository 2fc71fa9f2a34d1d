"""Envelope encryption: round trips, binding to row and column, tampering, rotation."""

from __future__ import annotations

import os

import pytest

from aiops_executor.core.crypto import DecryptionError, Envelope, EnvelopeCipher, associated_data, mask_secret

OLD = os.urandom(32)
NEW = os.urandom(32)
AAD = associated_data("provider_credentials", "api_key_encrypted", "row-1")


def test_round_trip_and_fresh_randomness() -> None:
    cipher = EnvelopeCipher({"k1": OLD}, "k1")
    first = cipher.encrypt("sk-secret-value", AAD)
    second = cipher.encrypt("sk-secret-value", AAD)
    assert first != second
    assert "sk-secret-value" not in first
    assert cipher.decrypt(first, AAD) == "sk-secret-value"
    assert Envelope.parse(first).key_id == "k1"


@pytest.mark.parametrize(
    "other_aad",
    [
        associated_data("provider_credentials", "api_key_encrypted", "row-2"),
        associated_data("provider_credentials", "secret_key_encrypted", "row-1"),
        associated_data("other_table", "api_key_encrypted", "row-1"),
    ],
)
def test_ciphertext_is_bound_to_its_row_and_column(other_aad: bytes) -> None:
    cipher = EnvelopeCipher({"k1": OLD}, "k1")
    stored = cipher.encrypt("sk-secret-value", AAD)
    with pytest.raises(DecryptionError):
        cipher.decrypt(stored, other_aad)


def test_tampering_is_detected() -> None:
    cipher = EnvelopeCipher({"k1": OLD}, "k1")
    stored = cipher.encrypt("sk-secret-value", AAD)
    version, key_id, wrapped, sealed = stored.split(".")
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(DecryptionError):
        cipher.decrypt(".".join((version, key_id, wrapped, flipped)), AAD)
    with pytest.raises(DecryptionError):
        cipher.decrypt("garbage", AAD)
    with pytest.raises(DecryptionError):
        cipher.decrypt(".".join((version, "k1", sealed, wrapped)), AAD)


def test_unknown_key_id_fails_cleanly() -> None:
    stored = EnvelopeCipher({"k1": OLD}, "k1").encrypt("sk-secret-value", AAD)
    with pytest.raises(DecryptionError, match="not in the keyring"):
        EnvelopeCipher({"k2": NEW}, "k2").decrypt(stored, AAD)


def test_rewrap_changes_only_the_wrapped_key() -> None:
    old = EnvelopeCipher({"k1": OLD}, "k1")
    stored = old.encrypt("sk-secret-value", AAD)
    both = EnvelopeCipher({"k1": OLD, "k2": NEW}, "k2")
    rewrapped = both.rewrap(stored, AAD)
    before, after = Envelope.parse(stored), Envelope.parse(rewrapped)
    assert after.key_id == "k2"
    assert after.sealed == before.sealed
    assert after.wrapped_key != before.wrapped_key
    assert EnvelopeCipher({"k2": NEW}, "k2").decrypt(rewrapped, AAD) == "sk-secret-value"
    assert both.rewrap(rewrapped, AAD) == rewrapped


def test_keyring_must_hold_the_current_key() -> None:
    with pytest.raises(ValueError):
        EnvelopeCipher({"k1": OLD}, "k2")
    with pytest.raises(ValueError):
        EnvelopeCipher({"k1": b"short"}, "k1")


@pytest.mark.parametrize(
    ("secret", "masked"),
    [
        ("sk-1234567890abcdef", "sk-1...cdef"),
        ("short", "****"),
        ("exactly12chr", "exac...2chr"),
        ("11characters"[:11], "****"),
    ],
)
def test_mask(secret: str, masked: str) -> None:
    assert mask_secret(secret) == masked
