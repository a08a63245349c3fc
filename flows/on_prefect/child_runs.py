"""A fleet step's children on Prefect: a subflow of the step's task run, or a flow run on the work pool.

A child on the pool is a flow run of the ``run-blueprint`` deployment (``VICFLOW_FLEET_DEPLOYMENT``), started with
``run_deployment`` and read back from Prefect (its journal holds its state and masked outputs). Planning and
undoing a child that ran here are the engine's (child_runs.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from logging import Logger, LoggerAdapter
from typing import Any

from prefect.deployments import run_deployment
from vicflow.flows.engine.child_runs import ChildRuns, child_run
from vicflow.flows.language.fleet import ChildRun
from vicflow.flows.language.spec import Blueprint
from vicflow.flows.on_prefect import journal as prefect_journal
from vicflow.plugins.errors import StepError

DEPLOYMENT_ENV = "VICFLOW_FLEET_DEPLOYMENT"
DEFAULT_DEPLOYMENT = "run-blueprint/run-blueprint"


class PrefectChildRuns(ChildRuns):
    """``subflow(child, inputs, registry)`` runs a child as a Prefect subflow and returns its summary."""

    def __init__(self, registry: Any, subflow: Callable[[Blueprint, dict[str, Any], Any], dict[str, Any]]):
        super().__init__(registry, threads=None)
        self.subflow = subflow

    def run(self, child: Blueprint, inputs: dict[str, Any]) -> dict[str, Any]:
        return self.subflow(child, inputs, self.registry)

    def on_pool(self, ref: str, inputs: dict[str, Any], logger: Logger | LoggerAdapter) -> ChildRun:
        """A child flow run through the deployment, on whichever worker takes it; waits for its end."""
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
        error = None
        if not (state and state.is_completed()):
            error = state.message if state else "no state"
        return child_run(
            {
                "run_id": run_id,
                "state": journal.get("state") or (str(state.name).lower() if state else "unknown"),
                "outputs": journal.get("outputs") or {},
                "steps": [{"id": sid, **row} for sid, row in journal.get("steps", {}).items()],
                "error": error,
            }
        )
