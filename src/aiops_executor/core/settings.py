"""Service settings, read from the environment (prefix ``AIOPS_``) or a ``.env`` file."""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from aiops_executor.core.egress_rules import EgressRuleError, parse_rules
from aiops_executor.core.files import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE
from aiops_executor.core.redaction import redact_text

MASTER_KEY_BYTES = 32
MASTER_KEYS_FILE = "master_keys.json"
JWT_SECRET_FILE = "jwt_secret"  # noqa: S105 - a file name
ENV_PREFIX = "AIOPS_"
# Settings whose value an error message must not repeat.
SECRET_SETTINGS = frozenset({"master_keys", "jwt_secret", "admin_password"})
# The (backend, async driver) pairs the service runs on; anything else fails at the first connection.
SUPPORTED_DATABASE_DRIVERS = frozenset({("sqlite", "aiosqlite"), ("postgresql", "asyncpg")})
DATABASE_URL_FORMS = "postgresql+asyncpg://user[:password]@host:5432/db or sqlite+aiosqlite:///path/to/file.db"
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")
# OWASP's minimum for Argon2id: m=19 MiB, t=2.
PROD_PASSWORD_HASH_FLOOR = {"password_hash_time_cost": 2, "password_hash_memory_kib": 19_456}


class Environment(StrEnum):
    dev = "dev"
    prod = "prod"


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message is one line an operator can act on."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore")

    env: Environment = Environment.dev
    data_dir: Path = Path("./.aiops")
    database_url: str | None = None
    redis_url: str | None = None

    # Key id -> base64 of 32 random bytes. NoDecode: parsed by the validator below so that a
    # malformed value produces our one-line message instead of a settings parse error dump.
    master_keys: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    master_key_id: str | None = None
    jwt_secret: str | None = None
    jwt_algorithm: str = "HS256"
    access_token_expire_minutes: int = Field(default=60, ge=1, le=60 * 24 * 30)

    admin_username: str | None = None
    admin_password: str | None = None
    # Argon2id cost of new password hashes (a stored hash keeps the cost it was made with). Production refuses
    # less than OWASP's floor (2 passes over 19 MiB); tests lower it, as hashing dominates their sign-ins.
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65_536, ge=64, le=4 * 1024 * 1024)

    # Register the offline simulator provider on a fresh install (no provider ever registered), on any database.
    seed_simulator: bool = True

    log_level: str = "INFO"
    log_format: str | None = None  # "json" or "console"; default depends on env

    # PostgreSQL connections per process: kept open, and opened beyond them while all are busy. Every process
    # may hold their sum: the server's max_connections must cover all processes' (plus other clients').
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=20, ge=0)
    config_cache_ttl_seconds: float = Field(default=60.0, ge=0)

    failover_cooldown_seconds: float = Field(default=30.0, ge=0)
    max_concurrent_calls_per_endpoint: int = Field(default=16, ge=1)
    health_degraded_latency_ms: float = Field(default=2000.0, gt=0)
    # Endpoints' rpm/tpm limits count the calls of this window (a minute; shorter in tests). An endpoint's circuit
    # breaker opens after this many failures in a row, or once this share of its last calls (the window, with at
    # least that many seen) failed; 0 turns either rule off. Open, routing skips the endpoint for the cool-down
    # (or a longer Retry-After), then lets one probe call through; its success closes the breaker.
    endpoint_rate_limit_window_seconds: float = Field(default=60.0, gt=0, le=3600)
    circuit_breaker_consecutive_failures: int = Field(default=5, ge=0)
    circuit_breaker_failure_rate_percent: float = Field(default=50.0, ge=0, le=100)
    circuit_breaker_window_calls: int = Field(default=20, ge=1, le=1000)
    circuit_breaker_cooldown_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Budgets: what a model call in flight holds against them is bounded by its prompt's size and its output
    # limit (max_tokens, else the model's max_output_tokens, else this many tokens); a hold whose call never
    # reported back (its process died) is let go after budget_hold_seconds.
    budget_default_output_tokens: int = Field(default=4096, ge=1)
    budget_hold_seconds: float = Field(default=900.0, gt=0)

    max_endpoints_per_provider: int = Field(default=10, ge=1)
    max_credentials_per_provider: int = Field(default=20, ge=1)
    max_api_key_length: int = Field(default=500, ge=1)
    # Largest request body accepted (413 PAYLOAD_TOO_LARGE above it); the largest allowed topology
    # (100 nodes of 20 agents) is about 600 KiB.
    max_request_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)

    # Diagnostic tools: the Prometheus used when a node names none; a ceiling on every tool call's own
    # timeout; the largest tool result (JSON characters) handed back to a model.
    prometheus_url: str | None = None
    tool_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    tool_output_max_chars: int = Field(default=8_000, ge=500, le=200_000)
    # MCP tool servers: stdio servers run a command on this machine, so production refuses them unless this
    # is set; how long connecting to a server (and listing its tools) may take.
    allow_stdio_tool_servers: bool = False
    tool_server_connect_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    # How long a tool call that needs a person's approval waits before it counts as rejected.
    approval_timeout_seconds: float = Field(default=3600.0, gt=0, le=30 * 24 * 3600)

    # Executions: how many run at once (the rest wait as pending); whether a team may run twice at once;
    # how long executions and their events are kept; SSE keep-alive and idle close; event batching.
    max_concurrent_executions: int = Field(default=100, ge=1, le=10_000)
    allow_concurrent_team_executions: bool = False
    execution_retention_days: float = Field(default=30.0, gt=0)
    purge_interval_seconds: float = Field(default=3600.0, gt=0)
    sse_heartbeat_seconds: float = Field(default=30.0, gt=0)
    sse_idle_close_seconds: float = Field(default=300.0, gt=0)
    event_flush_interval_ms: float = Field(default=5.0, gt=0, le=5_000)
    event_flush_batch_size: int = Field(default=200, ge=1, le=10_000)
    # Durable runs: how many times a run may be started (the first attempt, then one per resume after its
    # process was lost) before it fails with WORKER_LOST.
    max_run_attempts: int = Field(default=3, ge=1, le=100)
    # Processes (PostgreSQL): whether ``serve`` also runs executions (an embedded worker); how many runs a
    # worker takes at once; how long a worker may miss heartbeats (sent every third of it) before its runs are
    # taken over; how long a stopping worker lets its runs go on before handing them back to the queue; how
    # often a worker looks for jobs and cancellations that a lost notification did not bring.
    embedded_worker: bool = True
    worker_concurrency: int = Field(default=50, ge=1, le=10_000)
    worker_lease_seconds: float = Field(default=30.0, ge=0.1, le=3600)
    worker_drain_seconds: float = Field(default=30.0, ge=0, le=3600)
    worker_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    # Traces: exported over OTLP/HTTP when an endpoint is set (off by default), e.g. http://collector:4318;
    # the service name they carry; the share of new traces recorded (a caller's sampled flag is followed).
    otlp_endpoint: str | None = None
    otel_service_name: str = "aiops-agent-executor"
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)

    # Rate limits per caller (API key or user; client address for sign-in), requests per minute, 0 = off.
    # Sign-in throttling: after this many failures within the window, a username (or an address) is
    # refused for the lockout period, even with the right password; 0 = off.
    rate_limit_executions_per_minute: int = Field(default=60, ge=0)
    rate_limit_auth_per_minute: int = Field(default=20, ge=0)
    login_max_failures: int = Field(default=5, ge=0)
    login_max_failures_per_ip: int = Field(default=20, ge=0)
    login_failure_window_seconds: float = Field(default=900.0, gt=0)
    login_lockout_seconds: float = Field(default=900.0, gt=0)
    # How long /health/ready waits for each dependency (database, Redis when configured).
    readiness_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    # Liveness (GET /health, core/liveness.py): an event loop late by more than the lag, resident memory above
    # the limit (unset: 90 % of the container's limit, if any) or a database unreachable without a break for
    # longer than the grace fail it. 0 turns the lag, memory or database check off.
    liveness_tick_seconds: float = Field(default=1.0, gt=0, le=60)
    liveness_max_loop_lag_seconds: float = Field(default=5.0, ge=0)
    liveness_memory_limit_mb: int | None = Field(default=None, ge=0)
    liveness_database_probe_seconds: float = Field(default=10.0, gt=0)
    liveness_database_grace_seconds: float = Field(default=60.0, ge=0)

    # Egress policy of tools and provider calls (see ``core.egress``): comma-separated rules -- CIDRs,
    # host names with * globs, optional :port, or :port alone. Deny wins; with an allow list, the rest is denied.
    egress_allow: str = ""
    egress_deny: str = ""
    # Whether postgres_diagnostics may log in as a superuser (read-only all the same). Unset: allowed in dev, where
    # the demo probes the local PostgreSQL as ``postgres``; refused in prod.
    diagnostics_allow_superuser: bool | None = None

    @property
    def superuser_diagnostics_allowed(self) -> bool:
        if self.diagnostics_allow_superuser is not None:
            return self.diagnostics_allow_superuser
        return not self.is_prod

    @field_validator("egress_allow", "egress_deny")
    @classmethod
    def _check_egress_rules(cls, value: str | None, info: ValidationInfo) -> str:
        variable = f"{ENV_PREFIX}{str(info.field_name).upper()}"
        try:
            parse_rules(value or "", variable)
        except EgressRuleError as exc:
            raise ValueError(f"{variable} is not valid: {exc}") from None
        return value or ""

    @field_validator("password_hash_time_cost", "password_hash_memory_kib")
    @classmethod
    def _refuse_weak_password_hashing_in_prod(cls, value: int, info: ValidationInfo) -> int:
        floor = PROD_PASSWORD_HASH_FLOOR[str(info.field_name)]
        if info.data.get("env") is Environment.prod and value < floor:
            variable = f"{ENV_PREFIX}{str(info.field_name).upper()}"
            raise ValueError(f"{variable}={value} is too weak for production; use at least {floor}")
        return value

    @field_validator("master_keys", mode="before")
    @classmethod
    def _parse_master_keys(cls, value: Any) -> Any:
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError("AIOPS_MASTER_KEYS must be a JSON object mapping key ids to base64 keys") from exc
        if not isinstance(value, dict):
            raise ValueError("AIOPS_MASTER_KEYS must be a JSON object mapping key ids to base64 keys")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        problem = database_url_problem(value)
        if problem is not None:
            raise ValueError(f"AIOPS_DATABASE_URL is not a valid database URL: {problem}; use {DATABASE_URL_FORMS}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(REDIS_URL_SCHEMES):
            raise ValueError("AIOPS_REDIS_URL is not a Redis URL; use redis://[:password@]host:6379/0 (or rediss://)")
        return value

    @property
    def is_prod(self) -> bool:
        return self.env is Environment.prod

    @property
    def stdio_tool_servers_allowed(self) -> bool:
        return self.allow_stdio_tool_servers or not self.is_prod

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'aiops.db').resolve()}"

    @property
    def is_embedded_database(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def embedded_database_path(self) -> Path | None:
        """The SQLite file of the embedded database; None on PostgreSQL or for an in-memory database."""
        if not self.is_embedded_database:
            return None
        database = make_url(self.resolved_database_url).database
        return Path(database) if database and database != ":memory:" else None

    @property
    def uses_job_queue(self) -> bool:
        """Runs go through the job queue (PostgreSQL); on the embedded default one process runs them."""
        return not self.is_embedded_database


def database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the service's database URL, or None. The URL itself is never quoted (it may
    hold a password)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "it cannot be parsed"
    backend, _, driver = parsed.drivername.partition("+")
    if (backend, driver) not in SUPPORTED_DATABASE_DRIVERS:
        return f"unsupported driver {parsed.drivername!r}"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"port {parsed.port} is out of range"
    return None


def describe_invalid_settings(error: ValidationError) -> str:
    """One line naming each rejected variable, its value (unless it is a secret) and what it must be."""
    problems = []
    for item in error.errors():
        name = str(item["loc"][0]) if item["loc"] else ""
        variable = f"{ENV_PREFIX}{name.upper()}"
        reason = str(item["msg"]).removeprefix("Value error, ")
        if reason.startswith(variable):  # our validators name the variable themselves
            problems.append(reason)
            continue
        if item["type"] == "bool_parsing":
            reason = "must be true or false (or 1/0, yes/no, on/off)"
        reason = reason.replace("Input should be", "must be", 1)
        if name in SECRET_SETTINGS:
            problems.append(f"{variable} is not valid: {reason}")
        else:
            shown = redact_text(str(item.get("input", "")))
            problems.append(f"{variable}={shown[:80]!r} is not valid: {reason}")
    return "; ".join(problems)


def decode_master_key(key_id: str, encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"master key {key_id!r} is not valid base64") from exc
    if len(raw) != MASTER_KEY_BYTES:
        raise ConfigurationError(f"master key {key_id!r} must decode to {MASTER_KEY_BYTES} bytes, got {len(raw)}")
    return raw


def write_private_file(path: Path, content: str, *, replace: bool = False) -> None:
    """Write a file only its owner can read; refuse to overwrite unless ``replace``."""
    path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)  # a replaced file keeps its mode otherwise
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)


def _read_key_file(path: Path) -> tuple[dict[str, str], str]:
    """The keyring a previous dev start generated: ``{"current": id, "keys": {id: base64}}``."""
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        keys, current = stored["keys"], stored["current"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigurationError(
            f"{path} is not a valid master key file ({type(exc).__name__}); restore it or set AIOPS_MASTER_KEYS"
        ) from None
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()) or not isinstance(current, str):
        raise ConfigurationError(f"{path} is not a valid master key file; restore it or set AIOPS_MASTER_KEYS")
    return keys, current


class ResolvedSecrets:
    """Key material the process runs with, after dev-mode generation and validation."""

    def __init__(
        self, master_keys: dict[str, bytes], master_key_id: str, jwt_secret: str, generated: list[str]
    ) -> None:
        self.master_keys = master_keys
        self.master_key_id = master_key_id
        self.jwt_secret = jwt_secret
        self.generated = generated


def resolve_secrets(settings: Settings) -> ResolvedSecrets:
    """Validate key settings; in dev, load or create them once under the data dir.

    Raises ConfigurationError with a single line when the process must not start.
    """
    generated: list[str] = []
    master_keys = dict(settings.master_keys)
    master_key_id = settings.master_key_id
    jwt_secret = settings.jwt_secret

    if not master_keys:
        if settings.is_prod:
            raise ConfigurationError(
                "AIOPS_MASTER_KEYS is not set; production needs a JSON object of key id -> base64 32-byte key"
            )
        key_file = settings.data_dir / MASTER_KEYS_FILE
        if key_file.exists():
            master_keys, stored_current = _read_key_file(key_file)
            master_key_id = master_key_id or stored_current
        else:
            master_key_id = master_key_id or "dev-1"
            master_keys = {master_key_id: base64.b64encode(secrets.token_bytes(MASTER_KEY_BYTES)).decode()}
            write_private_file(key_file, json.dumps({"current": master_key_id, "keys": master_keys}))
            generated.append(str(key_file))

    if not master_key_id:
        if len(master_keys) == 1:
            master_key_id = next(iter(master_keys))
        else:
            raise ConfigurationError("AIOPS_MASTER_KEY_ID must name the current key when several master keys are set")
    if master_key_id not in master_keys:
        raise ConfigurationError(f"AIOPS_MASTER_KEY_ID {master_key_id!r} is not a key of AIOPS_MASTER_KEYS")
    decoded = {key_id: decode_master_key(key_id, value) for key_id, value in master_keys.items()}

    if not jwt_secret:
        if settings.is_prod:
            raise ConfigurationError("AIOPS_JWT_SECRET is not set; production needs a random secret of 32+ characters")
        secret_file = settings.data_dir / JWT_SECRET_FILE
        if secret_file.exists():
            jwt_secret = secret_file.read_text(encoding="utf-8").strip()
            if not jwt_secret:
                raise ConfigurationError(
                    f"{secret_file} is empty; delete it to generate a new one or set AIOPS_JWT_SECRET"
                )
        else:
            jwt_secret = secrets.token_urlsafe(48)
            write_private_file(secret_file, jwt_secret)
            generated.append(str(secret_file))
    if settings.is_prod and len(jwt_secret) < 32:
        raise ConfigurationError("AIOPS_JWT_SECRET is too short; use at least 32 characters")

    return ResolvedSecrets(decoded, master_key_id, jwt_secret, generated)


@lru_cache
def get_settings() -> Settings:
    """The process's settings; a malformed variable raises ConfigurationError with one line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_invalid_settings(exc)) from None
    except SettingsError as exc:  # e.g. a value pydantic-settings could not decode before validation
        raise ConfigurationError(redact_text(" ".join(str(exc).split()))) from None
