"""YAML loading that remembers where every value came from, so errors can name a line and column."""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

try:  # the C loader is ~10x faster on large blueprints
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader

Path = tuple  # a path into the document: ("steps", 3, "with", "image")


@dataclass
class Located:
    """A parsed document and the 1-based (line, column) of each path's value and key."""

    data: object
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    duplicate_keys: list[tuple[Path, tuple[int, int]]] = field(default_factory=list)

    def where(self, path: Path, key: bool = False) -> tuple[int, int]:
        """The closest known position of ``path`` (walking up to its parents)."""
        table = self.keys if key else self.values
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))


class YAMLSyntaxError(Exception):
    def __init__(self, message: str, line: int, column: int):
        super().__init__(message)
        self.line, self.column = line, column


def _pos(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def load(text: str) -> Located:
    """Parse one YAML document; raises YAMLSyntaxError with the position of the problem."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(None)
        located = Located(loader.construct_document(node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark else (1, 1)
        raise YAMLSyntaxError(f"{exc.problem or exc}".strip(), line, col) from None
    finally:
        loader.dispose()
    _walk(node, (), located)
    return located


def _walk(node, path: Path, out: Located) -> None:
    out.values[path] = _pos(node.start_mark)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*path, key)
            if key in seen:
                out.duplicate_keys.append((child, _pos(key_node.start_mark)))
            seen.add(key)
            out.keys[child] = _pos(key_node.start_mark)
            _walk(value_node, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), out)
