"""``${{ ... }}`` expressions, rendered by Jinja's sandbox (no eval, no Python internals).

An expression that is a whole value keeps its native type (``${{ inputs.port }}`` stays an int);
one embedded in a longer string is rendered as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

EXPR_RE = re.compile(r"\$\{\{(.*?)\}\}", re.S)
ROOTS = ("inputs", "steps", "secrets", "event", "item")

_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    variable_start_string="${{",
    variable_end_string="}}",
    # Blocks and comments are not part of the language: make their markers unreachable so that
    # `{% ... %}` or `{# ... #}` in a value (Go templates, shell) stays plain text.
    block_start_string="\x00${%",
    block_end_string="%}\x00",
    comment_start_string="\x00${#",
    comment_end_string="#}\x00",
    autoescape=False,
    keep_trailing_newline=True,
)
_env.globals.clear()  # no range/lipsum/cycler/...: expressions see only what the run provides


class ExpressionError(Exception):
    """An expression could not be parsed or evaluated."""


def has_expression(value: Any) -> bool:
    if isinstance(value, str):
        return "${{" in value
    if isinstance(value, dict):
        return any(has_expression(k) or has_expression(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_expression(v) for v in value)
    return False


@lru_cache(maxsize=4096)
def _compiled_expression(source: str):
    return _env.compile_expression(source, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _compiled_template(source: str):
    return _env.from_string(source)


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every expression inside ``value`` (dicts and lists are walked)."""
    if isinstance(value, str):
        if "${{" not in value:
            return value
        whole = EXPR_RE.fullmatch(value.strip())
        try:
            if whole and value.strip().count("${{") == 1:
                result = _compiled_expression(whole.group(1).strip())(**context)
                if isinstance(result, Undefined):
                    result._fail_with_undefined_error()
                return result
            return _compiled_template(value).render(**context)
        except TemplateError as exc:
            raise ExpressionError(f"{value.strip()!r}: {exc}") from None
    if isinstance(value, dict):
        return {render(k, context): render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def references(value: Any) -> Iterator[tuple[str, ...]]:
    """Each name chain an expression reads, e.g. ("steps", "vch", "outputs", "docker_host").

    Raises ExpressionError for a syntax error.  A chain is cut at the first non-constant part.
    """
    if isinstance(value, dict):
        for k, v in value.items():
            yield from references(k)
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)
    elif isinstance(value, str) and "${{" in value:
        for match in EXPR_RE.finditer(value):
            yield from _chains(_parse(match.group(1)))
        if value.count("${{") != len(EXPR_RE.findall(value)):
            raise ExpressionError("an expression opened with '${{' is never closed with '}}'")


@lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Node:
    try:
        return _env.parse("${{ " + source + " }}")
    except TemplateError as exc:
        raise ExpressionError(f"cannot parse '${{{{{source}}}}}': {exc.message}") from None


def _chain(node: nodes.Node) -> tuple[str, ...] | None:
    parts: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            parts.append(str(node.arg.value))
            node = node.node
        elif isinstance(node, nodes.Getitem):
            parts.clear()  # a computed key: only the part above it is known
            node = node.node
        elif isinstance(node, nodes.Name):
            return (node.name, *reversed(parts))
        else:
            return None


def _chains(tree: nodes.Node) -> Iterator[tuple[str, ...]]:
    for node in tree.iter_child_nodes():
        if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
            chain = _chain(node)
            if chain is not None:
                yield chain
                # still visit computed subscripts such as steps[inputs.name]
                for sub in node.find_all(nodes.Getitem):
                    if not isinstance(sub.arg, nodes.Const):
                        yield from _chains(nodes.Output([sub.arg]))
                continue
        yield from _chains(node)
