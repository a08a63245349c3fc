"""Running the child blueprints of a run's fleet steps (flows/fleet.py), and undoing them.

Each run has one ``ChildRuns`` in its resources (key ``fleet.RUNNER``), put there by its executor: the thread
executor runs a child on a thread executor of its own; the Prefect flow runs it as a subflow of the step's
task run (``subflow``). A child on the pool is a flow run of the ``run-blueprint`` deployment
(``VICFLOW_FLEET_DEPLOYMENT``), started with ``run_deployment`` and read back from Prefect (its journal holds
its state and masked outputs). The finished runs of children that ran here are kept, for the step's rollback,
until the parent run ends (``close``, called when the run releases its resources).
"""

from __future__ import annotations

import contextvars
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from logging import Logger
from pathlib import Path
from typing import Any

from vicflow.flows import engine
from vicflow.plugins.errors import StepError

DEPLOYMENT_ENV = "VICFLOW_FLEET_DEPLOYMENT"
DEFAULT_DEPLOYMENT = "run-blueprint/run-blueprint"

# the Run objects the executors of this context make: how a child run started here is found after it ended
_made: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("vicflow_child_runs", default=None)


def made(run: Any) -> None:
    """Called by every executor factory with its run: a child run started by ``ChildRuns.here`` is kept."""
    found = _made.get()
    if found is not None:
        found.append(run)


@contextmanager
def _catching() -> Iterator[list[Any]]:
    found: list[Any] = []
    token = _made.set(found)
    try:
        yield found
    finally:
        _made.reset(token)


class ChildRuns:
    """``subflow(path, inputs)``: run a child here as a Prefect subflow and return its summary; without it a
    child runs on ``threads`` (the thread executor's class, passed in: it makes this object)."""

    def __init__(self, subflow: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None, threads: Any = None):
        self.subflow, self.threads = subflow, threads
        self.kept: dict[str, Any] = {}  # child run id -> its finished engine.Run

    def here(self, path: Path, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        with _catching() as runs:
            try:
                summary = self.subflow(str(path), inputs) if self.subflow else _on_threads(path, inputs, self.threads)
            except (engine.RunFailed, engine.RunCancelled) as exc:
                summary = exc.summary
        for run in runs:
            if run.run_id == summary.get("run_id") and summary.get("state") in ("completed", "completed with failures"):
                self.kept[run.run_id] = run
        return summary["run_id"], summary

    def on_pool(self, ref: str, inputs: dict[str, Any], logger: Logger) -> tuple[str, dict[str, Any]]:
        """A child flow run through the deployment, on whichever worker takes it; waits for its end."""
        from prefect.deployments import run_deployment
        from vicflow.flows import prefect_journal

        name = os.environ.get(DEPLOYMENT_ENV, DEFAULT_DEPLOYMENT)
        flow_run: Any = run_deployment(  # the sync form (Prefect types it as maybe a coroutine)
            name=name,
            parameters={"blueprint": ref, "inputs": inputs, "inputs_from": None},
            timeout=None,
            poll_interval=1,
            as_subflow=True,
        )
        run_id, state = str(flow_run.id), flow_run.state
        try:
            journal = prefect_journal.load(run_id)
        except StepError:
            journal = {}
        logger.info("blueprint %s ran in flow run %s (%s) through %s", ref, run_id, flow_run.name, name)
        return run_id, {
            "run_id": run_id,
            "state": journal.get("state") or (str(state.name).lower() if state else "unknown"),
            "outputs": journal.get("outputs") or {},
            "steps": [{"id": sid, **row} for sid, row in journal.get("steps", {}).items()],
            "error": None if state and state.is_completed() else (state.message if state else "no state"),
        }

    def plan(self, path: Path, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """The child's own plan rows, planned here (nothing is changed, nothing is recorded)."""
        from vicflow.flows import blueprint as bp
        from vicflow.flows import fleet, planner
        from vicflow.flows.inputs import prepare
        from vicflow.plugins.manager import default_registry

        registry = default_registry()
        document = bp.load(path, registry)
        run = engine.Run(document, prepare(document, inputs=inputs).values, registry.step_types, registry, "plan")
        run.dry_run = True
        run.records = {s.id: engine.StepRecord(s.id, s.uses) for s in document.all_steps}
        run.resources[fleet.RUNNER] = self  # a child that runs blueprints of its own plans them too
        try:
            return planner.plan_rows(run, [*document.steps, *document.finally_], record=False)
        finally:
            run.resources.pop(fleet.RUNNER)
            engine._release(run)

    def undo(self, run_id: str) -> list[str]:
        """Roll back the completed steps of a child that ran here (newest first); what could not be undone."""
        run = self.kept.pop(run_id, None)
        if run is None:
            return [f"child run {run_id} is not known to this run; it is not undone"]

        def undo(step_id: str) -> tuple[bool, str]:  # in this thread: the child's executor has ended
            try:
                engine.rollback_task(run.token, step_id)
                return True, ""
            except engine.StepFailed as exc:
                return False, str(exc)

        engine._RUNS[run.token] = run
        try:
            engine._rollback(run, undo)
        finally:
            engine._RUNS.pop(run.token, None)
        failed = [
            f"{run.blueprint.name}.{sid}: {r.note}" for sid, r in run.records.items() if r.note.startswith("rollback")
        ]
        return failed + engine._release(run)  # with the sessions the rollback opened

    def close(self) -> list[str]:
        self.kept.clear()  # the parent run is over: its children are no longer undone through it
        return []


def _on_threads(path: Path, inputs: dict[str, Any], threads: Any) -> dict[str, Any]:
    from vicflow.flows import blueprint as bp
    from vicflow.flows.inputs import prepare
    from vicflow.plugins.manager import default_registry

    registry = default_registry()
    document = bp.load(path, registry)
    values = prepare(document, inputs=inputs).values
    return engine.execute(document, values, registry, str(uuid.uuid4()), executor=threads)
