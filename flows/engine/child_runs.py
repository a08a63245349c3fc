"""A fleet step's children (``uses: blueprint:NAME``, fleet.py) in this process: run, planned and undone.

Every run has a ``ChildRunner`` in its resources (key ``fleet.RUNNER``), given by its executor. This one runs a
child on a thread executor of its own; the Prefect flow's (on_prefect/child_runs.py) runs it as a subflow of the
step's task run, or on the work pool. The finished runs of children that ran here are kept, for the step's
rollback, until the parent run ends (``close``, called when the parent releases its resources).
"""

from __future__ import annotations

import uuid
from logging import Logger, LoggerAdapter
from typing import Any

from vicflow.flows.engine import planner
from vicflow.flows.engine.attempt import undo_step
from vicflow.flows.engine.execution import execute
from vicflow.flows.engine.run import Run, RunState, collecting_runs
from vicflow.flows.language.fleet import RUNNER, ChildRun
from vicflow.flows.language.inputs import prepare
from vicflow.flows.language.spec import Blueprint
from vicflow.plugins.errors import AttemptFailed, RunFailed, StepError


class ChildRuns:
    """The ChildRunner of a run without Prefect: a child runs on ``threads`` (the thread executor's class,
    passed in: it makes this object)."""

    def __init__(self, registry: Any, threads: Any):
        self.registry, self.threads = registry, threads
        self.kept: dict[str, Run] = {}  # child run id -> its finished run, for its rollback

    def here(self, child: Blueprint, inputs: dict[str, Any]) -> ChildRun:
        with collecting_runs() as made:
            try:
                summary = self.run(child, inputs)
            except RunFailed as exc:  # RunCancelled too
                summary = exc.summary
        outcome = child_run(summary)
        for run in made:
            if run.run_id == outcome.run_id and outcome.succeeded:
                self.kept[run.run_id] = run
        return outcome

    def run(self, child: Blueprint, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run the child to its end; its summary."""
        values = prepare(child, inputs=inputs).values
        return execute(child, values, self.registry, str(uuid.uuid4()), executor=self.threads)

    def on_pool(self, ref: str, inputs: dict[str, Any], logger: Logger | LoggerAdapter) -> ChildRun:
        raise StepError(
            f"blueprint {ref} is to run on the work pool (on: pool), and this run has no Prefect",
            "run the parent with vicflow run or a deployment, or drop on: pool",
        )

    def plan(self, child: Blueprint, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """The child's own plan rows, planned here (nothing is changed, nothing is recorded)."""
        run = Run(child, prepare(child, inputs=inputs).values, self.registry, "plan", dry_run=True)
        run.resources[RUNNER] = self  # a child that runs blueprints of its own plans them too
        try:
            return planner.plan_rows(run, [*child.steps, *child.finally_], record=False)
        finally:
            run.resources.pop(RUNNER)
            run.release()

    def undo(self, run_id: str) -> list[str]:
        """Roll back the completed steps of a child that ran here (newest first); what could not be undone."""
        run = self.kept.pop(run_id, None)
        if run is None:
            return [f"child run {run_id} is not known to this run; it is not undone"]

        def undo(step_id: str) -> tuple[bool, str]:  # in this thread: the child's executor has ended
            try:
                undo_step(run, step_id)
                return True, ""
            except AttemptFailed as exc:
                return False, str(exc)

        run.roll_back(undo)
        failed = [
            f"{run.blueprint.name}.{sid}: {r.note}" for sid, r in run.records.items() if r.note.startswith("rollback")
        ]
        return failed + run.release()  # with the sessions the rollback opened

    def close(self) -> list[str]:
        self.kept.clear()  # the parent run is over: its children are no longer undone through it
        return []


def child_run(summary: dict[str, Any]) -> ChildRun:
    """How a child ended, from its summary (or its journal's, for a child on the pool)."""
    state = summary.get("state") or "unknown"
    succeeded = state in (RunState.COMPLETED, RunState.COMPLETED_WITH_FAILURES)
    why = ""
    if not succeeded:
        why = summary.get("error") or _failed_steps(summary)
    return ChildRun(
        run_id=summary["run_id"],
        state=state,
        succeeded=succeeded,
        outputs=summary.get("outputs") or {},
        changed=any(row.get("changed") for row in summary.get("steps", [])),
        why=why,
    )


def _failed_steps(summary: dict[str, Any]) -> str:
    failed = [f"{row['id']}: {row['error']}" for row in summary.get("steps", []) if row.get("error")]
    return "; ".join(failed) or "no step error recorded"
