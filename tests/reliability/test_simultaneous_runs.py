"""Two operators press Run at once, ten times over, through the `run-blueprint` deployment and the worker of a
Prefect stack of its own (tests/testbed/prefect_stack.py), as runs started from the UI are.  Apart from the
server faults of test_prefect_server.py, so that each module's stack runs on a worker of its own under `make
test`."""

from __future__ import annotations

import os

import pytest

from tests.reliability.deployment_runs import logs_of, span, start_run, summary_rows, wait_final
from tests.testbed import prefect_stack

pytestmark = [pytest.mark.docker, pytest.mark.prefect, pytest.mark.faults]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_engine, docker_images):
    with prefect_stack.for_tests(tmp_path_factory.mktemp("simultaneous-runs"), docker_engine) as stack:
        yield stack


PAIRS = int(os.environ.get("VICFLOW_PAIR_TRIALS", "10"))


def vm_names(sim) -> list[str]:
    from pyVim.connect import Disconnect
    from pyVmomi import vim

    si = sim.connect()
    try:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
        try:
            return [vm.name for vm in view.view]
        finally:
            view.Destroy()
    finally:
        Disconnect(si)


def test_ten_pairs_of_full_stack_runs_on_one_vch_name_started_at_the_same_moment(stack, tmp_path, vcsim):
    """Two operators press Run on full-stack for the same VCH at once, ten times over (a new VCH name each
    time, the app removed between pairs): one VCH and one set of containers each time; the second run
    waits for the first, then reports that nothing changed."""
    from tests.demo import VCH_IP, full_stack_inputs
    from tests.testbed.appliance import Appliance

    stack.env["VICFLOW_SECRET_PAIR_VCENTER"] = vcsim.password
    stack.start_worker()  # the worker's runs see the new secret
    table = []
    for pair in range(PAIRS):
        name = f"vch-pair-{pair}"
        (tmp_path / name).mkdir()
        for iso in ("appliance.iso", "bootstrap.iso"):
            (tmp_path / name / iso).write_bytes(b"iso\n" * 256)
        inputs = full_stack_inputs(vcsim, name, tmp_path / name, **{
            "password": "${{ secrets.pair_vcenter }}",
            "db_password": "${{ secrets.gogs_db_password }}",
            "admin_password": "${{ secrets.gogs_admin_password }}",
            "http_port": prefect_stack.free_port(),
            "ssh_port": prefect_stack.free_port(),
        })  # fmt: skip
        prefect_stack.clean_gogs()
        with Appliance(vcsim, name, ip=VCH_IP) as appliance:
            ids = [start_run(stack, blueprint="full-stack", inputs=inputs, inputs_from=None) for _ in range(2)]
            runs = [wait_final(stack, run_id, timeout=600) for run_id in ids]
        assert appliance.error is None, appliance.error
        assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [logs_of(stack, i) for i in ids]
        rows = [summary_rows(stack, run_id) for run_id in ids]
        first, second = sorted(range(2), key=lambda i: span(stack, ids[i])[0])
        changed = [sorted(step for step, row in r.items() if row["changed"]) for r in rows]
        containers = stack.client.containers.list(all=True, filters={"label": "com.docker.compose.project=gogs"})
        table.append(
            {
                "pair": pair,
                "vms": vm_names(vcsim).count(name),
                "containers": sorted(c.name for c in containers),
                "first changed": changed[first],
                "second changed": changed[second],
                "second waited": span(stack, ids[second])[0] >= span(stack, ids[first])[1],
            }
        )
        print(table[-1])
    duplicates = [row for row in table if row["vms"] != 1 or row["containers"] != ["gogsapp", "gogsdb"]]
    assert not duplicates, duplicates
    assert all("vch" in row["first changed"] and "app" in row["first changed"] for row in table), table
    assert all(row["second changed"] == [] for row in table), table
    assert all(row["second waited"] for row in table), table
    prefect_stack.clean_gogs()
