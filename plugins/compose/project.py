"""Compose files: interpolation, merge of several -f files, and a normalised project model.

Pure logic (no Docker).  A key we do not support is an error naming it and its file:line:column;
nothing is silently ignored.
"""

from __future__ import annotations

import contextlib
import graphlib
import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vicflow.plugins import dag, yamlpos
from vicflow.plugins.hints import did_you_mean
from vicflow.plugins.step import PermanentError

SERVICE_KEYS = {
    "image",
    "container_name",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "networks",
    "depends_on",
    "restart",
    "healthcheck",
    "labels",
    "user",
    "working_dir",
    "hostname",
    "extra_hosts",
    "links",
    "network_mode",
    "stop_signal",
    "stop_grace_period",
    "logging",
    "dns",
    "dns_search",
    "mem_limit",
    "cpus",
    "cpu_shares",
    "cap_add",
    "cap_drop",
    "privileged",
    "tmpfs",
    "read_only",
    "stdin_open",
    "tty",
    "platform",
    "init",
    "shm_size",
    "ulimits",
    "sysctls",
    "security_opt",
}
# Valid Compose keys this implementation does not support: an error says so instead of ignoring them.
UNSUPPORTED_SERVICE_KEYS = {
    "build",
    "deploy",
    "configs",
    "secrets",
    "cgroup_parent",
    "devices",
    "domainname",
    "external_links",
    "extends",
    "ipc",
    "isolation",
    "mac_address",
    "memswap_limit",
    "pid",
    "profiles",
    "pull_policy",
    "scale",
    "userns_mode",
    "volumes_from",
    "runtime",
    "oom_score_adj",
    "group_add",
    "labels_file",
    "develop",
    "attach",
    "annotations",
}
UNSUPPORTED_HINTS = {
    "build": "vicflow never runs a build (a VCH cannot build either): build and push the image, then set image:",
}
# Service keys a VCH refuses, from VIC's "Supported Docker Compose File Options" ("No. Depends on docker run
# --X", which VIC does not implement).  Checked only when the engine is a VCH (docker info says so).
VIC_UNSUPPORTED = {
    "build": "docker build",
    "cap_add": "docker run --cap-add",
    "cap_drop": "docker run --cap-drop",
    "cgroup_parent": "docker run --cgroup-parent",
    "devices": "docker create --device",
    "dns_search": "docker run --dns-search",
    "tmpfs": "docker run --tmpfs",
    "entrypoint": "docker run --entrypoint",
    "expose": "docker run --expose",
    "extra_hosts": "docker run --add-host",
    "group_add": "docker run --group-add",
    "privileged": "docker run --privileged (a container is a VM)",
    "volumes_from": "sharing volumes between containers (docker run --volumes-from)",
}
TOP_KEYS = {"version", "name", "services", "networks", "volumes"}
UNSUPPORTED_TOP_KEYS = {"configs", "secrets", "include"}
NETWORK_KEYS = {"driver", "external", "name", "labels", "driver_opts"}
VOLUME_KEYS = {"driver", "driver_opts", "external", "name", "labels"}
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
LOGGING_KEYS = {"driver", "options"}
SHAPE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, OSError)  # what a value of the wrong shape raises
LIST_KEYS = {
    "ports",
    "expose",
    "volumes",
    "cap_add",
    "cap_drop",
    "security_opt",
    "links",
    "env_file",
    "dns",
    "dns_search",
    "tmpfs",
    "extra_hosts",
}
LIST_OR_STRING = {"env_file", "dns", "dns_search", "tmpfs"}  # the Compose spec allows one string for these
MAPPING_OR_LIST_KEYS = {"depends_on", "networks", "environment", "labels", "sysctls"}
MAPPING_KEYS = {"healthcheck", "logging", "ulimits"}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
VAR_RE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)  # noqa: E501


class ComposeError(PermanentError):
    """A compose file problem, with file:line:column."""


@dataclass
class Port:
    target: int
    published: int | None = None
    host_ip: str = ""
    protocol: str = "tcp"


@dataclass
class Mount:
    type: str  # volume | bind
    source: str | None
    target: str
    read_only: bool = False


@dataclass
class Service:
    name: str
    image: str
    container_name: str | None = None
    command: list[str] | str | None = None
    entrypoint: list[str] | str | None = None
    environment: dict[str, str | None] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    networks: dict[str, list[str]] = field(default_factory=dict)  # network -> aliases
    depends_on: dict[str, str] = field(default_factory=dict)  # service -> condition
    restart: str = "no"
    healthcheck: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    extra_hosts: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    network_mode: str | None = None
    stop_signal: str | None = None
    stop_grace_period: float | None = None
    host: dict[str, Any] = field(default_factory=dict)  # Engine API HostConfig fields (LogConfig, CapAdd, ...)
    tty: bool = False
    stdin_open: bool = False
    platform: str | None = None

    def config_hash(self) -> str:
        """Compose-style hash of everything that, when changed, requires a new container."""
        data = json.dumps(self.__dict__, default=lambda o: o.__dict__, sort_keys=True)
        return hashlib.sha256(data.encode()).hexdigest()


@dataclass
class Resource:
    """A top-level network or volume."""

    key: str
    name: str
    driver: str | None = None
    driver_opts: dict[str, str] = field(default_factory=dict)
    external: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Project:
    name: str
    files: list[str]
    working_dir: str
    services: dict[str, Service]
    networks: dict[str, Resource]
    volumes: dict[str, Resource]
    warnings: list[str] = field(default_factory=list)  # e.g. unset variables, with file:line

    def levels(self) -> list[list[str]]:
        """Services grouped so that each group depends only on earlier groups."""
        try:
            return dag.levels({name: list(service.depends_on) for name, service in self.services.items()})
        except graphlib.CycleError as exc:  # load() refuses cycles; a Project built by hand may still hold one
            raise ComposeError(f"depends_on cycle among services: {' -> '.join(reversed(exc.args[1]))}") from None


# ------------------------------------------------------------------------------------------ loading


@dataclass
class _Source:
    """One parsed file, for error positions."""

    path: str
    located: yamlpos.Located

    def error(self, where: tuple, message: str, hint: str = "", key: bool = False) -> ComposeError:
        line, col = self.located.where(where, key=key)
        return ComposeError(f"{self.path}:{line}:{col}: {message}", hint or None)


def interpolate(value: Any, env: dict[str, str], src: _Source, path: tuple = (), warnings: list | None = None) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR:+alt} and $$.

    An unset ${VAR} becomes "" with a warning naming it and its file:line, as ``docker compose`` does.
    """
    warnings = [] if warnings is None else warnings
    if isinstance(value, dict):
        return {k: interpolate(v, env, src, (*path, k), warnings) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, src, (*path, i), warnings) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4) or ""
        present = name in env
        val = env.get(name)
        if op in (":-", "-"):
            use_default = (not present) if op == "-" else (not val)
            return interpolate(arg, env, src, path, warnings) if use_default else val
        if op in (":?", "?"):
            if (not present) if op == "?" else (not val):
                raise src.error(
                    path,
                    f"required variable {name} is missing: {arg or 'no message'}",
                    f"set {name} in the step's environment",
                )
            return val
        if op in (":+", "+"):
            return interpolate(arg, env, src, path, warnings) if ((present and val) if op == ":+" else present) else ""
        if not present:
            line, col = src.located.where(path)
            warnings.append(
                f"{src.path}:{line}:{col}: variable {name} is not set; using an empty string "
                f"(set it in the step's environment, or write ${{{name}:-default}})"
            )
            return ""
        return val

    return VAR_RE.sub(replace, value)


def _dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.is_file():
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, val = line.removeprefix("export ").partition("=")
            values[key.strip()] = val.strip().strip("'\"")
    return values


def load_project(
    files: list[str],
    project_name: str | None = None,
    environment: dict[str, str] | None = None,
    use_os_environ: bool = True,
    vch: bool = False,
) -> Project:
    """Read, interpolate, check and merge compose files in order (as ``docker compose -f a -f b``).

    ``vch``: the engine is a VCH, so keys VIC 1.1 does not support are errors too.
    """
    if not files:
        raise ComposeError("no compose files given", "set files: [docker-compose.yml]")
    paths = [Path(f).resolve() for f in files]
    workdir = paths[0].parent
    env = {**(os.environ if use_os_environ else {}), **_dotenv(workdir / ".env"), **(environment or {})}
    merged: dict[str, Any] = {}
    warnings: list[str] = []
    sources: dict[str, _Source] = {}  # service/network/volume key -> where it was last defined
    for path in paths:
        try:
            located = yamlpos.load(yamlpos.read_text(path, "compose file"))
        except yamlpos.YAMLSyntaxError as exc:
            raise ComposeError(f"{path}:{exc.line}:{exc.column}: {exc}", exc.hint or None) from None
        src = _Source(str(path), located)
        data = located.data or {}
        if not isinstance(data, dict):
            raise src.error((), "a compose file is a mapping with services:")
        data = interpolate(data, env, src, (), warnings)
        with _shape_errors(src, (), "compose file"):
            _check_file(data, src, vch)
            for section in ("services", "networks", "volumes"):
                for key in data.get(section) or {}:
                    sources[f"{section}.{key}"] = src
            merged = _merge_file(merged, data)
    name = project_name or merged.get("name") or workdir.name
    name = re.sub(r"[^a-z0-9_-]", "", name.lower())
    if not name:
        raise ComposeError("the project name is empty after normalisation", "set project: to a-z, 0-9, _ or -")
    project = Project(name, [str(p) for p in paths], str(workdir), {}, {}, {}, warnings)
    for section, into in (("networks", project.networks), ("volumes", project.volumes)):
        for key, spec in (merged.get(section) or {}).items():
            with _shape_errors(sources[f"{section}.{key}"], (section, key), f"{section[:-1]} {key!r}"):
                into[key] = _resource(name, key, spec or {})
    for key, spec in (merged.get("services") or {}).items():
        src = sources[f"services.{key}"]
        with _shape_errors(src, ("services", key), f"service {key!r}"):
            project.services[key] = _service(key, spec or {}, project, src, workdir, env)
    if not project.services:
        raise ComposeError(f"{paths[0]}: no services defined", "add services: with at least one service")
    for service in project.services.values():
        for dep in service.depends_on:
            if dep not in project.services:
                raise sources[f"services.{service.name}"].error(
                    ("services", service.name, "depends_on"),
                    f"service {service.name!r} depends on unknown service {dep!r}",
                    f"{did_you_mean(dep, project.services)}".strip(),
                )
    cycle = dag.find_cycle({n: list(s.depends_on) for n, s in project.services.items()})
    if cycle:
        raise sources[f"services.{cycle[0]}"].error(
            ("services", cycle[0], "depends_on"),
            f"depends_on cycle: {' -> '.join([*cycle, cycle[0]])} (each depends on the next)",
            "remove one of these depends_on to break the cycle",
        )
    return project


@contextlib.contextmanager
def _shape_errors(src: _Source, path: tuple, what: str):
    """A value of a shape no check foresaw is still a located error of ``what``, never a traceback."""
    try:
        yield
    except ComposeError:
        raise
    except SHAPE_ERRORS as exc:
        raise src.error(path, f"invalid {what}: {type(exc).__name__}: {str(exc)[:200]}") from None


def _check_keys(
    data: dict, allowed: set, unsupported: set, src: _Source, path: tuple, what: str, vch: bool = False
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


def _check_file(data: dict, src: _Source, vch: bool = False) -> None:
    _check_keys(data, TOP_KEYS, UNSUPPORTED_TOP_KEYS, src, (), "the top level")
    for section in ("services", "networks", "volumes"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise src.error((section,), f"{section} must be a mapping of name: definition")
    for section, allowed in (("networks", NETWORK_KEYS), ("volumes", VOLUME_KEYS)):
        for key, spec in (data.get(section) or {}).items():
            if spec is not None and not isinstance(spec, dict):
                raise src.error((section, key), f"{section[:-1]} {key!r} must be a mapping")
            _check_keys(spec or {}, allowed, set(), src, (section, key), f"{section[:-1]} {key!r}")
    services = data.get("services") or {}
    if not isinstance(services, dict):
        raise src.error(("services",), "services must be a mapping of name: definition")
    for name, spec in services.items():
        if not isinstance(spec, dict):
            raise src.error(("services", name), f"service {name!r} must be a mapping")
        _check_keys(spec, SERVICE_KEYS, UNSUPPORTED_SERVICE_KEYS, src, ("services", name), f"service {name!r}", vch)
        if isinstance(spec.get("logging"), dict):
            _check_keys(
                spec["logging"], LOGGING_KEYS, set(), src, ("services", name, "logging"), f"logging of {name!r}"
            )
        if isinstance(spec.get("healthcheck"), dict):
            _check_keys(
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
                _ports(port)
            except (ValueError, TypeError) as exc:
                raise src.error(
                    ("services", name, "ports", index),
                    f"invalid port {port!r}: {exc}",
                    "use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
                ) from None


def _merge_file(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if key == "services":
            services = dict(out.get("services") or {})
            for name, spec in (value or {}).items():
                services[name] = _merge_service(services.get(name) or {}, spec or {})
            out["services"] = services
        elif key in ("networks", "volumes"):
            section = dict(out.get(key) or {})
            for name, spec in (value or {}).items():
                section[name] = {**(section.get(name) or {}), **(spec or {})}
            out[key] = section
        else:
            out[key] = value
    return out


def _merge_service(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if key in ("environment", "labels", "sysctls"):
            out[key] = {**_mapping(base.get(key)), **_mapping(value)}
        elif key == "ulimits" and isinstance(value, dict):
            out[key] = {**(base.get(key) or {}), **value}
        elif key == "logging" and isinstance(value, dict) and isinstance(base.get(key), dict):
            same = value.get("driver") in (None, base[key].get("driver"))  # compose merges options of one driver
            options = (
                {**(base[key].get("options") or {}), **(value.get("options") or {})} if same else value.get("options")
            )
            out[key] = {**base[key], **value, "options": options}
        elif key in LIST_KEYS - {"volumes"}:  # volumes merge by target, below
            merged = list(_listify(base.get(key)))
            merged += [v for v in _listify(value) if v not in merged]
            out[key] = merged
        elif key == "volumes":
            by_target = {_mount_target(v): v for v in _listify(base.get(key))}
            by_target.update({_mount_target(v): v for v in _listify(value)})
            out[key] = list(by_target.values())
        elif key in ("depends_on", "networks"):
            out[key] = {**_dictify(base.get(key)), **_dictify(value)}
        elif key == "healthcheck" and isinstance(value, dict):
            out[key] = {**(base.get(key) or {}), **value}
        else:
            out[key] = value
    return out


def _listify(value: Any) -> list:
    return value if isinstance(value, list) else ([] if value is None else [value])


def _dictify(value: Any) -> dict:
    if isinstance(value, list):
        return {v: None for v in value}
    return dict(value or {})


def _mapping(value: Any) -> dict[str, str | None]:
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


def _mount_target(spec: Any) -> str:
    if isinstance(spec, dict):
        return str(spec.get("target"))
    parts = str(spec).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


# ------------------------------------------------------------------------------------------ normalise


def _resource(project: str, key: str, spec: dict) -> Resource:
    external = spec.get("external")
    if isinstance(external, dict):  # compose file format 2/3 form: external: {name: x}
        return Resource(key, external.get("name") or spec.get("name") or key, external=True)
    name = spec.get("name") or (key if external else f"{project}_{key}")
    options = {str(k): _scalar(v) for k, v in (spec.get("driver_opts") or {}).items()}
    labels = {str(k): _scalar(v) for k, v in _mapping(spec.get("labels")).items()}
    return Resource(key, name, spec.get("driver"), options, bool(external), labels)


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


def _ports(spec: Any) -> list[Port]:
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


def _service(name: str, spec: dict, project: Project, src: _Source, workdir: Path, env: dict) -> Service:
    path = ("services", name)
    if not spec.get("image"):
        raise src.error(
            path,
            f"service {name!r} has no image",
            "if a later compose file completes this service, list it in files: after this one; vicflow never "
            "builds: push the image to a registry and set image:",
        )
    environment: dict[str, str | None] = {}
    for env_file in _listify(spec.get("env_file")):
        file = env_file.get("path") if isinstance(env_file, dict) else env_file
        env_path = (workdir / file).resolve()
        if not env_path.is_file():
            raise src.error((*path, "env_file"), f"env_file {file!r} of service {name!r} does not exist ({env_path})")
        environment.update(_dotenv(env_path))
    environment.update(_mapping(spec.get("environment")))
    for key, value in list(environment.items()):
        if value is None:  # `- KEY` takes the value from the environment, as compose does
            environment[key] = env.get(key)
    service = Service(
        name=name,
        image=str(spec["image"]),
        container_name=spec.get("container_name"),
        command=spec.get("command"),
        entrypoint=spec.get("entrypoint"),
        environment=environment,
        restart=str(spec.get("restart", "no")),
        labels={k: v or "" for k, v in _mapping(spec.get("labels")).items()},
        user=_opt(spec.get("user")),
        working_dir=spec.get("working_dir"),
        hostname=spec.get("hostname"),
        extra_hosts=_extra_hosts(spec.get("extra_hosts")),
        links=[str(link) for link in _listify(spec.get("links"))],
        network_mode=spec.get("network_mode"),
        stop_signal=spec.get("stop_signal"),
        expose=[str(e) for e in _listify(spec.get("expose"))],
    )
    for port in _listify(spec.get("ports")):
        service.ports.extend(_ports(port))
    if "stop_grace_period" in spec:
        try:
            service.stop_grace_period = duration_seconds(spec["stop_grace_period"])
        except ValueError as exc:
            raise src.error((*path, "stop_grace_period"), str(exc)) from None
    for index, volume in enumerate(_listify(spec.get("volumes"))):
        service.mounts.append(_mount(volume, project, src, (*path, "volumes", index), workdir))
    networks = spec.get("networks")
    if service.network_mode and networks:
        raise src.error(
            (*path, "network_mode"), f"service {name!r} sets both network_mode and networks", "keep one of them"
        )
    for net, opts in _dictify(networks).items():
        if net not in project.networks and net != "default":
            raise src.error(
                (*path, "networks"),
                f"service {name!r} uses undeclared network {net!r}",
                f"{did_you_mean(net, project.networks)}declare it under the top-level networks:",
            )
        service.networks[net] = [str(a) for a in ((opts or {}).get("aliases") or [])]
    if not service.networks and not service.network_mode:
        service.networks["default"] = []
    if "default" in service.networks and "default" not in project.networks:
        project.networks["default"] = Resource("default", f"{project.name}_default", "bridge")
    for dep, opts in _dictify(spec.get("depends_on")).items():
        condition = (opts or {}).get("condition", "service_started")
        if condition not in ("service_started", "service_healthy", "service_completed_successfully"):
            raise src.error(
                (*path, "depends_on", dep),
                f"unknown depends_on condition {condition!r}",
                "use service_started, service_healthy or service_completed_successfully",
            )
        service.depends_on[dep] = condition
    health = spec.get("healthcheck")
    if health is not None:
        try:
            service.healthcheck = _healthcheck(health)
        except ValueError as exc:
            raise src.error((*path, "healthcheck"), f"invalid healthcheck of {name!r}: {exc}") from None
    for key, (api_key, convert) in HOST_CONFIG.items():
        if spec.get(key) is None:
            continue
        try:
            value = convert(spec[key])
        except (ValueError, TypeError, AttributeError) as exc:
            raise src.error((*path, key), f"invalid {key} of {name!r}: {exc}") from None
        service.host[api_key] = value
    service.tty, service.stdin_open = bool(spec.get("tty")), bool(spec.get("stdin_open"))
    service.platform = _opt(spec.get("platform"))
    return service


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
    return [str(v) for v in _listify(value)]


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
        out.append({"Name": str(limit), "Soft": int(soft), "Hard": int(hard)})
    return out


def _cpus(value: Any) -> int:
    cpus = float(value)
    if cpus <= 0:
        raise ValueError("cpus must be more than 0")
    return int(cpus * 1e9)


# compose key -> (Engine API HostConfig key, converter).  API 1.25 has all of them (what VIC 1.1 speaks).
HOST_CONFIG = {
    "logging": ("LogConfig", _logging),
    "cap_add": ("CapAdd", _strings),
    "cap_drop": ("CapDrop", _strings),
    "dns": ("Dns", _strings),
    "dns_search": ("DnsSearch", _strings),
    "mem_limit": ("Memory", parse_bytes),
    "shm_size": ("ShmSize", parse_bytes),
    "cpus": ("NanoCpus", _cpus),
    "cpu_shares": ("CpuShares", int),
    "privileged": ("Privileged", _flag),
    "read_only": ("ReadonlyRootfs", _flag),
    "init": ("Init", _flag),
    "tmpfs": ("Tmpfs", _tmpfs),
    "ulimits": ("Ulimits", _ulimits),
    "sysctls": ("Sysctls", lambda v: {k: x or "" for k, x in _mapping(v).items()}),
    "security_opt": ("SecurityOpt", _strings),
}


def _extra_hosts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{host}:{ip}" for host, ip in value.items()]
    return [str(h).replace("=", ":", 1) for h in _listify(value)]


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def _mount(spec: Any, project: Project, src: _Source, path: tuple, workdir: Path) -> Mount:
    if isinstance(spec, dict):
        kind = spec.get("type", "volume")
        if kind not in ("volume", "bind"):
            raise src.error(path, f"unsupported volume type {kind!r}", "use volume or bind")
        source, target, read_only = spec.get("source"), spec.get("target"), bool(spec.get("read_only", False))
        if not target:
            raise src.error(path, "a long-syntax volume needs target")
    else:
        parts = str(spec).split(":")
        if len(parts) == 1:
            source, target, mode = None, parts[0], ""
        else:
            source, target, mode = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
        read_only = "ro" in mode.split(",")
        kind = "bind" if source and (source.startswith((".", "/", "~"))) else "volume"
    if kind == "bind":
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
    return Mount(kind, source, str(target), read_only)


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
