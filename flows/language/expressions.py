"""``${{ ... }}`` expressions, rendered by Jinja's sandbox (no eval, no Python internals).

An expression that is a whole value keeps its native type (``${{ inputs.port }}`` stays an int);
one embedded in a longer string is rendered as text.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg
from vicflow.flows.language import budget
from vicflow.plugins import masking
from vicflow.plugins.errors import BudgetError, ExpressionError, VicflowError

EXPR_RE = re.compile(r"\$\{\{(.*?)\}\}", re.S)
ROOTS = ("inputs", "steps", "secrets", "event", "item", "run", "success", "failure", "always")
STATUS_FUNCTIONS = ("success", "failure", "always")  # if: success() (the default), failure(), always()
MAX_EXPRESSION = 10_000  # characters in one ${{ ... }}
MAX_SIZE = budget.MAX_VALUE  # characters of a string, items of a list an expression may build
BINOPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
NESTED_FIELD_RE = re.compile(r"\{[^{}]*\{")
AMPLIFYING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join"})


class _BoundedCodeGenerator(CodeGenerator):
    """``a ~ b`` goes through the budget too (Jinja joins it with str_join, which no sandbox hook sees)."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.concat_bounded((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, with every operator, filter, call, concatenation and output checked against the
    rendering's budget (flows/language/budget.py): ``'a'*10**10``, ``9**(9**9)``, ``'%0*d'|format(10**9, 0)`` or
    ``map('indent', 999999)`` meet a clear error instead of exhausting memory or pinning the CPU."""

    intercepted_binops = frozenset(BINOPS)
    code_generator_class = _BoundedCodeGenerator

    def call_binop(self, context, operator_: str, left, right):
        if operator_ == "*":
            budget.product(left, right)
        elif operator_ == "**":
            budget.power(left, right)
        elif operator_ == "%":
            budget.percent_format(left, right)
        return budget.result(BINOPS[operator_](left, right), f"{operator_!r}")

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - Jinja's own signature
        bound_to = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(bound_to, str) and name in AMPLIFYING_METHODS:
            arguments = (args[0], bound_to) if name == "join" and args else (bound_to, *args)
            budget.filter_estimate(name, arguments, kwargs)
        budget.read(*args, *kwargs.values())
        return budget.result(super().call(__context, __obj, *args, **kwargs), name or "a call")

    def wrap_str_format(self, value):
        """``'{:>900000000}'.format(1)``: the format string is checked before it is used."""
        template = getattr(value, "__self__", None)
        if isinstance(template, str):
            # '{0:{1}}'.format('a', 10**9): a width taken from an argument
            if NESTED_FIELD_RE.search(template.replace("{{", "").replace("}}", "")):
                raise BudgetError("a format width taken from an argument is refused", budget.HINT)
            budget.percent_format(template.replace("{", "%").replace(":", ""), ())
        return super().wrap_str_format(value)

    def concat_bounded(self, parts: tuple) -> str:
        texts = []
        for part in parts:
            budget.read(part)
            texts.append(str(part))
        return budget.result("".join(texts), "'~'")


def _bounded_filter(name: str, original):
    """A filter that charges what it reads and builds (and estimates first what an amplifier would build)."""
    skip = 1 if _PassArg.from_obj(original) is not None else 0  # a context Jinja passes first

    @functools.wraps(original)  # keeps Jinja's pass-context marker
    def check(*args, **kwargs):
        budget.filter_estimate(name, args[skip:], kwargs)
        budget.read(*args[skip:], *kwargs.values())
        return budget.result(original(*args, **kwargs), name)

    return check


def _finalize(value: Any) -> Any:
    """Each ``${{ }}`` of a text, before it becomes text."""
    return budget.result(value, "an expression's value")


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
    finalize=_finalize,
)
_env.globals.clear()  # no range/lipsum/cycler/...: expressions see only what the run provides
_env.filters = {name: _bounded_filter(name, fn) for name, fn in _env.filters.items()}
_env.concat = lambda parts: budget.result("".join(parts), "the text")  # type: ignore[method-assign]


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
    """Render every expression inside ``value`` (dicts and lists are walked), within one budget
    (flows/language/budget.py: a scope already open, such as a step's, is shared)."""
    with budget.scope():
        return _render(value, context)


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if "${{" not in value:
            return value
        sources = list(expressions_in(value))
        stripped = value.strip()
        whole = EXPR_RE.fullmatch(stripped) if len(sources) == 1 and stripped.startswith("${{") else None
        try:
            if whole and stripped.count("${{") == 1:
                result = _compiled_expression(whole.group(1).strip())(**context)
                if isinstance(result, Undefined):
                    result._fail_with_undefined_error()
                if isinstance(result, str) and type(result) is not str:  # tojson's Markup: plain text from here
                    result = str(result)
                return budget.result(result, "the expression's value")
            return _compiled_template(value).render(**context)
        except BudgetError as exc:
            raise BudgetError(masking.mask(f"{repr(shorten(stripped))}: {exc}"), exc.hint) from None
        except ExpressionError:
            raise
        except Exception as exc:
            raise _as_expression_error(value, exc) from None
    if isinstance(value, dict):
        return {_render(k, context): _render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, context) for v in value]
    return value


def _as_expression_error(value: str, exc: Exception) -> ExpressionError:
    """What went wrong in rendering ``value``, as one ExpressionError that quotes it (secrets masked: a value
    read from a secret may be what Jinja's message quotes)."""
    quoted = repr(shorten(value.strip()))
    hint = None
    if isinstance(exc, TemplateError | SecurityError):
        message = f"{quoted}: {shorten(str(exc), 300)}"
    elif isinstance(exc, RecursionError):
        message = f"{quoted}: nested too deeply"
    elif isinstance(exc, MemoryError | OverflowError):
        message = f"{quoted}: too large ({type(exc).__name__})"
    elif isinstance(exc, VicflowError):  # a lookup of ours (a secret) said what is wrong and how to fix it
        message, hint = f"{quoted}: {exc.args[0] if exc.args else type(exc).__name__}", exc.hint
    else:  # 0/0, 'a' - 1, int('x'): the expression's own error, not ours
        message = f"{quoted}: {type(exc).__name__}: {shorten(str(exc), 300)}"
    return ExpressionError(masking.mask(message), hint)


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
