"""A work pool served by `vicflow worker`s on several hosts (tests/testbed/netns.py), talking to one Prefect
server (tests/testbed/prefect_pg.py) over the hosts' bridge: what docs/scale-out.md sets up on real machines.

Runs are created and read through Prefect's REST API; which worker ran a run is what Prefect itself records,
the worker's ``prefect.worker.submitted-flow-run`` event."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.testbed import REPO, TestbedError
from tests.testbed.netns import Host
from tests.testbed.prefect_pg import PrefectOnPostgres
from tests.testbed.prefect_stack import BIN

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Pool:
    stack: PrefectOnPostgres
    name: str
    folder: Path  # logs and state of the workers
    workers: dict[str, Host] = field(default_factory=dict)  # worker name -> host

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 30):
        """One API call; retried on 429/502/503 as Prefect's own client does (SQLite answers 503 when locked)."""
        for attempt in range(6):
            response = requests.request(
                method, f"{self.stack.api}{path}", json=body, timeout=timeout, **self.stack.http()
            )
            if response.status_code not in (429, 502, 503):
                break
            time.sleep(0.5 * 2**attempt)
        if response.status_code >= 400:
            raise TestbedError(f"{method} {path}: HTTP {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def env(self, **extra: str) -> dict[str, str]:
        """A worker's environment: the server on the bridge, vicflow from this checkout, the test step types."""
        env = self.stack.env()
        env.update(
            VICFLOW_HOME=str(REPO),
            PYTHONPATH=str(REPO),
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            VICFLOW_PLUGINS="tests.plugins.engine_steps",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="2",
            DO_NOT_TRACK="1",
        )
        env.update(extra)
        return env

    def command(self, *argv: str, timeout: float = 180) -> str:
        """A command of a user at this pool (`prefect ...`, `vicflow ...`); its output, or a TestbedError."""
        result = subprocess.run(argv, env=self.env(), cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            raise TestbedError(f"{' '.join(argv[:3])}: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result.stdout

    def create(self) -> None:
        self.command(str(BIN / "prefect"), "work-pool", "create", self.name, "--type", "process")

    def deploy(self, blueprint: str, unresponsive: int = 90) -> str:
        """`vicflow deploy --pool POOL BLUEPRINT` (its run form, and the automation that marks a run whose
        heartbeats stopped Crashed); returns the deployment's id."""
        out = self.command(
            str(BIN / "vicflow"), "deploy", "--pool", self.name, "--unresponsive-after", str(unresponsive), blueprint
        )
        made = [line for line in out.splitlines() if line.startswith("run-blueprint/form-")]
        return made[0].split(": ")[-1].strip()

    def start_worker(self, host: Host, name: str, limit: int | None = None, **env: str) -> None:
        """`vicflow worker` on ``host``, with a state directory and a Prefect home of its own."""
        home = self.folder / name
        home.mkdir(parents=True, exist_ok=True)
        argv = [str(BIN / "vicflow"), "worker", "--pool", self.name, "--name", name]
        if limit:
            argv += ["--limit", str(limit)]
        worker_env = self.env(PREFECT_HOME=str(home / "prefect"), VICFLOW_STATE_DIR=str(home / "state"), **env)
        host.start(argv, worker_env, home / "worker.log", cwd=str(REPO))
        self.workers[name] = host

    def log(self, name: str) -> str:
        path = self.folder / name / "worker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_online(self, names: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        online: set[str] = set()
        while time.monotonic() < deadline:
            online = {
                w["name"]
                for w in self.call("POST", f"/work_pools/{self.name}/workers/filter", {})
                if w.get("status") == "ONLINE"
            }
            if set(names) <= online:
                return
            time.sleep(0.5)
        logs = "\n".join(f"--- {n}\n{self.log(n)[-1500:]}" for n in names if n not in online)
        raise TestbedError(f"workers not online in {timeout:g}s: {sorted(set(names) - online)}\n{logs}")

    def run(self, deployment_id: str, parameters: dict) -> str:
        created = self.call("POST", f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters})
        return created["id"]

    def runs(self, ids: list[str]) -> dict[str, dict]:
        found = self.call("POST", "/flow_runs/filter", {"flow_runs": {"id": {"any_": ids}}, "limit": 200})
        return {r["id"]: r for r in found}

    def wait_final(self, ids: list[str], timeout: float) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        runs: dict[str, dict] = {}
        while time.monotonic() < deadline:
            runs = {}
            for start in range(0, len(ids), 200):
                runs.update(self.runs(ids[start : start + 200]))
            if len(runs) == len(ids) and all(r["state_type"] in FINAL for r in runs.values()):
                return runs
            time.sleep(1)
        pending = {r["name"]: r["state_type"] for r in runs.values() if r["state_type"] not in FINAL}
        logs = "\n".join(f"--- {n}\n{self.log(n)[-1500:]}" for n in self.workers)
        raise TestbedError(f"{len(pending)} runs not finished in {timeout:g}s: {pending}\n{logs}")

    def summary(self, run_id: str) -> dict[str, dict]:
        """The rows of the run's summary table artifact, by step id."""
        found = self.call(
            "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["table"]}}}
        )
        if not found:
            raise TestbedError(f"run {run_id} published no summary")
        data = found[0]["data"]
        return {row["id"]: row for row in (json.loads(data) if isinstance(data, str) else data)}

    def journal(self, run_id: str) -> dict:
        """The run's journal as Prefect keeps it (an artifact of the run); {} before its first step ended."""
        found = self.call(
            "POST",
            "/artifacts/filter",
            {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["vicflow-journal"]}}},
        )
        return found[0]["data"] if found else {}

    def submitted_by(self, ids: list[str], timeout: float = 30) -> dict[str, list[str]]:
        """flow-run id -> the workers that submitted it, from the workers' own events (stored by the server
        a moment after they are sent, hence the wait)."""
        wanted = {f"prefect.flow-run.{i}": i for i in ids}
        deadline = time.monotonic() + timeout
        while True:
            seen: dict[str, list[str]] = {i: [] for i in ids}
            page = self.call(
                "POST",
                "/events/filter",
                {"filter": {"event": {"name": ["prefect.worker.submitted-flow-run"]}}, "limit": 50},
            )
            events = page["events"]
            while page.get("next_page"):
                page = requests.get(page["next_page"], timeout=30, **self.stack.http()).json()
                events += page["events"]
            for event in events:
                for related in event.get("related", []):
                    run = wanted.get(related.get("prefect.resource.id", ""))
                    if run:
                        seen[run].append(event["resource"]["prefect.resource.name"])
            if all(seen.values()) or time.monotonic() > deadline:
                return seen
            time.sleep(1)
