"""``compose_up`` and ``compose_down``: Compose projects through the Docker SDK (no compose binary).

Containers carry Docker Compose's labels, so ``docker compose ps`` sees them, and an unchanged
service (same config hash, same image id) is never recreated.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import docker
import requests
from pydantic import Field, field_validator
from vicflow.plugins import Change, PermanentError, StepContext, StepType, TransientError, hookimpl
from vicflow.plugins.clients.dockerapi import COMPOSE_LABEL, DockerParams, connected, is_vch
from vicflow.plugins.compose.project import Project, Service, load_project
from vicflow.plugins.paths import BlueprintFile
from vicflow.plugins.step import Params

LABEL = COMPOSE_LABEL
VERSION_LABEL = "vicflow"
NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


NOT_STARTED = "created but not started"  # how a leftover container is reported (and recognised when it is not)


def engine_is_transient(exc: BaseException) -> bool:
    """A 5xx from the engine (it is restarting, or a daemon-side hiccup) is worth another attempt; a 4xx is not."""
    return isinstance(exc, docker.errors.APIError) and (exc.status_code or 0) >= 500


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
        return {k: "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}


class RegistryAuth(Params):
    """Credentials for pulls from a private registry (a Harbor project that is not public)."""

    username: str
    password: str = Field(description="use ${{ secrets.name }}")
    registry: str | None = Field(
        None, description="the registry host they are for, e.g. harbor.domain.sddc (default: all)"
    )


class ComposeUpParams(ComposeParams):
    remove_orphans: bool = False
    volume_driver: str | None = Field(
        None, description="override the driver of every volume (e.g. local on an engine without the vsphere driver)"
    )
    pull: Literal["missing", "always", "never"] = "missing"
    parallel: int = Field(8, ge=1, le=64, description="containers created at once within a level")
    registry_auth: RegistryAuth | None = Field(None, description="credentials for pulling from a private registry")
    recreate: Literal["changed", "never"] = Field(
        "changed",
        description="changed: replace a container whose configuration or image changed; never: only create what is "
        "missing and start what is stopped (a heal must not undo a newer deployment)",
    )


class ComposeDownParams(ComposeParams):
    volumes: bool = Field(False, description="also remove the project's named volumes (data is lost)")
    remove_orphans: bool = True


def _project(params: ComposeParams, ctx, vch: bool = False) -> Project:
    """The project; ``vch``: with VIC 1.1's rules too (its warnings were logged on the first read)."""
    files = list(params.files)
    project = load_project(files, params.project, params.environment, params.use_os_environ, vch=vch)
    if not vch:
        for warning in project.warnings:
            ctx.logger.warning("%s", warning)
    return project


def _project_for(params: ComposeParams, ctx, client, project: Project) -> Project:
    """``project`` as read before any engine was asked (so its errors never wait for one), read again with
    VIC 1.1's rules when the engine turns out to be a VCH."""
    return _project(params, ctx, vch=True) if is_vch(client) else project


def registry_host(image: str) -> str:
    """The registry an image reference names (Docker's rule: a first part with a dot, a port or localhost)."""
    first, sep, _ = image.partition("/")
    return first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"


def container_name(project: Project, service: Service) -> str:
    return service.container_name or f"{project.name}-{service.name}-1"


class Deployer:
    """Converges one project on one engine; remembers what it did so that rollback can undo it."""

    def __init__(self, client, project: Project, params: ComposeUpParams, ctx):
        self.client, self.project, self.params, self.ctx = client, project, params, ctx
        self.lock = threading.Lock()
        self.state = ctx.state.setdefault("compose", {"services": {}, "networks": [], "volumes": []})
        self._containers: dict[str, Any] | None = None
        self._images: dict[str, str | None] = {}

    # ---- reading (one list call for the project's containers, one look-up per image)
    def containers(self, refresh: bool = False) -> dict[str, Any]:
        """service -> container (list summaries), read once per apply unless ``refresh``."""
        if self._containers is None or refresh:
            # sparse: the list summaries only (the SDK would otherwise inspect every container, one call each)
            found = self.client.containers.list(
                all=True, sparse=True, filters={"label": f"{LABEL}.project={self.project.name}"}
            )
            self._containers = {summary_labels(c).get(f"{LABEL}.service"): c for c in found}
        return self._containers

    def existing(self, service: Service):
        return self.containers().get(service.name)

    def image_id(self, image: str, refresh: bool = False) -> str | None:
        if refresh or image not in self._images:
            try:
                self._images[image] = self.client.images.get(image).id
            except docker.errors.ImageNotFound:
                self._images[image] = None
        return self._images[image]

    def decide(self, service: Service) -> tuple[str, str]:
        """(create | recreate | start | unchanged, why)."""
        container = self.existing(service)
        if container is None:
            return "create", "no container yet"
        labels = summary_labels(container)
        state = summary_state(container)
        if self.params.recreate == "never":
            return ("unchanged", "up (recreate: never)") if state == "running" else ("start", f"container is {state}")
        if labels.get(f"{LABEL}.config-hash") != service.config_hash():
            return "recreate", "configuration changed"
        wanted = self.image_id(service.image)
        running_image = container.attrs.get("ImageID") or container.attrs.get("Image")  # list summary / inspect
        if wanted and running_image != wanted:
            return "recreate", f"image {service.image} now points to {wanted[7:19]}"
        if state != "running":
            return "start", f"container is {state}"
        return "unchanged", "up to date"

    # ---- desired state
    def body(self, service: Service, image_id: str) -> dict[str, Any]:
        """The Engine API create body for ``service`` (API 1.25, what VIC 1.1 speaks)."""
        project = self.project
        labels = {
            **service.labels,
            f"{LABEL}.project": project.name,
            f"{LABEL}.service": service.name,
            f"{LABEL}.container-number": "1",
            f"{LABEL}.oneoff": "False",
            f"{LABEL}.config-hash": service.config_hash(),
            f"{LABEL}.image": image_id,
            f"{LABEL}.project.config_files": ",".join(project.files),
            f"{LABEL}.project.working_dir": project.working_dir,
            f"{LABEL}.version": VERSION_LABEL,
        }
        exposed: dict[str, dict] = {}
        bindings: dict[str, list[dict[str, str]]] = {}
        for port in service.ports:
            key = f"{port.target}/{port.protocol}"
            exposed[key] = {}
            bindings.setdefault(key, []).append(
                {"HostIp": port.host_ip, "HostPort": "" if port.published is None else str(port.published)}
            )
        for item in service.expose:
            exposed[item if "/" in item else f"{item}/tcp"] = {}
        binds, anonymous = [], {}
        for mount in service.mounts:
            if mount.type == "volume" and mount.source is None:
                anonymous[mount.target] = {}
                continue
            source = project.volumes[mount.source].name if mount.type == "volume" else mount.source
            binds.append(f"{source}:{mount.target}" + (":ro" if mount.read_only else ""))
        restart, _, count = service.restart.partition(":")
        networks = [project.networks[n].name for n in service.networks]
        host_config: dict[str, Any] = {
            "PortBindings": bindings,
            "Binds": binds,
            "RestartPolicy": {"Name": "" if restart == "no" else restart, "MaximumRetryCount": int(count or 0)},
            "ExtraHosts": service.extra_hosts or None,
            "Links": [self._link(link) for link in service.links] or None,
            "NetworkMode": service.network_mode or (networks[0] if networks else "default"),
            **service.host,
        }
        body: dict[str, Any] = {
            "Image": service.image,
            "Labels": labels,
            "ExposedPorts": exposed,
            "Volumes": anonymous or None,
            "Env": [f"{k}={v}" for k, v in service.environment.items() if v is not None],
            "Cmd": _argv(service.command),
            "Entrypoint": _argv(service.entrypoint),
            "User": service.user or "",
            "WorkingDir": service.working_dir or "",
            "Hostname": service.hostname or "",
            "StopSignal": service.stop_signal,
            "StopTimeout": None if service.stop_grace_period is None else int(service.stop_grace_period),
            "Healthcheck": service.healthcheck,
            "Tty": service.tty or None,
            "OpenStdin": service.stdin_open or None,
            "HostConfig": host_config,
        }
        if networks and not service.network_mode:
            first = next(iter(service.networks))
            body["NetworkingConfig"] = {
                "EndpointsConfig": {networks[0]: {"Aliases": [service.name, *service.networks[first]]}}
            }
        return {k: v for k, v in body.items() if v is not None}

    def _link(self, link: str) -> str:
        target, _, alias = link.partition(":")
        if target in self.project.services:
            return f"{container_name(self.project, self.project.services[target])}:{alias or target}"
        return f"{target}:{alias or target}"

    # ---- changing
    def ensure_images(self) -> None:
        """Every image present (pulled if allowed) before anything is changed."""
        for service in self.project.services.values():
            if self.params.pull == "always" or (self.params.pull == "missing" and not self.image_id(service.image)):
                if self.params.pull == "never":
                    continue
                self.ctx.logger.info("pulling %s", service.image)
                try:
                    self.client.images.pull(service.image, auth_config=self._auth(service.image))
                    self.image_id(service.image, refresh=True)
                except docker.errors.APIError as exc:
                    if self.image_id(service.image):
                        self.ctx.logger.warning(
                            "pull of %s failed, using the local image: %s", service.image, exc.explanation
                        )
                        continue
                    denied = "unauthorized" in str(exc.explanation) or "denied" in str(exc.explanation)
                    raise PermanentError(
                        f"image {service.image} of service {service.name!r} is not on the engine "
                        f"and cannot be pulled: {exc.explanation}",
                        "give registry_auth (username, and password as ${{ secrets.name }}) for a private project"
                        if denied
                        else "push it to a registry the engine can reach, or check the name",
                    ) from None
            if not self.image_id(service.image):
                raise PermanentError(
                    f"image {service.image} of service {service.name!r} is not on the engine",
                    "pull it first or set pull: missing",
                )

    def _auth(self, image: str) -> dict[str, str] | None:
        auth = self.params.registry_auth
        if auth is None or auth.registry not in (None, registry_host(image)):
            return None
        return {"username": auth.username, "password": auth.password}

    def ensure_networks(self) -> None:
        used = {n for s in self.project.services.values() for n in s.networks}
        present = {n.name for n in self.client.networks.list()} if used else set()
        for key in used:
            spec = self.project.networks[key]
            if spec.name in present:
                continue
            if spec.external:
                raise PermanentError(
                    f"external network {spec.name!r} does not exist",
                    f"create it first (docker network create {spec.name})",
                )
            labels = {
                **spec.labels,
                f"{LABEL}.project": self.project.name,
                f"{LABEL}.network": key,
                f"{LABEL}.version": VERSION_LABEL,
            }
            self.client.networks.create(
                spec.name, driver=spec.driver or "bridge", options=spec.driver_opts or None, labels=labels
            )
            with self.lock:
                self.state["networks"].append(spec.name)
            self.ctx.logger.info("created network %s", spec.name)

    def ensure_volumes(self) -> None:
        """One listing of the engine's volumes; the missing ones created in parallel."""
        used = {m.source for s in self.project.services.values() for m in s.mounts if m.type == "volume" and m.source}
        present = {v.name: v for v in self.client.volumes.list()} if used else {}
        with ThreadPoolExecutor(max_workers=self.params.parallel, thread_name_prefix="volumes") as pool:
            list(pool.map(lambda key: self._ensure_volume(key, present), sorted(used)))

    def _ensure_volume(self, key: str, present: dict[str, Any]) -> None:
        spec = self.project.volumes[key]
        driver = self.params.volume_driver or spec.driver or "local"
        existing = present.get(spec.name)
        if existing is not None:
            if not spec.external and existing.attrs.get("Driver") != driver:
                raise PermanentError(
                    f"volume {spec.name!r} exists with driver {existing.attrs.get('Driver')!r}, the project asks "
                    f"for {driver!r}",
                    "vicflow never deletes a volume by itself: move its data, remove it by hand, or set "
                    "volume_driver to match",
                )
            return
        if spec.external:
            raise PermanentError(
                f"external volume {spec.name!r} does not exist", f"create it first (docker volume create {spec.name})"
            )
        labels = {
            **spec.labels,
            f"{LABEL}.project": self.project.name,
            f"{LABEL}.volume": key,
            f"{LABEL}.version": VERSION_LABEL,
        }
        try:
            self.client.volumes.create(spec.name, driver=driver, driver_opts=spec.driver_opts or None, labels=labels)
        except docker.errors.APIError as exc:
            text = str(exc.explanation or exc)
            if no_such_volume_driver(text):
                raise PermanentError(
                    f"the engine has no volume driver {driver!r} (volume {key!r}): {text}",
                    "a VCH provides the vsphere driver; on another engine set volume_driver: local in the "
                    "compose_up step",
                ) from None
            raise
        with self.lock:
            self.state["volumes"].append(spec.name)
        self.ctx.logger.info("created volume %s (driver %s)", spec.name, driver)

    def converge(self, service: Service) -> str:
        action, why = self.decide(service)
        name = container_name(self.project, service)
        if action == "unchanged":
            return action
        old = self.existing(service)
        if action == "start":
            old.start()
            self._record(service.name, {"action": "start", "id": old.id})
            self.ctx.logger.info("started %s (%s)", name, why)
            return action
        record: dict[str, Any] = {"action": action}
        if old is not None:
            old.reload()  # the full inspect (list summaries lack HostConfig), to restore it on rollback
            record.update(old=old.attrs, old_running=old.status == "running")
            old.stop(timeout=int(service.stop_grace_period or 10))
            old.remove(v=False)
        body = self.body(service, self.image_id(service.image) or "")
        created = self.create(name, body, service)
        record["id"] = created
        self._record(service.name, record)
        self.ctx.logger.info("%s %s (%s)", "recreated" if old else "created", name, why)
        return action

    def create(self, name: str, body: dict[str, Any], service: Service | None) -> str:
        try:
            platform = service.platform if service is not None else None
            container = self.client.api.create_container_from_config(body, name=name, platform=platform)
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # the name is taken (asked only then: one call less per container)
                raise self._name_taken(name) from None
            raise
        try:
            if service is not None:
                for key, aliases in list(service.networks.items())[1:]:
                    self.client.api.connect_container_to_network(
                        container["Id"], self.project.networks[key].name, aliases=[service.name, *aliases]
                    )
            self._start(container["Id"], name)
        except BaseException:
            self._discard(container["Id"], name)
            raise
        return container["Id"]

    def _discard(self, container_id: str, name: str) -> None:
        """A container this attempt created and could not start is removed, or reported: never left silently."""
        try:
            self.client.api.remove_container(container_id, force=True)
            self.ctx.logger.warning("removed %s: created, but it did not start", name)
        except Exception as exc:
            self.ctx.logger.error("could not remove %s, which did not start: %s", name, exc)
            self.ctx.leftovers.append(
                f"container {name} ({container_id[:12]}) {NOT_STARTED} - the next run starts it, "
                f"or remove it: docker rm -f {name}"
            )

    def forget_started_leftovers(self) -> None:
        """A container an earlier attempt reported as created-but-not-started that runs now (this attempt
        started it) or is gone (it replaced it) is no longer left behind: the run's summary must not list it."""
        if not any(NOT_STARTED in line for line in self.ctx.leftovers):
            return
        idle = {c.id[:12] for c in self.containers(refresh=True).values() if summary_state(c) != "running"}
        self.ctx.leftovers[:] = [
            line
            for line in self.ctx.leftovers
            if NOT_STARTED not in line or any(f"({short}) {NOT_STARTED}" in line for short in idle)
        ]

    def _start(self, container_id: str, name: str, wait_seconds: float = 30) -> None:
        """Start; a syslog logging driver whose server (Harbor's ``log`` service) is still starting refuses the
        start with "failed to initialize logging driver": that is retried until the server listens."""
        until = time.monotonic() + wait_seconds
        while True:
            try:
                self.client.api.start(container_id)
                return
            except docker.errors.APIError as exc:
                text = str(exc.explanation or exc)
                if engine_is_transient(exc) and "logging driver" not in text:
                    raise TransientError(
                        f"container {name!r} did not start: the engine answered {exc.status_code}: {text}",
                        "retried while the engine recovers (a restarting dockerd answers 500)",
                    ) from None
                if "logging driver" not in text or time.monotonic() > until:
                    raise PermanentError(
                        f"container {name!r} was created but does not start: {text}",
                        "the logging driver's server must listen before the service starts (depends_on it)"
                        if "logging driver" in text
                        else "check the service's settings and the image",
                    ) from None
                time.sleep(0.5)

    def _name_taken(self, name: str) -> PermanentError:
        try:
            owner = self.client.containers.get(name).labels.get(f"{LABEL}.project")
        except docker.errors.NotFound:  # removed meanwhile
            owner = None
        return PermanentError(
            f"container name {name!r} is taken by a container not managed by project "
            f"{self.project.name!r} (project: {owner or 'none'})",
            "remove or rename that container, or change container_name",
        )

    def _record(self, service: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.state["services"][service] = record

    def wait_for(self, service: Service, deadline: float) -> None:
        """Honour depends_on conditions before ``service`` is created."""
        for dep, condition in service.depends_on.items():
            if condition == "service_started":
                continue
            target = self.existing(self.project.services[dep])
            while True:
                target.reload()
                health = (target.attrs.get("State", {}).get("Health") or {}).get("Status")
                state = target.attrs.get("State", {})
                if condition == "service_healthy" and health == "healthy":
                    break
                if condition == "service_healthy" and health is None:
                    raise PermanentError(
                        f"{service.name!r} waits for {dep!r} to be healthy, but {dep!r} has no healthcheck",
                        f"add a healthcheck to {dep!r} or use service_started",
                    )
                if condition == "service_completed_successfully" and state.get("Status") == "exited":
                    if state.get("ExitCode") == 0:
                        break
                    raise PermanentError(
                        f"{dep!r} exited with code {state.get('ExitCode')}; {service.name!r} "
                        "needs it to complete successfully"
                    )
                if time.monotonic() > deadline:
                    raise TransientError(
                        f"{dep!r} did not become {condition.removeprefix('service_')} in time "
                        f"(health: {health}, state: {state.get('Status')})",
                        "raise the step's timeout_seconds or check the dependency's logs",
                    )
                time.sleep(0.5)

    def remove_orphans(self) -> list[str]:
        removed = []
        for container in self.client.containers.list(
            all=True, filters={"label": f"{LABEL}.project={self.project.name}"}
        ):
            if container.labels.get(f"{LABEL}.service") not in self.project.services:
                container.remove(force=True)
                removed.append(container.name)
        return removed

    def outputs(self, actions: dict[str, str]) -> dict[str, Any]:
        containers = []
        current = self.containers(refresh=True)
        for service in self.project.services.values():
            container = current[service.name]
            ports: dict[str, list[str]] = {}
            for port in container.attrs.get("Ports") or []:  # list summary: IP, PrivatePort, PublicPort, Type
                if port.get("PublicPort"):
                    key = f"{port['PrivatePort']}/{port.get('Type', 'tcp')}"
                    ports.setdefault(key, []).append(f"{port.get('IP') or '0.0.0.0'}:{port['PublicPort']}")
            containers.append(
                {
                    "service": service.name,
                    "name": (container.attrs.get("Names") or ["/" + container.id[:12]])[0].lstrip("/"),
                    "id": container.id,
                    "image": service.image,
                    "state": summary_state(container),
                    "ports": ports,
                }
            )
        by_action = {
            a: sorted(s for s, act in actions.items() if act == a) for a in ("create", "recreate", "start", "unchanged")
        }
        return {
            "project": self.project.name,
            "containers": containers,
            "created": by_action["create"],
            "recreated": by_action["recreate"],
            "started": by_action["start"],
            "unchanged": by_action["unchanged"],
        }


def summary_labels(container) -> dict[str, str]:
    """Labels of a container from a sparse listing (``Labels``) or an inspect (``Config.Labels``)."""
    return container.attrs.get("Labels") or (container.attrs.get("Config") or {}).get("Labels") or {}


def summary_state(container) -> str:
    state = container.attrs.get("State")
    return state.get("Status", "") if isinstance(state, dict) else str(state or "")


def remove_network(network, attempts: int = 20) -> bool:
    """Remove a network; True once removed.

    Right after its containers were removed in parallel, dockerd may still report active endpoints for a moment:
    what remains is disconnected by force and the removal tried again.  An endpoint no container owns (left by
    an unclean daemon shutdown) cannot be removed through the API: then False, and the caller says what to do.
    """
    for attempt in range(attempts):
        try:
            network.remove()
            return True
        except docker.errors.APIError as exc:
            if "active endpoints" not in str(exc):
                raise
            if attempt == attempts - 1:
                return False
            network.reload()
            for endpoint, info in (network.attrs.get("Containers") or {}).items():
                for target in (endpoint, (info or {}).get("Name")):
                    with contextlib.suppress(docker.errors.APIError):
                        network.client.api.disconnect_container_from_network(target, network.id, force=True)
            time.sleep(0.25)
    return False


def _argv(value: list[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


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
    transient_errors = NETWORK_ERRORS

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        return super().is_transient(exc) or engine_is_transient(exc)

    def plan(self, params: ComposeUpParams, ctx: StepContext) -> list[Change]:
        project = _project(params, ctx)
        with connected(params) as client:
            project = _project_for(params, ctx, client, project)
            deployer = Deployer(client, project, params, ctx)
            changes = []
            for service in project.services.values():
                action, why = deployer.decide(service)
                changes.append(
                    Change("none" if action == "unchanged" else action, f"{project.name}/{service.name}", why)
                )
        return changes

    def apply(self, params: ComposeUpParams, ctx: StepContext) -> dict[str, Any]:
        project = _project(params, ctx)
        with connected(params) as client:
            project = _project_for(params, ctx, client, project)
            deployer = Deployer(client, project, params, ctx)
            deployer.ensure_images()
            deployer.ensure_networks()
            deployer.ensure_volumes()
            actions: dict[str, str] = {}
            deadline = ctx.deadline or time.monotonic() + 300
            with ThreadPoolExecutor(max_workers=params.parallel, thread_name_prefix="compose") as pool:
                levels = project.levels()
                for level in levels:

                    def one(name: str) -> str:
                        service = project.services[name]
                        deployer.wait_for(service, deadline)
                        return deployer.converge(service)

                    for name, action in zip(level, pool.map(one, level), strict=True):
                        actions[name] = action
                    if any(a != "unchanged" for a in actions.values()) and level is not levels[-1]:
                        deployer.containers(refresh=True)  # the next level waits on what this one created
            if params.remove_orphans:
                for name in deployer.remove_orphans():
                    ctx.logger.info("removed orphan container %s", name)
            ctx.changed = any(a != "unchanged" for a in actions.values()) or bool(
                deployer.state["networks"] or deployer.state["volumes"]
            )
            deployer.forget_started_leftovers()
            return deployer.outputs(actions)

    def rollback(self, params: ComposeUpParams, ctx: StepContext) -> None:
        """Remove what this run created and bring back the containers it replaced (volumes are kept)."""
        state = ctx.state.get("compose") or {}
        with connected(params) as client:
            project = _project(params, ctx)
            deployer = Deployer(client, project, params, ctx)
            for service, record in reversed(list(state.get("services", {}).items())):
                if record["action"] == "start":
                    client.api.stop(record["id"])
                    continue
                with contextlib.suppress(docker.errors.NotFound):
                    client.api.remove_container(record["id"], force=True)
                old = record.get("old")
                if old:
                    body = restore_body(old)
                    new_id = deployer.create(old["Name"].lstrip("/"), body, None)
                    for net, cfg in list((old["NetworkSettings"].get("Networks") or {}).items())[1:]:
                        client.api.connect_container_to_network(new_id, net, aliases=_aliases(cfg, old))
                    if not record.get("old_running"):
                        client.api.stop(new_id)
                    ctx.logger.info("restored the previous container of %s", service)
            for network in reversed(state.get("networks", [])):
                with contextlib.suppress(docker.errors.NotFound):
                    remove_network(client.networks.get(network))
            if state.get("volumes"):
                ctx.logger.info("kept volumes %s (vicflow never deletes data on rollback)", ", ".join(state["volumes"]))


def _aliases(cfg: dict, old: dict) -> list[str]:
    short = old["Id"][:12]
    return [a for a in (cfg.get("Aliases") or []) if a != short]


def restore_body(old: dict[str, Any]) -> dict[str, Any]:
    """A create body that reproduces an inspected container, on its exact image id."""
    config = dict(old["Config"])
    config["Image"] = old["Image"]
    body = {
        k: config.get(k)
        for k in (
            "Hostname",
            "User",
            "Env",
            "Cmd",
            "Entrypoint",
            "WorkingDir",
            "Labels",
            "ExposedPorts",
            "Volumes",
            "StopSignal",
            "StopTimeout",
            "Healthcheck",
            "Image",
        )
        if config.get(k) is not None
    }
    body["HostConfig"] = old["HostConfig"]
    networks = old["NetworkSettings"].get("Networks") or {}
    if networks:
        name, cfg = next(iter(networks.items()))
        body["NetworkingConfig"] = {"EndpointsConfig": {name: {"Aliases": _aliases(cfg, old)}}}
    return body


class ComposeDown(StepType[ComposeDownParams]):
    """docker-compose down: containers and networks; volumes only when asked."""

    Params = ComposeDownParams
    outputs = {"removed_containers": "names", "removed_networks": "names", "removed_volumes": "names"}
    transient_errors = NETWORK_ERRORS

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        return super().is_transient(exc) or engine_is_transient(exc)

    def _name(self, params: ComposeDownParams, ctx) -> str:
        if params.files:
            return _project(params, ctx).name
        if not params.project:
            raise PermanentError("compose_down needs files or project", "set project: <name>")
        return params.project

    def plan(self, params: ComposeDownParams, ctx: StepContext) -> list[Change]:
        name = self._name(params, ctx)
        with connected(params) as client:
            selector = {"label": f"{LABEL}.project={name}"}
            changes = [
                Change("delete", c.name, "container") for c in client.containers.list(all=True, filters=selector)
            ]
            changes += [Change("delete", n.name, "network") for n in client.networks.list(filters=selector)]
            if params.volumes:
                changes += [
                    Change("delete", v.name, "volume (data is lost)") for v in client.volumes.list(filters=selector)
                ]
        return changes

    def apply(self, params: ComposeDownParams, ctx: StepContext) -> dict[str, Any]:
        name = self._name(params, ctx)
        selector = {"label": f"{LABEL}.project={name}"}
        with connected(params) as client:
            containers = client.containers.list(all=True, filters=selector)
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda c: c.remove(force=True, v=False), containers))
            networks = client.networks.list(filters=selector)
            for network in list(networks):
                if not remove_network(network):
                    networks.remove(network)
                    ctx.logger.warning(
                        "network %s is kept: the engine holds an endpoint of it that no container owns (left by an "
                        "unclean daemon shutdown); restart the Docker daemon, then remove it with docker network rm",
                        network.name,
                    )
            volumes = client.volumes.list(filters=selector) if params.volumes else []
            for volume in volumes:
                volume.remove()
        ctx.changed = bool(containers or networks or volumes)
        return {
            "removed_containers": sorted(c.name for c in containers),
            "removed_networks": sorted(n.name for n in networks),
            "removed_volumes": sorted(v.name for v in volumes),
        }


@hookimpl
def register_step_types(register):
    register("compose_up", ComposeUp)
    register("compose_down", ComposeDown)


def no_such_volume_driver(text: str) -> bool:
    """Whether the engine's error says the volume driver does not exist (moby: ``error looking up volume
    plugin vsphere: plugin "vsphere" not found``), not that an existing driver failed to create the volume."""
    return "plugin" in text and "not found" in text
