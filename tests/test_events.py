"""Event-driven operation against a real `prefect server start` (SQLite), a process worker, `vicflow listen`,
a registry container that notifies the receiver, and the test bed's dockerd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port, wait_http

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.docker, pytest.mark.prefect]


def _start(cmd, env, log: Path, cwd=REPO):
    return subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc, timeout=20):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class Server:
    def __init__(self, api: str, env: dict, logs: Path):
        self.api, self.env, self.logs = api, env, logs

    def post(self, path: str, body: dict | None = None):
        response = requests.post(f"{self.api}{path}", json=body or {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def cli(self, *args: str, check: bool = True):
        result = subprocess.run(
            [str(BIN / "prefect"), *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        if check and result.returncode:
            raise AssertionError(f"prefect {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def runs_of(self, deployment: str) -> list[dict]:
        ids = [d["id"] for d in self.post("/deployments/filter") if d["name"] == deployment]
        return self.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": ids}}, "sort": "START_TIME_ASC"})

    def wait_runs(self, deployment: str, count: int, after: float, timeout: float = 240) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [r for r in self.runs_of(deployment) if _ts(r["created"]) >= after]
            final = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
            if len(final) >= count:
                return final
            time.sleep(1)
        raise AssertionError(
            f"{deployment}: fewer than {count} finished runs after {timeout}s: "
            f"{[(r['name'], r['state_type']) for r in self.runs_of(deployment)]}\n"
            f"worker log:\n{(self.logs / 'worker.log').read_text()[-4000:]}"
        )

    def events(self, name: str) -> list[dict]:
        return self.post("/events/filter", {"filter": {"event": {"name": [name]}}, "limit": 50}).get("events", [])


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def server(tmp_path_factory, docker_engine, docker_images):
    """prefect server start on 127.0.0.1 (SQLite), the deployments of prefect.yaml, a process worker."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        VICFLOW_HOME=str(REPO),
        PYTHONPATH=str(REPO),
        VICFLOW_STATE_DIR=str(home / "state"),
        DO_NOT_TRACK="1",
        VICFLOW_SECRET_GOGS_DB_PASSWORD="gogs-db-" + uuid.uuid4().hex[:8],
    )
    env.pop("VICFLOW_PLUGINS", None)
    clean_gogs()
    srv = _start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log"
    )
    processes = [srv]
    try:
        wait_http(f"{api}/health", timeout=120)
        server = Server(api, env, home)
        http_port, ssh_port = free_port(), free_port()
        server.site = {
            "docker_host": "tcp://127.0.0.1:2375",
            "db_password": "${{ secrets.gogs_db_password }}",
            "publish_ip": "127.0.0.1",
            "http_port": http_port,
            "ssh_port": ssh_port,
            "volume_driver": "local",
            "gogs_image": "vicflow-test/app:1.0",
            "postgres_image": "vicflow-test/postgres:15",
        }
        server.cli("work-pool", "create", "vicflow", "--type", "process")
        server.cli("variable", "set", "vicflow_site_gogs", json.dumps(server.site))
        server.deploy = server.cli("--no-prompt", "deploy", "--all")
        processes.append(
            _start(
                [str(BIN / "prefect"), "worker", "start", "--pool", "vicflow", "--type", "process"],
                env,
                home / "worker.log",
            )
        )
        yield server
    finally:
        for proc in reversed(processes):
            _stop(proc)
        clean_gogs()


def clean_gogs() -> None:
    """The gogs project on the test bed's engine (the demo's, or an earlier run's), volumes included:
    a database volume initialised with another password would refuse this test's."""
    from vicflow.plugins.builtin.compose import ComposeDown

    from tests import stepkit

    stepkit.apply(ComposeDown, docker_host="tcp://127.0.0.1:2375", project="gogs", volumes=True)


@pytest.fixture(scope="module")
def listener(server, docker_engine, tmp_path_factory):
    """`vicflow listen` with the docker and registry sources, and a registry that notifies it."""
    folder = tmp_path_factory.mktemp("listen")
    receiver, registry_port, token = free_port(), free_port(), uuid.uuid4().hex
    (folder / "listen.yaml").write_text(
        json.dumps(
            {
                "docker": {"docker_host": docker_engine.plain_url, "engine": "testbed", "window_seconds": 2},
                "registry": {"listen": f"127.0.0.1:{receiver}", "token": token},
            }
        )
    )
    proc = _start(
        [sys.executable, "-m", "vicflow.flows.cli", "listen", "--config", str(folder / "listen.yaml")],
        server.env,
        folder / "listen.log",
    )
    client = docker_engine.client()
    endpoints = [
        {
            "name": "vicflow",
            "url": f"http://127.0.0.1:{receiver}/events",
            "timeout": "2s",
            "threshold": 3,
            "backoff": "1s",
            "headers": {"Authorization": [f"Bearer {token}"]},
        }
    ]
    registry = client.containers.run(
        "vicflow-test/registry:2.6.1-photon",
        name=f"notify-registry-{uuid.uuid4().hex[:6]}",
        detach=True,
        network_mode="host",
        environment={
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{registry_port}",
            "REGISTRY_NOTIFICATIONS_ENDPOINTS": json.dumps(endpoints),
        },
    )
    wait_http(f"http://127.0.0.1:{registry_port}/v2/")
    yield f"127.0.0.1:{registry_port}", folder, client
    registry.remove(force=True)
    _stop(proc)
    client.close()


def push(client, registry: str, source: str, tag: str) -> str:
    image = f"{registry}/gogs/gogs:{tag}"
    client.images.get(source).tag(f"{registry}/gogs/gogs", tag)
    for line in client.images.push(f"{registry}/gogs/gogs", tag=tag, stream=True, decode=True):
        assert "error" not in line, line
    return image


def test_deploy_all_creates_deployments_schedule_and_automations(server):
    deployments = {d["name"]: d for d in server.post("/deployments/filter")}
    assert {"run-blueprint", "health-check", "redeploy-on-push", "heal-on-die"} <= set(deployments)
    schedules = deployments["health-check"]["schedules"]
    assert schedules and schedules[0]["schedule"]["interval"] == 300
    automations = {a["name"]: a for a in server.post("/automations/filter")}
    pushed = next(a for a in automations.values() if "registry.image.pushed" in a["trigger"]["expect"])
    assert pushed["trigger"]["match"] == {"registry.repository": "gogs/gogs"}
    assert any("docker.container.died" in a["trigger"]["expect"] for a in automations.values())
    schema = deployments["run-blueprint"]["parameter_openapi_schema"]["properties"]
    assert "gogs" in json.dumps(schema["blueprint"]) and schema["inputs"]["description"]


def test_push_to_registry_redeploys_with_the_new_tag(server, listener):
    registry, _, client = listener
    started = time.time()
    image = push(client, registry, "vicflow-test/app:1.1", "1.1")
    runs = server.wait_runs("redeploy-on-push", 1, started)
    assert runs[0]["state_type"] == "COMPLETED", runs[0]
    assert runs[0]["parameters"]["inputs"]["gogs_image"] == image
    assert runs[0]["parameters"]["event"]["event"] == "registry.image.pushed", "the run carries its event"
    health = wait_http(f"http://127.0.0.1:{server.site['http_port']}/health", timeout=60).json()
    assert health == {"status": "ok", "database": "ok", "version": "1.1"}
    assert client.containers.get("gogsapp").attrs["Config"]["Image"] == image
    artifacts = server.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    assert any("started by event registry.image.pushed" in (a.get("description") or "") for a in artifacts)
    secret = server.env["VICFLOW_SECRET_GOGS_DB_PASSWORD"]
    logs = server.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    assert not any(secret in log["message"] for log in logs) and secret not in json.dumps(artifacts)


def test_a_dead_container_is_healed(server, listener):
    _, _, client = listener
    wait_http(f"http://127.0.0.1:{server.site['http_port']}/health", timeout=120)
    killed = time.time()
    client.containers.get("gogsapp").kill()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if client.containers.get("gogsapp").status == "running":
            break
        time.sleep(1)
    runs = server.wait_runs("heal-on-die", 1, killed)
    assert runs[0]["state_type"] == "COMPLETED", runs[0]
    assert runs[0]["parameters"]["event"]["resource"]["compose.service"] == "gogs"
    assert wait_http(f"http://127.0.0.1:{server.site['http_port']}/health", timeout=60).json()["database"] == "ok"


def test_two_pushes_at_once_give_runs_that_do_not_overlap(server, listener):
    registry, _, client = listener
    started = time.time()
    push(client, registry, "vicflow-test/app:1.0", "2.0")
    push(client, registry, "vicflow-test/app:1.1", "2.1")
    runs = server.wait_runs("redeploy-on-push", 2, started)
    assert all(r["state_type"] == "COMPLETED" for r in runs), [(r["name"], r["state_type"]) for r in runs]
    spans = sorted((_ts(r["start_time"]), _ts(r["end_time"])) for r in runs)
    assert spans[0][1] <= spans[1][0], f"runs overlapped: {spans}"
