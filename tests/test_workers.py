"""Workers on several hosts: three network namespaces on a bridge of the test's own, each running
`vicflow worker` against one Prefect server on PostgreSQL (docs/scale-out.md). Runs go through the work pool
and are spread over the hosts; none is lost and none runs twice."""

from __future__ import annotations

import collections
import json
import tempfile
import time
from pathlib import Path

import pytest

from tests.testbed import REPO, netns, prefect_pg
from tests.testbed.pool import Pool

pytestmark = pytest.mark.prefect

RUNS = 30


def test_thirty_runs_spread_over_three_workers_on_three_hosts_none_lost_none_twice(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="vicflow-where-", dir=tmp_path))
    with netns.lan(3) as lan, prefect_pg.running(api_host=lan.gateway) as stack:
        pool = Pool(stack, "hosts", tmp_path / "workers")
        pool.create()
        deployment = pool.deploy(str(REPO / "tests/data/where.yaml"))
        names = [f"host-{n}" for n in range(1, 4)]
        fleet = pool.deploy(str(REPO / "tests/data/fleet/where-fleet.yaml"))
        for name, host in zip(names, lan.hosts, strict=True):  # without a limit the first to poll takes them all
            pool.start_worker(host, name, limit=4, VICFLOW_FLEET_DEPLOYMENT="run-blueprint/form-where")
        pool.wait_online(names)

        started = time.monotonic()
        ids = [
            pool.run(deployment, {"inputs": {"n": n, "folder": str(shared), "peer": lan.gateway, "seconds": 2}})
            for n in range(RUNS)
        ]
        runs = pool.wait_final(ids, timeout=600)
        took = time.monotonic() - started
        by = pool.submitted_by(ids)

        # a fleet run: one step, nine child flow runs on the pool (on: pool), whichever workers take them
        numbers = list(range(100, 109))
        parent_id = pool.run(fleet, {"inputs": {"numbers": numbers, "folder": str(shared), "peer": lan.gateway}})
        parent = pool.wait_final([parent_id], timeout=600)[parent_id]
        children_table = pool.call(
            "POST",
            "/artifacts/filter",
            {"artifacts": {"flow_run_id": {"any_": [parent_id]}, "key": {"any_": ["vicflow-where-fleet-children"]}}},
        )
        children = pool.call("POST", "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}})
        child_by = pool.submitted_by([c["id"] for c in children])

    states = collections.Counter(r["state_type"] for r in runs.values())
    assert states == {"COMPLETED": RUNS}, states
    assert all(r["run_count"] == 1 for r in runs.values()), [r["run_count"] for r in runs.values()]
    twice = {run: workers for run, workers in by.items() if len(workers) != 1}
    assert not twice, f"runs not submitted by exactly one worker: {twice}"
    spread = collections.Counter(workers[0] for workers in by.values())
    print(f"\n{RUNS} runs in {took:.1f}s; runs per worker: {dict(sorted(spread.items()))}")
    assert set(spread) == set(names), f"not every host ran a run: {spread}"

    # what each run's step saw: the address of the host that ran it, written once
    address = {name: host.address for name, host in zip(names, lan.hosts, strict=True)}
    for n, run_id in enumerate(ids):
        lines = (shared / f"run-{n}.txt").read_text().split()
        assert lines == [address[by[run_id][0]]], f"run {n} ({run_id}) wrote {lines}; worker {by[run_id]}"

    # the fleet run: every child completed on the pool, spread over the hosts, its outputs in the parent's
    assert parent["state_type"] == "COMPLETED", (parent["state"], {n: pool.log(n)[-800:] for n in names})
    assert len(children) == len(numbers) and all(c["state_type"] == "COMPLETED" for c in children), children
    fleet_spread = collections.Counter(w[0] for w in child_by.values() if len(w) == 1)
    print(f"fleet children per worker: {dict(sorted(fleet_spread.items()))}")
    assert sum(fleet_spread.values()) == len(numbers) and len(fleet_spread) >= 2, child_by
    for number in numbers:
        assert len((shared / f"run-{number}.txt").read_text().split()) == 1, f"child {number} ran twice"
    rows = children_table[0]["data"] if children_table else []
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert sorted(r["flow_run"] for r in rows) == sorted(c["id"] for c in children), rows
    assert all(r["state"] == "completed" and json.loads(r["outputs"])["address"] in address.values() for r in rows), (
        rows
    )
