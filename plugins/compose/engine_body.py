"""The Engine API body of a compose service's container, and of a container to restore (API 1.25, VIC 1.1's).

Labels are Docker Compose's, so ``docker compose ps`` sees vicflow's containers as its own.
"""

from __future__ import annotations

import shlex
from typing import Any

from vicflow.plugins.clients.dockerapi import COMPOSE_LABEL
from vicflow.plugins.compose.project import Project, Service

LABEL = COMPOSE_LABEL
VERSION_LABEL = "vicflow"


def container_name(project: Project, service: Service) -> str:
    return service.container_name or f"{project.name}-{service.name}-1"


MOUNTS_API = (1, 30)  # HostConfig.Mounts; older engines (VIC 1.1 speaks 1.25) get every mount as a bind


def create_body(project: Project, service: Service, image_id: str, api_version: str = "1.25") -> dict[str, Any]:
    """The Engine API create body for ``service``, for an engine that speaks ``api_version``.

    As docker-compose 1.29.2 does (``service.py`` ``_build_container_volume_options``), long-syntax volumes,
    secrets and configs are ``HostConfig.Mounts`` from API 1.30, binds before it."""
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
    binds, mounts, volumes = _mounts(project, service, tuple(int(n) for n in api_version.split(".")) >= MOUNTS_API)
    restart, _, count = service.restart.partition(":")
    networks = [project.networks[n].name for n in service.networks]
    host_config: dict[str, Any] = {
        "PortBindings": bindings,
        "Binds": binds,
        "RestartPolicy": {"Name": "" if restart == "no" else restart, "MaximumRetryCount": int(count or 0)},
        "ExtraHosts": service.extra_hosts or None,
        "Links": [f"{name}:{alias}" for name, alias in links(project, service)] or None,
        "NetworkMode": service.network_mode or (networks[0] if networks else "default"),
        "Mounts": mounts or None,
        "VolumesFrom": [],
        **service.host,
    }
    body: dict[str, Any] = {
        "Image": service.image,
        "Labels": labels,
        "ExposedPorts": exposed,
        "Volumes": volumes or None,
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
        endpoint: dict[str, Any] = {"Aliases": [service.name, *service.networks[first]]}
        if service.links:
            endpoint["Links"] = [f"{name}:{alias}" for name, alias in links(project, service)]
        body["NetworkingConfig"] = {"EndpointsConfig": {networks[0]: endpoint}}
    return {k: v for k, v in body.items() if v is not None}


def _mounts(project: Project, service: Service, long_mounts: bool) -> tuple[list[str], list[dict], dict[str, dict]]:
    """(Binds, Mounts, Volumes) as docker-compose 1.29.2 makes them (``service.py``
    ``_build_container_volume_options``): a short-syntax volume is a bind ``source:target:mode`` (mode ``rw``
    unless given) and a ``Volumes`` entry, an anonymous one only the entry; a long-syntax one (secrets and
    configs too) is a ``Mounts`` entry from API 1.30, before it a bind and an entry."""
    binds: list[str] = []
    mounts: list[dict[str, Any]] = []
    volumes: dict[str, dict] = {}
    for mount in service.mounts:
        source = project.volumes[mount.source].name if mount.type == "volume" and mount.source else mount.source
        if mount.long and long_mounts:
            mounts.append({"Target": mount.target, "Source": source, "Type": mount.type, "ReadOnly": mount.read_only})
            continue
        volumes[mount.target] = {}
        if source is not None:
            binds.append(f"{source}:{mount.target}:{mount.mode or ('ro' if mount.read_only else 'rw')}")
    return binds, mounts, volumes


def links(project: Project, service: Service) -> list[tuple[str, str]]:
    """(container, alias) for each link, as docker-compose 1.29.2 gives them (``service.py`` ``_get_links``): a
    linked service's container under the link's alias, its own name and its name without the project; the same
    on every network the container joins (a user-defined network reads only its endpoint's links)."""
    out: list[tuple[str, str]] = []
    for link in service.links:
        target, _, alias = link.partition(":")
        if target not in project.services:  # an external container
            out.append((target, alias or target))
            continue
        name = container_name(project, project.services[target])
        short = f"{target}-1" if name == f"{project.name}-{target}-1" else name
        out += [(name, alias or target), (name, name), (name, short)]
    return list(dict.fromkeys(out))


def _argv(value: list[str] | str | None) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def aliases(cfg: dict, old: dict) -> list[str]:
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
        body["NetworkingConfig"] = {"EndpointsConfig": {name: {"Aliases": aliases(cfg, old)}}}
    return body
