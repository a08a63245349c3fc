"""The scheduler: starts each step once every step it needs has finished (a graphlib sorter), fans a
``for_each`` out under its ``max_parallel``, and settles each step's final state.

It imports no Prefect module. An executor runs one step (one item) with its retries and says how it ended;
the Prefect adapter's executor makes each a task run (``prefect_adapter.PrefectSteps``).
"""

from __future__ import annotations

import queue
import re
import time
from typing import Any, Protocol

from vicflow.flows import expressions, metrics, planner, tracing
from vicflow.flows.blueprint import dependencies
from vicflow.flows.governance import gate
from vicflow.flows.rendering import call_with_deadline, for_each_items, item_label, located, params_digest, truthy
from vicflow.plugins import dag, masking
from vicflow.plugins.errors import StepError

STATUS_RE = re.compile(r"\b(always|failure)\s*\(")


def runs_after_failure(step: Any) -> bool:
    """A step whose if: calls always() or failure() runs after a failure, and when what it needs did not
    complete; any other if: is success() and (the default)."""
    return isinstance(step.if_, str) and STATUS_RE.search(step.if_) is not None


class Executor(Protocol):
    """Runs steps for the scheduler."""

    def submit(self, step_id: str, index: int | None, label: str) -> Any:
        """Start one step (or one for_each item) with its retries; returns a future with
        ``add_done_callback(fn)``."""

    def outcome(self, future: Any) -> tuple[bool, Any, str]:
        """How a finished future ended: (completed, outputs, message when it did not)."""

    def skip(self, step_id: str, reason: str) -> None:
        """Record a step that does not run (its ``if:`` is false, it was resumed, what it needs failed)."""

    def approve(self, step_id: str, approval: Any, rows: list[dict[str, Any]], digest: str) -> tuple[str, str, str]:
        """Show the plan ``rows`` (hash ``digest``) and wait for a human: ("approved" | "rejected" |
        "timed out", the comment or why, who answered)."""


class Scheduler:
    """One run's scheduling state; ``run()`` returns the id of a step that failed for good, or None."""

    def __init__(self, run: Any, executor: Executor, steps: list[Any]):
        self.run_, self.executor, self.steps = run, executor, steps
        ids = {s.id for s in steps}  # a section's steps wait for each other; earlier sections have finished
        self.deps = {s.id: [d for d in dependencies(s) if d in ids] for s in steps}
        self.sorter, self.position = dag.in_given_order(self.deps)
        self.started: set[str] = set()
        self.done: queue.Queue = queue.Queue()
        self.in_flight: dict[str, int] = {}  # step id -> running items
        self.backlog: dict[str, list[int]] = {}  # step id -> for_each items not yet submitted
        self.item_outputs: dict[str, dict[int, dict]] = {}
        self.failure: str | None = None

    def run(self) -> str | None:
        while True:
            # a step that finishes at once (skipped, cached, failed to render) makes the next ones ready
            while ready := sorted(self.sorter.get_ready(), key=self.position.__getitem__):
                for step_id in ready:
                    step = self.run_.blueprint.step(step_id)
                    if self.failure is not None and (self.run_.cancelled or not runs_after_failure(step)):
                        self.sorter.done(step_id)  # not started; what comes after it may be if: always()
                        continue
                    self.started.add(step_id)
                    self._start(step_id)
                    if self.run_.records[step_id].state == "failed":
                        self._failed_for_good(step_id)
            if not self.in_flight:
                break
            self._settle(*self.done.get())
        for step in self.steps:
            if step.id not in self.started:
                self.run_.records[step.id].note = "not started: an earlier step failed"
        return self.failure

    # ------------------------------------------------------------------------------------------ starting

    def _start(self, step_id: str) -> None:
        run, step = self.run_, self.run_.blueprint.step(step_id)
        record = run.records[step_id]
        record.started = time.monotonic()
        blocked = [d for d in self.deps[step_id] if run.records[d].state not in ("completed", "cached")]
        if blocked and not runs_after_failure(step):
            return self._skip(step_id, "skipped", f"needs {', '.join(blocked)}, which did not complete")
        try:
            prepared = self._render(step)
            if prepared is None:
                return self._skip(step_id, "skipped", f"if: {step.if_} was false")
            items, rendered = prepared
            run.rendered[step_id] = rendered  # the task validates these; secrets are resolved once
            record.params_hash = params_digest(rendered)
            previous = run.previous.get(step_id) or {}
            if previous.get("state") in ("completed", "cached") and previous.get("params_hash") == record.params_hash:
                record.outputs = previous.get("outputs", {})
                return self._skip(step_id, "cached", "completed in the resumed run with the same inputs")
        except Exception as exc:
            record.error = masking.mask(str(exc))
            return self._finish(step_id, "failed")
        if step.approval is not None and not self._approved(step_id, step):
            return None
        record.state = "running"
        tracing.step_started(run, step_id)
        run.emit("vicflow.step.started", step_id, {"uses": step.uses})
        run.items[step_id] = items if step.for_each is not None else [None]
        if step.for_each is None:
            return self._submit(step_id, None)
        record.items = len(items)
        self.item_outputs[step_id] = {}
        self.backlog[step_id] = list(range(len(items)))
        if not items:
            return self._finish(step_id, "completed", "for_each produced no items")
        for _ in range(min(step.max_parallel, len(items))):
            self._submit(step_id, self.backlog[step_id].pop(0))

    def _approved(self, step_id: str, step: Any) -> bool:
        """The approval gate: the plan of the step and of what depends on it, approved by a human, and still
        the same plan when the answer comes; otherwise the run is cancelled (or the step fails)."""
        run = self.run_
        section = planner.behind(run, step_id, self.steps)
        rows = planner.plan_rows(run, section, record=False)
        approved = planner.digest(rows, run.outcome)  # the policy's outcome, with one, is part of what is approved
        with metrics.approval_waiting(run.blueprint.name):
            decision, why, who = self.executor.approve(step_id, step.approval, rows, approved)
        gate.record(run, step_id, decision, who, approved, why)
        if decision != "approved":
            run.cancelled = f"the approval of step {step_id!r} was {decision}" + (f" ({why})" if why else "")
            self.failure = step_id
            self._finish(step_id, "cancelled", run.cancelled)
            return False
        again = planner.plan_rows(run, section, record=False)
        if planner.digest(again, run.outcome) != approved:
            now = planner.digest(again, run.outcome)
            run.records[step_id].error = masking.mask(
                f"the plan changed since approval ({approved} -> {now}): {planner.diff(rows, again)}"
            )
            self._finish(step_id, "failed")
            self._failed_for_good(step_id)
            return False
        run.records[step_id].note = f"approved plan {approved}" + (f" ({why})" if why else "")
        return True

    def _render(self, step: Any) -> tuple[list[Any], list[Any]] | None:
        """if:, for_each and with:, rendered within the step's deadline; None when if: is false."""
        run, context = self.run_, self.run_.context()

        def render() -> tuple[list[Any], list[Any]] | None:
            with located(run.blueprint, step, "if"):
                if step.if_ is not None and not truthy(step.if_, context):
                    return None
            with located(run.blueprint, step, "for_each"):
                items = for_each_items(step, context)
            with located(run.blueprint, step, "with"):
                return items, [expressions.render(step.with_, run.context(item)) for item in items]

        try:  # a slow expression meets the step's deadline like the step itself
            return call_with_deadline(render, step.timeout_seconds)
        except TimeoutError:
            raise StepError(
                f"rendering the step's expressions did not finish within timeout_seconds={step.timeout_seconds:g}",
                "simplify the expressions in if:, for_each or with:",
            ) from None

    def _submit(self, step_id: str, index: int | None) -> None:
        label = step_id if index is None else f"{step_id}[{item_label(self.run_.items[step_id][index])}]"
        future = self.executor.submit(step_id, index, label)
        self.in_flight[step_id] = self.in_flight.get(step_id, 0) + 1
        future.add_done_callback(lambda f, s=step_id, i=index: self.done.put((s, i, f)))

    # ------------------------------------------------------------------------------------------ settling

    def _settle(self, step_id: str, index: int | None, future: Any) -> None:
        """One submitted step (or item) ended: record it, submit the next item, or finish the step."""
        self.in_flight[step_id] -= 1
        if not self.in_flight[step_id]:
            del self.in_flight[step_id]
        record = self.run_.records[step_id]
        completed, outputs, message = self.executor.outcome(future)
        if completed:
            if index is None:
                record.outputs = outputs
            else:
                self.item_outputs[step_id][index] = outputs
        else:
            record.error = record.error or masking.mask(message or "failed")
            self.backlog.pop(step_id, None)
            if record.state == "running":
                record.state = "timed_out" if record.note == "timed out" else "failed"
        if record.state == "running" and self.backlog.get(step_id) and self.failure is None:
            self._submit(step_id, self.backlog[step_id].pop(0))
        elif step_id not in self.in_flight and record.state in ("running", "failed", "timed_out"):
            if record.state != "running":
                self._finish(step_id, record.state)
                self._failed_for_good(step_id)
                return
            if index is not None:
                collected = self.item_outputs[step_id]
                names = {k for out in collected.values() for k in out}
                record.outputs = {n: [collected[i].get(n) for i in sorted(collected)] for n in names}
            self._finish(step_id, "completed")

    def _failed_for_good(self, step_id: str) -> None:
        if self.run_.blueprint.step(step_id).on_failure != "continue":
            self.failure = self.failure or step_id

    def _skip(self, step_id: str, state: str, reason: str) -> None:
        self.executor.skip(step_id, "resumed" if state == "cached" else reason)
        self._finish(step_id, state, reason)

    def _finish(self, step_id: str, state: str, note: str = "") -> None:
        run = self.run_
        record = run.records[step_id]
        record.state, record.finished = state, time.monotonic()
        if note:
            record.note = note
        if state in ("completed", "cached"):
            run.completion_order.append(step_id)
        if record.attempts and state in ("completed", "failed", "timed_out"):  # it ran (not skipped nor resumed)
            metrics.step_ended(record.uses, state, record.duration)
        tracing.step_ended(run, step_id)
        event = {"completed": "succeeded", "cached": "succeeded", "skipped": "skipped", "cancelled": "skipped"}.get(
            state, "failed"
        )
        payload = {"state": state, "attempts": record.attempts, "duration_s": record.duration}
        run.emit(f"vicflow.step.{event}", step_id, {**payload, "outputs": record.outputs, "error": record.error})
        run.save_journal()
        self.sorter.done(step_id)
