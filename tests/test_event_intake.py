"""One run per source event, and storms folded per target (issue 29, items 3 and 4), end to end: a Prefect server
on PostgreSQL with its triggers, `vicflow worker`, `vicflow listen` processes streaming the test bed's dockerd,
and containers that really die.

On PostgreSQL, as docs/scale-out.md has event-driven deployments run: on the session's SQLite server, under the
whole suite's load, one die of the storm got no run within 4 minutes (CI, stop 33, and a fresh clone: 29 runs for
30 dies). SQLite's lock is not fair (a waiting writer polls it, sqlite3_busy_timeout), so under steady writes
one transaction can wait out its whole busy timeout while others pass; the triggers' evaluation and the action's
create_flow_run are each such a transaction, and Prefect does not retry an action that failed
(prefect/server/events/actions.py ``consumer``: ActionFailed "will not be retried").

The deployment is one an operator writes: triggered by `docker.container.died` of the test's containers, a
concurrency limit of 1 (ENQUEUE), running a blueprint whose one step takes 3 s."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_for
from tests.testbed import prefect_pg
from tests.testbed.prefect_stack import BIN, deploy_on_event, start, stop, ts

pytestmark = [pytest.mark.docker, pytest.mark.prefect]
REPO = Path(__file__).resolve().parents[1]
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
STORM = 30  # dies of one container


class Plane:
    """The deployment, its worker and the listeners, on the module's Prefect server (PostgreSQL)."""

    def __init__(self, server: prefect_pg.PrefectOnPostgres, home: Path, env: dict, prefix: str, deployment: str):
        self.server, self.api = server, server.api
        self.home, self.env, self.prefix, self.deployment = home, env, prefix, deployment
        self.listeners: dict[str, subprocess.Popen] = {}

    def post(self, path: str, body: dict | None = None):
        return self._call("POST", path, body or {})

    def get(self, path: str):
        return self._call("GET", path, None)

    def _call(self, method: str, path: str, body: dict | None):
        """One API call, retried on 429/502/503 as Prefect's own client does (prefect/client/base.py
        ``PrefectHttpxAsyncClient``): the session's server on SQLite answers 503 while its database is locked."""
        for attempt in range(6):
            response = requests.request(method, f"{self.api}{path}", json=body, timeout=30)
            if response.status_code not in (429, 502, 503) or attempt == 5:
                break
            time.sleep(0.5 * 2**attempt)
        response.raise_for_status()
        return response.json()

    def deployment_id(self) -> str:
        [found] = [d for d in self.post("/deployments/filter") if d["name"] == self.deployment]
        return found["id"]

    def runs(self) -> list[dict]:
        body = {"flow_runs": {"deployment_id": {"any_": [self.deployment_id()]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.post("/flow_runs/filter", {**body, "limit": 200})

    def runs_for(self, container: str) -> list[dict]:
        return [r for r in self.runs() if (r["parameters"].get("event") or {}).get("resource", {}).get(
            "docker.container") == container]  # fmt: skip

    def listen(self, name: str, replay_seconds: float = 5, *options: str) -> subprocess.Popen:
        """`vicflow listen` with its own state directory (where it keeps its place in the stream)."""
        config = self.home / f"{name}.yaml"
        config.write_text(
            json.dumps(
                {
                    "docker": {
                        "docker_host": "tcp://127.0.0.1:2375",
                        "engine": "testbed",
                        "mode": "events",
                        "removal_grace_seconds": 0.5,
                        "replay_seconds": replay_seconds,
                    }
                }
            )
        )
        env = {**self.env, "VICFLOW_STATE_DIR": str(self.home / f"state-{name}")}
        log = self.home / f"{name}-{len(list(self.home.glob(f'{name}-*.log')))}.log"  # one log a start
        self.listeners[name] = start(
            [sys.executable, "-m", "vicflow.flows.cli.main", "listen", "--config", str(config), *options], env, log
        )
        wait_for(lambda: "running; SIGTERM" in log.read_text(), 60, f"{name} did not start: {log}")
        return self.listeners[name]

    def emitted(self, name: str, container: str = r"\S+") -> list[str]:
        """The event ids a listener emitted (its log says each), of ``container``'s dies if given."""
        text = "".join(log.read_text() for log in sorted(self.home.glob(f"{name}-*.log")))
        return re.findall(rf"emitted docker\.container\.died ([0-9a-f-]{{36}}) for \S+\.{container}$", text, re.M)

    def unrun(self, listener: str, container: str) -> str:
        """What became of the events a listener emitted for ``container`` that no run acts on: the runs by state,
        and for each such event what Prefect's automations said of it (an action triggered, failed and why)."""
        runs = self.runs_for(container)
        taken = {r["parameters"]["event"]["id"] for r in runs}
        said = []
        for missing in sorted(set(self.emitted(listener, re.escape(container))) - taken):
            related = {"related": {"id": [f"prefect.event.{missing}"]}}
            events = self.post("/events/filter", {"filter": related, "limit": 20})["events"]
            told = [f"{e['event']} {e['payload'].get('reason', '')}".strip() for e in events]
            stored = self.post("/events/filter", {"filter": {"id": {"id": [missing]}}, "limit": 1})["total"]
            said.append(f"{missing} ({'in' if stored else 'not in'} Prefect's events): {told or 'no action names it'}")
        return f"{container} runs: {Counter(r['state_name'] for r in runs)}; emitted without a run: {said}"

    def wait_final(self, container: str, count: int, timeout: float = 180) -> list[dict]:
        def done():
            runs = self.runs_for(container)
            return runs if len(runs) >= count and all(r["state_type"] in FINAL for r in runs) else None

        return wait_for(done, timeout, lambda: f"{container}: {[(r['name'], r['state_name']) for r in self.runs_for(container)]}")  # fmt: skip


def die(client, name: str, times: int = 1) -> list[dict]:
    """Start a container that exits at once ``times`` times; returns Docker's own die events for it."""
    box = client.containers.create("vicflow-test/busybox:latest", ["true"], name=name)
    since = time.time() - 1
    for _ in range(times):
        box.start()
        box.wait(timeout=30)
    return docker_dies(client, name, since)


def docker_dies(client, name: str, since: float) -> list[dict]:
    return list(client.events(since=since, until=time.time(), decode=True, filters={"container": name, "event": "die"}))


@pytest.fixture(scope="module")
def plane(tmp_path_factory, docker_engine, docker_images):
    with prefect_pg.running() as server:
        yield from _plane(server, tmp_path_factory.mktemp("intake"))


def _plane(server: prefect_pg.PrefectOnPostgres, home: Path):
    prefix = f"intake-{uuid.uuid4().hex[:6]}"
    pool, deployment = f"{prefix}-pool", f"{prefix}-on-die"
    blueprint = home / "act.yaml"
    blueprint.write_text(
        f"name: {prefix}\ntarget: {prefix}\nsteps:\n  - id: act\n    uses: sleep\n    with: {{seconds: 3}}\n"
    )
    env = {**server.env(), "PREFECT_WORKER_QUERY_SECONDS": "1", "PYTHONPATH": str(REPO), "PATH": f"{BIN}:{os.environ['PATH']}"}  # fmt: skip
    match = {"docker.container": f"{prefix}-*"}
    deploy_on_event(home, env, pool, deployment, blueprint, match, "docker.container.died")
    plane = Plane(server, home, env, prefix, deployment)
    worker = start([str(BIN / "vicflow"), "worker", "--pool", pool], env, home / "worker.log")
    try:
        yield plane
    finally:
        for listener in plane.listeners.values():
            stop(listener)
        stop(worker)


def test_two_listeners_on_one_engine_give_one_run_per_event(plane, docker_client):
    plane.listen("first")
    plane.listen("second")
    names = [f"{plane.prefix}-pair-{i}" for i in range(3)]  # three targets: nothing is folded
    for name in names:
        die(docker_client, name)
    wait_for(lambda: len(set(plane.emitted("first")) & set(plane.emitted("second"))) >= 3, 60, "both listeners emit")
    for name in names:
        [run] = plane.wait_final(name, 1)
        assert run["state_type"] == "COMPLETED", run
    both = set(plane.emitted("first")) & set(plane.emitted("second"))
    runs = [r for name in names for r in plane.runs_for(name)]
    assert {r["parameters"]["event"]["id"] for r in runs} <= both, "each run acts on an event both listeners sent"
    assert len(runs) == 3, f"one run per event, though each was sent twice: {[r['name'] for r in runs]}"
    for listener in list(plane.listeners):
        stop(plane.listeners.pop(listener))


def test_a_second_delivery_that_prefect_lets_through_does_nothing_and_names_the_run_that_acted(plane):
    """Prefect forgets the ids it saw after 30 minutes or a restart; the run's intake remembers (its tags)."""
    [first] = [r for r in plane.runs() if r["state_type"] == "COMPLETED"][:1]
    created = plane.post(f"/deployments/{plane.deployment_id()}/create_flow_run", {"parameters": first["parameters"]})

    def final():
        run = plane.get(f"/flow_runs/{created['id']}")
        return run if run["state_type"] in FINAL else None

    again = wait_for(final, 120, "the second delivery's run never ended")
    assert again["state_type"] == "CANCELLED" and again["state_name"] == "Duplicate", again["state"]
    assert first["id"] in again["state"]["message"] and first["parameters"]["event"]["id"] in again["state"]["message"]


def test_a_listener_killed_mid_stream_replays_its_backlog_and_no_event_runs_twice(plane, docker_client):
    plane.listen("replay", replay_seconds=60)
    before = [f"{plane.prefix}-before-{i}" for i in range(2)]
    for name in before:
        die(docker_client, name)
    wait_for(lambda: len(plane.emitted("replay")) >= 2, 60, "the listener emits the first dies")
    emitted_before = set(plane.emitted("replay"))
    plane.listeners["replay"].send_signal(signal.SIGKILL)
    plane.listeners.pop("replay").wait(10)
    missed = f"{plane.prefix}-while-down"
    die(docker_client, missed)  # dies while no listener runs
    plane.listen("replay", replay_seconds=60)
    after = f"{plane.prefix}-after"
    die(docker_client, after)
    for name in [*before, missed, after]:
        plane.wait_final(name, 1)
    replayed = Counter(plane.emitted("replay"))
    assert all(replayed[i] == 2 for i in emitted_before), "the restarted listener replayed what it had sent"
    assert "resuming the event stream of testbed from" in (plane.home / "replay-1.log").read_text()
    for name in [*before, missed, after]:
        runs = plane.runs_for(name)
        assert len(runs) == 1 and runs[0]["state_type"] == "COMPLETED", (name, [r["state_name"] for r in runs])
    stop(plane.listeners.pop("replay"))


def test_an_event_lost_in_the_plane_while_its_database_was_away_is_sent_again_and_acted_on_once(plane, docker_client):
    """Prefect's triggers move an event whose evaluation failed three times to a dead-letter folder, and do not try
    it again: with PostgreSQL stopped while a container dies, no run comes of the die. The listener's delivery
    check sends it again once the database is back, and exactly one run acts on it."""
    plane.listen("check", 5, "--redeliver-after", "20")
    name = f"{plane.prefix}-lost"
    plane.server.stop_database()
    try:
        die(docker_client, name)
        [original] = wait_for(lambda: plane.emitted("check", re.escape(name)), 60, "the listener emits the die")
        time.sleep(8)  # Prefect's triggers take it meanwhile and fail: its database is away
    finally:
        plane.server.start_database()
    runs = plane.wait_final(name, 1, timeout=240)
    log = "".join(path.read_text() for path in sorted(plane.home.glob("check-*.log")))
    assert f"event {original} (docker.container.died for " in log and "sending it again as" in log, log[-3000:]
    acted = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert len(acted) == 1, [(r["name"], r["state_name"]) for r in runs]
    assert all(r["state_name"] == "Duplicate" for r in runs if r not in acted), [r["state"] for r in runs]
    event = acted[0]["parameters"]["event"]
    assert event["payload"]["redelivery_of"] == original and event["id"] != original, event
    stop(plane.listeners.pop("check"))


def test_a_storm_of_dies_of_one_container_is_folded_into_the_latest_and_other_targets_are_not(plane, docker_client):
    plane.listen("storm")
    storm, other = f"{plane.prefix}-storm", f"{plane.prefix}-other"
    box = docker_client.containers.create("vicflow-test/busybox:latest", ["true"], name=storm)
    queued: list[int] = []  # how many runs of the storm wait, once a second
    sampling = threading.Event()

    def sample():
        while not sampling.wait(1):
            queued.append(sum(r["state_type"] == "SCHEDULED" for r in plane.runs_for(storm)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    since, started = time.time() - 1, time.monotonic()
    for _ in range(STORM):  # as fast as the engine gives them: about 2 a second on this machine
        box.start()
        box.wait(timeout=30)
    storm_seconds = time.monotonic() - started
    die(docker_client, other, times=2)
    dies = docker_dies(docker_client, storm, since)
    assert len(dies) == STORM, f"the storm: {len(dies)} dies"

    def settled():
        runs = plane.runs_for(storm)
        ids = {r["parameters"]["event"]["id"] for r in runs}
        return runs if len(ids) >= len(dies) and all(r["state_type"] in FINAL for r in runs) else None

    try:
        runs = wait_for(settled, 240, lambda: plane.unrun("storm", storm))
    finally:
        sampling.set()
    acted = [r for r in runs if r["state_type"] == "COMPLETED"]
    folded = [r for r in runs if r["state_name"] == "Folded"]
    others = [f"{r['name']}: {r['state_name']}: {r['state']['message']}" for r in runs if r not in acted + folded]
    assert not others, f"{Counter(r['state_name'] for r in runs)}\n" + "\n".join(others)
    # every die is accounted for: acted on, or counted in the run it was folded into
    assert sum(1 + (r["parameters"].get("folded") or {}).get("count", 0) for r in acted) == len(dies)
    spans = sorted((ts(r["start_time"]), ts(r["end_time"])) for r in acted)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), f"acting runs overlapped: {spans}"
    # once the storm's last run is queued, what queued before it is folded: at most three runs start from then,
    # one a worker had made Pending, one that may win the slot before the folder takes it, and the newest
    last_queued = max(ts(r["created"]) for r in runs)
    after = [start for start, _ in spans if start > last_queued]
    assert len(after) <= 3, (
        f"{len(after)} runs acted after the storm's last run was queued ({len(acted)} in all, {len(folded)} "
        f"folded): they started {[round(s - last_queued, 1) for s in after]} s after it"
    )
    latest = max(runs, key=lambda r: r["parameters"]["event"]["occurred"])
    assert latest["state_type"] == "COMPLETED", "the latest die is acted on, never folded away"
    assert folded, f"a storm of {len(dies)} dies folded nothing"
    by_id = {r["id"]: r for r in runs}
    hosts = set()
    for run in folded:
        into = re.search(r"folded into flow run \S+ \(([0-9a-f-]{36})\)", run["state"]["message"]).group(1)
        assert into in by_id, "folded only into a run of the same container"
        hosts.add(into)
    # a run others were folded into acted (or was folded in turn into a newer one), on the latest of them
    acting_hosts = [by_id[i] for i in hosts if by_id[i]["state_name"] != "Folded"]
    assert acting_hosts, "no run that others were folded into acted"
    for host in acting_hosts:
        assert host["state_type"] == "COMPLETED", host["state"]
        folds = host["parameters"].get("folded")
        assert folds and folds["last_event_id"] == host["parameters"]["event"]["id"], folds
    host = max(acting_hosts, key=lambda r: r["parameters"]["event"]["occurred"])
    folds = host["parameters"]["folded"]
    artifacts = plane.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [host["id"]]}}})
    assert any(f"folded into it, from {folds['first_event_id']}" in (a.get("description") or "") for a in artifacts)
    target = latest["parameters"]["event"]["resource"]["prefect.resource.id"]
    query = {"filter": {"event": {"name": ["vicflow.events.folded"]}, "resource": {"id": [f"vicflow.target.{target}"]}}}

    def announced():
        return plane.post("/events/filter", {**query, "limit": 50})["total"] == len(folded)

    wait_for(announced, 60, "each folded run is announced by a vicflow.events.folded event")

    def both_dies(runs):
        return sum(1 + (r["parameters"].get("folded") or {}).get("count", 0) for r in runs if r["state_type"] == "COMPLETED")  # fmt: skip

    others = wait_for(lambda: both_dies(plane.runs_for(other)) == 2 and plane.runs_for(other), 120, "the other dies")
    assert all(r["parameters"]["event"]["resource"]["docker.container"] == other for r in others)
    print(
        f"\nstorm: {len(dies)} dies in {storm_seconds:.1f}s -> {len(acted)} runs acted ({len(after)} after the last was queued), "
        f"{len(folded)} folded; "
        f"runs waiting, sampled each second: {queued}"
    )
