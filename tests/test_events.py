"""Event-driven operation against a real `prefect server start` (SQLite), a process worker, `vicflow listen`,
a registry container that notifies the receiver, and the test bed's dockerd (tests/testbed/prefect_stack.py)."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import wait_http
from tests.testbed import prefect_stack
from tests.testbed.prefect_stack import ts

pytestmark = [pytest.mark.docker, pytest.mark.prefect]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_engine, docker_images):
    client = docker_engine.client()
    with prefect_stack.running(tmp_path_factory.mktemp("prefect-stack"), client) as stack:
        stack.client = client
        yield stack
    client.close()


def test_deploy_all_creates_deployments_schedule_and_automations(stack):
    deployments = {d["name"]: d for d in stack.post("/deployments/filter")}
    assert {"run-blueprint", "health-check", "redeploy-on-push", "heal-on-die"} <= set(deployments)
    schedules = deployments["health-check"]["schedules"]
    assert schedules and schedules[0]["schedule"]["interval"] == 300
    automations = stack.post("/automations/filter")
    pushed = next(a for a in automations if "registry.image.pushed" in a["trigger"]["expect"])
    assert pushed["trigger"]["match"] == {"registry.repository": "gogs/gogs"}
    assert any("docker.container.died" in a["trigger"]["expect"] for a in automations)
    schema = deployments["run-blueprint"]["parameter_openapi_schema"]["properties"]
    assert "gogs-health" in json.dumps(schema["blueprint"]) and schema["inputs"]["description"]
    redeploy = deployments["redeploy-on-push"]
    assert redeploy["global_concurrency_limit"]["limit"] == 1
    assert redeploy["concurrency_options"]["collision_strategy"] == "ENQUEUE"


def test_push_to_registry_redeploys_with_the_new_tag(stack):
    started = time.time()
    image = stack.push(stack.client, "vicflow-test/app:1.1", "1.1")
    runs = stack.wait_runs("redeploy-on-push", 1, started)
    assert runs[0]["state_type"] == "COMPLETED", runs[0]
    assert runs[0]["parameters"]["inputs"]["gogs_image"] == image
    assert runs[0]["parameters"]["event"]["event"] == "registry.image.pushed", "the run carries its event"
    assert "no fork server" not in (stack.home / "worker.log").read_text(), "vicflow worker forks the run"
    health = wait_http(f"http://127.0.0.1:{stack.site['http_port']}/health", timeout=60).json()
    assert health == {"status": "ok", "database": "ok", "version": "1.1"}
    assert stack.client.containers.get("gogsapp").attrs["Config"]["Image"] == image
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    assert any("started by event registry.image.pushed" in (a.get("description") or "") for a in artifacts)
    secret = stack.env["VICFLOW_SECRET_GOGS_DB_PASSWORD"]
    logs = stack.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    assert logs and not any(secret in log["message"] for log in logs) and secret not in json.dumps(artifacts)


def test_a_dead_container_is_healed(stack):
    wait_http(f"http://127.0.0.1:{stack.site['http_port']}/health", timeout=120)
    killed = time.time()
    stack.client.containers.get("gogsapp").kill()
    runs = stack.wait_runs("heal-on-die", 1, killed)
    assert runs[0]["state_type"] == "COMPLETED", runs[0]
    assert runs[0]["parameters"]["event"]["resource"]["compose.service"] == "gogs"
    assert stack.client.containers.get("gogsapp").status == "running"
    assert wait_http(f"http://127.0.0.1:{stack.site['http_port']}/health", timeout=60).json()["database"] == "ok"


def test_two_pushes_at_once_give_runs_that_do_not_overlap(stack):
    started = time.time()
    stack.push(stack.client, "vicflow-test/app:1.0", "2.0")
    stack.push(stack.client, "vicflow-test/app:1.1", "2.1")
    runs = stack.wait_runs("redeploy-on-push", 2, started)
    assert all(r["state_type"] == "COMPLETED" for r in runs), [(r["name"], r["state_type"]) for r in runs]
    spans = sorted((ts(r["start_time"]), ts(r["end_time"])) for r in runs)
    assert spans[0][1] <= spans[1][0], f"runs overlapped: {spans}"
