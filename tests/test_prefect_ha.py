"""Failover of the highly available control plane (tests/testbed/prefect_ha.py: PostgreSQL, Redis, two API
replicas behind haproxy, the background services apart). Each test kills one part with SIGKILL in the middle
of real work: runs of tests/data/where.yaml created through haproxy, taken by a `vicflow worker`, their steps
running and reporting. A supervisor (here the test, in production systemd) starts a killed Redis or services
process again; a killed replica stays dead, haproxy sends everything to the other one.

After each: every run was created once (none lost, none twice), ran once (its `where` step appended one line to
its file), completed, its summary lists every step completed, and Prefect recorded one completed task run per
step (those records travel as events, through Redis and the services). The time until the plane answers again
is printed (docs/scale-out.md keeps the numbers; a benchmark, not an assert).

Runs are created as a careful client creates them: with an idempotency key, the same key again after an error
(a replica that died after storing the run but before answering must not make a second one).
VICFLOW_HA_TRIALS=N repeats each trial N times (the numbers in docs/scale-out.md: N=5).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from vicflow.plugins.clients import certs

from tests.helpers import free_port
from tests.testbed import REPO, prefect_ha
from tests.testbed.netns import Host
from tests.testbed.pool import Pool
from tests.testbed.prefect_stack import BIN

pytestmark = [pytest.mark.prefect, pytest.mark.faults]

RUNS = 6  # 3 created before the kill, 3 while the part is dead or coming back
TRIALS = int(os.environ.get("VICFLOW_HA_TRIALS", "1"))
STEPS = {"where", "work"}


class Plane:
    def __init__(self, ha: prefect_ha.PrefectHA, pool: Pool, deployment: str, folder: Path):
        self.ha, self.pool, self.deployment, self.folder = ha, pool, deployment, folder
        self.errors: list[str] = []  # what the creating client met (each followed by the same request again)

    def create(self, key: str, inputs: dict, timeout: float = 90) -> str:
        """Create a run of the deployment with an idempotency key; after any error, the same request again."""
        deadline, error = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            try:
                response = requests.post(
                    f"{self.ha.api}/deployments/{self.deployment}/create_flow_run",
                    json={"parameters": {"inputs": inputs}, "idempotency_key": key},
                    timeout=10,
                    **self.ha.http(),
                )
                if response.status_code < 300:
                    return response.json()["id"]
                error = f"HTTP {response.status_code} {response.text[:200]}"
            except requests.RequestException as exc:
                error = str(exc)
            self.errors.append(error)
            time.sleep(0.3)
        raise AssertionError(f"run {key} could not be created in {timeout:g}s: {error}")

    def runs_in(self, shared: Path) -> list[dict]:
        """Every run of the deployment made for this trial (its folder is in its inputs), however it was made."""
        runs = self.pool.call(
            "POST", "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [self.deployment]}}, "limit": 200}
        )
        return [r for r in runs if (r["parameters"].get("inputs") or {}).get("folder") == str(shared)]

    def taken_slots(self) -> dict[str, int]:
        """The per-target limits of where.yaml's runs (``where/N``) that still count a slot taken."""
        limits = self.pool.call("POST", "/v2/concurrency_limits/filter", {"limit": 200})
        return {c["name"]: c["active_slots"] for c in limits if c["name"].startswith("vicflow-target-where-")
                and c["active_slots"]}  # fmt: skip

    def task_runs(self, run_id: str, timeout: float = 180) -> dict[str, list[str]]:
        """step id -> the states of its task runs, once every step has a final one (they come as events, through
        Redis to the services process, which lags by a minute and more on a loaded 2-core machine)."""
        deadline, steps = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            found = self.pool.call("POST", "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}})
            steps = collections.defaultdict(list)
            for task in found:
                steps[task["name"]].append(task["state_type"])
            if set(steps) >= STEPS and all(s == ["COMPLETED"] for s in steps.values()):
                break
            time.sleep(1)
        return dict(steps)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ha")
    with prefect_ha.running() as ha:
        pool = Pool(ha, f"ha-{uuid.uuid4().hex[:6]}", folder / "workers")
        pool.create()
        deployment = pool.deploy(str(REPO / "tests/data/where.yaml"))
        host = Host.local()
        pool.start_worker(host, "ha-worker", limit=4)
        try:
            pool.wait_online(["ha-worker"])
            yield Plane(ha, pool, deployment, folder)
        finally:
            host.kill(signal.SIGTERM)
            host.kill(signal.SIGKILL)


def trial(plane: Plane, part: str, kill_and_recover) -> dict[str, float]:
    """RUNS runs; ``kill_and_recover(plane)`` is called once the first half is created and a run is in its second step,
    in a thread while the second half is created; it returns the seconds until the part's work is done again.
    Returns those seconds (``part``), the seconds until the API answered again (``api``) and how many probes of
    the API failed (``failed``)."""
    ha, pool = plane.ha, plane.pool
    shared = plane.folder / f"{part}-{uuid.uuid4().hex[:6]}"
    shared.mkdir()
    key = f"ha-{shared.name}"
    ids: dict[int, str] = {}
    plane.errors.clear()

    def create(n: int) -> None:
        ids[n] = plane.create(f"{key}-{n}", {"n": n, "folder": str(shared), "peer": "127.0.0.1", "seconds": 3})

    recovered: list[float] = []
    with prefect_ha.Watch(ha.answers) as watch:
        for n in range(RUNS // 2):
            create(n)
        deadline = time.monotonic() + 120
        while not list(shared.glob("run-*.txt")):  # a run's first step is done: it holds its target, in `work`
            assert time.monotonic() < deadline, f"no step ran in 120s:\n{pool.log('ha-worker')[-3000:]}"
            time.sleep(0.1)
        killed = time.monotonic()
        killer = threading.Thread(target=lambda: recovered.append(kill_and_recover(plane)), daemon=True)
        killer.start()
        for n in range(RUNS // 2, RUNS):  # while the part is dead or coming back
            create(n)
            time.sleep(0.2)
        killer.join(180)
        runs = pool.wait_final(list(ids.values()), timeout=300)
        answered = watch.until_answered(killed)
        failures = watch.failures(killed)
    assert recovered, f"{part} did not come back"

    made = plane.runs_in(shared)
    by_n = collections.Counter(r["parameters"]["inputs"]["n"] for r in made)
    lost = [n for n in range(RUNS) if by_n[n] == 0]
    twice = {n: c for n, c in by_n.items() if c > 1}
    print(
        f"\n{part} killed: {RUNS} runs, lost {len(lost)}, duplicated {sum(c - 1 for c in twice.values())}; "
        f"the API answered again after {answered:.2f}s ({failures} probes failed), "
        f"the part's work after {recovered[0]:.2f}s; the creating client met {len(plane.errors)} errors "
        f"{sorted(set(e[:80] for e in plane.errors))}"
    )
    assert not lost and not twice, f"runs lost: {lost}; made more than once: {twice}"
    assert {r["id"] for r in made} == set(ids.values())

    states = {n: (runs[i]["state_type"], runs[i]["run_count"]) for n, i in ids.items()}
    assert all(s == ("COMPLETED", 1) for s in states.values()), (states, pool.log("ha-worker")[-3000:])
    for n, run_id in ids.items():
        lines = (shared / f"run-{n}.txt").read_text().split()
        assert lines == ["127.0.0.1"], f"run {n}: its where step ran {len(lines)} times"
        summary = pool.summary(run_id)
        assert set(summary) == STEPS and all(row["state"] == "completed" for row in summary.values()), summary
        tasks = plane.task_runs(run_id)
        assert tasks == {step: ["COMPLETED"] for step in STEPS}, f"run {n}: task runs {tasks}"
    # every run gave its target's slot back (a forgotten lease would leave it taken, and the next run waiting)
    assert plane.taken_slots() == {}, plane.taken_slots()
    return {"api": answered, "part": recovered[0], "failed": failures}


def report(part: str, results: list[dict[str, float]], measure: str) -> None:
    """A row of docs/scale-out.md's failover table: part killed | trials | lost | duplicated | recovery seconds
    (median, max); the asserts above make lost and duplicated 0."""
    times = sorted(r[measure] for r in results)
    print(
        f"\n| {part} | {len(results)} | 0 | 0 | {times[len(times) // 2]:.2f} (max {times[-1]:.2f}) |"
        f"  API probes failed: {[r['failed'] for r in results]}; API back after {[round(r['api'], 2) for r in results]} s"
    )


def test_the_plane_is_closed_to_strangers_and_listen_reaches_it_over_tls(plane, tmp_path):
    """The API behind haproxy: 401 without the auth string or with a wrong one, plain HTTP refused at the TLS
    bind, a client that does not trust the plane's CA refused; the CLI names the setting, never its value.
    `vicflow listen` with its registry receiver on HTTPS: a notification without the token is refused (401), an
    authorised one becomes an event in the plane whose automation starts a run, which the worker completes.
    First in the module: on the plane before any part was killed."""
    ha, ca = plane.ha, str(plane.ha.ca)
    url, query = f"{ha.api}/flow_runs/filter", {"limit": 1}
    assert requests.post(url, json=query, verify=ca, timeout=10).status_code == 401
    assert requests.post(url, json=query, verify=ca, auth=(ha.user, "not-" + ha.secret), timeout=10).status_code == 401
    assert requests.post(url, json=query, timeout=10, **ha.http()).status_code == 200
    assert requests.get(f"{ha.api}/health", verify=ca, timeout=10).status_code == 200  # the load balancer's probe
    with pytest.raises(requests.ConnectionError):
        requests.post(url.replace("https://", "http://"), json=query, auth=(ha.user, ha.secret), timeout=10)
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        requests.post(url, json=query, auth=(ha.user, ha.secret), verify=True, timeout=10)  # the system's CAs only

    wrong = "vicflow:wrong-" + uuid.uuid4().hex
    cli = subprocess.run(
        [str(BIN / "vicflow"), "deploy", "--pool", plane.pool.name, str(REPO / "tests/data/where.yaml")],
        env=plane.pool.env(PREFECT_API_AUTH_STRING=wrong),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode != 0 and "refused this client (401 Unauthorized)" in cli.stderr, cli.stderr[-2000:]
    assert "PREFECT_API_AUTH_STRING" in cli.stderr and wrong not in cli.stdout + cli.stderr

    # vicflow listen, a client of the plane (auth string and CA from its environment), receiving over HTTPS
    tls = certs.generate(tmp_path / "receiver", "127.0.0.1", ["127.0.0.1"], client=False)
    token, port, repository = uuid.uuid4().hex, free_port(), f"auth/app-{uuid.uuid4().hex[:6]}"
    receiver = {"listen": f"127.0.0.1:{port}", "token": token, "tls_cert": tls["server_cert"], "tls_key": tls["server_key"]}  # fmt: skip
    (tmp_path / "listen.yaml").write_text(json.dumps({"registry": receiver}))
    shared = plane.folder / f"notified-{uuid.uuid4().hex[:6]}"
    shared.mkdir()
    plane.pool.call(
        "POST",
        "/automations/",
        {
            "name": f"run-where-on-{repository}",
            "trigger": {"type": "event", "posture": "Reactive", "expect": ["registry.image.pushed"],
                        "match": {"registry.repository": repository}, "threshold": 1, "within": 0},
            "actions": [{"type": "run-deployment", "source": "selected", "deployment_id": plane.deployment,
                         "parameters": {"inputs": {"n": 0, "folder": str(shared), "peer": "127.0.0.1", "seconds": 0}},
                         "job_variables": {}}],
        },
    )  # fmt: skip
    ha.start_client(
        "auth-listen",
        [str(BIN / "vicflow"), "listen", "--config", str(tmp_path / "listen.yaml")],
        VICFLOW_STATE_DIR=str(tmp_path / "state"),
        PYTHONPATH=str(REPO),
    )
    notify = f"https://127.0.0.1:{port}/events"
    envelope = {"events": [{"id": uuid.uuid4().hex, "action": "push", "timestamp": "2026-12-03T10:00:00Z",
                            "request": {"host": "127.0.0.1:5000"},
                            "target": {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                                       "repository": repository, "tag": "2.0", "digest": "sha256:" + "a" * 64}}]}  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # the receiver is up: a notification without the token is refused
        try:
            refused = requests.post(notify, json=envelope, verify=tls["ca"], timeout=5)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"vicflow listen did not receive in 120s:\n{ha.log('auth-listen')}"
            time.sleep(0.5)
    assert refused.status_code == 401
    sent = requests.post(
        notify, json=envelope, headers={"Authorization": f"Bearer {token}"}, verify=tls["ca"], timeout=10
    )
    assert sent.status_code == 200
    deadline = time.monotonic() + 180
    while not (runs := plane.runs_in(shared)):
        if time.monotonic() > deadline:
            stored = plane.pool.call(
                "POST", "/events/filter", {"filter": {"event": {"name": ["registry.image.pushed"]}}}
            )
            raise AssertionError(
                f"no run from the notification in 180s; registry.image.pushed events stored: {len(stored['events'])}\n"
                f"--- listen\n{ha.log('auth-listen')}\n--- services\n{ha.log(prefect_ha.SERVICES)}"
            )
        time.sleep(1)
    [run] = runs
    final = plane.pool.wait_final([run["id"]], timeout=180)[run["id"]]
    assert final["state_type"] == "COMPLETED", final
    assert (shared / "run-0.txt").read_text().split() == ["127.0.0.1"]
    log = ha.log("auth-listen", tail=20000)
    assert "receiving registry notifications on https://" in log and "missing bearer token" in log
    assert token not in log and ha.secret not in log
    ha.kill("auth-listen", signal.SIGTERM)


def test_an_api_replica_killed_while_runs_are_created_and_steps_report(plane):
    """SIGKILL one replica: haproxy sends its traffic to the other one; runs, steps, summaries all complete."""

    def kill_replica(p: Plane) -> float:
        killed = p.ha.kill("api-1")
        deadline = time.monotonic() + 30
        while "api-1" in p.ha.backends_up():  # haproxy's checks take it out (2 failures, 1 s apart)
            assert time.monotonic() < deadline, "haproxy still sends traffic to the dead replica"
            time.sleep(0.1)
        return time.monotonic() - killed

    results = []
    for _ in range(TRIALS):
        results.append(trial(plane, "api replica", kill_replica))
        plane.ha.start("api-1")  # back for the next trial (haproxy takes it in after 2 good checks)
        deadline = time.monotonic() + 30
        while plane.ha.backends_up() != set(prefect_ha.REPLICAS):
            assert time.monotonic() < deadline, "haproxy did not take the restarted replica back"
            time.sleep(0.2)
    report("API replica", results, "api")


def test_the_background_services_killed_while_runs_report(plane):
    """SIGKILL the services process (event persister, task run recorder, triggers, scheduler ...) and start it
    again: what the API received meanwhile waits in Redis, and every task run is recorded."""

    def kill_services(p: Plane) -> float:
        killed = p.ha.kill(prefect_ha.SERVICES)
        p.ha.start(prefect_ha.SERVICES)  # returns once an event posted to the API is stored again
        return time.monotonic() - killed

    report("background services", [trial(plane, "services", kill_services) for _ in range(TRIALS)], "part")


def test_redis_killed_and_restarted_while_runs_report(plane):
    """SIGKILL Redis (messages, leases, Docket's queue) and start it again on its append-only file: no lease is
    forgotten, no run lost, every event the API took is recorded."""

    def kill_redis(p: Plane) -> float:
        killed = p.ha.kill(prefect_ha.REDIS)
        p.ha.start(prefect_ha.REDIS)
        deadline = time.monotonic() + 120
        while not p.ha.events_flow(timeout=5):  # the consumers reconnect with a backoff (1, 2, 4 ... s)
            assert time.monotonic() < deadline, f"events do not flow again:\n{p.ha.log(prefect_ha.SERVICES)}"
        return time.monotonic() - killed

    report("Redis (restarted)", [trial(plane, "redis", kill_redis) for _ in range(TRIALS)], "part")
