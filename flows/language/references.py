"""What a blueprint's ``${{ }}`` expressions may refer to: inputs, steps and their outputs, item, secrets, event."""

from __future__ import annotations

import re
from typing import Any

from vicflow.flows.language import expressions
from vicflow.flows.language.problems import Collector
from vicflow.flows.language.spec import Blueprint, if_expression, type_problem
from vicflow.plugins.hints import did_you_mean, listing

VALUE_ROOTS = ("secrets", "event")  # what an input's value may refer to


def check_references(blueprint: Blueprint, out: Collector, registry) -> None:
    steps = {s.id: s for s in blueprint.all_steps}
    for step in blueprint.all_steps:
        for field, value in (("with", step.with_), ("if", if_expression(step.if_)), ("for_each", step.for_each)):
            base = (*step._where, field)
            try:
                chains = list(expressions.references(value))
            except expressions.ExpressionError as exc:
                out.add(base, str(exc), "expressions look like ${{ inputs.name }}", step.id)
                continue
            for chain in chains:
                problem = reference_problem(chain, blueprint, steps, registry, step, field)
                if problem:
                    out.add(expression_path(base, value, chain), *problem, step.id)


STEP_FIELDS = ("outputs", "state", "changed")  # what ${{ steps.<id>.* }} may read
OUTPUT_ROOTS = ("inputs", "steps")  # what a blueprint's outputs: may refer to


def check_outputs(blueprint: Blueprint, out: Collector, registry) -> None:
    """outputs: refer to inputs and to steps' outputs that exist."""
    steps = {s.id: s for s in blueprint.all_steps}
    for name, value in blueprint.outputs.items():
        base = ("outputs", name)
        try:
            chains = list(expressions.references(value))
        except expressions.ExpressionError as exc:
            out.add(base, str(exc), "expressions look like ${{ steps.app.outputs.project }}")
            continue
        for chain in chains:
            if chain[0] not in OUTPUT_ROOTS:
                text = ".".join(chain)
                out.add(base, f"${{{{ {text} }}}} cannot be used in outputs", "names allowed here: inputs, steps")
                continue
            problem = reference_problem(chain, blueprint, steps, registry, None, "outputs")
            if problem:
                out.add(expression_path(base, value, chain), *problem)


def check_blueprint_expressions(blueprint: Blueprint, out: Collector) -> None:
    """target: and input defaults hold expressions too; validate checks them like with: values."""
    places: list[tuple[tuple, Any, tuple[str, ...]]] = [(("target",), blueprint.target, ("inputs", "event"))]
    places += [(("inputs", name, "default"), spec.default, VALUE_ROOTS) for name, spec in blueprint.inputs.items()]
    for path, value, roots in places:
        for message, hint in expression_problems(value, roots, blueprint.inputs):
            out.add(path, message, hint)
    for name, spec in blueprint.inputs.items():
        if spec.default is not None and not expressions.has_expression(spec.default):
            problem = type_problem(name, spec, spec.default)
            if problem:
                out.add(("inputs", name, "default"), f"the default of {problem}", "fix the default")


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


def reference_problem(chain, blueprint, steps, registry, step, field) -> tuple[str, str] | None:
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
        if len(rest) > 1 and rest[1] not in STEP_FIELDS:
            return (
                f"${{{{ {text} }}}}: a step exposes {', '.join(STEP_FIELDS)}",
                f"use steps.{rest[0]}.outputs.<name>, steps.{rest[0]}.state or steps.{rest[0]}.changed",
            )
        step_type = blueprint.step_type(rest[0], registry.step_types)
        if step_type is not None and len(rest) > 2 and rest[2] not in step_type.outputs:
            names = ", ".join(sorted(step_type.outputs)) or "none"
            return (
                f"step {rest[0]!r} ({steps[rest[0]].uses}) has no output {rest[2]!r}",
                f"{did_you_mean(rest[2], step_type.outputs)}outputs: {names}",
            )
    return None


def expression_path(base: tuple, value: Any, chain: tuple) -> tuple:
    """The path of the value that holds ``chain``, for a precise line and column."""
    needle = re.compile(r"\b" + re.escape(chain[0]) + r"\b")
    if isinstance(value, dict):
        for key, item in value.items():
            if needle.search(str(item)) or needle.search(str(key)):
                return expression_path((*base, key), item, chain)
    if isinstance(value, list):
        for index, item in enumerate(value):
            if needle.search(str(item)):
                return expression_path((*base, index), item, chain)
    return base
