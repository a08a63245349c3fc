"""The one budget every rendering of ``${{ }}`` goes through: CPU time, the work (memory) of what it builds and
reads, and the size of what it gives back.

An expression runs inside Jinja's sandbox (flows/language/expressions.py), which calls back here before and after every
operator, filter and call. Before: what an amplifier would build is estimated from its arguments (``'a'*n``,
``9**n``, ``indent(width)``, ``'%0*d' % (width, 0)``, ``join(sep)``) and refused when too large, so nothing huge
is ever allocated. After: the result's size is charged to the rendering's work, which bounds chains of small
steps (``map('indent', ...)`` over a list, thirty sorts of a big list). Integers are bounded to the digits Python
itself will print (4,300). The CPU clock is read at every callback. A rendering that runs out raises
``BudgetError`` (an ``ExpressionError``: the caller locates it).

A budget covers one ``scope()``: one ``render()`` (a step's ``if:``, its ``for_each``, the ``with:`` of each of its
items, a ``target:``, an input's value). A ``for_each`` may give at most MAX_ITEMS items.
"""

from __future__ import annotations

import contextvars
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vicflow.plugins.errors import BudgetError

MAX_VALUE = 1_000_000  # characters, items and digits of any one value an expression builds or gives back
MAX_DIGITS = 4_300  # of an integer: Python's own limit for printing one (sys.get_int_max_str_digits)
MAX_WORK = 5_000_000  # characters and items built and read by one scope
MAX_SECONDS = 1.0  # CPU seconds of one scope (a real blueprint's expressions take microseconds)
MAX_ITEMS = 10_000  # items of one for_each
LOG2_10 = math.log2(10)
_WIDTH_RE = re.compile(r"\d+")


class Budget:
    """What one scope has left."""

    def __init__(self, seconds: float = MAX_SECONDS, work: int = MAX_WORK):
        self.deadline: float | None = None  # set at the first check: a rendering of plain values costs nothing
        self.seconds, self.work_left = seconds, work

    def check_time(self) -> None:
        now = time.thread_time()
        if self.deadline is None:
            self.deadline = now + self.seconds
        elif now > self.deadline:
            raise BudgetError(f"the expression used more than {self.seconds:g} s of CPU", HINT)

    def charge(self, units: float, what: str = "the expression") -> None:
        """``units`` characters or items built or read; refused when one value or the whole scope is too big."""
        if units > MAX_VALUE:
            raise BudgetError(f"{what} would build more than {MAX_VALUE:,} characters or items", HINT)
        self.work_left -= int(units)
        if self.work_left < 0:
            raise BudgetError(f"the expressions built or read more than {MAX_WORK:,} characters or items", HINT)
        self.check_time()


HINT = "simplify the expression: vicflow's expressions pick and format values, they are not for computing"
_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("vicflow_budget", default=None)


@contextmanager
def scope() -> Iterator[Budget]:
    """The budget in force: a new one, unless a scope is already open (a step's renderings share one)."""
    budget = _current.get()
    if budget is not None:
        yield budget
        return
    budget = Budget()
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def current() -> Budget:
    """The budget of the scope open now (a fresh one outside any: a filter called from elsewhere)."""
    return _current.get() or Budget()


def size(value: Any, limit: int = MAX_VALUE) -> int:
    """Characters, items and digits in ``value``, counted until ``limit`` is passed (a list held twice counts
    twice: that is what printing it would cost). Raises BudgetError for an integer of more than MAX_DIGITS."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, dict):
            total += len(item) + 1
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item) + 1
            if total > limit:
                break
            for element in item:  # the common case, scalars, without the stack
                kind = type(element)
                if kind is str:
                    total += len(element)
                elif kind is int:
                    total += digits(element)
                elif kind in (float, bool) or element is None:
                    total += 1
                else:
                    stack.append(element)
        else:
            total += _scalar_size(item)
    return total


def _scalar_size(item: Any) -> int:
    if isinstance(item, str | bytes | bytearray):
        return len(item)
    if isinstance(item, int) and not isinstance(item, bool):
        return digits(item)
    return 1


def digits(number: int) -> int:
    """Decimal digits of ``number`` (from its bit length: never converted); more than MAX_DIGITS is refused."""
    count = int(number.bit_length() / LOG2_10) + 1
    if count > MAX_DIGITS:
        raise BudgetError(f"an integer of about {count:,} digits; at most {MAX_DIGITS:,} are allowed", HINT)
    return count


def result(value: Any, what: str = "the expression") -> Any:
    """Charge what an operation built; refuse it when it is too big."""
    current().charge(size(value), what)
    return value


def read(*values: Any) -> None:
    """Charge what an operation is about to read (a sort, a sum, a join of its arguments)."""
    current().charge(sum(size(v) for v in values), "reading its arguments")


# ------------------------------------------------------------------------------- estimates of amplifiers


def product(left: Any, right: Any) -> None:
    """``left * right`` before it runs: a sequence repeated, or two integers multiplied."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and _integer(times):
            current().charge(size(seq) * max(times, 0), "repeating a sequence")
    if _integer(left) and _integer(right):
        _digits_at_most(digits(left) + digits(right), "a product")


def power(left: Any, right: Any) -> None:
    if _number(left) and _integer(right) and right > 0 and abs(left) > 1:
        _digits_at_most(right * math.log10(abs(left)), "a power")


def percent_format(template: Any, args: Any) -> None:
    """``'%0*d' % (width, 0)``, ``'%999999999d' % 1``: the widths in the template, and ``*`` widths from args."""
    if not isinstance(template, str):
        return
    widths = [int(w) for w in _WIDTH_RE.findall(template) if len(w) < 12] or [0]
    if any(len(w) >= 12 for w in _WIDTH_RE.findall(template)):
        widths.append(MAX_VALUE + 1)
    if "*" in template:
        values = args if isinstance(args, tuple | list) else (args,)
        widths += [abs(v) for v in values if _integer(v)]
    current().charge(len(template) + max(widths) * max(template.count("%"), 1), "a format")


def filter_estimate(name: str, args: tuple, kwargs: dict) -> None:
    """What the amplifying filters (and the string methods of the same name) would build."""
    budget = current()
    text = args[0] if args else None
    numbers = [a for a in (*args[1:], *kwargs.values()) if _integer(a)]
    if name == "wordwrap" and isinstance(text, str):  # textwrap cuts a long word in slices: quadratic in it
        width = max([1, *numbers[:1]])
        longest = max(map(len, text.split()), default=0)
        budget.charge(2 * len(text) + (longest * longest) // width if longest > width else 2 * len(text), name)
    elif name in ("center", "ljust", "rjust", "zfill", "truncate"):
        budget.charge(max([size(text), *numbers]), name)
    elif name == "pprint":  # pure Python, many calls per item
        budget.charge(5 * size(text), name)
    elif name == "indent" and isinstance(text, str):
        width = args[1] if len(args) > 1 else kwargs.get("width", 4)
        pad = 4
        if isinstance(width, str):
            pad = len(width)
        elif _integer(width):
            pad = width
        budget.charge(len(text) + (text.count("\n") + 1) * max(pad, 0), "indent")
    elif name == "expandtabs" and isinstance(text, str):
        budget.charge(len(text) * max([8, *numbers]), "expandtabs")
    elif name in ("batch", "slice"):
        budget.charge(size(text) + max([0, *numbers]), name)
    elif name == "replace" and len(args) >= 3 and all(isinstance(a, str) for a in args[:3]):
        source, old, new = args[:3]
        grows = source.count(old) * (len(new) - len(old)) if old else (len(source) + 1) * len(new)
        budget.charge(len(source) + max(grows, 0), "replace")
    elif name == "join" and args:
        items = args[0]
        separator = args[1] if len(args) > 1 and isinstance(args[1], str) else kwargs.get("d", "")
        count = len(items) if isinstance(items, list | tuple | str | dict) else 0
        budget.charge(size(items) + len(str(separator)) * max(count - 1, 0), "join")
    elif name == "format" and args:
        percent_format(args[0], args[1:])


def _digits_at_most(count: float, what: str) -> None:
    if count > MAX_DIGITS:
        raise BudgetError(f"{what} of about {int(count):,} digits; at most {MAX_DIGITS:,} are allowed", HINT)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
