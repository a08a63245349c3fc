"""``vicflow plan``: every step's plan() in dependency order, with what is known before anything runs."""

from __future__ import annotations

import time
from typing import Any

from vicflow.flows.engine.attempt import prepare_step
from vicflow.flows.engine.run import Run
from vicflow.flows.language import expressions
from vicflow.flows.language.rendering import contains_unknown, for_each_items, located, params_digest, truthy
from vicflow.flows.language.spec import dependencies
from vicflow.plugins import dag, masking
from vicflow.plugins.errors import BlueprintError
from vicflow.plugins.step import Change


def plan_steps(run: Run, record: bool = True) -> list[dict[str, Any]]:
    """Call every step's plan() in dependency order, finally: steps last; nothing is changed. on_error: steps
    are listed, not planned (they run only when the run fails). ``record``: a dry run's step records show it
    (a run's policy plans without it)."""
    plan = plan_rows(run, [*run.blueprint.steps, *run.blueprint.finally_], record=record)
    for step in run.blueprint.on_error:
        plan.append(
            {
                "step": step.id,
                "action": "none",
                "target": step.id,
                "detail": "on_error: runs if the run fails",
                "kind": "",
            }
        )
    return plan


def behind(run: Run, step_id: str, section: list) -> list:
    """The step and every step of its section that depends on it, directly or not: what its approval covers."""
    ids = {step_id}
    for step in section:  # a section's steps are in an order where needs come first
        if step.id != step_id and ids & set(dependencies(step)):
            ids.add(step.id)
    return [step for step in section if step.id in ids]


def plan_rows(run: Run, steps: list, record: bool) -> list[dict[str, Any]]:
    """The plan rows of ``steps``; ``record``: a dry run, whose step records show what was planned."""
    ids = {s.id for s in steps}
    graph = {s.id: [d for d in dependencies(s) if d in ids] for s in steps}
    plan: list[dict[str, Any]] = []
    changing: set[str] = set()  # steps whose plan changes something (or is not known before they apply)
    for step_id in dag.topological_order(graph):
        started = time.monotonic()
        changes, error = _plan_one(run, run.blueprint.step(step_id), graph[step_id], changing)
        if record:
            run.planned(step_id, started, error)
        if any(change.action not in ("none", "error") for change in changes):
            changing.add(step_id)
        plan += [
            {
                "step": step_id,
                "action": change.action,
                "target": masking.mask(change.target),
                "detail": masking.mask(change.detail),
                "kind": change.kind,  # what it touches (plugins/step.py Kind): the blast radius counts it
            }
            for change in changes
        ]
    return plan


def _plan_one(run: Run, step, needs: list[str], changing: set[str]) -> tuple[list[Change], str | None]:
    """A step's changes, and its error when it could not be planned. An expression past its budget is the
    blueprint's error (located; the plan stops), not the step's."""
    context = run.context(planning=True)
    try:
        if step.if_ is not None and not contains_unknown(step.if_):
            with located(run.blueprint, step, "if"):
                if not truthy(step.if_, context):
                    return [Change("none", step.id, f"skipped: if {step.if_} is false")], None
        changes = []
        with located(run.blueprint, step, "for_each"):
            items = for_each_items(step, context, planning=True)
        for item in items:
            with located(run.blueprint, step, "with"):
                rendered = expressions.render(step.with_, run.context(item, planning=True))
            if contains_unknown(rendered) or contains_unknown(item):
                changes.append(Change("unknown", step.id, "depends on outputs known after apply"))
                continue
            step_type, params, ctx = prepare_step(run, step.id, item, rendered)
            changes.extend(step_type.plan(params, ctx))
        return changes, None
    except BlueprintError:
        raise
    except Exception as exc:
        # a plan that fails while a step it needs would change something cannot be judged before that step
        # applies (vch_create checks the firewall that the firewall step opens): "unknown", not an error
        message = masking.mask(str(exc))
        upstream = sorted(set(needs) & changing)
        if upstream:
            detail = f"known after {', '.join(upstream)} apply; planned now: {message}"
            return [Change("unknown", step.id, detail)], None
        return [Change("error", step.id, message)], message


def digest(rows: list[dict[str, Any]], outcome: dict[str, Any] | None = None) -> str:
    """The hash an approval is bound to: the same rows give the same hash (the resume digest's, shortened).
    With a policy, its ``outcome`` (decision, messages, the policy's digest) is part of it: a plan approved under
    one policy decision is not the plan of another."""
    if outcome is None:
        return params_digest(rows)[:16]
    return params_digest({"rows": rows, "policy": outcome})[:16]


def markdown(title: str, rows: list[dict[str, Any]]) -> str:
    lines = [f"# {title}", "", "| step | action | target | detail |", "|---|---|---|---|"]
    for change in rows:
        detail = str(change["detail"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {change['step']} | {change['action']} | {change['target']} | {detail} |")
    return "\n".join(lines)


def diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """What an approved plan lost (-) and gained (+), one row each."""

    def line(row: dict[str, Any]) -> str:
        return f"{row['step']} {row['action']} {row['target']}: {row['detail']}"

    old, new = [line(r) for r in before], [line(r) for r in after]
    return "; ".join([f"- {x}" for x in old if x not in new] + [f"+ {x}" for x in new if x not in old])
