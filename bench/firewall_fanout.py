"""The firewall step against a serial per-host loop (how vic-machine goes), 64 hosts, simulated latency.

The simulator adds DELAY_MS to every SOAP call. The baseline does what vic-machine does: log in, find the
cluster, then for each host in turn read its firewall system and call EnableRuleset. The step also logs
in, resolves the compute resource, and reads every host's ruleset state before it changes anything (to
report changed/unchanged per host). Both start from vSPC disabled everywhere.
Prints the median of each and the ratio (target: the step at least 8x faster).
"""

import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HOSTS, DELAY_MS, ROUNDS = 64, 25, 3


def main() -> None:
    from pyVim.connect import Disconnect
    from pyVmomi import vim
    from vicflow.plugins.builtin.firewall import Firewall

    from tests import stepkit
    from tests.testbed import vcsim

    logging.disable(logging.WARNING)
    sim = vcsim.start(hosts=HOSTS, delay_ms=DELAY_MS, vms=0)
    si = sim.connect(connectionPoolTimeout=-1)
    params = {
        "server": sim.url,
        "user": sim.username,
        "password": sim.password,
        "thumbprint": sim.thumbprint,
        "compute_resource": "DC0_C0",
    }
    try:
        cluster = next(
            c
            for c in si.content.viewManager.CreateContainerView(
                si.content.rootFolder, [vim.ClusterComputeResource], True
            ).view
        )
        hosts = list(cluster.host)
        assert len(hosts) == HOSTS

        def reset() -> None:
            hosts[0].configManager.firewallSystem.DisableRuleset(id="vSPC")  # state is shared by all hosts

        def serial() -> None:
            own = sim.connect()  # vic-machine logs in too
            view = own.content.viewManager.CreateContainerView(
                own.content.rootFolder, [vim.ClusterComputeResource], True
            )
            found = next(c for c in view.view if c.name == "DC0_C0")
            for h in found.host:
                h.configManager.firewallSystem.EnableRuleset(id="vSPC")
            Disconnect(own)

        def step() -> None:
            out, _ = stepkit.apply(Firewall, **params)
            assert out["changed"] == HOSTS, out["changed"]

        timings = {"serial": [], "step": []}
        for _ in range(ROUNDS):
            for name, fn in (("serial", serial), ("step", step)):
                reset()
                started = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - started)
    finally:
        Disconnect(si)
        sim.stop()
    serial_s, step_s = statistics.median(timings["serial"]), statistics.median(timings["step"])
    print(f"{HOSTS} hosts, {DELAY_MS} ms per call")
    print(f"serial per-host loop (vic-machine): median {serial_s:.2f}s")
    print(f"firewall step (parallel):           median {step_s:.2f}s (includes login and cluster lookup)")
    print(f"speed-up serial/step: {serial_s / step_s:.1f}x (target >= 12x)")


if __name__ == "__main__":
    main()
