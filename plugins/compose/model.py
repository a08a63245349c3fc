"""The normalised project: services, ports, mounts, networks and volumes, as the Docker API needs them."""

from __future__ import annotations

import graphlib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from vicflow.plugins import dag
from vicflow.plugins.step import PermanentError


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
