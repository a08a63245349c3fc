"""The scheduler: starts each step once every step it needs has finished (a graphlib sorter), fans a
``for_each`` out under its ``max_parallel``, and settles each step's final state.

It imports no Prefect module. It decides which transition of the run comes next (run.py writes the states);
an executor runs one step (one item) with its retries and says how it ended (executor.py).
"""

from __future__ import annotations

import queue
import re
import time
from typing import Any

from vicflow.flows.engine import gate, planner
from vicflow.flows.engine.attempt import call_with_deadline
from vicflow.flows.engine.executor import Executor
from vicflow.flows.engine.run import Run
from vicflow.flows.language import expressions
from vicflow.flows.language.rendering import for_each_items, item_label, located, params_digest, truthy
from vicflow.flows.language.spec import dependencies
from vicflow.flows.observability import metrics
from vicflow.plugins import dag, masking
from vicflow.plugins.errors import StepError

STATUS_RE = re.compile(r"\b(always|failure)\s*\(")


def runs_after_failure(step: Any) -> bool:
    """A step whose if: calls always() or failure() runs after a failure, and when what it needs did not
    complete; any other if: is success() and (the default)."""
    return isinstance(step.if_, str) and STATUS_RE.search(step.if_) is not None


class Scheduler:
    """One section's scheduling (steps, on_error or finally); ``run()`` returns the id of a step that failed for
    good, or None."""

    def __init__(self, run: Run, executor: Executor, steps: list[Any]):
        self.run_, self.executor, self.steps = run, executor, steps
        ids = {s.id for s in steps}  # a section's steps wait for each other; earlier sections have finished
        self.deps = {s.id: [d for d in dependencies(s) if d in ids] for s in steps}
        self.sorter, self.position = dag.in_given_order(self.deps)
        self.started: set[str] = set()
        self.done: queue.Queue = queue.Queue()
        self.in_flight: dict[str, int] = {}  # step id -> running items
        self.backlog: dict[str, list[int]] = {}  # step id -> for_each items not yet submitted
        self.item_outputs: dict[str, dict[int, dict]] = {}
        self.failing: dict[str, str] = {}  # step id -> why, for a step whose items still run after one failed
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
            if not self.in_flight:
                break
            self._settle(*self.done.get())
        for step in self.steps:
            if step.id not in self.started:
                self.run_.records[step.id].note = "not started: an earlier step failed"
        return self.failure

    # ------------------------------------------------------------------------------------------ starting

    def _start(self, step_id: str) -> None:
        run, step, picked = self.run_, self.run_.blueprint.step(step_id), time.monotonic()
        blocked = [d for d in self.deps[step_id] if not run.records[d].state.succeeded]
        if blocked and not runs_after_failure(step):
            return self._skipped(step_id, f"needs {', '.join(blocked)}, which did not complete", picked)
        try:
            prepared = self._render(step)
        except Exception as exc:
            run.fail(step_id, masking.mask(str(exc)), since=picked)
            return self._ended(step_id, failed=True)
        if prepared is None:
            return self._skipped(step_id, f"if: {step.if_} was false", picked)
        items, rendered = prepared
        run.rendered[step_id] = rendered  # the attempts validate these; secrets are resolved once
        record = run.records[step_id]
        record.params_hash = params_digest(rendered)
        previous = run.previous.get(step_id) or {}
        if previous.get("state") in ("completed", "cached") and previous.get("params_hash") == record.params_hash:
            self.executor.skip(step_id, "resumed")
            run.reuse(step_id, previous.get("outputs", {}), picked)
            return self._ended(step_id)
        if step.approval is not None and not self._approved(step_id, step, picked):
            return None
        run.start(step_id, picked)
        if step.for_each is None:
            run.items[step_id] = [None]
            return self._submit(step_id, None)
        run.items[step_id] = items
        record.items = len(items)
        self.item_outputs[step_id] = {}
        self.backlog[step_id] = list(range(len(items)))
        if not items:
            run.finish(step_id, {}, "for_each produced no items")
            return self._ended(step_id)
        for _ in range(min(step.max_parallel, len(items))):
            self._submit(step_id, self.backlog[step_id].pop(0))

    def _approved(self, step_id: str, step: Any, picked: float) -> bool:
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
            reason = f"the approval of step {step_id!r} was {decision}"
            if why:
                reason += f" ({why})"
            self.failure = step_id
            run.cancel(step_id, reason, picked)
            self._ended(step_id)
            return False
        again = planner.plan_rows(run, section, record=False)
        now = planner.digest(again, run.outcome)
        if now != approved:
            change = f"{approved} -> {now}): {planner.diff(rows, again)}"
            run.fail(step_id, masking.mask(f"the plan changed since approval ({change}"), since=picked)
            self._ended(step_id, failed=True)
            return False
        run.records[step_id].note = f"approved plan {approved}"
        if why:
            run.records[step_id].note += f" ({why})"
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
        label = step_id
        if index is not None:
            label = f"{step_id}[{item_label(self.run_.items[step_id][index])}]"
        future = self.executor.submit(step_id, index, label)
        self.in_flight[step_id] = self.in_flight.get(step_id, 0) + 1
        future.add_done_callback(lambda f, s=step_id, i=index: self.done.put((s, i, f)))

    # ------------------------------------------------------------------------------------------ settling

    def _settle(self, step_id: str, index: int | None, future: Any) -> None:
        """One submitted step (or item) ended: keep its outputs, submit the next item, or end the step once
        none of its items runs any more."""
        self.in_flight[step_id] -= 1
        if not self.in_flight[step_id]:
            del self.in_flight[step_id]
        completed, outputs, message = self.executor.outcome(future)
        if not completed:
            self.failing.setdefault(step_id, message)
            self.backlog.pop(step_id, None)
        elif index is None:
            self.item_outputs[step_id] = {0: outputs}
        else:
            self.item_outputs[step_id][index] = outputs
        if step_id not in self.failing and self.backlog.get(step_id) and self.failure is None:
            self._submit(step_id, self.backlog[step_id].pop(0))
        elif step_id not in self.in_flight:
            self._end_step(step_id, index is not None)

    def _end_step(self, step_id: str, fanned_out: bool) -> None:
        if step_id in self.failing:
            self.run_.fail(step_id, self.failing.pop(step_id))
            return self._ended(step_id, failed=True)
        collected = self.item_outputs.pop(step_id, {})
        if fanned_out:  # one list per output, one value per item, in the items' order
            names = {k for out in collected.values() for k in out}
            outputs = {n: [collected[i].get(n) for i in sorted(collected)] for n in names}
        else:
            outputs = collected.get(0, {})
        self.run_.finish(step_id, outputs)
        self._ended(step_id)

    def _skipped(self, step_id: str, reason: str, picked: float) -> None:
        self.executor.skip(step_id, reason)
        self.run_.skip(step_id, reason, picked)
        self._ended(step_id)

    def _ended(self, step_id: str, failed: bool = False) -> None:
        """The step reached its final state: what needs it may start; a failure counts unless it may continue."""
        if failed and self.run_.blueprint.step(step_id).on_failure != "continue":
            self.failure = self.failure or step_id
        self.sorter.done(step_id)
