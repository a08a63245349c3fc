"""Dependency-graph helpers: cycles and a stable topological order."""

from __future__ import annotations


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One cycle of ``graph`` (node -> its dependencies) as a list of nodes, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for start in graph:
        if color[start] != WHITE:
            continue
        stack = [(start, iter(graph[start]))]
        path = [start]
        color[start] = GREY
        while stack:
            node, children = stack[-1]
            for child in children:
                if color.get(child, BLACK) == GREY:
                    return path[path.index(child) :]
                if color.get(child) == WHITE:
                    color[child] = GREY
                    stack.append((child, iter(graph[child])))
                    path.append(child)
                    break
            else:
                color[node] = BLACK
                stack.pop()
                path.pop()
    return None


def topological_order(graph: dict[str, list[str]]) -> list[str]:
    """Nodes ordered so that each comes after its dependencies (ties keep the given order)."""
    done: set[str] = set()
    order: list[str] = []
    remaining = list(graph)
    while remaining:
        ready = [n for n in remaining if all(d in done for d in graph[n])]
        if not ready:
            raise ValueError(f"cycle among {remaining}")
        for node in ready:
            done.add(node)
            order.append(node)
        remaining = [n for n in remaining if n not in done]
    return order
