"""YAML loading that remembers where every value came from, so errors can name a line and column."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from vicflow.plugins.errors import YAMLSyntaxError

try:  # the C loader is ~10x faster on large blueprints
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _BaseLoader

DocPath = tuple  # a path into the document: ("steps", 3, "with", "image")

# Bounds for hostile or careless input: a blueprint never needs more.
MAX_DEPTH = 64  # nesting of mappings and sequences
MAX_NODES = 200_000  # values after aliases are expanded (an alias bomb expands to billions)
MAX_INT_DIGITS = 4_300  # Python prints no longer integer (sys.get_int_max_str_digits); !!int 0b... builds one
MAX_INT_BITS = int(MAX_INT_DIGITS * 3.3219)


class _Loader(_BaseLoader):
    """The safe loader; a value its explicit tag cannot construct (``!!int 'abc'``) is a located error."""

    def construct_object(self, node, deep=False):
        try:
            value = super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError):
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{tag} cannot hold {str(node.value)[:60]!r}: remove the tag or fix the value",
                node.start_mark,
            ) from None
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:  # `!!int 0b1...`: binary has no limit
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of more than {MAX_INT_DIGITS:,} digits is refused", node.start_mark
            )
        return value


class _Yaml12Loader(_Loader):
    """Blueprints: YAML 1.2's booleans, only true and false. YAML 1.1 (PyYAML's, and docker-compose 1.x's, so
    compose files keep it) also reads yes/no/on/off as booleans: a step's `on: pool` would be the key True."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class Located:
    """A parsed document and the 1-based (line, column) of each path's value and key."""

    data: object
    values: dict[DocPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[DocPath, tuple[int, int]] = field(default_factory=dict)
    duplicate_keys: list[tuple[DocPath, tuple[int, int]]] = field(default_factory=list)

    def where(self, path: DocPath, key: bool = False) -> tuple[int, int]:
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


MAX_FILE_BYTES = 4 * 2**20  # blueprints, inputs and compose files are KB; the largest benchmark is ~300 KB


def read_text(path, what: str) -> str:
    """A regular file's UTF-8 text; anything else raises YAMLSyntaxError with a position and a hint.

    A FIFO would block and a device never end, so only regular files are read, and at most MAX_FILE_BYTES of
    them (a file under /proc says it is empty). A symlink loop, a name too long or a folder are said so.
    """
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise YAMLSyntaxError(f"cannot read the {what}: it is {kind}", 1, 1, f"give the path of a YAML {what}")
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        why = "it is missing" if isinstance(exc, FileNotFoundError) else exc.strerror or type(exc).__name__
        raise YAMLSyntaxError(f"cannot read the {what}: {why}", 1, 1, f"give the path of a YAML {what}") from None
    except ValueError:  # a NUL in the path
        raise YAMLSyntaxError(f"cannot read the {what}: its path holds a NUL", 1, 1) from None
    if len(data) > MAX_FILE_BYTES:
        raise YAMLSyntaxError(f"the {what} is larger than {MAX_FILE_BYTES:,} bytes: refused", 1, 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(data.decode("latin-1"), exc.start)  # latin-1: one character per byte
        raise YAMLSyntaxError(
            f"byte 0x{data[exc.start]:02x} is not UTF-8", line, col, f"save the {what} as UTF-8"
        ) from None


def load_file(path, what: str, yaml12_booleans: bool = False) -> Located:
    """The one loader of every YAML file vicflow reads (blueprints, ``--inputs``, the listen config): read_text's
    checks, then load's; raises YAMLSyntaxError with the position of the problem."""
    return load(read_text(path, what), yaml12_booleans)


def _pos(mark) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1)


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def load(text: str, yaml12_booleans: bool = False) -> Located:
    """Parse one YAML document; raises YAMLSyntaxError with the position of the problem. ``yaml12_booleans``:
    only true and false are booleans (blueprints).

    Recursive aliases, aliases that expand past MAX_NODES values and nesting deeper than MAX_DEPTH are refused
    before anything is built, so a 400-byte alias bomb costs milliseconds, not gigabytes.
    """
    loader = (_Yaml12Loader if yaml12_booleans else _Loader)(str(text))  # the C reader takes no str subclass
    try:
        node = loader.get_single_node()
        if node is None:
            return Located(None)
        _check_shape(node)
        located = Located(loader.construct_document(node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark else (1, 1)
        raise YAMLSyntaxError(f"{exc.problem or exc}".strip(), line, col) from None
    except yaml.reader.ReaderError as exc:  # NUL, ESC, U+FFFE...: characters YAML does not allow
        line, col = _position(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YAMLSyntaxError(f"character #x{code:04x} is not allowed in YAML: remove it", line, col) from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(str(exc).strip()[:300], 1, 1) from None
    except RecursionError:
        raise YAMLSyntaxError(f"the document is nested too deeply (the limit is {MAX_DEPTH} levels)", 1, 1) from None
    finally:
        loader.dispose()
    _walk(node, located)
    return located


def _check_shape(root) -> None:
    """Refuse recursive aliases, alias bombs and deep nesting, with the position of the culprit."""
    sizes: dict[int, int] = {}  # node id -> values it expands to
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        children = _children(node)
        if done:
            on_path.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[id(node)] > MAX_NODES:
                raise YAMLSyntaxError(
                    f"aliases here expand to more than {MAX_NODES:,} values (an alias bomb?)", *_pos(node.start_mark)
                )
            continue
        if id(node) in sizes:
            continue
        if id(node) in on_path:
            raise YAMLSyntaxError("a recursive alias: this value contains itself", *_pos(node.start_mark))
        if depth > MAX_DEPTH:
            raise YAMLSyntaxError(f"nested deeper than {MAX_DEPTH} levels", *_pos(node.start_mark))
        on_path.add(id(node))
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _walk(root, out: Located) -> None:
    """Positions of every path; a node reached again through an alias is not walked twice."""
    seen_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, DocPath]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        out.values[path] = _pos(node.start_mark)
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
                child = (*path, key)
                if key in seen:
                    out.duplicate_keys.append((child, _pos(key_node.start_mark)))
                seen.add(key)
                out.keys[child] = _pos(key_node.start_mark)
                stack.append((value_node, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, (*path, index)) for index, item in enumerate(node.value))
