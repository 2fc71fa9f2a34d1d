"""The order a topology imposes on its nodes, from its ordering edges (see ``EdgeSpec.ordering``).

Used by validation (cycles, depth) and by the engine (dependency waves, upstream results, skipping).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from aiops_executor.engine.topology import Topology


@dataclass
class OrderingGraph:
    """Directed graph ``before -> after`` over node ids, in topology order."""

    nodes: list[str]
    after: dict[str, list[str]] = field(default_factory=dict)
    before: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def from_topology(cls, topology: Topology) -> OrderingGraph:
        return cls.build([n.node_id for n in topology.nodes], (e.ordering for e in topology.edges))

    @classmethod
    def build(cls, nodes: Iterable[str], pairs: Iterable[tuple[str, str] | None]) -> OrderingGraph:
        """Pairs naming unknown nodes, self-loops and repeats are ignored (validation reports them)."""
        ordered = list(dict.fromkeys(nodes))
        graph = cls(ordered, {n: [] for n in ordered}, {n: [] for n in ordered})
        seen: set[tuple[str, str]] = set()  # a set: thousands of edges from one node stay linear
        for pair in pairs:
            if pair is None:
                continue
            first, then = pair
            if first == then or first not in graph.after or then not in graph.after or pair in seen:
                continue
            seen.add(pair)
            graph.after[first].append(then)
            graph.before[then].append(first)
        return graph

    def upstream(self, node_id: str) -> list[str]:
        """Nodes that must finish before this one (direct predecessors)."""
        return list(self.before.get(node_id, []))

    def find_cycle(self) -> list[str] | None:
        """One cycle as a closed path ``[a, b, ..., a]``, or None. Iterative, so deep graphs are fine."""
        white, grey, black = 0, 1, 2
        colour = dict.fromkeys(self.nodes, white)
        for root in self.nodes:
            if colour[root] != white:
                continue
            path: list[str] = [root]
            iterators = [iter(self.after[root])]
            colour[root] = grey
            while iterators:
                step = next(iterators[-1], None)
                if step is None:
                    colour[path.pop()] = black
                    iterators.pop()
                elif colour[step] == grey:
                    return [*path[path.index(step) :], step]
                elif colour[step] == white:
                    colour[step] = grey
                    path.append(step)
                    iterators.append(iter(self.after[step]))
        return None

    def levels(self) -> list[list[str]]:
        """Dependency waves: each node one wave after its latest predecessor. Requires an acyclic graph."""
        remaining = {n: len(self.before[n]) for n in self.nodes}
        wave = [n for n in self.nodes if remaining[n] == 0]
        waves: list[list[str]] = []
        while wave:
            waves.append(wave)
            released: set[str] = set()
            for node in wave:
                for then in self.after[node]:
                    remaining[then] -= 1
                    if remaining[then] == 0:
                        released.add(then)
            wave = [n for n in self.nodes if n in released]
        if sum(len(w) for w in waves) != len(self.nodes):
            raise ValueError("the ordering edges contain a cycle")
        return waves

    def depth(self) -> int:
        """Nodes on the longest ordering path (1 for a topology without ordering edges)."""
        return len(self.levels())

    def topological_order(self) -> list[str]:
        return [node for wave in self.levels() for node in wave]
