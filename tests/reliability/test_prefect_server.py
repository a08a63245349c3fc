"""Faults that need a real Prefect server and worker (tests/testbed/prefect_stack.py): the server goes away in
the middle of a run, and two operators press Run at once.  The runs go through the `run-blueprint` deployment
and the stack's `vicflow worker`, as a run started from the UI does."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from pathlib import Path

import pytest

from tests.testbed import prefect_stack

pytestmark = [pytest.mark.docker, pytest.mark.prefect, pytest.mark.faults]
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
OUTAGE_SECONDS = 75  # more than the client's retries: 2 + 4 + 8 + 16 + 32 s


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_engine, docker_images):
    client = docker_engine.client()
    with prefect_stack.running(tmp_path_factory.mktemp("server-faults"), client) as stack:
        stack.client = client
        yield stack
    client.close()


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
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}, "type": {"any_": ["table"]}}})
    assert artifacts, f"run {run_id} published no summary\n{logs_of(stack, run_id)}"
    data = artifacts[0]["data"]
    return {row["id"]: row for row in (json.loads(data) if isinstance(data, str) else data)}


def logs_of(stack, run_id: str) -> str:
    logs = stack.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"})
    return "\n".join(log["message"] for log in logs)[-4000:]


def wait_step_running(stack, run_id: str, step: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "RUNNING" in task_runs(stack, run_id).get(step, []):
            return
        time.sleep(0.5)
    raise AssertionError(f"step {step} of run {run_id} never started\n{logs_of(stack, run_id)}")


@contextlib.contextmanager
def gate():
    """A port that is closed until ``open_gate`` (returned) is called: a step waiting on it runs until then."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    servers: list[socket.socket] = []

    def open_gate() -> None:
        servers.append(socket.create_server(("127.0.0.1", port)))

    try:
        yield port, open_gate
    finally:
        for server in servers:
            server.close()


def outage_blueprint(folder: Path, gate_port: int, open_port: int) -> Path:
    """Three steps; the middle one waits on the gate, so the server can be stopped while it runs."""
    path = folder / "outage.yaml"
    check = "uses: health_check\n    with: {kind: tcp, host: 127.0.0.1, port: %d, deadline_seconds: %d}\n"
    path.write_text(
        "name: server-outage\ntarget: server-outage-test\nsteps:\n"
        "  - id: before\n    " + check % (open_port, 30)
        + "  - id: gate\n    needs: before\n    " + check % (gate_port, 400)
        + "  - id: after\n    needs: gate\n    " + check % (open_port, 30)
    )  # fmt: skip
    return path


def test_a_server_restart_during_a_run(stack, tmp_path):
    """The server stops while a step runs and comes back on the same database: the run completes and
    reports, each step ran once, and the target's slot is free again for the next run."""
    from vicflow.flows.flow import LEASE_SECONDS

    with gate() as (gate_port, open_gate), socket.create_server(("127.0.0.1", 0)) as always_open:
        path = outage_blueprint(tmp_path, gate_port, always_open.getsockname()[1])
        run_id = start_run(stack, blueprint=str(path))
        wait_step_running(stack, run_id, "gate")
        stack.stop_server()
        down = time.monotonic()
        time.sleep(5)
        stack.start_server()
        print(f"\nserver down for {time.monotonic() - down:.0f}s")
        # the run outlives a renewal of its target's lease, which the restarted server must still know
        time.sleep(LEASE_SECONDS)
        open_gate()
        run = wait_final(stack, run_id)
        assert run["state_type"] == "COMPLETED", f"{run['state_name']}\n{logs_of(stack, run_id)}"
        assert task_runs(stack, run_id) == {"before": ["COMPLETED"], "gate": ["COMPLETED"], "after": ["COMPLETED"]}
        assert {k: r["state"] for k, r in summary_rows(stack, run_id).items()} == dict.fromkeys(
            ["before", "gate", "after"], "completed"
        )
        # the target is free: the next run on it does not wait (the gate is open now)
        started = time.monotonic()
        again = wait_final(stack, start_run(stack, blueprint=str(path)), timeout=120)
        assert again["state_type"] == "COMPLETED", logs_of(stack, again["id"])
        assert time.monotonic() - started < 60, f"the next run waited {time.monotonic() - started:.0f}s for the target"


def test_a_server_gone_longer_than_the_clients_retries(stack, tmp_path):
    """The server is away for longer than Prefect's client retries (PREFECT_CLIENT_MAX_RETRIES, about 60 s)
    and the steps finish meanwhile: the run waits for the server, then reports Completed with its summary.
    A resume of it through the worker runs nothing again."""
    with gate() as (gate_port, open_gate), socket.create_server(("127.0.0.1", 0)) as always_open:
        path = outage_blueprint(tmp_path, gate_port, always_open.getsockname()[1])
        run_id = start_run(stack, blueprint=str(path))
        wait_step_running(stack, run_id, "gate")
        stack.stop_server()
        open_gate()  # the steps finish while nobody can hear them
        time.sleep(OUTAGE_SECONDS)
        stack.start_server()
        run = wait_final(stack, run_id, timeout=180)
        assert run["state_type"] == "COMPLETED", f"{run['state_name']}\n{logs_of(stack, run_id)}"
        rows = summary_rows(stack, run_id)
        assert {k: r["state"] for k, r in rows.items()} == dict.fromkeys(["before", "gate", "after"], "completed")
        assert "the Prefect server did not answer for" in logs_of(stack, run_id)
        resumed = wait_final(stack, start_run(stack, blueprint=str(path), resume=run_id), timeout=120)
        assert resumed["state_type"] == "COMPLETED", logs_of(stack, resumed["id"])
        rows = summary_rows(stack, resumed["id"])
        assert {k: r["state"] for k, r in rows.items()} == dict.fromkeys(["before", "gate", "after"], "cached")
