"""Throughput of a work pool: N runs of a 5-step blueprint (each step sleeps 1 s) through 1, 2 and 3
`vicflow worker`s, on a Prefect server on PostgreSQL and, in the same run, on SQLite.

Each worker takes at most --limit runs at once (a host's capacity; without a limit the first worker to poll
takes every scheduled run). Reported per configuration: runs per minute (first run created -> last run
finished), p50/p95 of created -> Running, and where a run's time goes: scheduling (created -> Pending: the
worker's poll claims it), worker pickup (Pending -> Running: the process starts) and steps (Running -> end),
with the machine's CPU use meanwhile (this is a 2-core machine: where it saturates is where runs per minute
stop growing with workers). Targets (issue 16): 0 lost and 0 duplicated runs; 3 workers >= 2x the
throughput of 1.

    python bench/scale.py [--runs 200] [--limit 4] [--workers 1 2 3] [--databases postgresql sqlite]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.testbed import REPO, TestbedError  # noqa: E402
from tests.testbed.netns import Host  # noqa: E402
from tests.testbed.pool import Pool  # noqa: E402
from tests.testbed.prefect_pg import PrefectOnPostgres, running  # noqa: E402
from tests.testbed.prefect_stack import free_port, stop, ts  # noqa: E402


class PrefectOnSqlite(PrefectOnPostgres):
    """The same server on Prefect's default database, SQLite (a file in the stack's folder)."""

    @property
    def database_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.folder}/prefect.db"

    def start_postgres(self) -> None:
        pass


def server(database: str):
    if database == "postgresql":
        return running()
    from contextlib import contextmanager

    @contextmanager
    def sqlite():
        stack = PrefectOnSqlite(Path(tempfile.mkdtemp(prefix="vicflow-sqlite-")), free_port(), free_port())
        try:
            stack.start_server()
            yield stack
        finally:
            stack.stop()

    return sqlite()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def cpu_seconds() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def states_of(pool: Pool, run_id: str) -> dict[str, float]:
    history = pool.call("GET", f"/flow_run_states/?flow_run_id={run_id}")
    found: dict[str, float] = {}
    for state in history:
        found.setdefault(state["type"], ts(state["timestamp"]))
    return found


def measure(database: str, workers: int, runs: int, limit: int, folder: Path) -> dict:
    with server(database) as stack:
        pool = Pool(stack, "bench", folder / f"{database}-{workers}")
        pool.create()
        deployment = pool.deploy(str(REPO / "tests/data/five-seconds.yaml"))
        hosts = [Host.local() for _ in range(workers)]
        names = [f"worker-{n + 1}" for n in range(workers)]
        try:
            for name, host in zip(names, hosts, strict=True):
                pool.start_worker(host, name, limit=limit)
            pool.wait_online(names)
            busy0, total0 = cpu_seconds()
            started = time.time()
            ids = [pool.run(deployment, {"inputs": {"n": n}}) for n in range(runs)]
            final = pool.wait_final(ids, timeout=60 + runs * 10)
            busy1, total1 = cpu_seconds()
            by = pool.submitted_by(ids)
            timelines = {run_id: states_of(pool, run_id) for run_id in ids}
        finally:
            for host in hosts:
                for proc in host.processes:
                    stop(proc)
    ended = max(ts(r["end_time"]) for r in final.values() if r["end_time"])
    created = {run_id: ts(r["created"]) for run_id, r in final.items()}
    to_running = [t["RUNNING"] - created[i] for i, t in timelines.items() if "RUNNING" in t]
    parts = collections.defaultdict(list)
    for run_id, t in timelines.items():
        if {"PENDING", "RUNNING", "COMPLETED"} <= set(t):
            parts["scheduling"].append(t["PENDING"] - created[run_id])
            parts["pickup"].append(t["RUNNING"] - t["PENDING"])
            parts["steps"].append(t["COMPLETED"] - t["RUNNING"])
    total_part = sum(statistics.fmean(v) for v in parts.values()) or 1
    return {
        "database": database,
        "workers": workers,
        "completed": sum(r["state_type"] == "COMPLETED" for r in final.values()),
        "other": dict(
            collections.Counter(
                f"{r['state_name']}: {(r['state'] or {}).get('message', '')[:80]}"
                for r in final.values()
                if r["state_type"] != "COMPLETED"
            )
        ),
        "lost": runs - len(final) + sum(not v for v in by.values()),
        "twice": sum(len(v) > 1 for v in by.values()),
        "per_worker": dict(sorted(collections.Counter(v[0] for v in by.values() if v).items())),
        "runs_per_min": runs / ((ended - started) / 60),
        "p50": statistics.median(to_running),
        "p95": percentile(to_running, 0.95),
        "share": {k: statistics.fmean(v) / total_part for k, v in parts.items()},
        "cpu": (busy1 - busy0) / (total1 - total0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--limit", type=int, default=4, help="runs at once per worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--databases", nargs="+", default=["postgresql", "sqlite"])
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vicflow-scale-"))
    rows = []
    for database in args.databases:
        for workers in args.workers:
            try:
                row = measure(database, workers, args.runs, args.limit, folder)
            except TestbedError as exc:  # SQLite under this load: the server answers 503 (database locked)
                print(f"{database:>10} {workers} worker(s): the server gave up: {str(exc)[:300]}", flush=True)
                continue
            rows.append(row)
            print(
                f"{database:>10} {workers} worker(s): {row['completed']}/{args.runs} completed, "
                f"lost {row['lost']}, twice {row['twice']}, {row['runs_per_min']:.1f} runs/min, "
                f"created->Running p50 {row['p50']:.1f}s p95 {row['p95']:.1f}s, CPU {row['cpu']:.0%}, "
                f"by worker {row['per_worker']}" + (f", not completed: {row['other']}" if row["other"] else ""),
                flush=True,
            )
    print(f"\n{args.runs} runs of tests/data/five-seconds.yaml (5 x 1 s), --limit {args.limit} per worker\n")
    print(
        "| database | workers | runs/min | x 1 worker | created->Running p50 / p95 | scheduling / pickup / steps | CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        base = min((r for r in rows if r["database"] == row["database"]), key=lambda r: r["workers"])
        share = " / ".join(f"{row['share'].get(k, 0):.0%}" for k in ("scheduling", "pickup", "steps"))
        print(
            f"| {row['database']} | {row['workers']} | {row['runs_per_min']:.1f} | "
            f"{row['runs_per_min'] / base['runs_per_min']:.2f} | {row['p50']:.1f} / {row['p95']:.1f} s | "
            f"{share} | {row['cpu']:.0%} |"
        )
    print("\nruns/min against workers (each # is 5 runs/min):")
    for row in rows:
        print(
            f"  {row['database']:>10} {row['workers']}  {'#' * round(row['runs_per_min'] / 5)} {row['runs_per_min']:.0f}"
        )
    lost = sum(r["lost"] + r["twice"] for r in rows)
    print(f"\nlost or duplicated runs: {lost}")


if __name__ == "__main__":
    main()
