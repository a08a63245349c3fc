"""The event-driven stack on this machine: `prefect server start` (SQLite) with prefect.yaml deployed, a
process worker, `vicflow listen` (docker + registry sources) and a registry container that notifies it.

The app runs on the test bed's VCH-shaped endpoint (127.0.0.2:2375, tests/testbed/vchproxy.py), which has no
event stream: the docker source polls it, as it would a real VCH.  The setup follows the README's commands
(``Stack.commands`` records them; tests/test_events.py compares them with the README).

Used by tests/test_events.py and bench/event_latency.py.  Everything listens on 127.0.0.1 (the app on the
VCH address 127.0.0.2).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import requests
import yaml
from vicflow.plugins.clients import certs

from tests.testbed import REPO
from tests.testbed.prefect_db import BUSY_MACHINE, copy_to

BIN = Path(sys.executable).parent
ENGINE = "tcp://127.0.0.2:2375"  # the VCH-shaped endpoint
APP_HOST = "127.0.0.2"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, cwd=REPO, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL to the process's whole session (it was started in one of its own): nothing it
    started may outlive it (a `prefect worker` left behind would take the next test's runs)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Stack:
    def __init__(self, api: str, env: dict, home: Path):
        self.api, self.env, self.home = api, env, home
        self.site: dict = {}
        self.registry = ""
        self.receiver = ""  # vicflow listen's registry receiver (https), its CA and the token the registry sends
        self.receiver_ca = ""
        self.receiver_token = ""
        self.deploy_output = ""
        self.worker: subprocess.Popen | None = None
        self.worker_log = home / "worker.log"
        self.commands: list[list[str]] = []  # the setup commands run, as a user types them
        self.timings: dict[str, float] = {}
        self.server: subprocess.Popen | None = None

    def start_server(self) -> None:
        """`prefect server start` on this stack's port and database (again, after ``stop_server``)."""
        command = [str(BIN / "prefect"), "server", "start"]  # host and port: PREFECT_SERVER_API_HOST/_PORT
        if command not in self.commands:
            self.commands.append(command)
        with open(self.home / "server.log", "ab") as log:  # the child keeps its own descriptor
            log.write(b"\n--- server started ---\n")
            log.flush()
            self.server = subprocess.Popen(
                command, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_http(f"{self.api}/health", timeout=120)

    def stop_server(self) -> None:
        """Stop the server (SIGTERM), as an operator's restart or a crashed host would."""
        if self.server is not None:
            stop(self.server)

    def start_worker(self, forked: bool = True) -> None:
        """`vicflow worker` (runs forked from its fork server), or, to compare, a plain `prefect worker start`
        (each run is a fresh `python -m prefect.engine`).  Replaces the running worker."""
        if self.worker is not None:
            stop(self.worker)
        if forked:
            command, self.worker_log = [str(BIN / "vicflow"), "worker", "--pool", "vicflow"], self.home / "worker.log"
        else:
            command = [str(BIN / "prefect"), "worker", "start", "--pool", "vicflow", "--type", "process"]
            self.worker_log = self.home / "worker-plain.log"
        self.commands.append(command)
        self.worker = start(command, self.env, self.worker_log)

    def post(self, path: str, body: dict | list | None = None):
        """POST to the server's API; a 503 (SQLite busy under load) is asked again, up to 5 times."""
        for attempt in range(5):
            response = requests.post(f"{self.api}{path}", json=body if body is not None else {}, timeout=30)
            if response.status_code != 503 or attempt == 4:
                break
            time.sleep(1 + attempt)
        response.raise_for_status()
        return response.json()

    def logs(self, run_id: str) -> list[str]:
        return [log["message"] for log in self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"})]  # fmt: skip

    def wait_log(self, run_id: str, *needles: str, timeout: float = 30) -> str:
        """The first log line of the run that holds every needle; logs reach the API in batches, after the state."""
        deadline, messages = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            messages = self.logs(run_id)
            found = [m for m in messages if all(n in m for n in needles)]
            if found:
                return found[0]
            time.sleep(1)
        raise AssertionError(f"no log line of run {run_id} holds {needles}: {messages[-30:]}")

    def cli(self, *args: str) -> str:
        self.commands.append([str(BIN / "prefect"), *args])
        result = subprocess.run(
            [str(BIN / "prefect"), *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        if result.returncode:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    def runs_of(self, deployment: str) -> list[dict]:
        ids = [d["id"] for d in self.post("/deployments/filter") if d["name"] == deployment]
        return self.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": ids}}, "sort": "START_TIME_ASC"})

    def wait_runs(self, deployment: str, count: int, after: float, timeout: float = 480) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [r for r in self.runs_of(deployment) if ts(r["created"]) >= after]
            final = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
            if len(final) >= count:
                return final
            time.sleep(0.5)
        raise AssertionError(
            f"{deployment}: fewer than {count} finished runs after {timeout}s: "
            f"{[(r['name'], r['state_type']) for r in self.runs_of(deployment)]}\n"
            f"worker log:\n{self.worker_log.read_text()[-4000:]}"
        )

    def push(self, client, source: str, tag: str) -> str:
        repository = f"{self.registry}/gogs/gogs"
        client.images.get(source).tag(repository, tag)
        for line in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise RuntimeError(f"push of {repository}:{tag} failed: {line}")
        return f"{repository}:{tag}"


def clean_gogs() -> None:
    """The gogs project on the test bed's engine, volumes included: a database volume initialised with
    another password (the demo's) would refuse this stack's."""
    import logging

    from vicflow.plugins.builtin.compose import ComposeDown
    from vicflow.plugins.step import StepContext

    step = ComposeDown()
    step.apply(
        step.Params(docker_host=ENGINE, project="gogs", volumes=True),
        StepContext("clean", "clean", "clean", logging.getLogger("vicflow.testbed")),
    )


def start_registry(docker_client, endpoints: list[dict], attempts: int = 3, ca: str | None = None):
    """The notifying registry on a free port of 127.0.0.1 (host network); returns (container, port). ``ca``: a CA
    file the registry trusts for its https endpoints (SSL_CERT_FILE: its notification client is Go's default
    transport, whose roots crypto/x509 reads from the file that variable names).

    A port found free can be taken before the registry binds it (the stack's own client connections use
    the same range): a registry that exits at once is started again on another port, and the last failure
    says why, in the container's own words."""
    trust: dict = {}
    if ca:
        trust = {"volumes": {ca: {"bind": "/etc/vicflow/receiver-ca.pem", "mode": "ro"}}}
    for attempt in range(attempts):
        port = free_port()
        environment = {
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_NOTIFICATIONS_ENDPOINTS": json.dumps(endpoints),
        }
        if ca:
            environment["SSL_CERT_FILE"] = "/etc/vicflow/receiver-ca.pem"
        registry = docker_client.containers.run(
            "vicflow-test/registry:2.6.1-photon",
            name=f"notify-registry-{uuid.uuid4().hex[:6]}",
            detach=True,
            network_mode="host",
            environment=environment,
            **trust,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/v2/", timeout=30)
            return registry, port
        except RuntimeError as exc:
            registry.reload()
            state = registry.attrs["State"]
            logs = registry.logs(tail=30).decode(errors="replace")
            registry.remove(force=True)
            if attempt == attempts - 1:
                raise RuntimeError(
                    f"{exc}; the registry container was {state.get('Status')} (exit {state.get('ExitCode')}, "
                    f"{state.get('Error') or 'no error'}):\n{logs}"
                ) from None
    raise AssertionError("unreachable")


@contextmanager
def for_tests(home: Path, docker_engine):
    """``running`` with its own Docker client on ``stack.client``: a test module's stack fixture."""
    client = docker_engine.client()
    try:
        with running(home, client) as stack:
            stack.client = client
            yield stack
    finally:
        client.close()


@contextmanager
def running(home: Path, docker_client, **extra_env: str):
    """Start everything; yields a Stack.  Stops what it started, and removes the gogs project.
    ``extra_env`` reaches the server, the worker and its runs (secrets as VICFLOW_SECRET_*)."""
    port, receiver, token = free_port(), free_port(), uuid.uuid4().hex
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        # leases on disk: with Prefect's default (in memory) a restarted server has forgotten every lease, so
        # the next renewal cancels the runs holding a target and their slots stay taken for good
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        VICFLOW_HOME=str(REPO),
        PYTHONPATH=str(REPO),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # vicflow-engine, as in an activated venv
        VICFLOW_STATE_DIR=str(home / "state"),
        DO_NOT_TRACK="1",
        VICFLOW_SECRET_GOGS_DB_PASSWORD="gogs-db-" + uuid.uuid4().hex[:8],
        VICFLOW_SECRET_GOGS_ADMIN_PASSWORD="gogs-admin-" + uuid.uuid4().hex[:8],
        **BUSY_MACHINE,
    )
    env.pop("VICFLOW_PLUGINS", None)
    env.update(extra_env)
    clean_gogs()
    processes: list[subprocess.Popen] = []
    registry = None
    stack = Stack(api, env, home)
    copy_to(home / "prefect.db")  # the server's database (in PREFECT_HOME), already migrated
    try:
        stack.start_server()
        stack.site = {
            "docker_host": ENGINE,
            "db_password": "${{ secrets.gogs_db_password }}",
            "admin_password": "${{ secrets.gogs_admin_password }}",
            "app_host": APP_HOST,
            "publish_ip": APP_HOST,
            "http_port": free_port(),
            "ssh_port": free_port(),
            "gogs_image": "vicflow-test/app:1.0",
            "postgres_image": "vicflow-test/postgres:15",
        }
        stack.cli("work-pool", "create", "vicflow", "--type", "process")
        stack.cli("variable", "set", "vicflow_site_gogs", json.dumps(stack.site))
        stack.deploy_output = stack.cli("--no-prompt", "deploy", "--all")
        stack.start_worker()
        # the receiver serves HTTPS with a certificate of a CA of the stack's own (docs/events.md)
        tls = certs.generate(home / "receiver-tls", "127.0.0.1", ["127.0.0.1"], client=False)
        registry_source = {"listen": f"127.0.0.1:{receiver}", "token": token}
        registry_source.update(tls_cert=tls["server_cert"], tls_key=tls["server_key"])
        stack.receiver = f"https://127.0.0.1:{receiver}/events"
        stack.receiver_ca, stack.receiver_token = tls["ca"], token
        (home / "listen.yaml").write_text(
            json.dumps(
                {
                    "docker": {"docker_host": ENGINE, "engine": "testbed", "poll_seconds": 1},
                    "registry": registry_source,
                }
            )
        )
        stack.commands.append([str(BIN / "vicflow"), "listen", "--config", str(home / "listen.yaml")])
        processes.append(
            start(
                [sys.executable, "-m", "vicflow.flows.cli.main", "listen", "--config", str(home / "listen.yaml")],
                env,
                home / "listen.log",
            )
        )
        endpoints = [
            {
                "name": "vicflow",
                "url": stack.receiver,
                "timeout": "2s",
                "threshold": 3,
                "backoff": "1s",
                "headers": {"Authorization": [f"Bearer {token}"]},
            }
        ]
        registry, registry_port = start_registry(docker_client, endpoints, ca=tls["ca"])
        stack.registry = f"127.0.0.1:{registry_port}"
        yield stack
    finally:
        if registry is not None:
            registry.remove(force=True)
        for proc in reversed(processes):
            stop(proc)
        if stack.worker is not None:
            stop(stack.worker)
        stack.stop_server()
        clean_gogs()


def client_env(api: str) -> dict[str, str]:
    """The environment of `vicflow worker`, `vicflow listen` and `prefect` commands of a test on the server at
    ``api``: this checkout importable, its venv's commands first, workers asking for runs every second."""
    return dict(
        os.environ,
        PREFECT_API_URL=api,
        PREFECT_WORKER_QUERY_SECONDS="1",
        PYTHONPATH=str(REPO),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )


def deploy_on_event(
    home: Path, env: dict, pool: str, name: str, blueprint: Path, match: dict, expect: str, limit: int | None = 1
) -> None:
    """A process work pool and one deployment of ``blueprint`` (``limit``, queued; None: no limit) that an
    ``expect`` event matching ``match`` triggers with the event as a parameter, as prefect.yaml's event
    deployments are."""
    trigger = {
        "type": "event",
        "enabled": True,
        "match": match,
        "expect": [expect],
        "parameters": {"blueprint": str(blueprint), "event": "{{ event }}"},
    }
    deploy(home, env, pool, name, blueprint, [trigger], limit)


def deploy(
    home: Path, env: dict, pool: str, name: str, blueprint: Path, triggers: list[dict] | None = None,
    limit: int | None = 1,
) -> None:  # fmt: skip
    """A process work pool and one deployment of ``blueprint`` (``limit``, queued; None: no limit), deployed with
    `prefect deploy` from ``home``/prefect.yaml as the shipped prefect.yaml's are. A failed command raises with
    its output."""
    deployment = {
        "name": name,
        "entrypoint": "flows/on_prefect/flow.py:run_blueprint",
        "work_pool": {"name": pool, "job_variables": {"command": "vicflow-engine"}},
        "parameters": {"blueprint": str(blueprint)},
        "triggers": triggers or [],
    }
    if limit is not None:
        deployment["concurrency_limit"] = {"limit": limit, "collision_strategy": "ENQUEUE"}
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    spec = {"name": name, "prefect-version": "3.4.0", "pull": pull, "deployments": [deployment]}
    (home / "prefect.yaml").write_text(yaml.safe_dump(spec))
    for argv in (
        ["work-pool", "create", pool, "--type", "process"],
        ["--no-prompt", "deploy", "--all", "--prefect-file", str(home / "prefect.yaml")],
    ):
        done = subprocess.run([str(BIN / "prefect"), *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"prefect {' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
