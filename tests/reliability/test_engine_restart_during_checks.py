"""The Docker engine restarts while the gogs blueprint's checks run (tests/testbed/dockerd.py ``restart``), on the
VCH endpoint: the engine stops gogsdb cleanly (exit 0), and restart: on-failure does not bring it back.

The run must not cost the app: it fails saying the engine restarted and rolls nothing back (both containers are
still there), and running the blueprint again converges.
"""

from __future__ import annotations

import threading
import time

import docker
import pytest

from tests.helpers import run_on_threads
from tests.test_gogs_slow_postgres import GOGS, gogs_inputs, slow_postgres, steps_log  # noqa: F401
from tests.testbed import dockerd

pytestmark = [pytest.mark.docker, pytest.mark.faults]


def waiting_postgres(client) -> bool:
    """gogsdb runs its entrypoint's start delay (it stops cleanly, exit 0, when the engine stops it then)."""
    try:
        return b"Postgres starts in" in client.containers.get("gogsdb").logs()
    except docker.errors.NotFound:
        return False


def failed_once(log) -> bool:
    return any(r.name == "vicflow.step.database" and "attempt 1 failed" in r.getMessage() for r in log.records)


def test_an_engine_restart_during_the_checks_fails_the_run_without_a_rollback(slow_postgres, steps_log, docker_engine):  # noqa: F811
    inputs = gogs_inputs(slow_postgres)
    result: dict = {}
    run = threading.Thread(target=lambda: result.update(run_on_threads(GOGS, inputs)), daemon=True)
    run.start()
    client = docker_engine.client()
    deadline = time.monotonic() + 180
    while not waiting_postgres(client) or not failed_once(steps_log):  # the check runs, Postgres waits its delay
        assert time.monotonic() < deadline and run.is_alive(), [r.getMessage() for r in steps_log.records][-10:]
        time.sleep(0.2)
    dockerd.restart()  # while the database check waits for the slow Postgres
    run.join(timeout=300)
    steps = {s["id"]: s for s in result["steps"]}
    assert result["state"] == "failed", steps
    assert "restarted while the check ran" in steps["database"]["error"], steps["database"]
    assert "Nothing was rolled back" in steps["database"]["error"]
    print(f"\ndatabase: {steps['database']['error']}")
    assert steps["app"]["state"] == "completed", "compose_up is not undone because the engine bounced"
    assert client.containers.get("gogsdb").attrs["State"]["ExitCode"] == 0, "stopped cleanly, as in the issue"
    assert "nothing rolled back" in steps["database"]["note"]
    assert {c.name for c in client.containers.list(all=True, filters={"label": "com.docker.compose.project=gogs"})} == {
        "gogsapp",
        "gogsdb",
    }, "the app is left as it was"
    client.close()

    again = run_on_threads(GOGS, inputs)
    assert again["state"] == "completed", {s["id"]: (s["state"], s["error"]) for s in again["steps"]}
