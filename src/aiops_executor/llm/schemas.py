"""Request and response bodies of the LLM configuration API (providers, endpoints, credentials, models)."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StrictBool,
    StrictFloat,
    StringConstraints,
    WithJsonSchema,
)

from aiops_executor.core.json_types import JSON_INT, JsonDatetime, JsonInt
from aiops_executor.core.partial import PartialUpdate
from aiops_executor.core.text import FREE_TEXT, NAME_TEXT, NameText, SafeJson
from aiops_executor.llm.adapters import PROVIDER_TYPES
from aiops_executor.llm.runtime.breaker import CircuitState

INT32_MAX = 2_147_483_647


# A provider type is whatever the adapter registry (``llm.adapters``) knows: this enum is built from it.
ProviderType = StrEnum("ProviderType", {name: name for name in PROVIDER_TYPES})  # type: ignore[misc]


class HealthStatus(StrEnum):
    unknown = "unknown"
    healthy = "healthy"
    degraded = "degraded"
    unhealthy = "unhealthy"


class ValidationStatus(StrEnum):
    unknown = "unknown"
    valid = "valid"
    invalid = "invalid"
    expired = "expired"
    undecryptable = "undecryptable"


class ModelType(StrEnum):
    chat = "chat"
    completion = "completion"
    embedding = "embedding"
    vision = "vision"


class ModelStatus(StrEnum):
    available = "available"
    maintenance = "maintenance"
    deprecated = "deprecated"


class Capability(StrEnum):
    text_generation = "text_generation"
    chat = "chat"
    code_generation = "code_generation"
    function_calling = "function_calling"
    vision = "vision"
    embedding = "embedding"
    structured_output = "structured_output"
    streaming = "streaming"


# --------------------------------------------------------------------------------------------- field types


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _check_http_url(value: str) -> str:
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValueError("base_url must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"base_url is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("base_url must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url must not embed credentials; store keys as provider credentials")
    return value


Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NAME_TEXT]
OptionalText = Annotated[
    Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000), FREE_TEXT] | None,
    BeforeValidator(_blank_to_none),
]
# What ``_check_http_url`` accepts, for the OpenAPI document: http(s), a host, an optional port, no credentials,
# no whitespace or control characters (blank means none). IPv6 literals are accepted but not described.
_URL_CHARS = r"[^\s\x00-\x1f\x85"
BASE_URL_PATTERN = (
    rf"^\s*([Hh][Tt][Tt][Pp][Ss]?://{_URL_CHARS}/?#@:\[\]]+"
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?"
    rf"([/?#]{_URL_CHARS}]*)?)?\s*$"
)
BaseUrl = Annotated[
    Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=2048),
        AfterValidator(_check_http_url),
        Field(json_schema_extra={"pattern": BASE_URL_PATTERN}),
    ]
    | None,
    BeforeValidator(_blank_to_none),
]
ShortText = Annotated[
    Annotated[str, StringConstraints(strip_whitespace=True, max_length=64), NAME_TEXT] | None,
    BeforeValidator(_blank_to_none),
]
PRICE_MAX = Decimal("99999999.999999")


def _float_price(value: Any) -> Any:
    """A JSON number is a binary float: read it as the 6-decimal price it is closest to, when it is one
    (``123 * 1e-6`` arrives as ``0.00012299999999999998``); anything finer stays as sent and is refused."""
    if isinstance(value, float) and math.isfinite(value):
        rounded = round(value, 6)
        if rounded != 0 and abs(rounded - value) <= 4 * math.ulp(value):
            return Decimal(str(rounded))
    return value


# Prices are exact decimals in the database and plain JSON numbers on the wire (strings are read too).
Price = Annotated[
    Decimal,
    Field(ge=0, max_digits=14, decimal_places=6),
    BeforeValidator(_float_price),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": float(PRICE_MAX), "multipleOf": 0.000001},
                {"type": "string", "pattern": r"^[0-9]{1,8}(\.[0-9]{1,6})?$"},
            ]
        },
        mode="validation",
    ),
]
PositiveInt32 = Annotated[int, Field(ge=1, le=INT32_MAX), JSON_INT]
Quota = Annotated[int, Field(ge=0, le=INT32_MAX), JSON_INT]


# --------------------------------------------------------------------------------------------- providers


class ProviderCreate(BaseModel):
    name: Name
    type: ProviderType
    description: OptionalText = None
    is_active: StrictBool = True


class ProviderUpdate(PartialUpdate):
    """Partial update: omitted fields keep their value."""

    not_null = ("name", "type", "is_active")

    name: Name | None = None
    type: ProviderType | None = None
    description: OptionalText = None
    is_active: StrictBool | None = None


class ProviderStatusUpdate(BaseModel):
    is_active: StrictBool


class ProviderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    type: ProviderType
    description: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------------------------- endpoints


class EndpointCreate(BaseModel):
    name: Name
    base_url: BaseUrl = None
    api_version: ShortText = None
    region: ShortText = None
    timeout_connect: StrictFloat = Field(default=10.0, gt=0, le=300, description="seconds")
    timeout_read: StrictFloat = Field(default=60.0, gt=0, le=3600, description="seconds")
    retry_count: JsonInt = Field(default=2, ge=0, le=10)
    retry_interval: StrictFloat = Field(default=1.0, ge=0, le=300, description="seconds")
    priority: JsonInt = Field(default=100, ge=0, le=1_000_000, description="failover order, lower first")
    is_default: StrictBool = False
    is_active: StrictBool = True
    rpm: PositiveInt32 | None = Field(
        default=None, description="requests per minute the service sends at most (calls wait for room); null: no limit"
    )
    tpm: PositiveInt32 | None = Field(
        default=None, description="tokens per minute (each call's expected size) at most; null: no limit"
    )


class EndpointUpdate(PartialUpdate):
    """Partial update: omitted fields keep their value; base_url, api_version, region, rpm and tpm may be cleared
    with null."""

    not_null = (
        "name",
        "timeout_connect",
        "timeout_read",
        "retry_count",
        "retry_interval",
        "priority",
        "is_default",
        "is_active",
    )

    name: Name | None = None
    base_url: BaseUrl = None
    api_version: ShortText = None
    region: ShortText = None
    timeout_connect: StrictFloat | None = Field(default=None, gt=0, le=300)
    timeout_read: StrictFloat | None = Field(default=None, gt=0, le=3600)
    retry_count: Annotated[int, Field(ge=0, le=10), JSON_INT] | None = None
    retry_interval: StrictFloat | None = Field(default=None, ge=0, le=300)
    priority: Annotated[int, Field(ge=0, le=1_000_000), JSON_INT] | None = None
    is_default: StrictBool | None = None
    is_active: StrictBool | None = None
    rpm: PositiveInt32 | None = None
    tpm: PositiveInt32 | None = None


class EndpointRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_id: uuid.UUID
    name: str
    base_url: str | None
    api_version: str | None
    region: str | None
    timeout_connect: float
    timeout_read: float
    retry_count: int
    retry_interval: float
    priority: int
    is_default: bool
    is_active: bool
    health_status: HealthStatus
    last_health_check: datetime | None
    # Seconds the model runtime still keeps calls away from this endpoint after 429, 503 or connection failures
    # (its health then reads ``degraded``); null when it is not cooling down.
    cooldown_seconds: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    # The endpoint's circuit breaker (``open``: calls skip it after repeated failures; ``half_open``: one probe call
    # goes through), as the model runtime sees it now.
    circuit_state: CircuitState = CircuitState.closed
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------------------------- credentials

# api_key / secret_key length limits come from settings and are enforced by the service; pydantic errors
# never echo the rejected input (core/errors.py drops it), and neither do the service's messages.
# A key is sent in HTTP headers and its masked form is stored: it has no control characters, like a name.
Secret = NameText


class CredentialCreate(BaseModel):
    alias: Name
    api_key: Secret = Field(min_length=1, repr=False)
    secret_key: Secret | None = Field(default=None, min_length=1, repr=False)
    access_token: Secret | None = Field(default=None, min_length=1, repr=False)
    expires_at: JsonDatetime | None = None
    quota_limit: Quota | None = None


class CredentialUpdate(PartialUpdate):
    """Edit metadata and/or rotate secrets. A given api_key/secret_key/access_token is re-encrypted;
    secret_key/access_token set to null are removed."""

    not_null = ("alias", "api_key", "is_active")

    alias: Name | None = None
    api_key: Secret | None = Field(default=None, min_length=1, repr=False)
    secret_key: Secret | None = Field(default=None, min_length=1, repr=False)
    access_token: Secret | None = Field(default=None, min_length=1, repr=False)
    expires_at: JsonDatetime | None = None
    quota_limit: Quota | None = None
    is_active: StrictBool | None = None


class CredentialRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_id: uuid.UUID
    alias: str
    api_key_masked: str
    has_secret_key: bool
    has_access_token: bool
    expires_at: datetime | None
    quota_limit: int | None
    quota_used: int
    is_active: bool
    validation_status: ValidationStatus
    last_validated_at: datetime | None
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------------------------- models


class CapabilitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    supported: StrictBool
    score: JsonInt = Field(ge=1, le=5)


def _check_default_params(params: dict[str, Any]) -> dict[str, Any]:
    def number(key: str) -> float | None:
        value = params.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"default_params.{key} must be a number")
        return float(value)

    temperature = number("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        raise ValueError("default_params.temperature must be between 0 and 2")
    top_p = number("top_p")
    if top_p is not None and not 0 <= top_p <= 1:
        raise ValueError("default_params.top_p must be between 0 and 1")
    if params.get("max_tokens") is not None:
        max_tokens = params["max_tokens"]
        if isinstance(max_tokens, float) and max_tokens.is_integer():
            max_tokens = params["max_tokens"] = int(max_tokens)  # 5.0 is an integer in JSON
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= INT32_MAX:
            raise ValueError("default_params.max_tokens must be an integer >= 1")
    latency = number("latency_ms")
    if latency is not None and not 0 <= latency <= 600_000:
        raise ValueError("default_params.latency_ms must be between 0 and 600000")
    return params


def _number_or_null(**bounds: float) -> dict[str, Any]:
    return {"anyOf": [{"type": "number", **bounds}, {"type": "null"}]}


# The parameters ``_check_default_params`` knows, for the OpenAPI document; others pass through unchecked.
_DEFAULT_PARAMS_SCHEMA = {
    "properties": {
        "temperature": _number_or_null(minimum=0, maximum=2),
        "top_p": _number_or_null(minimum=0, maximum=1),
        "max_tokens": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": INT32_MAX}, {"type": "null"}]},
        "latency_ms": _number_or_null(minimum=0, maximum=600_000),
    }
}
DefaultParams = Annotated[
    SafeJson,
    Field(max_length=50, json_schema_extra=_DEFAULT_PARAMS_SCHEMA),
    AfterValidator(_check_default_params),
]
Capabilities = dict[Capability, CapabilitySpec]
Scenarios = Annotated[
    list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), NAME_TEXT]],
    Field(max_length=50),
]


class ModelCreate(BaseModel):
    model_id: Name = Field(description="the provider's identifier of the model")
    name: Name
    version: ShortText = None
    type: ModelType = ModelType.chat
    context_window: PositiveInt32 | None = None
    max_output_tokens: PositiveInt32 | None = None
    input_price: Price | None = Field(default=None, description="per 1K input tokens")
    output_price: Price | None = Field(default=None, description="per 1K output tokens")
    status: ModelStatus = ModelStatus.available
    default_params: DefaultParams = Field(default_factory=dict)
    capabilities: Capabilities = Field(default_factory=dict)
    recommended_scenarios: Scenarios = Field(default_factory=list)


class ModelUpdate(PartialUpdate):
    """Partial update: omitted fields keep their value."""

    not_null = ("model_id", "name", "type", "status", "default_params", "capabilities", "recommended_scenarios")

    model_id: Name | None = None
    name: Name | None = None
    version: ShortText = None
    type: ModelType | None = None
    context_window: PositiveInt32 | None = None
    max_output_tokens: PositiveInt32 | None = None
    input_price: Price | None = None
    output_price: Price | None = None
    status: ModelStatus | None = None
    default_params: DefaultParams | None = None
    capabilities: Capabilities | None = None
    recommended_scenarios: Scenarios | None = None


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_id: uuid.UUID
    model_id: str
    name: str
    version: str | None
    type: ModelType
    context_window: int | None
    max_output_tokens: int | None
    input_price: Price | None
    output_price: Price | None
    status: ModelStatus
    default_params: dict[str, Any]
    capabilities: dict[str, CapabilitySpec]
    recommended_scenarios: list[str]
    created_at: datetime
    updated_at: datetime


# --------------------------------------------------------------------------------------------- export / import


class EndpointConfig(EndpointCreate):
    """An endpoint in a configuration document: no id, provider id or health state."""


class ModelConfig(ModelCreate):
    """A model in a configuration document: no id or provider id."""


class ProviderConfig(BaseModel):
    name: Name
    type: ProviderType
    description: OptionalText = None
    is_active: StrictBool = True
    endpoints: list[EndpointConfig] = Field(default_factory=list, max_length=100)
    models: list[ModelConfig] = Field(default_factory=list, max_length=1000)


class ConfigDocument(BaseModel):
    version: Literal[1] = 1
    exported_at: JsonDatetime | None = None
    providers: list[ProviderConfig] = Field(default_factory=list, max_length=1000)


class ImportCounts(BaseModel):
    providers: int = 0
    endpoints: int = 0
    models: int = 0


class ImportResult(BaseModel):
    created: ImportCounts = Field(default_factory=ImportCounts)
    updated: ImportCounts = Field(default_factory=ImportCounts)
    unchanged: ImportCounts = Field(default_factory=ImportCounts)
