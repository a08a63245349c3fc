"""What the scheduler and the planner both need to turn a step into work: its ``if:`` and ``for_each``
rendered, the digest that tells a resumed step's inputs apart, and the values a dry run knows only after
apply."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vicflow.flows.language import budget, expressions
from vicflow.flows.language.problems import Problem
from vicflow.flows.language.spec import if_expression
from vicflow.plugins import masking
from vicflow.plugins.errors import BlueprintError, BudgetError, StepError


class Unknown:
    """A value known only after apply (used by dry runs); attribute access stays unknown."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Unknown:
        return Unknown(f"{self._name}.{attr}")

    def __getitem__(self, key: Any) -> Unknown:
        return Unknown(f"{self._name}.{key}")

    def __str__(self) -> str:
        return f"(known after apply: {self._name})"

    __repr__ = __str__


def contains_unknown(value: Any) -> bool:
    if isinstance(value, Unknown) or (isinstance(value, str) and "(known after apply:" in value):
        return True
    if isinstance(value, dict):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknown(v) for v in value)
    return False


def params_digest(params: Any) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def truthy(condition: str | bool, context: dict[str, Any]) -> bool:
    if isinstance(condition, bool):
        return condition
    value = expressions.render(if_expression(condition), context)
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none")
    return bool(value)


def for_each_items(step: Any, context: dict[str, Any], planning: bool = False) -> list[Any]:
    """The items a step runs for: ``[None]`` without ``for_each``.  A value that is not a list is an error
    in a run and in a plan alike; a plan lets through a value only known after apply."""
    if step.for_each is None:
        return [None]
    items = expressions.render(step.for_each, context)
    if isinstance(items, list) and len(items) > budget.MAX_ITEMS:
        raise BudgetError(
            f"for_each gave {len(items):,} items; at most {budget.MAX_ITEMS:,} are allowed",
            "split the list over several steps, or over child blueprints (uses: blueprint:)",
        )
    if isinstance(items, list):
        return items
    if planning and contains_unknown(items):
        return [items]
    raise StepError(
        f"for_each must produce a list, got {type(items).__name__}: {expressions.shorten(str(items), 200)!r}",
        "for_each takes a list or an expression that yields one",
    )


@contextmanager
def located(blueprint: Any, step: Any, field: str) -> Iterator[None]:
    """A budget error in a step's ``field`` (``if``, ``for_each``, ``with``) as a problem at its place in the file."""
    try:
        yield
    except BudgetError as exc:
        line, column = blueprint.place((*step._where, field))
        problem = Problem(blueprint.path or "<blueprint>", line, column, f"{field}: {exc}", exc.hint or "", step.id)
        raise BlueprintError([problem]) from None


def item_label(item: Any) -> str:
    if isinstance(item, dict):
        for key in ("name", "id", "host"):
            if key in item:
                return masking.mask(str(item[key]))[:60]
    return masking.mask(str(item))[:60]
