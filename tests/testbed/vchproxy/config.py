"""The VCH's own configuration, as the appliance reads it from its guestinfo at boot.

tests/testbed/appliance.py writes it (a JSON file) when it boots a VCH whose client IP is this endpoint's
address: the VCH's name (``guestinfo.vice./common/name``), its volume stores
(``storage/volume_stores|<label>``), its public IP, and what vSphere says about itself (the port layer's
``VCHInfo``: about.Name, about.OsType, about.Version; lib/portlayer/exec/exec.go). The file is read again when
it changes. Without one the endpoint is a VCH created with vic-machine's defaults and one volume store,
``default``, on the govmomi simulator's vCenter (simulator/vpx/service_content.go).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class VCHConfig:
    name: str = "virtual-container-host"  # vic-machine create's default --name
    public_ip: str = "127.0.0.2"
    volume_stores: dict[str, str] = field(default_factory=lambda: {"default": "ds://LocalDS_0/volumes"})
    host_product: str = "VMware vCenter Server"
    host_os: str = "linux-x64"
    host_os_version: str = "6.5.0"
    cpu_mhz: int = 2294  # the resource pool's limit, as the port layer's VCHInfo reports it
    memory_mb: int = 4096

    @classmethod
    def from_dict(cls, data: dict, public_ip: str) -> VCHConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("public_ip", public_ip)
        return cls(**known)


class ConfigFile:
    """The appliance's configuration: read on first use and again whenever the file changes."""

    def __init__(self, path: str | None, public_ip: str):
        self.path = Path(path) if path else None
        self.public_ip = public_ip
        self.lock = threading.Lock()
        self.seen: float | None = None
        self.current = VCHConfig(public_ip=public_ip)

    def get(self) -> VCHConfig:
        if self.path is None:
            return self.current
        with self.lock:
            try:
                mtime = os.stat(self.path).st_mtime
            except FileNotFoundError:
                return self.current
            if mtime != self.seen:
                self.current = VCHConfig.from_dict(json.loads(self.path.read_text()), self.public_ip)
                self.seen = mtime
            return self.current


def write(path: Path, config: VCHConfig) -> None:
    """What the appliance does at boot: the whole file at once (the endpoint never reads half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(config.__dict__, indent=2))
    os.replace(temporary, path)
