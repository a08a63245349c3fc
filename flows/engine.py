"""Runs a validated blueprint: the run's state, the step bodies, rollback, the journal and the summary.

An executor runs the step bodies (Prefect adapter: a task run each; thread executor: no Prefect). The
scheduler submits every step whose dependencies are done, fans ``for_each`` items out under a bound, and,
when a step fails for good, rolls back the completed steps, newest first (unless ``on_failure`` says not, or
the error does: one whose ``undo_completed`` is False, such as the Docker engine restarting under a check).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vicflow.flows import expressions, metrics, tracing
from vicflow.flows.blueprint import Blueprint
from vicflow.flows.governance import audit, blast_radius, gate, integrity
from vicflow.flows.governance.policy import Policy
from vicflow.flows.inputs import public
from vicflow.flows.planner import digest, plan_steps
from vicflow.flows.rendering import (
    AttemptStillRunning,
    Unknown,
    call_with_deadline,
)
from vicflow.flows.scheduler import Scheduler
from vicflow.flows.secrets import Secrets
from vicflow.flows.step_setup import prepare_step, step_logger
from vicflow.plugins import masking
from vicflow.plugins.errors import RunCancelled, RunFailed, VicflowError
from vicflow.plugins.step import StepContext, StepError, StepType

# Every event the engine emits (docs/events.md lists them; tests/test_docs.py compares the two).
EVENTS = (
    "vicflow.run.started",
    "vicflow.run.finished",
    "vicflow.step.started",
    "vicflow.step.succeeded",
    "vicflow.step.failed",
    "vicflow.step.skipped",
    "vicflow.step.rollback-started",
    "vicflow.step.rolled-back",
    "vicflow.step.rollback-failed",
    "vicflow.drift.detected",
)
log = logging.getLogger("vicflow.engine")
FAILED = ("failed", "timed_out")  # a step that ended in error
MAX_PARALLEL_STEPS = 16  # the flow's task runner: steps and for_each items running at once


class StepFailed(VicflowError):
    """A step's final error, already masked; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass
class StepRecord:
    id: str
    uses: str
    state: str = "pending"  # pending running completed failed timed_out skipped cached rolled_back
    attempts: int = 0
    started: float | None = None
    finished: float | None = None
    changed: bool | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    params_hash: str | None = None
    items: int = 0
    note: str = ""
    leftovers: list[str] = field(default_factory=list)  # shared by every attempt and the rollback
    keep_completed: bool = False  # its error says not to undo the completed steps (undo_completed = False)

    @property
    def duration(self) -> float:
        return round((self.finished or time.monotonic()) - self.started, 3) if self.started else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uses": self.uses,
            "state": self.state,
            "attempts": self.attempts,
            "duration_s": self.duration,
            "changed": self.changed,
            "outputs": masking.mask(self.outputs),
            "error": self.error,
            "note": self.note,
            "left_behind": masking.mask(list(self.leftovers)),
        }


@dataclass
class Run:
    """Everything one execution of a blueprint knows; tasks find it by ``token``."""

    blueprint: Blueprint
    inputs: dict[str, Any]
    step_types: dict[str, type[StepType]]
    registry: Any
    run_id: str
    event: dict[str, Any] | None = None
    dry_run: bool = False
    folded: dict[str, Any] | None = None  # the events folded into this run (flows/intake.py)
    journal: Any = None  # where the journal is kept: the executor's (FileJournal, PrefectJournal); none in a plan
    previous: dict[str, Any] = field(default_factory=dict)  # resumed run's journal
    records: dict[str, StepRecord] = field(default_factory=dict)
    contexts: dict[str, list[tuple[StepContext, Any]]] = field(default_factory=dict)
    completion_order: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    items: dict[str, list[Any]] = field(default_factory=dict)  # for_each items per step
    rendered: dict[str, list[Any]] = field(default_factory=dict)  # parameters per item, rendered once
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    lock: threading.Lock = field(default_factory=threading.Lock)
    executor: Any = None  # PrefectSteps or ThreadSteps
    error: str | None = None  # why the run failed: ${{ run.error }} in on_error and finally steps
    failed_step: str | None = None
    state: str = "running"
    outputs: dict[str, Any] = field(default_factory=dict)  # the blueprint's outputs: (masked), at the end
    pre_approved: bool = False  # vicflow run --approve: every approval gate is approved in advance
    tried: set[tuple[str, int | None]] = field(default_factory=set)  # (step, item) attempted: another is a retry
    cancelled: str | None = None  # why an approval gate (or the policy) cancelled the run
    policy: Policy | None = None  # the run's policy (vicflow run --policy, the deployment's policy parameter)
    outcome: dict[str, Any] | None = None  # what the policy said of the run's plan (Outcome.to_dict)

    def context(self, item: Any = None, planning: bool = False) -> dict[str, Any]:
        """What expressions see; ``planning``: the outputs of steps not yet run are Unknown (as in a dry run)."""
        steps: dict[str, Any] = {}
        for sid, rec in self.records.items():
            steps[sid] = {"state": rec.state, "changed": rec.changed}
            if rec.state in ("completed", "cached"):
                steps[sid]["outputs"] = rec.outputs
            elif self.dry_run or planning:
                steps[sid]["outputs"] = Unknown(f"steps.{sid}.outputs")

        def failed() -> bool:  # asked only by an if: that calls a status function
            return self.failed_step is not None or any(r.state in FAILED for r in self.records.values())

        ctx = {
            "inputs": self.inputs,
            "steps": steps,
            "secrets": Secrets(),
            "event": self.event or {},
            "run": {"error": self.error, "failed_step": self.failed_step},
            "success": lambda: not failed(),
            "failure": failed,
            "always": lambda: True,
        }
        if item is not None:
            ctx["item"] = item
        return ctx

    def emit(self, name: str, step: str | None = None, payload: dict[str, Any] | None = None) -> None:
        """A Prefect event plus the ``on_run_event`` hook; payloads are masked."""
        if name not in EVENTS:
            raise ValueError(f"event {name!r} is not declared: add it to engine.EVENTS and docs/events.md")
        payload = masking.mask(payload or {})
        bp = self.blueprint.name
        resource = {
            "prefect.resource.id": f"vicflow.blueprint.{bp}" + (f".step.{step}" if step else ""),
            "prefect.resource.name": step or bp,
            "vicflow.blueprint": bp,
        }
        if step:
            resource["vicflow.step"] = step
            resource["vicflow.step-type"] = self.records[step].uses
        try:
            self.executor.event(name, resource, payload)
        except Exception as exc:  # events are observability, never a reason to fail a run
            log.debug("could not emit %s: %s", name, exc)
        self.registry.emit({"event": name, "blueprint": bp, "run_id": self.run_id, "step": step, "payload": payload})

    def save_journal(self) -> None:
        if not self.journal:
            return
        data = {
            "blueprint": self.blueprint.name,
            "path": self.blueprint.path,
            "state": self.state,
            "outputs": self.outputs,  # masked; a parent's `on: pool` step reads them
            "steps": {
                # masked: the journal is stored outside the run (a resumed step's outputs keep the mask)
                sid: {"state": r.state, "params_hash": r.params_hash, "outputs": masking.mask(r.outputs)}
                for sid, r in self.records.items()
            },
        }
        self.journal.save(self.run_id, integrity.seal_journal(data))  # a tampered journal is refused on resume


_RUNS: dict[str, Run] = {}


# --------------------------------------------------------------------------------------------- steps


@tracing.attempt
def step_task(token: str, step_id: str, item_index: int | None = None) -> dict[str, Any]:
    """The body of every step's Prefect task: one attempt of one step (or of one for_each item)."""
    run = _RUNS[token]
    step = run.blueprint.step(step_id)
    record = run.records[step_id]
    with run.lock:
        record.attempts += 1
        attempt = record.attempts
        retry = (step_id, item_index) in run.tried
        run.tried.add((step_id, item_index))
    if retry:
        metrics.retried(record.uses)
    item = run.items[step_id][item_index] if item_index is not None else None
    try:
        step_type, params, ctx = prepare_step(run, step_id, item, run.rendered[step_id][item_index or 0])
        ctx.attempt = attempt
        if step.timeout_seconds:
            ctx.deadline = time.monotonic() + step.timeout_seconds
        outputs = call_with_deadline(lambda: step_type.apply(params, ctx), step.timeout_seconds) or {}
    except BaseException as exc:
        transient = not isinstance(exc, AttemptStillRunning) and (
            isinstance(exc, TimeoutError)
            or (isinstance(exc, Exception) and run.blueprint.step_type(step_id, run.step_types).is_transient(exc))
        )
        message = masking.mask(f"{type(exc).__name__}: {exc}" if not isinstance(exc, StepError) else str(exc))
        with run.lock:
            record.error = message
            if isinstance(exc, TimeoutError):
                record.note = "timed out"
            record.keep_completed = getattr(exc, "undo_completed", True) is False  # e.g. the engine restarted
        raise StepFailed(message, transient) from None
    with run.lock:
        run.contexts.setdefault(step_id, []).append((ctx, params))
        if not ctx.changed:
            record.changed = bool(record.changed)
        else:
            record.changed = True
    missing = [name for name in run.blueprint.step_type(step_id, run.step_types).outputs if name not in outputs]
    if missing:
        ctx.logger.warning("step %s did not return declared outputs %s", step_id, missing)
    return outputs


@tracing.rollback
def rollback_task(token: str, step_id: str) -> str:
    """Undo one step; retried like the step itself when the failure is transient (a cut connection)."""
    run = _RUNS[token]
    step_type = run.blueprint.step_type(step_id, run.step_types)()
    contexts = run.contexts.get(step_id, [])
    while contexts:
        ctx, params = contexts[-1]
        ctx.logger = step_logger(step_id)
        try:
            step_type.rollback(params, ctx)
        except Exception as exc:
            raise StepFailed(masking.mask(f"{type(exc).__name__}: {exc}"), step_type.is_transient(exc)) from None
        contexts.pop()  # done: a retry of this task does not undo it twice
    return f"rolled back {step_id}"


# --------------------------------------------------------------------------------------------- run


def execute(
    blueprint: Blueprint,
    inputs: dict[str, Any],
    registry,
    run_id: str,
    *,
    dry_run: bool = False,
    resume: str | None = None,
    event: dict[str, Any] | None = None,
    approve: bool = False,
    policy: str | None = None,
    executor: Callable[[Run], Any],
    folded: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or plan) ``blueprint``; returns the summary, raises RunFailed when a step failed for good.

    ``inputs`` are the values ``inputs.prepare`` gives (rendered and typed). ``executor`` makes the run's
    executor: ``prefect_adapter.PrefectSteps`` (inside a flow run: each step a task run) or ``ThreadSteps``
    (a plain thread pool, no Prefect). ``policy``: a directory of Rego files judging the plan before any step
    applies (flows/governance/gate.py)."""
    masking.install_log_filter()
    run = Run(blueprint, inputs, registry.step_types, registry, run_id, event=event, dry_run=dry_run, folded=folded)
    run.pre_approved = approve
    run.policy = Policy(policy) if policy else None  # a policy that does not load stops the run here
    run.records = {s.id: StepRecord(s.id, s.uses) for s in blueprint.all_steps}
    _RUNS[run.token] = run
    tracing.run_started(run)  # one trace from the event (its traceparent) through every step's calls
    run.executor = executor(run)
    started = time.monotonic()
    try:
        if not dry_run:
            run.journal = run.executor.journal
            if resume:
                run.previous = _resumed(run, resume)
        run.emit("vicflow.run.started", payload={"inputs": public(blueprint, inputs), "event": event})
        if dry_run:
            plan = plan_steps(run)
            changes = [row for row in plan if row["action"] != "none"]
            if changes:  # what a scheduled plan (the drift-check deployment) is for
                run.emit("vicflow.drift.detected", payload={"changes": changes, "count": len(changes)})
            summary = _summary(run, "planned", started)
            summary["plan"] = plan
            summary.update(_governed(run, plan))
            run.executor.publish(summary)
            return summary
        metrics.run_started(event)
        stopped = gate.check(run, run.policy) if run.policy else None  # the policy judges the whole plan first
        if stopped:
            state, run.cancelled = stopped
            _not_run(run, blueprint.all_steps, f"not started: {state} before any step applied")
        else:
            failure = _schedule(run, blueprint.steps)
            # an approval said no: nothing behind its gate ran, so nothing is undone or run after
            state = "cancelled" if run.cancelled else _final_state(run, _after_steps(run, failure))
        left = _release(run)
        summary = _summary(run, state, started)
        run.state = state
        metrics.run_ended(blueprint.name, state)
        if run.cancelled:
            summary["error"] = run.cancelled
        else:
            summary["outputs"] = run.outputs = _run_outputs(run)
        summary["left_behind"] = masking.mask(left)
        run.save_journal()
        run.executor.publish(summary)
        if state in ("cancelled", "denied"):
            raise RunCancelled(masking.mask(summary))
        if state == "failed":
            raise RunFailed(masking.mask(summary))  # Prefect pickles it into its result storage
        return summary
    finally:
        _RUNS.pop(run.token, None)
        tracing.run_ended(run)
        _release(run)
        run.executor.close()


def _resumed(run: Run, ref: str) -> dict[str, Any]:
    """The steps of the journal of run ``ref``, once its seal shows it was not edited; the resume is audited."""
    journal = run.journal.load(ref)
    integrity.check_journal(journal, ref)
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


def _release(run: Run) -> list[str]:
    """Close the run's shared resources (e.g. log out of vSphere) once; returns what stays open."""
    left: list[str] = []
    resources, run.resources = dict(run.resources), {}
    for resource in resources.values():
        try:
            left += resource.close() or []
        except Exception as exc:
            log.warning("could not release %s: %s", type(resource).__name__, exc)
            left.append(f"{type(resource).__name__}: {exc}")
    return left


def _summary(run: Run, state: str, started: float) -> dict[str, Any]:
    return {
        "blueprint": run.blueprint.name,
        "run_id": run.run_id,
        "state": state,
        "duration_s": round(time.monotonic() - started, 3),
        "event": masking.mask(run.event),
        **({"folded": run.folded} if run.folded else {}),
        "steps": [run.records[s.id].row() for s in run.blueprint.all_steps],
    }


def _run_outputs(run: Run) -> dict[str, Any]:
    """The blueprint's ``outputs:``, rendered from what the steps gave. One whose step did not complete is
    null, and the log says why."""
    values: dict[str, Any] = {}
    for name, value in run.blueprint.outputs.items():
        try:
            values[name] = expressions.render(value, run.context())
        except expressions.ExpressionError as exc:
            values[name] = None
            log.warning("output %s is not known: %s", name, masking.mask(str(exc)))
    return masking.mask(values)


def _schedule(run: Run, steps: list) -> str | None:
    """Run ``steps`` (one section: steps, on_error or finally) with the run's executor; the id of a step that
    failed for good. How many run at once is bounded by the executor (``MAX_PARALLEL_STEPS``) and each
    for_each's ``max_parallel``."""
    return Scheduler(run, run.executor, steps).run() if steps else None


def _after_steps(run: Run, failure: str | None) -> str | None:
    """After steps: the rollback and on_error: when a step failed for good, then finally:; the step that
    failed for good, if one did."""
    if failure:
        # every step that failed counts, not only the first: parallel checks fail together when the engine restarts
        keeping = [record for record in run.records.values() if record.keep_completed]
        if keeping:
            for record in keeping:
                record.note = "nothing rolled back: the failure is not the deployment's"
        elif run.blueprint.step(failure).on_failure == "rollback":
            _rollback(run)
        run.failed_step, run.error = failure, run.records[failure].error
        failure = _schedule(run, run.blueprint.on_error) or failure
    else:
        _not_run(run, run.blueprint.on_error)
    return _schedule(run, run.blueprint.finally_) or failure  # finally: whatever happened


def _not_run(run: Run, steps: list, why: str = "on_error: the run did not fail") -> None:
    for step in steps:
        run.records[step.id].state, run.records[step.id].note = "skipped", why


def _final_state(run: Run, failure: str | None) -> str:
    """failed; completed with failures (a step with on_failure: continue failed); or completed."""
    if failure:
        return "failed"
    if any(record.state in FAILED for record in run.records.values()):
        return "completed with failures"
    return "completed"


def _rollback(run: Run, undo: Callable[[str], tuple[bool, str]] | None = None) -> None:
    """Undo the completed steps that can roll back, newest first; a failed undo is reported, not fatal.
    ``undo``: how one step is undone (default: the run's executor; a finished child run's: flows/child_runs.py)."""
    undo = undo or run.executor.rollback
    for step_id in reversed(run.completion_order):
        record = run.records[step_id]
        if not run.blueprint.step_type(step_id, run.step_types).can_rollback() or record.state != "completed":
            continue
        run.emit("vicflow.step.rollback-started", step_id)
        undone, message = undo(step_id)
        metrics.rolled_back(record.uses, undone)
        if undone:
            record.state = "rolled_back"
            run.emit("vicflow.step.rolled-back", step_id)
        else:
            record.note = masking.mask(f"rollback failed: {message}")
            run.emit("vicflow.step.rollback-failed", step_id, {"error": record.note})
