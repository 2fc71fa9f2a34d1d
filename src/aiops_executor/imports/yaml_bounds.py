"""YAML read with bounds, before anything is built from it: a hostile stream costs little memory and time.

A YAML alias repeats a node without repeating its text: 28 KB of anchors and aliases can stand for 10^9 values,
which whatever walks the documents afterwards would expand. Each document is therefore composed first (its node
graph, in which an alias is the same node again), measured -- its nodes counted as many times as aliases repeat
them, its nesting depth, the number of documents -- and only then constructed. Recursive aliases are refused;
only the safe loader's tags are known (``!!python/object`` and the like are refused by it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class YamlLimits:
    documents: int = 1_000
    expanded_nodes: int = 200_000  # per stream, aliases counted as often as they are used
    depth: int = 64


class YamlTooLarge(ValueError):
    """The stream is past one of the limits; the message names it."""

    def __init__(self, message: str, document: int) -> None:
        super().__init__(message)
        self.document = document


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_size(root: yaml.Node, limits: YamlLimits, document: int, budget: int) -> int:
    """The number of nodes ``root`` stands for once its aliases are expanded (stops past ``budget``); raises
    ``YamlTooLarge`` past the budget or the depth, and for a recursive alias."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > budget:
                raise YamlTooLarge(
                    f"document {document} expands (through its aliases) to more than {limits.expanded_nodes:,} "
                    "values in all",
                    document,
                )
            continue
        if key in sizes:
            continue
        if depth > limits.depth:
            raise YamlTooLarge(f"document {document} is nested more than {limits.depth} levels deep", document)
        open_nodes.add(key)
        stack.append((node, depth, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise YamlTooLarge(f"document {document} holds an alias to itself (a recursive structure)", document)
            if id(child) not in sizes:
                stack.append((child, depth + 1, False))
    return sizes[id(root)]


def bounded_documents(text: str, limits: YamlLimits | None = None) -> Iterator[tuple[int, Any]]:
    """(1-based document number, document) of a multi-document stream, each measured before it is built.
    Raises ``YamlTooLarge`` past a limit and ``yaml.YAMLError`` for what is not valid (safe) YAML."""
    limits = limits or YamlLimits()
    loader = SAFE_LOADER(text)
    number, spent = 0, 0
    try:
        while loader.check_node():
            number += 1
            if number > limits.documents:
                raise YamlTooLarge(f"more than {limits.documents:,} documents", number)
            try:
                node = loader.get_node()
            except RecursionError:
                raise YamlTooLarge(f"document {number} is nested too deeply to read", number) from None
            if node is None:
                yield number, None
                continue
            spent += expanded_size(node, limits, number, limits.expanded_nodes - spent)
            yield number, loader.construct_document(node)
    finally:
        loader.dispose()
