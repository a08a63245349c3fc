"""Registry push -> flow run Running / Completed, over 20 pushes (median and p95), and where the time goes.

The whole event-driven stack runs here (tests/testbed/prefect_stack.py): prefect server (SQLite), the
shipped prefect.yaml deployed, `vicflow listen` and a registry that notifies it. Two workers take turns,
both polling every 1 s: `vicflow worker` (runs forked from its fork server) and, as the baseline measured
in the same run, a plain `prefect worker start` (each run a fresh `python -m prefect.engine`).
Each push waits for its run to finish before the next (no queueing in the numbers).
Times are measured from the registry's own event timestamp (`occurred`), so `docker push` time is excluded.
From the issue (Prefect 3.9.1, same machine class): serve with a 1 s poll 3.1 / 4.9 s, worker with a 1 s
poll 5.1 / 7.8 s (median / p95, push to Running). Target: median <= 3 s, p95 <= 5 s, and beat serve.
The same stack on a Prefect server on PostgreSQL (`--databases postgresql`; both by default): target median
<= 1.0 s and p95 <= 2.0 s (issue 16).
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PUSHES = 20


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(stack, client, label: str) -> dict[str, list[float]]:
    from tests.testbed.prefect_stack import ts

    times: dict[str, list[float]] = {
        "push -> Running": [],
        "push -> Completed": [],
        "  event (occurred -> received)": [],
        "  trigger (received -> run created)": [],
        "  poll + worker claims it (created -> Pending)": [],
        "  process start (Pending -> Running)": [],
        "  run (Running -> Completed)": [],
    }
    started = time.time()
    stack.push(client, "vicflow-test/app:1.0", f"warmup-{label}")
    stack.wait_runs("redeploy-on-push", 1, started)
    for i in range(PUSHES):
        before = time.time()
        tag = f"{label}-{i}"
        stack.push(client, "vicflow-test/app:1.1" if i % 2 else "vicflow-test/app:1.0", tag)
        run = stack.wait_runs("redeploy-on-push", 1, before, timeout=300)[0]
        if run["state_type"] != "COMPLETED":
            raise SystemExit(f"run for {tag} ended {run['state_type']}")
        event = run["parameters"]["event"]
        occurred, received = ts(event["occurred"]), ts(event.get("received") or event["occurred"])
        created, running, done = ts(run["created"]), ts(run["start_time"]), ts(run["end_time"])
        states = requests.get(f"{stack.api}/flow_run_states/", params={"flow_run_id": run["id"]}, timeout=30).json()
        pending = min(ts(state["timestamp"]) for state in states if state["type"] == "PENDING")
        for name, value in zip(
            times,
            (
                running - occurred,
                done - occurred,
                received - occurred,
                created - received,
                pending - created,
                running - pending,
                done - running,
            ),
            strict=True,
        ):
            times[name].append(value)
        print(
            f"{label} push {i}: Running after {running - occurred:.2f}s, Completed after {done - occurred:.2f}s",
            flush=True,
        )
    return times


def postgres():
    """Debian's PostgreSQL for the server (tests/testbed/prefect_pg.py), stopped afterwards."""
    from contextlib import contextmanager

    from tests.testbed.prefect_pg import PrefectOnPostgres
    from tests.testbed.prefect_stack import free_port

    @contextmanager
    def running():
        database = PrefectOnPostgres(Path(tempfile.mkdtemp(prefix="event-latency-pg-")), free_port(), free_port())
        try:
            database.start_postgres()
            yield database.database_url
        finally:
            database.stop()

    return running()


def main() -> None:
    import argparse
    from contextlib import nullcontext

    from tests.testbed import dockerd, images, prefect_stack

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-worker baseline (on SQLite)")
    args = parser.parse_args()
    engine = dockerd.start()
    client = engine.client()
    images.build_all(client)
    results: dict[str, dict[str, list[float]]] = {}
    for database in args.databases:
        with postgres() if database == "postgresql" else nullcontext(None) as url:
            extra = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": url} if url else {}
            home = Path(tempfile.mkdtemp(prefix=f"event-latency-{database}-"))
            with prefect_stack.running(home, client, **extra) as stack:
                results[f"vicflow worker, {database}"] = measure(stack, client, f"forked-{database}")
                if database == "sqlite" and not args.no_plain:
                    stack.start_worker(forked=False)
                    results["plain worker, sqlite"] = measure(stack, client, "plain-sqlite")
    labels = list(results)
    print(f"\n{PUSHES} pushes each, PREFECT_WORKER_QUERY_SECONDS=1 (median / p95, seconds)")
    print(f"{'':45s} " + "   ".join(f"{label:>22s}" for label in labels))
    for name in results[labels[0]]:
        cells = [f"{statistics.median(r[name]):9.2f} / {p95(r[name]):6.2f}" for r in results.values()]
        print(f"{name:45s} " + "   ".join(f"{cell:>22s}" for cell in cells))
    best = min(labels, key=lambda label: statistics.median(results[label]["push -> Running"]))
    print(f"fastest push -> Running (median): {best}")
    print("targets: SQLite median <= 3 s, p95 <= 5 s; PostgreSQL median <= 1.0 s, p95 <= 2.0 s")


if __name__ == "__main__":
    main()
