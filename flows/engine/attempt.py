"""One attempt of a step (or of one ``for_each`` item), and one undo: what an executor runs.

An attempt validates the step's rendered parameters, builds its context, and calls ``apply()`` under the
step's deadline, even when the step's code blocks. A failure is recorded on the run (masked) and raised as
``AttemptFailed``, which says whether another attempt may help (``retry.worth_retrying``); the executor retries
it or reports it. An undo calls the step's ``rollback()`` for every attempt that completed, newest first.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from vicflow.flows.engine.retry import worth_retrying
from vicflow.flows.language import expressions
from vicflow.flows.observability import tracing
from vicflow.plugins import masking
from vicflow.plugins.errors import AttemptFailed, AttemptStillRunning, StepError
from vicflow.plugins.paths import BASE_DIR
from vicflow.plugins.step import StepContext, StepType

if TYPE_CHECKING:
    from vicflow.flows.engine.run import Run

TIMEOUT_GRACE_SECONDS = 30.0  # how long a timed-out attempt may take to stop before its retry


@tracing.attempt  # a vicflow.attempt span, under its step's whichever thread runs it
def apply_step(run: Run, step_id: str, index: int | None) -> dict[str, Any]:
    """One attempt of step ``step_id`` (of its item ``index``); its outputs. Raises AttemptFailed."""
    step = run.blueprint.step(step_id)
    number = run.attempt_started(step_id, index)
    item = run.items[step_id][index] if index is not None else None
    try:
        step_type, params, ctx = prepare_step(run, step_id, item, run.rendered[step_id][index or 0])
        ctx.attempt = number
        if step.timeout_seconds:
            ctx.deadline = time.monotonic() + step.timeout_seconds
        outputs = call_with_deadline(lambda: step_type.apply(params, ctx), step.timeout_seconds) or {}
    except BaseException as exc:
        failed = AttemptFailed(_message(exc), worth_retrying(exc, run.step_type(step_id)))
        keep_completed = getattr(exc, "undo_completed", True) is False  # e.g. the Docker engine restarted
        run.attempt_failed(step_id, str(failed), isinstance(exc, TimeoutError), keep_completed)
        raise failed from None
    run.attempt_succeeded(step_id, ctx, params)
    missing = [name for name in run.step_type(step_id).outputs if name not in outputs]
    if missing:
        ctx.logger.warning("step %s did not return declared outputs %s", step_id, missing)
    return outputs


@tracing.rollback
def undo_step(run: Run, step_id: str) -> str:
    """Undo what the step's completed attempts did, newest first; a retry does not undo one twice. Raises
    AttemptFailed (transient when a retry may help: a cut connection)."""
    step_type = run.step_type(step_id)()
    contexts = run.contexts.get(step_id, [])
    while contexts:
        ctx, params = contexts[-1]
        ctx.logger = step_logger(step_id)
        try:
            step_type.rollback(params, ctx)
        except Exception as exc:
            raise AttemptFailed(_message(exc), worth_retrying(exc, type(step_type))) from None
        contexts.pop()
    return f"rolled back {step_id}"


def _message(exc: BaseException) -> str:
    """What the run's summary says of a failed attempt, masked: a StepError says it with its hint; anything
    else is named by its type."""
    if isinstance(exc, StepError):
        return masking.mask(str(exc))
    return masking.mask(f"{type(exc).__name__}: {exc}")


def prepare_step(run: Run, step_id: str, item: Any, rendered: Any = None) -> tuple[StepType, Any, StepContext]:
    """Validate a step's parameters (rendered here unless the scheduler already did) and build its context."""
    step = run.blueprint.step(step_id)
    step_type = run.step_type(step_id)
    if rendered is None:
        rendered = expressions.render(step.with_, run.context(item))
    base_dir = str(Path(run.blueprint.path or ".").resolve().parent)
    try:  # BlueprintFile parameters are resolved against the blueprint's folder
        params = step_type.Params.model_validate(rendered, context={BASE_DIR: base_dir})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise StepError(
            f"invalid parameters after rendering: {problems}",
            "check the values the expressions produced (vicflow plan shows them)",
        ) from None
    ctx = StepContext(
        step_id=step_id,
        run_id=run.run_id,
        blueprint=run.blueprint.name,
        logger=step_logger(step_id),
        resources=run.resources,
        dry_run=run.dry_run,
        base_dir=base_dir,
        leftovers=run.records[step_id].leftovers,
    )
    return step_type(), params, ctx


def step_logger(step_id: str) -> logging.Logger | logging.LoggerAdapter:
    """The Prefect task run's logger inside a task run, else the step's own logger."""
    if "prefect" not in sys.modules:  # no Prefect in this process (a plan here): no run logger to find
        return logging.getLogger(f"vicflow.step.{step_id}")
    from prefect import get_run_logger  # Prefect is already imported (checked above): costs nothing

    try:
        return get_run_logger()
    except Exception:  # not in a task or flow run
        return logging.getLogger(f"vicflow.step.{step_id}")


def call_with_deadline(fn, timeout: float | None):
    """Run ``fn`` with a deadline even when it blocks: the caller stops waiting when it passes."""
    if timeout is None:
        return fn()
    box: dict[str, Any] = {}
    ctx = contextvars.copy_context()

    def target():
        try:
            box["value"] = ctx.run(fn)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True, name="vicflow-step")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        # a step that honours ctx.deadline stops soon after it; one that does not would run beside its retry
        worker.join(min(TIMEOUT_GRACE_SECONDS, timeout))
        if worker.is_alive():
            raise AttemptStillRunning(
                f"did not finish within timeout_seconds={timeout:g} and is still running; it is not retried "
                "while it runs (a second attempt would run beside it)"
            )
        raise TimeoutError(f"did not finish within timeout_seconds={timeout:g}")
    if "error" in box:
        raise box["error"]
    return box["value"]
