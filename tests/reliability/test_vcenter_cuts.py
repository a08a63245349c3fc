"""The vCenter connection is cut during vch_create: nothing leaked, nothing unreported.

A TCP proxy (tests/testbed/faultproxy.py) sits between vicflow and the simulator. The cut comes at a
random point: before the vApp, once the vApp exists, once the VM exists, part-way through the ISO
upload, or once the VM is powered on (while the step waits for the appliance's IP). A short cut is
restored within the retry budget; a long one only after the step has failed. The simulator's objects
are counted through a session of the test's own, straight to the simulator: VMs, vApps and pools,
every file and folder on its datastores, vSPC per host, and login sessions.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim
from vicflow.plugins.builtin.firewall import Firewall
from vicflow.plugins.builtin.vch import VCHCreate

from tests import stepkit
from tests.testbed import vcsim
from tests.testbed.appliance import Appliance
from tests.testbed.faultproxy import FaultProxy

pytestmark = [pytest.mark.vcsim, pytest.mark.faults]

NAME = "vch-demo"
POINTS = ("start", "vapp", "vm", "upload", "ip")
TRIALS = int(__import__("os").environ.get("VICFLOW_CUT_TRIALS", "30"))
# An upload cut fires once one connection has sent this much more than the cut's byte count: only the ISO's
# PUT (16 MB, a connection of its own) gets there; the SOAP connections stay far below (checked on a clean create)
SOAP_CEILING = 2_000_000


def _view(si, kind) -> list:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def count(si) -> dict[str, set]:
    """What a trial may leak, read straight from the simulator (never through the proxy)."""
    files = set()
    for ds in _view(si, vim.Datastore):
        root = Path(ds.summary.url)
        files |= {f"[{ds.name}] {p.relative_to(root)}" for p in root.rglob("*")}
    vspc = set()
    for host in _view(si, vim.HostSystem):
        if any(r.key == "vSPC" and r.enabled for r in host.configManager.firewallSystem.firewallInfo.ruleset):
            vspc.add(host.name)
    return {
        "vms": {v.name for v in _view(si, vim.VirtualMachine)},
        "pools": {p.name for p in _view(si, vim.ResourcePool)},
        "files": files,
        "vspc": vspc,
        "sessions": {s.key for s in si.content.sessionManager.sessionList},
    }


def delta(before: dict, after: dict) -> dict[str, set]:
    """What ``after`` has that ``before`` has not, per kind (kinds with nothing new are left out)."""
    kinds = before.keys() | after.keys()
    return {k: after.get(k, set()) - before.get(k, set()) for k in kinds if after.get(k, set()) - before.get(k, set())}


def unreported(new: dict[str, set], report: str) -> list[str]:
    """Objects left that no line of the run's report names."""
    vms = {n for n in new.get("vms", ()) if f"VM {n} " in report}
    missing = [f"VM {n}" for n in new.get("vms", ()) if n not in vms]
    missing += [f"pool/vApp {n}" for n in new.get("pools", ()) if f"vApp {n} " not in report]
    folders = [line.split("folder ", 1)[1].split(" - ", 1)[0] for line in report.splitlines() if "folder [" in line]
    for path in new.get("files", ()):
        top = path.split("] ", 1)[1].split("/", 1)[0]
        if top not in vms and not any(path == f or path.startswith(f + "/") for f in folders):
            missing.append(f"file {path}")
    if new.get("sessions") and "vSphere session" not in report:
        missing.append(f"{len(new['sessions'])} login session(s)")
    missing += [f"vSPC on {h}" for h in new.get("vspc", ())]
    return missing


class Cutter(threading.Thread):
    """Watches the simulator (its own session) and cuts the proxy when the trial's point is reached."""

    def __init__(self, sim, proxy: FaultProxy, point: str, rng: random.Random, short: bool):
        super().__init__(daemon=True, name=f"cut-{point}")
        self.sim, self.proxy, self.point, self.short = sim, proxy, point, short
        self.hold = rng.uniform(0.5, 2.0)  # a short cut's length
        self.start_delay = rng.uniform(0.0, 0.15)
        self.upload_bytes = rng.randint(50_000, 12_000_000)
        self.fired = threading.Event()
        self.stop = threading.Event()

    def _reached(self, si, mark: dict) -> bool:
        if self.point == "start":
            return time.monotonic() >= mark["t0"] + self.start_delay
        if self.point == "vapp":
            return any(p.name == NAME for p in _view(si, vim.VirtualApp))
        vm = next((v for v in _view(si, vim.VirtualMachine) if v.name == NAME), None)
        if vm is None:
            return False
        if self.point == "vm":
            return True
        return vm.runtime.powerState == "poweredOn"

    def run(self) -> None:
        if self.point == "upload":  # armed inside the proxy: a watcher's poll can miss a fast upload
            self.proxy.cut_when_one_connection_sent(SOAP_CEILING + self.upload_bytes)
            while not self.stop.is_set() and not self.proxy.cut_fired.wait(0.05):
                pass
            if self.proxy.cut_fired.is_set():
                self.fired.set()
                if self.short:
                    time.sleep(self.hold)
                    self.proxy.restore()
            return
        si = self.sim.connect()
        mark = {"t0": time.monotonic()}
        try:
            while not self.stop.is_set():
                if self._reached(si, mark):
                    self.proxy.cut()
                    self.fired.set()
                    if self.short:
                        time.sleep(self.hold)
                        self.proxy.restore()
                    return
                time.sleep(0.01)
        finally:
            Disconnect(si)


def attempts(params: dict, leftovers: list, resources: dict, retries: int = 2):
    """Apply vch_create the way the engine does: a new context per attempt, retried while transient."""
    outputs, errors = stepkit.retrying(
        VCHCreate, params, retries, delay=2, step_id="vch", resources=resources, leftovers=leftovers
    )
    if outputs is None:
        return None, errors[-1]
    return {**outputs, "attempts": len(errors) + 1}, None


@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("isos")
    # long enough to cut part-way (the cut fires inside the proxy after 2 MB + 50 kB..12 MB of one connection)
    (folder / "appliance.iso").write_bytes(random.Random(1).randbytes(16_000_000))
    (folder / "bootstrap.iso").write_bytes(b"BOOTSTRAP" * 100)
    return folder


def params_for(address: str, sim, isos) -> dict:
    return {
        "server": f"https://{address}/sdk",
        "user": sim.username,
        "password": sim.password,
        "thumbprint": sim.thumbprint,
        "name": NAME,
        "compute_resource": "DC0_C0",
        "image_store": f"LocalDS_0/VCHPOOL/{NAME}",
        "volume_stores": [f"LocalDS_0/VCHPOOL/{NAME}/volumes:default", "LocalDS_1/shared:fast"],
        "bridge_network": "DC0_DVPG0",
        "tls": "no_tls",
        "cert_path": str(isos / "certs"),
        "appliance_iso": str(isos / "appliance.iso"),
        "bootstrap_iso": str(isos / "bootstrap.iso"),
        "appliance_timeout_seconds": 20,
        "cleanup_timeout_seconds": 2,
        "connect_timeout_seconds": 5,
    }


def one_trial(isos, point: str, short: bool, seed: int) -> dict:
    """One create with one cut; returns what the trial counted."""
    sim = vcsim.start(hosts=3)
    host, port = sim.host.split(":")
    proxy = FaultProxy(host, int(port)).start()
    observer = sim.connect()
    result: dict = {"point": point, "short": short, "seed": seed}
    try:
        direct = {"server": sim.url, "user": sim.username, "password": sim.password, "thumbprint": sim.thumbprint}
        fw_ctx = stepkit.context("firewall")
        stepkit.apply(Firewall, fw_ctx, **direct, compute_resource="DC0_C0", action="allow")
        fw_ctx.resources["vsphere"].close()
        before = count(observer)
        params = params_for(proxy.address, sim, isos)
        leftovers: list[str] = []
        resources: dict = {}
        cutter = Cutter(sim, proxy, point, random.Random(seed), short)
        with Appliance(sim, NAME, delay=0.2) as appliance:
            cutter.start()
            outputs, error = attempts(params, leftovers, resources)
        result["appliance_error"] = appliance.error  # the stand-in's own failure, if any, for the report
        cutter.stop.set()
        cutter.join(10)
        result["fired"] = cutter.fired.is_set()
        result["error"] = error
        result["outputs"] = outputs
        if not short and outputs is None:  # still cut: what is left must all be in the report
            session_lines = resources["vsphere"].close(budget=1) if "vsphere" in resources else []
            report = "\n".join(leftovers + session_lines)
            result["report"] = report
            left = delta(before, count(observer))
            result["left_while_cut"] = sum(len(v) for v in left.values())
            result["unreported"] = unreported(left, report)
            proxy.restore()
            resources = {}
            with Appliance(sim, NAME, delay=0.2):
                outputs, error = attempts(params, leftovers, resources)
            result["rerun_error"], result["outputs"] = error, outputs
            result["reported_sessions"] = (
                delta(before, count(observer)).get("sessions", set()) if session_lines else set()
            )
        proxy.restore()
        if "vsphere" in resources:
            closing = resources["vsphere"].close()
            assert not [line for line in closing if "log out failed" in line], "the run's session could not log out"
            if closing:  # a login cut after it was sent: reported, so what it may have left is accounted for
                cut = delta(before, count(observer)).get("sessions", set())
                result["reported_sessions"] = result.get("reported_sessions", set()) | cut
        after = count(observer)
        after["sessions"] -= result.get("reported_sessions", set())  # reported, and the only thing that stays
        result["delta"] = delta(before, after)
        return result
    finally:
        proxy.restore()
        Disconnect(observer)
        proxy.stop()
        sim.stop()


def clean_create_delta(isos) -> dict[str, set]:
    """What a create that nothing disturbs adds to the simulator (through the proxy, never cut)."""
    sim = vcsim.start(hosts=3)
    host, port = sim.host.split(":")
    proxy = FaultProxy(host, int(port)).start()
    observer = sim.connect()
    try:
        direct = {"server": sim.url, "user": sim.username, "password": sim.password, "thumbprint": sim.thumbprint}
        stepkit.apply(Firewall, **direct, compute_resource="DC0_C0", action="allow")
        before = count(observer)
        params = {**params_for(proxy.address, sim, isos)}
        resources: dict = {}
        with Appliance(sim, NAME, delay=0.2):
            outputs, error = attempts(params, [], resources, retries=0)
        assert error is None, error
        resources["vsphere"].close()
        bulk = [n for n in proxy.sent() if n >= SOAP_CEILING]
        assert len(bulk) == 1 and bulk[0] >= 16_000_000, f"one connection should carry the ISO: {proxy.sent()}"
        return delta(before, count(observer))
    finally:
        Disconnect(observer)
        proxy.stop()
        sim.stop()


def test_thirty_cuts_at_random_points_leak_nothing_and_leave_nothing_unreported(isos):
    clean = clean_create_delta(isos)
    assert clean["vms"] == {NAME} and clean["pools"] == {NAME} and not clean.get("sessions")
    rng = random.Random(20261128)
    plan = [(POINTS[i % len(POINTS)], i % 2 == 0, rng.randrange(1 << 30)) for i in range(TRIALS)]
    results = [one_trial(isos, point, short, seed) for point, short, seed in plan]

    table = "\n".join(
        f"{r['point']:>6} {'short' if r['short'] else 'long':>5} fired={r['fired']} "
        f"attempts={(r['outputs'] or {}).get('attempts')} first={type(r['error']).__name__ if r['error'] else 'ok'} "
        f"left-while-cut={r.get('left_while_cut', '-')} unreported={r.get('unreported', [])} "
        f"leaked={ {k: sorted(v)[:3] for k, v in delta(clean, r['delta']).items()} } "
        f"missing={ {k: sorted(v)[:3] for k, v in delta(r['delta'], clean).items()} }"
        for r in results
    )
    print("\n" + table)
    assert all(r["fired"] for r in results), f"a cut never happened:\n{table}"
    for r in results:
        assert r["outputs"] is not None, f"the VCH was not created in the end: {r}"
        assert r["outputs"]["docker_host"], r
        assert not r.get("rerun_error"), f"the re-run after a long cut failed: {r['rerun_error']!r}\n{table}"
        assert r.get("unreported", []) == [], f"left behind and not reported: {r}\n{table}"
        assert r["delta"] == clean, f"leaked (compared with a clean create): {delta(clean, r['delta'])}\n{table}"
    assert all(r["outputs"]["attempts"] > 1 for r in results if r["short"]), f"a short cut was not retried:\n{table}"
    assert all("report" in r for r in results if not r["short"]), f"a long cut did not fail the step:\n{table}"


BLUEPRINT = """
name: vch-cut
steps:
  - id: firewall
    uses: firewall
    retries: 2
    retry_delay_seconds: 1
    with: {server: "%(server)s", user: %(user)s, password: %(password)s, thumbprint: "%(thumbprint)s",
           compute_resource: DC0_C0, action: allow, rollback_timeout_seconds: 60}
  - id: vch
    uses: vch_create
    needs: firewall
    retries: 2
    retry_delay_seconds: 1
    with: %(vch)s
"""


@pytest.mark.prefect
def test_through_the_engine_a_long_cut_fails_the_create_reports_leftovers_and_rolls_the_firewall_back(
    isos, tmp_path, prefect_api
):
    """retries: 2 runs (the cut's error is not replaced), the firewall is put back once vCenter answers."""
    import json

    from vicflow.flows.engine.execution import RunFailed
    from vicflow.flows.on_prefect.flow import run_blueprint

    sim = vcsim.start(hosts=3)
    host, port = sim.host.split(":")
    proxy = FaultProxy(host, int(port)).start()
    observer = sim.connect()
    try:
        before = count(observer)
        params = params_for(proxy.address, sim, isos)
        path = tmp_path / "vch-cut.yaml"
        path.write_text(
            BLUEPRINT
            % {
                "server": params["server"],
                "user": sim.username,
                "password": sim.password,
                "thumbprint": sim.thumbprint,
                "vch": json.dumps(params),
            }
        )

        def cut_when_the_vm_exists():
            while not any(v.name == NAME for v in _view(sim_session, vim.VirtualMachine)):
                time.sleep(0.01)
            proxy.cut()
            time.sleep(15)  # the create fails within ~6 s; the firewall's rollback waits for this
            proxy.restore()

        sim_session = sim.connect()
        cutter = threading.Thread(target=cut_when_the_vm_exists, daemon=True)
        with Appliance(sim, NAME, delay=0.2):
            cutter.start()
            with pytest.raises(RunFailed) as failed:
                run_blueprint(blueprint=str(path))
        cutter.join(30)
        Disconnect(sim_session)
        summary = failed.value.summary
        rows = {row["id"]: row for row in summary["steps"]}
        assert rows["vch"]["attempts"] == 3, rows["vch"]
        assert "ConnectionResetError" in rows["vch"]["error"] or "SSLEOFError" in rows["vch"]["error"], rows["vch"]
        assert any(line.startswith(f"VM {NAME} (half-built VCH)") for line in rows["vch"]["left_behind"]), rows["vch"]
        assert rows["firewall"]["state"] == "rolled_back", rows["firewall"]
        assert count(observer)["vspc"] == set(), "vSPC was left enabled"
        left = delta(before, count(observer))
        assert unreported(left, "\n".join(rows["vch"]["left_behind"] + summary["left_behind"])) == []

        with Appliance(sim, NAME, delay=0.2):  # the re-run removes the half-built VCH and creates it
            summary = run_blueprint(blueprint=str(path))
        rows = {row["id"]: row for row in summary["steps"]}
        assert rows["vch"]["state"] == "completed" and rows["vch"]["left_behind"] == [], rows["vch"]
        after = count(observer)
        assert {NAME} == after["vms"] - before["vms"] and {NAME} == after["pools"] - before["pools"]
    finally:
        proxy.restore()
        Disconnect(observer)
        proxy.stop()
        sim.stop()
