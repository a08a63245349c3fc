"""Build a VCH as vic-machine 1.1 does (vApp or pool, endpoint VM, ISOs, extraConfig, power on), and remove
what a failed build made: vch_create's work, kept apart from its step type.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

from vicflow.plugins.clients import certs
from vicflow.plugins.clients.dockerapi import DockerParams, connected
from vicflow.plugins.clients.vsphere import connection, inventory, pinning, tasks
from vicflow.plugins.errors import PermanentError, TransientError
from vicflow.plugins.vic.params import VCHCreateParams
from vicflow.plugins.vic.target import (
    BUILD_KEY,
    CLIENT_IP_KEY,
    CONFIG_KEY,
    PREFIX,
    SERVER_CERT_KEY,
    SERVER_KEY_KEY,
    Target,
    adoptable,
    extra_config,
    half_built,
    leftover,
    outputs_of,
    owner_note,
    wanted_config,
    write_env_file,
)


class Builder:
    """One create of one VCH; what it made is in ``ctx.state["created"]``, newest last."""

    def _build(self, params: VCHCreateParams, target: Target, cert_path: str, ctx) -> dict[str, Any]:
        from pyVmomi import vim

        created = ctx.state["created"]
        settings = {**wanted_config(params, ctx), "cert_path": cert_path}
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
        tasks.wait_task(vm.PowerOnVM_Task(), f"power on {params.name}", ctx.remaining(300))
        ip = self._wait_for_ip(vm, params, ctx)
        outputs = outputs_of(vm, cert_path)
        self._check_docker(outputs, ctx)
        outputs["env_file"] = write_env_file(cert_path, params.name, outputs)
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=BUILD_KEY, value="complete")])
        tasks.wait_task(vm.ReconfigVM_Task(spec=spec), "mark the VCH complete", ctx.remaining(300))
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
                switch = net.config.distributedVirtualSwitch
                if switch is None:
                    raise PermanentError(f"port group {net.name!r} belongs to no distributed switch")
                backing: Any = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
                    port=vim.dvs.PortConnection(portgroupKey=net.key, switchUuid=switch.uuid)
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
        entry[1] = tasks.wait_task(task, f"create VM {params.name}", ctx.remaining(300))
        return entry[1]

    def _upload(self, params, target, folder, files: dict[str, str], ctx) -> None:
        """PUT each ISO into the VM's folder over the datastore HTTP interface (pinned certificate)."""
        host, port = connection.split_server(connection.setting(params, "server") or "")
        thumbprint = None if params.insecure else connection.setting(params, "thumbprint")
        session = pinning.pinned_session(host, thumbprint, ctx.remaining(60))
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
            PREFIX + "connect/target": connection.setting(params, "server") or "",
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
        tasks.wait_task(vm.ReconfigVM_Task(spec=spec), "configure the endpoint VM", ctx.remaining(300))

    def _directories(self, params, target, ctx) -> None:
        from pyVmomi import vim

        manager = connection.content(target.si).fileManager
        wanted = [(target.image_ds, target.image_path)] + list(target.volume_stores.values())
        for ds, path in wanted:
            name = f"[{ds.name}] {path}"
            if inventory.path_exists(ds, name, ctx.remaining(300)):
                ctx.logger.info("%s exists; kept", name)
                continue
            parts = path.split("/")  # MakeDirectory makes missing parents: the first missing one is removed
            first_missing = next(
                f"[{ds.name}] {'/'.join(parts[:i])}"
                for i in range(1, len(parts) + 1)
                if i == len(parts)
                or not inventory.path_exists(ds, f"[{ds.name}] {'/'.join(parts[:i])}", ctx.remaining(300))
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

    def _clean_up(self, params: VCHCreateParams, ctx) -> bool:
        """Remove what this run built, on a session of its own, retrying for cleanup_timeout_seconds.

        Never raises: a failed cleanup must not replace the error that caused it. What stays is
        listed in ``ctx.leftovers`` with the command that removes it.
        """
        try:
            connection.until_back(
                lambda: self._remove(params, ctx),
                params.cleanup_timeout_seconds,
                ctx.logger,
                "removing what this run built",
            )
            return True
        except Exception as exc:
            lines = [leftover(kind, name, params) for kind, _, name in ctx.state.get("created", [])]
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
        with connection.fresh_session(params, ctx.logger, ctx.leftovers) as si:
            dc = inventory.datacenter(si, params.datacenter)
            for entry in reversed(list(created)):
                kind, ref, name = entry
                try:
                    if kind == "vm":
                        vm = inventory.find_vm(si, dc, name)
                        if vm is not None and (half_built(vm) if ref is None else vm._moId == ref._moId):
                            if vm.runtime.powerState == "poweredOn":
                                tasks.wait_task(vm.PowerOffVM_Task(), f"power off {name}", ctx.remaining(300))
                            tasks.wait_task(vm.Destroy_Task(), f"destroy VM {name}", ctx.remaining(300))
                    elif kind == "container":
                        pool = inventory.find_vapp_or_pool(si, dc, name)
                        if pool is not None and pool.vm:
                            others = ", ".join(sorted(v.name for v in pool.vm))
                            ctx.leftovers.append(f"{name} still holds VMs {others}: kept (remove them, then {name})")
                        elif pool is not None and adoptable(pool, params):
                            tasks.wait_task(pool.Destroy_Task(), f"destroy {name}", ctx.remaining(300))
                    elif kind == "directory":
                        tasks.wait_task(
                            connection.content(si).fileManager.DeleteDatastoreFile_Task(name=name, datacenter=dc),
                            f"delete {name}",
                            ctx.remaining(300),
                        )
                    elif kind == "certs":
                        shutil.rmtree(ref, ignore_errors=True)
                    ctx.logger.info("removed %s %s", kind, name)
                except Exception as exc:
                    if not inventory.is_gone(exc):
                        raise
                created.remove(entry)
