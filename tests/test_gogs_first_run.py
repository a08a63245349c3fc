"""The gogs blueprint against Gogs 0.11.19 and 0.13.4, on the test bed's VCH-shaped endpoint (real dockerd and
Postgres; Gogs is the stand-in of tests/testbed/rootfs/usr/local/lib/gogs_standin, read from gogs/gogs at each tag).

One deployment of the blueprint's compose file per release (module scope; the compose file names its containers,
so the releases take turns).  While Gogs is not installed, each bad install is one POST of the blueprint's own
first_run step and fails with Gogs' message, taken from the page as the step's error_regex takes it; Gogs stays
uninstalled.  Then a refused admin name fails a blueprint run after Gogs saved app.ini (its own order), and the
blueprint installs Gogs and its checks hold.  The tests of one release run in file order.
"""

from __future__ import annotations

import io
import re
import tarfile
import time
import uuid
from dataclasses import dataclass

import docker
import pytest
import requests
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language import expressions
from vicflow.plugins.builtin.compose import ComposeDown, ComposeUp
from vicflow.plugins.builtin.health import HealthCheck
from vicflow.plugins.builtin.http_request import HttpRequest
from vicflow.plugins.clients.dockerapi import DockerParams, connected, is_vch
from vicflow.plugins.compose.errors import ComposeError
from vicflow.plugins.errors import PermanentError
from vicflow.plugins.manager import default_registry

from tests import stepkit
from tests.helpers import free_port, run_on_threads, wait_http
from tests.testbed.prefect_stack import clean_gogs

pytestmark = pytest.mark.docker
VCH, PLAIN = "tcp://127.0.0.2:2375", "tcp://127.0.0.1:2375"
BLUEPRINT = stepkit.REPO / "blueprints" / "gogs.yaml"
RELEASES = ["0.11.19", "0.13.4"]
DB_PASSWORD, ADMIN_PASSWORD = "gogs-db-pw-7", "admin-secret-42"
PGX_LOGIN = "failed to connect to `host={host} user=gogsuser database=gogsdb`"


@dataclass
class Site:
    release: str
    url: str
    inputs: dict


def render(step_id: str, inputs: dict) -> dict:
    """A step of the shipped blueprint, its ``with`` rendered for ``inputs`` (the blueprint's defaults under them)."""
    document = bp.load(BLUEPRINT, default_registry())
    values = {**{name: spec.default for name, spec in document.inputs.items()}, **inputs}
    return expressions.render(document.step(step_id).with_, {"inputs": values})


@pytest.fixture(scope="module", params=RELEASES)
def site(request, docker_engine, docker_images):
    clean_gogs()  # the demo's gogs project would hold the container names
    port = free_port()
    inputs = {
        "docker_host": VCH,
        "gogs_image": f"vicflow-test/gogs:{request.param}",
        "postgres_image": "vicflow-test/postgres:15",
        "db_password": DB_PASSWORD,
        "admin_password": ADMIN_PASSWORD,
        "app_host": "127.0.0.2",
        "publish_ip": "127.0.0.2",
        "http_port": port,
        "ssh_port": free_port(),
    }
    stepkit.apply(ComposeUp, **render("app", inputs))
    for step_id in ("answers", "database"):  # Gogs answers, Postgres is initialised: as the blueprint waits
        stepkit.apply(HealthCheck, **render(step_id, inputs))
    yield Site(request.param, f"http://127.0.0.2:{port}", inputs)
    stepkit.apply(ComposeDown, docker_host=VCH, project="gogs", volumes=True)


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=10, allow_redirects=False)


def first_run(site: Site, **form) -> dict:
    """The blueprint's first_run step with some form fields changed (None: left out)."""
    params = render("first_run", site.inputs)
    params["form"] = {k: v for k, v in {**params["form"], **form}.items() if v is not None}
    return params


def fails_with(site: Site, message: str, **form) -> None:
    with pytest.raises(PermanentError, match=r"answered 200, expected 302: " + re.escape(message) + r"(\n|$)"):
        stepkit.apply(HttpRequest, **first_run(site, **form))


def app_ini(docker_client) -> str | None:
    """Gogs' custom/conf/app.ini on the gogsvol2 volume, or None."""
    try:
        stream, _ = docker_client.containers.get("gogsapp").get_archive("/data/gogs/conf/app.ini")
    except docker.errors.NotFound:
        return None
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        return tar.extractfile("app.ini").read().decode()


def test_before_install_every_page_sends_the_user_to_the_install_form(site):
    for path in ("/", "/user/login", "/explore/repos", "/api/v1/users/search?q=gogs"):
        response = get(site.url + path)
        assert (response.status_code, response.headers["Location"]) == (302, "/install"), path
    form = get(site.url + "/install")
    assert form.status_code == 200 and "<title>Installation - Gogs</title>" in form.text
    fields = set(re.findall(r'name="(\w+)"', form.text))
    assert {"db_type", "db_host", "db_passwd", "app_url", "admin_name", "admin_confirm_passwd"} <= fields
    assert ("db_schema" in fields) == (site.release == "0.13.4"), "the schema field came with 0.13.0"
    health = get(site.url + "/healthcheck")
    if site.release == "0.11.19":  # models.Ping on no engine: a nil pointer, macaron's recovery page
        assert health.status_code == 500 and "nil pointer dereference" in health.text
    else:
        assert (health.status_code, health.text) == (200, "* Database connection: database not available\n")
    assert get(site.url + "/no/such/page").status_code == 404


BAD_INSTALLS = {  # form fields -> Gogs' message per release (one text: the same in both)
    "wrong database password": (
        {"db_passwd": "not-the-password"},
        {
            "0.11.19": 'Database setting is not correct: pq: password authentication failed for user "gogsuser"',
            "0.13.4": "Database setting is not correct: " + PGX_LOGIN.format(host="gogsdb") + ": server error "
            '(FATAL: password authentication failed for user "gogsuser" (SQLSTATE 28P01))',
        },
    ),
    "unknown database host": (
        {"db_host": "nosuchdb:5432"},
        {
            "0.11.19": "Database setting is not correct: dial tcp: lookup nosuchdb on 127.0.0.11:53: no such host",
            "0.13.4": "Database setting is not correct: "
            + PGX_LOGIN.format(host="nosuchdb")
            + ": hostname resolving error (lookup nosuchdb on 127.0.0.11:53: no such host)",
        },
    ),
    "admin name with a space": (
        {"admin_name": "gogs admin"},
        {
            "0.11.19": "Username must be valid alpha or numeric or dash(-_) or dot characters.",
            "0.13.4": "Username must be alphanumeric or dash(-_) or dot characters.",
        },
    ),
    "admin name of 31 characters": ({"admin_name": "g" * 31}, "Username must contain at most 30 characters."),
    "admin e-mail without @": ({"admin_email": "gogsadmin.domain.sddc"}, "Admin Email must contain substring '@'."),
    "no application name": ({"app_name": ""}, "Application Name cannot be empty."),
    "a run user that is not Gogs' user": ({"run_user": "root"}, "Run user isn't the current user: root -> git"),
    "passwords that differ": (
        {"admin_confirm_passwd": "admin-secret-43"},
        "Password and confirm password are not same.",
    ),
    "no schema, and passwords that differ": (  # 0.13 added the schema: 0.11 goes on to the next check
        {"db_schema": None, "admin_confirm_passwd": "admin-secret-43"},
        {
            "0.11.19": "Password and confirm password are not same.",
            "0.13.4": "Database setting is not correct: ERROR: no schema has been selected to create in "
            "(SQLSTATE 3F000)",
        },
    ),
}


@pytest.mark.parametrize("case", BAD_INSTALLS)
def test_a_bad_install_fails_with_gogs_own_message_and_installs_nothing(site, case, docker_client):
    form, message = BAD_INSTALLS[case]
    fails_with(site, message if isinstance(message, str) else message[site.release], **form)
    assert get(site.url + "/").headers.get("Location") == "/install", "still not installed"
    assert app_ini(docker_client) is None


def test_gogs_0_11_cannot_log_in_to_a_postgres_that_asks_for_scram(site, docker_client):
    """Postgres 14+ asks for SCRAM-SHA-256 by default; Gogs 0.11's lib/pq (2016) knows cleartext and md5 only."""
    network = next(iter(docker_client.containers.get("gogsapp").attrs["NetworkSettings"]["Networks"]))
    scram = docker_client.containers.run(
        "vicflow-test/postgres:15",
        name=f"scramdb-{uuid.uuid4().hex[:6]}",
        detach=True,
        environment={
            "POSTGRES_PASSWORD": DB_PASSWORD,
            "POSTGRES_USER": "gogsuser",
            "POSTGRES_DB": "gogsdb",
            "POSTGRES_HOST_AUTH_METHOD": "scram-sha-256",
        },
        healthcheck={
            "test": ["CMD", "/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-U", "gogsuser"],
            "interval": 300_000_000,
        },
    )
    try:
        docker_client.networks.get(network).connect(scram, aliases=["scramdb"])
        stepkit.apply(HealthCheck, kind="container", container=scram.name, docker_host=PLAIN, deadline_seconds=60)
        if site.release == "0.11.19":
            message = "Database setting is not correct: pq: unknown authentication response: 10"
        else:  # pgx logs in with SCRAM and creates the tables: the next check is the one that fails
            message = "Password and confirm password are not same."
        fails_with(site, message, db_host="scramdb:5432", admin_confirm_passwd="admin-secret-43")
    finally:
        scram.remove(force=True, v=True)


def test_a_reserved_admin_name_fails_the_run_after_gogs_saved_its_settings(site, docker_client):
    summary = run_on_threads(BLUEPRINT, {**site.inputs, "admin_name": "admin"})
    assert summary["state"] == "failed"
    first = next(s for s in summary["steps"] if s["id"] == "first_run")
    refused = {
        "0.11.19": "name is reserved [name: admin]",
        "0.13.4": "name is not allowed: map[name:admin reason:reserved]",
    }[site.release]
    assert first["state"] == "failed" and f"Admin account setting is invalid: {refused}" in first["error"]
    assert "INSTALL_LOCK = true" in app_ini(docker_client), "InstallPost saves app.ini before it creates the admin"
    assert get(site.url + "/").headers.get("Location") == "/install", "but this Gogs is not installed until then"


def test_the_gogs_blueprint_installs_gogs_and_its_checks_hold(site, docker_client):
    summary = run_on_threads(BLUEPRINT, site.inputs)
    steps = {s["id"]: s for s in summary["steps"]}
    assert summary["state"] == "completed", {k: (s["state"], s["error"]) for k, s in steps.items()}
    assert steps["first_run"]["outputs"]["called"] and steps["first_run"]["outputs"]["status"] == 302
    assert steps["first_run"]["outputs"]["values"]["login_url"] == f"{site.url}/user/login"

    home = get(site.url + "/")
    footer = {"0.11.19": "© 2017 Gogs Version: 0.11.19.0609 Page: ", "0.13.4": f"© {time.gmtime().tm_year} Gogs\n"}
    assert home.status_code == 200 and footer[site.release] in home.text
    assert get(site.url + "/install").status_code == 404
    assert get(site.url + "/healthcheck").text == "* Database connection: OK\n"
    users = get(site.url + "/api/v1/users/search?q=gogs").json()
    assert [u["username"] for u in users["data"]] == ["gogsadmin"], "the admin is a row in Postgres"
    assert get(site.url + "/api/v1/users/search?q=").json() == {"data": [], "ok": True}

    again = {s["id"]: s for s in run_on_threads(BLUEPRINT, site.inputs)["steps"]}
    assert again["first_run"]["outputs"] == {"called": False, "status": 404, "values": {}}, "installed once"
    docker_client.containers.get("gogsapp").restart(timeout=5)
    assert wait_http(site.url + "/", timeout=60).status_code == 200, "still installed after a restart"


def test_the_vch_endpoint_answers_like_vic_1_1(docker_engine, docker_images, tmp_path):
    with connected(DockerParams(docker_host=VCH)) as vch, connected(DockerParams(docker_host=PLAIN)) as plain:
        assert is_vch(vch) and not is_vch(plain)
        assert vch.version()["ApiVersion"] == "1.25"
        box = vch.containers.create("vicflow-test/busybox:latest", ["sleep", "30"], name=f"vch{uuid.uuid4().hex[:6]}")
        try:
            box.start()
            with pytest.raises(
                docker.errors.APIError,
                match="vSphere Integrated Containers only supports detached exec commands at this time",
            ):
                box.exec_run("true")
        finally:
            box.remove(force=True)
    too_old = requests.get(VCH.replace("tcp://", "http://") + "/v1.18/info", timeout=5)
    assert too_old.status_code == 400 and "client version 1.18 is too old" in too_old.text

    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services:\n  dind:\n    image: vicflow-test/busybox:latest\n    privileged: true\n")
    with pytest.raises(ComposeError, match=r"docker-compose.yml:4:5: VIC 1.1 does not support 'privileged'"):
        stepkit.plan(ComposeUp, docker_host=VCH, files=[str(compose)], project="dind")
    assert stepkit.plan(ComposeUp, docker_host=PLAIN, files=[str(compose)], project="dind")[0].action == "create"
