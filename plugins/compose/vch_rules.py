"""What a VCH does with the compose keys it does not refuse by name: the ones it drops, and the ones it cannot run.

Read from vmware/vic at v1.1.1, ``lib/apiservers/engine/backends/`` (the Docker personality):

- ``container.go`` ``validateCreateConfig`` reads of a container's resources only ``CPUCount`` (or
  ``CpusetCpus``, hijacked as a CPU count) and ``Memory``, which sizes the container VM: at least 512 MiB,
  rounded up to 128 MiB. ``NanoCpus``, ``MemoryReservation`` and ``PidsLimit`` are never read.
- Nothing reads ``HostConfig.RestartPolicy`` or ``Config.Healthcheck`` (``git grep`` over ``lib/`` finds
  neither): a restart policy and a health check are dropped, and inspect shows no ``State.Health``.
- ``container_proxy.go`` ``processVolumeParam`` refuses a bind whose source is a host path
  ("... does not support mounting directories as a data volume.", ``errors.go`` ``InvalidVolumeError``), and
  ``HostConfig.Mounts`` is never read: a secret or config from a file cannot reach a container VM.
- ``network.go`` ``CreateNetwork`` takes one IPAM pool ("at most one ipam config supported"), and of it only
  ``Subnet``, ``Gateway`` and ``IPRange``; the IPAM driver, its options and auxiliary addresses are not read.

``check`` runs on one file's interpolated data, so every refusal and warning names its file:line.
"""

from __future__ import annotations

from typing import Any

from vicflow.plugins.compose.errors import Source
from vicflow.plugins.compose.services import parse_bytes

PRODUCT = "VIC 1.1"
HEALTH_HINT = (
    "write depends_on: [{dep}] (condition: service_started), and after compose_up prove that {dep!r} is ready "
    "with a health_check step (kind: container with a command run in it, e.g. pg_isready, as a detached exec; "
    "http or tcp for a published port)"
)
MEMORY_MIN_MB, MEMORY_ALIGN_MB = 512, 128  # container.go: MemoryMinMB, MemoryAlignMB
# deploy keys a VCH cannot honour: path below deploy -> why
DEPLOY_REFUSED = {
    ("resources", "limits", "cpus"): "a container VM's CPUs are a count (docker run --cpuset-cpus N); a VCH "
    "never reads a CPU quota (NanoCpus)",
    ("resources", "limits", "pids"): "a VCH never reads PidsLimit",
    ("resources", "reservations", "memory"): "a VCH never reads MemoryReservation: the limit alone sizes the "
    "container VM",
    ("resources", "reservations", "cpus"): "a VCH has no CPU reservation per container",
    ("restart_policy",): "a VCH never reads a container's RestartPolicy: a container VM whose process exits "
    "stays stopped",
}


def check(data: dict, src: Source, warnings: list[str]) -> None:
    """Refuse what a VCH cannot run (a located ComposeError); warn, with file:line, about what it drops."""
    for name, spec in (data.get("services") or {}).items():
        if not isinstance(spec, dict):
            continue
        _healthcheck(name, spec, src, warnings)
        _service_healthy(name, spec, src)
        _deploy(name, spec.get("deploy"), src, warnings)
        for section in [key for key in spec if key in ("secrets", "configs")]:  # in the file's order
            if spec.get(section):
                raise src.error(
                    ("services", name, section),
                    f"{PRODUCT} cannot mount the {section} of {name!r}: a {section[:-1]} from a file is a bind "
                    'mount of a host file, and a VCH refuses host paths ("vSphere Integrated Containers does '
                    'not support mounting directories as a data volume.")',
                    "put the file into the image, or pass the value as environment: from a secret input",
                    key=True,
                )
    for key, spec in (data.get("networks") or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("ipam"), dict):
            _ipam(key, spec["ipam"], src)


def _healthcheck(name: str, spec: dict, src: Source, warnings: list[str]) -> None:
    health = spec.get("healthcheck")
    if not isinstance(health, dict) or health.get("disable"):  # a disabled check loses nothing
        return
    line, col = src.located.where(("services", name, "healthcheck"), key=True)
    warnings.append(
        f"{src.path}:{line}:{col}: the healthcheck of {name!r} is dropped on a VCH: VIC 1.1.1 never reads a "
        "container's Healthcheck, so it never runs and the container never reports healthy (prove readiness "
        "with a health_check step after compose_up)"
    )


def _service_healthy(name: str, spec: dict, src: Source) -> None:
    depends = spec.get("depends_on")
    if not isinstance(depends, dict):
        return
    for dep, options in depends.items():
        if isinstance(options, dict) and options.get("condition") == "service_healthy":
            raise src.error(
                ("services", name, "depends_on", dep, "condition"),
                f"service {name!r} waits for {dep!r} to be healthy, which never happens on a VCH: "
                "VIC 1.1.1 drops every healthcheck",
                HEALTH_HINT.format(dep=dep),
            )


def _deploy(name: str, deploy: Any, src: Source, warnings: list[str]) -> None:
    if not isinstance(deploy, dict):
        return
    for below, why in DEPLOY_REFUSED.items():
        value: Any = deploy
        for key in below:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            raise src.error(
                ("services", name, "deploy", *below),
                f"{PRODUCT} does not honour deploy.{'.'.join(below)} of {name!r}: {why}",
                "remove it from the file, or deploy this service to an ordinary Docker engine",
                key=True,
            )
    memory = ((deploy.get("resources") or {}).get("limits") or {}).get("memory")
    if memory is not None:
        _memory_warning(name, memory, src, warnings)


def _memory_warning(name: str, memory: Any, src: Source, warnings: list[str]) -> None:
    """A VCH sizes the container VM from the memory limit, with its own floor and step."""
    try:
        wanted = parse_bytes(memory) // 2**20
    except ValueError:
        return  # the reading of the service reports it
    given = max(wanted, MEMORY_MIN_MB)
    given += -given % MEMORY_ALIGN_MB
    if given != wanted:
        line, col = src.located.where(("services", name, "deploy", "resources", "limits", "memory"))
        warnings.append(
            f"{src.path}:{line}:{col}: {name!r} asks for {wanted} MiB; a VCH gives its container VM {given} MiB "
            f"(at least {MEMORY_MIN_MB} MiB, in steps of {MEMORY_ALIGN_MB} MiB)"
        )


def _ipam(network: str, ipam: dict, src: Source) -> None:
    path = ("networks", network, "ipam")
    pools = ipam.get("config") or []
    if isinstance(pools, list) and len(pools) > 1:
        raise src.error(
            (*path, "config"),
            f"{PRODUCT} does not honour the ipam of network {network!r}: at most one ipam config supported",
            "keep one pool (subnet, gateway, ip_range)",
        )
    refused: list[tuple[str, tuple]] = [
        (key, (*path, key)) for key in ("driver", "options") if ipam.get(key) not in (None, "default", {})
    ]
    for index, pool in enumerate(pools if isinstance(pools, list) else []):
        if isinstance(pool, dict) and pool.get("aux_addresses"):
            refused.append(("aux_addresses", (*path, "config", index, "aux_addresses")))
    if refused:
        key, where = refused[0]
        raise src.error(
            where,
            f"{PRODUCT} does not honour ipam {key} of network {network!r}: a VCH takes only a pool's subnet, "
            "gateway and ip_range",
            "remove it from the file",
            key=True,
        )
