"""Runs through the stack's `run-blueprint` deployment (tests/testbed/prefect_stack.py), read back from its
Prefect API: start one, wait for its end, and read its task runs, summary, logs and time in the target's slot.
The fault suites on a Prefect stack use these (test_prefect_server.py, test_simultaneous_runs.py)."""

from __future__ import annotations

import json
import time

from tests.testbed.prefect_stack import ts

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def start_run(stack, **parameters) -> str:
    deployment = next(d for d in stack.post("/deployments/filter") if d["name"] == "run-blueprint")
    return stack.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})["id"]


def flow_run(stack, run_id: str) -> dict:
    return stack.post("/flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})[0]


def wait_final(stack, run_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = flow_run(stack, run_id)
        if run["state_type"] in FINAL:
            return run
        time.sleep(1)
    raise AssertionError(f"run {run_id} still {run['state_type']} after {timeout}s\n{logs_of(stack, run_id)}")


def task_runs(stack, run_id: str) -> dict[str, list[str]]:
    """Step id -> the states of its task runs (one entry per task run: a repeated step has two)."""
    found: dict[str, list[str]] = {}
    for task_run in stack.post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}}):
        found.setdefault(task_run["name"].split("-")[0], []).append(task_run["state_type"])
    return found


def summary_rows(stack, run_id: str) -> dict[str, dict]:
    """The rows of the run's summary table artifact, by step id."""
    artifacts = stack.post(
        "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["table"]}}}
    )
    assert artifacts, f"run {run_id} published no summary\n{logs_of(stack, run_id)}"
    data = artifacts[0]["data"]
    return {row["id"]: row for row in (json.loads(data) if isinstance(data, str) else data)}


def logs_of(stack, run_id: str) -> str:
    return "\n".join(stack.logs(run_id))[-4000:]


def span(stack, run_id: str) -> tuple[float, float]:
    """When the run's first step started and its last step ended (its time inside the target's slot)."""
    runs = stack.post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [run_id]}}})
    return min(ts(r["start_time"]) for r in runs if r["start_time"]), max(
        ts(r["end_time"]) for r in runs if r["end_time"]
    )
