"""Events at scale: simulated registries push into two `vicflow listen`s on the HA Prefect plane; how fast the
runs start, and whether any event is lost or run twice (issue 29, item 5).

The plane is tests/testbed/prefect_ha.py (two API replicas behind haproxy, services apart, PostgreSQL, Redis).
One deployment, as an operator writes it: triggered by `registry.image.pushed` of the bench's repositories,
a concurrency limit of 1 (ENQUEUE), a blueprint whose one step takes 1 s; `vicflow worker` runs it.
Each simulated target (a repository) is a thread that POSTs a distribution-registry notification (the
envelope of distribution's notifications/event.go) every ``--period`` seconds, with jitter; halfway through,
one target bursts ``--burst`` pushes in 2 s. Two phases, in the same run:

- baseline: one listener, each notification sent once;
- two listeners: each notification sent to both (a registry with two endpoints), as the HA layout runs.

Reported per phase: push -> Running of the runs that acted (p50/p95/p99, from the notification's timestamp to
the run's start_time), events lost (neither acted on nor folded), events run twice, folds, Duplicate runs, and
the listeners' CPU (user + system, /proc) per 1,000 notifications received.

Default scale is small (this machine has 2 shared cores): ``--targets 1000 --period 60`` is the issue's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
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
    def __init__(self, name: str, receivers: list[str], token: str):
        self.name, self.receivers, self.token = name, receivers, token
        self.sent: dict[str, str] = {}  # notification id -> repository
        self.received = 0
        self.failed = 0
        self.lock = threading.Lock()

    def send(self, repository: str, number: int) -> None:
        body = notification(repository, number)
        with self.lock:
            self.sent[body["events"][0]["id"]] = repository
        for url in self.receivers:
            try:
                response = requests.post(url, json=body, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            with self.lock:
                self.received += ok
                self.failed += not ok


def generate(phase: Phase, prefix: str, targets: int, seconds: float, period: float, burst: int) -> None:
    """``targets`` threads, each pushing every ``period`` s (jittered); one bursts halfway through."""
    import random

    stop = time.monotonic() + seconds

    def target(index: int) -> None:
        rng = random.Random(index)
        time.sleep(rng.uniform(0, period))
        number = 0
        while time.monotonic() < stop:
            number += 1
            phase.send(f"{prefix}/t{index}", number)
            time.sleep(period * rng.uniform(0.8, 1.2))

    def bursting() -> None:
        time.sleep(seconds / 2)
        for number in range(burst):
            phase.send(f"{prefix}/burst", 1000 + number)
            time.sleep(2 / burst)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(targets)]
    threads.append(threading.Thread(target=bursting, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def deploy(plane, home: Path, env: dict) -> tuple[str, str]:
    pool, name = "bench-events", "bench-on-push"
    blueprint = home / "act.yaml"
    blueprint.write_text(
        "name: bench-act\ntarget: bench\nsteps:\n  - id: act\n    uses: sleep\n    with: {seconds: 1}\n"
    )
    try:
        deploy_on_event(home, env, pool, name, blueprint, {"registry.repository": "bench-*"}, "registry.image.pushed")
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    [deployment] = [d for d in post(plane, "/deployments/filter") if d["name"] == name]
    return pool, deployment["id"]


def post(plane, path: str, body: dict | None = None):
    """A request to the plane's API through haproxy (TLS, with the plane's credentials)."""
    response = requests.post(f"{plane.api}{path}", json=body or {}, timeout=30, **plane.http())
    response.raise_for_status()
    return response.json()


def runs_of(plane, deployment: str, prefix: str) -> list[dict]:
    runs, offset = [], 0
    while True:
        page = post(
            plane,
            "/flow_runs/filter",
            {"flow_runs": {"deployment_id": {"any_": [deployment]}}, "limit": 200, "offset": offset},
        )
        runs += page
        offset += len(page)
        if len(page) < 200:
            break
    mine = []
    for run in runs:
        repository = ((run["parameters"].get("event") or {}).get("resource") or {}).get("registry.repository", "")
        if repository.startswith(prefix + "/"):
            mine.append(run)
    return mine


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


def measure(plane, deployment: str, home: Path, name: str, listeners: int, args) -> dict:
    token, prefix = uuid.uuid4().hex, f"bench-{name}-{uuid.uuid4().hex[:4]}"
    started = [listen(plane, f"{name}-listener-{i}", home, token) for i in range(listeners)]
    procs, urls = [p for p, _ in started], [u for _, u in started]
    phase = Phase(name, urls, token)
    cpu_before = sum(cpu_seconds(p.pid) for p in procs)
    generate(phase, prefix, args.targets, args.seconds, args.period, args.burst)
    cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu_before
    # the plane knows an event by the listener's id for it: a UUIDv5 of "registry/<notification id>"
    expected = {str(uuid.uuid5(NAMESPACE, f"registry/{i}")) for i in phase.sent}
    deadline = time.monotonic() + args.settle
    runs: list[dict] = []
    while time.monotonic() < deadline:  # until every event is acted on or folded, and every run has ended
        runs = runs_of(plane, deployment, prefix)
        seen = {(r["parameters"].get("event") or {}).get("id") for r in runs}
        if expected <= seen and all(r["state_type"] in FINAL for r in runs):
            break
        time.sleep(2)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(30)
    acted = [r for r in runs if r["state_type"] == "COMPLETED"]
    folded = [r for r in runs if r["state_name"] == "Folded"]
    duplicate_runs = [r for r in runs if r["state_name"] == "Duplicate"]
    ids = [(r["parameters"].get("event") or {}).get("id") for r in acted + folded]
    acted_ids = [(r["parameters"].get("event") or {}).get("id") for r in acted]
    latencies = [ts(r["start_time"]) - ts(r["parameters"]["event"]["occurred"]) for r in acted if r["start_time"]]
    return {
        "phase": name,
        "listeners": listeners,
        "notifications": len(phase.sent),
        "runs acted": len(acted),
        "folded": len(folded),
        "Duplicate runs": len(duplicate_runs),
        "lost": len(expected - set(ids)),
        "run twice": sum(n > 1 for n in Counter(acted_ids).values()),
        "other ends": sorted({r["state_name"] for r in runs} - {"Completed", "Folded", "Duplicate"}),
        "push->Running p50": percentile(latencies, 0.50),
        "push->Running p95": percentile(latencies, 0.95),
        "push->Running p99": percentile(latencies, 0.99),
        "listener CPU s / 1,000 received": 1000 * cpu / max(1, phase.received),
        "send failures": phase.failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=20, help="simulated targets (repositories)")
    parser.add_argument("--period", type=float, default=30, help="seconds between a target's pushes")
    parser.add_argument("--seconds", type=float, default=120, help="how long each phase pushes")
    parser.add_argument("--burst", type=int, default=20, help="pushes of one target in 2 s, halfway")
    parser.add_argument("--settle", type=float, default=600, help="how long to wait for the runs to end")
    args = parser.parse_args()
    os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")  # the 1 s `sleep` step
    with prefect_ha.running() as plane:
        home = plane.folder / "bench"
        home.mkdir()
        env = {**plane.env(), "PYTHONPATH": str(REPO), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        pool, deployment = deploy(plane, home, env)
        plane.start_client(
            "worker",
            [str(BIN / "vicflow"), "worker", "--pool", pool],
            PREFECT_WORKER_QUERY_SECONDS="1",
            PYTHONPATH=str(REPO),
            VICFLOW_PLUGINS="tests.plugins.engine_steps",
            PATH=env["PATH"],
        )
        results = [
            measure(plane, deployment, home, "baseline", 1, args),
            measure(plane, deployment, home, "two", 2, args),
        ]
    print(
        f"\n{args.targets} targets, a push every {args.period:g} s each, {args.seconds:g} s a phase, a burst of {args.burst}"
    )
    for key in results[0]:
        row = [f"{r[key]:.2f}" if isinstance(r[key], float) else str(r[key]) for r in results]
        print(f"{key:34} " + "  ".join(f"{v:>14}" for v in row))


if __name__ == "__main__":
    main()
