"""Events at scale: simulated registries push into two `vicflow listen`s on the HA Prefect plane; how fast the
runs start, and whether any event is lost or run twice (issue 29, item 5).

The plane is tests/testbed/prefect_ha.py (two API replicas behind haproxy, services apart, PostgreSQL, Redis).
One deployment, as an operator writes it: triggered by `registry.image.pushed` of the bench's repositories,
a concurrency limit of 1 (ENQUEUE; ``--no-limit``: none), a blueprint whose target is the repository (a slot
per target, flows/flow.py ``one_run_per_target``) and whose one step takes 1 s; `vicflow worker` runs it.
Each simulated target (a repository) pushes every ``--period`` seconds (+-20%), a distribution-registry
notification (the envelope of distribution's notifications/event.go); halfway through, one target bursts
``--burst`` pushes in 2 s. The pushes are a timetable: one thread hands each to ``--senders`` threads when it
is due, and each POST's lag (how late it started) is reported, so a load generator that falls behind shows.
Phases (``--phases``), each with its own targets:

- baseline: one listener, each notification sent once;
- two: two listeners, each notification sent to both (a registry with two endpoints), as the HA layout runs;
- kill: as two, and one API replica killed with SIGKILL ``--kill-replica-at`` (0.5) of the way through the
  pushes; the seconds until haproxy takes it out and until the plane answers again (the failover tests'
  probe) are measured; the replica is started again after the phase.

Reported per phase: push -> Running of the runs that acted (p50/p95/p99, from the notification's timestamp to
the run's start_time), push -> run created (the intake alone: listener, Prefect's triggers and actions), events
lost (no run that acted, folded, or is still queued), events run twice, folds, Duplicate runs, the listeners'
CPU (user + system, /proc) per 1,000 notifications received, the load average. A phase waits ``--settle`` s
for its runs; those still queued then are counted and cancelled, so the next phase does not queue behind them.

Default scale is small (this machine has 2 shared cores): ``--targets 1000 --period 60`` is the issue's.
Results: docs/decisions.md, "One run per event, and storms folded per target".
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vicflow.plugins.source import NAMESPACE  # noqa: E402

from tests.testbed import prefect_ha  # noqa: E402
from tests.testbed.prefect_stack import BIN, deploy_on_event, free_port, ts  # noqa: E402

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def notification(repository: str, number: int) -> dict:
    """One push, as distribution 2.6 notifies it (notifications/event.go: id, timestamp, action, target ...)."""
    digest = "sha256:" + uuid.uuid4().hex * 2
    return {
        "events": [
            {
                "id": str(uuid.uuid4()),
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "action": "push",
                "target": {
                    "mediaType": MANIFEST,
                    "size": 1,
                    "digest": digest,
                    "repository": repository,
                    "url": f"http://bench-registry/v2/{repository}/manifests/{digest}",
                    "tag": f"v{number}",
                },
                "request": {"id": str(uuid.uuid4()), "host": "bench-registry", "method": "PUT"},
                "actor": {"name": "bench"},
            }
        ]
    }


class Phase:
    """One phase's pushes: a timetable of (due, repository, number), sent by ``senders`` threads to every
    receiver; how late each POST started against its timetable is its lag (the load generator's own delay)."""

    def __init__(self, name: str, receivers: list[str], token: str):
        self.name, self.receivers, self.token = name, receivers, token
        self.sent: dict[str, str] = {}  # notification id -> repository
        self.received = 0
        self.failures: Counter[str] = Counter()  # failed POST attempts by cause
        self.given_up = 0
        self.lags: list[float] = []
        self.lock = threading.Lock()

    def send(self, session: requests.Session, repository: str, number: int) -> None:
        body = notification(repository, number)
        with self.lock:
            self.sent[body["events"][0]["id"]] = repository
        for url in self.receivers:
            self.deliver(session, url, body)

    def deliver(self, session: requests.Session, url: str, body: dict) -> None:
        """POST until answered 200, as distribution's endpoints retry (notifications/retry.go: the sink retries
        with a backoff); each failed attempt is counted by its cause, and a notification given up after 5."""
        for attempt in range(5):
            try:
                response = session.post(url, json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
                cause = "" if response.status_code == 200 else f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                cause = type(exc).__name__
            with self.lock:
                if not cause:
                    self.received += 1
                    return
                self.failures[cause] += 1
            time.sleep(1 + attempt)
        with self.lock:
            self.given_up += 1


def timetable(prefix: str, targets: int, seconds: float, period: float, burst: int) -> list[tuple[float, str, int]]:
    """Every push of the phase, as seconds from its start: each target every ``period`` s (jittered +-20%, its
    first at random within a period), and one target bursting ``burst`` pushes in 2 s halfway through."""
    rng = random.Random(0)
    pushes = []
    for index in range(targets):
        at, number = rng.uniform(0, period), 0
        while at < seconds:
            number += 1
            pushes.append((at, f"{prefix}/t{index}", number))
            at += period * rng.uniform(0.8, 1.2)
    pushes += [(seconds / 2 + 2 * n / max(1, burst), f"{prefix}/burst", 1000 + n) for n in range(burst)]
    return sorted(pushes)


def generate(phase: Phase, pushes: list[tuple[float, str, int]], senders: int) -> None:
    """One thread hands each push to ``senders`` threads when it is due; they POST it (each with its own
    keep-alive session) and note how late it started."""
    work: queue.Queue = queue.Queue()
    begin = time.monotonic()

    def sender() -> None:
        with requests.Session() as session:
            while (item := work.get()) is not None:
                due, repository, number = item
                with phase.lock:
                    phase.lags.append(time.monotonic() - begin - due)
                phase.send(session, repository, number)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for push in pushes:
        time.sleep(max(0.0, begin + push[0] - time.monotonic()))
        work.put(push)
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join()


class ReplicaKill:
    """SIGKILL one API replica ``at`` seconds into the pushes (the test bed's handle: ``PrefectHA.kill``), and
    measure, with the failover tests' probe (a health check and a read through haproxy, every 0.1 s), the
    seconds from the kill until the plane answers again and until haproxy has taken the replica out."""

    def __init__(self, plane, at: float, replica: str = "api-1"):
        self.plane, self.at, self.replica = plane, at, replica
        self.answered = self.out = float("nan")
        self.failed = 0
        self.thread = threading.Thread(target=self._run, name="replica-kill", daemon=True)

    def _run(self) -> None:
        time.sleep(max(0.0, self.at - 5))
        with prefect_ha.Watch(self.plane.answers) as watch:
            time.sleep(min(5.0, self.at))
            killed = self.plane.kill(self.replica)
            while self.replica in self.plane.backends_up() and time.monotonic() < killed + 60:
                time.sleep(0.1)
            self.out = time.monotonic() - killed
            time.sleep(max(0.0, killed + 30 - time.monotonic()))  # a failure within 30 s of the kill counts
            self.answered = watch.until_answered(killed)
            self.failed = watch.failures(killed)

    def restart(self) -> None:
        """Start the replica again (as a supervisor would), once the phase is measured."""
        self.thread.join(180)
        self.plane.start(self.replica)


def deploy(plane, home: Path, env: dict, limit: int | None) -> tuple[str, str]:
    """The event deployment: each run's target is its repository (a slot per target, flows/flow.py
    ``one_run_per_target``); ``limit`` is the deployment's own concurrency limit (1, ENQUEUE: the folding
    layout; None: none, so runs of different targets run side by side)."""
    pool, name = "bench-events", "bench-on-push"
    blueprint = home / "act.yaml"
    blueprint.write_text(
        "name: bench-act\ntarget: bench/${{ event.resource['registry.repository'] }}\nsteps:\n"
        "  - id: act\n    uses: sleep\n    with: {seconds: 1}\n"
    )
    match = {"registry.repository": "bench-*"}
    try:
        deploy_on_event(home, env, pool, name, blueprint, match, "registry.image.pushed", limit)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    [deployment] = [d for d in post(plane, "/deployments/filter") if d["name"] == name]
    return pool, deployment["id"]


def post(plane, path: str, body: dict | None = None):
    """A request to the plane's API through haproxy (TLS, with the plane's credentials); retried while a
    replica is being taken out."""
    for attempt in range(5):
        try:
            response = requests.post(f"{plane.api}{path}", json=body or {}, timeout=60, **plane.http())
            if response.status_code < 500:
                response.raise_for_status()
                return response.json()
        except requests.ConnectionError:
            pass
        time.sleep(2 * (attempt + 1))
    raise SystemExit(f"the plane did not answer POST {path}")


def runs_of(plane, deployment: str, prefix: str, since: str) -> list[dict]:
    """The deployment's runs created for this phase (expected to start after ``since``), those of its prefix."""
    runs: dict[str, dict] = {}
    offset = 0
    while True:
        body = {
            "flow_runs": {"deployment_id": {"any_": [deployment]}, "expected_start_time": {"after_": since}},
            "sort": "ID_DESC",
            "limit": 200,
            "offset": offset,
        }
        page = post(plane, "/flow_runs/filter", body)
        runs.update((run["id"], run) for run in page)
        offset += len(page)
        if len(page) < 200:
            break
    mine = []
    for run in runs.values():
        repository = ((run["parameters"].get("event") or {}).get("resource") or {}).get("registry.repository", "")
        if repository.startswith(prefix + "/"):
            mine.append(run)
    return mine


def event_of(run: dict) -> str | None:
    return (run["parameters"].get("event") or {}).get("id")


def cancel_queued(plane, runs: list[dict]) -> int:
    """End the phase's runs still queued when it stops waiting (so the next phase does not queue behind them);
    not forced, so a run that went Pending meanwhile (it holds the deployment's slot) is not cancelled."""
    queued = [r for r in runs if r["state_type"] == "SCHEDULED"]
    state = {"type": "CANCELLED", "name": "Cancelled", "message": "bench: phase over"}
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda r: post(plane, f"/flow_runs/{r['id']}/set_state", {"state": state, "force": False}), queued)
        )
    return len(queued)


def listen(plane, name: str, home: Path, token: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    config = home / f"{name}.yaml"
    config.write_text(json.dumps({"registry": {"listen": f"127.0.0.1:{port}", "token": token}}))
    proc = plane.start_client(
        name,
        [sys.executable, "-m", "vicflow.flows.cli.main", "listen", "--config", str(config)],
        VICFLOW_STATE_DIR=str(home / f"state-{name}"),
        PYTHONPATH=str(REPO),
    )
    url = f"http://127.0.0.1:{port}/events"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            requests.post(url, json={"events": []}, headers={"Authorization": f"Bearer {token}"}, timeout=2)
            return proc, url
        except requests.RequestException:
            time.sleep(0.5)
    raise SystemExit(f"{name} did not start:\n{plane.log(name)}")


def settle(plane, deployment: str, prefix: str, since: str, expected: set[str], args) -> list[dict]:
    """Wait until every event has a run (acted, folded or queued: Prefect's triggers may be behind), at most
    ``args.settle`` s, then until every run has ended, at most ``args.drain`` s more (a queue serialised by the
    deployment's limit does not drain at this load)."""
    deadline = time.monotonic() + args.settle
    while True:
        runs = runs_of(plane, deployment, prefix, since)
        covered = expected <= {event_of(r) for r in runs}
        if (covered and all(r["state_type"] in FINAL for r in runs)) or time.monotonic() > deadline:
            return runs
        if covered:
            deadline = min(deadline, time.monotonic() + args.drain)
        time.sleep(5)


def measure(plane, deployment: str, home: Path, name: str, listeners: int, args, kill_at: float | None) -> dict:
    token, prefix = uuid.uuid4().hex, f"bench-{name}-{uuid.uuid4().hex[:4]}"
    since = datetime.now(UTC).isoformat()
    started = [listen(plane, f"{name}-listener-{i}", home, token) for i in range(listeners)]
    procs, urls = [p for p, _ in started], [u for _, u in started]
    phase = Phase(name, urls, token)
    killer = None if kill_at is None else ReplicaKill(plane, kill_at * args.seconds)
    cpu_before = sum(cpu_seconds(p.pid) for p in procs)
    if killer is not None:
        killer.thread.start()
    generate(phase, timetable(prefix, args.targets, args.seconds, args.period, args.burst), args.senders)
    load = os.getloadavg()[0]
    cpu_pushing = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
    # the plane knows an event by the listener's id for it: a UUIDv5 of "registry/<notification id>"
    expected = {str(uuid.uuid5(NAMESPACE, f"registry/{i}")) for i in phase.sent}
    runs = settle(plane, deployment, prefix, since, expected, args)
    cpu_all = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
    waiting = {event_of(r) for r in runs if r["state_type"] not in FINAL}
    cancelled = cancel_queued(plane, runs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
    if killer is not None:
        killer.restart()
    acted = [r for r in runs if r["state_type"] == "COMPLETED"]
    folded = [r for r in runs if r["state_name"] == "Folded"]
    acted_ids = [event_of(r) for r in acted]
    latencies = [ts(r["start_time"]) - ts(r["parameters"]["event"]["occurred"]) for r in acted if r["start_time"]]
    intake = [ts(r["created"]) - ts(r["parameters"]["event"]["occurred"]) for r in runs]
    received = max(1, phase.received)
    return {
        "phase": name,
        "listeners": listeners,
        "notifications": len(phase.sent),
        "runs acted": len(acted),
        "folded": len(folded),
        "Duplicate runs": sum(r["state_name"] == "Duplicate" for r in runs),
        "still queued at the end": len(waiting),
        "queued runs cancelled at the end": cancelled,
        "no run by the end (lost)": len(expected - {event_of(r) for r in acted + folded} - waiting),
        "run twice": sum(n > 1 for n in Counter(acted_ids).values()),
        "other ends": sorted(
            {r["state_name"] for r in runs if r["state_type"] in FINAL} - {"Completed", "Folded", "Duplicate"}
        ),
        "push->Running p50": percentile(latencies, 0.50),
        "push->Running p95": percentile(latencies, 0.95),
        "push->Running p99": percentile(latencies, 0.99),
        "push->run created p50": percentile(intake, 0.50),
        "push->run created p95": percentile(intake, 0.95),
        "push->run created p99": percentile(intake, 0.99),
        "listener CPU s/1,000, pushing": 1000 * cpu_pushing / received,
        "listener CPU s/1,000, to the end": 1000 * cpu_all / received,
        "POSTs failed (retried)": dict(phase.failures),
        "POSTs given up": phase.given_up,
        "POST lag p50": percentile(phase.lags, 0.50),
        "POST lag p99": percentile(phase.lags, 0.99),
        "POST lag max": max(phase.lags, default=float("nan")),
        "load average (1 min), end of pushes": load,
        "replica out of haproxy s": killer.out if killer else float("nan"),
        "API answers again s": killer.answered if killer else float("nan"),
        "probes failed": killer.failed if killer else 0,
    }


PHASES = {"baseline": 1, "two": 2, "kill": 2}  # phase -> listeners; "kill": two, and a replica killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=20, help="simulated targets (repositories)")
    parser.add_argument("--period", type=float, default=30, help="seconds between a target's pushes")
    parser.add_argument("--seconds", type=float, default=120, help="how long each phase pushes")
    parser.add_argument("--burst", type=int, default=20, help="pushes of one target in 2 s, halfway")
    parser.add_argument("--settle", type=float, default=600, help="how long to wait for every event to have a run")
    parser.add_argument("--drain", type=float, default=600, help="then how long to wait for the runs to end")
    parser.add_argument("--senders", type=int, default=16, help="threads POSTing the timetable's pushes")
    parser.add_argument("--phases", default="baseline,two,kill", help="of " + ", ".join(PHASES))
    parser.add_argument("--kill-replica-at", type=float, default=0.5, help="the kill phase's kill, a fraction in")
    parser.add_argument("--no-limit", action="store_true", help="a deployment without its limit of 1")
    parser.add_argument("--worker-limit", type=int, help="at most this many runs at once on the worker")
    args = parser.parse_args()
    phases = args.phases.split(",")
    if set(phases) - set(PHASES):
        parser.error(f"--phases: of {', '.join(PHASES)}")
    os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")  # the 1 s `sleep` step
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops the plane too, as Ctrl-C does
    with prefect_ha.running() as plane:
        home = plane.folder / "bench"
        home.mkdir()
        env = {**plane.env(), "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        pool, deployment = deploy(plane, home, env, None if args.no_limit else 1)
        limit = [] if args.worker_limit is None else ["--limit", str(args.worker_limit)]
        plane.start_client(
            "worker",
            [str(BIN / "vicflow"), "worker", "--pool", pool, *limit],
            PREFECT_WORKER_QUERY_SECONDS="1",
            PYTHONPATH=str(REPO),
            VICFLOW_PLUGINS="tests.plugins.engine_steps",
            PATH=env["PATH"],
        )
        results = []
        for name in phases:
            kill_at = args.kill_replica_at if name == "kill" else None
            results.append(measure(plane, deployment, home, name, PHASES[name], args, kill_at))
            print(json.dumps(results[-1]), flush=True)
    print(
        f"\n{args.targets} targets, a push every {args.period:g} s each, {args.seconds:g} s a phase, a burst of "
        f"{args.burst}; deployment limit {'none' if args.no_limit else 1}, worker limit {args.worker_limit}"
    )
    for key in results[0]:
        row = [f"{r[key]:.2f}" if isinstance(r[key], float) else str(r[key]) for r in results]
        print(f"{key:38} " + "  ".join(f"{v:>14}" for v in row))


if __name__ == "__main__":
    main()
