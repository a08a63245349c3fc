"""The test kit for plugin authors: one step type's plan, apply and rollback in a test, the way a run makes them.

``StepHarness`` writes a one-step blueprint of the step type and its ``with:`` parameters, validates it as
`vicflow validate` does (a bad parameter is the same ``BlueprintError``, with its line, step and hint), and runs
it through the engine without Prefect (``execution.execute`` on the thread executor, as `vicflow plan` runs):

- ``plan()``: the rows `vicflow plan` shows (masked);
- ``apply()``: one `vicflow run` of the step, with its ``retries``, ``timeout_seconds``, masking and the engine's
  reading of its errors; a step that fails for good raises the run's ``RunFailed``;
- ``rollback()``: the undo a failed run makes of the step's completed attempts;
- ``idempotent()``: vicflow's rule that a second run changes nothing.

Nothing is faked: the step talks to the service its parameters name. The kit lives in ``flows`` because it drives
the engine (``plugins`` may not import ``flows``); it is installed as ``vicflow.flows.testing``.
"""

from __future__ import annotations

import os
import re
import types
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from vicflow.flows.engine import execution
from vicflow.flows.engine.journal import FileJournal
from vicflow.flows.engine.run import Run, StepState
from vicflow.flows.engine.thread_executor import ThreadSteps
from vicflow.flows.language import blueprint
from vicflow.plugins import hookimpl
from vicflow.plugins.errors import AttemptFailed, BlueprintError
from vicflow.plugins.manager import Registry, default_registry, load_registry
from vicflow.plugins.step import StepType

__all__ = ["StepHarness"]


class StepHarness:
    """One step type run as a one-step blueprint: ``StepHarness(SlackPost, {"channel": "ops"})``.

    ``step_type``: the class (registered here under ``name``, by default its class name in snake_case), or the
    name it is registered under (the plugins are loaded as `vicflow` loads them, with ``plugins`` added as
    ``VICFLOW_PLUGINS`` would: the registration is tested too). ``with_``: the parameters as a blueprint gives
    them, ``${{ secrets.name }}`` included. ``secrets``: the values of those secrets (masked once read, as in a
    run). ``base_dir``: the blueprint's folder, where relative file parameters resolve. ``spec``: more keys of
    the step (``retries``, ``retry_delay_seconds``, ``timeout_seconds``, ``for_each`` ...).

    Used as a context manager, it rolls back at the end whatever its applies left completed.
    """

    def __init__(
        self,
        step_type: type[StepType] | str,
        with_: dict[str, Any] | None = None,
        *,
        name: str | None = None,
        plugins: tuple[str, ...] = (),
        secrets: dict[str, str] | None = None,
        base_dir: str | Path = ".",
        **spec: Any,
    ):
        if isinstance(step_type, str):
            self.uses = step_type
            self.registry = _installed(plugins)
        else:
            self.uses = name or _snake(step_type.__name__)
            self.registry = _registered(self.uses, step_type, plugins)
        self.step_id = self.uses
        self.secrets = dict(secrets or {})
        step = {"id": self.step_id, "uses": self.uses, **spec, "with": dict(with_ or {})}
        self.yaml = yaml.safe_dump({"name": "test-" + self.uses.replace("_", "-"), "steps": [step]}, sort_keys=False)
        # the file named in a problem; its folder is the blueprint's: relative file parameters resolve there
        file = os.path.join(Path(base_dir).resolve(), f"<StepHarness {self.uses}>")
        try:
            self.blueprint = blueprint.parse(self.yaml, file, self.registry)
        except BlueprintError as exc:  # the lines its problems name, in the test's report
            lines = self.yaml.splitlines()
            exc.add_note(f"{file}:\n" + "\n".join(f"{n:>3} | {line}" for n, line in enumerate(lines, 1)))
            raise
        self.runs: list[Run] = []  # the runs apply() made, oldest first
        self.record: dict[str, Any] = {}  # the step's row in the last run's summary (masked)

    # ------------------------------------------------------------------------------- what a test calls

    def plan(self) -> list[dict[str, Any]]:
        """The plan rows (step, action, target, detail, kind) `vicflow plan` shows; a plan that raised is a row
        whose action is ``error``."""
        _, summary = self._execute(dry_run=True)
        return summary["plan"]

    def apply(self) -> dict[str, Any]:
        """Run the step once; its outputs as the next step sees them. Raises ``RunFailed`` (``record`` says why,
        and how many attempts it made) when it failed for good."""
        run, _ = self._execute(dry_run=False)
        self.runs.append(run)
        return dict(run.records[self.step_id].outputs)

    def rollback(self) -> None:
        """Undo the newest apply that is not undone, as a failed run would (with the step's retries). Raises
        ``AttemptFailed`` when the undo failed, with the step's error."""
        run = next((r for r in reversed(self.runs) if r.records[self.step_id].state == StepState.COMPLETED), None)
        if run is None:
            raise RuntimeError(f"nothing to roll back: no apply() of {self.uses} is completed and not rolled back")
        if not run.step_type(self.step_id).can_rollback():
            raise TypeError(f"step type {self.uses!r} defines no rollback(): a failed run leaves what it did")
        with self._secrets():
            try:
                run.roll_back()
            finally:
                self.record = run.records[self.step_id].row()
                run.release()
        if run.records[self.step_id].state != StepState.ROLLED_BACK:
            raise AttemptFailed(self.record["note"])

    def idempotent(self) -> dict[str, Any]:
        """Assert that a second run changes nothing: after an apply, the plan shows no change and another apply
        says it changed nothing (``ctx.changed = False``). Returns that apply's outputs."""
        if not self.runs:
            self.apply()
        changes = [row for row in self.plan() if row["action"] != "none"]
        if changes:
            raise AssertionError(f"{self.uses}: the plan after apply() still shows changes: {changes}")
        outputs = self.apply()
        if self.record["changed"] is not False:
            raise AssertionError(
                f"{self.uses}: a second apply() says it changed something (set ctx.changed = False when nothing "
                "needed doing)"
            )
        return outputs

    def __enter__(self) -> StepHarness:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Roll back what the applies left completed (newest first), when the step type can."""
        for run in reversed(self.runs):
            step_type = run.step_type(self.step_id)
            if run.records[self.step_id].state == StepState.COMPLETED and step_type.can_rollback():
                self.rollback()

    # ------------------------------------------------------------------------------- through the engine

    def _execute(self, dry_run: bool) -> tuple[Run, dict[str, Any]]:
        """One run (or plan) of the blueprint by the engine; the run and its summary."""
        made: list[Run] = []

        def executor(run: Run) -> ThreadSteps:
            made.append(run)
            return _Steps(run)

        run_id = f"test-{uuid.uuid4().hex[:12]}"
        with self._secrets():
            try:
                summary = execution.execute(
                    self.blueprint, {}, self.registry, run_id, executor=executor, dry_run=dry_run
                )
            finally:
                if made:
                    self.record = made[0].records[self.step_id].row()
        return made[0], summary

    @contextmanager
    def _secrets(self) -> Iterator[None]:
        """The secrets where a run without Prefect reads them (VICFLOW_SECRET_<NAME>), for the duration."""
        saved: dict[str, str | None] = {}
        for secret, value in self.secrets.items():
            variable = "VICFLOW_SECRET_" + secret.upper().replace("-", "_")
            saved[variable] = os.environ.get(variable)
            os.environ[variable] = value
        try:
            yield
        finally:
            for variable, before in saved.items():
                if before is None:
                    os.environ.pop(variable, None)
                else:
                    os.environ[variable] = before


class _Steps(ThreadSteps):
    """The thread executor with the run's journal kept in memory: a test leaves no file in the state folder."""

    def __init__(self, run: Run):
        super().__init__(run)
        self.journal = _MemoryJournal()


class _MemoryJournal(FileJournal):
    """The journal store of runs without Prefect, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: dict[str, dict[str, Any]] = {}

    def save(self, run_id: str, data: dict[str, Any]) -> None:
        self.saved[run_id] = data

    def load(self, ref: str) -> dict[str, Any]:
        return self.saved[ref]


def _installed(plugins: tuple[str, ...]) -> Registry:
    """The registry `vicflow` builds, with ``plugins`` (module names) loaded as VICFLOW_PLUGINS would."""
    if not plugins:
        return default_registry()
    return load_registry(plugins, entry_points=os.environ.get("VICFLOW_DISABLE_PLUGIN_AUTOLOAD") != "1")


def _registered(name: str, step_type: type[StepType], plugins: tuple[str, ...]) -> Registry:
    """A registry with the built-ins, ``plugins`` and a plugin of the test's own that registers ``step_type`` as
    ``name`` through the plugin manager (its checks apply). No entry points: the installed plugin may register
    the same class, which would be a duplicate here."""
    plugin = types.ModuleType(f"vicflow.testing.{name}")
    plugin.register_step_types = hookimpl(lambda register: register(name, step_type))  # type: ignore[attr-defined]
    return load_registry((*plugins, plugin), entry_points=False)


def _snake(class_name: str) -> str:
    """``SlackPost`` -> ``slack_post``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", class_name).lower()
