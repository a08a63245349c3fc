"""The executor without Prefect: steps on a thread pool, retried by the step's RetryPolicy.

``vicflow plan`` (no ``--record``) and the engine's behaviour tests run on it; ``vicflow run`` uses the Prefect
adapter. A fleet step's children run on thread executors of their own (child_runs.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vicflow.flows.engine.attempt import apply_step, undo_step
from vicflow.flows.engine.child_runs import ChildRuns
from vicflow.flows.engine.execution import MAX_PARALLEL_STEPS
from vicflow.flows.engine.journal import FileJournal
from vicflow.flows.engine.retry import RetryPolicy
from vicflow.flows.engine.run import Run
from vicflow.flows.governance import audit
from vicflow.plugins.errors import AttemptFailed

log = logging.getLogger("vicflow.engine")


class ThreadSteps:
    """An executor without Prefect: a thread pool, the step's RetryPolicy in a loop, nothing published."""

    def __init__(self, run: Run):
        self.run = run
        self.journal = FileJournal()
        self.children = ChildRuns(run.registry, ThreadSteps)
        self.pool = ThreadPoolExecutor(MAX_PARALLEL_STEPS, thread_name_prefix="vicflow-step")

    def _retried(self, body: Callable[[], Any], step_id: str) -> Any:
        policy = RetryPolicy.of(self.run.blueprint.step(step_id))
        attempts = 0
        while True:
            attempts += 1
            try:
                return body()
            except AttemptFailed as exc:
                wait = policy.wait_before_retry(exc, attempts)
                if wait is None:
                    raise
                time.sleep(wait)

    def submit(self, step_id: str, index: int | None, label: str):
        return self.pool.submit(self._retried, lambda: apply_step(self.run, step_id, index), step_id)

    def outcome(self, future) -> tuple[bool, Any, str]:
        error = future.exception()
        if error is None:
            return True, future.result(), ""
        return False, None, str(error)

    def skip(self, step_id: str, reason: str) -> None:
        log.info("step %s not run: %s", step_id, reason)

    def rollback(self, step_id: str) -> tuple[bool, str]:
        try:
            self._retried(lambda: undo_step(self.run, step_id), step_id)
        except AttemptFailed as exc:
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
        if not self.journal.flush(timeout=10):
            log.warning(
                "run %s: its journal is not saved yet; a resume of it may run again steps that completed",
                self.run.run_id,
            )
