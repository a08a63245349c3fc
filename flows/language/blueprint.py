"""Blueprint models, loading and validation.

Validation runs before anything touches a server and reports every problem at once, each with
its file, line, column, step id and a hint.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from vicflow.flows.language import expressions, fleet
from vicflow.flows.language.problems import Collector, Problem, short  # noqa: F401 (Problem: this module's API)
from vicflow.flows.language.references import check_blueprint_expressions, check_outputs, check_references
from vicflow.flows.language.spec import (  # noqa: F401 (the models: this module's API)
    Backoff,
    Blueprint,
    InputSpec,
    StepSpec,
    dependencies,
    if_expression,
    json_schema,
)
from vicflow.plugins import yamlpos
from vicflow.plugins.dag import find_cycle
from vicflow.plugins.errors import BlueprintError
from vicflow.plugins.hints import did_you_mean, listing
from vicflow.plugins.manager import default_registry


def load(path: str | Path, registry=None) -> Blueprint:
    """Read and validate a blueprint; raises BlueprintError listing every problem."""
    if registry is None:
        registry = default_registry()
    path = Path(path)
    return parse(read_text(path, "blueprint"), str(path), registry)


def read_text(path: Path, what: str) -> str:
    """``yamlpos.read_text`` with its problem as a BlueprintError."""
    try:
        return yamlpos.read_text(path, what)
    except yamlpos.YAMLSyntaxError as exc:
        raise BlueprintError([Problem(str(path), exc.line, exc.column, str(exc), exc.hint or "")]) from None


def parse(text: str, file: str, registry=None) -> Blueprint:
    if registry is None:
        registry = default_registry()
    try:
        located = yamlpos.load(text, yaml12_booleans=True)
    except yamlpos.YAMLSyntaxError as exc:
        problem = Problem(
            file,
            exc.line,
            exc.column,
            f"YAML syntax error: {exc}",
            "check the indentation and quoting near this position",
        )
        raise BlueprintError([problem]) from None
    out = Collector(file, located)
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

    sections = {name: data.get(name) for name in STEP_SECTIONS}
    head = {k: v for k, v in data.items() if k not in STEP_SECTIONS}
    head["steps"] = [{"id": "placeholder", "uses": "placeholder"}]  # steps are checked one by one
    try:
        blueprint = Blueprint.model_validate(head)
    except ValidationError as exc:
        out.pydantic((), exc, Blueprint)
        blueprint = Blueprint.model_construct(name=str(data.get("name", "?")), inputs={}, steps=[])
        for name, spec in (data.get("inputs") or {}).items() if isinstance(data.get("inputs"), dict) else []:
            if not isinstance(name, str):  # reported above; the name must be text for the checks that follow
                continue
            with contextlib.suppress(ValidationError):
                blueprint.inputs[name] = InputSpec.model_validate(spec)
    blueprint.path = file
    blueprint._located = yamlpos.Located(None, located.values, located.keys)  # runs locate their errors too
    blueprint._input_places = {name: located.where(("inputs", name), key=True) for name in blueprint.inputs}

    _check_defaults(blueprint, out, registry)
    seen: dict[str, tuple] = {}  # ids are unique across steps, on_error and finally
    blueprint.steps = _check_steps(sections["steps"], out, registry, blueprint.defaults, "steps", seen)
    for name, attribute in (("on_error", "on_error"), ("finally", "finally_")):
        if sections[name] is not None:
            setattr(blueprint, attribute, _check_steps(sections[name], out, registry, blueprint.defaults, name, seen))
    _check_graph(blueprint.all_steps, out)
    fleet.check_children(blueprint, out, registry, load)
    check_references(blueprint, out, registry)
    check_blueprint_expressions(blueprint, out)
    check_outputs(blueprint, out, registry)
    if out.problems:
        out.finish()
        raise BlueprintError(out.problems)
    return blueprint


def _check_defaults(blueprint: Blueprint, out: Collector, registry) -> None:
    """defaults: names step types that exist, and only keys their parameters have."""
    for uses, values in list(blueprint.defaults.items()):
        step_type = registry.step_types.get(uses)
        if step_type is None:
            installed = ", ".join(sorted(registry.step_types)) or "none"
            hint = f"{did_you_mean(uses, registry.step_types)}defaults are keyed by step type; installed: {installed}"
            out.add(("defaults", uses), f"defaults for unknown step type {uses!r}", hint, key=True)
            del blueprint.defaults[uses]
            continue
        allowed = {f.alias or n for n, f in step_type.Params.model_fields.items()}
        blueprint.defaults[uses] = {k: v for k, v in values.items() if k in allowed}  # each mistake said once
        for key in values:
            if key not in allowed:
                out.add(
                    ("defaults", uses, key),
                    f"unknown key {key!r} in the defaults of {uses}",
                    f"{did_you_mean(key, allowed)}allowed keys: {', '.join(sorted(allowed))}",
                    key=True,
                )


STEP_SECTIONS = ("steps", "on_error", "finally")


def _section_name(section: str) -> str:
    return "step" if section == "steps" else f"{section} step"


def _check_steps(
    raw_steps: Any, out: Collector, registry, defaults: dict[str, dict[str, Any]], section: str, seen: dict
) -> list[StepSpec]:
    """One section's steps (steps, on_error or finally); ``seen`` holds the ids of every section so far."""
    if not isinstance(raw_steps, list) or (section == "steps" and not raw_steps):
        out.add((section,), f"{section} must be a non-empty list", "each step has at least id and uses")
        return []
    steps: list[StepSpec] = []
    for index, raw in enumerate(raw_steps):
        base = (section, index)
        step_id = raw.get("id") if isinstance(raw, dict) else None
        label = step_id if isinstance(step_id, str) else f"#{index + 1}"
        try:
            step = StepSpec.model_validate(raw)
        except ValidationError as exc:
            out.pydantic(base, exc, StepSpec, label)
            if any(e["loc"] and e["loc"][0] == "id" and e["type"] == "string_pattern_mismatch" for e in exc.errors()):
                out.problems[-1].hint = "ids are letters, digits and _ so that ${{ steps.<id> }} works"
            continue
        if step.id in seen:
            out.add(
                (*base, "id"),
                f"duplicate step id {step.id!r}",
                f"the first is {_section_name(seen[step.id][0])} #{seen[step.id][1] + 1}; ids are unique across "
                "steps, on_error and finally",
                step.id,
            )
            continue
        seen[step.id] = base
        step_type = registry.step_types.get(step.uses)
        if step.uses.startswith(fleet.PREFIX):
            pass  # another blueprint: fleet.check_children checks it once every step is known
        elif step_type is None:
            installed = ", ".join(sorted(registry.step_types)) or "none"
            out.add(
                (*base, "uses"),
                f"unknown step type {step.uses!r}",
                f"{did_you_mean(step.uses, registry.step_types)}installed: {installed}",
                step.id,
            )
        else:
            step.with_ = {**defaults.get(step.uses, {}), **step.with_}  # the step's own keys win
            _check_params(step, step_type, out, base)
        step._where = base
        steps.append(step)
    return steps


def _check_params(step: StepSpec, step_type, out: Collector, base: tuple) -> None:
    """Validate ``with`` against the step type's model; values holding expressions are checked at run time."""
    dynamic = {k for k, v in step.with_.items() if expressions.has_expression(v)}
    static = {k: v for k, v in step.with_.items() if k not in dynamic}
    model = step_type.Params
    try:
        model.model_validate(static)
    except ValidationError as exc:
        out.pydantic((*base, "with"), exc, model, step.id, skip=dynamic)
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


def _check_graph(steps: list[StepSpec], out: Collector) -> None:
    ids = {s.id for s in steps}
    for step in steps:
        for n, need in enumerate(step.needs):
            if need not in ids:
                out.add(
                    (*step._where, "needs", n),
                    f"needs unknown step {short(need)}",
                    f"{did_you_mean(need, ids)}steps: {listing(ids)}",
                    step.id,
                )
            elif need == step.id:
                out.add((*step._where, "needs", n), "a step cannot need itself", "", step.id)
    cycle = find_cycle({s.id: [n for n in dependencies(s) if n in ids and n != s.id] for s in steps})
    if cycle:
        first = next(s for s in steps if s.id == cycle[0])
        out.add(
            (*first._where, "needs"),
            f"dependency cycle: {' -> '.join([*cycle, cycle[0]])}",
            "remove one of these needs (or step references) to break the cycle",
            first.id,
        )
