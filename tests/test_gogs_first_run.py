"""Gogs' first run through ``http_request``, on the test bed's VCH-shaped endpoint (real dockerd and Postgres).

The Gogs stand-in follows gogs/gogs' install route: every page redirects to /install until the form is
submitted; the form's database settings are tried for real; app.ini lands on the gogsvol2 volume.
"""

from __future__ import annotations

import uuid

import docker
import pytest
import requests
from vicflow.plugins.builtin.compose import ComposeDown, ComposeUp
from vicflow.plugins.builtin.health import HealthCheck
from vicflow.plugins.builtin.http_request import HttpRequest
from vicflow.plugins.clients.dockerapi import DockerParams, connected, is_vch
from vicflow.plugins.compose.project import ComposeError
from vicflow.plugins.step import PermanentError

from tests import stepkit
from tests.helpers import free_port, gogs_first_run, wait_http
from tests.testbed.prefect_stack import clean_gogs

pytestmark = pytest.mark.docker
VCH, PLAIN = "tcp://127.0.0.2:2375", "tcp://127.0.0.1:2375"
DB_PASSWORD = "gogs-db-pw-7"


@pytest.fixture
def gogs(docker_engine, docker_images):
    clean_gogs()  # the compose file names its containers: the demo's gogs project would hold the names
    port = free_port()
    params = dict(
        docker_host=VCH,
        files=["gogs/docker-compose.yml"],
        project=f"gogs{uuid.uuid4().hex[:6]}",
        use_os_environ=False,
        environment={
            "GOGS_IMAGE": "vicflow-test/app:1.0",
            "POSTGRES_IMAGE": "vicflow-test/postgres:15",
            "GOGS_DB_PASSWORD": DB_PASSWORD,
            "GOGS_PUBLISH_IP": "127.0.0.2",
            "GOGS_HTTP_PORT": str(port),
            "GOGS_SSH_PORT": str(free_port()),
        },
    )
    stepkit.apply(ComposeUp, **params, volume_driver="local")
    url = f"http://127.0.0.2:{port}"
    wait_http(f"{url}/install", timeout=120)
    stepkit.apply(  # Postgres initialised: a wrong password is then refused by Postgres, not by a cold start
        HealthCheck,
        kind="container",
        container="gogsdb",
        docker_host=VCH,
        deadline_seconds=120,
    )
    yield url
    stepkit.apply(ComposeDown, **params, volumes=True)


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=10, allow_redirects=False)


def test_before_install_every_page_redirects_to_the_install_form(gogs):
    for path in ("/", "/user/login", "/explore/repos"):
        response = get(gogs + path)
        assert (response.status_code, response.headers["Location"]) == (302, "/install"), path
    form = get(gogs + "/install")
    assert form.status_code == 200
    for field in ("db_type", "db_host", "db_passwd", "app_url", "admin_name", "admin_confirm_passwd"):
        assert f'name="{field}"' in form.text
    assert "Gogs is not installed" in get(gogs + "/healthcheck").text


def test_wrong_database_credentials_get_gogs_error_and_write_nothing(gogs, docker_client):
    params = gogs_first_run(gogs, "not-the-password")
    with pytest.raises(
        PermanentError,
        match=r"answered 200, expected 302: Database setting is not correct: .*"
        r"password authentication failed for user \"gogsuser\"",
    ):
        stepkit.apply(HttpRequest, **params)
    docker_client.containers.get("gogsapp").restart(timeout=5)
    wait_http(f"{gogs}/install", timeout=60)
    assert get(gogs + "/").status_code == 302, "nothing was written: still not installed after a restart"


def test_first_run_installs_once_and_survives_a_restart(gogs, docker_client, caplog):
    params = gogs_first_run(gogs, DB_PASSWORD, admin_password="admin-secret-42")
    [change] = stepkit.plan(HttpRequest, **params)
    assert change.action == "update" and "needed: the guard answered 200" in change.detail

    with caplog.at_level("DEBUG"):
        out, ctx = stepkit.apply(HttpRequest, **params)
    assert out["called"] and out["status"] == 302 and ctx.changed
    assert out["values"]["login_url"] == f"{gogs}/user/login"
    assert not any("admin-secret-42" in r.getMessage() or DB_PASSWORD in r.getMessage() for r in caplog.records)

    assert get(gogs + "/").status_code == 200 and "Gogs Version: 1.0" in get(gogs + "/").text
    assert get(gogs + "/install").status_code == 404
    assert get(gogs + "/healthcheck").text.strip() == "* Database connection: OK"

    [change] = stepkit.plan(HttpRequest, **params)
    assert change.action == "none" and "the guard answered 404" in change.detail
    again, ctx = stepkit.apply(HttpRequest, **params)
    assert again == {"called": False, "status": 404, "values": {}} and ctx.changed is False

    docker_client.containers.get("gogsapp").restart(timeout=5)
    assert wait_http(gogs + "/", timeout=60).status_code == 200, "still installed after a restart"


def test_outputs_come_from_the_response(gogs):
    stepkit.apply(HttpRequest, **gogs_first_run(gogs, DB_PASSWORD))
    out, _ = stepkit.apply(
        HttpRequest,
        url=f"{gogs}/api/v1/users/search?q=gogs",
        outputs={"code": "status", "type": "header:Content-Type", "admin": "json:data.0.username"},
    )
    assert out["values"] == {"code": 200, "type": "application/json", "admin": "gogsadmin"}
    with pytest.raises(PermanentError, match=r"output 'nope': 'json:data.5.username' is not in the response"):
        stepkit.apply(HttpRequest, url=f"{gogs}/api/v1/users/search?q=gogs", outputs={"nope": "json:data.5.username"})


def test_the_vch_endpoint_answers_like_vic_1_1(docker_engine, docker_images, tmp_path):
    with connected(DockerParams(docker_host=VCH)) as vch, connected(DockerParams(docker_host=PLAIN)) as plain:
        assert is_vch(vch) and not is_vch(plain)
        assert vch.version()["ApiVersion"] == "1.25"
        box = vch.containers.create("vicflow-test/busybox:latest", ["sleep", "30"], name=f"vch{uuid.uuid4().hex[:6]}")
        try:
            box.start()
            with pytest.raises(
                docker.errors.APIError,
                match="vSphere Integrated Containers does not implement container.ContainerExecCreate",
            ):
                box.exec_run("true")
        finally:
            box.remove(force=True)
    too_new = requests.get(VCH.replace("tcp://", "http://") + "/v1.41/info", timeout=5)
    assert too_new.status_code == 400 and "client is newer than server" in too_new.json()["message"]

    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  dind:\n    image: vicflow-test/busybox:latest\n    privileged: true\n")
    with pytest.raises(ComposeError, match=r"docker-compose.yml:4:5: VIC 1.1 does not support 'privileged'"):
        stepkit.plan(ComposeUp, docker_host=VCH, files=[str(compose)], project="dind")
    assert stepkit.plan(ComposeUp, docker_host=PLAIN, files=[str(compose)], project="dind")[0].action == "create"
