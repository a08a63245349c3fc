"""What compose_up, compose_down and registry_swap do to a project, as library calls with plain arguments.

``up`` is ``docker-compose up -d`` (idempotent; ``state`` records what it did, so ``undo_up`` can put the
previous containers back), ``down`` is ``docker-compose down``. Each takes a connected Docker client, the
loaded project (or its name), the options, a logger and the caller's state; none knows what a step is.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from vicflow.plugins.clients.dockerapi import is_vch
from vicflow.plugins.compose.deploy import Deployer
from vicflow.plugins.compose.engine_body import LABEL, aliases, restore_body
from vicflow.plugins.compose.options import UpOptions
from vicflow.plugins.compose.project import Project, load_project
from vicflow.plugins.step import Kind

Logger = logging.Logger | logging.LoggerAdapter


def read_project(
    files: list[str], name: str | None, environment: dict[str, str], use_os_environ: bool, logger: Logger
) -> Project:
    """The project as the files say, read before any engine is asked (its errors never wait for one)."""
    project = load_project(files, name, environment, use_os_environ)
    for warning in project.warnings:
        logger.warning("%s", warning)
    return project


def for_engine(client, project: Project, environment: dict[str, str], use_os_environ: bool) -> Project:
    """``project`` read again with VIC 1.1's rules too when the engine is a VCH; the warnings those rules add
    (what a VCH drops) are its ``engine_warnings``, which ``plan_up`` and ``up`` log."""
    if not is_vch(client):
        return project
    on_vch = load_project(list(project.files), project.name, environment, use_os_environ, vch=True)
    on_vch.engine_warnings = [w for w in on_vch.warnings if w not in project.warnings]
    return on_vch


def plan_up(client, project: Project, options: UpOptions, logger: Logger) -> list[tuple[str, str, str]]:
    """(action, service, why) per service: create, recreate, start or none."""
    for warning in project.engine_warnings:
        logger.warning("%s", warning)
    deployer = Deployer(client, project, options, logger, {}, [])
    changes = []
    for service in project.services.values():
        action, why = deployer.decide(service)
        changes.append(("none" if action == "unchanged" else action, service.name, why))
    return changes


def plan_volumes(client, project: Project) -> list[str]:
    """The named volumes ``up`` would create: used by a service, not external, not on the engine yet."""
    used = {m.source for s in project.services.values() for m in s.mounts if m.type == "volume" and m.source}
    present = {v.name for v in client.volumes.list()} if used else set()
    specs = [project.volumes[key] for key in sorted(used)]
    return [spec.name for spec in specs if not spec.external and spec.name not in present]


def up(
    client,
    project: Project,
    options: UpOptions,
    logger: Logger,
    state: dict[str, Any],
    leftovers: list[str],
    deadline: float | None = None,
) -> tuple[dict[str, Any], bool]:
    """Converge ``project``: (the outputs compose_up gives, whether anything changed)."""
    for warning in project.engine_warnings:
        logger.warning("%s", warning)
    deployer = Deployer(client, project, options, logger, state, leftovers)
    deployer.ensure_images()
    deployer.ensure_networks()
    deployer.ensure_volumes()
    actions: dict[str, str] = {}
    deadline = deadline or time.monotonic() + 300
    with ThreadPoolExecutor(max_workers=options.parallel, thread_name_prefix="compose") as pool:
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
    if options.remove_orphans:
        for name in deployer.remove_orphans():
            logger.info("removed orphan container %s", name)
    changed = any(a != "unchanged" for a in actions.values()) or bool(
        deployer.state["networks"] or deployer.state["volumes"]
    )
    deployer.forget_started_leftovers()
    return deployer.outputs(actions), changed


def undo_up(client, project: Project, options: UpOptions, logger: Logger, state: dict, leftovers: list[str]) -> None:
    """Remove what ``up`` created (as ``state`` records it) and bring back the containers it replaced.

    Volumes are kept: vicflow never deletes data on rollback."""
    done = state.get("compose") or {}
    deployer = Deployer(client, project, options, logger, state, leftovers)
    for service, record in reversed(list(done.get("services", {}).items())):
        if record["action"] == "start":
            client.api.stop(record["id"])
            continue
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(record["id"], force=True)
        old = record.get("old")
        if old:
            new_id = deployer.create(old["Name"].lstrip("/"), restore_body(old), None)
            for net, cfg in list((old["NetworkSettings"].get("Networks") or {}).items())[1:]:
                client.api.connect_container_to_network(new_id, net, aliases=aliases(cfg, old))
            if not record.get("old_running"):
                client.api.stop(new_id)
            logger.info("restored the previous container of %s", service)
    for network in reversed(done.get("networks", [])):
        with contextlib.suppress(docker.errors.NotFound):
            remove_network(client.networks.get(network))
    if done.get("volumes"):
        logger.info("kept volumes %s (vicflow never deletes data on rollback)", ", ".join(done["volumes"]))


def plan_down(client, name: str, volumes: bool) -> list[tuple[str, str, str, str]]:
    """(action, name, what, kind) for each container, network and (with ``volumes``) volume ``down`` removes."""
    selector = {"label": f"{LABEL}.project={name}"}
    containers = client.containers.list(all=True, filters=selector)
    changes: list[tuple[str, str, str, str]] = [("delete", c.name, "container", Kind.CONTAINER) for c in containers]
    changes += [("delete", n.name, "network", Kind.NETWORK) for n in client.networks.list(filters=selector)]
    if volumes:
        removed = client.volumes.list(filters=selector)
        changes += [("delete", v.name, "volume (data is lost)", Kind.VOLUME) for v in removed]
    return changes


def down(client, name: str, volumes: bool, logger: Logger) -> tuple[dict[str, list[str]], bool]:
    """Remove project ``name``'s containers and networks (and volumes when asked): (outputs, changed)."""
    selector = {"label": f"{LABEL}.project={name}"}
    containers = client.containers.list(all=True, filters=selector)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda c: c.remove(force=True, v=False), containers))
    networks = client.networks.list(filters=selector)
    for network in list(networks):
        if not remove_network(network):
            networks.remove(network)
            logger.warning(
                "network %s is kept: the engine holds an endpoint of it that no container owns (left by an "
                "unclean daemon shutdown); restart the Docker daemon, then remove it with docker network rm",
                network.name,
            )
    removed_volumes = client.volumes.list(filters=selector) if volumes else []
    for volume in removed_volumes:
        volume.remove()
    outputs = {
        "removed_containers": sorted(c.name for c in containers),
        "removed_networks": sorted(n.name for n in networks),
        "removed_volumes": sorted(v.name for v in removed_volumes),
    }
    return outputs, bool(containers or networks or removed_volumes)


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
