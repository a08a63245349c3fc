"""``vicflow deploy``: one deployment per shipped blueprint, whose run form in the Prefect UI is that
blueprint's own inputs (types, descriptions, defaults, enums, required fields, secrets as password fields).

prefect.yaml keeps the operator's generic ``run-blueprint`` and the event and schedule deployments, and
``prefect deploy --all`` keeps working; these per-blueprint forms are made through Prefect's public API
(``Flow.to_deployment`` and ``RunnerDeployment.apply``), because prefect.yaml cannot give a deployment a
parameter schema other than its flow's."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.deployments.runner import EntrypointType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language import shipped
from vicflow.flows.on_prefect.flow import run_blueprint

JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean", "list": "array"}


def input_schema(document: bp.Blueprint) -> dict[str, Any]:
    """The JSON Schema of a blueprint's inputs, as the run form shows them."""
    properties: dict[str, Any] = {}
    required = []
    for position, (name, spec) in enumerate(document.inputs.items()):
        field: dict[str, Any] = {"title": name, "description": spec.description or spec.type, "position": position}
        if spec.type == "secret":  # masked in the form; a value may also be ${{ secrets.name }}
            field.update(type="string", format="password", writeOnly=True)
        elif spec.type == "object":
            field["type"] = "object"
        else:
            field["type"] = JSON_TYPES[spec.type]
        if spec.enum is not None:
            field["enum"] = spec.enum
        if spec.default is not None:
            field["default"] = spec.default
        if spec.is_required and spec.default is None:
            required.append(name)
        properties[name] = field
    schema: dict[str, Any] = {"title": f"{document.name} inputs", "type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def blueprints_to_deploy(refs: list[str] | None) -> dict[str, tuple[str, Path]]:
    """Deployment name -> (the flow's ``blueprint`` parameter, its file): every shipped blueprint, or the
    ``refs`` given (shipped names or files; a file is passed by its absolute path, so every worker needs it
    at that path)."""
    known = shipped.shipped()
    if not refs:
        return {name: (name, path) for name, path in known.items()}
    chosen = {}
    for ref in refs:
        path = shipped.resolve(ref)
        if known.get(path.stem) == path:
            chosen[path.stem] = (path.stem, path)
        else:
            chosen[bp.load(path).name] = (str(path.resolve()), path)
    return chosen


def deploy(pool: str, names: list[str] | None = None) -> dict[str, str]:
    """Create or update ``form-<blueprint>`` for each shipped blueprint (or those ``names``); name -> id."""
    made = {}
    for name, (parameter, path) in blueprints_to_deploy(names).items():
        document = bp.load(path)
        deployment: Any = run_blueprint.to_deployment(  # the sync form (Prefect types it as maybe a coroutine)
            name=f"form-{name}",
            description=f"{document.description or name}: a run form made of this blueprint's inputs",
            parameters={"blueprint": parameter},
            work_pool_name=pool,
            entrypoint_type=EntrypointType.MODULE_PATH,  # a worker imports vicflow; no source to pull
            job_variables={"command": "vicflow-engine"},  # forked from `vicflow worker`'s preloaded process
            tags=["vicflow", f"blueprint:{name}"],
        )
        schema = deployment._parameter_openapi_schema
        schema.properties["blueprint"].update(readOnly=True, enum=[parameter], default=parameter)
        schema.properties["inputs"] = {**input_schema(document), "position": 1}
        if any(spec.is_required and spec.default is None for spec in document.inputs.values()):
            schema.required = sorted({*(schema.required or []), "inputs"})
        made[f"run-blueprint/form-{name}"] = str(deployment.apply(work_pool_name=pool))
    return made


UNRESPONSIVE = "vicflow: mark unresponsive runs Crashed"


def crash_unresponsive_runs(within_seconds: int) -> str:
    """Create or update the automation that marks a flow run Crashed when its heartbeats stop for
    ``within_seconds`` (its worker's host died): Prefect's documented zombie detection. Workers must send
    heartbeats more often than that (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, at least 30 s). A Crashed run is
    resumed with ``resume: <its id>`` on any worker (docs/scale-out.md)."""

    ended = [f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")]
    automation = AutomationCore(
        name=UNRESPONSIVE,
        description=f"no heartbeat for {within_seconds}s: the run's worker or host is gone; resume it elsewhere",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *ended},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within_seconds}s (its worker is gone); resume it: resume=<this run's id>",
            )
        ],
    )
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(UNRESPONSIVE)
        if existing:
            client.update_automation(existing[0].id, automation)
            return str(existing[0].id)
        return str(client.create_automation(automation))
