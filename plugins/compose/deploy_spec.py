"""A service's ``deploy:`` as docker compose honours it outside swarm: resources and the restart policy.

- ``resources.limits``: ``memory`` -> ``Memory``, ``cpus`` -> ``NanoCpus``, ``pids`` -> ``PidsLimit``;
  ``resources.reservations.memory`` -> ``MemoryReservation`` (docker compose v2, ``pkg/compose/create.go``
  ``setLimits``/``setReservations``; docker-compose 1.29.2 ``project.py``
  ``translate_resource_keys_to_container_config`` has all but ``pids``). A CPU reservation is swarm's: ignored
  with a warning, as both tools do.
- ``restart_policy``: ``condition`` (none, on-failure, any; default any) and ``max_attempts`` become the restart
  policy, replacing ``restart:``; ``delay`` and ``window`` are swarm's and ignored with a warning (docker-compose
  1.29.2 ``translate_deploy_keys_to_container_config``).
- ``replicas`` other than 1 is refused: vicflow runs one container per service.

Both override the service's own ``mem_limit``/``cpus``/``restart``, as in both tools.
"""

from __future__ import annotations

from typing import Any

from vicflow.plugins.compose.errors import Source
from vicflow.plugins.compose.keys import RESTART_CONDITIONS
from vicflow.plugins.compose.model import Service
from vicflow.plugins.compose.services import cpus, parse_bytes


def apply(service: Service, deploy: dict[str, Any], src: Source, warnings: list[str]) -> None:
    path = ("services", service.name, "deploy")
    replicas = deploy.get("replicas")
    if replicas is not None and str(replicas) != "1":
        raise src.error(
            (*path, "replicas"),
            f"deploy.replicas of {service.name!r} is {replicas}: vicflow runs one container per service",
            "remove replicas (or set it to 1); for more instances declare more services",
        )
    if deploy.get("mode") not in (None, "replicated", "global"):
        raise src.error((*path, "mode"), f"deploy.mode {deploy['mode']!r} is not replicated or global")
    resources = deploy.get("resources") or {}
    limits, reservations = resources.get("limits") or {}, resources.get("reservations") or {}
    settings = (
        (limits, "memory", "Memory", parse_bytes),
        (limits, "cpus", "NanoCpus", cpus),
        (limits, "pids", "PidsLimit", int),
        (reservations, "memory", "MemoryReservation", parse_bytes),
    )
    for section, key, api_key, convert in settings:
        if section.get(key) is None:
            continue
        where = (*path, "resources", "limits" if section is limits else "reservations", key)
        try:
            service.host[api_key] = convert(section[key])
        except (ValueError, TypeError) as exc:
            raise src.error(where, f"invalid {'.'.join(where[3:])} of {service.name!r}: {exc}") from None
    if reservations.get("cpus") is not None:
        _ignored(service, (*path, "resources", "reservations", "cpus"), src, warnings)
    policy = deploy.get("restart_policy")
    if policy is not None:
        _restart_policy(service, policy, src, warnings)


def _restart_policy(service: Service, policy: dict[str, Any], src: Source, warnings: list[str]) -> None:
    path = ("services", service.name, "deploy", "restart_policy")
    condition = str(policy.get("condition", "any"))
    if condition not in RESTART_CONDITIONS:
        raise src.error(
            (*path, "condition"),
            f"restart_policy condition {condition!r} of {service.name!r} is not one of {', '.join(RESTART_CONDITIONS)}",
        )
    attempts = policy.get("max_attempts")
    try:
        count = int(attempts) if attempts is not None else 0
    except (ValueError, TypeError):
        raise src.error((*path, "max_attempts"), f"max_attempts {attempts!r} is not a whole number") from None
    service.restart = RESTART_CONDITIONS[condition] + (f":{count}" if count else "")
    for key in ("delay", "window"):
        if key in policy:
            _ignored(service, (*path, key), src, warnings)


def _ignored(service: Service, where: tuple, src: Source, warnings: list[str]) -> None:
    line, col = src.located.where(where, key=True)
    warnings.append(
        f"{src.path}:{line}:{col}: deploy.{'.'.join(where[3:])} of {service.name!r} is ignored: only swarm "
        "applies it (docker compose ignores it outside swarm too)"
    )
