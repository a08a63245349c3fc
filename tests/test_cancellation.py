"""A run cancelled as an operator cancels it (`prefect flow-run cancel`, what the UI's Cancel button sends):
the worker stops it in its step, the run ends Cancelled, and the audit trail records the cancellation.

Real parts only: the session's Prefect server, `vicflow worker` (its fork server runs the flow), Prefect's CLI.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests

from tests.helpers import wait_for
from tests.testbed.prefect_stack import BIN, client_env, deploy, start, stop

pytestmark = pytest.mark.testbed  # a worker and its fork server of its own


def api(base: str, method: str, path: str, body: dict | None = None):
    for _ in range(5):  # the harness's SQLite answers 503 while locked; Prefect's client asks again too
        response = requests.request(method, f"{base}{path}", json=body, timeout=30)
        if response.status_code != 503:
            break
    response.raise_for_status()
    return response.json()


def said(what: str, log):
    return lambda: f"{what}; the worker's log ends:\n{log.read_text()[-3000:] if log.exists() else '(none)'}"


def test_a_run_cancelled_in_its_step_ends_cancelled_and_the_trail_says_so(prefect_api, tmp_path):
    prefix = f"cancel-{uuid.uuid4().hex[:6]}"
    blueprint = tmp_path / "long.yaml"
    blueprint.write_text(f"name: {prefix}\nsteps:\n  - {{id: wait, uses: sleep, with: {{seconds: 300}}}}\n")
    trail = tmp_path / "audit.jsonl"
    env = {**client_env(prefect_api), "VICFLOW_AUDIT_LOG": str(trail), "VICFLOW_STATE_DIR": str(tmp_path / "state")}
    pool, name = f"{prefix}-pool", f"{prefix}-run"
    deploy(tmp_path, env, pool, name, blueprint)
    deployment = api(prefect_api, "GET", f"/deployments/name/run-blueprint/{name}")
    worker = start([str(BIN / "vicflow"), "worker", "--pool", pool], env, tmp_path / "worker.log")
    try:
        run = api(prefect_api, "POST", f"/deployments/{deployment['id']}/create_flow_run", {})

        def step(state: str):
            query = {"task_runs": {"name": {"any_": ["wait"]}}, "flow_runs": {"id": {"any_": [run["id"]]}}}
            found = api(prefect_api, "POST", "/task_runs/filter", query)
            return found if found and found[0]["state_type"] == state else None

        wait_for(lambda: step("RUNNING"), 180, said("the step never ran", tmp_path / "worker.log"))
        cancel = subprocess.run(
            [str(BIN / "prefect"), "flow-run", "cancel", run["id"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr

        def ended():
            state = api(prefect_api, "GET", f"/flow_runs/{run['id']}")
            return state if state["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        final = wait_for(ended, 120, said("the cancelled run did not end", tmp_path / "worker.log"))
        assert final["state_type"] == "CANCELLED", final["state"]
        assert not step("COMPLETED"), "the step ran to its end after the cancel"

        def recorded():
            lines = trail.read_text().splitlines() if trail.exists() else []
            return [r for r in map(json.loads, lines) if r["event"] == "cancellation"]

        (record,) = wait_for(recorded, 60, said("no cancellation in the audit trail", tmp_path / "worker.log"))
        assert record["run_id"] == run["id"] and record["who"] == "prefect (the UI or an API client)"
        assert record["blueprint"] == str(blueprint) and record["detail"]["flow_run"] == run["name"]
        verified = subprocess.run(
            [str(BIN / "vicflow"), "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
        )
        assert verified.returncode == 0 and "1 records, chain intact" in verified.stdout, verified.stderr
    finally:
        stop(worker)
