"""Blueprint models, loading and validation.

Validation runs before anything touches a server and reports every problem at once, each with
its file, line, column, step id and a hint.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from vicflow.flows import expressions
from vicflow.plugins import yamlpos
from vicflow.plugins.dag import find_cycle
from vicflow.plugins.errors import BlueprintError
from vicflow.plugins.hints import did_you_mean, listing

ID_RE = r"^[A-Za-z_][A-Za-z0-9_]*$"
INPUT_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "list": list,
    "object": dict,
    "secret": str,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class InputSpec(Strict):
    type: Literal["string", "integer", "number", "boolean", "list", "object", "secret"] = "string"
    description: str = ""
    default: Any = None
    required: bool | None = Field(None, description="default: required when there is no default")
    enum: list[Any] | None = None

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class Backoff(Strict):
    """Exponential delays: base * factor**n, capped at max, each spread by +/- jitter (a fraction)."""

    base: float = Field(1.0, ge=0)
    factor: float = Field(2.0, ge=1)
    max: float = Field(300.0, ge=0)
    jitter: float = Field(0.0, ge=0, le=1)


class StepSpec(Strict):
    id: str = Field(pattern=ID_RE, description="letters, digits and _; referenced as steps.<id>")
    uses: str = Field(description="a registered step type (vicflow plugins lists them)")
    name: str = ""
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    needs: list[str] = Field(default_factory=list)
    if_: str | bool | None = Field(None, alias="if")
    for_each: str | list[Any] | None = None
    max_parallel: int = Field(4, ge=1, le=256, description="concurrency bound of a for_each fan-out")
    retries: int = Field(0, ge=0, le=100)
    retry_delay_seconds: float | list[float] | Backoff = 0
    timeout_seconds: float | None = Field(None, gt=0)
    on_failure: Literal["rollback", "keep", "continue"] = Field(
        "rollback",
        description="rollback: undo completed steps; keep: fail without undoing; continue: tolerate",
    )

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Blueprint(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="lower-case letters, digits and -")
    description: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    target: str | None = Field(
        None,
        description="what runs must not touch at the same time, e.g. ${{ inputs.docker_host }}/gogs; "
        "runs with the same rendered target queue behind each other (default: the blueprint name)",
    )
    path: str | None = Field(None, exclude=True)

    def step(self, step_id: str) -> StepSpec:
        return next(s for s in self.steps if s.id == step_id)


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


def short(value: Any, limit: int = 120) -> str:
    """A value quoted in a message, cut when huge."""
    return expressions.shorten(repr(value), limit)


def if_expression(condition: str | bool | None):
    """``if:`` as the engine evaluates it: a bare string is an expression."""
    if isinstance(condition, str) and "${{" not in condition:
        return "${{ " + condition + " }}"
    return condition


class _Collector:
    def __init__(self, file: str, located: yamlpos.Located | None):
        self.file, self.located, self.problems = file, located, []
        self.count = 0

    def add(self, path: tuple, message: str, hint: str = "", step: str | None = None, key: bool = False):
        self.count += 1
        if len(self.problems) >= MAX_PROBLEMS:
            return
        line, col = self.located.where(path, key=key) if self.located else (1, 1)
        message = expressions.shorten(message, MAX_MESSAGE)
        self.problems.append(Problem(self.file, line, col, message, hint[:400], step))

    def finish(self) -> None:
        if self.count > len(self.problems):
            self.problems.append(Problem(self.file, 1, 1, f"... and {self.count - len(self.problems)} more problems"))

    def pydantic(self, base: tuple, exc: ValidationError, step: str | None = None, skip: set = frozenset()):
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            if loc and loc[0] in skip and err["type"] == "missing":
                continue
            if not loc and skip:  # a model-level rule cannot judge values that are still expressions
                continue
            field = ".".join(str(p) for p in loc) or "(top level)"
            if err["type"] == "extra_forbidden":
                self.add((*base, *loc), f"unknown key {loc[-1]!r}", _extra_hint(err, exc), step, key=True)
            elif err["type"] == "missing":
                self.add((*base, *loc[:-1]), f"missing required key {field!r}", "", step, key=True)
            else:
                given = err.get("input")
                self.add((*base, *loc), f"{field}: {err['msg']} (got {given!r})", "", step)


def _extra_hint(err: dict, exc: ValidationError) -> str:
    model = getattr(exc, "_vicflow_model", None)
    if model is None:
        return ""
    names = [f.alias or n for n, f in model.model_fields.items()]
    return f"{did_you_mean(str(err['loc'][-1]), names)}allowed keys: {', '.join(sorted(names))}"


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        exc._vicflow_model = model  # lets the collector suggest the allowed keys
        raise


_parsed: dict[tuple[str, str, int], tuple[Any, Blueprint]] = {}  # parsed once per process; holds its registry


def load(path: str | Path, registry=None) -> Blueprint:
    """Read and validate a blueprint; raises BlueprintError listing every problem.

    The CLI and the flow it starts in the same process both load the blueprint: the second load of the same
    text is the first one's result. Treat the result as read-only."""
    if registry is None:
        from vicflow.plugins.manager import default_registry

        registry = default_registry()
    path = Path(path)
    text = read_text(path, "blueprint")
    key = (str(path), text, id(registry))  # the entry holds the registry: its id is not reused meanwhile
    if key not in _parsed:
        if len(_parsed) > 64:  # a worker runs many blueprints: keep the recent ones
            _parsed.pop(next(iter(_parsed)))
        _parsed[key] = (registry, parse(text, str(path), registry))
    return _parsed[key][1]


def read_text(path: Path, what: str) -> str:
    """``yamlpos.read_text`` with its problem as a BlueprintError."""
    try:
        return yamlpos.read_text(path, what)
    except yamlpos.YAMLSyntaxError as exc:
        raise BlueprintError([Problem(str(path), exc.line, exc.column, str(exc), exc.hint)]) from None


def parse(text: str, file: str, registry=None) -> Blueprint:
    if registry is None:
        from vicflow.plugins.manager import default_registry

        registry = default_registry()
    try:
        located = yamlpos.load(text)
    except yamlpos.YAMLSyntaxError as exc:
        problem = Problem(
            file,
            exc.line,
            exc.column,
            f"YAML syntax error: {exc}",
            "check the indentation and quoting near this position",
        )
        raise BlueprintError([problem]) from None
    out = _Collector(file, located)
    for dup_path, (line, col) in located.duplicate_keys:
        out.problems.append(
            Problem(
                file,
                line,
                col,
                f"duplicate key {dup_path[-1]!r}",
                "YAML keeps only the last one; remove or merge the other",
            )
        )
    data = located.data
    if not isinstance(data, dict):
        out.add(
            (),
            "a blueprint is a mapping with name, inputs and steps",
            "start from blueprints/gogs.yaml or `vicflow schema`",
        )
        raise BlueprintError(out.problems)

    raw_steps = data.get("steps")
    head = {k: v for k, v in data.items() if k != "steps"}
    head["steps"] = [{"id": "placeholder", "uses": "placeholder"}]  # steps are checked one by one
    try:
        blueprint = _validate(Blueprint, head)
    except ValidationError as exc:
        out.pydantic((), exc)
        blueprint = Blueprint.model_construct(name=str(data.get("name", "?")), inputs={}, steps=[])
        for name, spec in (data.get("inputs") or {}).items() if isinstance(data.get("inputs"), dict) else []:
            with contextlib.suppress(ValidationError):
                blueprint.inputs[name] = InputSpec.model_validate(spec)
    blueprint.path = file

    steps = _check_steps(raw_steps, out, registry)
    blueprint.steps = steps
    _check_graph(steps, out)
    _check_references(blueprint, out, registry)
    _check_blueprint_expressions(blueprint, out)
    if out.problems:
        out.finish()
        raise BlueprintError(out.problems)
    return blueprint


def _check_steps(raw_steps: Any, out: _Collector, registry) -> list[StepSpec]:
    if not isinstance(raw_steps, list) or not raw_steps:
        out.add(("steps",), "steps must be a non-empty list", "each step has at least id and uses")
        return []
    steps: list[StepSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_steps):
        base = ("steps", index)
        step_id = raw.get("id") if isinstance(raw, dict) else None
        label = step_id if isinstance(step_id, str) else f"#{index + 1}"
        try:
            step = _validate(StepSpec, raw)
        except ValidationError as exc:
            out.pydantic(base, exc, label)
            if any(e["loc"] and e["loc"][0] == "id" and e["type"] == "string_pattern_mismatch" for e in exc.errors()):
                out.problems[-1].hint = "ids are letters, digits and _ so that ${{ steps.<id> }} works"
            continue
        if step.id in seen:
            out.add(
                (*base, "id"),
                f"duplicate step id {step.id!r}",
                f"the first is step #{seen[step.id] + 1}; ids must be unique",
                step.id,
            )
            continue
        seen[step.id] = index
        step_type = registry.step_types.get(step.uses)
        if step_type is None:
            installed = ", ".join(sorted(registry.step_types)) or "none"
            out.add(
                (*base, "uses"),
                f"unknown step type {step.uses!r}",
                f"{did_you_mean(step.uses, registry.step_types)}installed: {installed}",
                step.id,
            )
        else:
            _check_params(step, step_type, out, base)
        step._index = index  # type: ignore[attr-defined]
        steps.append(step)
    return steps


def _check_params(step: StepSpec, step_type, out: _Collector, base: tuple) -> None:
    """Validate ``with`` against the step type's model; values holding expressions are checked at run time."""
    dynamic = {k for k, v in step.with_.items() if expressions.has_expression(v)}
    static = {k: v for k, v in step.with_.items() if k not in dynamic}
    model = step_type.Params
    try:
        _validate(model, static)
    except ValidationError as exc:
        out.pydantic((*base, "with"), exc, step.id, skip=dynamic)
    for name in dynamic:
        if name not in model.model_fields and not any(f.alias == name for f in model.model_fields.values()):
            allowed = sorted(f.alias or n for n, f in model.model_fields.items())
            out.add(
                (*base, "with", name),
                f"unknown key {name!r}",
                f"{did_you_mean(name, allowed)}allowed keys: {', '.join(allowed)}",
                step.id,
                key=True,
            )


def _check_graph(steps: list[StepSpec], out: _Collector) -> None:
    ids = {s.id for s in steps}
    for step in steps:
        for n, need in enumerate(step.needs):
            if need not in ids:
                out.add(
                    ("steps", step._index, "needs", n),
                    f"needs unknown step {short(need)}",
                    f"{did_you_mean(need, ids)}steps: {listing(ids)}",
                    step.id,
                )
            elif need == step.id:
                out.add(("steps", step._index, "needs", n), "a step cannot need itself", "", step.id)
    cycle = find_cycle({s.id: [n for n in dependencies(s) if n in ids and n != s.id] for s in steps})
    if cycle:
        first = next(s for s in steps if s.id == cycle[0])
        out.add(
            ("steps", first._index, "needs"),
            f"dependency cycle: {' -> '.join([*cycle, cycle[0]])}",
            "remove one of these needs (or step references) to break the cycle",
            first.id,
        )


def dependencies(step: StepSpec) -> list[str]:
    """Explicit ``needs`` plus every step whose outputs the step references."""
    deps = list(step.needs)
    try:
        for chain in expressions.references([step.with_, if_expression(step.if_), step.for_each]):
            if chain[0] == "steps" and len(chain) > 1 and chain[1] not in deps:
                deps.append(chain[1])
    except expressions.ExpressionError:
        pass  # reported by _check_references
    return deps


def _check_references(blueprint: Blueprint, out: _Collector, registry) -> None:
    steps = {s.id: s for s in blueprint.steps}
    for step in blueprint.steps:
        for field, value in (("with", step.with_), ("if", if_expression(step.if_)), ("for_each", step.for_each)):
            base = ("steps", step._index, field)
            try:
                chains = list(expressions.references(value))
            except expressions.ExpressionError as exc:
                out.add(base, str(exc), "expressions look like ${{ inputs.name }}", step.id)
                continue
            for chain in chains:
                problem = _reference_problem(chain, blueprint, steps, registry, step, field)
                if problem:
                    out.add(_expression_path(base, value, chain), *problem, step.id)


def _check_blueprint_expressions(blueprint: Blueprint, out: _Collector) -> None:
    """target: and input defaults hold expressions too; validate checks them like with: values."""
    places = [(("target",), blueprint.target, ("inputs", "event"))]
    places += [(("inputs", name, "default"), spec.default, VALUE_ROOTS) for name, spec in blueprint.inputs.items()]
    for path, value, roots in places:
        for message, hint in expression_problems(value, roots, blueprint.inputs):
            out.add(path, message, hint)
    for name, spec in blueprint.inputs.items():
        if spec.default is not None and not expressions.has_expression(spec.default):
            problem = _type_problem(name, spec, spec.default)
            if problem:
                out.add(("inputs", name, "default"), f"the default of {problem}", "fix the default")


VALUE_ROOTS = ("secrets", "event")  # what an input's value may refer to


def expression_problems(value: Any, roots: tuple, inputs: dict) -> list[tuple[str, str]]:
    """(message, hint) for each bad expression in ``value``, which may refer only to ``roots``."""
    try:
        chains = list(expressions.references(value))
    except expressions.ExpressionError as exc:
        return [(str(exc), "expressions look like ${{ secrets.name }}")]
    problems = []
    for chain in chains:
        if chain[0] not in roots:
            problems.append(
                (f"${{{{ {'.'.join(chain)} }}}} cannot be used here", f"names allowed here: {', '.join(roots)}")
            )
        elif chain[0] == "inputs" and len(chain) > 1 and chain[1] not in inputs:
            problems.append((f"reference to undefined input {chain[1]!r}", f"declared inputs: {listing(inputs)}"))
    return problems


def _reference_problem(chain, blueprint, steps, registry, step, field) -> tuple[str, str] | None:
    root, rest = chain[0], chain[1:]
    text = ".".join(chain)
    if root not in expressions.ROOTS:
        return (
            f"unknown name {root!r} in ${{{{ {text} }}}}",
            f"{did_you_mean(root, expressions.ROOTS)}names: {', '.join(expressions.ROOTS)}",
        )
    if root == "item" and step.for_each is None:
        return ("${{ item }} is only defined in a step with for_each", "add for_each to this step")
    if root == "item" and field == "for_each":
        return ("for_each cannot refer to its own item", "")
    if root == "inputs" and rest and rest[0] not in blueprint.inputs:
        declared = ", ".join(sorted(blueprint.inputs)) or "none"
        return (
            f"reference to undefined input {rest[0]!r}",
            f"{did_you_mean(rest[0], blueprint.inputs)}declare it under inputs: (declared: {declared})",
        )
    if root == "steps" and rest:
        if rest[0] not in steps:
            return (f"reference to unknown step {rest[0]!r}", f"{did_you_mean(rest[0], steps)}".strip())
        if len(rest) > 1 and rest[1] != "outputs":
            return (f"${{{{ {text} }}}}: a step exposes only .outputs", f"use steps.{rest[0]}.outputs.<name>")
        step_type = registry.step_types.get(steps[rest[0]].uses)
        if step_type is not None and len(rest) > 2 and rest[2] not in step_type.outputs:
            names = ", ".join(sorted(step_type.outputs)) or "none"
            return (
                f"step {rest[0]!r} ({steps[rest[0]].uses}) has no output {rest[2]!r}",
                f"{did_you_mean(rest[2], step_type.outputs)}outputs: {names}",
            )
    return None


def _expression_path(base: tuple, value: Any, chain: tuple) -> tuple:
    """The path of the value that holds ``chain``, for a precise line and column."""
    needle = re.compile(r"\b" + re.escape(chain[0]) + r"\b")
    if isinstance(value, dict):
        for key, item in value.items():
            if needle.search(str(item)) or needle.search(str(key)):
                return _expression_path((*base, key), item, chain)
    if isinstance(value, list):
        for index, item in enumerate(value):
            if needle.search(str(item)):
                return _expression_path((*base, index), item, chain)
    return base


def _type_problem(name: str, spec: InputSpec, value: Any, given: Any = None) -> str | None:
    expected = INPUT_TYPES[spec.type]
    wrong_number = spec.type in ("integer", "number") and isinstance(value, bool)
    if spec.type != "secret" and (not isinstance(value, expected) or wrong_number):
        shown = "the secret value" if spec.type == "secret" else short(value if given is None else given)
        article = "an" if spec.type[0] in "aeiou" else "a"
        return f"input {name!r} must be {article} {spec.type}, got {shown}"
    return None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of blueprints (``vicflow schema``), for editors' completion."""
    schema = Blueprint.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "vicflow blueprint"
    schema.get("properties", {}).pop("path", None)
    return schema
