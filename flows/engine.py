"""A run of a validated blueprint from start to end: its sections, the rollback, the outputs and the summary.

``execute`` makes the run (run.py) and its executor, then schedules the ``steps:`` (scheduler.py). When a step
fails for good, the completed steps are rolled back, newest first, unless ``on_failure`` says not, or the error
does (one whose ``undo_completed`` is False, such as the Docker engine restarting under a check); then the
``on_error:`` steps run, and the ``finally:`` steps at the end of every run. A dry run plans instead
(planner.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vicflow.flows.executor import Executor
from vicflow.flows.fleet import RUNNER
from vicflow.flows.planner import plan_steps
from vicflow.flows.run import Run, RunState
from vicflow.flows.scheduler import Scheduler
from vicflow.flows.spec import Blueprint
from vicflow.plugins import masking
from vicflow.plugins.errors import RunCancelled, RunFailed

MAX_PARALLEL_STEPS = 16  # the flow's task runner: steps and for_each items running at once


def execute(
    blueprint: Blueprint,
    inputs: dict[str, Any],
    registry,
    run_id: str,
    *,
    executor: Callable[[Run], Executor],
    dry_run: bool = False,
    resume: str | None = None,
    event: dict[str, Any] | None = None,
    approve: bool = False,
) -> dict[str, Any]:
    """Run (or plan) ``blueprint``; returns the summary, raises RunFailed when a step failed for good and
    RunCancelled when an approval said no.

    ``inputs`` are the values ``inputs.prepare`` gives (rendered and typed). ``executor`` makes the run's
    executor: ``PrefectSteps`` (inside a flow run: each step a task run) or ``ThreadSteps`` (no Prefect)."""
    masking.install_log_filter()
    run = Run(blueprint, inputs, registry, run_id, event=event, dry_run=dry_run, pre_approved=approve)
    run.executor = executor(run)
    run.resources[RUNNER] = run.executor.children
    started = time.monotonic()
    try:
        if not dry_run:
            run.journal = run.executor.journal
        if resume and not dry_run:
            run.previous = run.journal.load(resume).get("steps", {})
        run.emit("vicflow.run.started", payload={"inputs": _public(blueprint, inputs), "event": event})
        if dry_run:
            return _plan(run, started)
        failure = _schedule(run, blueprint.steps)
        if run.cancelled:  # an approval said no: nothing behind its gate ran, so nothing is undone or run after
            run.state = RunState.CANCELLED
        else:
            run.state = _final_state(run, _after_steps(run, failure))
            run.outputs = run.render_outputs()
        left = run.release()
        summary = run.summary(started)
        if run.cancelled:
            summary["error"] = run.cancelled
        else:
            summary["outputs"] = run.outputs
        summary["left_behind"] = masking.mask(left)
        run.save_journal()
        run.executor.publish(summary)
        if run.state == RunState.CANCELLED:
            raise RunCancelled(masking.mask(summary))
        if run.state == RunState.FAILED:
            raise RunFailed(masking.mask(summary))  # Prefect pickles it into its result storage
        return summary
    finally:
        run.release()
        run.executor.close()


def _plan(run: Run, started: float) -> dict[str, Any]:
    plan = plan_steps(run)
    changes = [row for row in plan if row["action"] != "none"]
    if changes:  # what a scheduled plan (the drift-check deployment) is for
        run.emit("vicflow.drift.detected", payload={"changes": changes, "count": len(changes)})
    run.state = RunState.PLANNED
    summary = run.summary(started)
    summary["plan"] = plan
    run.executor.publish(summary)
    return summary


def _public(document: Blueprint, values: dict[str, Any]) -> dict[str, Any]:
    """The input values as the run.started event shows them: secret ones as ***."""
    shown = {}
    for name, value in values.items():
        if name not in document.inputs:
            continue
        if document.inputs[name].type == "secret" and value is not None:
            value = "***"
        shown[name] = value
    return shown


def _schedule(run: Run, steps: list) -> str | None:
    """Run ``steps`` (one section: steps, on_error or finally) with the run's executor; the id of a step that
    failed for good. How many run at once is bounded by the executor (``MAX_PARALLEL_STEPS``) and each
    for_each's ``max_parallel``."""
    if not steps:
        return None
    return Scheduler(run, run.executor, steps).run()


def _after_steps(run: Run, failure: str | None) -> str | None:
    """After steps: the rollback and on_error: when a step failed for good, then finally:; the step that
    failed for good, if one did."""
    if failure:
        record = run.records[failure]
        if record.keep_completed:
            record.note = "nothing rolled back: the failure is not the deployment's"
        elif run.blueprint.step(failure).on_failure == "rollback":
            run.roll_back()
        run.failed_step, run.error = failure, record.error
        failure = _schedule(run, run.blueprint.on_error) or failure
    else:
        for step in run.blueprint.on_error:
            run.leave_out(step.id, "on_error: the run did not fail")
    return _schedule(run, run.blueprint.finally_) or failure  # finally: whatever happened


def _final_state(run: Run, failure: str | None) -> RunState:
    """failed; completed with failures (a step with on_failure: continue failed); or completed."""
    if failure:
        return RunState.FAILED
    if any(record.state.failed for record in run.records.values()):
        return RunState.COMPLETED_WITH_FAILURES
    return RunState.COMPLETED
