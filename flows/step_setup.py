"""A step's parameters and context, as its apply(), plan() and rollback() get them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from vicflow.flows import expressions
from vicflow.plugins.paths import BASE_DIR
from vicflow.plugins.step import StepContext, StepError, StepType

if TYPE_CHECKING:
    from vicflow.flows.engine import Run


def prepare_step(run: Run, step_id: str, item: Any, rendered: Any = None) -> tuple[StepType, Any, StepContext]:
    """Validate a step's parameters (rendered here unless the scheduler already did) and build its context."""
    step = run.blueprint.step(step_id)
    step_type = run.blueprint.step_type(step_id, run.step_types)
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
    logger = step_logger(step_id)
    ctx = StepContext(
        step_id=step_id,
        run_id=run.run_id,
        blueprint=run.blueprint.name,
        logger=logger,
        resources=run.resources,
        dry_run=run.dry_run,
        base_dir=base_dir,
        leftovers=run.records[step_id].leftovers,
    )
    return step_type(), params, ctx


def step_logger(step_id: str):
    if "prefect" not in sys.modules:  # no Prefect in this process (a plan here): no run logger to find
        return logging.getLogger(f"vicflow.step.{step_id}")
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:
        return logging.getLogger(f"vicflow.step.{step_id}")
