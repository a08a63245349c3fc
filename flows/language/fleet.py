"""Fleet runs: a step that runs another blueprint, ``uses: blueprint:NAME`` (a shipped name or a file beside
the blueprint), with ``with:`` as the child's inputs and the child's ``outputs:`` as the step's outputs.

By default the child is a Prefect subflow in the same process (without Prefect, a run on the thread executor).
With ``on: pool`` it is a child flow run of the ``run-blueprint`` deployment on the work pool
(``run_deployment``), so a ``for_each`` over many sites is spread over the workers. Either way the child holds
its own target's concurrency limit. A child's secret inputs travel as ``${{ secrets.NAME }}`` references,
never as values: the child (on whichever worker) looks them up itself.

Rollback: a child that ran in this process is rolled back step by step (its steps' own rollback, newest
first); one that completed on the pool is reported as left behind (its steps' state lived in that worker's
process). This module is the step type and its checks; running a child is the run's ``ChildRunner``, which
its executor provides (engine/child_runs.py on threads, on_prefect/child_runs.py on Prefect) and the engine puts in the
run's resources: this module imports no engine.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import Logger, LoggerAdapter
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import ConfigDict
from vicflow.flows.language import expressions, shipped
from vicflow.flows.language.secrets import reference_to
from vicflow.plugins import Change, Params, StepContext, StepError, StepType
from vicflow.plugins.errors import BlueprintError

PREFIX = "blueprint:"

RUNNER = "vicflow.child-runs"  # the key of the run's ChildRuns in ctx.resources
MAX_CHILD_DEPTH = 16  # blueprints that run blueprints: a deeper chain is refused (each level is a flow run)


@dataclass
class ChildRun:
    """How a child run ended, as its runner read it."""

    run_id: str
    state: str  # its final state, as its summary says it
    succeeded: bool  # completed, with failures or not
    outputs: dict[str, Any] = field(default_factory=dict)  # the child's outputs: (masked)
    changed: bool = False
    why: str = ""  # why it did not succeed: its error, or its failed steps


class ChildRunner(Protocol):
    """How the engine runs a fleet step's children: the step type's only way to the engine."""

    def plan(self, child: Any, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """The child's own plan rows, planned here (nothing changed, nothing recorded)."""

    def here(self, child: Any, inputs: dict[str, Any]) -> ChildRun:
        """Run the child in this process and wait for its end; kept for its rollback until the parent ends."""

    def on_pool(self, ref: str, inputs: dict[str, Any], logger: Logger | LoggerAdapter) -> ChildRun:
        """Run the child as a flow run on the work pool and wait for its end."""

    def undo(self, run_id: str) -> list[str]:
        """Roll back a child that ran here; what could not be undone."""


class ChildParams(Params):
    """The child's inputs: checked against its ``inputs:`` when the blueprint is validated (language/blueprint.py)."""

    model_config = ConfigDict(extra="allow")


class ChildBlueprint(StepType[ChildParams]):
    """Runs ``child`` (a validated blueprint) as one step. Made per step by ``child_type``."""

    Params = ChildParams
    child: ClassVar[Any]  # the child blueprint, validated
    child_path: ClassVar[Path]
    child_ref: ClassVar[str]  # what a worker resolves: a shipped name, or the file's absolute path
    child_name: ClassVar[str]
    secret_inputs: ClassVar[frozenset[str]]
    on: ClassVar[str] = "process"

    def plan(self, params: ChildParams, ctx: StepContext) -> list[Change]:
        """The child's own plan, each row named ``<child>.<step>`` (planned here, also for ``on: pool``)."""
        rows = _runner(ctx).plan(self.child, self._inputs(params))
        return [
            Change(row["action"], f"{self.child_name}.{row['step']}: {row['target']}", row["detail"]) for row in rows
        ]

    def apply(self, params: ChildParams, ctx: StepContext) -> dict[str, Any]:
        inputs = self._inputs(params)
        runner = _runner(ctx)
        if self.on == "pool":
            child = runner.on_pool(self.child_ref, inputs, ctx.logger)
        else:
            child = runner.here(self.child, inputs)
        ctx.state["child_run"] = child.run_id
        ctx.changed = child.changed
        if not child.succeeded:
            raise StepError(
                f"blueprint {self.child_name} (flow run {child.run_id}) ended {child.state}: {child.why}",
                "its own run shows why (Prefect UI, or vicflow run --resume with that flow run)",
            )
        ctx.logger.info("blueprint %s completed in flow run %s", self.child_name, child.run_id)
        return {**child.outputs, "flow_run": child.run_id, "state": child.state}

    def rollback(self, params: ChildParams, ctx: StepContext) -> None:
        run_id = ctx.state.get("child_run")
        if not run_id:
            return
        if self.on == "pool":
            ctx.leftovers.append(
                f"blueprint {self.child_name} completed in flow run {run_id} on the work pool and is not undone "
                "(its steps ran in another worker's process): undo it there, or run its teardown"
            )
            return
        ctx.leftovers.extend(_runner(ctx).undo(run_id))

    def _inputs(self, params: ChildParams) -> dict[str, Any]:
        """The rendered ``with:``; a secret input as the ``${{ secrets.NAME }}`` it was read from."""
        values = dict(params.model_extra or {})
        for name in self.secret_inputs & values.keys():
            reference = reference_to(values[name])
            if reference is None:
                raise StepError(
                    f"input {name!r} of blueprint {self.child_name} is a secret, and its value did not come from "
                    "${{ secrets.NAME }}",
                    f"give it as {name}: ${{{{ secrets.NAME }}}} (a Prefect Secret block or VICFLOW_SECRET_NAME): "
                    "a child run gets references to secrets, never their values",
                )
            values[name] = reference
        return values


def child_type(step_id: str, ref: str, on: str, child: Any) -> type[ChildBlueprint]:
    """The step type of one ``uses: blueprint:...`` step (``child``: the validated child blueprint)."""
    path = Path(child.path)
    shipped_path = shipped.shipped().get(path.stem)
    worker_ref = path.stem if shipped_path is not None and shipped_path.resolve() == path.resolve() else str(path)
    return type(
        f"Blueprint_{child.name.replace('-', '_')}_{step_id}",
        (ChildBlueprint,),
        {
            "__doc__": f"runs blueprint {child.name} ({ref})",
            "child": child,
            "child_path": path,
            "child_ref": worker_ref,
            "child_name": child.name,
            "secret_inputs": frozenset(n for n, spec in child.inputs.items() if spec.type == "secret"),
            "on": on,
            "outputs": {
                **{name: f"the output {name} of blueprint {child.name}" for name in child.outputs},
                "flow_run": "the child's flow-run id",
                "state": "the child's final state",
            },
        },
    )


def resolve(ref: str, parent: str | None) -> Path:
    """``gogs`` (shipped) or ``sites/a.yaml`` (beside the parent blueprint). A path the system cannot follow (a
    symlink loop, a name too long) is a BlueprintError, as a missing one is."""
    try:
        if ref.endswith((".yaml", ".yml")) and parent:
            beside = (Path(parent).resolve().parent / ref).resolve()
            if beside.is_file():
                return beside
        return shipped.resolve(ref).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: Path.resolve() in a symlink loop
        raise BlueprintError(f"cannot follow {ref[:200]!r}: {getattr(exc, 'strerror', None) or exc}") from None


def child_rows(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run summary's child runs, one row each (a for_each step's outputs are lists, one value per item)."""
    rows = []
    for step in steps:
        outputs = step.get("outputs") or {}
        if "flow_run" not in outputs:
            continue
        runs = outputs["flow_run"] if isinstance(outputs["flow_run"], list) else [outputs["flow_run"]]
        for index, run_id in enumerate(runs):
            values = {k: (v[index] if isinstance(v, list) and len(v) == len(runs) else v) for k, v in outputs.items()}
            state = values.pop("state", None)
            values.pop("flow_run", None)
            rows.append(
                {"step": step["id"], "item": index, "flow_run": run_id, "state": state, "outputs": json.dumps(values)}
            )
    return rows


def _runner(ctx: StepContext) -> ChildRunner:
    runner = ctx.resources.get(RUNNER)
    if runner is None:
        raise StepError("a step that runs a blueprint needs vicflow's engine", "run the blueprint with vicflow run")
    return runner


_loading: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("vicflow_loading", default=())


def check_children(blueprint: Any, out: Any, registry: Any, load: Callable[..., Any]) -> None:
    """Each ``uses: blueprint:REF`` step: the child exists and is valid (and does not run itself), its
    ``with:`` names only the child's inputs and gives every required one, and ``on:`` is on such steps only.
    ``load`` is blueprint.load (passed in: the blueprint module calls this one)."""

    for step in blueprint.all_steps:
        base = step._where
        if not step.uses.startswith(PREFIX):
            if step.on != "process":
                out.add((*base, "on"), "on: pool is for steps that run a blueprint", "uses: blueprint:NAME", step.id)
            continue
        ref = step.uses[len(PREFIX) :]
        try:
            path = resolve(ref, blueprint.path)
        except BlueprintError as exc:
            why = "" if exc.problems else f" ({exc})"
            out.add(
                (*base, "uses"),
                f"no blueprint {ref[:200]!r}{why}",
                "a shipped name (vicflow plugins) or a file beside this one",
                step.id,
            )
            continue
        chain = _loading.get()
        if len(chain) >= MAX_CHILD_DEPTH:
            out.add(
                (*base, "uses"),
                f"blueprints run blueprints more than {MAX_CHILD_DEPTH} levels deep",
                "flatten the chain: a child may run children, but not without end",
                step.id,
            )
            continue
        if str(path) in chain or str(path) == str(Path(blueprint.path or "").resolve()):
            out.add(
                (*base, "uses"),
                f"blueprint {ref} runs itself (through {' -> '.join(Path(p).stem for p in chain) or 'this step'})",
                "a blueprint cannot run itself, even through another",
                step.id,
            )
            continue
        token = _loading.set((*chain, str(Path(blueprint.path or "").resolve())))
        try:
            child = load(path, registry)
        except BlueprintError as exc:
            first = exc.problems[0]
            out.add(
                (*base, "uses"),
                f"blueprint {ref} is not valid: {first.message} ({first.file}:{first.line})",
                f"vicflow validate {path}",
                step.id,
            )
            continue
        finally:
            _loading.reset(token)
        _check_inputs(step, child, out)
        blueprint._child_types[step.id] = child_type(step.id, ref, step.on, child)


def _check_inputs(step: Any, child: Any, out: Any) -> None:
    base = step._where
    for key, value in step.with_.items():
        spec = child.inputs.get(key)
        if spec is None:
            declared = ", ".join(sorted(child.inputs)) or "none"
            out.add(
                (*base, "with", key), f"blueprint {child.name} has no input {key!r}", f"its inputs: {declared}", step.id
            )
        elif spec.type == "secret" and not expressions.has_expression(value):
            out.add(
                (*base, "with", key),
                f"input {key!r} of blueprint {child.name} is a secret, given in clear",
                f"give it as {key}: ${{{{ secrets.NAME }}}}",
                step.id,
            )
    for name, spec in child.inputs.items():
        if spec.is_required and spec.default is None and name not in step.with_:
            out.add(
                (*base, "with"),
                f"blueprint {child.name} needs input {name!r}",
                f"add {name}: under with: ({spec.description or spec.type})",
                step.id,
            )
