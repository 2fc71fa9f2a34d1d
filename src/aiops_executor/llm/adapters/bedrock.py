"""AWS Bedrock through the Converse API (``ChatBedrockConverse``); the catalogue from the control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

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


def guard_egress(client: Any) -> Any:
    """Check every request a botocore client sends against the egress policy (nothing is sent when it is
    denied). botocore connects by name, so unlike the HTTP clients this is not pinned to the checked address."""

    def before_send(request: Any, **_: Any) -> None:
        host, port = egress.url_target(str(request.url))
        egress.authorize_sync(host, port)

    client.meta.events.register("before-send", before_send)
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
