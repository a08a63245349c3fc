"""A run of a validated blueprint from start to end: its governance, its sections, the rollback, the outputs and
the summary.

``execute`` makes the run (run.py) and its executor. A run with a policy has its whole plan judged first
(gate.py): deny stops it before any step, require approval pauses it. Then the ``steps:`` are
scheduled (scheduler.py). When a step fails for good, the completed steps are rolled back, newest first, unless
``on_failure`` says not, or an error does (any step that failed for good with ``undo_completed`` False, such as
the Docker engine restarting under a check); then the ``on_error:`` steps run, and the ``finally:`` steps at the
end of every run. A dry run plans instead (planner.py), with the plan's blast radius, the policy's outcome and
the plan hash an approval is bound to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vicflow.flows.engine import gate
from vicflow.flows.engine.executor import Executor
from vicflow.flows.engine.planner import digest, plan_steps
from vicflow.flows.engine.run import Run, RunState
from vicflow.flows.engine.scheduler import Scheduler
from vicflow.flows.governance import audit, blast_radius, integrity
from vicflow.flows.governance.policy import Policy
from vicflow.flows.language.fleet import RUNNER
from vicflow.flows.language.spec import Blueprint
from vicflow.flows.observability import metrics, tracing
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
    policy: str | None = None,
    folded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or plan) ``blueprint``; returns the summary, raises RunFailed when a step failed for good and
    RunCancelled when an approval said no or the policy denied the run.

    ``inputs`` are the values ``inputs.prepare`` gives (rendered and typed). ``executor`` makes the run's
    executor: ``PrefectSteps`` (inside a flow run: each step a task run) or ``ThreadSteps`` (no Prefect).
    ``policy``: a directory of Rego files judging the plan before any step applies (gate.py);
    ``folded``: the earlier events for the same target folded into this run (intake.py)."""
    masking.install_log_filter()
    run = Run(blueprint, inputs, registry, run_id, event=event, dry_run=dry_run, pre_approved=approve, folded=folded)
    run.policy = Policy(policy) if policy else None  # a policy that does not load stops the run here
    run.executor = executor(run)
    run.resources[RUNNER] = run.executor.children
    tracing.run_started(run)  # one trace from the event (its traceparent) through every step's calls
    started = time.monotonic()
    try:
        if not dry_run:
            run.journal = integrity.SealedJournal(run.executor.journal)  # a tampered journal is refused on resume
        if resume and not dry_run:
            run.previous = _resumed(run, resume)
        run.emit("vicflow.run.started", payload={"inputs": _public(blueprint, inputs), "event": event})
        if dry_run:
            return _plan(run, started)
        metrics.run_started(event)
        stopped = gate.check(run, run.policy) if run.policy else None  # the policy judges the whole plan first
        if stopped:
            run.stop(*stopped)
        else:
            failure = _schedule(run, blueprint.steps)
            if run.cancelled:  # an approval said no: nothing behind its gate ran, so nothing is undone or run after
                run.state = RunState.CANCELLED
            else:
                run.state = _final_state(run, _after_steps(run, failure))
                run.outputs = run.render_outputs()
        left = run.release()
        summary = run.summary(started)
        metrics.run_ended(blueprint.name, run.state.value)
        if run.cancelled:
            summary["error"] = run.cancelled
        else:
            summary["outputs"] = run.outputs
        summary["left_behind"] = masking.mask(left)
        run.save_journal()
        run.executor.publish(summary)
        if run.state in (RunState.CANCELLED, RunState.DENIED):
            raise RunCancelled(masking.mask(summary))
        if run.state == RunState.FAILED:
            raise RunFailed(masking.mask(summary))  # Prefect pickles it into its result storage
        return summary
    finally:
        tracing.run_ended(run)
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
    summary.update(_governed(run, plan))
    run.executor.publish(summary)
    return summary


def _resumed(run: Run, ref: str) -> dict[str, Any]:
    """The steps of the journal of run ``ref``, once its seal shows it was not edited; the resume is audited."""
    journal = run.journal.load(ref)  # a SealedJournal: checked against its seal
    audit.AuditLog().append(
        "resume", audit.this_process(), run_id=run.run_id, blueprint=run.blueprint.name, detail={"resumed": ref}
    )
    return journal.get("steps", {})


def _governed(run: Run, plan: list[dict[str, Any]]) -> dict[str, Any]:
    """A plan's blast radius, its policy's outcome (with one) and the hash an approval of it is bound to."""
    radius = blast_radius.of(plan)
    if run.policy:
        run.outcome, radius = gate.judge(run, plan, run.policy)
    found: dict[str, Any] = {"blast_radius": radius.to_dict()}
    if run.outcome is not None:
        found["policy"] = run.outcome
    found["plan_hash"] = digest(plan, run.outcome)
    return found


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
        # every step that failed counts, not only the first: parallel checks fail together when the engine restarts
        if not run.keep_completed() and run.blueprint.step(failure).on_failure == "rollback":
            run.roll_back()
        run.failed_step, run.error = failure, run.records[failure].error
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
