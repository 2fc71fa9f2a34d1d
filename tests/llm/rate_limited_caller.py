"""One process of the cross-process rpm test (``test_endpoint_rate_limits.py``): a model runtime sharing its state
through Redis makes its calls to one endpoint once the test says go.

``python -m tests.llm.rate_limited_caller '<spec as JSON>'``; prints ``ready`` once set up, waits for a line on
stdin, makes ``calls`` calls at once, prints their outcomes as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

from aiops_executor.core.redis_link import RedisLink
from aiops_executor.llm.runtime.config import CredentialConfig, DecryptedSecrets, ModelBinding
from aiops_executor.llm.runtime.failover import FailoverChatModel
from aiops_executor.llm.runtime.shared_state import SharedRuntimeState
from tests.llm.test_runtime_clients import endpoint, model
from tests.llm.test_runtime_failover import credential


async def main(spec: dict[str, Any]) -> None:
    link = RedisLink.from_url(spec["redis_url"], namespace=spec["namespace"])
    state = SharedRuntimeState(link=link, rate_limit_window_seconds=spec["window_seconds"])
    limited = endpoint(spec["base_url"], id=uuid.UUID(spec["endpoint_id"]), rpm=spec["rpm"])
    binding = ModelBinding(model("openai", "gpt-4o-mini"), (limited,), (credential("k"),))

    async def open_key(_: CredentialConfig) -> DecryptedSecrets:
        return DecryptedSecrets(spec["api_key"])

    chat = FailoverChatModel(binding=binding, state=state, open_secrets=open_key)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    replies = await asyncio.gather(*(chat.ainvoke(f"call {i}") for i in range(spec["calls"])))
    print(json.dumps([reply.response_metadata.get("aiops_endpoint") for reply in replies]), flush=True)
    await link.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
