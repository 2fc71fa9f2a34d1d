"""The gate every model call passes, seen from the chat model: admitted before any provider is called, with the
most the call can cost; settled once, with the successful attempt's record; a refusal stops the call before
any provider sees it; a ledger that cannot be written does not take back an answer already paid for."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from aiops_executor.core.errors import AppError
from aiops_executor.llm.runtime.calls import CallAttribution, CallRecord
from aiops_executor.llm.runtime.config import CredentialConfig, DecryptedSecrets, ModelBinding, ModelConfig
from aiops_executor.llm.runtime.estimate import CallSize, call_size
from aiops_executor.llm.runtime.failover import FailoverChatModel
from aiops_executor.llm.runtime.state import RuntimeState
from tests.llm.test_runtime_clients import model


@dataclass
class RecordingGate:
    refuse: bool = False
    fail_settle: bool = False
    admitted: list[CallSize] = field(default_factory=list)
    settled: list[tuple[object, CallRecord | None]] = field(default_factory=list)

    async def admit(self, attribution: CallAttribution, model: ModelConfig, size: CallSize) -> object:
        if self.refuse:
            raise AppError("the budget is exhausted", error_code="BUDGET_EXCEEDED", status_code=429)
        self.admitted.append(size)
        return ("ticket", len(self.admitted))

    async def settle(self, ticket: object, record: CallRecord | None) -> None:
        self.settled.append((ticket, record))
        if self.fail_settle:
            raise RuntimeError("the ledger's database is down")


async def unused_key(config: CredentialConfig) -> DecryptedSecrets:
    return DecryptedSecrets("sk-unused")


def chat(gate: RecordingGate, **params: Any) -> FailoverChatModel:
    binding = ModelBinding(model("simulator", "sim-1", max_output_tokens=300), (), ())
    return FailoverChatModel(
        binding=binding,
        params=params,
        state=RuntimeState(),
        open_secrets=unused_key,
        gate=gate,
        default_output_tokens=99,
    )


async def test_a_call_is_admitted_with_its_bound_and_settled_with_its_record() -> None:
    gate = RecordingGate()
    reply = await chat(gate).ainvoke([HumanMessage("Is the database up?")])
    assert reply.content
    (size,) = gate.admitted
    assert size.output_bound == 300  # the model's max_output_tokens
    assert size.prompt_bound >= len("Is the database up?")
    ((ticket, record),) = gate.settled
    assert ticket == ("ticket", 1)
    assert record is not None and record.outcome == "success"
    # The bound holds what the provider then reported.
    assert record.input_tokens is not None and record.input_tokens <= size.prompt_bound
    assert record.cost is not None and record.cost <= size.cost_bound(record.model)


async def test_max_tokens_bounds_the_output_and_streams_are_settled_too() -> None:
    gate = RecordingGate()
    chunks = [chunk async for chunk in chat(gate, max_tokens=40).astream([HumanMessage("hello")])]
    assert chunks
    assert gate.admitted[0].output_bound == 40
    assert len(gate.settled) == 1 and gate.settled[0][1] is not None


async def test_a_refused_call_reaches_no_provider() -> None:
    gate = RecordingGate(refuse=True)
    with pytest.raises(AppError) as refused:
        await chat(gate).ainvoke([HumanMessage("hello")])
    assert refused.value.error_code == "BUDGET_EXCEEDED"
    assert gate.settled == []


async def test_a_ledger_that_cannot_be_written_keeps_the_answer() -> None:
    gate = RecordingGate(fail_settle=True)
    reply = await chat(gate).ainvoke([HumanMessage("hello")])
    assert reply.content and len(gate.settled) == 1


def test_the_bound_counts_every_byte_of_the_prompt_and_falls_back_to_the_default_output() -> None:
    unpriced = model("simulator", "sim-1", input_price=None, output_price=None)
    size = call_size(unpriced, [HumanMessage("é" * 10)], {}, {}, default_output_tokens=99)
    assert size.prompt_bound >= 20  # two bytes each in UTF-8
    assert size.output_bound == 99
    assert size.cost_bound(unpriced) is None
    priced = model("simulator", "sim-1")
    assert call_size(priced, [HumanMessage("x")], {}, {}, default_output_tokens=1000).cost_bound(priced) >= Decimal(
        "1.5"
    )
