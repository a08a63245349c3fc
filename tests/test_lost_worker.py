"""A lost worker loses no work: the host of the worker running a full-stack run (on the simulator and the test
Docker engine) dies, SIGKILL to every process of its network namespace, just after the VCH is built. Prefect
marks the run Crashed (heartbeats and the automation `vicflow deploy` makes), and the run resumed through the
deployment on the other host completes it: the steps that completed are skipped, found in the journal Prefect
keeps, and nothing is created twice: one VCH, one set of containers."""

from __future__ import annotations

import time
import uuid

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim

from tests.demo import VCH_IP, full_stack_inputs
from tests.testbed import dockerd, netns, prefect_pg, prefect_stack
from tests.testbed.appliance import Appliance
from tests.testbed.pool import Pool

pytestmark = [pytest.mark.prefect, pytest.mark.vcsim, pytest.mark.docker]

HEARTBEAT = 30  # seconds: the smallest flow-run heartbeat Prefect honours (PREFECT_FLOWS_HEARTBEAT_FREQUENCY >= 30)
# The window of the automation that marks a run Crashed: two heartbeats missed, the shortest that a live run on a
# busy machine does not cross (the shipped default, vicflow deploy's, stays 600 s)
UNRESPONSIVE = 2 * HEARTBEAT


def vm_names(sim) -> list[str]:
    si = sim.connect()
    try:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
        return [vm.name for vm in view.view]
    finally:
        Disconnect(si)


def wait_journal_step(pool: Pool, run_id: str, step: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        journal = pool.journal(run_id)
        if journal.get("steps", {}).get(step, {}).get("state") == "completed":
            return journal
        time.sleep(0.3)
    raise AssertionError(f"step {step} of run {run_id} not completed in {timeout}s: {pool.journal(run_id)}")


def test_a_killed_host_crashes_its_run_and_a_resume_on_another_host_completes_it_creating_nothing_twice(
    tmp_path, vcsim, docker_engine, docker_images
):
    name = "vch-lost"
    folder = tmp_path / name
    folder.mkdir()
    for iso in ("appliance.iso", "bootstrap.iso"):
        (folder / iso).write_bytes(b"iso\n" * 256)
    http_port, ssh_port = prefect_stack.free_port(), prefect_stack.free_port()
    secrets = {
        "VICFLOW_SECRET_LOST_VCENTER": vcsim.password,
        "VICFLOW_SECRET_LOST_DB": "db-" + uuid.uuid4().hex[:10],
        "VICFLOW_SECRET_LOST_ADMIN": "admin-" + uuid.uuid4().hex[:10],
    }
    prefect_stack.clean_gogs()
    with netns.lan(2) as lan, prefect_pg.running(api_host=lan.gateway) as stack:
        # what the hosts reach: vCenter through the bridge, the VCH endpoint and the app at their own addresses
        server = vcsim.url.replace(vcsim.host, lan.forward(prefect_stack.free_port(), vcsim.host))
        for host in lan.hosts:
            for address in (dockerd.VCH.removeprefix("tcp://"), f"{VCH_IP}:{http_port}", f"{VCH_IP}:{ssh_port}"):
                lan.mirror(host, address, tmp_path / f"{host.name}-socat.log")
        inputs = full_stack_inputs(vcsim, name, folder, **{
            "server": server,
            "password": "${{ secrets.lost_vcenter }}",
            "db_password": "${{ secrets.lost_db }}",
            "admin_password": "${{ secrets.lost_admin }}",
            "http_port": http_port,
            "ssh_port": ssh_port,
        })  # fmt: skip
        pool = Pool(stack, "hosts", tmp_path / "workers")
        pool.create()
        deployment = pool.deploy("full-stack", unresponsive=UNRESPONSIVE)
        names = ["host-1", "host-2"]
        for worker, host in zip(names, lan.hosts, strict=True):
            pool.start_worker(host, worker, PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT), **secrets)
        pool.wait_online(names)
        automation = pool.call("POST", "/automations/filter", {})
        assert [a["name"] for a in automation] == ["vicflow: mark unresponsive runs Crashed"], automation

        with Appliance(vcsim, name, ip=VCH_IP) as appliance:
            first = pool.run(deployment, {"inputs": inputs})
            wait_journal_step(pool, first, "vch")  # the VCH is built and Prefect has it in the run's journal
            (lost,) = pool.submitted_by([first])[first]
            killed = pool.workers[lost].kill()
            killed_at = time.monotonic()
            crashed = pool.wait_final([first], timeout=UNRESPONSIVE + 3 * HEARTBEAT + 60)[first]
            detected = time.monotonic() - killed_at
            second = pool.run(deployment, {"inputs": inputs, "resume": first})
            resumed = pool.wait_final([second], timeout=600)[second]
        assert appliance.error is None, appliance.error
        (resumer,) = pool.submitted_by([second])[second]
        rows = pool.summary(second)
        containers = docker_engine.client().containers.list(
            all=True, filters={"label": "com.docker.compose.project=gogs"}
        )
        workers_log = {n: pool.log(n)[-1500:] for n in names}

    print(f"\nkilled {lost} ({len(killed)} processes); Crashed after {detected:.0f}s; resumed on {resumer}")
    print({step: row["state"] for step, row in rows.items()})
    assert crashed["state_type"] == "CRASHED", (crashed["state"], workers_log)
    assert "no heartbeat" in crashed["state"]["message"], crashed["state"]
    assert resumed["state_type"] == "COMPLETED", (resumed["state"], workers_log)
    assert resumer != lost, "the resume ran on the host that was gone"
    assert rows["firewall"]["state"] == "cached" and rows["vch"]["state"] == "cached", rows
    assert all(row["state"] in ("cached", "completed") for row in rows.values()), rows
    assert vm_names(vcsim).count(name) == 1, vm_names(vcsim)
    assert sorted(c.name for c in containers) == ["gogsapp", "gogsdb"], [c.name for c in containers]
    prefect_stack.clean_gogs()
