"""Request and response bodies of ``/tool-servers``."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Annotated, Any, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from aiops_executor.core.json_types import JsonDatetime
from aiops_executor.core.partial import PartialUpdate
from aiops_executor.core.text import NAME_TEXT
from aiops_executor.llm.schemas import BASE_URL_PATTERN

# No dot: a tool is named ``<server_name>.<tool_name>``, split at the first dot.
SERVER_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
# RFC 9110 token characters.
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$"
MAX_ARGS = 100
MAX_SECRETS = 50
MAX_SECRET_CHARS = 8192


class Transport(StrEnum):
    stdio = "stdio"
    streamable_http = "streamable_http"


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        # Credentials in a URL end up in logs and listings; headers are stored encrypted.
        raise ValueError("must not carry credentials; put them in headers, which are stored encrypted")
    return value


ServerName = Annotated[str, StringConstraints(pattern=SERVER_NAME_PATTERN)]
Command = Annotated[str, StringConstraints(min_length=1, max_length=4096), NAME_TEXT]
Argument = Annotated[str, StringConstraints(max_length=4096), NAME_TEXT]
# Blank means none (as for an endpoint's base_url); the pattern documents what ``_http_url`` accepts.
ServerUrl = Annotated[
    Annotated[
        str,
        StringConstraints(strip_whitespace=True, max_length=2048),
        NAME_TEXT,
        AfterValidator(_http_url),
        Field(json_schema_extra={"pattern": BASE_URL_PATTERN}),
    ]
    | None,
    BeforeValidator(_blank_to_none),
]
SecretValue = Annotated[str, StringConstraints(max_length=MAX_SECRET_CHARS), NAME_TEXT]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN)]
EnvMap = Annotated[dict[EnvName, SecretValue], Field(max_length=MAX_SECRETS)]
HeaderMap = Annotated[dict[HeaderName, SecretValue], Field(max_length=MAX_SECRETS)]
ArgList = Annotated[list[Argument], Field(max_length=MAX_ARGS)]


def transport_problems(
    transport: Transport,
    *,
    command: str | None,
    args: list[str],
    env: dict[str, str],
    url: str | None,
    headers: dict[str, str],
) -> list[str]:
    """What does not fit the transport: stdio runs ``command`` with ``args`` and ``env``; streamable HTTP
    connects to ``url`` with ``headers``."""
    problems = []
    if transport is Transport.stdio:
        if not command:
            problems.append("a stdio server needs a command")
        if url:
            problems.append("a stdio server takes no url")
        if headers:
            problems.append("a stdio server takes no headers")
    else:
        if not url:
            problems.append("a streamable_http server needs a url")
        if command:
            problems.append("a streamable_http server takes no command")
        if args:
            problems.append("a streamable_http server takes no args")
        if env:
            problems.append("a streamable_http server takes no env")
    return problems


class ToolServerCreate(BaseModel):
    """A stdio server takes ``command`` (required), ``args`` and ``env``; a streamable_http server takes ``url``
    (required) and ``headers``. Fields of the other transport are refused (422)."""

    model_config = ConfigDict(extra="forbid")

    name: ServerName = Field(description="unique; its tools are named <name>.<tool_name>")
    transport: Transport
    command: Command | None = Field(default=None, description="stdio: the executable to start")
    args: ArgList = Field(default_factory=list, description="stdio: the command's arguments (not secret)")
    env: EnvMap = Field(
        default_factory=dict, description="stdio: environment variables of the process (secret: stored encrypted)"
    )
    url: ServerUrl = Field(default=None, description="streamable_http: the server's MCP endpoint")
    headers: HeaderMap = Field(
        default_factory=dict, description="streamable_http: headers sent with every request (secret: stored encrypted)"
    )
    approval_required: StrictBool = Field(default=False, description="every tool of this server needs approval")
    is_active: StrictBool = True

    @model_validator(mode="after")
    def _fits_transport(self) -> Self:
        problems = transport_problems(
            self.transport, command=self.command, args=self.args, env=self.env, url=self.url, headers=self.headers
        )
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ToolServerUpdate(PartialUpdate):
    """Partial update: omitted fields keep their value. ``env`` and ``headers`` replace the stored object
    whole when given (send ``{}`` to remove them); omitted, the stored secrets are kept."""

    model_config = ConfigDict(extra="forbid")

    not_null = ("name", "transport", "args", "env", "headers", "approval_required", "is_active")

    name: ServerName | None = None
    transport: Transport | None = None
    command: Command | None = None
    args: ArgList | None = None
    env: EnvMap | None = None
    url: ServerUrl = None
    headers: HeaderMap | None = None
    approval_required: StrictBool | None = None
    is_active: StrictBool | None = None


class ToolServerTool(BaseModel):
    name: str
    description: str
    input_schema: dict[str, Any] = Field(description="JSON schema of the tool's arguments")


class ToolServerRead(BaseModel):
    id: uuid.UUID
    name: str
    transport: Transport
    command: str | None
    args: list[str]
    env: dict[str, str] = Field(description="variable names with masked values")
    url: str | None
    headers: dict[str, str] = Field(description="header names with masked values")
    approval_required: bool
    is_active: bool
    tools: list[ToolServerTool] = Field(description="the tools the server listed at its last refresh")
    tools_refreshed_at: JsonDatetime | None
    last_error: str | None = Field(description="why the last attempt to list its tools failed, if it did")
    created_at: JsonDatetime
    updated_at: JsonDatetime


class ToolServerRefresh(BaseModel):
    tools: list[ToolServerTool]
