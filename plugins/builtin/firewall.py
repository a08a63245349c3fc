"""``firewall``: what ``vic-machine update firewall --allow|--deny`` does, host by host in parallel.

It enables (or disables) the ESXi ruleset ``vSPC`` on every host of the compute resource.
vic-machine goes host by host and stops at the first failure; this step reads every host first,
changes only those that need it, in parallel, and reports each host.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field
from vicflow.plugins import Change, PermanentError, StepType, hookimpl
from vicflow.plugins.builtin import vsphere

RULESET = "vSPC"


class FirewallParams(vsphere.VSphereParams):
    datacenter: str | None = Field(None, description="default: the only datacenter")
    compute_resource: str = Field(description="cluster, host, or resource pool path (CLUSTER/Resources/POOL)")
    action: Literal["allow", "deny"] = Field("allow", description="allow enables vSPC; deny disables it")
    parallel: int = Field(32, ge=1, le=128, description="hosts changed at once")


def hosts(params: FirewallParams, ctx):
    si = vsphere.service_instance(params, ctx)
    dc = vsphere.datacenter(si, params.datacenter)
    return si, vsphere.compute_resource(si, dc, params.compute_resource).hosts


def ruleset_enabled(firewall_info) -> bool | None:
    """vSPC's ``enabled`` in a HostFirewallInfo XML element; None when the host has no such ruleset."""
    for ruleset in firewall_info.iterfind(f"{vsphere.VIM}ruleset") if firewall_info is not None else ():
        if ruleset.findtext(f"{vsphere.VIM}key") == RULESET:
            return ruleset.findtext(f"{vsphere.VIM}enabled") == "true"
    return None


def host_states(si, hosts: list) -> dict[str, tuple]:
    """name -> (firewall system, vSPC enabled) for every host, in two PropertyCollector calls."""
    from pyVmomi import vim

    props = vsphere.collect(si, hosts, vim.HostSystem, ["name", "configManager.firewallSystem"])
    systems = {h._moId: props[h._moId]["configManager.firewallSystem"] for h in hosts}
    infos = vsphere.collect_xml(si, list(systems.values()), vim.host.FirewallSystem, ["firewallInfo"])
    states = {}
    for host in hosts:
        name, system = props[host._moId]["name"], systems[host._moId]
        enabled = ruleset_enabled(infos.get(system._moId, {}).get("firewallInfo"))
        if enabled is None:
            raise PermanentError(f"host {name} has no firewall ruleset {RULESET!r}", "is it an ESXi host?")
        states[name] = (system, enabled)
    return states


def set_ruleset(system, allow: bool) -> None:
    (system.EnableRuleset if allow else system.DisableRuleset)(id=RULESET)


class Firewall(StepType):
    """Open (or close) outbound tcp/2377 for VCHs on every host of a cluster."""

    Params = FirewallParams
    outputs = {
        "hosts": "per host: host, before, after, result (changed/unchanged/failed), reason",
        "changed": "hosts changed",
        "unchanged": "hosts already right",
        "failed": "hosts that failed",
    }

    def _states(self, params, ctx) -> dict[str, tuple]:
        si, found = hosts(params, ctx)
        return host_states(si, found)

    def plan(self, params: FirewallParams, ctx) -> list[Change]:
        want = params.action == "allow"
        return [
            Change(
                "update" if state != want else "none",
                name,
                f"{RULESET}: {'enabled' if state else 'disabled'} -> {'enabled' if want else 'disabled'}",
            )
            for name, (_, state) in self._states(params, ctx).items()
        ]

    def apply(self, params: FirewallParams, ctx) -> dict[str, Any]:
        want = params.action == "allow"
        if want:
            ctx.logger.warning("%s allows all outbound TCP from the hosts (VIC needs 2377/tcp to the VCH)", RULESET)
        else:
            ctx.logger.warning("deny closes 2377/tcp outbound: VCHs on these hosts stop working")
        states = self._states(params, ctx)  # every host read before any change (see the simulator note)
        ctx.state["before"] = {name: state for name, (_, state) in states.items()}

        def change(item) -> dict[str, Any]:
            name, (host, before) = item
            if before == want:
                return {"host": name, "before": before, "after": before, "result": "unchanged", "reason": ""}
            try:
                set_ruleset(host, want)
                return {"host": name, "before": before, "after": want, "result": "changed", "reason": ""}
            except Exception as exc:  # reported per host; the step fails after all hosts were tried
                reason = getattr(exc, "msg", None) or f"{type(exc).__name__}: {exc}"
                return {"host": name, "before": before, "after": before, "result": "failed", "reason": reason}

        with ThreadPoolExecutor(max_workers=params.parallel) as pool:
            rows = list(pool.map(change, sorted(states.items())))
        ctx.state["changed"] = [r["host"] for r in rows if r["result"] == "changed"]
        ctx.changed = bool(ctx.state["changed"])
        for row in rows:
            ctx.logger.info("%s: %s %s", row["host"], row["result"], row["reason"])
        failed = [r for r in rows if r["result"] == "failed"]
        if failed:
            detail = "; ".join(f"{r['host']}: {r['reason']}" for r in failed)
            raise PermanentError(
                f"{RULESET} could not be {'enabled' if want else 'disabled'} on "
                f"{len(failed)} of {len(rows)} hosts: {detail}",
                "the other hosts were changed; fix these hosts and run again (it is idempotent)",
            )
        return {
            "hosts": rows,
            "changed": len(ctx.state["changed"]),
            "unchanged": sum(r["result"] == "unchanged" for r in rows),
            "failed": 0,
        }

    def rollback(self, params: FirewallParams, ctx) -> None:
        """Put every host this run changed back to its previous state."""
        states = self._states(params, ctx)
        undo = ctx.state.get("changed", [])
        with ThreadPoolExecutor(max_workers=params.parallel) as pool:
            list(pool.map(lambda name: set_ruleset(states[name][0], ctx.state["before"][name]), undo))


@hookimpl
def register_step_types(register):
    register("firewall", Firewall)
