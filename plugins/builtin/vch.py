"""``vch_create``, ``vch_inspect``, ``vch_delete``: a Virtual Container Host as vic-machine 1.1 builds it.

Differences from vic-machine, on purpose: every validation problem is reported at once, and a
create that fails part-way removes what it built (vic-machine 1.1 left half-built VCHs behind).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import requests
from pydantic import Field
from vicflow.plugins import Change, PermanentError, StepContext, StepType, TransientError, hookimpl
from vicflow.plugins.builtin.firewall import RULESET, host_states
from vicflow.plugins.clients import certs, vsphere
from vicflow.plugins.clients.dockerapi import DockerParams, connected
from vicflow.plugins.paths import BlueprintFile

PREFIX = "guestinfo.vice./"
CONFIG_KEY = "guestinfo.vicflow.config"  # the settings this VCH was created with (drift detection)
CLIENT_IP_KEY = PREFIX + "init/networks|client/assigned/IP"  # written by the appliance when it has an IP
SERVER_CERT_KEY = PREFIX + "certificate/server_cert"
SERVER_KEY_KEY = PREFIX + "certificate/server_key"
BUILD_KEY = "guestinfo.vicflow.build"  # "incomplete" from the VM's creation until the Docker API answered


class VCHParams(vsphere.VSphereParams):
    name: str = Field(description="VCH name (the vApp and the endpoint VM)")
    datacenter: str | None = None


class VCHCreateParams(VCHParams):
    compute_resource: str = Field(description="cluster, host or resource pool path")
    image_store: str = Field(description="DATASTORE[/path]; the path defaults to the VCH name")
    volume_stores: list[str] = Field(default_factory=list, description="DATASTORE/path:label, one labelled default")
    bridge_network: str = Field(description="a distributed port group used by no other role")
    public_network: str = "VM Network"
    client_network: str | None = Field(None, description="default: public_network")
    management_network: str | None = Field(None, description="default: public_network")
    dns_servers: list[str] = Field(default_factory=list)
    public_ip: str | None = Field(None, description="static IP/prefix, e.g. 10.0.0.5/24 (needs public_gateway)")
    public_gateway: str | None = None
    registry_ca: list[BlueprintFile] = Field(default_factory=list, description="CA files of registries to trust")
    tls: Literal["no_tls", "tls_noverify", "tls_verify"] = "tls_verify"
    tls_cname: str | None = Field(None, description="common name of the server certificate (tls_verify)")
    cert_path: BlueprintFile | None = Field(None, description="certificate folder (default: ./<name>)")
    cpu: int = Field(1, ge=1, le=64)
    memory_mb: int = Field(2048, ge=512)
    use_resource_pool: bool = Field(False, description="a resource pool instead of a vApp (--use-rp)")
    appliance_iso: BlueprintFile = Field(
        "appliance.iso", validate_default=True, description="path of the appliance ISO to upload"
    )
    bootstrap_iso: BlueprintFile = Field(
        "bootstrap.iso", validate_default=True, description="path of the bootstrap ISO to upload"
    )
    version: str = "v1.1.1"
    appliance_timeout_seconds: float = Field(180, gt=0, description="wait this long for the appliance's IP")
    check_firewall: bool = True
    cleanup_timeout_seconds: float = Field(
        60, gt=0, description="after a failed create, keep trying this long to remove what it built"
    )


class VCHDeleteParams(VCHParams):
    force: bool = Field(False, description="also delete volume stores, and powered-on container VMs")


def _store(spec: str) -> tuple[str, str]:
    ds, _, path = spec.partition("/")
    return ds, path.strip("/")


def _volume_stores(specs: list[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for spec in specs:
        location, sep, label = spec.rpartition(":")
        if not sep or not label or "/" not in location:
            raise ValueError(f"volume store {spec!r} must look like DATASTORE/path:label")
        if label in out:
            raise ValueError(f"volume store label {label!r} is used twice")
        out[label] = _store(location)
    return out


def _wanted_config(params: VCHCreateParams, ctx) -> dict[str, Any]:
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
        "registry_ca": sorted(
            "sha256:" + hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in params.registry_ca
        ),
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


def validate(params: VCHCreateParams, ctx) -> Target:
    from pyVmomi import vim

    si = vsphere.service_instance(params, ctx.resources, ctx.logger)
    v = Validation()
    dc = vsphere.datacenter(si, params.datacenter)  # nothing else can be checked without it
    found = v.check(vsphere.compute_resource, si, dc, params.compute_resource)
    pool, cluster = (found.pool, found.cluster) if found else (None, None)
    ds_name, image_path = _store(params.image_store)
    image_ds = v.check(vsphere.datastore, dc, ds_name)
    stores = v.check(_volume_stores, params.volume_stores) or {}
    if params.volume_stores and stores and "default" not in stores:
        v.problems.append(
            "no volume store is labelled default (docker volume create uses it): add :default to one of volume_stores"
        )
    volume_stores = {}
    for label, (vds, vpath) in stores.items():
        found_ds = v.check(vsphere.datastore, dc, vds)
        if found_ds:
            volume_stores[label] = (found_ds, vpath)
    roles = {
        "bridge": params.bridge_network,
        "public": params.public_network,
        "client": params.client_network or params.public_network,
        "management": params.management_network or params.public_network,
    }
    networks = {role: v.check(vsphere.network, dc, name) for role, name in roles.items()}
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
    if params.public_ip and not params.public_gateway:
        v.problems.append(f"static public_ip {params.public_ip} needs public_gateway")
    if params.tls == "tls_verify" and not (params.tls_cname or params.public_ip):
        v.problems.append(
            "tls_verify needs a common name for the server certificate: set tls_cname (or a static public_ip)"
        )
    for path in (*params.registry_ca, params.appliance_iso, params.bootstrap_iso):
        if not os.path.isfile(path):
            v.problems.append(f"file {path} does not exist")
    if params.check_firewall and cluster is not None:
        # the hosts that mount the image store; all of the cluster's when the datastore is unknown
        mounted = {m.key._moId for m in image_ds.host} if image_ds is not None else {h._moId for h in cluster.host}
        states = v.check(host_states, si, [h for h in cluster.host if h._moId in mounted]) or {}
        closed = [name for name, (_, on) in states.items() if not on]
        if closed:
            v.problems.append(
                f"Firewall must permit dst 2377/tcp outbound to the VCH management interface "
                f"(ruleset {RULESET} is off on {', '.join(sorted(closed))}): run the firewall step "
                "with action: allow first"
            )
    v.done()
    return Target(si, dc, pool, cluster, image_ds, image_path or params.name, volume_stores, networks)


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


# ---------------------------------------------------------------------------------------------- create


class VCHCreate(StepType[VCHCreateParams]):
    """vic-machine create, validated up front, idempotent, and never left half-built."""

    Params = VCHCreateParams
    outputs = {
        "docker_host": "tcp://IP:2375 (no TLS) or :2376",
        "admin_portal": "https://IP:2378",
        "vch_id": "managed object id of the endpoint VM",
        "client_ip": "the appliance's client IP",
        "tls": "no_tls, tls_noverify or tls_verify",
        "tls_verify": "whether clients must verify",
        "cert_path": "certificate folder",
        "ca": "ca.pem",
        "cert": "client cert.pem",
        "key": "client key.pem",
        "env_file": "<cert_path>/<name>.env",
        "name": "the VCH name",
        "power_state": "endpoint VM power",
    }
    transient_errors = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, *vsphere.CONNECTION_ERRORS)

    def plan(self, params: VCHCreateParams, ctx: StepContext) -> list[Change]:
        target = validate(params, ctx)
        vm = vsphere.find_vm(target.si, target.dc, params.name)
        if vm is None:
            kind = "resource pool" if params.use_resource_pool else "vApp"
            return [
                Change(
                    "create",
                    params.name,
                    f"{kind}, endpoint VM ({params.cpu} vCPU, {params.memory_mb} MB), "
                    f"ISOs, volume stores, power on ({params.tls})",
                )
            ]
        return [
            Change(
                "none" if not _differences(vm, params, ctx) else "error",
                params.name,
                "; ".join(_differences(vm, params, ctx)) or "exists with the same configuration",
            )
        ]

    def apply(self, params: VCHCreateParams, ctx: StepContext) -> dict[str, Any]:
        target = validate(params, ctx)
        cert_path = os.path.abspath(ctx.path(params.cert_path or params.name))
        vm = vsphere.find_vm(target.si, target.dc, params.name)
        ctx.state["created"] = []
        if vm is not None and half_built(vm):
            ctx.logger.warning(
                "VCH %s is half-built (an earlier create failed part-way): removing it first", params.name
            )
            ctx.state["created"].append(["vm", vm, params.name])
            self._remove(params, ctx)
            ctx.leftovers.clear()
        elif vm is not None:
            return self._existing(vm, params, cert_path, ctx)
        other = vsphere.find_vapp_or_pool(target.si, target.dc, params.name)
        if other is not None and not self._adoptable(other, params):
            raise PermanentError(
                f"a vApp or resource pool named {params.name!r} exists and is not a VCH",
                "choose another name, or remove it",
            )
        ctx.state["adopt"] = other
        try:
            return self._build(params, target, cert_path, ctx)
        except BaseException as exc:
            ctx.logger.error("create failed (%s: %s); removing what this run built", type(exc).__name__, exc)
            self._clean_up(params, ctx)
            raise  # the original error: a cut connection stays retryable

    @staticmethod
    def _adoptable(container, params) -> bool:
        """An empty vApp this step made for this name (its annotation says so), or an empty resource pool."""
        from pyVmomi import vim

        if container.vm:
            return False
        if isinstance(container, vim.VirtualApp):
            return not params.use_resource_pool and container.vAppConfig.annotation == owner_note(params.name)
        return params.use_resource_pool

    def _existing(self, vm, params, cert_path, ctx) -> dict[str, Any]:
        if not is_vch(vm):
            raise PermanentError(
                f"a VM named {params.name!r} exists and is not a VCH", "choose another name, or remove that VM"
            )
        differences = _differences(vm, params, ctx)
        if differences:
            raise PermanentError(
                f"VCH {params.name!r} exists with a different configuration: " + "; ".join(differences),
                "vch_create never reconfigures a VCH: delete it (vch_delete) or use its settings",
            )
        ctx.changed = False
        ctx.logger.info("VCH %s exists with the same configuration: unchanged", params.name)
        outputs = outputs_of(vm, cert_path)
        if not outputs["client_ip"]:
            raise TransientError(f"VCH {params.name!r} exists but has not reported its IP yet")
        return outputs

    def _build(self, params: VCHCreateParams, target: Target, cert_path: str, ctx) -> dict[str, Any]:
        from pyVmomi import vim

        created = ctx.state["created"]
        settings = {**_wanted_config(params, ctx), "cert_path": cert_path}
        if params.tls != "no_tls":
            cname = params.tls_cname or (params.public_ip or "").split("/")[0]
            names = [n for n in (cname, (params.public_ip or "").split("/")[0]) if n]
            if not os.path.isfile(f"{cert_path}/server-cert.pem"):
                ctx.logger.info("generating %s certificates in %s", params.tls, cert_path)
                certs.generate(cert_path, cname or params.name, names, client=params.tls == "tls_verify")
                created.append(["certs", cert_path, cert_path])
            else:
                ctx.logger.info("reusing the certificates in %s", cert_path)
        container = self._container(params, target, ctx)
        vm = self._vm(params, target, container, ctx)
        folder = vm.config.files.vmPathName.split("]", 1)[1].strip().rsplit("/", 1)[0]
        iso = f"{params.version}-appliance.iso"
        self._upload(
            params,
            target,
            folder,
            {iso: params.appliance_iso, f"{params.version}-bootstrap.iso": params.bootstrap_iso},
            ctx,
        )
        keys = self._extra_config(params, target, settings, cert_path, ctx)
        self._cdrom_and_config(vm, target, folder, iso, keys, ctx)
        self._directories(params, target, ctx)
        vsphere.wait_task(vm.PowerOnVM_Task(), f"power on {params.name}", ctx.remaining(300))
        ip = self._wait_for_ip(vm, params, ctx)
        outputs = outputs_of(vm, cert_path)
        self._check_docker(outputs, ctx)
        outputs["env_file"] = write_env_file(cert_path, params.name, outputs)
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=BUILD_KEY, value="complete")])
        vsphere.wait_task(vm.ReconfigVM_Task(spec=spec), "mark the VCH complete", ctx.remaining(300))
        ctx.logger.info(
            "Installer completed successfully: DOCKER_HOST=%s:%s, admin portal %s",
            ip,
            outputs["docker_host"].rsplit(":", 1)[1],
            outputs["admin_portal"],
        )
        return outputs

    def _container(self, params, target, ctx):
        from pyVmomi import vim

        def allocation():
            return vim.ResourceAllocationInfo(
                reservation=0, limit=-1, expandableReservation=True, shares=vim.SharesInfo(level="normal", shares=0)
            )

        kind = "resource pool" if params.use_resource_pool else "vApp"
        entry = ["container", ctx.state.get("adopt"), params.name]
        ctx.state["created"].append(entry)  # before the call: its answer may be lost in a cut
        if entry[1] is not None:
            ctx.logger.info("adopting the empty %s %s an earlier create left", kind, params.name)
            return entry[1]
        spec = vim.ResourceConfigSpec(cpuAllocation=allocation(), memoryAllocation=allocation())
        if params.use_resource_pool:
            entry[1] = target.pool.CreateResourcePool(name=params.name, spec=spec)
        else:
            entry[1] = target.pool.CreateVApp(
                name=params.name,
                resSpec=spec,
                configSpec=vim.vApp.VAppConfigSpec(annotation=owner_note(params.name)),
                vmFolder=target.dc.vmFolder,
            )
        return entry[1]

    def _vm(self, params, target, container, ctx):
        from pyVmomi import vim

        devices = [
            vim.vm.device.VirtualDeviceSpec(
                operation="add",
                device=vim.vm.device.ParaVirtualSCSIController(key=-100, busNumber=0, sharedBus="noSharing"),
            )
        ]
        seen: list[str] = []
        for role in ("bridge", "public", "client", "management"):
            net = target.networks[role]
            if net.name in seen:
                continue
            seen.append(net.name)
            if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
                backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                    port=vim.dvs.PortConnection(
                        portgroupKey=net.key, switchUuid=net.config.distributedVirtualSwitch.uuid
                    )
                )
            else:
                backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(deviceName=net.name, network=net)
            devices.append(
                vim.vm.device.VirtualDeviceSpec(
                    operation="add",
                    device=vim.vm.device.VirtualVmxnet3(
                        key=-200 - len(seen),
                        backing=backing,
                        addressType="generated",
                        connectable=vim.vm.device.VirtualDevice.ConnectInfo(
                            startConnected=True, allowGuestControl=True
                        ),
                    ),
                )
            )
        devices.append(
            vim.vm.device.VirtualDeviceSpec(
                operation="add",
                device=vim.vm.device.VirtualSerialPort(
                    key=-300,
                    yieldOnPoll=True,
                    backing=vim.vm.device.VirtualSerialPort.URIBackingInfo(
                        direction="client", serviceURI="tcp://127.0.0.1:2377"
                    ),
                ),
            )
        )
        spec = vim.vm.ConfigSpec(
            name=params.name,
            guestId="otherGuest64",
            numCPUs=params.cpu,
            memoryMB=params.memory_mb,
            deviceChange=devices,
            files=vim.vm.FileInfo(vmPathName=f"[{target.image_ds.name}]"),
            extraConfig=[vim.option.OptionValue(key=BUILD_KEY, value="incomplete")],
        )
        entry = ["vm", None, params.name]
        ctx.state["created"].append(entry)  # before the call: its answer may be lost in a cut
        if params.use_resource_pool:
            task = target.dc.vmFolder.CreateVM_Task(config=spec, pool=container)
        else:
            task = container.CreateChildVM_Task(config=spec)
        entry[1] = vsphere.wait_task(task, f"create VM {params.name}", ctx.remaining(300))
        return entry[1]

    def _upload(self, params, target, folder, files: dict[str, str], ctx) -> None:
        """PUT each ISO into the VM's folder over the datastore HTTP interface (pinned certificate)."""
        host, port = vsphere.split_server(vsphere._setting(params, "server"))
        thumbprint = None if params.insecure else vsphere._setting(params, "thumbprint")
        session = vsphere.pinned_session(host, thumbprint, ctx.remaining(60))
        session.headers["Cookie"] = target.si._stub.cookie
        for name, source in files.items():
            url = f"https://{host}:{port}/folder/{folder}/{name}"
            with open(source, "rb") as data:
                response = session.put(
                    url,
                    data=data,
                    timeout=ctx.remaining(300),
                    params={"dcPath": target.dc.name, "dsName": target.image_ds.name},
                )
            if response.status_code not in (200, 201, 204):
                raise TransientError(
                    f"upload of {name} to [{target.image_ds.name}] {folder} failed: "
                    f"HTTP {response.status_code} {response.text[:200]}"
                )
            ctx.logger.info("uploaded %s to [%s] %s", name, target.image_ds.name, folder)

    def _extra_config(self, params, target, settings, cert_path, ctx) -> dict[str, str]:
        keys = {
            CONFIG_KEY: json.dumps(settings, sort_keys=True),
            PREFIX + "common/name": params.name,
            PREFIX + "network/bridge_network": params.bridge_network,
            PREFIX + "storage/image_stores|0": f"ds://{target.image_ds.name}/{target.image_path}",
            PREFIX + "network/dns": ",".join(params.dns_servers),
            PREFIX + "connect/target": vsphere._setting(params, "server") or "",
        }
        for label, (ds, path) in target.volume_stores.items():
            keys[PREFIX + f"storage/volume_stores|{label}"] = f"ds://{ds.name}/{path}"
        for role in ("public", "client", "management"):
            keys[PREFIX + f"init/networks|{role}/network"] = target.networks[role].name
        if params.public_ip:
            keys[PREFIX + "init/networks|public/ip"] = params.public_ip
            keys[PREFIX + "init/networks|public/gateway"] = params.public_gateway or ""
        if params.registry_ca:
            pem = b"".join(Path(f).read_bytes() for f in params.registry_ca)
            keys[PREFIX + "registry/ca"] = base64.b64encode(pem).decode()
        if params.tls != "no_tls":
            keys[SERVER_CERT_KEY] = base64.b64encode(Path(f"{cert_path}/server-cert.pem").read_bytes()).decode()
            keys[SERVER_KEY_KEY] = base64.b64encode(Path(f"{cert_path}/server-key.pem").read_bytes()).decode()
            if params.tls == "tls_verify":
                keys[PREFIX + "certificate/client_ca"] = base64.b64encode(
                    Path(f"{cert_path}/ca.pem").read_bytes()
                ).decode()
        return keys

    def _cdrom_and_config(self, vm, target, folder, iso, keys, ctx) -> None:
        from pyVmomi import vim

        ide = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualIDEController))
        cdrom = vim.vm.device.VirtualCdrom(
            key=-400,
            controllerKey=ide.key,
            unitNumber=0,
            backing=vim.vm.device.VirtualCdrom.IsoBackingInfo(fileName=f"[{target.image_ds.name}] {folder}/{iso}"),
            connectable=vim.vm.device.VirtualDevice.ConnectInfo(startConnected=True, allowGuestControl=False),
        )
        spec = vim.vm.ConfigSpec(
            deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="add", device=cdrom)],
            extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in keys.items()],
        )
        vsphere.wait_task(vm.ReconfigVM_Task(spec=spec), "configure the endpoint VM", ctx.remaining(300))

    def _directories(self, params, target, ctx) -> None:
        from pyVmomi import vim

        manager = vsphere.content(target.si).fileManager
        wanted = [(target.image_ds, target.image_path)] + list(target.volume_stores.values())
        for ds, path in wanted:
            name = f"[{ds.name}] {path}"
            if vsphere.path_exists(ds, name, ctx.remaining(300)):
                ctx.logger.info("%s exists; kept", name)
                continue
            parts = path.split("/")  # MakeDirectory makes missing parents: the first missing one is removed
            first_missing = next(
                f"[{ds.name}] {'/'.join(parts[:i])}"
                for i in range(1, len(parts) + 1)
                if i == len(parts)
                or not vsphere.path_exists(ds, f"[{ds.name}] {'/'.join(parts[:i])}", ctx.remaining(300))
            )
            entry = ["directory", first_missing, first_missing]
            ctx.state["created"].append(entry)  # only what did not exist: a volume store is never removed
            try:
                manager.MakeDirectory(name=name, datacenter=target.dc, createParentDirectories=True)
                ctx.logger.info("created %s", name)
            except vim.fault.FileAlreadyExists:
                ctx.state["created"].remove(entry)
                ctx.logger.info("%s exists; kept", name)

    def _wait_for_ip(self, vm, params, ctx) -> str:
        wait = min(params.appliance_timeout_seconds, ctx.remaining(params.appliance_timeout_seconds))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            ip = extra_config(vm).get(CLIENT_IP_KEY)
            if ip:
                ctx.logger.info("the appliance reported client IP %s", ip)
                return ip
            time.sleep(1)
        nics = [
            f"{d.deviceInfo.label}: {getattr(d.backing, 'deviceName', None) or 'distributed port group'}, "
            f"connected={d.connectable.connected}"
            for d in vm.config.hardware.device
            if hasattr(d, "macAddress")
        ]
        raise TransientError(
            "Failed to obtain IP address for client interface (timed out after "
            f"{params.appliance_timeout_seconds:g}s); interfaces: " + "; ".join(nics),
            "check that the client network has DHCP (or set a static IP) and that the appliance boots (VM console)",
        )

    def _check_docker(self, outputs, ctx) -> None:
        docker = DockerParams(
            docker_host=outputs["docker_host"],
            tls=outputs["tls"] != "no_tls",
            tls_verify=outputs["tls_verify"],
            ca=outputs["ca"] if outputs["tls_verify"] else None,
            cert=outputs["cert"],
            key=outputs["key"],
            api_timeout_seconds=ctx.remaining(30, cap=30),
        )
        deadline = time.monotonic() + ctx.remaining(60, cap=60)
        while True:
            try:
                with connected(docker) as client:
                    info = client.info()
                ctx.logger.info(
                    "Docker API at %s answers: %s containers, server %s",
                    outputs["docker_host"],
                    info.get("Containers"),
                    info.get("ServerVersion"),
                )
                return
            except TransientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def rollback(self, params: VCHCreateParams, ctx: StepContext) -> None:
        """A later step failed: remove this VCH (see ``_clean_up``); what stays is in ``ctx.leftovers``."""
        if not self._clean_up(params, ctx):
            raise TransientError(
                "could not remove everything this run created: " + "; ".join(ctx.leftovers),
                "run the blueprint again once vCenter answers, or remove them as listed",
            )

    def _clean_up(self, params: VCHCreateParams, ctx) -> bool:
        """Remove what this run built, on a session of its own, retrying for cleanup_timeout_seconds.

        Never raises: a failed cleanup must not replace the error that caused it. What stays is
        listed in ``ctx.leftovers`` with the command that removes it.
        """
        try:
            vsphere.until_back(
                lambda: self._remove(params, ctx),
                params.cleanup_timeout_seconds,
                ctx.logger,
                "removing what this run built",
            )
            return True
        except Exception as exc:
            lines = [_leftover(kind, name, params) for kind, _, name in ctx.state.get("created", [])]
            lines.append(
                f"or run the blueprint again once vCenter answers: it removes the half-built {params.name} first"
            )
            ctx.leftovers[:] = [line for line in ctx.leftovers if line not in ctx.state.get("reported", [])] + lines
            ctx.state["reported"] = lines
            ctx.logger.error("could not remove what this run built (%s); left behind: %s", exc, "; ".join(lines))
            return False

    def _remove(self, params: VCHCreateParams, ctx) -> None:
        """Newest first: the endpoint VM (its files go with it), the vApp or pool, new folders, certificates.

        Objects whose creation answer was lost are found by name, and only if they are this step's
        (the VM's build marker, the vApp's annotation, an empty pool).
        """
        import shutil

        created = ctx.state.get("created", [])
        with vsphere.fresh_session(params, ctx.logger, ctx.leftovers) as si:
            dc = vsphere.datacenter(si, params.datacenter)
            for entry in reversed(list(created)):
                kind, ref, name = entry
                try:
                    if kind == "vm":
                        vm = vsphere.find_vm(si, dc, name)
                        if vm is not None and (half_built(vm) if ref is None else vm._moId == ref._moId):
                            if vm.runtime.powerState == "poweredOn":
                                vsphere.wait_task(vm.PowerOffVM_Task(), f"power off {name}", ctx.remaining(300))
                            vsphere.wait_task(vm.Destroy_Task(), f"destroy VM {name}", ctx.remaining(300))
                    elif kind == "container":
                        pool = vsphere.find_vapp_or_pool(si, dc, name)
                        if pool is not None and pool.vm:
                            others = ", ".join(sorted(v.name for v in pool.vm))
                            ctx.leftovers.append(f"{name} still holds VMs {others}: kept (remove them, then {name})")
                        elif pool is not None and self._adoptable(pool, params):
                            vsphere.wait_task(pool.Destroy_Task(), f"destroy {name}", ctx.remaining(300))
                    elif kind == "directory":
                        vsphere.wait_task(
                            vsphere.content(si).fileManager.DeleteDatastoreFile_Task(name=name, datacenter=dc),
                            f"delete {name}",
                            ctx.remaining(300),
                        )
                    elif kind == "certs":
                        shutil.rmtree(ref, ignore_errors=True)
                    ctx.logger.info("removed %s %s", kind, name)
                except Exception as exc:
                    if not vsphere.is_gone(exc):
                        raise
                created.remove(entry)


def _leftover(kind: str, name: str, params: VCHCreateParams) -> str:
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


def _differences(vm, params: VCHCreateParams, ctx) -> list[str]:
    stored = json.loads(extra_config(vm).get(CONFIG_KEY, "{}"))
    wanted = _wanted_config(params, ctx)
    return [f"{key}: {stored.get(key)!r} -> {value!r}" for key, value in wanted.items() if stored.get(key) != value]


# ---------------------------------------------------------------------------------------------- inspect / delete


def _vch(params: VCHParams, ctx):
    si = vsphere.service_instance(params, ctx.resources, ctx.logger)
    dc = vsphere.datacenter(si, params.datacenter)
    vm = vsphere.find_vm(si, dc, params.name)
    if vm is None:
        raise PermanentError(f"VCH {params.name!r} not found in datacenter {dc.name}")
    if not is_vch(vm):
        raise PermanentError(f"VM {params.name!r} is not a VCH (no {CONFIG_KEY} in its configuration)")
    return si, dc, vm


class VCHInspect(StepType[VCHParams]):
    """vic-machine inspect: the outputs vch_create gave."""

    Params = VCHParams
    outputs = VCHCreate.outputs

    def plan(self, params: VCHParams, ctx: StepContext):
        return [Change("none", params.name, "read-only")]

    def apply(self, params: VCHParams, ctx: StepContext) -> dict[str, Any]:
        ctx.changed = False
        _, _, vm = _vch(params, ctx)
        return outputs_of(vm, None)


class VCHDelete(StepType[VCHDeleteParams]):
    """vic-machine delete: endpoint VM, vApp and image files; volume stores only with force."""

    Params = VCHDeleteParams
    outputs = {"removed": "what was removed", "kept": "what was kept (volume stores without force)"}

    def _parts(self, params, ctx):
        from pyVmomi import vim

        si, dc, vm = _vch(params, ctx)
        settings = json.loads(extra_config(vm).get(CONFIG_KEY, "{}"))  # none yet on a half-built VCH
        container = (
            vm.resourcePool
            if isinstance(vm.resourcePool, vim.VirtualApp) or settings.get("use_resource_pool")
            else None
        )
        siblings = [c for c in (container.vm if container else []) if c != vm]
        return si, dc, vm, settings, container, siblings

    def plan(self, params: VCHDeleteParams, ctx: StepContext) -> list[Change]:
        _, _, vm, settings, container, siblings = self._parts(params, ctx)
        changes = [Change("delete", vm.name, "endpoint VM and its image files")]
        changes += [Change("delete", c.name, "container VM") for c in siblings]
        if container is not None:
            changes.append(Change("delete", container.name, "vApp / resource pool"))
        for store in settings.get("volume_stores", []):
            changes.append(
                Change(
                    "delete" if params.force else "none",
                    store,
                    "volume store" + ("" if params.force else " kept (force: true deletes it)"),
                )
            )
        return changes

    def apply(self, params: VCHDeleteParams, ctx: StepContext) -> dict[str, Any]:
        si, dc, vm, settings, container, siblings = self._parts(params, ctx)
        running = [c.name for c in siblings if c.runtime.powerState == "poweredOn"]
        if running and not params.force:
            raise PermanentError(
                f"VCH {params.name!r} still has powered-on container VMs: {', '.join(running)}",
                "stop them (docker stop) or set force: true",
            )
        ctx.logger.warning("firewall changes are not reverted: run the firewall step with action: deny if wanted")
        removed, kept = [], []
        for target in [*siblings, vm]:
            name = target.name
            if target.runtime.powerState == "poweredOn":
                vsphere.wait_task(target.PowerOffVM_Task(), f"power off {name}", ctx.remaining(300))
            folder = target.config.files.vmPathName.rsplit("/", 1)[0]
            vsphere.wait_task(target.Destroy_Task(), f"destroy {name}", ctx.remaining(300))
            self._delete_file(si, dc, folder, ctx)
            removed.append(name)
        if container is not None:
            name = container.name
            vsphere.wait_task(container.Destroy_Task(), f"destroy {name}", ctx.remaining(300))
            removed.append(f"{name} (vApp)")
        for store in settings.get("volume_stores", []):
            location = store.rpartition(":")[0]
            ds, path = _store(location)
            if params.force:
                self._delete_file(si, dc, f"[{ds}] {path}", ctx)
                removed.append(f"volume store {store}")
            else:
                kept.append(f"volume store {store}")
        return {"removed": removed, "kept": kept}

    def _delete_file(self, si, dc, name: str, ctx) -> None:
        from pyVmomi import vim

        try:
            vsphere.wait_task(
                vsphere.content(si).fileManager.DeleteDatastoreFile_Task(name=name, datacenter=dc),
                f"delete {name}",
                ctx.remaining(300),
            )
        except (vim.fault.FileNotFound, PermanentError) as exc:
            ctx.logger.info("%s: nothing to delete (%s)", name, exc)


@hookimpl
def register_step_types(register):
    register("vch_create", VCHCreate)
    register("vch_inspect", VCHInspect)
    register("vch_delete", VCHDelete)
