"""The shape checks of a compose file: unknown, refused and VIC-unsupported keys, each at its file:line."""

from __future__ import annotations

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
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise src.error(("services",), "services must be a mapping of name: definition")
    for name, spec in services.items():
        if not isinstance(spec, dict):
            raise src.error(("services", name), f"service {name!r} must be a mapping")
        check_keys(spec, SERVICE_KEYS, UNSUPPORTED_SERVICE_KEYS, src, ("services", name), f"service {name!r}", vch)
        if isinstance(spec.get("logging"), dict):
            check_keys(spec["logging"], LOGGING_KEYS, set(), src, ("services", name, "logging"), f"logging of {name!r}")
        if isinstance(spec.get("healthcheck"), dict):
            check_keys(
                spec["healthcheck"],
                HEALTHCHECK_KEYS,
                set(),
                src,
                ("services", name, "healthcheck"),
                f"the healthcheck of {name!r}",
            )
        if "restart" in spec and str(spec["restart"]).split(":")[0] not in RESTART:
            raise src.error(
                ("services", name, "restart"),
                f"restart policy {spec['restart']!r} is not one of {', '.join(sorted(RESTART))}",
            )
        for key in MAPPING_OR_LIST_KEYS & spec.keys():
            if spec[key] is not None and not isinstance(spec[key], dict | list):
                raise src.error(("services", name, key), f"{key} of service {name!r} must be a mapping or a list")
        for key in MAPPING_KEYS & spec.keys():
            if spec[key] is not None and not isinstance(spec[key], dict):
                raise src.error(("services", name, key), f"{key} of service {name!r} must be a mapping")
        for key in LIST_KEYS & spec.keys():
            if spec[key] is not None and not isinstance(spec[key], list | (str if key in LIST_OR_STRING else tuple)):
                raise src.error(("services", name, key), f"{key} of service {name!r} must be a list")
        ports = spec.get("ports") or []
        for index, port in enumerate(ports if isinstance(ports, list) else []):
            try:
                parse_ports(port)
            except (ValueError, TypeError) as exc:
                raise src.error(
                    ("services", name, "ports", index),
                    f"invalid port {port!r}: {exc}",
                    "use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
                ) from None
