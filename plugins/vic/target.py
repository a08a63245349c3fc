"""What vic-machine 1.1 knows about a VCH: its settings in the endpoint VM's extraConfig, the checks before a
create (all problems at once), and the outputs a VCH gives (its Docker endpoint, certificates, env file).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicflow.plugins.clients.vsphere import connection, inventory
from vicflow.plugins.errors import PermanentError, TransientError
from vicflow.plugins.step import StepContext
from vicflow.plugins.vic.firewall import RULESET, host_states
from vicflow.plugins.vic.params import VCHCreateParams

PREFIX = "guestinfo.vice./"
CONFIG_KEY = "guestinfo.vicflow.config"  # the settings this VCH was created with (drift detection)
CLIENT_IP_KEY = PREFIX + "init/networks|client/assigned/IP"  # written by the appliance when it has an IP
SERVER_CERT_KEY = PREFIX + "certificate/server_cert"
SERVER_KEY_KEY = PREFIX + "certificate/server_key"
BUILD_KEY = "guestinfo.vicflow.build"  # "incomplete" from the VM's creation until the Docker API answered


def split_store(spec: str) -> tuple[str, str]:
    ds, _, path = spec.partition("/")
    return ds, path.strip("/")


def parse_volume_stores(specs: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for spec in specs:
        location, sep, label = spec.rpartition(":")
        if not sep or not label or "/" not in location:
            raise ValueError(f"volume store {spec!r} must look like DATASTORE/path:label")
        if label in out:
            raise ValueError(f"volume store label {label!r} is used twice")
        out[label] = split_store(location)
    return out


def wanted_config(params: VCHCreateParams, ctx) -> dict[str, Any]:
    """What defines this VCH: stored in its extraConfig and compared on every later run.

    Registry CAs count by content (a renamed file is no drift, a replaced certificate is)."""
    client = params.client_network or params.public_network
    return {
        "compute_resource": params.compute_resource,
        "image_store": params.image_store,
        "volume_stores": sorted(params.volume_stores),
        "bridge_network": params.bridge_network,
        "public_network": params.public_network,
        "client_network": client,
        "management_network": params.management_network or params.public_network,
        "dns_servers": params.dns_servers,
        "public_ip": params.public_ip,
        "public_gateway": params.public_gateway,
        "tls": params.tls,
        "tls_cname": params.tls_cname,
        "cpu": params.cpu,
        "memory_mb": params.memory_mb,
        "use_resource_pool": params.use_resource_pool,
        "version": params.version,
        "registry_ca": sorted("sha256:" + hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in params.registry_ca),
    }


def extra_config(vm) -> dict[str, str]:
    """extraConfig as a dict; the last entry wins (the simulator appends instead of merging)."""
    return {opt.key: opt.value for opt in (vm.config.extraConfig or [])}


def is_vch(vm) -> bool:
    return CONFIG_KEY in extra_config(vm) or half_built(vm)


def half_built(vm) -> bool:
    """A VM vch_create made and never finished (the connection or the appliance failed part-way)."""
    return extra_config(vm).get(BUILD_KEY) == "incomplete"


def owner_note(name: str) -> str:
    """The annotation on a VCH's vApp: how a later run recognises a vApp it may adopt."""
    return f"vicflow vch_create {name}"


class Validation:
    """Collects every problem, then fails once: "validation of configuration failed"."""

    def __init__(self):
        self.problems: list[str] = []

    def check(self, fn, *args):
        try:
            return fn(*args)
        except PermanentError as exc:
            self.problems.append(str(exc).replace("\n  hint:", " -"))
        except ValueError as exc:
            self.problems.append(str(exc))
        return None

    def done(self) -> None:
        if self.problems:
            listing = "\n".join(f"  - {p}" for p in self.problems)
            raise PermanentError(
                f"validation of configuration failed ({len(self.problems)} problems):\n{listing}",
                "fix them all; nothing was created",
            )


@dataclass
class Target:
    """What validation resolved: the objects create will use."""

    si: Any
    dc: Any
    pool: Any
    cluster: Any
    image_ds: Any
    image_path: str
    volume_stores: dict[str, tuple[Any, str]]
    networks: dict[str, Any]


def validate(params: VCHCreateParams, ctx: StepContext) -> Target:

    si = connection.service_instance(params, ctx.resources, ctx.logger)
    v = Validation()
    dc = inventory.datacenter(si, params.datacenter)  # nothing else can be checked without it
    found = v.check(inventory.compute_resource, si, dc, params.compute_resource)
    pool, cluster = (found.pool, found.cluster) if found else (None, None)
    ds_name, image_path = split_store(params.image_store)
    image_ds = v.check(inventory.datastore, dc, ds_name)
    stores = v.check(parse_volume_stores, params.volume_stores) or {}
    if params.volume_stores and stores and "default" not in stores:
        v.problems.append(
            "no volume store is labelled default (docker volume create uses it): add :default to one of volume_stores"
        )
    volume_stores = {}
    for label, (vds, vpath) in stores.items():
        found_ds = v.check(inventory.datastore, dc, vds)
        if found_ds:
            volume_stores[label] = (found_ds, vpath)
    networks = _check_networks(params, dc, v)
    _check_settings(params, v)
    if params.check_firewall and cluster is not None:
        _check_firewall(si, cluster, image_ds, v)
    v.done()
    return Target(si, dc, pool, cluster, image_ds, image_path or params.name, volume_stores, networks)


def _check_networks(params: VCHCreateParams, dc, v: Validation) -> dict[str, Any]:
    """The four roles' port groups: each exists, the bridge is a distributed port group of its own, at most 3."""
    from pyVmomi import vim

    roles = {
        "bridge": params.bridge_network,
        "public": params.public_network,
        "client": params.client_network or params.public_network,
        "management": params.management_network or params.public_network,
    }
    networks = {role: v.check(inventory.network, dc, name) for role, name in roles.items()}
    bridge = networks["bridge"]
    if bridge is not None and not isinstance(bridge, vim.dvs.DistributedVirtualPortgroup):
        v.problems.append(f"bridge network {params.bridge_network!r} must be a distributed port group on vCenter")
    shared = [role for role in ("public", "client", "management") if roles[role] == roles["bridge"]]
    if shared:
        v.problems.append(
            f"bridge network {params.bridge_network!r} is shared with the {', '.join(shared)} "
            "network: the bridge needs a port group of its own"
        )
    distinct = set(roles.values())
    if len(distinct) > 3:
        v.problems.append(
            f"{len(distinct)} distinct networks including the bridge ({', '.join(sorted(distinct))}); "
            "VIC allows at most 3: share one port group between two of public/client/management"
        )
    return networks


def _check_settings(params: VCHCreateParams, v: Validation) -> None:
    """Settings that need one another, and the files to upload."""
    if params.public_ip and not params.public_gateway:
        v.problems.append(f"static public_ip {params.public_ip} needs public_gateway")
    if params.tls == "tls_verify" and not (params.tls_cname or params.public_ip):
        v.problems.append(
            "tls_verify needs a common name for the server certificate: set tls_cname (or a static public_ip)"
        )
    for path in (*params.registry_ca, params.appliance_iso, params.bootstrap_iso):
        if not os.path.isfile(path):
            v.problems.append(f"file {path} does not exist")


def _check_firewall(si, cluster, image_ds, v: Validation) -> None:
    """vSPC is on for the hosts that mount the image store (all of the cluster's when it is unknown)."""
    mounted = {m.key._moId for m in image_ds.host} if image_ds is not None else {h._moId for h in cluster.host}
    states = v.check(host_states, si, [h for h in cluster.host if h._moId in mounted]) or {}
    closed = [name for name, (_, on) in states.items() if not on]
    if closed:
        v.problems.append(
            f"Firewall must permit dst 2377/tcp outbound to the VCH management interface "
            f"(ruleset {RULESET} is off on {', '.join(sorted(closed))}): run the firewall step "
            "with action: allow first"
        )


# ---------------------------------------------------------------------------------------------- outputs


def outputs_of(vm, cert_path: str | None) -> dict[str, Any]:
    config = extra_config(vm)
    settings = json.loads(config.get(CONFIG_KEY, "{}"))
    ip = config.get(CLIENT_IP_KEY)
    tls = settings.get("tls", "no_tls")
    port = 2375 if tls == "no_tls" else 2376
    cert_dir = cert_path or settings.get("cert_path")
    out = {
        "vch_id": vm._moId,
        "name": vm.name,
        "client_ip": ip,
        "docker_host": f"tcp://{ip}:{port}" if ip else None,
        "admin_portal": f"https://{ip}:2378" if ip else None,
        "tls": tls,
        "tls_verify": tls == "tls_verify",
        "cert_path": cert_dir if tls != "no_tls" else None,
        "ca": None,
        "cert": None,
        "key": None,
        "env_file": None,
        "power_state": str(vm.runtime.powerState),
    }
    if cert_dir and tls != "no_tls":
        out["ca"] = f"{cert_dir}/ca.pem"
        if tls == "tls_verify":
            out["cert"], out["key"] = f"{cert_dir}/cert.pem", f"{cert_dir}/key.pem"
    if cert_dir and os.path.isfile(f"{cert_dir}/{vm.name}.env"):
        out["env_file"] = f"{cert_dir}/{vm.name}.env"
    return out


def write_env_file(folder: str, name: str, outputs: dict[str, Any]) -> str:
    """``<cert-path>/<name>.env`` as vic-machine writes it."""
    lines = [f"DOCKER_HOST={outputs['docker_host'].removeprefix('tcp://')}"]
    if outputs["tls"] == "tls_verify":
        lines += ["DOCKER_TLS_VERIFY=1", f"DOCKER_CERT_PATH={folder}"]
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = f"{folder}/{name}.env"
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def leftover(kind: str, name: str, params: VCHCreateParams) -> str:
    """One left-behind object and the govc command that removes it."""
    if kind == "vm":
        return f"VM {name} (half-built VCH) and its files - remove: govc vm.destroy {name}"
    if kind == "container":
        if params.use_resource_pool:
            return f"resource pool {name} (if its creation reached vCenter) - remove: govc pool.destroy {name}"
        return f"vApp {name} (if its creation reached vCenter) - remove: govc vapp.destroy {name}"
    if kind == "directory":
        ds, _, path = name.partition("] ")
        return f"folder {name} - remove: govc datastore.rm -ds {ds.lstrip('[')} {path}"
    return f"{kind} {name}"


def differences(vm, params: VCHCreateParams, ctx) -> list[str]:
    stored = json.loads(extra_config(vm).get(CONFIG_KEY, "{}"))
    wanted = wanted_config(params, ctx)
    return [f"{key}: {stored.get(key)!r} -> {value!r}" for key, value in wanted.items() if stored.get(key) != value]


def adoptable(container, params: VCHCreateParams) -> bool:
    """An empty vApp this step made for this name (its annotation says so), or an empty resource pool."""
    from pyVmomi import vim

    if container.vm:
        return False
    if isinstance(container, vim.VirtualApp):
        config = container.vAppConfig
        return not params.use_resource_pool and config is not None and config.annotation == owner_note(params.name)
    return params.use_resource_pool


def existing_outputs(vm, params: VCHCreateParams, cert_path: str, ctx: StepContext) -> dict[str, Any]:
    """The outputs of the VCH that exists by this name: refused when it is not a VCH or has other settings."""
    if not is_vch(vm):
        raise PermanentError(
            f"a VM named {params.name!r} exists and is not a VCH", "choose another name, or remove that VM"
        )
    changed = differences(vm, params, ctx)
    if changed:
        raise PermanentError(
            f"VCH {params.name!r} exists with a different configuration: " + "; ".join(changed),
            "vch_create never reconfigures a VCH: delete it (vch_delete) or use its settings",
        )
    ctx.changed = False
    ctx.logger.info("VCH %s exists with the same configuration: unchanged", params.name)
    outputs = outputs_of(vm, cert_path)
    if not outputs["client_ip"]:
        raise TransientError(f"VCH {params.name!r} exists but has not reported its IP yet")
    return outputs
