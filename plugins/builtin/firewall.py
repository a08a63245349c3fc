"""``firewall``: what ``vic-machine update firewall --allow|--deny`` does, host by host in parallel.

It enables (or disables) the ESXi ruleset ``vSPC`` on every host of the compute resource.
vic-machine goes host by host and stops at the first failure; this step reads every host first,
changes only those that need it, in parallel, and reports each host.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field
from vicflow.plugins import Change, PermanentError, StepContext, StepType, TransientError, hookimpl
from vicflow.plugins.clients.vsphere import connection, inventory
from vicflow.plugins.errors import ConnectionLost
from vicflow.plugins.step import Kind
from vicflow.plugins.vic.firewall import HOST_PROPS, RULESET, host_states, set_ruleset


class FirewallParams(connection.VSphereParams):
    datacenter: str | None = Field(None, description="default: the only datacenter")
    compute_resource: str = Field(description="cluster, host, or resource pool path (CLUSTER/Resources/POOL)")
    action: Literal["allow", "deny"] = Field("allow", description="allow enables vSPC; deny disables it")
    parallel: int = Field(64, ge=1, le=128, description="hosts changed at once")
    rollback_timeout_seconds: float = Field(
        60, gt=0, description="when rolling back, keep trying this long to put the hosts back"
    )


def hosts(params: FirewallParams, ctx, si=None):
    """The session, and the compute resource with its hosts' names and firewall systems (read in one call)."""
    si = si or connection.service_instance(params, ctx.resources, ctx.logger)
    dc = inventory.datacenter(si, params.datacenter)
    return si, inventory.compute_resource(si, dc, params.compute_resource, HOST_PROPS)


class Firewall(StepType[FirewallParams]):
    """Open (or close) outbound tcp/2377 for VCHs on every host of a cluster."""

    Params = FirewallParams
    outputs = {
        "hosts": "per host: host, before, after, result (changed/unchanged/failed), reason",
        "changed": "hosts changed",
        "unchanged": "hosts already right",
        "failed": "hosts that failed",
    }

    def _states(self, params, ctx, si=None) -> dict[str, tuple]:
        si, compute = hosts(params, ctx, si)
        return host_states(si, compute.hosts, compute.host_props)

    def plan(self, params: FirewallParams, ctx: StepContext) -> list[Change]:
        want = params.action == "allow"
        return [
            Change(
                "update" if state != want else "none",
                name,
                f"{RULESET}: {'enabled' if state else 'disabled'} -> {'enabled' if want else 'disabled'}",
                Kind.HOST_FIREWALL,
            )
            for name, (_, state) in self._states(params, ctx).items()
        ]

    def apply(self, params: FirewallParams, ctx: StepContext) -> dict[str, Any]:
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
                cut = isinstance(exc, ConnectionLost)  # the vSphere client maps a dropped connection to it
                return {
                    "host": name,
                    "before": before,
                    "after": before,
                    "result": "failed",
                    "reason": reason,
                    "cut": cut,
                }

        with ThreadPoolExecutor(max_workers=params.parallel) as pool:
            rows = list(pool.map(change, sorted(states.items())))
        ctx.state["changed"] = [r["host"] for r in rows if r["result"] == "changed"]
        ctx.changed = bool(ctx.state["changed"])
        for row in rows:
            ctx.logger.info("%s: %s %s", row["host"], row["result"], row["reason"])
        failed = [r for r in rows if r["result"] == "failed"]
        cut = all([r.pop("cut") for r in failed])  # only the network failed: worth a retry
        if failed:
            detail = "; ".join(f"{r['host']}: {r['reason']}" for r in failed)
            message = (
                f"{RULESET} could not be {'enabled' if want else 'disabled'} on "
                f"{len(failed)} of {len(rows)} hosts: {detail}"
            )
            hint = "the other hosts were changed; fix these hosts and run again (it is idempotent)"
            if cut:
                raise TransientError(message, hint)
            raise PermanentError(message, hint)
        return {
            "hosts": rows,
            "changed": len(ctx.state["changed"]),
            "unchanged": sum(r["result"] == "unchanged" for r in rows),
            "failed": 0,
        }

    def rollback(self, params: FirewallParams, ctx: StepContext) -> None:
        """Put every host this run changed back, on a session of its own, retrying a cut connection.

        What cannot be put back within rollback_timeout_seconds is listed in ``ctx.leftovers``.
        """
        undo = ctx.state.setdefault("changed", [])

        def put_back() -> None:
            with connection.fresh_session(params, ctx.logger, ctx.leftovers) as si:
                states = self._states(params, ctx, si)

                def one(name: str) -> None:
                    set_ruleset(states[name][0], ctx.state["before"][name])
                    undo.remove(name)

                with ThreadPoolExecutor(max_workers=params.parallel) as pool:
                    list(pool.map(one, list(undo)))

        try:
            connection.until_back(put_back, params.rollback_timeout_seconds, ctx.logger, "putting the firewall back")
        except Exception:
            flag = "false" if params.action == "allow" else "true"
            ctx.leftovers[:] = [
                f"{RULESET} left {'enabled' if params.action == 'allow' else 'disabled'} on {name} - run this "
                f"step again with the opposite action, or: govc host.esxcli -host {name} network firewall "
                f"ruleset set -r {RULESET} -e {flag}"
                for name in undo
            ]
            raise


@hookimpl
def register_step_types(register):
    register("firewall", Firewall)
