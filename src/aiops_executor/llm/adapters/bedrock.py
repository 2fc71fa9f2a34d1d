"""AWS Bedrock through the Converse API (``ChatBedrockConverse``); the catalogue from the control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import httpx
from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.core import egress
from aiops_executor.llm.adapters.base import (
    ClientConfigurationError,
    EndpointProblem,
    ProviderAdapter,
    RemoteModel,
    extra_params,
    require_endpoint,
    sampling_params,
)
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig
from aiops_executor.llm.runtime.errors import Failure, FailureKind, excerpt, status_of

_THROTTLE = {"ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"}
_AUTH = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "AccessDeniedException",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
}
_SERVER = {"InternalServerException", "ServiceUnavailableException", "ModelNotReadyException", "ModelTimeoutException"}
_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError"}
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError"}


def _keys(secrets: DecryptedSecrets | None) -> DecryptedSecrets:
    if secrets is None or not secrets.secret_key:
        raise ClientConfigurationError("AWS Bedrock needs an access key id and a secret access key")
    return secrets


def _region(endpoint: EndpointConfig) -> str:
    if not endpoint.region:
        raise ClientConfigurationError("an AWS Bedrock endpoint needs a region")
    return endpoint.region


def _botocore_config(endpoint: EndpointConfig, config_cls: Any) -> Any:
    # One attempt: botocore's own ``max_attempts`` counts retries, so it would still retry once.
    return config_cls(
        connect_timeout=endpoint.timeout_connect,
        read_timeout=endpoint.timeout_read,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )


class _StreamedBody:
    """The part of urllib3's response botocore reads (``stream``, ``read``, ``close``), over an httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks: Iterator[bytes] | None = None

    def stream(self, amt: int | None = None, decode_content: bool | None = None) -> Iterator[bytes]:
        try:
            yield from self._response.iter_raw()
        finally:
            self._response.close()

    def read(self, amt: int | None = None, decode_content: bool | None = None) -> bytes:
        if amt is None:
            try:
                return self._response.read()
            finally:
                self._response.close()
        if self._chunks is None:
            self._chunks = self._response.iter_raw(amt)
        return next(self._chunks, b"")

    def close(self) -> None:
        self._response.close()


class PinnedSender:
    """Sends every request of a botocore client itself, through the egress transport: checked against the policy
    after name resolution and connected to the checked address (botocore's urllib3 pool connects by name, so a
    name could resolve to an allowed address for the check and to another one for the connection). A SigV4-signed
    request can be replayed to AWS for minutes, so it must not reach any other address. Redirects are not followed,
    as botocore does not follow them."""

    def __init__(self, connect_timeout: float | None, read_timeout: float | None) -> None:
        self._client = httpx.Client(
            transport=egress.sync_transport(httpx),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            trust_env=False,
            follow_redirects=False,
        )

    def __call__(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        headers = httpx.Headers({name: value for name, value in request.headers.items()})
        # botocore reads bodies as sent (it does not decompress), so none may be compressed on the way.
        headers.setdefault("Accept-Encoding", "identity")
        outgoing = self._client.build_request(request.method, request.url, headers=headers, content=body or b"")
        response = self._client.send(outgoing, stream=True)
        return AWSResponse(request.url, response.status_code, response.headers.multi_items(), _StreamedBody(response))

    def close(self) -> None:
        self._client.close()


def guard_egress(client: Any) -> Any:
    """Route every request a botocore client sends through a ``PinnedSender`` (nothing is sent when the policy
    denies it, and the error names the rule)."""
    config = client.meta.config
    client.meta.events.register(
        "before-send", PinnedSender(getattr(config, "connect_timeout", None), getattr(config, "read_timeout", None))
    )
    return client


def bedrock_control_client(endpoint: EndpointConfig, secrets: DecryptedSecrets, session: Any, config_cls: Any) -> Any:
    """The Bedrock control-plane client (model catalogue); the runtime endpoint override does not apply to it."""
    return guard_egress(
        session.client(
            "bedrock",
            region_name=_region(endpoint),
            aws_access_key_id=secrets.api_key,
            aws_secret_access_key=secrets.secret_key,
            aws_session_token=secrets.access_token,
            config=_botocore_config(endpoint, config_cls),
        )
    )


class BedrockAdapter(ProviderAdapter):
    type: ClassVar[str] = "aws_bedrock"

    def endpoint_problems(self, values: Mapping[str, Any]) -> list[EndpointProblem]:
        return [] if values.get("region") else [EndpointProblem("region", "an aws_bedrock provider needs a region")]

    def build_client(
        self,
        model: ModelConfig,
        endpoint: EndpointConfig | None,
        secrets: DecryptedSecrets | None,
        params: dict[str, Any],
    ) -> BaseChatModel:
        from botocore.config import Config
        from langchain_aws import ChatBedrockConverse

        endpoint = require_endpoint(endpoint, self.type)
        region = _region(endpoint)
        keys = _keys(secrets)
        bedrock_params: dict[str, Any] = {
            "model": model.model_id,
            "region_name": region,
            "aws_access_key_id": keys.api_key,
            "aws_secret_access_key": keys.secret_key,
            "config": _botocore_config(endpoint, Config),
            **sampling_params(params),
        }
        if keys.access_token:
            bedrock_params["aws_session_token"] = keys.access_token
        if endpoint.base_url:
            bedrock_params["endpoint_url"] = endpoint.base_url
        extra = extra_params(params)
        if extra:
            bedrock_params["additional_model_request_fields"] = extra
        chat = ChatBedrockConverse(**bedrock_params)
        if chat.client is not None:
            guard_egress(chat.client)
        return chat

    async def list_models(self, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
        endpoint = require_endpoint(endpoint, self.type)
        return await asyncio.to_thread(_list_foundation_models, endpoint, _keys(secrets))

    def classify(self, exc: BaseException) -> Failure:
        if egress.find_denial(exc) is not None or not type(exc).__module__.startswith("botocore"):
            return super().classify(exc)
        name = type(exc).__name__
        message = excerpt(exc)
        error = getattr(exc, "response", {}) or {}
        code = error.get("Error", {}).get("Code", "") if isinstance(error, dict) else ""
        status = status_of(exc)
        if code in _THROTTLE or status == 429:
            return Failure(FailureKind.rate_limited, message, status)
        if code in _AUTH or status in (401, 403):
            return Failure(FailureKind.credential, message, status)
        if code in _SERVER or (status or 0) >= 500:
            return Failure(FailureKind.server, message, status)
        if code == "ResourceNotFoundException" or status == 404:
            return Failure(FailureKind.not_found, message, status)
        if name in _UNREACHABLE:
            return Failure(FailureKind.unreachable, message)
        if name in _NO_CREDENTIALS:
            return Failure(FailureKind.credential, message)
        return Failure(FailureKind.request, message, status)


def _list_foundation_models(endpoint: EndpointConfig, secrets: DecryptedSecrets) -> list[RemoteModel]:
    import boto3
    from botocore.config import Config

    client = bedrock_control_client(endpoint, secrets, boto3.session.Session(), Config)
    response = client.list_foundation_models()
    return [
        RemoteModel(str(summary["modelId"]), summary.get("modelName")) for summary in response.get("modelSummaries", [])
    ]
