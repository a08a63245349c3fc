"""``compose_up`` and ``compose_down``: Compose projects through the Docker SDK (no compose binary).

The work is the compose library's (``vicflow.plugins.compose.operations``); this module holds the
parameters, the step types and their registration. compose_up watches the engine while it converges: an
engine that restarted meanwhile may have stopped what it started, so the step converges again (a retry).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from vicflow.plugins import Change, PermanentError, StepContext, StepType, TransientError, hookimpl
from vicflow.plugins.clients.dockerapi import DockerParams, EngineWatch, connected
from vicflow.plugins.compose import operations
from vicflow.plugins.compose.options import UpOptions
from vicflow.plugins.compose.project import Project
from vicflow.plugins.paths import BlueprintFile
from vicflow.plugins.step import Kind


class ComposeParams(DockerParams):
    files: list[BlueprintFile] = Field(default_factory=list, description="compose files, merged in order (-f a -f b)")
    project: str | None = Field(None, description="project name (default: the first file's folder)")
    environment: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="values for ${VAR} interpolation"
    )
    use_os_environ: bool = Field(True, description="also interpolate from vicflow's own environment")

    @field_validator("environment")
    @classmethod
    def _as_strings(cls, value: dict) -> dict[str, str]:
        """Compose variables are strings: 10080 -> "10080", true -> "true", None -> ""."""
        return {k: _compose_string(v) for k, v in value.items()}


def _compose_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class ComposeUpParams(ComposeParams, UpOptions):
    """Where the engine and the files are (ComposeParams), and how up converges (UpOptions)."""


class ComposeDownParams(ComposeParams):
    volumes: bool = Field(False, description="also remove the project's named volumes (data is lost)")
    remove_orphans: bool = True


def _strings(environment: dict) -> dict[str, str]:
    """The environment as the validator made it: every value a string."""
    return {k: str(v) for k, v in environment.items()}


def read(params: ComposeParams, ctx: StepContext) -> Project:
    return operations.read_project(
        list(params.files), params.project, _strings(params.environment), params.use_os_environ, ctx.logger
    )


def on_engine(client, project: Project, params: ComposeParams) -> Project:
    return operations.for_engine(client, project, _strings(params.environment), params.use_os_environ)


class ComposeUp(StepType[ComposeUpParams]):
    """docker-compose up -d, through the Docker SDK, idempotent and undoable."""

    Params = ComposeUpParams
    outputs = {
        "project": "the project name",
        "containers": "service, name, id, image, state, ports",
        "created": "services created",
        "recreated": "services recreated",
        "started": "services started",
        "unchanged": "services left alone",
    }

    def plan(self, params: ComposeUpParams, ctx: StepContext) -> list[Change]:
        project = read(params, ctx)
        with connected(params) as client:
            project = on_engine(client, project, params)
            changes = operations.plan_up(client, project, params, ctx.logger)
            volumes = operations.plan_volumes(client, project)
        rows = [Change(action, f"{project.name}/{service}", why, Kind.CONTAINER) for action, service, why in changes]
        return rows + [Change("create", name, "volume", Kind.VOLUME) for name in volumes]

    def apply(self, params: ComposeUpParams, ctx: StepContext) -> dict[str, Any]:
        project = read(params, ctx)
        with EngineWatch(params, ctx.logger) as watch, connected(params) as client:
            project = on_engine(client, project, params)
            outputs, ctx.changed = operations.up(
                client, project, params, ctx.logger, ctx.state, ctx.leftovers, ctx.deadline
            )
        if watch.restarted:
            raise TransientError(
                f"the Docker engine at {params.docker_host} restarted while compose_up ran: what it started may "
                "have stopped with it",
                "compose_up converges again on its next attempt (give the step retries)",
            )
        return outputs

    def rollback(self, params: ComposeUpParams, ctx: StepContext) -> None:
        """Remove what this run created and bring back the containers it replaced (volumes are kept)."""
        with connected(params) as client:
            operations.undo_up(client, read(params, ctx), params, ctx.logger, ctx.state, ctx.leftovers)


class ComposeDown(StepType[ComposeDownParams]):
    """docker-compose down: containers and networks; volumes only when asked."""

    Params = ComposeDownParams
    outputs = {"removed_containers": "names", "removed_networks": "names", "removed_volumes": "names"}

    def _name(self, params: ComposeDownParams, ctx: StepContext) -> str:
        if params.files:
            return read(params, ctx).name
        if not params.project:
            raise PermanentError("compose_down needs files or project", "set project: <name>")
        return params.project

    def plan(self, params: ComposeDownParams, ctx: StepContext) -> list[Change]:
        name = self._name(params, ctx)
        with connected(params) as client:
            return [Change(*change) for change in operations.plan_down(client, name, params.volumes)]

    def apply(self, params: ComposeDownParams, ctx: StepContext) -> dict[str, Any]:
        name = self._name(params, ctx)
        with connected(params) as client:
            outputs, ctx.changed = operations.down(client, name, params.volumes, ctx.logger)
        return outputs


@hookimpl
def register_step_types(register):
    register("compose_up", ComposeUp)
    register("compose_down", ComposeDown)
