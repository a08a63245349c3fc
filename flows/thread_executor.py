"""The executor without Prefect: steps on a thread pool, with their own retries.

``vicflow plan`` (no ``--record``) and the engine's behaviour tests run on it; ``vicflow run`` uses the Prefect
adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vicflow.flows import child_runs, fleet
from vicflow.flows.engine import MAX_PARALLEL_STEPS, Run, StepFailed, log, rollback_task, step_task
from vicflow.flows.governance import audit
from vicflow.flows.journal import FileJournal
from vicflow.flows.retry import delays


class ThreadSteps:
    """An executor without Prefect: a thread pool, the step's own retries (same delays, same transient
    test), nothing published.  The engine's behaviour tests run on it; ``vicflow`` runs use PrefectSteps."""

    def __init__(self, run: Run):
        self.run = run
        self.journal = FileJournal()
        child_runs.made(run)  # a fleet step's child run that ran here is kept for that step's rollback
        run.resources.setdefault(fleet.RUNNER, child_runs.ChildRuns(threads=ThreadSteps))
        self.pool = ThreadPoolExecutor(MAX_PARALLEL_STEPS, thread_name_prefix="vicflow-step")

    def _retried(self, body: Callable[[], Any], step_id: str) -> Any:
        step = self.run.blueprint.step(step_id)
        waits = delays(step.retry_delay_seconds, step.retries)
        for attempt in range(step.retries + 1):
            try:
                return body()
            except StepFailed as exc:
                if not exc.transient or attempt == step.retries:
                    raise
                time.sleep(waits[attempt])
        raise AssertionError("unreachable")

    def submit(self, step_id: str, index: int | None, label: str):
        return self.pool.submit(self._retried, lambda: step_task(self.run.token, step_id, index), step_id)

    def outcome(self, future) -> tuple[bool, Any, str]:
        error = future.exception()
        return (True, future.result(), "") if error is None else (False, None, str(error))

    def skip(self, step_id: str, reason: str) -> None:
        log.info("step %s not run: %s", step_id, reason)

    def rollback(self, step_id: str) -> tuple[bool, str]:
        try:
            self._retried(lambda: rollback_task(self.run.token, step_id), step_id)
        except StepFailed as exc:
            return False, str(exc)
        return True, ""

    def approve(self, step_id: str, approval: Any, rows: list[dict[str, Any]], digest: str) -> tuple[str, str, str]:
        """No Prefect, so no one to ask: approved only in advance (``--approve``)."""
        if self.run.pre_approved:
            log.info("step %s: plan %s approved in advance (--approve)", step_id, digest)
            return "approved", "--approve", audit.this_process()
        return "rejected", "approval needs a Prefect run to pause, or --approve", "vicflow"

    def publish(self, summary: dict[str, Any]) -> None:
        pass  # no Prefect: the summary is the return value

    def event(self, name: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        pass  # plugins' on_run_event hooks still see every event

    def close(self) -> None:
        self.pool.shutdown(wait=False)
