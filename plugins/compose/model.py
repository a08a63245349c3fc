"""The normalised project: services, ports, mounts, networks and volumes, as the Docker API needs them."""

from __future__ import annotations

import graphlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vicflow.plugins import dag
from vicflow.plugins.compose.errors import ComposeError


@dataclass
class Port:
    target: int
    published: int | None = None
    host_ip: str = ""
    protocol: str = "tcp"


def _hashed(obj: Any) -> dict[str, Any]:
    """What a config hash reads of a model object: its fields, less the newer ones still at their default
    (so a file that uses none of them keeps the hash it had before they existed, and nothing is recreated)."""
    data = dict(obj.__dict__)
    for name, default in getattr(obj, "HASH_SKIP_DEFAULTS", {}).items():
        if data.get(name) == default:
            del data[name]
    return data


@dataclass
class Mount:
    type: str  # volume | bind
    source: str | None
    target: str
    read_only: bool = False
    long: bool = False  # long syntax, a secret or a config: HostConfig.Mounts on API 1.30+, as docker-compose does
    mode: str = ""  # a short syntax's mode as written, when it says more than ro or rw (ro,rslave; z)

    HASH_SKIP_DEFAULTS: ClassVar[dict[str, Any]] = {"long": False, "mode": ""}


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
        data = json.dumps(_hashed(self), default=_hashed, sort_keys=True)
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
    ipam: dict[str, Any] | None = None  # the Engine API's IPAM body (networks only)


@dataclass
class Project:
    name: str
    files: list[str]
    working_dir: str
    services: dict[str, Service]
    networks: dict[str, Resource]
    volumes: dict[str, Resource]
    warnings: list[str] = field(default_factory=list)  # e.g. unset variables, with file:line
    secrets: dict[str, str] = field(default_factory=dict)  # top-level secrets: name -> absolute file
    configs: dict[str, str] = field(default_factory=dict)  # top-level configs: name -> absolute file
    vch: bool = False  # read with VIC 1.1's rules: the engine is a VCH
    engine_warnings: list[str] = field(default_factory=list)  # what the engine's rules add (a VCH's): not yet logged

    def levels(self) -> list[list[str]]:
        """Services grouped so that each group depends only on earlier groups."""
        try:
            return dag.levels({name: list(service.depends_on) for name, service in self.services.items()})
        except graphlib.CycleError as exc:  # load() refuses cycles; a Project built by hand may still hold one
            raise ComposeError(f"depends_on cycle among services: {' -> '.join(reversed(exc.args[1]))}") from None
