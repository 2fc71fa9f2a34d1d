"""Scrubs secrets from log events before they are rendered.

Two rules, applied to every field of an event (nested dicts, lists and tuples included):

- the value of a key whose name says it holds a secret (``password``, ``api_key``, ``Authorization``,
  ``client_secret``, ``accessToken`` ...) is replaced whole, unless it is a number, a boolean or ``None``;
- every string is searched for secrets by their shape: OpenAI/Anthropic-style keys (``sk-...``,
  ``sk-ant-...``), ``Bearer``/``Basic`` credentials, JWTs, AWS access key ids, the password of a URL
  (``scheme://user:pass@host``) and ``name=value`` / ``"name": "value"`` pairs with a secret-like name
  (which covers a named AWS secret access key).

Exceptions are rendered to text first (``exc_info``), so a secret in an exception message or its traceback
is scrubbed like any other string. One precompiled regular expression does the search; only strings are
scanned (other objects only when their ``repr`` is what the renderer would print).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "[REDACTED]"

# Names (of keys, or of name=value pairs inside text) whose value is a secret.
_SENSITIVE_NAMES = (
    r"passwords?|passwd|passphrase|pwd|secrets?|secret[_-]?key|secret[_-]?access[_-]?key|client[_-]?secret"
    r"|token|access[_-]?token|refresh[_-]?token|id[_-]?token|api[_-]?keys?|apikeys?|access[_-]?key|private[_-]?key"
    r"|authorization|credentials?|cookie|set[_-]cookie"
)
_SECRET_KEY_NAME = re.compile(rf"(?:^|_)(?:{_SENSITIVE_NAMES})(?:$|_)")
# A key that merely describes a secret (its id, kind, masked form, count) is no secret itself.
_DESCRIPTIVE_SUFFIXES = ("_id", "_ids", "_type", "_masked", "_count", "_status", "_alias", "_at", "_expires_in")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

_VALUE_END = r"""[^\s,;&'"<>(){}\[\]]"""
_NOT_REDACTED = re.escape(REDACTED)
# Every name above contains one of these (lower case).
_NAME_STEMS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "cookie")
# (a cheap test a string must pass to be searched, the pattern, whether group 1 is a prefix to keep).
# The tests skip the regular expressions for the vast majority of strings, which hold none of these.
_Detector = tuple[Callable[[str, str], bool], re.Pattern[str], bool]
_DETECTORS: tuple[_Detector, ...] = (
    # scheme://user:password@host -> keep everything but the password
    (
        lambda text, _: "://" in text and "@" in text,
        re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+(?=@)"),
        True,
    ),
    # Authorization header values
    (
        lambda _, low: "bearer" in low or "basic" in low,
        re.compile(r"(\b(?i:bearer|basic)\s+)[A-Za-z0-9\-._~+/]{8,}=*"),
        True,
    ),
    # OpenAI / Anthropic style keys (sk-..., sk-proj-..., sk-ant-...)
    (lambda text, _: "sk-" in text, re.compile(r"\bsk-[A-Za-z0-9][A-Za-z0-9_\-]{7,}"), False),
    # JWTs: base64url header and payload (both JSON objects, so "eyJ"), then a signature
    (
        lambda text, _: "eyJ" in text,
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        False,
    ),
    # AWS access key ids (long-term AKIA, temporary ASIA)
    (lambda text, _: "AKIA" in text or "ASIA" in text, re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), False),
    # name=value, name: value, name="value", "name": 'value' (key=value text, JSON, reprs); not an already
    # redacted value nor "Authorization: Bearer ..." (handled above)
    (
        lambda text, low: ("=" in text or ":" in text) and any(stem in low for stem in _NAME_STEMS),
        re.compile(
            rf"""((?=[pscatri])(?:{_SENSITIVE_NAMES})"""
            rf"""(?:["']?\s*[:=]\s*(?P<quote>["'])(?!{_NOT_REDACTED})"""
            rf"""|\s*[:=]\s*(?!{_NOT_REDACTED}|(?:bearer|basic)\s|["'])))"""
            rf"""(?(quote)(?:(?!(?P=quote)).)+|{_VALUE_END}+)""",
            re.IGNORECASE,
        ),
        True,
    ),
)
_SHORTEST_SECRET = 5  # "pwd=x"


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED


def redact_text(text: str) -> str:
    """``text`` with every secret it visibly contains replaced by ``[REDACTED]``."""
    if len(text) < _SHORTEST_SECRET:
        return text
    low = text.lower()
    for applies, pattern, keeps_prefix in _DETECTORS:
        if applies(text, low):
            text = pattern.sub(_keep_prefix if keeps_prefix else REDACTED, text)
    return text


@lru_cache(maxsize=4096)
def is_secret_key(name: str) -> bool:
    """Whether a field with this name holds a secret (``api_key``, ``X-Api-Key``, ``clientSecret`` ...)."""
    normalized = _CAMEL_BOUNDARY.sub("_", name).lower().replace("-", "_")
    if normalized.endswith(_DESCRIPTIVE_SUFFIXES):
        return False
    return _SECRET_KEY_NAME.search(normalized) is not None


_PLAIN = (int, float, bool, type(None))


def redact_value(value: Any) -> Any:
    """A copy of ``value`` without secrets; values that carry none are returned as they are."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {
            key: (_redact_secret(item) if isinstance(key, str) and is_secret_key(key) else redact_value(item))
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace")
        cleaned = redact_text(text)
        return value if cleaned == text else cleaned
    # Any other object is rendered through its repr (exceptions through their text): scrub that form.
    shown = str(value) if isinstance(value, BaseException) else repr(value)
    cleaned = redact_text(shown)
    return value if cleaned == shown else cleaned


def _redact_secret(value: Any) -> Any:
    return value if isinstance(value, _PLAIN) else REDACTED


def redact_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: place it after ``format_exc_info`` and before the renderer."""
    if event_dict.get("exc_info"):
        event_dict = structlog.processors.format_exc_info(logger, method_name, event_dict)
    cleaned: EventDict = redact_value(event_dict)
    return cleaned
