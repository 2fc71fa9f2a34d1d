"""What went wrong, in the user's terms: bounded error texts for failed model calls, agents and node teams."""

from __future__ import annotations

from langchain_core.messages import BaseMessage

from aiops_executor.core.text import shorten

MAX_ERROR_CHARS = 1000


def message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(
        block if isinstance(block, str) else str(block.get("text", "")) for block in content if block is not None
    )


def error_message(exc: BaseException) -> str:
    """What went wrong, in the user's terms: the failure's own message, never its Python class name; "" if none.

    An ``AppError`` (the model runtime's ``ProviderCallError`` among them) carries a user-facing ``message``
    naming the model and endpoints. It is read by name: ``core.errors`` brings the web layer, which the
    engine does without."""
    message = getattr(exc, "message", None)
    if not isinstance(message, str) or not message.strip():
        message = str(exc)
    return message.strip()


def error_text(exc: BaseException, where: str, failed_to: str = "") -> str:
    """``<where>: [<failed_to>: ]<message>``, bounded; "unexpected error in <where>" when there is no message."""
    message = error_message(exc)
    if failed_to:
        text = f"{where}: {failed_to}: {message or 'unexpected error'}"
    else:
        text = f"{where}: {message}" if message else f"unexpected error in {where}"
    return shorten(text, MAX_ERROR_CHARS)


def call_failure(exc: BaseException, what: str) -> str:
    """``<what>: <message>``, bounded, for a failure described by a whole sentence."""
    return shorten(f"{what}: {error_message(exc) or 'unexpected error'}", MAX_ERROR_CHARS)


def call_failed(exc: BaseException) -> str:
    return call_failure(exc, "its model call failed")
