"""Item 1 of the package's list: LangGraph's configurable key for durability."""

from langgraph._internal._constants import CONFIG_KEY_DURABILITY

__all__ = ["CONFIG_KEY_DURABILITY"]
