"""Run one step type directly (no Prefect), the way the engine would: validate params, apply, rollback."""

from __future__ import annotations

import logging
from pathlib import Path

from vicflow.plugins.step import StepContext

REPO = Path(__file__).resolve().parents[1]


def context(step_id: str = "step", base_dir: str | Path = REPO / "blueprints", **kwargs) -> StepContext:
    return StepContext(
        step_id, "test-run", "test", logging.getLogger(f"vicflow.test.{step_id}"), base_dir=str(base_dir), **kwargs
    )


def apply(step_type, ctx: StepContext | None = None, **params):
    """Returns (outputs, ctx)."""
    ctx = ctx or context()
    step = step_type()
    return step.apply(step_type.Params.model_validate(params), ctx), ctx


def plan(step_type, ctx: StepContext | None = None, **params):
    step = step_type()
    return step.plan(step_type.Params.model_validate(params), ctx or context())


def rollback(step_type, ctx: StepContext, **params) -> None:
    step_type().rollback(step_type.Params.model_validate(params), ctx)
