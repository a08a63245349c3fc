"""One run of a blueprint: what it knows, the record of each of its steps, and the transitions of a step's state.

A step goes ``pending`` -> ``running`` -> ``completed`` (or ``failed`` / ``timed_out``), and a completed one may
be ``rolled_back``; one that never runs ends ``skipped``, ``cached`` (resumed) or ``cancelled`` (an approval said
no), and a planned one ``planned``. The transitions are the methods of ``Run`` (``start``, ``finish``, ``skip``,
``reuse``, ``fail``, ``cancel``, ``roll_back``, ``planned``), and only they write a step's state: each one also
emits the step's event and saves the resume journal, as Prefect's task engine owns a task run's states. The
scheduler decides which transition comes next; an executor only runs attempts and says how they ended.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from vicflow.flows.language import expressions
from vicflow.flows.language.rendering import Unknown
from vicflow.flows.language.secrets import Secrets
from vicflow.flows.language.spec import Blueprint
from vicflow.flows.observability import metrics, tracing
from vicflow.plugins import masking
from vicflow.plugins.step import StepContext, StepType

if TYPE_CHECKING:
    from vicflow.flows.governance.policy import Policy

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


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CACHED = "cached"  # completed in the resumed run with the same inputs: not run again
    SKIPPED = "skipped"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"  # an approval gate said no, or no answer came
    ROLLED_BACK = "rolled_back"
    PLANNED = "planned"  # a dry run called its plan()

    @property
    def succeeded(self) -> bool:
        """Its outputs are known: the steps that need it may run."""
        return self in SUCCEEDED

    @property
    def failed(self) -> bool:
        return self in FAILED


# as sets, for the loops over every step that each rendering of an expression makes (Run.context)
SUCCEEDED = frozenset({StepState.COMPLETED, StepState.CACHED})
FAILED = frozenset({StepState.FAILED, StepState.TIMED_OUT})
RAN = frozenset({StepState.COMPLETED, *FAILED})  # the final states of a step that ran: its duration is measured


# the event each final state announces
_EVENT_OF = {
    StepState.COMPLETED: "vicflow.step.succeeded",
    StepState.CACHED: "vicflow.step.succeeded",
    StepState.SKIPPED: "vicflow.step.skipped",
    StepState.CANCELLED: "vicflow.step.skipped",
    StepState.FAILED: "vicflow.step.failed",
    StepState.TIMED_OUT: "vicflow.step.failed",
}


class RunState(StrEnum):
    RUNNING = "running"
    PLANNED = "planned"
    COMPLETED = "completed"
    COMPLETED_WITH_FAILURES = "completed with failures"  # a step with on_failure: continue failed
    FAILED = "failed"
    CANCELLED = "cancelled"  # an approval said no, or none came
    DENIED = "denied"  # the run's policy denied its plan: no step started

    @property
    def succeeded(self) -> bool:
        return self in (RunState.COMPLETED, RunState.COMPLETED_WITH_FAILURES)


@dataclass
class StepRecord:
    """What one step did in this run. Its ``state`` is written by the run's transitions only."""

    id: str
    uses: str
    state: StepState = StepState.PENDING
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
    timed_out: bool = False  # its last attempt ran out of time
    keep_completed: bool = False  # its error says not to undo the completed steps (undo_completed = False)

    @property
    def duration(self) -> float:
        if not self.started:
            return 0.0
        return round((self.finished or time.monotonic()) - self.started, 3)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uses": self.uses,
            "state": self.state.value,
            "attempts": self.attempts,
            "duration_s": self.duration,
            "changed": self.changed,
            "outputs": masking.mask(self.outputs),
            "error": self.error,
            "note": self.note,
            "left_behind": masking.mask(list(self.leftovers)),
        }


# The runs made in this context (a fleet step's children): the step that started them undoes them later.
_collecting: contextvars.ContextVar[list[Run] | None] = contextvars.ContextVar("vicflow_runs_made", default=None)


@contextmanager
def collecting_runs() -> Iterator[list[Run]]:
    """The runs made while the block runs (in this thread, or in a subflow it calls)."""
    made: list[Run] = []
    token = _collecting.set(made)
    try:
        yield made
    finally:
        _collecting.reset(token)


@dataclass
class Run:
    """Everything one execution of a blueprint knows, and the only writer of its steps' states."""

    blueprint: Blueprint
    inputs: dict[str, Any]
    registry: Any
    run_id: str
    event: dict[str, Any] | None = None
    dry_run: bool = False
    pre_approved: bool = False  # vicflow run --approve: every approval gate is approved in advance
    journal: Any = None  # where the journal is kept: the executor's (FileJournal, PrefectJournal); none in a plan
    previous: dict[str, Any] = field(default_factory=dict)  # resumed run's journal
    records: dict[str, StepRecord] = field(default_factory=dict)
    contexts: dict[str, list[tuple[StepContext, Any]]] = field(default_factory=dict)  # what rollback undoes
    completion_order: list[str] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)
    items: dict[str, list[Any]] = field(default_factory=dict)  # for_each items per step
    rendered: dict[str, list[Any]] = field(default_factory=dict)  # parameters per item, rendered once
    lock: threading.Lock = field(default_factory=threading.Lock)
    executor: Any = None  # the Executor (executor.py) that runs its attempts
    spans: Any = None  # its open trace spans while tracing is on (tracing.py sets and ends them)
    error: str | None = None  # why the run failed: ${{ run.error }} in on_error and finally steps
    failed_step: str | None = None
    state: RunState = RunState.RUNNING
    outputs: dict[str, Any] = field(default_factory=dict)  # the blueprint's outputs: (masked), at the end
    cancelled: str | None = None  # why an approval gate (or the policy) cancelled the run
    folded: dict[str, Any] | None = None  # the events folded into this run (flows/events/intake.py)
    policy: Policy | None = None  # the run's policy (vicflow run --policy, the deployment's policy parameter)
    outcome: dict[str, Any] | None = None  # what the policy said of the run's plan (Outcome.to_dict)
    tried: set[tuple[str, int | None]] = field(default_factory=set)  # (step, item) attempted: another is a retry
    unsaved: set[str] = field(default_factory=set)  # steps whose journal entry changed since the journal was saved
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # each step's journal entry, as last saved
    masked_with: int = -1  # how many secrets masking knew when the entries were masked

    def __post_init__(self) -> None:
        self.records = {s.id: StepRecord(s.id, s.uses) for s in self.blueprint.all_steps}
        self.unsaved = set(self.records)
        self.entries = dict.fromkeys(self.records, {})  # in the records' order, as the journal lists them
        made = _collecting.get()
        if made is not None:
            made.append(self)

    @property
    def step_types(self) -> dict[str, type[StepType]]:
        return self.registry.step_types

    def step_type(self, step_id: str) -> type[StepType]:
        return self.blueprint.step_type(step_id, self.registry.step_types)

    # ------------------------------------------------------------------------------- what expressions see

    def context(self, item: Any = None, planning: bool = False) -> dict[str, Any]:
        """What expressions see; ``planning``: the outputs of steps not yet run are Unknown (as in a dry run)."""
        steps: dict[str, Any] = {}
        for sid, rec in self.records.items():
            steps[sid] = {"state": rec.state._value_, "changed": rec.changed}
            if rec.state in SUCCEEDED:
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

    # ------------------------------------------------------------------------------- a step's transitions

    def start(self, step_id: str, since: float) -> None:
        """pending -> running: its attempts are about to be submitted (``since``: when it was picked up)."""
        record = self._moving(step_id, StepState.PENDING)
        record.started, record.state = since, StepState.RUNNING
        tracing.step_started(self, step_id)
        self.emit("vicflow.step.started", step_id, {"uses": record.uses})

    def finish(self, step_id: str, outputs: dict[str, Any], note: str = "") -> None:
        """running -> completed."""
        record = self._moving(step_id, StepState.RUNNING)
        record.outputs = outputs
        self._end(record, StepState.COMPLETED, note)

    def skip(self, step_id: str, reason: str, since: float) -> None:
        """pending -> skipped: its ``if:`` is false, or what it needs did not complete."""
        record = self._moving(step_id, StepState.PENDING)
        record.started = since
        self._end(record, StepState.SKIPPED, reason)

    def reuse(self, step_id: str, outputs: dict[str, Any], since: float) -> None:
        """pending -> cached: it completed in the resumed run with the same inputs; its outputs are taken."""
        record = self._moving(step_id, StepState.PENDING)
        record.started, record.outputs = since, outputs
        self._end(record, StepState.CACHED, "completed in the resumed run with the same inputs")

    def fail(self, step_id: str, error: str, since: float | None = None) -> None:
        """pending or running -> failed (timed_out when its last attempt ran out of time). ``error`` is kept
        unless an attempt already said why (masked)."""
        record = self.records[step_id]
        if record.state not in (StepState.PENDING, StepState.RUNNING):
            raise RuntimeError(f"step {step_id} cannot fail from {record.state}")
        self.unsaved.add(step_id)
        record.started = record.started or since
        record.error = record.error or masking.mask(error or "failed")
        self._end(record, StepState.TIMED_OUT if record.timed_out else StepState.FAILED, "")

    def cancel(self, step_id: str, reason: str, since: float) -> None:
        """pending -> cancelled: its approval gate said no, or no answer came; the run is cancelled with it."""
        record = self._moving(step_id, StepState.PENDING)
        record.started, self.cancelled = since, reason
        self._end(record, StepState.CANCELLED, reason)

    def leave_out(self, step_id: str, reason: str) -> None:
        """pending -> skipped, quietly: a step of a section that does not run (on_error when nothing failed)."""
        record = self._moving(step_id, StepState.PENDING)
        record.state, record.note = StepState.SKIPPED, reason

    def stop(self, state: RunState, reason: str) -> None:
        """Before any step: the run ends ``state`` (denied, or cancelled when the approval the policy asked for
        was not given), and every step is skipped, saying why."""
        self.state, self.cancelled = state, reason
        for step in self.blueprint.all_steps:
            self.leave_out(step.id, f"not started: {state.value} before any step applied")

    def keep_completed(self) -> bool:
        """Whether the completed steps stay: any step that failed for good said not to undo them
        (``undo_completed`` False); each such step's note says so."""
        keeping = [record for record in self.records.values() if record.keep_completed]
        for record in keeping:
            record.note = "nothing rolled back: the failure is not the deployment's"
        return bool(keeping)

    def planned(self, step_id: str, since: float, error: str | None) -> None:
        """pending -> planned (a dry run called its plan()), or failed when it could not be planned."""
        record = self._moving(step_id, StepState.PENDING)
        record.started, record.finished = since, time.monotonic()
        if error:
            record.state, record.error = StepState.FAILED, error
        else:
            record.state = StepState.PLANNED

    def roll_back(self, undo: Callable[[str], tuple[bool, str]] | None = None) -> None:
        """completed -> rolled_back, newest first, for the steps that can roll back; a failed undo is reported
        (its note and an event), not fatal. ``undo``: how one step is undone (default: the run's executor)."""
        undo = undo or self.executor.rollback
        for step_id in reversed(self.completion_order):
            record = self.records[step_id]
            if record.state != StepState.COMPLETED or not self.step_type(step_id).can_rollback():
                continue
            self.emit("vicflow.step.rollback-started", step_id)
            undone, message = undo(step_id)
            metrics.rolled_back(record.uses, undone)
            if undone:
                record.state = StepState.ROLLED_BACK
                self.unsaved.add(step_id)
                self.emit("vicflow.step.rolled-back", step_id)
            else:
                record.note = masking.mask(f"rollback failed: {message}")
                self.emit("vicflow.step.rollback-failed", step_id, {"error": record.note})

    def _moving(self, step_id: str, expected: StepState) -> StepRecord:
        record = self.records[step_id]
        if record.state != expected:
            raise RuntimeError(f"step {step_id} is {record.state}, not {expected}")
        self.unsaved.add(step_id)  # a transition: its journal entry changes
        return record

    def _end(self, record: StepRecord, state: StepState, note: str) -> None:
        record.state, record.finished = state, time.monotonic()
        if note:
            record.note = note
        if state.succeeded:
            self.completion_order.append(record.id)
        if record.attempts and state in RAN:  # it ran (not skipped, resumed nor cancelled)
            metrics.step_ended(record.uses, state.value, record.duration)
        tracing.step_ended(self, record.id)
        payload = {"state": state.value, "attempts": record.attempts, "duration_s": record.duration}
        self.emit(_EVENT_OF[state], record.id, {**payload, "outputs": record.outputs, "error": record.error})
        self.save_journal()

    # ------------------------------------------------------------------------------- an attempt's outcome

    def attempt_started(self, step_id: str, index: int | None = None) -> int:
        """Count one more attempt of the step (or of its item ``index``); its number. A second attempt of the
        same step or item is a retry (flows/observability/metrics.py counts it)."""
        with self.lock:
            record = self.records[step_id]
            record.attempts += 1
            number, retry = record.attempts, (step_id, index) in self.tried
            self.tried.add((step_id, index))
        if retry:
            metrics.retried(record.uses)
        return number

    def attempt_succeeded(self, step_id: str, ctx: StepContext, params: Any) -> None:
        """Keep what the rollback will need, and whether the attempt changed anything."""
        with self.lock:
            self.contexts.setdefault(step_id, []).append((ctx, params))
            record = self.records[step_id]
            record.changed = bool(record.changed) or ctx.changed

    def attempt_failed(self, step_id: str, error: str, timed_out: bool, keep_completed: bool) -> None:
        """``error`` is masked; ``keep_completed``: the error says not to undo the completed steps."""
        with self.lock:
            record = self.records[step_id]
            record.error, record.timed_out = error, timed_out
            if timed_out:
                record.note = "timed out"
            record.keep_completed = keep_completed

    # ------------------------------------------------------------------------------- the run as a whole

    def emit(self, name: str, step: str | None = None, payload: dict[str, Any] | None = None) -> None:
        """A Prefect event (through the executor) plus the ``on_run_event`` hook; payloads are masked."""
        if name not in EVENTS:
            raise ValueError(f"event {name!r} is not declared: add it to run.EVENTS and docs/events.md")
        payload = masking.mask(payload or {})
        bp = self.blueprint.name
        resource = {
            "prefect.resource.id": f"vicflow.blueprint.{bp}",
            "prefect.resource.name": bp,
            "vicflow.blueprint": bp,
        }
        if step:
            resource["prefect.resource.id"] += f".step.{step}"
            resource["prefect.resource.name"] = step
            resource["vicflow.step"] = step
            resource["vicflow.step-type"] = self.records[step].uses
        try:
            self.executor.event(name, resource, payload)
        except Exception as exc:  # events are observability, never a reason to fail a run
            log.debug("could not emit %s: %s", name, exc)
        self.registry.emit({"event": name, "blueprint": bp, "run_id": self.run_id, "step": step, "payload": payload})

    def save_journal(self) -> None:
        """Save the journal (sealed): the entries of the steps whose state changed since the last save are made
        again (all of them once masking knows a new secret), and the seal is brought up to date for them."""
        if not self.journal:
            return
        if masking.known() != self.masked_with:
            self.masked_with, self.unsaved = masking.known(), set(self.records)
        changed, self.unsaved = self.unsaved, set()
        for sid in changed:
            r = self.records[sid]
            # masked: the journal is stored outside the run (a resumed step's outputs keep the mask)
            entry = {"state": r.state.value, "params_hash": r.params_hash, "outputs": masking.mask(r.outputs)}
            self.entries[sid] = entry
        data = {
            "blueprint": self.blueprint.name,
            "path": self.blueprint.path,
            "state": self.state.value,
            "outputs": self.outputs,  # masked; a parent's `on: pool` step reads them
            "steps": dict(self.entries),
        }
        self.journal.save(self.run_id, data, changed)

    def render_outputs(self) -> dict[str, Any]:
        """The blueprint's ``outputs:``, rendered from what the steps gave (masked). One whose step did not
        complete is null, and the log says why."""
        values: dict[str, Any] = {}
        for name, value in self.blueprint.outputs.items():
            try:
                values[name] = expressions.render(value, self.context())
            except expressions.ExpressionError as exc:
                values[name] = None
                log.warning("output %s is not known: %s", name, masking.mask(str(exc)))
        return masking.mask(values)

    def summary(self, started: float) -> dict[str, Any]:
        return {
            "blueprint": self.blueprint.name,
            "run_id": self.run_id,
            "state": self.state.value,
            "duration_s": round(time.monotonic() - started, 3),
            "event": masking.mask(self.event),
            **({"folded": self.folded} if self.folded else {}),
            "steps": [self.records[s.id].row() for s in self.blueprint.all_steps],
        }

    def release(self) -> list[str]:
        """Close the run's shared resources (e.g. log out of vSphere) once; returns what stays open."""
        left: list[str] = []
        resources, self.resources = dict(self.resources), {}
        for resource in resources.values():
            try:
                left += resource.close() or []
            except Exception as exc:
                log.warning("could not release %s: %s", type(resource).__name__, exc)
                left.append(f"{type(resource).__name__}: {exc}")
        return left
