"""Metrics that a real Prometheus scrapes (issue 30, item 3; docs/metrics.md).

Debian's ``prometheus`` server runs on 127.0.0.1 with a config of this test's own and scrapes `vicflow worker
--metrics-port` and `vicflow listen --metrics-port` every second; the values are read back through its HTTP
query API (/api/v1/query), as an operator's dashboard would. The runs are real: a registry notification POSTed
to `vicflow listen` becomes a Prefect event whose trigger starts a run on the worker (a forked process of its
fork server), and two more runs are created through the API. Their steps need no Docker (tests/plugins/engine_steps.py):
``sleep``, ``flaky`` (fails once, then its retry succeeds), ``undoable`` (one fails, the other is rolled back),
and an approval gate that nobody answers. The shipped alert rules are checked with promtool and loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import yaml
from vicflow.flows.observability import metrics

from tests import helpers
from tests.testbed import REPO
from tests.testbed.prefect_stack import BIN, client_env, deploy_on_event, free_port, start, stop

RULES = REPO / "docs" / "prometheus" / "alerts.yml"
PROMETHEUS, PROMTOOL = Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")  # Debian's prometheus package
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
pytestmark = pytest.mark.testbed  # Debian's prometheus package (apt): `make test`, not `make check`


def wait_for(check, timeout: float, what: str, log: Path | None = None):
    """``helpers.wait_for``, its failure ending with the tail of ``log``."""

    def message():
        tail = f"\n{log.name}:\n{log.read_text()[-4000:]}" if log and log.exists() else ""
        return f"{what}: not within {timeout:g}s{tail}"

    return helpers.wait_for(check, timeout, message)


class Prometheus:
    """`prometheus` (the binary, never the systemd service) on a free loopback port, its data in tmp."""

    def __init__(self, home: Path, targets: dict[str, int]):
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (home / "prometheus.yml").write_text(yaml.safe_dump(config))
        command = [
            str(PROMETHEUS),
            f"--config.file={home / 'prometheus.yml'}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        if not PROMETHEUS.exists():
            pytest.fail(f"{PROMETHEUS} is missing: apt-get install prometheus (the Makefile's apt list has it)")
        self.process = start(command, dict(os.environ), self.log)
        try:
            wait_for(self.ready, 60, "prometheus answers /-/ready", self.log)
        except AssertionError:
            stop(self.process)
            raise

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited {self.process.returncode}:\n{self.log.read_text()[-4000:]}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def query(self, expr: str) -> dict[str, float]:
        """An instant query; each series' value by its labels (sorted, without job and instance)."""
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        values = {}
        for sample in body["data"]["result"]:
            labels = {k: v for k, v in sample["metric"].items() if k not in ("job", "instance", "__name__")}
            values[json.dumps(labels, sort_keys=True)] = float(sample["value"][1])
        return values

    def value(self, expr: str) -> float | None:
        found = self.query(expr)
        assert len(found) <= 1, f"{expr} gives {len(found)} series: {found}"
        return next(iter(found.values()), None)

    def until(self, expr: str, expected: float, timeout: float = 60) -> float:
        """Wait until ``expr`` is ``expected`` in Prometheus (its next scrapes), then return it."""
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.value(expr))
            return seen[-1] == expected

        wait_for(check, timeout, f"{expr} == {expected} (last values: {seen[-5:]})", self.log)
        return expected

    def stop(self) -> None:
        stop(self.process)


BLUEPRINTS = {
    # started by the registry event: a sleep, and a step that fails once and succeeds on its retry
    "ok": """
name: {prefix}-ok
steps:
  - {{id: nap, uses: sleep, with: {{seconds: 0.4}}}}
  - {{id: shaky, uses: flaky, needs: nap, retries: 1, retry_delay_seconds: 0, with: {{key: {prefix}}}}}
""",
    # one step completes, the next fails for good: the first is rolled back
    "undo": """
name: {prefix}-undo
steps:
  - {{id: first, uses: undoable, with: {{name: first}}}}
  - {{id: second, uses: undoable, needs: first, with: {{name: second, fail: true}}}}
""",
    # an approval nobody gives: the run waits, then is cancelled when the gate's timeout passes
    "gate": """
name: {prefix}-gate
steps:
  - id: ask
    uses: sleep
    with: {{seconds: 0.1}}
    approval: {{message: "go?", timeout_seconds: 12}}
""",
}


@pytest.fixture
def plane(prefect_api, tmp_path):
    prefix = f"metrics-{uuid.uuid4().hex[:6]}"
    paths = {}
    for kind, text in BLUEPRINTS.items():
        paths[kind] = tmp_path / f"{kind}.yaml"
        paths[kind].write_text(text.format(prefix=prefix))
    env = client_env(prefect_api)
    env.pop(metrics.ADDR_ENV, None)
    env.pop(metrics.MULTIPROC_ENV, None)
    pool, deployment = f"{prefix}-pool", f"{prefix}-on-push"
    repository = f"{prefix}/app"
    match = {"registry.repository": repository}
    deploy_on_event(tmp_path, env, pool, deployment, paths["ok"], match, "registry.image.pushed")
    worker_port, listen_port, receiver, token = free_port(), free_port(), free_port(), uuid.uuid4().hex
    (tmp_path / "listen.yaml").write_text(json.dumps({"registry": {"listen": f"127.0.0.1:{receiver}", "token": token}}))
    processes = [
        start([str(BIN / "vicflow"), "worker", "--pool", pool, "--metrics-port", str(worker_port)], env, tmp_path / "worker.log"),
        start(
            [str(BIN / "vicflow"), "listen", "--config", str(tmp_path / "listen.yaml"), "--metrics-port", str(listen_port)],
            env,
            tmp_path / "listen.log",
        ),
    ]  # fmt: skip
    server = None
    try:
        server = Prometheus(tmp_path, {"worker": worker_port, "listen": listen_port})
        yield {
            "prometheus": server,
            "api": prefect_api,
            "prefix": prefix,
            "paths": paths,
            "deployment": deployment,
            "repository": repository,
            "receiver": f"http://127.0.0.1:{receiver}/events",
            "token": token,
            "home": tmp_path,
        }
    finally:
        if server is not None:
            server.stop()
        for process in reversed(processes):
            stop(process)


def api(plane, path: str, body: dict | None = None):
    """POST to the Prefect API; a 503 (the harness's SQLite busy under load) is asked again, as Prefect's client
    and tests/testbed/prefect_stack.py do."""
    for attempt in range(5):
        response = requests.post(f"{plane['api']}{path}", json=body or {}, timeout=30)
        if response.status_code != 503 or attempt == 4:
            break
        time.sleep(1 + attempt)
    response.raise_for_status()
    return response.json()


def final_run(plane, run_id: str, timeout: float = 180) -> dict:
    def ended():
        response = requests.get(f"{plane['api']}/flow_runs/{run_id}", timeout=30)
        if response.status_code == 503:  # the harness's SQLite is busy: ask again
            return None
        response.raise_for_status()
        run = response.json()
        return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return wait_for(ended, timeout, f"flow run {run_id} ends", plane["home"] / "worker.log")


def push(plane) -> None:
    """A notification as distribution's registry sends it (notifications/event.go: an envelope of events)."""
    event = {
        "id": str(uuid.uuid4()),
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "action": "push",
        "target": {
            "mediaType": MANIFEST,
            "digest": "sha256:" + uuid.uuid4().hex * 2,
            "repository": plane["repository"],
            "tag": "1.0",
            "url": f"http://127.0.0.1:5000/v2/{plane['repository']}/manifests/1.0",
        },
        "request": {"host": "127.0.0.1:5000", "method": "PUT"},
        "actor": {"name": "ci"},
    }
    response = requests.post(
        plane["receiver"],
        json={"events": [event]},
        headers={"Authorization": f"Bearer {plane['token']}", "Content-Type": "application/vnd.docker.distribution.events.v1+json"},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 200, response.text


def test_prometheus_scrapes_runs_steps_retries_rollbacks_events_and_approvals(plane):
    prom, prefix = plane["prometheus"], plane["prefix"]
    wait_for(lambda: prom.value('up{job="listen"}') == 1 and prom.value('up{job="worker"}') == 1, 60, "both scraped")
    [deployment] = [d for d in api(plane, "/deployments/filter") if d["name"] == plane["deployment"]]

    # 1. a registry push: `vicflow listen` emits the event, its trigger starts the ok blueprint on the worker
    wait_for(lambda: _receiving(plane), 60, "the registry receiver listens", plane["home"] / "listen.log")
    push(plane)
    run = wait_for(lambda: api(plane, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}}), 120, "the event starts a run", plane["home"] / "listen.log")[0]  # fmt: skip
    assert final_run(plane, run["id"])["state_type"] == "COMPLETED"
    assert prom.until('vicflow_events_received_total{job="listen",source="registry"}', 1) == 1
    assert prom.until(f'vicflow_runs_total{{job="worker",blueprint="{prefix}-ok",state="completed"}}', 1) == 1
    assert prom.until('vicflow_step_retries_total{job="worker",step_type="flaky"}', 1) == 1
    assert prom.until('sum(vicflow_step_duration_seconds_count{step_type="sleep",state="completed"})', 1) == 1
    assert prom.until('sum(vicflow_step_duration_seconds_count{step_type="flaky",state="completed"})', 1) == 1
    slept = prom.value('sum(vicflow_step_duration_seconds_sum{step_type="sleep"})')
    assert slept is not None and 0.4 <= slept < 30, f"the sleep step slept 0.4 s; its duration sum is {slept}"
    assert prom.until('vicflow_event_run_lag_seconds_count{job="worker"}', 1) == 1
    lag = prom.value('vicflow_event_run_lag_seconds_sum{job="worker"}')
    assert lag is not None and 0 < lag < 120, f"lag from the push to the run's steps: {lag}"
    # each endpoint serves its own metrics: the listener no lag, the worker no events received
    assert prom.query('{job="listen",__name__=~"vicflow_(runs|step|event_run|approvals).*"}') == {}
    assert prom.query('{job="worker",__name__=~"vicflow_events_(received|folded).*"}') == {}

    # 2. a run that fails: its completed step is rolled back
    created = api(plane, f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"blueprint": str(plane["paths"]["undo"])}})  # fmt: skip
    assert final_run(plane, created["id"])["state_type"] == "FAILED"
    assert prom.until(f'vicflow_runs_total{{blueprint="{prefix}-undo",state="failed"}}', 1) == 1
    assert prom.until('vicflow_rollbacks_total{step_type="undoable",outcome="rolled_back"}', 1) == 1
    by_state = {'{"state": "completed"}': 1.0, '{"state": "failed"}': 1.0}  # the first completed, the second failed
    expr = 'sum by (state) (vicflow_step_duration_seconds_count{step_type="undoable"})'
    wait_for(lambda: prom.query(expr) == by_state, 60, f"{expr} == {by_state}")

    # 3. an approval gate nobody answers: waiting while the run waits, none once it is cancelled
    created = api(plane, f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"blueprint": str(plane["paths"]["gate"])}})  # fmt: skip
    assert prom.until(f'vicflow_approvals_waiting{{blueprint="{prefix}-gate"}}', 1, timeout=120) == 1
    assert final_run(plane, created["id"])["state_type"] == "CANCELLED"
    assert prom.until(f'sum(vicflow_approvals_waiting{{blueprint="{prefix}-gate"}}) or vector(0)', 0) == 0
    # once the fork server has reaped the run's process, its live gauge is gone (multiprocess.mark_process_dead)
    assert prom.until(f'count(vicflow_approvals_waiting{{blueprint="{prefix}-gate"}}) or vector(0)', 0) == 0
    assert prom.until(f'vicflow_runs_total{{blueprint="{prefix}-gate",state="cancelled"}}', 1) == 1

    # every run was counted once, by the worker that ran it
    assert prom.until(f'sum(vicflow_runs_total{{blueprint=~"{prefix}-.*"}})', 3) == 3
    # the shipped rules loaded into this server, and none fires on a healthy run
    groups = requests.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert rules == dict.fromkeys(
        ("VicflowRunFailingRepeatedly", "VicflowEventsLagging", "VicflowApprovalsWaitingTooLong"), "ok"
    )
    print("\n" + "\n".join(f"{expr} = {prom.query(expr)}" for expr in REPORTED(prefix)))


def REPORTED(prefix: str) -> list[str]:  # noqa: N802 - the queries the closing note shows
    return [
        f'vicflow_runs_total{{blueprint=~"{prefix}-.*"}}',
        "sum by (step_type, state) (vicflow_step_duration_seconds_count)",
        "vicflow_step_retries_total",
        "vicflow_rollbacks_total",
        "vicflow_events_received_total",
        "vicflow_event_run_lag_seconds_sum",
        f'vicflow_approvals_waiting{{blueprint=~"{prefix}-.*"}}',
    ]


def _receiving(plane) -> bool:
    try:
        requests.post(plane["receiver"], data=b"{}", timeout=3)  # unauthorised: 401, and nothing emitted
        return True
    except requests.ConnectionError:
        return False


def test_the_shipped_alert_rules_pass_promtool():
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES.parent / "alerts_test.yml")]):
        done = subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    assert "SUCCESS: 3 rules found" in subprocess.run([str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60).stdout  # fmt: skip
