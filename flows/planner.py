"""``vicflow plan``: every step's plan() in dependency order, with what is known before anything runs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from vicflow.flows import expressions
from vicflow.flows.blueprint import dependencies
from vicflow.flows.rendering import contains_unknown, for_each_items, truthy
from vicflow.flows.step_setup import prepare_step
from vicflow.plugins import dag, masking
from vicflow.plugins.step import Change

if TYPE_CHECKING:
    from vicflow.flows.engine import Run


def plan_steps(run: Run) -> list[dict[str, Any]]:
    """Call every step's plan() in dependency order, finally: steps last; nothing is changed. on_error: steps
    are listed, not planned (they run only when the run fails)."""
    planned = [*run.blueprint.steps, *run.blueprint.finally_]
    ids = {s.id for s in planned}
    graph = {s.id: [d for d in dependencies(s) if d in ids] for s in planned}
    plan: list[dict[str, Any]] = []
    changing: set[str] = set()  # steps whose plan changes something (or is not known before they apply)
    for step_id in dag.topological_order(graph):
        step = run.blueprint.step(step_id)
        record = run.records[step_id]
        record.started = time.monotonic()
        context = run.context()
        try:
            if step.if_ is not None and not contains_unknown(step.if_) and not truthy(step.if_, context):
                changes = [Change("none", step_id, f"skipped: if {step.if_} is false")]
            else:
                items = for_each_items(step, context, planning=True)
                changes = []
                for item in items:
                    rendered = expressions.render(step.with_, run.context(item))
                    if contains_unknown(rendered) or contains_unknown(item):
                        changes.append(Change("unknown", step_id, "depends on outputs known after apply"))
                        continue
                    step_type, params, ctx = prepare_step(run, step_id, item)
                    changes.extend(step_type.plan(params, ctx))
            record.state = "planned"
        except Exception as exc:
            changes = [_failed_plan(record, graph[step_id], changing, exc)]
        record.finished = time.monotonic()
        if any(change.action not in ("none", "error") for change in changes):
            changing.add(step_id)
        for change in changes:
            plan.append(
                {
                    "step": step_id,
                    "action": change.action,
                    "target": masking.mask(change.target),
                    "detail": masking.mask(change.detail),
                }
            )
    for step in run.blueprint.on_error:
        plan.append({"step": step.id, "action": "none", "target": step.id, "detail": "on_error: runs if the run fails"})
    return plan


def _failed_plan(record, needs: list[str], changing: set[str], exc: Exception) -> Change:
    """A step whose plan fails while a step it needs would change something cannot be judged before that
    step applies (vch_create checks the firewall that the firewall step opens): "unknown", not an error."""
    message = masking.mask(str(exc))
    upstream = sorted(set(needs) & changing)
    if upstream:
        record.state = "planned"
        return Change("unknown", record.id, f"known after {', '.join(upstream)} apply; planned now: {message}")
    record.state, record.error = "failed", message
    return Change("error", record.id, message)
