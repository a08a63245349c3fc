"""The Prefect flow that prefect.yaml deploys: run one blueprint.

Importing this module has no side effects beyond defining the flow.
"""

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field
from vicflow.flows import blueprint as bp
from vicflow.flows import engine, shipped
from vicflow.plugins.manager import default_registry


@flow(
    name="run-blueprint",
    task_runner=ThreadPoolTaskRunner(max_workers=16),
    persist_result=False,
    validate_parameters=True,
)
def run_blueprint(
    blueprint: str = Field(description="a shipped blueprint (gogs, vch, full-stack, ...) or a path to one"),
    inputs: dict[str, Any] | None = Field(default=None, description="values for the blueprint's inputs"),
    dry_run: bool = Field(default=False, description="only call plan(): show what would change"),
    resume: str | None = Field(default=None, description="flow-run id of an earlier run to resume"),
    event: dict[str, Any] | None = Field(default=None, description="the event that triggered this run"),
) -> dict[str, Any]:
    """Run a vicflow blueprint: every step becomes a task run named after its step id."""
    registry = default_registry()
    document = bp.load(shipped.resolve(blueprint), registry)
    values = bp.resolve_inputs(document, inputs or {})
    run_id = str(flow_run.get_id() or "local")
    return engine.execute(document, values, registry, run_id, dry_run=dry_run, resume=resume, event=event)
