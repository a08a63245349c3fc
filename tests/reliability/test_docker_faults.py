"""The test bed's dockerd restarts during compose_up of the seed's Gogs app; a checked container exits.

dockerd is stopped with SIGTERM and started again with the same command (tests/testbed/dockerd.py
``restart``), at a random point of a compose_up that has every container to create and start.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import docker
import pytest
from vicflow.plugins.builtin.compose import ComposeDown, ComposeUp
from vicflow.plugins.builtin.health import HealthCheck
from vicflow.plugins.builtin.registry_swap import RegistrySwap
from vicflow.plugins.compose.engine_body import LABEL
from vicflow.plugins.errors import PermanentError

from tests import stepkit
from tests.helpers import free_port
from tests.test_compose import gogs, install, up, users  # noqa: F401 - gogs is a fixture
from tests.test_registry_swap import NEW, OLD, containers, harbor, swap_params  # noqa: F401 - harbor is a fixture
from tests.testbed import dockerd

pytestmark = [pytest.mark.docker, pytest.mark.faults]
TRIALS = int(os.environ.get("VICFLOW_RESTART_TRIALS", "10"))
SWAP_TRIALS = int(os.environ.get("VICFLOW_SWAP_RESTART_TRIALS", "3"))


def attempts(params: dict, leftovers: list, retries: int = 2) -> tuple[dict | None, list[str]]:
    """compose_up as the engine runs it: a new context per attempt, retried while the error is transient."""
    compose = {k: v for k, v in params.items() if k != "url"}
    outputs, errors = stepkit.retrying(ComposeUp, compose, retries, delay=2, step_id="app", leftovers=leftovers)
    assert outputs is not None or ComposeUp.is_transient(errors[-1]), f"not retried: {errors[-1]!r}"
    return outputs, [f"{type(e).__name__}: {e}"[:200] for e in errors]


def test_dockerd_restarts_during_compose_up_and_the_app_converges_with_its_data(gogs, docker_client):  # noqa: F811
    up(gogs)
    install(gogs)
    assert "gogsadmin" in users(gogs)
    rng = random.Random(1128)
    table = []
    for trial in range(TRIALS):
        stepkit.apply(ComposeDown, **{k: v for k, v in gogs.items() if k not in ("url", "volume_driver")})
        delay = rng.uniform(0.0, 1.5)
        restarter = threading.Timer(delay, dockerd.restart)
        restarter.start()
        leftovers: list[str] = []
        outputs, errors = attempts(gogs, leftovers)
        restarter.join(120)
        hit = bool(errors)  # the restart came while compose_up ran (else after it: the containers stopped)
        outputs, more = attempts(gogs, leftovers)  # re-running the blueprint converges either way
        errors += more
        client = docker.DockerClient(base_url="tcp://127.0.0.1:2375", timeout=60)
        try:
            mine = client.containers.list(all=True, filters={"label": f"{LABEL}.project={gogs['project']}"})
            by_service = {}
            for c in mine:
                by_service.setdefault(c.labels[f"{LABEL}.service"], []).append(c.status)
        finally:
            client.close()
        table.append(f"trial {trial}: restart at {delay:.2f}s, hit compose_up: {hit}, errors {errors}, {by_service}")
        assert outputs is not None, "\n".join(table)
        assert by_service == {"gogs": ["running"], "gogsdb": ["running"]}, "\n".join(table)
        assert leftovers == [], leftovers  # what failed to start was removed (nothing had to be reported)
        deadline = time.monotonic() + 90
        while True:  # the row written before the restarts (Gogs' admin user) is still there
            try:
                assert "gogsadmin" in users(gogs)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
    print("\n" + "\n".join(table))
    assert sum("hit compose_up: True" in line for line in table) >= TRIALS // 2, "the restarts missed compose_up"


def test_a_health_check_fails_at_once_when_the_container_behind_it_has_exited(docker_engine, docker_images):
    client = docker_engine.client()
    name = f"exits-{random.randrange(1 << 30):x}"
    client.containers.run(
        "vicflow-test/busybox:latest", ["sh", "-c", "echo listening failed: bad config; exit 3"], name=name, detach=True
    )
    try:
        started = time.monotonic()
        with pytest.raises(PermanentError) as failed:
            stepkit.apply(
                HealthCheck,
                kind="http",
                url=f"http://127.0.0.1:{free_port()}/",
                watch_container=name,
                docker_host="tcp://127.0.0.1:2375",
                deadline_seconds=120,
                interval_seconds=0.5,
            )
        took = time.monotonic() - started
        assert took < 15, f"waited {took:.0f}s of a 120 s deadline for a container that had exited"
        message = str(failed.value)
        assert f"container {name} has exited (exit code 3" in message
        assert "listening failed: bad config" in message and f"docker logs {name}" in message
    finally:
        client.containers.get(name).remove(force=True)
        client.close()


def test_dockerd_restarts_during_compose_down_and_a_rerun_removes_all_but_the_volumes(gogs, docker_client):  # noqa: F811
    up(gogs)
    install(gogs)
    down_params = {k: v for k, v in gogs.items() if k not in ("url", "volume_driver")}
    volumes = {v.name for v in docker_client.volumes.list(filters={"label": f"{LABEL}.project={gogs['project']}"})}
    assert volumes, "the gogs project has named volumes"
    rng = random.Random(2812)
    table = []
    for trial in range(SWAP_TRIALS):
        delay = rng.uniform(0.0, 1.0)
        restarter = threading.Timer(delay, dockerd.restart)
        restarter.start()
        done, errors = stepkit.retrying(ComposeDown, down_params, retries=2, delay=2)
        assert done is not None or ComposeDown.is_transient(errors[-1]), errors
        restarter.join(120)
        stepkit.apply(ComposeDown, **down_params)  # the re-run converges
        client = docker.DockerClient(base_url="tcp://127.0.0.1:2375", timeout=60)
        try:
            left = client.containers.list(all=True, filters={"label": f"{LABEL}.project={gogs['project']}"})
            kept = {v.name for v in client.volumes.list()}
        finally:
            client.close()
        reasons = [f"{type(e).__name__}: {str(e)[:120]}" for e in errors]
        table.append(f"trial {trial}: restart at {delay:.2f}s, errors {reasons}, containers left {len(left)}")
        assert left == [], "\n".join(table)
        assert volumes <= kept, f"a volume was deleted: {volumes - kept}"
        up(gogs)
    deadline = time.monotonic() + 90
    while "gogsadmin" not in users_or_none(gogs):  # the data outlived every restart
        assert time.monotonic() < deadline, "\n".join(table)
        time.sleep(1)
    print("\n" + "\n".join(table))


def swap(params: dict, retries: int = 3) -> tuple[dict | None, list[str]]:
    """registry_swap as the engine runs it: retried while the error is transient (Harbor restarting)."""
    outputs, errors = stepkit.retrying(RegistrySwap, params, retries, delay=5)
    return outputs, [f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" for e in errors]


def test_dockerd_restarts_during_registry_swap_the_file_is_whole_and_a_rerun_completes(harbor, docker_client):  # noqa: F811
    """The swap completes or rolls back; its compose file is the old or the new one, never half-edited."""
    path = Path(harbor.files[1])
    original = path.read_text()
    rng = random.Random(2811)
    table = []
    for trial in range(SWAP_TRIALS):
        delay = rng.uniform(0.0, 4.0)
        restarter = threading.Timer(delay, dockerd.restart)
        restarter.start()
        out, errors = swap(swap_params(harbor), retries=0)
        restarter.join(120)
        text = path.read_text()
        whole = text == original or (text.count(NEW) == 1 and text.replace(NEW, OLD) == original)
        table.append(f"trial {trial}: restart at {delay:.2f}s -> {'swapped' if out else errors}; file whole: {whole}")
        assert whole, "\n".join(table)
        out, errors = swap(swap_params(harbor, verify_timeout_seconds=90), retries=12)  # the re-run converges
        table.append(f"  re-run: {'swapped' if out else errors}")
        assert out is not None, "\n".join(table)
        assert out["verification"]["foreign_layer_push"] in (201, 202), out
        running = containers(docker_client)["registry"]
        assert running.attrs["Config"]["Image"] == NEW and running.status == "running", "\n".join(table)
        path.write_text(original)  # back to the seed's registry for the next trial (it fails verification)
        stepkit.apply(ComposeUp, docker_host="tcp://127.0.0.1:2375", files=harbor.files, project=harbor.project)
    print("\n" + "\n".join(table))


def users_or_none(params) -> list[str]:
    try:
        return users(params)
    except Exception:
        return []
