"""The shipped gogs blueprint on the VCH endpoint, with a Postgres that accepts no connection for 25 s after its
container starts (the test bed's VICFLOW_PG_START_DELAY, on the test image). A VCH drops the compose file's
healthcheck, so a container's "running" says nothing: the blueprint's ``database`` check runs ``pg_isready`` in
the container (a detached exec) and Gogs' first-run form is posted only once Postgres answers.

The run is the engine's own (thread executor, no Prefect), in this process; the step logs give the timeline.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port, run_on_threads
from tests.testbed import dockerd
from tests.testbed.prefect_stack import clean_gogs

pytestmark = pytest.mark.docker
GOGS = Path(__file__).parents[1] / "blueprints" / "gogs.yaml"
DELAY = 25


class StepLog(logging.Handler):
    """Every step's log records, with their times."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def first(self, logger: str, pattern: str) -> float:
        for record in self.records:
            if record.name == logger and re.search(pattern, record.getMessage()):
                return record.created
        raise AssertionError(f"no {logger} record matches {pattern!r}: {[r.getMessage() for r in self.records][-20:]}")


@pytest.fixture
def steps_log():
    handler, logger = StepLog(), logging.getLogger("vicflow.step")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


def gogs_inputs(postgres_image: str) -> dict:
    return {
        "docker_host": dockerd.VCH,
        "app_host": dockerd.VCH_IP,
        "publish_ip": "0.0.0.0",  # the seed's: on a VCH, its public interface
        "http_port": free_port(),
        "ssh_port": free_port(),
        "gogs_image": "vicflow-test/app:1.0",
        "postgres_image": postgres_image,
        "db_password": "slow-db-" + uuid.uuid4().hex[:6],
        "admin_password": "slow-admin-" + uuid.uuid4().hex[:6],
    }


@pytest.fixture
def slow_postgres(docker_engine, docker_images, tmp_path, monkeypatch):
    """The test Postgres image with VICFLOW_PG_START_DELAY set (an image of this test's own, removed after)."""
    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "state"))
    client = docker_engine.client()
    tag = f"vicflow-test/postgres:15-slow-{uuid.uuid4().hex[:6]}"
    client.images.build(
        fileobj=io.BytesIO(f"FROM vicflow-test/postgres:15\nENV VICFLOW_PG_START_DELAY={DELAY}\n".encode()), tag=tag
    )
    clean_gogs()  # the compose file names its containers gogsapp and gogsdb
    yield tag
    clean_gogs()
    client.images.remove(tag, force=True)
    client.close()


def utc(value: str) -> float:
    """Docker's RFC 3339 UTC time (nanoseconds) as a timestamp."""
    return datetime.fromisoformat(value[:26].rstrip("Z") + "+00:00").timestamp()


def stamp(value: float) -> str:
    return datetime.fromtimestamp(value).strftime("%H:%M:%S.%f")[:-3]


def test_gogs_is_installed_only_once_a_slow_postgres_accepts_connections(slow_postgres, steps_log, docker_engine):
    inputs = gogs_inputs(slow_postgres)
    summary = run_on_threads(GOGS, inputs)
    states = {s["id"]: (s["state"], s["error"]) for s in summary["steps"]}
    assert summary["state"] == "completed", states

    client = docker_engine.client()
    gogsdb = client.containers.get("gogsdb")
    started = utc(gogsdb.attrs["State"]["StartedAt"])
    ready_lines = [
        line
        for line in gogsdb.logs(timestamps=True).decode().splitlines()
        if "database system is ready to accept connections" in line
    ]
    client.close()
    ready = utc(ready_lines[-1].split()[0])  # the last: the init phase's server listens on no TCP port
    accepted = steps_log.first("vicflow.step.database", r"attempt \d+ passed")
    installed = steps_log.first("vicflow.step.first_run", r"^POST .*/install answered 302")
    print(
        f"\ntimeline: gogsdb started {stamp(started)}; Postgres ready {stamp(ready)} (+{ready - started:.1f}s); "
        f"first connection accepted (pg_isready) {stamp(accepted)} (+{accepted - started:.1f}s); "
        f"install posted, answered {stamp(installed)} (+{installed - started:.1f}s)"
    )
    assert ready - started >= DELAY - 1, "Postgres was slow to accept connections"
    assert ready <= accepted <= installed, "the form was posted only once Postgres accepted connections"
    health = requests.get(f"http://{dockerd.VCH_IP}:{inputs['http_port']}/healthcheck", timeout=10).text
    assert "Database connection: OK" in health
