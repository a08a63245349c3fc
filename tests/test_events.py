"""Event-driven operation against a real `prefect server start` (SQLite), a process worker, `vicflow listen`,
a registry container that notifies the receiver, and the test bed's VCH endpoint, whose /events streams VIC
1.1.1's events (tests/testbed/prefect_stack.py).  Each of prefect.yaml's four deployments runs once:
run-blueprint from the API, health-check from its schedule, redeploy-on-push and heal-on-die from real events."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import wait_http
from tests.testbed import prefect_stack
from tests.testbed.prefect_stack import ts

pytestmark = [pytest.mark.docker, pytest.mark.prefect]
README = Path(__file__).parents[1] / "README.md"


def gogs_version(stack) -> str:
    page = wait_http(f"http://{stack.site['app_host']}:{stack.site['http_port']}/", timeout=120).text
    return re.search(r"Gogs Version: (\S+)", page).group(1)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_engine, docker_images):
    with prefect_stack.for_tests(tmp_path_factory.mktemp("prefect-stack"), docker_engine) as stack:
        yield stack


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
    stack.timings["push -> Running"] = ts(runs[0]["start_time"]) - started
    assert runs[0]["state_type"] == "COMPLETED", runs[0]
    assert runs[0]["parameters"]["inputs"]["gogs_image"] == image
    assert runs[0]["parameters"]["event"]["event"] == "registry.image.pushed", "the run carries its event"
    assert "no fork server" not in (stack.home / "worker.log").read_text(), "vicflow worker forks the run"
    assert gogs_version(stack) == "1.1"
    assert stack.client.containers.get("gogsapp").attrs["Config"]["Image"] == image
    artifacts = stack.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    assert any("started by event registry.image.pushed" in (a.get("description") or "") for a in artifacts)
    logs = stack.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    for secret in (stack.env["VICFLOW_SECRET_GOGS_DB_PASSWORD"], stack.env["VICFLOW_SECRET_GOGS_ADMIN_PASSWORD"]):
        assert logs and not any(secret in log["message"] for log in logs) and secret not in json.dumps(artifacts)


def test_the_receiver_serves_https_and_refuses_a_notification_without_the_token(stack):
    """The registry notifies `vicflow listen` over HTTPS (its endpoint's url and Authorization header, the stack's
    CA in its SSL_CERT_FILE): the push above started its run so. A stranger's notification, without the token or
    with another one, is 401; plain HTTP fails the handshake; the log says so without any credential."""
    envelope = {"events": []}
    ca = stack.receiver_ca
    missing = requests.post(stack.receiver, json=envelope, verify=ca, timeout=10)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="vicflow listen"'  # RFC 6750: the scheme it wants
    other = {"Authorization": "Bearer not-the-token-" + stack.receiver_token[:4]}
    wrong = requests.post(stack.receiver, json=envelope, headers=other, verify=ca, timeout=10)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="vicflow listen", error="invalid_token"'
    with pytest.raises(requests.ConnectionError):
        requests.post(stack.receiver.replace("https://", "http://"), json=envelope, timeout=10)
    deadline, log = time.monotonic() + 30, ""
    while time.monotonic() < deadline and "TLS handshake failed" not in log:
        log = (stack.home / "listen.log").read_text(errors="replace")
        time.sleep(0.2)
    assert "receiving registry notifications on https://" in log
    assert "missing bearer token" in log and "wrong bearer token" in log and "TLS handshake failed" in log, log[-3000:]
    assert stack.receiver_token not in log and "not-the-token" not in log


def test_a_dead_container_on_the_vch_is_healed(stack):
    before = stack.client.containers.get("gogsapp")
    version = gogs_version(stack)
    killed = time.time()
    before.kill()
    runs = stack.wait_runs("heal-on-die", 1, killed)
    assert runs[0]["state_type"] == "COMPLETED", runs[0]
    event = runs[0]["parameters"]["event"]
    assert event["resource"]["compose.service"] == "gogs" and event["payload"]["exit_code"] == "137"
    assert "polling" not in (stack.home / "listen.log").read_text(), "the die came from the VCH's event stream"
    after = stack.client.containers.get("gogsapp")
    assert after.status == "running" and after.id == before.id, "healed by a start, not replaced"
    assert gogs_version(stack) == version, "a heal never undoes the redeploy (heal_only: the Variable's image is older)"
    page = requests.get(f"http://{stack.site['app_host']}:{stack.site['http_port']}/healthcheck", timeout=10).text
    assert "Database connection: OK" in page
    stack.timings["die -> healed"] = ts(runs[0]["end_time"]) - killed


def test_run_blueprint_from_the_api(stack):
    started = time.time()
    [deployment] = [d for d in stack.post("/deployments/filter") if d["name"] == "run-blueprint"]
    stack.post(f"/deployments/{deployment['id']}/create_flow_run", {})
    [run] = stack.wait_runs("run-blueprint", 1, started)
    assert run["state_type"] == "COMPLETED", run
    stack.wait_log(run["id"], "/install not needed: ")  # Gogs is installed: the first-run form is not sent again


def test_health_check_runs_from_its_schedule_with_the_shared_site_variable(stack):
    [deployment] = [d for d in stack.post("/deployments/filter") if d["name"] == "health-check"]
    started = time.time()
    schedules = stack.post(
        f"/deployments/{deployment['id']}/schedules", [{"schedule": {"interval": 5}, "active": True}]
    )
    try:
        [run] = stack.wait_runs("health-check", 1, started, timeout=120)[:1]
    finally:
        for schedule in schedules:
            requests.delete(f"{stack.api}/deployments/{deployment['id']}/schedules/{schedule['id']}", timeout=10)
    assert run["state_type"] == "COMPLETED", run
    stack.wait_log(
        run["id"],
        "site Variable 'vicflow_site_gogs': admin_password, db_password",
        "not used by blueprint 'gogs-health'",
    )


def test_the_stack_runs_the_readmes_setup_commands(stack):
    block = next(b for b in README.read_text().split("```") if "prefect work-pool create" in b)
    readme = [shlex.split(line.split("   #")[0]) for line in block.strip().splitlines()]
    settings = [w.split("=", 1) for words in readme for w in words if re.match(r"^[A-Z_]+=", w)]
    readme = [[w for w in words if not re.match(r"^[A-Z_]+=", w)] for words in readme]  # VAR=value prefixes
    # the settings the README gives (not $PWD) are the ones the stack runs with
    assert {k: v for k, v in settings if "$" not in v} == {k: stack.env.get(k) for k, v in settings if "$" not in v}

    def shape(argv: list[str]) -> list[str]:
        return [Path(argv[0]).name] + ["<json>" if a.startswith("{") else Path(a).name for a in argv[1:]]

    assert [shape(c) for c in readme] == [
        shape(c)
        for c in stack.commands
        if Path(c[0]).name != "prefect" or c[1] in ("server", "work-pool", "variable", "--no-prompt")
    ]


def test_two_pushes_at_once_give_runs_that_do_not_overlap(stack):
    started = time.time()
    stack.push(stack.client, "vicflow-test/app:1.0", "2.0")
    stack.push(stack.client, "vicflow-test/app:1.1", "2.1")
    runs = stack.wait_runs("redeploy-on-push", 2, started)
    # both act one after the other, or, when both were queued at once, the listener folded the first push into
    # the run for the second (one repository, one target: flows/events/intake.py)
    acted = [r for r in runs if r["state_type"] == "COMPLETED"]
    folded = [r for r in runs if r["state_name"] == "Folded"]
    assert acted and len(acted) + len(folded) == 2, [(r["name"], r["state_name"]) for r in runs]
    assert sum(1 + (r["parameters"].get("folded") or {}).get("count", 0) for r in acted) == 2, "a push was lost"
    latest = max(runs, key=lambda r: r["parameters"]["event"]["occurred"])
    assert latest in acted, "the latest push is acted on, never folded away"
    spans = sorted((ts(r["start_time"]), ts(r["end_time"])) for r in acted)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), f"runs overlapped: {spans}"
    print(f"\nevent timings: {stack.timings}")


def test_a_killed_lock_holder_frees_its_target_and_the_waiting_run_says_what_it_waits_for(stack, tmp_path):
    """SIGKILL the run holding a target's slot: its lease stops being renewed, and the next run goes ahead."""
    import signal
    import subprocess
    import sys

    from vicflow.flows.on_prefect.flow import LEASE_SECONDS

    from tests.helpers import free_port

    def blueprint(name: str, port: int, deadline: int) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"name: {name}\ntarget: killed-holder-test\nsteps:\n  - id: wait\n    uses: health_check\n"
            f"    with: {{kind: tcp, host: 127.0.0.1, port: {port}, deadline_seconds: {deadline}}}\n"
        )
        return path

    def run(path: Path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "vicflow.flows.cli.main", "run", str(path)],
            env=stack.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    holder = run(blueprint("holder", free_port(), 600))
    limit = "vicflow-target-killed-holder-test"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        response = requests.get(f"{stack.api}/v2/concurrency_limits/{limit}", timeout=10)
        if response.status_code == 200 and response.json()["active_slots"] == 1:
            break
        time.sleep(0.5)
    else:
        holder.kill()
        pytest.fail(f"the holder never took the target's slot: {holder.stderr.read()[-2000:]}")
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    killed = time.monotonic()

    with socket_listening() as open_port:
        waiter = run(blueprint("waiter", open_port, 30))
        stderr = waiter.communicate(timeout=LEASE_SECONDS + 120)[1]
    waited = time.monotonic() - killed
    assert waiter.returncode == 0, stderr[-2000:]
    run_id = re.search(r"flow run ([0-9a-f-]{36})", stderr).group(1)
    stack.wait_log(run_id, "waiting for another run on target 'killed-holder-test'", f"within {LEASE_SECONDS}s")
    assert waited < LEASE_SECONDS + 60, f"the killed holder kept the target for {waited:.0f}s"
    print(f"\nkilled holder: the next run went ahead {waited:.0f}s after the kill (lease {LEASE_SECONDS}s)")


@contextlib.contextmanager
def socket_listening():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]
