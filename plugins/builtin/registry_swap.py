"""``registry_swap``: the seed's Harbor registry swap as one safe step.

By hand: docker pull, compose down, sed the tag, compose up; any failure half-way leaves the
registry down.  Here, before anything is stopped (pre-flight): the new image is on the engine, the CA
verifies Harbor's certificate, and the credentials get a token that may push.  Then the compose file
is edited in place byte for byte (only the image scalar changes), the project goes down and up with
all its files in the seed's order, the new registry is verified through Harbor's public HTTPS URL
(it answers, and accepts the foreign-layer schema-2 push that failed in the seed, with a token), and
any failure restores the file and the old containers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import yaml
from pydantic import Field
from vicflow.plugins import Change, PermanentError, StepContext, StepError, StepType, TransientError, hookimpl
from vicflow.plugins.clients import registry_api
from vicflow.plugins.clients.dockerapi import COMPOSE_LABEL as LABEL
from vicflow.plugins.clients.dockerapi import DockerParams, connected
from vicflow.plugins.compose import operations
from vicflow.plugins.compose.options import UpOptions
from vicflow.plugins.compose.project import Project, load_project
from vicflow.plugins.errors import ConnectionLost, InvalidRequest
from vicflow.plugins.paths import BlueprintFile
from vicflow.plugins.step import Kind


class RegistrySwapParams(DockerParams):
    compose_files: list[BlueprintFile] = Field(
        default=["/etc/vmware/harbor/docker-compose.notary.yml", "/etc/vmware/harbor/docker-compose.yml"],
        description="Harbor's compose files, in order",
    )
    project: str | None = Field(None, description="compose project (default: the files' folder, e.g. harbor)")
    service: str = "registry"
    new_image: str = "vmware/registry:2.6.1-photon"
    registry_url: str | None = Field(
        None,
        description="Harbor's public URL, through its nginx (default: https:// and the host of docker_host, or "
        "https://127.0.0.1 for a local engine, as on the appliance)",
    )
    registry_ca: BlueprintFile | None = Field(
        None, description="the CA that signed Harbor's certificate (the appliance CA)"
    )
    insecure: bool = Field(False, description="skip TLS verification of registry_url (logged as a warning)")
    registry_user: str | None = Field("admin", description="a Harbor user who may push to verify_repository")
    registry_password: str | None = Field(None, description="use ${{ secrets.name }}")
    verify_repository: str = Field(
        "library/vicflow-swap-check", description="repository of the test push, in an existing project (deleted after)"
    )
    verify_timeout_seconds: float = Field(60, gt=0)
    environment: dict[str, str] = Field(default_factory=dict, description="values for ${VAR} in the files")


class ImageLocation:
    """Where a service's image is written: the file that sets it last, and the scalar's byte range."""

    def __init__(self, files: list[str], service: str):
        found = None
        for name in files:
            text = Path(name).read_text()
            node = _image_node(yaml.compose(text), service)
            if node is not None:
                found = (Path(name), text, node)
        if found is None:
            raise PermanentError(
                f"no compose file sets an image for service {service!r}: {', '.join(files)}",
                "check service (default registry) and compose_files",
            )
        self.path, self.text, self.node = found
        if "${" in self.node.value or "$" in self.node.value:
            raise PermanentError(
                f"{self.path}:{self.node.start_mark.line + 1}: the image of {service!r} comes from "
                f"a variable ({self.node.value}); set the variable instead of editing the file"
            )

    @property
    def value(self) -> str:
        return self.node.value

    def replaced(self, new_image: str) -> str:
        """The file's text with only the image scalar changed (same quoting style)."""
        quote = self.node.style if self.node.style in ('"', "'") else ""
        start, end = self.node.start_mark.index, self.node.end_mark.index
        return self.text[:start] + f"{quote}{new_image}{quote}" + self.text[end:]


def _image_node(root, service: str):
    def child(node, key):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    return v
        return None

    node = child(child(child(root, "services"), service), "image")
    return node if isinstance(node, yaml.ScalarNode) else None


class RegistrySwap(StepType[RegistrySwapParams]):
    """Swap Harbor's registry image, verify schema-2 foreign-layer pushes, roll back by itself on failure."""

    Params = RegistrySwapParams
    outputs = {
        "old_image": "image before",
        "new_image": "image after",
        "file": "the compose file edited",
        "verification": "what was checked: container image, API status, foreign-layer push status",
    }

    def _files(self, params, ctx) -> list[str]:
        return list(params.compose_files)

    def _project_name(self, params, ctx) -> str:
        return params.project or load_project(self._files(params, ctx), None, params.environment, False).name

    def _project(self, params, ctx) -> Project:
        """Harbor's project as its files say (never from vicflow's environment: the files are the truth)."""
        # project None: the name the files give, as _project_name finds it (without reading them twice)
        return operations.read_project(self._files(params, ctx), params.project, params.environment, False, ctx.logger)

    def _running_image(self, params, ctx) -> str | None:
        name = self._project_name(params, ctx)
        with connected(params) as client:
            found = client.containers.list(
                filters={"label": [f"{LABEL}.project={name}", f"{LABEL}.service={params.service}"]}
            )
        return found[0].attrs["Config"]["Image"] if found else None

    def plan(self, params: RegistrySwapParams, ctx: StepContext) -> list[Change]:
        location = ImageLocation(self._files(params, ctx), params.service)
        running = self._running_image(params, ctx)
        if location.value == params.new_image and running == params.new_image:
            return [Change("none", params.service, f"already runs {params.new_image}")]
        return [
            Change("update", f"{location.path}", f"image {location.value} -> {params.new_image}", Kind.REGISTRY_IMAGE),
            Change("update", params.service, "compose down + up with all files, then verify (rolls back on failure)"),
        ]

    def apply(self, params: RegistrySwapParams, ctx: StepContext) -> dict[str, Any]:
        location = ImageLocation(self._files(params, ctx), params.service)
        old_image = location.value
        if old_image == params.new_image and self._running_image(params, ctx) == params.new_image:
            ctx.changed = False
            ctx.logger.info("%s already runs %s: nothing to do", params.service, params.new_image)
            return {
                "old_image": old_image,
                "new_image": params.new_image,
                "file": str(location.path),
                "verification": self._verify(params, ctx),
            }
        self._ensure_image(params, ctx)  # pre-flight: before anything changes
        if self._start_what_stopped(params, ctx):
            self._wait_api(params, ctx, time.monotonic() + params.verify_timeout_seconds)
        self._preflight(params, ctx)
        ctx.state.update(file=str(location.path), text=location.text, old_image=old_image)
        try:
            _write_whole(location.path, location.replaced(params.new_image))
            ctx.logger.info("%s: image %s -> %s", location.path, old_image, params.new_image)
            self._redeploy(params, ctx)
            verification = self._verify(params, ctx)
        except Exception as exc:
            ctx.logger.error("swap to %s failed (%s); rolling back to %s", params.new_image, exc, old_image)
            cause, cause_hint = (exc.args[0], exc.hint) if isinstance(exc, StepError) else (str(exc), None)
            try:
                self._restore(params, ctx)
            except Exception as undo:  # e.g. the engine is restarting: the file is whole, a retry converges
                raise TransientError(
                    f"swap of {params.service!r} to {params.new_image} failed: {cause}; {location.path} names "
                    f"{old_image} again, but redeploying it failed: {undo}",
                    "run the step again once the Docker engine answers: it swaps again, or rolls back",
                ) from None
            raise (TransientError if self.is_transient(exc) else PermanentError)(
                f"swap of {params.service!r} to {params.new_image} failed: {cause}; rolled back to {old_image}, "
                "and the registry answers again",
                "; ".join(
                    h for h in (cause_hint, "the old registry is serving; check the new image before retrying") if h
                ),
            ) from None
        return {
            "old_image": old_image,
            "new_image": params.new_image,
            "file": str(location.path),
            "verification": verification,
        }

    def rollback(self, params: RegistrySwapParams, ctx: StepContext) -> None:
        """A later step failed: put the old image back the same way."""
        if ctx.state.get("text") is not None:
            self._restore(params, ctx)

    # ---- parts
    def _ensure_image(self, params, ctx) -> None:
        with connected(params) as client:
            try:
                client.images.get(params.new_image)
                return
            except docker.errors.ImageNotFound:
                pass
            ctx.logger.info("pulling %s", params.new_image)
            try:
                client.images.pull(params.new_image)
            except docker.errors.APIError as exc:
                raise PermanentError(
                    f"{params.new_image} is not on the engine and cannot be pulled: "
                    f"{exc.explanation}; nothing was changed",
                    "push the image to a registry the engine can reach, or load it",
                ) from None

    def _redeploy(self, params, ctx) -> None:
        """compose down, then up, with all of Harbor's files (the seed's order), through the compose library."""
        project = self._project(params, ctx)
        with connected(params) as client:
            project = operations.for_engine(client, project, params.environment, False)
            operations.down(client, project.name, False, ctx.logger)
            operations.up(client, project, UpOptions(), ctx.logger, {}, ctx.leftovers, ctx.deadline)

    def _start_what_stopped(self, params, ctx) -> bool:
        """compose up with recreate: never (create what is missing, start what stopped); True if it had to.

        After a swap whose rollback the engine's restart cut short, Harbor is partly down: the pre-flight
        needs it up, as the files say."""
        options = UpOptions(recreate="never")
        project = self._project(params, ctx)
        with connected(params) as client:
            project = operations.for_engine(client, project, params.environment, False)
            changes = operations.plan_up(client, project, options, ctx.logger)
            missing = [f"{project.name}/{service}" for action, service, _ in changes if action != "none"]
            if not missing:
                return False
            ctx.logger.warning("not running: %s; starting them as the files say before the swap", ", ".join(missing))
            operations.up(client, project, options, ctx.logger, {}, ctx.leftovers, ctx.deadline)
        return True

    def _restore(self, params, ctx) -> None:
        _write_whole(Path(ctx.state["file"]), ctx.state["text"])
        self._redeploy(params, ctx)
        self._wait_api(params, ctx, time.monotonic() + params.verify_timeout_seconds)
        ctx.logger.info("restored %s and %s", ctx.state["file"], ctx.state["old_image"])

    def _registry(self, params, ctx, timeout: float = 10) -> registry_api.Registry:
        if params.insecure:
            ctx.logger.warning("insecure: true: the certificate of %s is not verified", registry_url(params))
        ca = params.registry_ca
        return registry_api.Registry(
            registry_url(params), params.registry_user, params.registry_password, ca, params.insecure, timeout
        )

    def _preflight(self, params, ctx) -> None:
        """Before anything is stopped: the CA verifies, the credentials get a token, and that token may push."""
        registry = self._registry(params, ctx)
        try:
            registry.check_push(params.verify_repository)
        except registry_api.RegistryUnavailable as exc:  # Harbor's ui or registry still starting: nothing changed
            raise TransientError(f"pre-flight: {exc}; nothing was changed", "Harbor is starting: run again") from None
        except registry_api.RegistryError as exc:
            raise PermanentError(f"pre-flight: {exc}; nothing was changed", exc.hint) from None
        except ConnectionLost as exc:  # Harbor may be starting: worth another try
            raise TransientError(
                f"pre-flight: the registry at {registry_url(params)} cannot be reached: {exc}; nothing was changed",
                "registry_url is Harbor's public URL (its nginx), e.g. https://APPLIANCE",
            ) from None
        finally:
            registry.close()
        ctx.logger.info(
            "pre-flight: %s verifies, %s may push to %s",
            registry_url(params),
            params.registry_user or "anonymous",
            params.verify_repository,
        )

    def _wait_api(self, params, ctx, deadline: float) -> int:
        last = ""
        registry = self._registry(params, ctx, timeout=3)
        try:
            while time.monotonic() < deadline:
                try:
                    status = registry.ping()
                    if status in (200, 401):
                        registry.login()  # and its token service: Harbor's ui may come up after the registry
                        return status
                    last = f"HTTP {status}"
                except (ConnectionLost, InvalidRequest, registry_api.RegistryError) as exc:
                    last = str(exc)
                time.sleep(0.5)
        finally:
            registry.close()
        raise PermanentError(
            f"the registry API at {registry_url(params)}/v2/ did not answer within "
            f"{params.verify_timeout_seconds:g}s (last: {last})"
        )

    def _verify(self, params, ctx) -> dict[str, Any]:
        deadline = time.monotonic() + params.verify_timeout_seconds
        name = self._project_name(params, ctx)
        with connected(params) as client:
            while True:
                found = client.containers.list(
                    all=True,
                    filters={"label": [f"{LABEL}.project={name}", f"{LABEL}.service={params.service}"]},
                )
                if found and found[0].status == "running":
                    break
                if found and found[0].status in ("exited", "dead") or time.monotonic() > deadline:
                    state = found[0].attrs["State"] if found else {}
                    tail = found[0].logs(tail=5).decode(errors="replace").splitlines() if found else []
                    # one line: a container restarting in a loop repeats its error once per start
                    logs = " | ".join(dict.fromkeys(line.strip() for line in tail if line.strip()))
                    raise PermanentError(
                        f"the {params.service} container is not running (status "
                        f"{state.get('Status', 'missing')}, exit code {state.get('ExitCode')}): {logs}"
                    )
                time.sleep(0.5)
            image = found[0].attrs["Config"]["Image"]
        if image != params.new_image:
            raise PermanentError(f"the {params.service} container runs {image}, not {params.new_image}")
        status = self._wait_api(params, ctx, deadline)
        registry = self._registry(params, ctx)
        try:
            push = registry.push_foreign_layer_manifest(params.verify_repository, "schema2-check")
            if not push.accepted:
                raise PermanentError(
                    f"the registry refused a schema-2 manifest with a foreign layer: HTTP {push.status} "
                    f"{push.detail} (the seed's 'manifest blob unknown')"
                )
            if push.digest:
                deleted = registry.delete_manifest(params.verify_repository, push.digest)
                if deleted not in (200, 202):
                    ctx.logger.warning("could not delete the test manifest %s (HTTP %s)", push.digest, deleted)
        except registry_api.RegistryError as exc:
            raise PermanentError(f"verification push: {exc}", exc.hint) from None
        finally:
            registry.close()
        ctx.logger.info(
            "verified: %s runs %s, /v2/ answers %s, foreign-layer push answered %s",
            params.service,
            image,
            status,
            push.status,
        )
        return {"container_image": image, "api_status": status, "foreign_layer_push": push.status}


def _write_whole(path: Path, text: str) -> None:
    """Replace the file in one step (a temporary file renamed over it): never half-written, whatever happens."""
    temporary = path.with_name(f".{path.name}.vicflow-tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def registry_url(params: RegistrySwapParams) -> str:
    """Harbor's public URL: given, or https:// on the host of docker_host (the appliance runs both)."""
    if params.registry_url:
        return params.registry_url.rstrip("/")
    host = urlparse((params.docker_host or "").replace("tcp://", "https://")).hostname
    return f"https://{host}" if host and (params.docker_host or "").startswith("tcp://") else "https://127.0.0.1"


@hookimpl
def register_step_types(register):
    register("registry_swap", RegistrySwap)
