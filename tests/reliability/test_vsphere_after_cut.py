"""A connection that broke during a vCenter outage is never reused once the link is back.

Found by a trial: after a cut link came back (cleanup had reconnected fine), the next vch_create attempt failed
with `SSLEOFError: EOF occurred in violation of protocol` and only the third succeeded: the run's session kept
connections the outage had reset in pyVmomi's pool, and the next attempt's first call took one of them.
A TCP proxy in front of the simulator (tests/testbed/faultproxy.py) cuts the link and restores it."""

from __future__ import annotations

import time

import pytest
from vicflow.plugins.builtin.firewall import Firewall

from tests import stepkit
from tests.testbed.faultproxy import FaultProxy

pytestmark = pytest.mark.vcsim


def test_the_attempt_after_a_cut_does_not_reuse_a_connection_the_cut_broke(vcsim):
    host, port = vcsim.host.split(":")
    proxy = FaultProxy(host, int(port)).start()
    resources: dict = {}  # the run's: its vSphere session is shared by its steps and their attempts
    try:
        params = {
            "server": f"https://{proxy.address}/sdk",
            "user": vcsim.username,
            "password": vcsim.password,
            "thumbprint": vcsim.thumbprint,
            "compute_resource": "DC0_C0",
        }
        # the firewall step calls every host at once: several connections, kept in the session's pool
        outputs, errors = stepkit.retrying(Firewall, {**params, "action": "allow"}, retries=0, resources=resources)
        assert errors == [] and outputs, errors
        opened = proxy.connections

        proxy.cut()  # the outage resets every connection ...
        time.sleep(0.5)
        proxy.restore()  # ... and is over before the next attempt

        outputs, errors = stepkit.retrying(
            Firewall, {**params, "action": "deny"}, retries=2, delay=0.2, resources=resources
        )
        assert errors == [], f"the first attempt after the cut failed: {[repr(e) for e in errors]}"
        assert outputs
        assert proxy.connections > opened, "the attempt made no new connection"
    finally:
        if "vsphere" in resources:
            resources["vsphere"].close(budget=5)
        proxy.stop()
