"""The ``vsphere`` volume driver of lib/apiservers/engine/backends/volume.go (v1.1.1), on the engine behind.

A VCH volume is a VMDK in one of the VCH's volume stores. Here it is a ``local`` volume of the engine behind,
labelled with its store and capacity, holding what a freshly formatted VMDK holds: ``lost+found`` (the reason
the seed points Postgres' PGDATA at a subdirectory). Its labels in the engine are the VCH's bookkeeping and
never shown: a client sees VIC's volume model (NewVolumeModel).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
import uuid
from typing import Any

from tests.testbed.vchproxy import vic
from tests.testbed.vchproxy.config import VCHConfig

MARK = "vicflow.vch."  # the engine-side labels that make a volume the VCH's
STORE, CAPACITY, DRIVER = MARK + "store", MARK + "capacity_mb", MARK + "driver"
SUPPORTED_DRIVERS = ("vsphere", "local")  # supportedVolDrivers: "local" is the client's default, the same driver
OPTION_KEYS = ("volumestore", "capacity", "flags", "container", "image")  # validDriverOptsKeys
NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")  # volumeNameRegex
HUMAN_SIZE = re.compile(r"^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[bB]?$")  # go-units sizeRegex
DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}


def label(name: str) -> str:
    """lib/portlayer/storage/volume.go label(): the md5 of the ID, 16 hex digits (the filesystem label). It is
    what VIC shows as the volume's Mountpoint."""
    return hashlib.md5(name.encode()).hexdigest()[:16]


def is_vch_volume(volume: dict[str, Any]) -> bool:
    return STORE in (volume.get("Labels") or {})


def view(volume: dict[str, Any], driver: str | None = None) -> dict[str, Any]:
    """NewVolumeModel: Driver, Name, Labels (the user's), Mountpoint (the label). Inspect and list say
    "vsphere" (the port layer's fillVolumeModel); a create answers with the driver it was asked for."""
    labels = {k: v for k, v in (volume.get("Labels") or {}).items() if not k.startswith(MARK)}
    if not is_vch_volume(volume):  # a volume of the engine behind that the VCH did not make
        return {**volume, "Labels": labels or None}
    return {
        "Driver": driver or "vsphere",
        "Labels": labels or None,
        "Mountpoint": label(volume["Name"]),
        "Name": volume["Name"],
        "Options": None,
        "Scope": "",
    }


def capacity_mb(value: str) -> int:
    """validateDriverArgs: a bare number is MB; otherwise go-units FromHumanSize (decimal), in MB."""
    if re.fullmatch(r"-?\d+", value):
        if int(value) < 1:
            raise ValueError(f"Invalid size: {value}")
        return int(value)
    match = HUMAN_SIZE.match(value)
    if not match:
        raise ValueError(f"invalid size: '{value}'")
    size = int(float(match.group(1)) * DECIMAL.get((match.group(3) or "").lower(), 1))
    if size < 1:
        raise ValueError(f"Capacity value too large: {value}")
    return size // 10**6


def request(body: dict[str, Any], config: VCHConfig) -> tuple[str, str, str, int, dict[str, str]]:
    """newVolumeCreateReq: (name, driver, store, capacity in MB or -1, labels), or the personality's error."""
    name = body.get("Name") or str(uuid.uuid4())
    driver = body.get("Driver") or "local"
    if driver not in SUPPORTED_DRIVERS:
        raise vic.VicError(500, f"error looking up volume plugin {driver}: plugin not found")
    if not NAME.match(name):
        raise vic.VicError(
            500, f'volume name "{name}" includes invalid characters, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed'
        )
    options: dict[str, str] = {}
    for key, value in (body.get("DriverOpts") or {}).items():  # normalizeDriverArgs
        if key.lower() not in OPTION_KEYS:
            raise vic.VicError(500, f"bad driver value - {key} is not a supported option")
        options[key.lower()] = str(value)
    capacity = -1
    if "capacity" in options:
        try:
            capacity = capacity_mb(options["capacity"])
        except ValueError as exc:
            raise vic.VicError(500, f"bad driver value - {exc}") from None
    store = options.get("volumestore", "default")
    if store not in config.volume_stores:  # the port layer's CreateVolumeNotFound
        raise vic.VicError(500, f"No volume store named ({store}) exists")
    return name, driver, store, capacity, dict(body.get("Labels") or {})


def create(upstream, body: dict[str, Any], config: VCHConfig) -> dict[str, Any]:
    """VolumeCreate: the volume in its store, with lost+found; a name in use is VIC's conflict (a 500)."""
    name, driver, store, capacity, labels = request(body, config)
    status, _ = upstream.call("GET", f"/volumes/{urllib.parse.quote(name)}")
    if status == 200:
        raise vic.VicError(500, f"A volume named {name} already exists. Choose a different volume name.")
    marks = {STORE: store, CAPACITY: str(capacity), DRIVER: driver}
    status, made = upstream.call(
        "POST", "/volumes/create", {"Name": name, "Driver": "local", "Labels": {**labels, **marks}}
    )
    if status >= 300:
        raise vic.VicError(500, str(made.get("message") if isinstance(made, dict) else made))
    formatted(made["Mountpoint"])
    return view(made, driver)


def formatted(mountpoint: str) -> None:
    """A fresh ext4 filesystem's root: lost+found, root's, mode 0700."""
    os.makedirs(os.path.join(mountpoint, "lost+found"), mode=0o700, exist_ok=True)


def ensure(upstream, name: str, config: VCHConfig, container: str, image: str) -> None:
    """container_proxy.go AddVolumesToContainer: every volume a container names is created in the default store
    (driver vsphere) unless it exists; no default store is "No volume store named (default) exists"."""
    status, _ = upstream.call("GET", f"/volumes/{urllib.parse.quote(name)}")
    if status == 200:
        return
    options = {"flags": "rw", "container": container, "image": image}
    create(upstream, {"Name": name, "Driver": "vsphere", "DriverOpts": options}, config)


def inspect(upstream, name: str) -> dict[str, Any]:
    status, volume = upstream.call("GET", f"/volumes/{urllib.parse.quote(name)}")
    if status == 404:
        raise vic.VicError(404, f"No such volume: {name}")  # errors.go VolumeNotFoundError
    if status >= 300:
        raise vic.VicError(500, f"error from portlayer server: {volume}")
    return view(volume)


def listing(upstream, query: dict[str, list[str]]) -> dict[str, Any]:
    """Volumes, with the filters dangling, name, driver and label (acceptedVolumeFilters)."""
    filters = json.loads(query.get("filters", ["{}"])[0] or "{}")
    drivers = _values(filters.pop("driver", None))
    path = "/volumes" + (f"?filters={urllib.parse.quote(json.dumps(filters))}" if filters else "")
    status, listed = upstream.call("GET", path)
    if status >= 300:
        raise vic.VicError(500, f"error from portlayer server: {listed}")
    volumes = [view(v) for v in listed.get("Volumes") or []]
    if drivers:
        volumes = [v for v in volumes if v["Driver"] in drivers]
    return {"Volumes": volumes, "Warnings": None}


def _values(value) -> list[str]:
    if isinstance(value, dict):
        return [k for k, on in value.items() if on]
    return list(value or [])


def remove(upstream, name: str, query: str) -> None:
    status, answer = upstream.call("DELETE", f"/volumes/{urllib.parse.quote(name)}" + (f"?{query}" if query else ""))
    if status == 404:
        raise vic.VicError(404, f"Get {name}: no such volume")  # VolumeRm, RemoveVolumeNotFound
    if status >= 300:
        message = answer.get("message") if isinstance(answer, dict) else str(answer)
        raise vic.VicError(409 if status == 409 else 500, message)
