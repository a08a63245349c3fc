"""The ESXi firewall ruleset a VCH needs (vSPC: the appliance's serial port over the network), read in bulk."""

from __future__ import annotations

from vicflow.plugins.clients.vsphere import inventory
from vicflow.plugins.errors import PermanentError

RULESET = "vSPC"


def ruleset_enabled(firewall_info) -> bool | None:
    """vSPC's ``enabled`` in a HostFirewallInfo XML element; None when the host has no such ruleset."""
    for ruleset in firewall_info.iterfind(f"{inventory.VIM}ruleset") if firewall_info is not None else ():
        if ruleset.findtext(f"{inventory.VIM}key") == RULESET:
            return ruleset.findtext(f"{inventory.VIM}enabled") == "true"
    return None


HOST_PROPS = ["name", "configManager.firewallSystem"]


def host_states(si, hosts: list, props: dict | None = None) -> dict[str, tuple]:
    """name -> (firewall system, vSPC enabled) for every host, in two PropertyCollector calls (one when
    ``props``, the hosts' HOST_PROPS, came with the compute resource's lookup)."""
    from pyVmomi import vim

    props = props or inventory.collect(si, hosts, vim.HostSystem, HOST_PROPS)
    systems = {h._moId: props[h._moId]["configManager.firewallSystem"] for h in hosts}
    infos = inventory.collect_xml(si, list(systems.values()), vim.host.FirewallSystem, ["firewallInfo"])
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
