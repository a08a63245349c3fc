"""``vch_create``, ``vch_inspect``, ``vch_delete``: a Virtual Container Host as vic-machine 1.1 builds it.

Differences from vic-machine, on purpose: every validation problem is reported at once, and a
create that fails part-way removes what it built (vic-machine 1.1 left half-built VCHs behind).
"""

from __future__ import annotations

import json
import os
from typing import Any

from vicflow.plugins import Change, PermanentError, StepContext, StepType, TransientError, hookimpl
from vicflow.plugins.clients.vsphere import connection, inventory, tasks
from vicflow.plugins.step import Kind
from vicflow.plugins.vic.build import Builder
from vicflow.plugins.vic.params import VCHCreateParams, VCHDeleteParams, VCHParams
from vicflow.plugins.vic.target import (
    CONFIG_KEY,
    adoptable,
    differences,
    existing_outputs,
    extra_config,
    half_built,
    is_vch,
    outputs_of,
    split_store,
    validate,
)

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

    def plan(self, params: VCHCreateParams, ctx: StepContext) -> list[Change]:
        target = validate(params, ctx)
        vm = inventory.find_vm(target.si, target.dc, params.name)
        if vm is None:
            kind = "resource pool" if params.use_resource_pool else "vApp"
            return [
                Change(
                    "create",
                    params.name,
                    f"{kind}, endpoint VM ({params.cpu} vCPU, {params.memory_mb} MB), "
                    f"ISOs, volume stores, power on ({params.tls})",
                    Kind.VCH,
                )
            ]
        return [
            Change(
                "none" if not differences(vm, params, ctx) else "error",
                params.name,
                "; ".join(differences(vm, params, ctx)) or "exists with the same configuration",
                Kind.VCH,
            )
        ]

    def apply(self, params: VCHCreateParams, ctx: StepContext) -> dict[str, Any]:
        target = validate(params, ctx)
        cert_path = os.path.abspath(ctx.path(params.cert_path or params.name))
        vm = inventory.find_vm(target.si, target.dc, params.name)
        ctx.state["created"] = []
        if vm is not None and half_built(vm):
            ctx.logger.warning(
                "VCH %s is half-built (an earlier create failed part-way): removing it first", params.name
            )
            ctx.state["created"].append(["vm", vm, params.name])
            Builder()._remove(params, ctx)
            ctx.leftovers.clear()
        elif vm is not None:
            return existing_outputs(vm, params, cert_path, ctx)
        other = inventory.find_vapp_or_pool(target.si, target.dc, params.name)
        if other is not None and not adoptable(other, params):
            raise PermanentError(
                f"a vApp or resource pool named {params.name!r} exists and is not a VCH",
                "choose another name, or remove it",
            )
        ctx.state["adopt"] = other
        try:
            return Builder()._build(params, target, cert_path, ctx)
        except BaseException as exc:
            ctx.logger.error("create failed (%s: %s); removing what this run built", type(exc).__name__, exc)
            Builder()._clean_up(params, ctx)
            raise  # the original error: a cut connection stays retryable

    def rollback(self, params: VCHCreateParams, ctx: StepContext) -> None:
        """A later step failed: remove this VCH (see ``_clean_up``); what stays is in ``ctx.leftovers``."""
        if not Builder()._clean_up(params, ctx):
            raise TransientError(
                "could not remove everything this run created: " + "; ".join(ctx.leftovers),
                "run the blueprint again once vCenter answers, or remove them as listed",
            )


# ---------------------------------------------------------------------------------------------- inspect / delete


def _vch(params: VCHParams, ctx):
    si = connection.service_instance(params, ctx.resources, ctx.logger)
    dc = inventory.datacenter(si, params.datacenter)
    vm = inventory.find_vm(si, dc, params.name)
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
        changes = [Change("delete", vm.name, "endpoint VM and its image files", Kind.VCH)]
        changes += [Change("delete", c.name, "container VM", Kind.CONTAINER) for c in siblings]
        if container is not None:
            changes.append(Change("delete", container.name, "vApp / resource pool"))
        for store in settings.get("volume_stores", []):
            changes.append(
                Change(
                    "delete" if params.force else "none",
                    store,
                    "volume store" + ("" if params.force else " kept (force: true deletes it)"),
                    Kind.VOLUME_STORE,
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
                tasks.wait_task(target.PowerOffVM_Task(), f"power off {name}", ctx.remaining(300))
            folder = target.config.files.vmPathName.rsplit("/", 1)[0]
            tasks.wait_task(target.Destroy_Task(), f"destroy {name}", ctx.remaining(300))
            self._delete_file(si, dc, folder, ctx)
            removed.append(name)
        if container is not None:
            name = container.name
            tasks.wait_task(container.Destroy_Task(), f"destroy {name}", ctx.remaining(300))
            removed.append(f"{name} (vApp)")
        for store in settings.get("volume_stores", []):
            location = store.rpartition(":")[0]
            ds, path = split_store(location)
            if params.force:
                self._delete_file(si, dc, f"[{ds}] {path}", ctx)
                removed.append(f"volume store {store}")
            else:
                kept.append(f"volume store {store}")
        return {"removed": removed, "kept": kept}

    def _delete_file(self, si, dc, name: str, ctx) -> None:
        from pyVmomi import vim

        try:
            tasks.wait_task(
                connection.content(si).fileManager.DeleteDatastoreFile_Task(name=name, datacenter=dc),
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
