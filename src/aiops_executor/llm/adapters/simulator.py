"""The built-in offline simulator: no endpoint, no key, no network (see ``llm.simulator``)."""

from __future__ import annotations

from typing import Any, ClassVar

from langchain_core.language_models.chat_models import BaseChatModel

from aiops_executor.llm.adapters.base import ProviderAdapter, RemoteModel
from aiops_executor.llm.runtime.config import DecryptedSecrets, EndpointConfig, ModelConfig
from aiops_executor.llm.simulator import STRUCTURED_OUTPUT_STRATEGIES, SimulatorChatModel

SIMULATOR_MODELS = ("sim-1",)


class SimulatorAdapter(ProviderAdapter):
    type: ClassVar[str] = "simulator"
    takes_endpoints: ClassVar[bool] = False
    takes_credentials: ClassVar[bool] = False
    needs_credential: ClassVar[bool] = False
    structured_output: ClassVar[tuple[str, ...]] = STRUCTURED_OUTPUT_STRATEGIES

    def build_client(
        self,
        model: ModelConfig,
        endpoint: EndpointConfig | None,
        secrets: DecryptedSecrets | None,
        params: dict[str, Any],
    ) -> BaseChatModel:
        return SimulatorChatModel(model_id=model.model_id, latency_ms=float(params.get("latency_ms", 0) or 0))

    async def list_models(self, endpoint: EndpointConfig | None, secrets: DecryptedSecrets | None) -> list[RemoteModel]:
        return [RemoteModel(model_id, "Simulator (not an AI)") for model_id in SIMULATOR_MODELS]
