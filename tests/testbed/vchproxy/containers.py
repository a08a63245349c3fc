"""Containers and exec as lib/apiservers/engine/backends/container.go and container_proxy.go (v1.1.1) do them.

Create is checked as validateCreateConfig and AddVolumesToContainer check it, then made on the engine behind
with what a VCH does instead of what dockerd would: no Healthcheck (VIC never reads it), ports published on the
VCH's public IP (a VCH maps a binding on its public interface whatever host IP it names, once that IP is
0.0.0.0 or the public IP), volumes from the VCH's volume stores. Inspect and list show what VIC shows.

``Cache`` is the part of the personality's container cache (cache/container_cache.go) that the engine behind
cannot tell: what this personality created, from which image config, with which port bindings. Like VIC's, it
lives in memory: a restarted endpoint knows the containers as a restarted personality does (from the engine).
"""

from __future__ import annotations

import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.testbed.vchproxy import vic, volumes
from tests.testbed.vchproxy.config import VCHConfig

FORCE_LOG_TYPE = "json-file"  # container_proxy.go forceLogType: lets `docker logs` work
PORT_IN_USE = re.compile(
    r"(?:Bind for|listen tcp4?) [\d.:]*?:(\d+)(?: failed: port is already allocated|: bind: address already in use)"
)


@dataclass
class Created:
    """What the personality kept of a container it created (VicContainer): the image's config, the create's
    port bindings."""

    image_labels: dict[str, str]
    image_field: str  # the image config's "Image" (VicContainer.Config is a copy of the image's config)
    bindings: dict[str, list[dict[str, str]]]
    image_healthcheck: dict[str, Any] | None = None


@dataclass
class Cache:
    created: dict[str, Created] = field(default_factory=dict)
    expected: dict[str, Created] = field(default_factory=dict)  # by name, while the engine creates it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, container_id: str, name: str = "") -> Created | None:
        """By id; or by name while its create is under way (the engine's create event can come first)."""
        with self.lock:
            return self.created.get(container_id) or self.expected.get(name)

    def expect(self, name: str, created: Created) -> None:
        with self.lock:
            self.expected[name] = created

    def put(self, container_id: str, name: str, created: Created | None) -> None:
        with self.lock:
            self.expected.pop(name, None)
            if created is not None:
                self.created[container_id] = created


# ------------------------------------------------------------------------------------------------ create


def _image(upstream, reference: str) -> dict[str, Any]:
    status, image = upstream.call("GET", f"/images/{urllib.parse.quote(reference, safe='')}/json")
    if status == 404:  # cache/image_cache.go Get: the client pulls on this 404
        tag = "" if ":" in reference.rsplit("/", 1)[-1] or "@" in reference else ":latest"
        raise vic.VicError(404, f"No such image: {reference}{tag}")
    if status >= 300:
        raise vic.internal(str(image))
    return image


def _check_name(upstream, name: str) -> None:
    """ContainerCreate bails early on a name in use, with its own words (a 409)."""
    if not name:
        return
    status, existing = upstream.call("GET", f"/containers/{urllib.parse.quote(name)}/json")
    if status == 200:
        raise vic.VicError(
            409,
            f'Conflict. The name "{name}" is already in use by container {existing["Id"]}. You have to remove '
            "(or rename) that container to be able to re use that name.",
        )


def check_ports(host_config: dict[str, Any], config: VCHConfig) -> None:
    """validateCreateConfig: a host IP other than 0.0.0.0 or the public interface's, or a host port range."""
    for bindings in (host_config.get("PortBindings") or {}).values():
        for binding in bindings or []:
            host_ip = binding.get("HostIp") or ""
            if host_ip not in ("", "0.0.0.0", config.public_ip):
                raise vic.internal(
                    "host IP for port bindings is only supported for 0.0.0.0 and the public interface IP address"
                )
            start, _, end = str(binding.get("HostPort") or "").partition("-")
            if end and start != end:
                raise vic.internal("host port ranges are not supported for port bindings")


def _volumes(upstream, body: dict[str, Any], name: str, config: VCHConfig) -> None:
    """AddVolumesToContainer: binds (-v name:/dir[:mode]) and anonymous volumes, each a VCH volume created in
    the default store unless it exists; a host directory or a malformed bind is refused (errors.go)."""
    host_config = body.setdefault("HostConfig", {})
    binds = list(host_config.get("Binds") or [])
    targets = set()
    for bind in binds:
        parts = bind.split(":")
        if len(parts) > 1 and parts[0].startswith("/"):
            raise vic.bad_request(f"{vic.PRODUCT} does not support mounting directories as a data volume.")
        if len(parts) > 3:
            raise vic.bad_request(f"volume bind input is invalid: -v {bind}")
        if len(parts) > 1:
            targets.add(parts[1])
            volumes.ensure(upstream, parts[0], config, name, body.get("Image", ""))
    for target in body.get("Volumes") or {}:
        if target not in targets:  # processVolumeParam: an anonymous volume is named by a new UUID
            anonymous = str(uuid.uuid4())
            volumes.ensure(upstream, anonymous, config, name, body.get("Image", ""))
            binds.append(f"{anonymous}:{target}")
    host_config["Binds"] = binds or None


def create(upstream, query: dict[str, list[str]], body: dict[str, Any], config: VCHConfig, cache: Cache) -> dict:
    """ContainerCreate; returns the engine's answer ({"Id", "Warnings"})."""
    name = (query.get("name") or [""])[0]
    _check_name(upstream, name)
    image = _image(upstream, body.get("Image", ""))
    image_config = image.get("Config") or {}
    networks = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
    if len(networks) > 1:
        raise vic.plain("NetworkMode error: Container can be connected to one network endpoint only")
    host_config = body.setdefault("HostConfig", {})
    check_ports(host_config, config)
    if not (body.get("Cmd") or body.get("Entrypoint") or image_config.get("Cmd") or image_config.get("Entrypoint")):
        raise vic.VicError(404, "No command specified")  # derr.NewRequestNotFoundError (vmware/vic#1378)
    body["Volumes"] = {**(image_config.get("Volumes") or {}), **(body.get("Volumes") or {})} or None
    _volumes(upstream, body, name, config)
    body.pop("Healthcheck", None)  # never read by the personality: dropped
    host_config.pop("VolumeDriver", None)  # nor is this (inspect shows the port layer's name there)
    if image_config.get("Healthcheck"):  # nor is the image's: the engine behind must not run it either
        body["Healthcheck"] = {"Test": ["NONE"]}
    asked = {
        port: [dict(b) for b in bindings or []] for port, bindings in (host_config.get("PortBindings") or {}).items()
    }
    host_config["PortBindings"] = {
        port: [{**b, "HostIp": config.public_ip} for b in bindings] for port, bindings in asked.items()
    }  # MapPorts: the port is mapped on the public interface
    created = Created(
        image_config.get("Labels") or {}, image_config.get("Image") or "", asked, image_config.get("Healthcheck")
    )
    if name:
        cache.expect(name, created)
    status, made = upstream.call(
        "POST", "/containers/create" + (f"?name={urllib.parse.quote(name)}" if name else ""), body
    )
    if status >= 300:
        cache.put("", name, None)
        raise vic.VicError(status, made.get("message", str(made)) if isinstance(made, dict) else str(made))
    cache.put(made["Id"], name, created)
    return {"Id": made["Id"], "Warnings": None}


def start_error(status: int, message: str) -> vic.VicError:
    """containerStart: a host port that is taken is "error mapping ports: port N is not available"
    (portmap/portmap.go MapPort, wrapped as an InternalServerError)."""
    taken = PORT_IN_USE.search(message)
    if taken:
        return vic.internal(f"error mapping ports: port {taken.group(1)} is not available")
    return vic.VicError(status, message)


# ------------------------------------------------------------------------------------------------ read


def inspect(container: dict[str, Any], config: VCHConfig, cache: Cache) -> dict[str, Any]:
    """ContainerInfoToDockerContainerInspect: the port layer's name as driver, no health, the port bindings as
    the port layer keeps them ("hostPort:port/proto": no host IP) and, under NetworkSettings, as created (an
    empty host IP shows as 0.0.0.0)."""
    created = cache.get(container["Id"])
    container["Driver"] = vic.PORTLAYER_NAME
    container["GraphDriver"] = {"Name": vic.PORTLAYER_NAME, "Data": None}
    (container.get("State") or {}).pop("Health", None)
    host_config = container.get("HostConfig") or {}
    bindings = host_config.get("PortBindings") or {}
    host_config["PortBindings"] = {p: [{**b, "HostIp": ""} for b in bs or []] for p, bs in bindings.items()} or None
    host_config["VolumeDriver"] = vic.PORTLAYER_NAME
    host_config["LogConfig"] = {"Type": FORCE_LOG_TYPE, "Config": {}}
    settings = container.get("NetworkSettings") or {}
    ports = settings.get("Ports") or {}
    for port, published in ports.items():
        if not published:
            continue
        asked = (created.bindings.get(port) if created else None) or []
        settings["Ports"][port] = [
            {
                "HostIp": (asked[i].get("HostIp") if i < len(asked) else "") or "0.0.0.0",
                "HostPort": b.get("HostPort", ""),
            }
            for i, b in enumerate(published)
            if b.get("HostIp") in (config.public_ip, "0.0.0.0", "")
        ]
    for endpoint in (settings.get("Networks") or {}).values():  # networkFromContainerInfo: aliases with the short id
        aliases = endpoint.get("Aliases") or []
        if aliases and container["Id"][:12] not in aliases:
            endpoint["Aliases"] = [*aliases, container["Id"][:12]]
    if created and created.image_healthcheck:
        container["Config"]["Healthcheck"] = created.image_healthcheck
    container["Mounts"] = [  # mountsFromContainerInfo: name and source are the mount point, the driver the port layer
        {
            "Name": m.get("Destination", ""),
            "Source": m.get("Destination", ""),
            "Destination": "",
            "Driver": vic.PORTLAYER_NAME,
            "Mode": "",
            "RW": m.get("RW", True),
            "Propagation": "",
        }
        for m in container.get("Mounts") or []
        if m.get("Type") == "volume"
    ]
    return container


def listing(containers: list[dict[str, Any]], config: VCHConfig) -> list[dict[str, Any]]:
    """Containers: each binding on the public interface's address (portInformation), no unpublished ports."""
    for summary in containers:
        summary["Ports"] = [{**p, "IP": config.public_ip} for p in summary.get("Ports") or [] if p.get("PublicPort")]
    return containers


# ------------------------------------------------------------------------------------------------ exec


def exec_create(body: dict[str, Any]) -> dict[str, Any]:
    """ContainerExecCreate: only detached; the engine behind runs it without attaching."""
    if not body.get("Cmd"):
        raise vic.plain("No exec command specified")  # router/container/exec.go
    if not body.get("Detach"):
        raise vic.plain(f"{vic.PRODUCT} only supports detached exec commands at this time")
    return {**body, "AttachStdin": False, "AttachStdout": False, "AttachStderr": False}


def exec_inspect(found: dict[str, Any]) -> dict[str, Any]:
    """ContainerExecInspect (backend.ExecInspect): the port layer's exit code, 0 while the task runs."""
    process = found.get("ProcessConfig") or {}
    return {
        "ID": found.get("ID"),
        "Running": bool(found.get("Running")),
        "ExitCode": found.get("ExitCode") if found.get("ExitCode") is not None else 0,
        "ProcessConfig": {
            "tty": bool(process.get("tty")),
            "entrypoint": process.get("entrypoint", ""),
            "arguments": process.get("arguments") or [],
            "privileged": None,
            "user": process.get("user", ""),
        },
        "OpenStdin": False,
        "OpenStderr": False,
        "OpenStdout": False,
        "CanRemove": False,
        "ContainerID": found.get("ContainerID"),
        "DetachKeys": None,
        "Pid": found.get("Pid", 0),
    }
