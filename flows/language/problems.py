"""A problem in a file (file, line, column, step, message, hint), and the collector that gathers them all."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from vicflow.flows.language import expressions
from vicflow.plugins import yamlpos
from vicflow.plugins.hints import did_you_mean


@dataclass
class Problem:
    file: str
    line: int
    column: int
    message: str
    hint: str = ""
    step: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}: "
        step = f"step {self.step!r}: " if self.step else ""
        hint = f"\n    hint: {self.hint}" if self.hint else ""
        return f"{where}{step}{self.message}{hint}"

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("file", "line", "column", "step", "message", "hint")}


MAX_PROBLEMS = 50  # a file with thousands of mistakes gets the first fifty and a count
MAX_MESSAGE = 600  # characters of one problem's message (values are quoted, never whole huge ones)


def capped(problems: list[Problem]) -> list[Problem]:
    """The first MAX_PROBLEMS problems and a count of the rest (20,000 wrong --set flags print 51 lines)."""
    if len(problems) <= MAX_PROBLEMS + 1:  # at most the limit, or already capped (the last one counts the rest)
        return problems
    first = problems[0]
    rest = Problem(first.file, 1, 1, f"... and {len(problems) - MAX_PROBLEMS:,} more problems")
    return [*problems[:MAX_PROBLEMS], rest]


def short(value: Any, limit: int = 120) -> str:
    """A value quoted in a message, cut when huge."""
    return expressions.shorten(repr(value), limit)


class Collector:
    def __init__(self, file: str, located: yamlpos.Located | None):
        self.file, self.located = file, located
        self.problems: list[Problem] = []
        self.count = 0

    def add(self, path: tuple, message: str, hint: str = "", step: str | None = None, key: bool = False):
        self.count += 1
        if len(self.problems) >= MAX_PROBLEMS:
            return
        line, col = self.located.where(path, key=key) if self.located else (1, 1)
        message = expressions.shorten(message, MAX_MESSAGE)
        step = expressions.shorten(step, 120) if step else step
        self.problems.append(Problem(self.file, line, col, message, expressions.shorten(hint, 400), step))

    def finish(self) -> None:
        if self.count > len(self.problems):
            self.problems.append(Problem(self.file, 1, 1, f"... and {self.count - len(self.problems)} more problems"))

    def pydantic(
        self,
        base: tuple,
        exc: ValidationError,
        model: type[BaseModel],
        step: str | None = None,
        skip: AbstractSet[str] = frozenset(),
    ) -> None:
        """Each of pydantic's errors as a problem at its place; an unknown key's hint lists ``model``'s keys."""
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc and loc[0] in skip and err["type"] == "missing":
                continue
            if not loc and skip:  # a model-level rule cannot judge values that are still expressions
                continue
            field = expressions.shorten(".".join(str(p) for p in loc), 200) or "(top level)"
            if err["type"] == "extra_forbidden":
                self.add(
                    (*base, *loc), f"unknown key {short(loc[-1])}", extra_hint(str(loc[-1]), model), step, key=True
                )
            elif err["type"] == "missing":
                self.add((*base, *loc[:-1]), f"missing required key {field!r}", "", step, key=True)
            else:
                given = err.get("input")
                self.add((*base, *loc), f"{field}: {err['msg']} (got {short(given)})", "", step)


def extra_hint(key: str, model: type[BaseModel]) -> str:
    names = [f.alias or n for n, f in model.model_fields.items()]
    return f"{did_you_mean(key, names)}allowed keys: {', '.join(sorted(names))}"
