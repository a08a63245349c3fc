"""Dependency order for steps and compose services, on the standard library's ``graphlib``.

A graph maps each node to the nodes it needs (its predecessors).  The blueprint validator, the planner,
the engine's scheduler and compose's start order all use these; nothing else sorts a graph by hand.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, c]``, read "a needs b needs c needs a", or None."""
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        return list(reversed(exc.args[1]))[:-1]
    return None


def levels(graph: dict[str, list[str]]) -> list[list[str]]:
    """Nodes in groups: each group needs only earlier groups; within a group, the order ``graph`` gives.
    Raises ``graphlib.CycleError`` on a cycle."""
    position = {node: index for index, node in enumerate(graph)}
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    groups = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=lambda node: position.get(node, len(position)))
        groups.append(ready)
        sorter.done(*ready)
    return groups


def topological_order(graph: dict[str, list[str]]) -> list[str]:
    """Nodes ordered so that each comes after what it needs (ties keep the given order)."""
    return [node for group in levels(graph) for node in group]


def in_given_order(graph: dict[str, list[str]]) -> tuple[TopologicalSorter, dict[str, int]]:
    """A prepared sorter for a scheduler that starts nodes as what they need finishes, and each node's
    position in ``graph`` (to start ready nodes in the order the author wrote them)."""
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    return sorter, {node: index for index, node in enumerate(graph)}
