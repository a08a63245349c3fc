"""Workers on several hosts: three network namespaces on a bridge of the test's own, each running
`vicflow worker` against one Prefect server on PostgreSQL (docs/scale-out.md). Runs go through the work pool
and are spread over the hosts; none is lost and none runs twice."""

from __future__ import annotations

import collections
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
        for name, host in zip(names, lan.hosts, strict=True):
            pool.start_worker(host, name, limit=4)  # without a limit the first worker to poll takes them all
        pool.wait_online(names)

        started = time.monotonic()
        ids = [
            pool.run(deployment, {"inputs": {"n": n, "folder": str(shared), "peer": lan.gateway, "seconds": 2}})
            for n in range(RUNS)
        ]
        runs = pool.wait_final(ids, timeout=600)
        took = time.monotonic() - started
        by = pool.submitted_by(ids)

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
