"""The shape checks of a compose file: unknown, refused and VIC-unsupported keys, each at its file:line."""

from __future__ import annotations

from typing import Any

from vicflow.plugins.compose.interpolation import Source
from vicflow.plugins.compose.keys import (
    HEALTHCHECK_KEYS,
    LIST_KEYS,
    LIST_OR_STRING,
    LOGGING_KEYS,
    MAPPING_KEYS,
    MAPPING_OR_LIST_KEYS,
    NETWORK_KEYS,
    RESTART,
    SERVICE_KEYS,
    TOP_KEYS,
    UNSUPPORTED_HINTS,
    UNSUPPORTED_SERVICE_KEYS,
    UNSUPPORTED_TOP_KEYS,
    VIC_UNSUPPORTED,
    VOLUME_KEYS,
)
from vicflow.plugins.compose.services import parse_ports
from vicflow.plugins.hints import did_you_mean


def check_keys(
    data: dict, allowed: set, unsupported: set, src: Source, path: tuple, what: str, vch: bool = False
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
                UNSUPPORTED_HINTS.get(
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


def check_file(data: dict, src: Source, vch: bool = False) -> None:
    check_keys(data, TOP_KEYS, UNSUPPORTED_TOP_KEYS, src, (), "the top level")
    for section in ("services", "networks", "volumes"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise src.error((section,), f"{section} must be a mapping of name: definition")
    for section, allowed in (("networks", NETWORK_KEYS), ("volumes", VOLUME_KEYS)):
        for key, spec in (data.get(section) or {}).items():
            if spec is not None and not isinstance(spec, dict):
                raise src.error((section, key), f"{section[:-1]} {key!r} must be a mapping")
            check_keys(spec or {}, allowed, set(), src, (section, key), f"{section[:-1]} {key!r}")
    for name, spec in (data.get("services") or {}).items():
        check_service(name, spec, src, vch)


def check_service(name: str, spec: Any, src: Source, vch: bool) -> None:
    """One service's keys, the shapes of its values, its restart policy and its ports."""
    path = ("services", name)
    if not isinstance(spec, dict):
        raise src.error(path, f"service {name!r} must be a mapping")
    check_keys(spec, SERVICE_KEYS, UNSUPPORTED_SERVICE_KEYS, src, path, f"service {name!r}", vch)
    nested = (
        ("logging", LOGGING_KEYS, f"logging of {name!r}"),
        ("healthcheck", HEALTHCHECK_KEYS, f"the healthcheck of {name!r}"),
    )
    for key, allowed, what in nested:
        if isinstance(spec.get(key), dict):
            check_keys(spec[key], allowed, set(), src, (*path, key), what)
    if "restart" in spec and str(spec["restart"]).split(":")[0] not in RESTART:
        raise src.error(
            (*path, "restart"), f"restart policy {spec['restart']!r} is not one of {', '.join(sorted(RESTART))}"
        )
    _check_shapes(name, spec, src)
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
