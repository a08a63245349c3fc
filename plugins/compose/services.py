"""One compose service read into the model: ports, mounts, durations, sizes, healthchecks, host settings."""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vicflow.plugins.compose.errors import Source
from vicflow.plugins.compose.interpolation import read_dotenv
from vicflow.plugins.compose.model import Mount, Port, Project, Resource, Service
from vicflow.plugins.hints import did_you_mean


def listify(value: Any) -> list:
    if isinstance(value, list):
        return value
    if value is None:
        return []
    return [value]


def dictify(value: Any) -> dict:
    if isinstance(value, list):
        return {v: None for v in value}
    return dict(value or {})


def mapping(value: Any) -> dict[str, str | None]:
    """environment/labels as a dict, from either the list (K=V) or the mapping form."""
    if isinstance(value, dict):
        return {str(k): (None if v is None else _scalar(v)) for k, v in value.items()}
    out: dict[str, str | None] = {}
    for item in value or []:
        key, sep, val = str(item).partition("=")
        out[key] = val if sep else None
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ------------------------------------------------------------------------------------------ normalise


def resource(project: str, key: str, spec: dict) -> Resource:
    external = spec.get("external")
    if isinstance(external, dict):  # compose file format 2/3 form: external: {name: x}
        return Resource(key, external.get("name") or spec.get("name") or key, external=True)
    name = spec.get("name") or (key if external else f"{project}_{key}")
    options = {str(k): _scalar(v) for k, v in (spec.get("driver_opts") or {}).items()}
    labels = {str(k): _scalar(v) for k, v in mapping(spec.get("labels")).items()}
    return Resource(key, name, spec.get("driver"), options, bool(external), labels, _ipam(spec.get("ipam")))


def _ipam(spec: dict | None) -> dict[str, Any] | None:
    """A network's ipam as the Engine API's IPAM body, built as docker-compose 1.29.2 builds it
    (``network.py`` ``create_ipam_config_from_dict``: driver ``default`` unless given, every pool's four fields)."""
    if not spec:
        return None
    pools = [
        {
            "Subnet": pool.get("subnet"),
            "IPRange": pool.get("ip_range"),
            "Gateway": pool.get("gateway"),
            "AuxiliaryAddresses": pool.get("aux_addresses"),
        }
        for pool in spec.get("config") or []
    ]
    options = {str(k): _scalar(v) for k, v in (spec.get("options") or {}).items()} or None
    return {"Driver": spec.get("driver") or "default", "Config": pools, "Options": options}


MAX_PORT_RANGE = 1000  # a range that publishes tens of thousands of ports is a mistake, not a deployment
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")


def duration_seconds(value: Any) -> float:
    """Compose durations: 1m30s, 500ms, 10s, or a plain number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    parts = DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {value!r} (use e.g. 10s, 1m30s, 500ms)")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_ports(spec: Any) -> list[Port]:
    if isinstance(spec, dict):
        if "target" not in spec:
            raise ValueError("the long syntax needs target")
        published = spec.get("published")
        return [
            Port(
                int(spec["target"]),
                int(published) if published not in (None, "") else None,
                str(spec.get("host_ip", "")),
                str(spec.get("protocol", "tcp")),
            )
        ]
    text = str(spec)
    text, _, protocol = text.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp", "sctp"):
        raise ValueError(f"unknown protocol {protocol!r}")
    parts = text.rsplit(":", 2)
    host_ip, published, target = "", "", parts[-1]
    if len(parts) == 2:
        published = parts[0]
    elif len(parts) == 3:
        host_ip, published = parts[0].strip("[]"), parts[1]
        try:
            ipaddress.ip_address(host_ip)
        except ValueError:
            raise ValueError(f"{host_ip!r} is not an IP address") from None
    targets = _range(target)
    publisheds = _range(published) if published else [None] * len(targets)
    if len(publisheds) != len(targets):
        raise ValueError("host and container port ranges differ in length")
    return [Port(t, p, host_ip, protocol) for t, p in zip(targets, publisheds, strict=True)]


def _range(text: str) -> list[int]:
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        raise ValueError(f"{text!r} is not a port or port range")
    lo, hi = int(first), int(last) if sep else int(first)
    if not (0 < lo <= hi <= 65535):
        raise ValueError(f"{text!r} is out of range 1-65535")
    if hi - lo >= MAX_PORT_RANGE:
        raise ValueError(f"{text!r} spans {hi - lo + 1} ports; at most {MAX_PORT_RANGE} in one entry")
    return list(range(lo, hi + 1))


def build_service(name: str, spec: dict, project: Project, src: Source, workdir: Path, env: dict) -> Service:
    path = ("services", name)
    if not spec.get("image"):
        raise src.error(
            path,
            f"service {name!r} has no image",
            "if a later compose file completes this service, list it in files: after this one; vicflow never "
            "builds: push the image to a registry and set image:",
        )
    environment = _environment(name, spec, src, workdir, env)
    service = Service(
        name=name,
        image=str(spec["image"]),
        container_name=spec.get("container_name"),
        command=spec.get("command"),
        entrypoint=spec.get("entrypoint"),
        environment=environment,
        restart=str(spec.get("restart", "no")),
        labels={k: v or "" for k, v in mapping(spec.get("labels")).items()},
        user=_opt(spec.get("user")),
        working_dir=spec.get("working_dir"),
        hostname=spec.get("hostname"),
        extra_hosts=_extra_hosts(spec.get("extra_hosts")),
        links=[str(link) for link in listify(spec.get("links"))],
        network_mode=spec.get("network_mode"),
        stop_signal=spec.get("stop_signal"),
        expose=[str(e) for e in listify(spec.get("expose"))],
    )
    for port in listify(spec.get("ports")):
        service.ports.extend(parse_ports(port))
    if "stop_grace_period" in spec:
        try:
            service.stop_grace_period = duration_seconds(spec["stop_grace_period"])
        except ValueError as exc:
            raise src.error((*path, "stop_grace_period"), str(exc)) from None
    for index, volume in enumerate(listify(spec.get("volumes"))):
        service.mounts.append(_mount(volume, project, src, (*path, "volumes", index), workdir))
    _networks(service, spec, project, src)
    _depends_on(service, spec, src)
    health = spec.get("healthcheck")
    if health is not None:
        try:
            service.healthcheck = _healthcheck(health)
        except ValueError as exc:
            raise src.error((*path, "healthcheck"), f"invalid healthcheck of {name!r}: {exc}") from None
    _host_settings(service, spec, src)
    service.tty, service.stdin_open = bool(spec.get("tty")), bool(spec.get("stdin_open"))
    service.platform = _opt(spec.get("platform"))
    return service


def _environment(name: str, spec: dict, src: Source, workdir: Path, env: dict) -> dict[str, str | None]:
    """env_file entries, then environment:; a bare ``- KEY`` takes its value from the environment, as compose does."""
    environment: dict[str, str | None] = {}
    for env_file in listify(spec.get("env_file")):
        file = env_file.get("path") if isinstance(env_file, dict) else env_file
        if not isinstance(file, str):
            raise src.error(("services", name, "env_file"), f"env_file entries of {name!r} are paths, got {file!r}")
        env_path = (workdir / file).resolve()
        error = src.unreadable(("services", name, "env_file"), env_path, f"env_file {file[:200]!r} of service {name!r}")
        if error:
            raise error
        environment.update(read_dotenv(env_path))
    environment.update(mapping(spec.get("environment")))
    return {key: env.get(key) if value is None else value for key, value in environment.items()}


def _networks(service: Service, spec: dict, project: Project, src: Source) -> None:
    path, networks = ("services", service.name), spec.get("networks")
    if service.network_mode and networks:
        raise src.error(
            (*path, "network_mode"), f"service {service.name!r} sets both network_mode and networks", "keep one of them"
        )
    for net, opts in dictify(networks).items():
        if net not in project.networks and net != "default":
            raise src.error(
                (*path, "networks"),
                f"service {service.name!r} uses undeclared network {net!r}",
                f"{did_you_mean(net, project.networks)}declare it under the top-level networks:",
            )
        service.networks[net] = [str(a) for a in ((opts or {}).get("aliases") or [])]
    if not service.networks and not service.network_mode:
        service.networks["default"] = []
    if "default" in service.networks and "default" not in project.networks:
        project.networks["default"] = Resource("default", f"{project.name}_default", "bridge")
    # the first is the container's primary network: the first by name, as docker-compose 1.29.2 picks it
    # (network.py get_networks: "a consistent primary network"), not the file's order
    service.networks = dict(sorted(service.networks.items(), key=lambda item: project.networks[item[0]].name))


def _depends_on(service: Service, spec: dict, src: Source) -> None:
    for dep, opts in dictify(spec.get("depends_on")).items():
        condition = (opts or {}).get("condition", "service_started")
        if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
            raise src.error(
                ("services", service.name, "depends_on", dep),
                f"unknown depends_on condition {condition!r}",
                "use service_started, service_healthy or service_completed_successfully",
            )
        service.depends_on[dep] = condition


def _host_settings(service: Service, spec: dict, src: Source) -> None:
    """The keys that become HostConfig fields as they are (HOST_CONFIG: key -> (API field, converter))."""
    for key, (api_key, convert) in HOST_CONFIG.items():
        if spec.get(key) is None:
            continue
        try:
            value = convert(spec[key])
        except (ValueError, TypeError, AttributeError) as exc:
            raise src.error(("services", service.name, key), f"invalid {key} of {service.name!r}: {exc}") from None
        service.host[api_key] = value


BYTES_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", re.IGNORECASE)


def parse_bytes(value: Any) -> int:
    """Compose sizes: 512m, 1g, 1gb, 100k, 2048 (bytes)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = BYTES_RE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m, 1g, 64k)")
    unit = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[match.group(2).lower()]
    return int(float(match.group(1)) * unit)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        raise ValueError("expected a string or a list of strings")
    return [str(v) for v in listify(value)]


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _logging(value: dict) -> dict[str, Any]:
    options = value.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError("options must be a mapping")
    return {"Type": str(value.get("driver") or "json-file"), "Config": {str(k): _scalar(v) for k, v in options.items()}}


def _tmpfs(value: Any) -> dict[str, str]:
    out = {}
    for item in _strings(value):
        target, _, options = item.partition(":")
        if not target.startswith("/"):
            raise ValueError(f"{item!r}: the tmpfs target must be an absolute path")
        out[target] = options
    return out


def _ulimits(value: dict) -> list[dict[str, Any]]:
    out = []
    for limit, spec in value.items():
        soft, hard = (spec.get("soft"), spec.get("hard")) if isinstance(spec, dict) else (spec, spec)
        if soft is None or hard is None:
            raise ValueError(f"ulimit {limit} needs soft and hard")
        out.append({"Name": str(limit), "Soft": int(soft), "Hard": int(hard)})
    return out


def cpus(value: Any) -> int:
    """Compose's cpus (a float) as the Engine API's NanoCpus."""
    count = float(value)
    if count <= 0:
        raise ValueError("cpus must be more than 0")
    return int(count * 1e9)


# compose key -> (Engine API HostConfig key, converter).  API 1.25 has all of them (what VIC 1.1 speaks).
HOST_CONFIG: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "logging": ("LogConfig", _logging),
    "cap_add": ("CapAdd", _strings),
    "cap_drop": ("CapDrop", _strings),
    "dns": ("Dns", _strings),
    "dns_search": ("DnsSearch", _strings),
    "mem_limit": ("Memory", parse_bytes),
    "shm_size": ("ShmSize", parse_bytes),
    "cpus": ("NanoCpus", cpus),
    "cpu_shares": ("CpuShares", int),
    "privileged": ("Privileged", _flag),
    "read_only": ("ReadonlyRootfs", _flag),
    "init": ("Init", _flag),
    "tmpfs": ("Tmpfs", _tmpfs),
    "ulimits": ("Ulimits", _ulimits),
    "sysctls": ("Sysctls", lambda v: {k: x or "" for k, x in mapping(v).items()}),
    "security_opt": ("SecurityOpt", _strings),
}


def _extra_hosts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{host}:{ip}" for host, ip in value.items()]
    return [str(h).replace("=", ":", 1) for h in listify(value)]


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _mount(spec: Any, project: Project, src: Source, path: tuple, workdir: Path) -> Mount:
    if isinstance(spec, dict):
        kind = spec.get("type", "volume")
        if kind not in ("volume", "bind"):
            raise src.error(path, f"unsupported volume type {kind!r}", "use volume or bind")
        source, target, read_only = spec.get("source"), spec.get("target"), bool(spec.get("read_only", False))
        extra, long = "", True
        if not target:
            raise src.error(path, "a long-syntax volume needs target")
    else:
        parts, extra, long = str(spec).split(":"), "", False
        if len(parts) == 1:
            source, target, mode = None, posixpath.normpath(parts[0]), ""
        else:
            source, target, mode = parts[0], posixpath.normpath(parts[1]), parts[2] if len(parts) > 2 else ""
        read_only = "ro" in mode.split(",")
        kind = "bind" if source and (source.startswith((".", "/", "~"))) else "volume"
        if set(mode.split(",")) - {"ro", "rw", ""}:  # propagation, SELinux labels, nocopy: passed on as written
            extra = mode
    if kind == "bind":
        source = source or ""
        relative = not os.path.isabs(os.path.expanduser(source))
        source = str((workdir / os.path.expanduser(source)).resolve())
        if relative and not Path(source).is_relative_to(workdir):
            raise src.error(
                path,
                f"bind mount {spec if isinstance(spec, str) else source!r} leaves the project folder ({source})",
                "a relative source stays inside the project's folder; write the absolute path if you mean it",
            )
    elif source and source not in project.volumes:
        raise src.error(
            path,
            f"named volume {source!r} is not declared",
            f"{did_you_mean(source, project.volumes)}declare it under the top-level volumes:",
        )
    return Mount(kind, source, str(target), read_only, long=long, mode=extra)


def _healthcheck(spec: dict) -> dict[str, Any]:
    if spec.get("disable"):
        return {"Test": ["NONE"]}
    test = spec.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    out: dict[str, Any] = {"Test": test}
    for key, api in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
        if key in spec:
            out[api] = int(duration_seconds(spec[key]) * 1e9)
    if "retries" in spec:
        out["Retries"] = int(spec["retries"])
    return out
