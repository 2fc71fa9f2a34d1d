"""What the command line says when a command fails: one line (at most two) and an exit code, never a traceback.

``explain`` turns an exception into a ``Failure``. Known failures are recognised by their type anywhere in
the exception's chain (a driver's error is usually wrapped by SQLAlchemy, procrastinate or redis-py):

- exit 1, ``EXIT_USER_ERROR``: the request itself is refused (a user that already exists) -- and anything
  unexpected, which says how to see the traceback;
- exit 2, ``EXIT_USAGE``: bad settings or options (typer's own usage errors exit 2 too);
- exit 3, ``EXIT_ENVIRONMENT``: the command is right but what it needs is not there -- the database or Redis
  is down or unreachable, the database does not exist or is not migrated, the port is taken.

Messages never show a password: database and Redis addresses are shown as host:port/name.
"""

from __future__ import annotations

import errno
import json
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aiops_executor.core.errors import AppError
from aiops_executor.core.listening import CannotListen
from aiops_executor.core.redaction import redact_text
from aiops_executor.core.settings import ConfigurationError

EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
DEBUG_VARIABLE = "AIOPS_DEBUG"
MAX_DETAIL_CHARS = 300

# PostgreSQL error codes (SQLSTATE) that say what is wrong with the database rather than with a query.
UNDEFINED_TABLE = "42P01"
INVALID_CATALOG_NAME = "3D000"  # the database does not exist
LOGIN_REFUSED = ("28000", "28P01")  # no such role / wrong password (or pg_hba.conf refuses)
CANNOT_CONNECT_NOW = ("57P03", "53300")  # starting up or shutting down / too many connections


@dataclass(frozen=True)
class Failure:
    message: str
    exit_code: int


class CommandFailure(Exception):
    """A failure a command recognises itself; the message is what the user reads."""

    def __init__(self, message: str, exit_code: int = EXIT_USER_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Targets:
    """The addresses failures are reported against, from the settings (None when they cannot be read)."""

    database_url: str | None = None
    redis_url: str | None = None

    @property
    def database(self) -> str:
        return _describe_url(self.database_url) if self.database_url else "the configured database"

    @property
    def redis(self) -> str:
        return _describe_url(self.redis_url) if self.redis_url else "the configured Redis"


def _describe_url(url: str) -> str:
    """host:port/name of a URL (a file path for SQLite), without user or password."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # an unparseable URL is reported by the settings check
        return "the configured address"
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "an in-memory SQLite database"
    address = f"{parsed.host or 'localhost'}:{parsed.port or _default_port(parsed.get_backend_name())}"
    return f"{address}/{parsed.database}" if parsed.database else address


def _default_port(backend: str) -> int:
    return {"postgresql": 5432, "redis": 6379, "rediss": 6379}.get(backend, 0)


def _chain(exc: BaseException, seen: set[int] | None = None) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (unless ``from None`` hid them) and a
    group's members, outermost first."""
    seen = set() if seen is None else seen
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            for member in current.exceptions:
                yield from _chain(member, seen)
        if current.__cause__ is not None or current.__suppress_context__:
            current = current.__cause__
        else:
            current = current.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else "no message"
    return redact_text(line)[:MAX_DETAIL_CHARS]


def _sqlstate(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    return code if isinstance(code, str) else None


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if "Connect call failed" in str(exc):
        return "connection failed"
    return (exc.strerror or _first_line(exc)).lower()


def explain(exc: BaseException, targets: Targets) -> Failure:
    """The message and exit code for ``exc``; anything unrecognised is an unexpected error (exit 1)."""
    for link in _chain(exc):
        failure = _explain_one(link, targets)
        if failure is not None:
            return failure
    return Failure(
        f"unexpected error: {_first_line(exc)} (rerun with {DEBUG_VARIABLE}=1 for the traceback)",
        EXIT_USER_ERROR,
    )


def _explain_one(exc: BaseException, targets: Targets) -> Failure | None:
    from aiops_executor.core.migrate import SchemaNotMigrated  # lazily: Alembic is slow to import

    if isinstance(exc, CommandFailure):
        return Failure(str(exc), exc.exit_code)
    if isinstance(exc, ConfigurationError):
        return Failure(f"configuration error: {exc}", EXIT_USAGE)
    if isinstance(exc, AppError):
        return Failure(f"{exc.error_code}: {exc.message}", EXIT_USER_ERROR)
    if isinstance(exc, CannotListen):
        return Failure(str(exc), EXIT_ENVIRONMENT)
    if isinstance(exc, SchemaNotMigrated):
        behind = f" (it is at revision {exc.current}, this version needs {exc.head})" if exc.current else ""
        return _not_migrated(targets, behind)
    return (
        _explain_redis(exc, targets)
        or _explain_http(exc)
        or _explain_database(exc, targets)
        or _explain_file_system(exc)
    )


def _not_migrated(targets: Targets, detail: str = "") -> Failure:
    return Failure(
        f"the database at {targets.database} is not migrated{detail}: run `aiops-executor migrate`", EXIT_ENVIRONMENT
    )


def _unreachable_database(targets: Targets, reason: str) -> Failure:
    return Failure(
        f"cannot reach the database at {targets.database}: {reason}; is PostgreSQL running? (AIOPS_DATABASE_URL)",
        EXIT_ENVIRONMENT,
    )


def _missing_database(targets: Targets) -> Failure:
    return Failure(
        f"the database {targets.database} does not exist on the server: create it (createdb) or fix AIOPS_DATABASE_URL",
        EXIT_ENVIRONMENT,
    )


def _explain_database(exc: BaseException, targets: Targets) -> Failure | None:
    """Failures of the database's drivers. A bare network error is the database's too: asyncpg raises them
    unwrapped, while redis-py and httpx wrap theirs (recognised first, as the chain is walked outermost first)."""
    from sqlalchemy import exc as sa_exc

    state = _sqlstate(exc)
    if state == UNDEFINED_TABLE or (isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)):
        return _not_migrated(targets)
    if state == INVALID_CATALOG_NAME:
        return _missing_database(targets)
    if state in LOGIN_REFUSED:
        return Failure(
            f"the database at {targets.database} refused the login: {_first_line(exc)}; "
            "check the user and password in AIOPS_DATABASE_URL",
            EXIT_ENVIRONMENT,
        )
    if state in CANNOT_CONNECT_NOW:
        return _unreachable_database(targets, _first_line(exc))
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
        return Failure(
            f"cannot open the SQLite database {targets.database}: check that AIOPS_DATA_DIR is writable",
            EXIT_ENVIRONMENT,
        )
    if isinstance(exc, OSError) and _is_network_error(exc):
        return _unreachable_database(targets, _os_reason(exc))
    if _is_psycopg_connection_failure(exc):
        return _explain_psycopg_connection(exc, targets)
    # Normally caught by the settings check already; kept for a URL that reached the engine some other way.
    if isinstance(exc, sa_exc.NoSuchModuleError) or (isinstance(exc, sa_exc.ArgumentError) and "URL" in str(exc)):
        return Failure(f"AIOPS_DATABASE_URL is not a valid database URL: {_first_line(exc)}", EXIT_USAGE)
    return None


def _is_network_error(exc: OSError) -> bool:
    return (
        isinstance(exc, ConnectionError | socket.gaierror | TimeoutError)
        or exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)
        # asyncio's error when every address of a host name failed: "Multiple exceptions: [Errno 111] ..."
        or "Connect call failed" in str(exc)
    )


def _is_psycopg_connection_failure(exc: BaseException) -> bool:
    """psycopg (the job queue's and the checkpointer's driver) reports a failed connection as an
    OperationalError without an error code, or as a pool that never filled."""
    import psycopg
    import psycopg_pool

    return isinstance(exc, psycopg_pool.PoolTimeout) or (
        isinstance(exc, psycopg.OperationalError) and _sqlstate(exc) is None
    )


def _explain_psycopg_connection(exc: BaseException, targets: Targets) -> Failure:
    text = str(exc)
    if "does not exist" in text and "database" in text:
        return _missing_database(targets)
    if "Connection refused" in text:
        return _unreachable_database(targets, "connection refused")
    return _unreachable_database(targets, _first_line(exc).removeprefix("connection failed: "))


def _explain_file_system(exc: BaseException) -> Failure | None:
    """A file or folder the command needs (the data dir, the SQLite file's folder) cannot be used."""
    if not isinstance(exc, OSError) or exc.filename is None:
        return None
    reason = "it exists and is not a folder" if isinstance(exc, FileExistsError) else _os_reason(exc)
    return Failure(f"cannot use {exc.filename}: {reason} (AIOPS_DATA_DIR, AIOPS_DATABASE_URL)", EXIT_ENVIRONMENT)


def _explain_http(exc: BaseException) -> Failure | None:
    import httpx

    if isinstance(exc, httpx.TransportError):
        where = f" to {redact_text(str(exc.request.url))}" if _has_request(exc) else ""
        return Failure(f"HTTP request{where} failed: {_first_line(exc)}", EXIT_ENVIRONMENT)
    return None


def _has_request(exc: BaseException) -> bool:
    try:
        return getattr(exc, "request", None) is not None
    except RuntimeError:  # httpx raises it when the error was created without a request
        return False


def _explain_redis(exc: BaseException, targets: Targets) -> Failure | None:
    import redis.exceptions

    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        reason = "connection refused" if "refused" in str(exc).lower() else _first_line(exc)
        return Failure(
            f"cannot reach Redis at {targets.redis}: {reason}; is Redis running? (AIOPS_REDIS_URL)", EXIT_ENVIRONMENT
        )
    return None


def api_refusal(status_code: int, body: bytes) -> str:
    """Why the service refused a request, as a client of its API says it: ``status error_code: message`` from
    the contract's error body, else the start of whatever came back."""
    try:
        answer = json.loads(body)
        return f"{status_code} {answer.get('error_code')}: {answer.get('error_message')}"
    except (ValueError, AttributeError):
        return f"{status_code} {body[:300].decode('utf-8', errors='replace')}"
