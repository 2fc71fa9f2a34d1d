"""The embedded default's offline provider, registered on a fresh install."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from aiops_executor.core.context import AppContext
from aiops_executor.core.db import serialize_transaction
from aiops_executor.llm.adapters.simulator import SimulatorAdapter
from aiops_executor.llm.models import Provider
from aiops_executor.llm.schemas import (
    Capability,
    ModelCreate,
    ProviderCreate,
)
from aiops_executor.llm.service.models import create_model
from aiops_executor.llm.service.providers import create_provider

SIMULATOR_PROVIDER = "local-sim"
SIMULATOR_MODEL = "sim-1"
SEED_ACTOR = "system:seed"
SEED_LOCK = "seed-simulator"


async def seed_simulator(session: AsyncSession, context: AppContext) -> bool:
    """On a fresh embedded install, register the offline ``local-sim`` provider with its ``sim-1`` model,
    so the service runs a team with no network and no keys. Never re-seeds once any provider existed
    (a deleted ``local-sim`` stays deleted).

    Processes starting together on PostgreSQL take turns: the first registers it, the others then find a
    provider and leave it alone."""
    await serialize_transaction(session, SEED_LOCK)
    if await session.scalar(select(func.count()).select_from(Provider)):
        await session.rollback()  # ends the transaction, and with it the lock
        return False
    provider = await create_provider(
        session,
        context,
        ProviderCreate(
            name=SIMULATOR_PROVIDER,
            type=SimulatorAdapter.type,
            description="Built-in offline simulator: deterministic and rule-based, not an AI.",
        ),
        actor=SEED_ACTOR,
    )
    supported = {"supported": True, "score": 3}
    await create_model(
        session,
        context,
        provider.id,
        ModelCreate(
            model_id=SIMULATOR_MODEL,
            name="Simulator (not an AI)",
            input_price=Decimal(0),
            output_price=Decimal(0),
            capabilities={
                capability.value: supported
                for capability in (
                    Capability.chat,
                    Capability.text_generation,
                    Capability.function_calling,
                    Capability.structured_output,
                    Capability.streaming,
                )
            },
            recommended_scenarios=["demo", "testing", "load testing"],
        ),
        actor=SEED_ACTOR,
    )
    return True
