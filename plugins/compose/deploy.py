"""Converge a compose project on one Docker engine: the Deployer, which compose_up and registry_swap use.

It takes plain arguments (a client, a project, options, a logger and the caller's state), never a step's
context. An unchanged service (same config hash, same image id) is never recreated.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from vicflow.plugins.compose.engine_body import (
    LABEL,
    VERSION_LABEL,
    container_name,
    create_body,
    links,
)
from vicflow.plugins.compose.options import UpOptions
from vicflow.plugins.compose.project import Project, Service
from vicflow.plugins.errors import PermanentError, TransientError

VCH_VOLUME_DRIVERS = {"local", "vsphere"}
NOT_STARTED = "created but not started"  # how a leftover container is reported (and recognised when it is not)


def summary_labels(container) -> dict[str, str]:
    """Labels of a container from a sparse listing (``Labels``) or an inspect (``Config.Labels``)."""
    return container.attrs.get("Labels") or (container.attrs.get("Config") or {}).get("Labels") or {}


def summary_state(container) -> str:
    """A container's state from a sparse listing (``State``: "running") or an inspect (``State.Status``)."""
    state = container.attrs.get("State")
    if isinstance(state, dict):
        return state.get("Status", "")
    return str(state or "")


def registry_host(image: str) -> str:
    """The registry an image reference names (Docker's rule: a first part with a dot, a port or localhost)."""
    first, sep, _ = image.partition("/")
    return first if sep and ("." in first or ":" in first or first == "localhost") else "docker.io"


class Deployer:
    """Converges one project on one engine; remembers what it did so that rollback can undo it."""

    def __init__(
        self,
        client,
        project: Project,
        options: UpOptions,
        logger: logging.Logger | logging.LoggerAdapter,
        state: dict[str, Any],
        leftovers: list[str],
    ):
        """``state`` is the caller's record of what was done (kept across attempts, read by ``undo_up``);
        ``leftovers`` the lines naming what was built and could not be removed."""
        self.client, self.project, self.options, self.logger = client, project, options, logger
        self.leftovers = leftovers
        self.lock = threading.Lock()
        self.state = state.setdefault("compose", {"services": {}, "networks": [], "volumes": []})
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
            self._containers = {summary_labels(c).get(f"{LABEL}.service", ""): c for c in found}
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
        if state in ("dead", "removing"):  # a removal the engine did not finish (restarted under it): never reused
            return "recreate", f"container is {state}"
        if self.options.recreate == "never":
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

    # ---- changing
    def ensure_images(self) -> None:
        """Every image present (pulled if allowed) before anything is changed."""
        for service in self.project.services.values():
            if self.options.pull == "always" or (self.options.pull == "missing" and not self.image_id(service.image)):
                if self.options.pull == "never":
                    continue
                self.logger.info("pulling %s", service.image)
                try:
                    self.client.images.pull(service.image, auth_config=self._auth(service.image))
                    self.image_id(service.image, refresh=True)
                except docker.errors.APIError as exc:
                    if self.image_id(service.image):
                        self.logger.warning(
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
        auth = self.options.registry_auth
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
                spec.name,
                driver=spec.driver or "bridge",
                options=spec.driver_opts or None,
                labels=labels,
                ipam=spec.ipam,
                attachable=True,  # as docker-compose 1.29.2 creates them (network.py), so `docker run` may join one
            )
            with self.lock:
                self.state["networks"].append(spec.name)
            self.logger.info("created network %s", spec.name)

    def ensure_volumes(self) -> None:
        """One listing of the engine's volumes; the missing ones created in parallel."""
        used = {m.source for s in self.project.services.values() for m in s.mounts if m.type == "volume" and m.source}
        present = {v.name: v for v in self.client.volumes.list()} if used else {}
        with ThreadPoolExecutor(max_workers=self.options.parallel, thread_name_prefix="volumes") as pool:
            list(pool.map(lambda key: self._ensure_volume(key, present), sorted(used)))

    def _ensure_volume(self, key: str, present: dict[str, Any]) -> None:
        spec = self.project.volumes[key]
        driver = self.options.volume_driver or spec.driver or "local"
        existing = present.get(spec.name)
        if existing is not None:
            if not spec.external and not self._same_driver(existing.attrs.get("Driver"), driver):
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
        self.logger.info("created volume %s (driver %s)", spec.name, driver)

    def _same_driver(self, existing: str | None, wanted: str) -> bool:
        """On a VCH "local" is "vsphere" (VIC 1.1.1 volume.go: "local ... is equivalent to vsphere"), and an
        inspect says vsphere whichever was asked."""
        if self.project.vch and {existing, wanted} <= VCH_VOLUME_DRIVERS:
            return True
        return existing == wanted

    def converge(self, service: Service) -> str:
        action, why = self.decide(service)
        name = container_name(self.project, service)
        if action == "unchanged":
            return action
        old = self.existing(service)
        if action == "start":
            old.start()
            self._record(service.name, {"action": "start", "id": old.id})
            self.logger.info("started %s (%s)", name, why)
            return action
        record: dict[str, Any] = {"action": action}
        if old is not None:
            old.reload()  # the full inspect (list summaries lack HostConfig), to restore it on rollback
            if old.status == "removing":  # the engine finishes it; removing it again is a 409
                raise TransientError(f"the engine is still removing container {name}: waiting for it")
            record.update(old=old.attrs, old_running=old.status == "running")
            if old.status == "dead":  # moby: a dead container "is marked for removal and cannot be started"
                old.remove(v=False, force=True)
            else:
                old.stop(timeout=int(service.stop_grace_period or 10))
                old.remove(v=False)
        body = create_body(self.project, service, self.image_id(service.image) or "", self.client.api.api_version)
        created = self.create(name, body, service)
        record["id"] = created
        self._record(service.name, record)
        self.logger.info("%s %s (%s)", "recreated" if old else "created", name, why)
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
                        container["Id"],
                        self.project.networks[key].name,
                        aliases=[service.name, *aliases],
                        links=links(self.project, service) or None,
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
            self.logger.warning("removed %s: created, but it did not start", name)
        except Exception as exc:
            self.logger.error("could not remove %s, which did not start: %s", name, exc)
            self.leftovers.append(
                f"container {name} ({container_id[:12]}) {NOT_STARTED} - the next run starts it, "
                f"or remove it: docker rm -f {name}"
            )

    def forget_started_leftovers(self) -> None:
        """A container an earlier attempt reported as created-but-not-started that runs now (this attempt
        started it) or is gone (it replaced it) is no longer left behind: the run's summary must not list it."""
        if not any(NOT_STARTED in line for line in self.leftovers):
            return
        idle = {c.id[:12] for c in self.containers(refresh=True).values() if summary_state(c) != "running"}
        self.leftovers[:] = [
            line
            for line in self.leftovers
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
                logging_driver = "logging driver" in text
                if not logging_driver and (exc.status_code or 0) >= 500:  # the engine is restarting
                    raise TransientError(
                        f"container {name!r} did not start: the engine answered {exc.status_code}: {text}",
                        "retried while the engine recovers (a restarting dockerd answers 500)",
                    ) from exc
                if not logging_driver:
                    raise PermanentError(
                        f"container {name!r} was created but does not start: {text}",
                        "check the service's settings and the image",
                    ) from exc
                if time.monotonic() > until:
                    raise PermanentError(
                        f"container {name!r} was created but does not start: {text}",
                        "the logging driver's server must listen before the service starts (depends_on it)",
                    ) from exc
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


def no_such_volume_driver(text: str) -> bool:
    """Whether the engine's error says the volume driver does not exist (moby: ``error looking up volume
    plugin vsphere: plugin "vsphere" not found``), not that an existing driver failed to create the volume."""
    return "plugin" in text and "not found" in text
