"""The shape checks of a compose file: unknown, refused and VIC-unsupported keys, each at its file:line."""

from __future__ import annotations

from typing import Any

from vicflow.plugins.compose import vch_rules
from vicflow.plugins.compose.errors import Source
from vicflow.plugins.compose.keys import (
    DEPLOY_KEYS,
    DEPLOY_SWARM_ONLY,
    FILE_OBJECT_HINT,
    FILE_OBJECT_KEYS,
    FILE_REFERENCE_KEYS,
    HEALTHCHECK_KEYS,
    IPAM_KEYS,
    IPAM_POOL_KEYS,
    LIMITS_KEYS,
    LIST_KEYS,
    LIST_OR_STRING,
    LOGGING_KEYS,
    MAPPING_KEYS,
    MAPPING_OR_LIST_KEYS,
    NETWORK_KEYS,
    RESERVATIONS_KEYS,
    RESOURCES_KEYS,
    RESTART,
    RESTART_POLICY_KEYS,
    SERVICE_KEYS,
    TOP_KEYS,
    UNSUPPORTED_FILE_OBJECT_KEYS,
    UNSUPPORTED_HINTS,
    UNSUPPORTED_SERVICE_KEYS,
    UNSUPPORTED_TOP_KEYS,
    VIC_UNSUPPORTED,
    VOLUME_KEYS,
)
from vicflow.plugins.compose.services import parse_ports
from vicflow.plugins.hints import did_you_mean


def check_keys(
    data: dict,
    allowed: set,
    unsupported: set,
    src: Source,
    path: tuple,
    what: str,
    vch: bool = False,
    hint: str = "",
) -> None:
    for key in data:
        if str(key).startswith("x-"):  # the Compose spec's extension fields, anywhere: ignored by every engine
            continue
        if vch and key in VIC_UNSUPPORTED:  # only service keys are checked with vch
            raise src.error(
                (*path, key),
                f"VIC 1.1 does not support {key!r} in {what}: a VCH does not implement {VIC_UNSUPPORTED[key]}",
                "remove it from the file, or deploy this service to an ordinary Docker engine",
                key=True,
            )
        if key in allowed:
            continue
        if key in unsupported:
            raise src.error(
                (*path, key),
                f"unsupported key {key!r} in {what}",
                hint
                or UNSUPPORTED_HINTS.get(
                    key, "vicflow's compose_up does not implement it; remove it or run that part by hand"
                ),
                key=True,
            )
        raise src.error(
            (*path, key),
            f"unknown key {key!r} in {what}",
            f"{did_you_mean(key, allowed)}supported: {', '.join(sorted(allowed))}",
            key=True,
        )


def check_file(data: dict, src: Source, vch: bool = False, warnings: list[str] | None = None) -> None:
    """One file's keys and shapes; ``vch``: VIC 1.1's refusals and warnings too (appended to ``warnings``)."""
    warnings = [] if warnings is None else warnings
    check_keys(data, TOP_KEYS, UNSUPPORTED_TOP_KEYS, src, (), "the top level")
    for section in ("services", "networks", "volumes", "secrets", "configs"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise src.error((section,), f"{section} must be a mapping of name: definition")
    for section, allowed in (("networks", NETWORK_KEYS), ("volumes", VOLUME_KEYS)):
        for key, spec in (data.get(section) or {}).items():
            if spec is not None and not isinstance(spec, dict):
                raise src.error((section, key), f"{section[:-1]} {key!r} must be a mapping")
            check_keys(spec or {}, allowed, set(), src, (section, key), f"{section[:-1]} {key!r}")
    for key, spec in (data.get("networks") or {}).items():
        _check_ipam(key, (spec or {}).get("ipam"), src)
    for section in ("secrets", "configs"):
        for key, spec in (data.get(section) or {}).items():
            _check_file_object(section, key, spec, src)
    for name, spec in (data.get("services") or {}).items():
        check_service(name, spec, src, vch, warnings)
    if vch:
        vch_rules.check(data, src, warnings)


def _check_ipam(network: str, ipam, src: Source) -> None:
    path = ("networks", network, "ipam")
    if ipam is None:
        return
    if not isinstance(ipam, dict):
        raise src.error(path, f"the ipam of network {network!r} must be a mapping")
    check_keys(ipam, IPAM_KEYS, set(), src, path, f"the ipam of network {network!r}")
    pools = ipam.get("config") or []
    if not isinstance(pools, list):
        raise src.error((*path, "config"), f"ipam config of network {network!r} must be a list of pools")
    for index, pool in enumerate(pools):
        if not isinstance(pool, dict):
            raise src.error((*path, "config", index), "an ipam pool is a mapping (subnet, ip_range, gateway)")
        check_keys(pool, IPAM_POOL_KEYS, set(), src, (*path, "config", index), f"an ipam pool of {network!r}")
    for key in ("options",):
        if ipam.get(key) is not None and not isinstance(ipam[key], dict):
            raise src.error((*path, key), f"ipam {key} of network {network!r} must be a mapping")


def _check_file_object(section: str, key: str, spec, src: Source) -> None:
    """A top-level secret or config: a mapping with file:."""
    what = f"{section[:-1]} {key!r}"
    if not isinstance(spec, dict):
        raise src.error((section, key), f"{what} must be a mapping with file:", FILE_OBJECT_HINT)
    check_keys(spec, FILE_OBJECT_KEYS, UNSUPPORTED_FILE_OBJECT_KEYS, src, (section, key), what, hint=FILE_OBJECT_HINT)
    if not isinstance(spec.get("file"), str) or not spec["file"]:
        raise src.error((section, key), f"{what} has no file:", FILE_OBJECT_HINT)


# A service's nested mappings: (path below the service, allowed keys, valid keys vicflow refuses, what)
NESTED: tuple[tuple[tuple[str, ...], set[str], set[str], str], ...] = (
    (("logging",), LOGGING_KEYS, set(), "logging of {}"),
    (("healthcheck",), HEALTHCHECK_KEYS, set(), "the healthcheck of {}"),
    (("deploy",), DEPLOY_KEYS | DEPLOY_SWARM_ONLY, set(), "deploy of {}"),
    (("deploy", "resources"), RESOURCES_KEYS, set(), "deploy.resources of {}"),
    (("deploy", "resources", "limits"), LIMITS_KEYS, set(), "deploy.resources.limits of {}"),
    (
        ("deploy", "resources", "reservations"),
        RESERVATIONS_KEYS,
        {"devices", "generic_resources"},
        "deploy.resources.reservations of {}",
    ),
    (("deploy", "restart_policy"), RESTART_POLICY_KEYS, set(), "deploy.restart_policy of {}"),
)


def check_service(name: str, spec: Any, src: Source, vch: bool, warnings: list[str] | None = None) -> None:
    """One service's keys, the shapes of its values, its restart policy and its ports."""
    path = ("services", name)
    if not isinstance(spec, dict):
        raise src.error(path, f"service {name!r} must be a mapping")
    check_keys(spec, SERVICE_KEYS, UNSUPPORTED_SERVICE_KEYS, src, path, f"service {name!r}", vch)
    for below, allowed, unsupported, what in NESTED:
        value: Any = spec
        for key in below:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        if not isinstance(value, dict):
            raise src.error((*path, *below), f"{what.format(repr(name))} must be a mapping")
        check_keys(value, allowed, unsupported, src, (*path, *below), what.format(repr(name)))
    for key in DEPLOY_SWARM_ONLY & set((spec.get("deploy") or {}).keys()):
        line, col = src.located.where((*path, "deploy", key), key=True)
        (warnings if warnings is not None else []).append(
            f"{src.path}:{line}:{col}: deploy.{key} of {name!r} is ignored: it is for swarm, which docker compose "
            "ignores outside swarm too"
        )
    if "restart" in spec and str(spec["restart"]).split(":")[0] not in RESTART:
        raise src.error(
            (*path, "restart"), f"restart policy {spec['restart']!r} is not one of {', '.join(sorted(RESTART))}"
        )
    _check_shapes(name, spec, src)
    for section in ("secrets", "configs"):
        _check_references(name, section, spec.get(section), src)
    ports = spec.get("ports") or []
    for index, port in enumerate(ports if isinstance(ports, list) else []):
        try:
            parse_ports(port)
        except (ValueError, TypeError) as exc:
            raise src.error(
                (*path, "ports", index),
                f"invalid port {port!r}: {exc}",
                "use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
            ) from None


def _check_references(name: str, section: str, value: Any, src: Source) -> None:
    """A service's secrets:/configs: a list of names, or of mappings with source (and target, uid, gid, mode)."""
    path = ("services", name, section)
    if value is None:
        return
    if not isinstance(value, list):
        raise src.error(path, f"{section} of service {name!r} must be a list")
    for index, item in enumerate(value):
        if isinstance(item, dict):
            check_keys(item, FILE_REFERENCE_KEYS, set(), src, (*path, index), f"a {section[:-1]} of {name!r}")
            if not isinstance(item.get("source"), str):
                raise src.error((*path, index), f"a {section[:-1]} of {name!r} needs source: (its name)")
        elif not isinstance(item, str):
            raise src.error((*path, index), f"a {section[:-1]} of {name!r} is a name or a mapping with source:")


def _check_shapes(name: str, spec: dict, src: Source) -> None:
    """Keys whose value must be a mapping, a list, or either."""
    shapes: list[tuple[str, Any, str]] = [
        (key, dict | list, "a mapping or a list") for key in MAPPING_OR_LIST_KEYS & spec.keys()
    ]
    shapes += [(key, dict, "a mapping") for key in MAPPING_KEYS & spec.keys()]
    shapes += [(key, list | (str if key in LIST_OR_STRING else tuple), "a list") for key in LIST_KEYS & spec.keys()]
    for key, kinds, what in shapes:
        if spec[key] is not None and not isinstance(spec[key], kinds):
            raise src.error(("services", name, key), f"{key} of service {name!r} must be {what}")
