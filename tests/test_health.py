"""The postgres health check against the test bed's real Postgres 15, with each login it meets in the
field: SCRAM-SHA-256 (Postgres' default since 14) and md5 (older clusters, and the seed's 9.6)."""

from __future__ import annotations

import uuid

import pytest
from vicflow.flows.testing import StepHarness
from vicflow.plugins.builtin.health import HealthCheck
from vicflow.plugins.errors import PermanentError, RunFailed, TransientError

from tests import stepkit
from tests.helpers import free_port

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module", params=["scram-sha-256", "md5"])
def postgres(request, docker_engine, docker_images):
    """A Postgres container published on 127.0.0.1 whose host logins use ``request.param``."""
    port, password, client = free_port(), "pw-" + uuid.uuid4().hex[:8], docker_engine.client()
    container = client.containers.run(
        "vicflow-test/postgres:15",
        name=f"health-pg-{uuid.uuid4().hex[:6]}",
        detach=True,
        environment={"POSTGRES_PASSWORD": password, "POSTGRES_HOST_AUTH_METHOD": request.param},
        ports={"5432/tcp": ("127.0.0.1", port)},
    )
    try:
        yield {"port": port, "password": password, "method": request.param, "container": container}
    finally:
        container.remove(force=True, v=True)
        client.close()


def stored_as(postgres) -> str:
    """How the server stores the user's password (md5... or SCRAM-SHA-256$...): proof of the login it asks for."""
    result = postgres["container"].exec_run(
        ["su", "postgres", "-c", "psql -tAc \"select left(rolpassword, 6) from pg_authid where rolname='postgres'\""]
    )
    return result.output.decode().strip()


def postgres_check(postgres, password: str, deadline: float, **spec) -> StepHarness:
    """The health_check step as a blueprint gives it, its password a secret (masked as in a run)."""
    return StepHarness(
        "health_check",
        {
            "kind": "postgres",
            "host": "127.0.0.1",
            "port": postgres["port"],
            "password": "${{ secrets.pg_password }}",
            "deadline_seconds": deadline,
            "interval_seconds": 0.5,
        },
        secrets={"pg_password": password},
        **spec,
    )


def test_logs_in_and_runs_select_1(postgres):
    check = postgres_check(postgres, postgres["password"], deadline=60)
    outputs = check.apply()
    assert outputs["detail"].startswith("SELECT 1 ok (server 15."), outputs
    assert stored_as(postgres).startswith({"scram-sha-256": "SCRAM-", "md5": "md5"}[postgres["method"]])
    assert check.idempotent()["detail"].startswith("SELECT 1 ok")  # a check changes nothing


def test_a_wrong_password_fails_with_the_servers_reason_and_is_retried(postgres):
    postgres_check(postgres, postgres["password"], deadline=60).apply()  # up first: the failure below is the login's
    password = "wrong-" + postgres["password"]
    wrong = postgres_check(postgres, password, deadline=2, retries=1, retry_delay_seconds=0)
    with pytest.raises(RunFailed, match=r"28P01: password authentication failed for user \"postgres\""):
        wrong.apply()
    assert wrong.record["attempts"] == 2, "a refused login is transient (a password being rotated): retried"
    assert password not in str(wrong.record), "the password is a secret: masked"


@pytest.fixture
def box_on_vch(docker_engine, docker_images):
    """A running container made through the test bed's VCH endpoint."""
    from vicflow.plugins.clients.dockerapi import DockerParams, connected

    from tests.testbed import dockerd

    with connected(DockerParams(docker_host=dockerd.VCH)) as vch:
        box = vch.containers.run(
            "vicflow-test/busybox:latest", ["sleep", "600"], name=f"health-vch-{uuid.uuid4().hex[:6]}", detach=True
        )
        try:
            yield vch, box
        finally:
            box.remove(force=True)


def test_on_a_vch_running_is_not_ready_without_a_command(box_on_vch):
    from tests.testbed import dockerd

    _, box = box_on_vch
    with pytest.raises(PermanentError, match="drops a container's Healthcheck") as refused:
        stepkit.apply(HealthCheck, kind="container", container=box.name, docker_host=dockerd.VCH, deadline_seconds=60)
    assert "command: [pg_isready" in str(refused.value), "the hint says what to use instead"


def test_on_a_vch_a_command_in_the_container_decides(box_on_vch):
    from vicflow.plugins.clients.dockerapi import exec_detached

    from tests.testbed import dockerd

    vch, box = box_on_vch
    check = dict(kind="container", container=box.name, docker_host=dockerd.VCH, command="test -f /tmp/ready")
    with pytest.raises(TransientError, match=r"test -f /tmp/ready exited with 1 in container"):
        stepkit.apply(HealthCheck, **check, deadline_seconds=2, interval_seconds=0.5)
    assert exec_detached(vch, box.id, ["touch", "/tmp/ready"], timeout=30) == 0
    outputs, _ = stepkit.apply(HealthCheck, **check, deadline_seconds=30, interval_seconds=0.5)
    assert outputs["detail"] == "running, test -f /tmp/ready exited 0"
