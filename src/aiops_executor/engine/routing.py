"""What a supervisor is asked when it routes: the choice of what runs next, and whether a task is answered."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage
from pydantic import BaseModel, Field, create_model

from aiops_executor.engine.structured import ask_structured

FINISH = "FINISH"


class TaskAnswered(BaseModel):
    """Whether the agents' reports so far answer the task for this resource."""

    answered: bool = Field(description="true when the task is answered and no further agent is needed")
    reason: str = Field(description="one sentence explaining the decision")


async def ask(
    model: BaseChatModel, schema: type[BaseModel], messages: list[BaseMessage]
) -> tuple[BaseModel | None, str]:
    """The model's structured answer, or None and why the answer could not be read as one.

    A failing call raises. Real models often answer in plain words where a choice was asked for; that is
    not a choice, and the caller must not read it as one (e.g. as FINISH)."""
    answer = await ask_structured(model, schema, messages)
    return (answer.value if isinstance(answer.value, schema) else None), answer.problem


def routing_model(name: str, choices: list[str], *, many: bool) -> type[BaseModel]:
    """A schema whose ``next`` field is one of ``choices`` (or a list of them) plus ``FINISH``."""
    options = Literal[tuple([*choices, FINISH])]  # type: ignore[valid-type]
    field_type: Any = list[options] if many else options  # type: ignore[valid-type]
    description = (
        "the ids to run next (any number at once), or FINISH when done"
        if many
        else "the id to run next, or FINISH when done"
    )
    return create_model(
        name,
        __doc__=f"Choose what runs next. Options: {', '.join(choices)}; or {FINISH}.",
        next=(field_type, Field(description=description)),
        reason=(str, Field(description="one sentence explaining the choice")),
    )
