"""``${{ ... }}`` expressions, rendered by Jinja's sandbox (no eval, no Python internals).

An expression that is a whole value keeps its native type (``${{ inputs.port }}`` stays an int);
one embedded in a longer string is rendered as text.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from vicflow.plugins.errors import ExpressionError, VicflowError

EXPR_RE = re.compile(r"\$\{\{(.*?)\}\}", re.S)
ROOTS = ("inputs", "steps", "secrets", "event", "item", "run", "success", "failure", "always")
STATUS_FUNCTIONS = ("success", "failure", "always")  # if: success() (the default), failure(), always()
MAX_EXPRESSION = 10_000  # characters in one ${{ ... }}
MAX_SIZE = 1_000_000  # characters of a string, items of a list, or digits of a number an expression may build
FORMAT_WIDTH_RE = re.compile(r"\d{7,}")  # a width or precision of a million or more in a format spec


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, plus bounds on what one expression may build: ``'a'*10**10``, ``9**(9**9)`` and
    ``'%900000000d'|format(1)`` meet a clear error instead of exhausting memory or pinning the CPU."""

    intercepted_binops = frozenset(["*", "**", "+"])

    def call_binop(self, context, operator_: str, left, right):
        sequences = (str, list, tuple)
        if operator_ == "**" and _number(left) and _number(right) and right > 0 and abs(left) > 1:
            digits = right * math.log10(abs(left))
            if digits > MAX_SIZE:
                raise SecurityError(f"{left} ** {right} has more than {MAX_SIZE:,} digits")
        if operator_ == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, sequences) and _number(times) and len(seq) * times > MAX_SIZE:
                    raise SecurityError(f"repeating {len(seq):,} items {times:,} times exceeds {MAX_SIZE:,}")
        both = isinstance(left, sequences) and isinstance(right, sequences)
        if operator_ == "+" and both and len(left) + len(right) > MAX_SIZE:
            raise SecurityError(f"the result would exceed {MAX_SIZE:,} items")
        return {"*": operator.mul, "**": operator.pow, "+": operator.add}[operator_](left, right)

    def wrap_str_format(self, value):
        """``'{:>900000000}'.format(1)``: the format string is checked before it is used."""
        _check_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_format(spec) -> None:
    width = FORMAT_WIDTH_RE.search(spec) if isinstance(spec, str) else None
    if width:
        raise SecurityError(f"a format width of {width.group(0)} characters is refused")


def _bounded(name: str, original):
    """Filters whose size argument builds the result (center, indent, wordwrap, format, replace)."""

    @functools.wraps(original)  # keeps Jinja's pass-context marker (replace takes the eval context first)
    def check(*args, **kwargs):
        texts = [a for a in args if isinstance(a, str)]
        if name == "format":
            _check_format(texts[0] if texts else "")
        elif name == "replace" and len(texts) >= 3:
            text, old, new = texts[:3]
            grows = text.count(old) * (len(new) - len(old)) if old else len(text) * len(new)
            if len(text) + grows > MAX_SIZE:
                raise SecurityError(f"replace would build more than {MAX_SIZE:,} characters")
        elif any(_number(a) and a > MAX_SIZE for a in (*args, *kwargs.values())):
            raise SecurityError(f"{name}: a width above {MAX_SIZE:,} is refused")
        return original(*args, **kwargs)

    return check


_env = LimitedSandbox(
    undefined=StrictUndefined,
    variable_start_string="${{",
    variable_end_string="}}",
    # Blocks and comments are not part of the language: their markers start with NUL, and a value holding an
    # expression may not hold a NUL (expressions_in), so `{% ... %}` or `{# ... #}` in a value (Go templates,
    # shell) stays plain text and `"\0${% for %}"` cannot open a block.
    block_start_string="\x00${%",
    block_end_string="%}\x00",
    comment_start_string="\x00${#",
    comment_end_string="#}\x00",
    autoescape=False,
    keep_trailing_newline=True,
)
_env.globals.clear()  # no range/lipsum/cycler/...: expressions see only what the run provides
for _name in ("center", "indent", "wordwrap", "format", "replace"):
    _env.filters[_name] = _bounded(_name, _env.filters[_name])


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


def expressions_in(text: str) -> Iterator[str]:
    """The source of each ``${{ ... }}`` in ``text``, in one linear scan (a regex would be quadratic on a long
    line of unclosed ``${{``); raises ExpressionError for an unclosed one or one longer than MAX_EXPRESSION."""
    if "\x00" in text:  # the block and comment markers start with NUL: YAML's "\0" escape could open them
        raise ExpressionError("a value that holds an expression cannot hold a NUL character (\\0)")
    start = text.find("${{")
    while start != -1:
        end = text.find("}}", start + 3)
        if end == -1:
            raise ExpressionError("an expression opened with '${{' is never closed with '}}'")
        if end - start > MAX_EXPRESSION:
            raise ExpressionError(f"an expression longer than {MAX_EXPRESSION:,} characters is refused")
        yield text[start + 3 : end]
        start = text.find("${{", end + 2)


def render(value: Any, context: dict[str, Any]) -> Any:
    """Render every expression inside ``value`` (dicts and lists are walked)."""
    if isinstance(value, str):
        if "${{" not in value:
            return value
        sources = list(expressions_in(value))
        stripped = value.strip()
        whole = EXPR_RE.fullmatch(stripped) if len(sources) == 1 and stripped.startswith("${{") else None
        try:
            if whole and value.strip().count("${{") == 1:
                result = _compiled_expression(whole.group(1).strip())(**context)
                if isinstance(result, Undefined):
                    result._fail_with_undefined_error()
                return result
            return _compiled_template(value).render(**context)
        except ExpressionError:
            raise
        except Exception as exc:
            raise _as_expression_error(value, exc) from None
    if isinstance(value, dict):
        return {render(k, context): render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value


def _as_expression_error(value: str, exc: Exception) -> ExpressionError:
    """What went wrong in rendering ``value``, as one ExpressionError that quotes it."""
    quoted = repr(shorten(value.strip()))
    if isinstance(exc, TemplateError | SecurityError):
        return ExpressionError(f"{quoted}: {exc}")
    if isinstance(exc, RecursionError):
        return ExpressionError(f"{quoted}: nested too deeply")
    if isinstance(exc, MemoryError | OverflowError):
        return ExpressionError(f"{quoted}: too large ({type(exc).__name__})")
    if isinstance(exc, VicflowError):  # a lookup of ours (a secret) said what is wrong and how to fix it
        return ExpressionError(f"{quoted}: {exc.args[0] if exc.args else type(exc).__name__}", exc.hint)
    # 0/0, 'a' - 1, int('x'): the expression's own error, not ours
    return ExpressionError(f"{quoted}: {type(exc).__name__}: {shorten(str(exc))}")


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
        for source in expressions_in(value):
            try:
                yield from _chains(_parse(source))
            except RecursionError:
                raise ExpressionError(f"'${{{{{shorten(source)}}}}}' is nested too deeply") from None


@lru_cache(maxsize=4096)
def _parse(source: str) -> nodes.Node:
    try:
        return _env.parse("${{ " + source + " }}")
    except TemplateError as exc:
        raise ExpressionError(f"cannot parse '${{{{{shorten(source)}}}}}': {exc.message}") from None
    except RecursionError:
        raise ExpressionError(f"'${{{{{shorten(source)}}}}}' is nested too deeply") from None


def shorten(text: str, limit: int = 120) -> str:
    """Error messages quote values, never whole huge ones."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


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
