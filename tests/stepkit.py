"""Run one step type directly (no Prefect), the way the engine would: validate params, apply, rollback."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vicflow.plugins.paths import BASE_DIR
from vicflow.plugins.step import StepContext

REPO = Path(__file__).resolve().parents[1]


def context(step_id: str = "step", base_dir: str | Path = REPO / "blueprints", **kwargs) -> StepContext:
    return StepContext(
        step_id, "test-run", "test", logging.getLogger(f"vicflow.test.{step_id}"), base_dir=str(base_dir), **kwargs
    )


def validated(step_type, params: dict, ctx: StepContext):
    """The step's Params as the engine builds them: file parameters resolved against the blueprint's folder."""
    return step_type.Params.model_validate(params, context={BASE_DIR: ctx.base_dir})


def apply(step_type, ctx: StepContext | None = None, **params):
    """Returns (outputs, ctx)."""
    ctx = ctx or context()
    return step_type().apply(validated(step_type, params, ctx), ctx), ctx


def plan(step_type, ctx: StepContext | None = None, **params):
    ctx = ctx or context()
    return step_type().plan(validated(step_type, params, ctx), ctx)


def rollback(step_type, ctx: StepContext, **params) -> None:
    step_type().rollback(validated(step_type, params, ctx), ctx)


def retrying(step_type, params: dict, retries: int = 2, delay: float = 1.0, **shared) -> tuple[dict | None, list]:
    """Apply as the engine does with ``retries``: a new context per attempt (sharing ``shared``, e.g. the run's
    resources and the step's leftovers), again while the error is transient. Returns (outputs or None, errors)."""
    errors: list[BaseException] = []
    for _ in range(retries + 1):
        try:
            ctx = context(**shared)
            return step_type().apply(validated(step_type, params, ctx), ctx), errors
        except Exception as exc:
            errors.append(exc)
            if not step_type.is_transient(exc):
                break
            time.sleep(delay)
    return None, errors
