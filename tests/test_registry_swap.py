"""registry_swap on Harbor 1.1.1 as the VIC appliance runs it: Harbor's own compose files, token auth behind nginx.

The Harbor stand-in (tests/testbed/harbor.py) starts once for the module from photon-2.6.0.  The tests that
must leave it untouched run first; the successful swap runs last.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import docker
import pytest
import requests
from vicflow.plugins.builtin.compose import ComposeDown, ComposeUp
from vicflow.plugins.builtin.registry_swap import RegistrySwap
from vicflow.plugins.clients import registry_api
from vicflow.plugins.errors import ConnectionLost, PermanentError, TransientError

from tests import stepkit
from tests.testbed import harbor as harbor_bed
from tests.testbed.prefect_db import BUSY_MACHINE, copy_to

pytestmark = pytest.mark.docker
OLD, NEW = "vicflow-test/registry:photon-2.6.0", "vicflow-test/registry:2.6.1-photon"
# goharbor/harbor v1.1.1 (commit 7b0646760cc54c77c8394d0d8879c98310684835): `git rev-parse v1.1.1:<path>`.
# tests/testbed/harbor/ holds these files as <path> minus "make/"; the test bed renders them, it never edits them.
HARBOR_TAG = "v1.1.1"
HARBOR_BLOBS = {
    "make/docker-compose.tpl": "bf59cd84c532a1d40b389a7e9daadb4a49b6ba6b",
    "make/docker-compose.notary.yml": "bd62b07f4ea031e14db5f15fab4ac491d524b5ab",
    "make/common/templates/adminserver/env": "190acac5a6579559ee00741c4ffaff00c3c815cb",
    "make/common/templates/db/env": "31cb6bdecf0dc968e8b0ad86e2771855ebbe307a",
    "make/common/templates/jobservice/app.conf": "21439a8e1691bf6730fbdead1ce41090df537c30",
    "make/common/templates/jobservice/env": "c5e37fc0f1ecd8ec8ea3f85f012ff4912d4d0615",
    "make/common/templates/nginx/nginx.https.conf": "131aec466cdebea19dda554822ff6d0c6fe67b34",
    "make/common/templates/nginx/notary.server.conf": "566ca9f6f43c1dfe4db41f62827810ed50f6503c",
    "make/common/templates/nginx/notary.upstream.conf": "ba4d60d4c90b7d42769447b736f2ff9ca379d978",
    "make/common/templates/notary/server-config.json": "dc8ffba31c995dc5bd868b94632af42e2dc96c8b",
    "make/common/templates/notary/signer-config.json": "80c095488125ae7ab935961944afbb949a6ca7d0",
    "make/common/templates/notary/signer_env": "23a1d679d30374f6c0b09d08b3e43af9ca0399e1",
    "make/common/templates/registry/config.yml": "9049c6fa94d89c425a4be4f287d31f9bc7032845",
    "make/common/templates/ui/app.conf": "8e8f199b7ad4b607fed2cd942d353af158611411",
    "make/common/templates/ui/env": "1f457e2570240c007105e6fc8103e37830d659a9",
}
PRIVATE = "vicflow-private"  # a project created through Harbor's API, not public


@pytest.fixture(scope="module")
def harbor(docker_engine, docker_images):
    bed = harbor_bed.start(docker_engine)
    yield bed
    harbor_bed.stop(docker_engine)


@pytest.fixture(scope="module")
def private_project(harbor):
    """A private project, created as a user would: POST /api/projects (src/ui/api/project.go)."""
    url, auth = f"{harbor.url}/api/projects", (harbor.user, harbor.password)
    created = requests.post(url, json={"project_name": PRIVATE, "public": 0}, auth=auth, verify=harbor.ca, timeout=10)
    assert (created.status_code, created.headers.get("Location")) == (201, "/api/projects/2")
    again = requests.post(url, json={"project_name": PRIVATE, "public": 0}, auth=auth, verify=harbor.ca, timeout=10)
    assert (again.status_code, again.text) == (409, "\n")
    return PRIVATE


def swap_params(harbor, **overrides):
    return {
        "docker_host": "tcp://127.0.0.1:2375",
        "compose_files": harbor.files,
        "project": harbor.project,
        "new_image": NEW,
        "registry_url": harbor.url,
        "registry_ca": harbor.ca,
        "registry_user": harbor.user,
        "registry_password": harbor.password,
        "verify_timeout_seconds": 30,
        **overrides,
    }


def containers(docker_client, project="harbor"):
    found = docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    return {c.labels["com.docker.compose.service"]: c for c in found}


def push_small_image(registry: registry_api.Registry, repo: str, tag: str) -> bytes:
    """A real image (one layer) pushed with the token flow, as `docker push` does it."""
    layer = f"layer of {repo}:{tag} {time.time()}".encode()
    layer_digest = registry.upload_blob(repo, layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
        }
    ).encode()
    config_digest = registry.upload_blob(repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": registry_api.MANIFEST_V2,
        "config": {"mediaType": registry_api.CONFIG_V1, "size": len(config), "digest": config_digest},
        "layers": [{"mediaType": registry_api.LAYER, "size": len(layer), "digest": layer_digest}],
    }
    assert registry.put_manifest(repo, tag, manifest).accepted
    return layer


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_harbors_files_are_v1_1_1s_own():
    found = {path: git_blob_id(harbor_bed.upstream_text(path).encode()) for path in HARBOR_BLOBS}
    assert found == HARBOR_BLOBS, f"tests/testbed/harbor/ is no longer goharbor/harbor {HARBOR_TAG}'s text"


def changed_only_as_the_test_bed_may(before: str, after: str, root: Path) -> bool:
    """An image name, the host side of a volume (into the state directory), or a port bound to 127.0.0.1."""
    before, after = before.strip(), after.strip()
    if before.startswith("image: vmware/") and after.startswith("image: vicflow-test/"):
        return True
    if before.startswith("- ") and after.startswith(f"- {root}/"):  # volumes: only the host path moves
        source, _, target = before[2:].partition(":")
        moved = f"{root}/log/" if source == "/var/log/harbor/" else f"{root}{source}"
        return source.startswith(("/data", "/var/log/harbor/")) and after == f"- {moved}:{target}"
    host, _, container = before[2:].partition(":")  # ports: "- 443:443" -> "- 127.0.0.1:18443:443"
    return host.isdigit() and after.startswith("- 127.0.0.1:") and after.endswith(f":{container}")


def test_the_stand_in_runs_harbors_own_files_changed_only_in_images_paths_and_host_ports(harbor):
    # the Makefile's modify_composefile (sed s/__version__/$(VERSIONTAG)/g; VERSIONTAG is git describe: v1.1.1)
    made = harbor_bed.upstream_text("make/docker-compose.tpl").replace("__version__", HARBOR_TAG)
    notary = harbor_bed.upstream_text("make/docker-compose.notary.yml")
    for upstream, deployed in ((made, harbor.files[1]), (notary, harbor.files[0])):
        lines = Path(deployed).read_text().splitlines()
        assert len(lines) == len(upstream.splitlines())
        changed = [(b, a) for b, a in zip(upstream.splitlines(), lines, strict=True) if b != a]
        for before, after in changed:
            assert changed_only_as_the_test_bed_may(before, after, harbor.root), f"{deployed}: {before!r} -> {after!r}"
        assert changed, "the images at least are the stand-ins"


def test_the_seed_error_on_photon_2_6_0_through_the_proxy_with_a_token(harbor):
    registry = registry_api.Registry(harbor.url, harbor.user, harbor.password, harbor.ca)
    anonymous = registry_api.Registry(harbor.url, ca=harbor.ca)
    assert anonymous.ping() == 401 and anonymous.challenge()["realm"] == f"{harbor.url}/service/token"
    assert anonymous.challenge()["service"] == "harbor-registry"
    result = registry.push_foreign_layer_manifest("library/nanoserver", "seed")
    assert result.error_code == "MANIFEST_BLOB_UNKNOWN" and "blob unknown to registry" in result.detail
    # distribution 2.8's refusal leads with UNKNOWN (HTTP 500); the seed's client saw a 4xx whose errors were all
    # MANIFEST_BLOB_UNKNOWN: the symptom is reproduced, not its mechanism (docs/decisions.md)
    assert result.status == 500


def token_claims(answer: requests.Response) -> dict:
    payload = answer.json()["token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_the_token_service_answers_as_harbor_1_1_1s(harbor, private_project):
    """src/ui/service/token/{token,creator,authutils}.go at v1.1.1, asked through nginx's /service/ route."""
    realm, admin = f"{harbor.url}/service/token", (harbor.user, harbor.password)

    def ask(*scopes: str, auth=None, service="harbor-registry") -> requests.Response:
        params = [("service", service), *(("scope", scope) for scope in scopes)]
        return requests.get(realm, params=params, auth=auth, verify=harbor.ca, timeout=10)

    unknown = ask(service="docker-hub")
    assert (unknown.status_code, unknown.text) == (400, "Unable to handle service: docker-hub")
    nobody = ask()  # neither credentials nor scope
    assert (nobody.status_code, nobody.text) == (401, "")

    # only the first scope parameter is read; an admin gets push, * and pull on a project that exists, whatever
    # was asked, and nothing on one that does not
    answer = ask("repository:library/box:pull", f"repository:{private_project}/box:pull", auth=admin)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json; charset=utf-8"
    claims = token_claims(answer)
    assert (claims["iss"], claims["sub"], claims["aud"]) == ("harbor-token-issuer", "admin", "harbor-registry")
    assert claims["access"] == [{"type": "repository", "name": "library/box", "actions": ["push", "*", "pull"]}]
    assert answer.json()["expires_in"] == 1800  # harbor.cfg's token_expiration: 30 minutes
    missing = token_claims(ask("repository:noproject/box:push", auth=admin))
    assert missing["access"] == [{"type": "repository", "name": "noproject/box", "actions": []}]

    # anonymous (here: wrong credentials and a scope; one scope parameter may hold several, space-separated):
    # pull on a public project, nothing on a private one
    scopes = f"repository:library/box:pull,push repository:{private_project}/box:pull"
    anonymous = ask(scopes, auth=(harbor.user, "wrong"))
    claims = token_claims(anonymous)
    assert anonymous.status_code == 200 and claims["sub"] == ""
    assert [item["actions"] for item in claims["access"]] == [["pull"], []]


def handshake(port: int, version: ssl.TLSVersion, ca: str) -> str:
    """The TLS version agreed when the client offers only ``version`` (SECLEVEL=0: OpenSSL 3 offers TLS 1.1 then)."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = context.maximum_version = version
    if version < ssl.TLSVersion.TLSv1_3:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())


def test_nginx_routes_and_tls_versions_as_harbor_1_1_1s(harbor):
    """make/common/templates/nginx/nginx.https.conf and notary.server.conf at v1.1.1, rendered by prepare."""
    get = {"verify": harbor.ca, "timeout": 10, "allow_redirects": False}
    portal = requests.get(f"{harbor.url}/", **get)  # / and /service/ go to ui:80
    assert portal.status_code == 200 and "<title>Harbor</title>" in portal.text
    assert requests.get(f"{harbor.url}/service/token?service=x", **get).text == "Unable to handle service: x"
    assert requests.get(f"{harbor.url}/v2/", **get).headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert requests.get(f"{harbor.url}/v1/", **get).status_code == 404
    assert requests.post(f"{harbor.url}/service/notifications", data="{}", **get).status_code == 404  # ui only
    redirect = requests.get(f"http://127.0.0.1:{harbor_bed.HTTP_PORT}/v2/?a=1", **get)  # $host has no port
    assert (redirect.status_code, redirect.headers["Location"]) == (301, "https://127.0.0.1/v2/?a=1")

    assert ssl.HAS_TLSv1_1, "this Python's OpenSSL cannot offer TLS 1.1, so the test cannot ask nginx for it"
    versions = (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_2)
    assert [handshake(harbor_bed.HTTPS_PORT, v, harbor.ca) for v in versions] == ["TLSv1.1", "TLSv1.2"]
    for refused in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_3):
        with pytest.raises(ssl.SSLError):
            handshake(harbor_bed.HTTPS_PORT, refused, harbor.ca)
    assert handshake(harbor_bed.NOTARY_PORT, ssl.TLSVersion.TLSv1_1, harbor.ca) == "TLSv1.1"  # notary's 4443


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"registry_password": "wrong"},
            r"pre-flight: the token service .*/service/token refused the credentials "
            r"of user admin \(HTTP 401\); nothing was changed",
        ),
        (  # not Latin-1: sent as UTF-8 bytes, as docker's Go client does (requests alone raised UnicodeEncodeError)
            {"registry_password": "wrong-€-密码"},
            r"pre-flight: the token service .*/service/token refused the credentials "
            r"of user admin \(HTTP 401\); nothing was changed",
        ),
        (
            {"registry_ca": "WRONG_CA"},
            r"pre-flight: TLS verification of https://127.0.0.1:\d+ failed with the CA "
            r".*: \[SSL: CERTIFICATE_VERIFY_FAILED\].*; nothing was changed",
        ),
        ({"registry_ca": None}, r"pre-flight: TLS verification .* failed with the system's CAs"),
        (
            {"verify_repository": "noproject/check"},
            r"pre-flight: .*refused the token for "
            r"'repository:noproject/check:pull,push' \(insufficient_scope\)",
        ),
    ],
    ids=["wrong-password", "wrong-password-utf8", "wrong-ca", "no-ca", "project-missing"],
)
def test_preflight_failures_touch_nothing(harbor, docker_client, tmp_path, overrides, message):
    if overrides.get("registry_ca") == "WRONG_CA":
        from vicflow.plugins.clients import certs

        overrides["registry_ca"] = certs.generate(tmp_path / "other", "other", ["127.0.0.1"], client=False)["ca"]
    before_text = Path(harbor.files[1]).read_text()
    before = {s: c.id for s, c in containers(docker_client).items()}
    with pytest.raises(PermanentError, match=message):
        stepkit.apply(RegistrySwap, **swap_params(harbor, **overrides))
    assert Path(harbor.files[1]).read_text() == before_text
    after = containers(docker_client)
    assert {s: c.id for s, c in after.items()} == before, "no container was touched"
    assert after["registry"].attrs["Config"]["Image"] == OLD and after["registry"].status == "running"


@pytest.mark.parametrize(("status", "unavailable"), [(502, True), (503, True), (504, True), (500, False), (403, False)])
def test_harbors_nginx_without_its_upstream_is_unavailable_not_a_refusal(status, unavailable):
    """nginx's 502/503/504 mean the service behind it is down or starting; any other error is the registry's own."""
    response = requests.Response()
    response.status_code, response._content = status, b"<html>nginx</html>"
    with pytest.raises(registry_api.RegistryError) as raised:
        registry_api._expect(response, 202, "an upload to library/check")
    assert isinstance(raised.value, registry_api.RegistryUnavailable) is unavailable


@contextlib.contextmanager
def not_listening(container, port: int):
    """``container`` runs, but a connection to its ``port`` is refused, as while its server has not bound it yet:
    an iptables rule in the container's network namespace, removed afterwards."""
    pid = str(container.attrs["State"]["Pid"])
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"]
    subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-I", *rule], check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["nsenter", "-t", pid, "-n", "iptables", "-D", *rule], check=True, timeout=30)


def test_a_token_service_still_starting_is_worth_another_try_and_touches_nothing(harbor, docker_client):
    """After its engine restarts, Harbor's ui (the token service) may come back after the registry: nginx then
    answers 502 for /service/token (nginx.https.conf proxies it to ui:80). That is a retry, not a refusal.

    The ui container runs but does not take connections yet (a stopped one the step would start first, and the
    test would then race the ui's start)."""
    before_text = Path(harbor.files[1]).read_text()
    ui = containers(docker_client)["ui"]
    with not_listening(ui, 80):
        with pytest.raises(TransientError, match=r"pre-flight: the token service .*/service/token answered HTTP 502"):
            stepkit.apply(RegistrySwap, **swap_params(harbor))
        assert Path(harbor.files[1]).read_text() == before_text
        assert containers(docker_client)["registry"].attrs["Config"]["Image"] == OLD
    registry = registry_api.Registry(harbor.url, harbor.user, harbor.password, harbor.ca, False, 5)
    deadline = time.monotonic() + 90
    while True:  # the next tests need the token service back
        try:
            registry.login()
            break
        except (registry_api.RegistryUnavailable, ConnectionLost):
            assert time.monotonic() < deadline, "Harbor's ui did not come back within 90 s"
            time.sleep(0.5)


@pytest.fixture
def engine_trusts_harbor(harbor):
    """The engine trusts the appliance CA for Harbor's host, as `docker login` users set it up."""
    folder = Path("/etc/docker/certs.d") / harbor.url.removeprefix("https://")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(harbor.ca, folder / "ca.crt")
    yield harbor.url.removeprefix("https://")
    shutil.rmtree(folder, ignore_errors=True)


def test_compose_up_pulls_from_a_private_project_with_registry_auth(
    harbor, private_project, engine_trusts_harbor, docker_client, tmp_path
):
    image = f"{engine_trusts_harbor}/{private_project}/box"
    docker_client.images.get("vicflow-test/busybox:latest").tag(image, "1")
    auth = {"username": harbor.user, "password": harbor.password}
    for line in docker_client.images.push(image, tag="1", stream=True, decode=True, auth_config=auth):
        assert "error" not in line, line
    docker_client.images.remove(f"{image}:1")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        f"services:\n  box:\n    image: {image}:1\n    command: [sleep, '60']\n    stop_signal: SIGKILL\n"
    )
    params = {"docker_host": "tcp://127.0.0.1:2375", "files": [str(compose)], "project": "privatebox"}
    with pytest.raises(PermanentError, match=r"cannot be pulled: .*\n  hint: give registry_auth"):
        stepkit.apply(ComposeUp, **params)
    try:
        with pytest.raises(PermanentError, match=r"cannot be pulled"):
            stepkit.apply(ComposeUp, **params, registry_auth={**auth, "password": "wrong"})
        out, _ = stepkit.apply(ComposeUp, **params, registry_auth={**auth, "registry": engine_trusts_harbor})
        assert out["created"] == ["box"] and out["containers"][0]["state"] == "running"
    finally:
        stepkit.apply(ComposeDown, docker_host="tcp://127.0.0.1:2375", project="privatebox")
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(f"{image}:1")


def test_a_new_image_that_breaks_the_registry_rolls_back_by_itself(harbor, docker_client):
    before_text = Path(harbor.files[1]).read_text()
    with pytest.raises(PermanentError, match=rf"failed: .*rolled back to {OLD}, and the registry answers again"):
        stepkit.apply(
            RegistrySwap,
            **swap_params(harbor, new_image="vicflow-test/registry:broken-exits", verify_timeout_seconds=10),
        )
    assert Path(harbor.files[1]).read_text() == before_text
    registry = containers(docker_client)["registry"]
    assert registry.attrs["Config"]["Image"] == OLD and registry.status == "running"
    assert registry_api.Registry(harbor.url, ca=harbor.ca).ping() == 401


def test_a_new_image_that_answers_but_refuses_pushes_rolls_back_by_itself(harbor, docker_client):
    """/v2/ answers (the registry is up), but distribution's read-only mode refuses the verification push."""
    before_text = Path(harbor.files[1]).read_text()
    with pytest.raises(PermanentError, match=r"verification push: .*405.*rolled back to " + OLD) as failed:
        stepkit.apply(RegistrySwap, **swap_params(harbor, new_image="vicflow-test/registry:2.6.1-readonly"))
    assert "and the registry answers again" in str(failed.value)
    assert Path(harbor.files[1]).read_text() == before_text
    registry = containers(docker_client)["registry"]
    assert registry.attrs["Config"]["Image"] == OLD and registry.status == "running"
    assert registry_api.Registry(harbor.url, ca=harbor.ca).ping() == 401


def test_swap_as_the_seed_does_it_keeps_images_logs_and_notifications(harbor, docker_client):
    registry = registry_api.Registry(harbor.url, harbor.user, harbor.password, harbor.ca)
    layer = push_small_image(registry, "library/kept", "before-swap")
    before_text = Path(harbor.files[1]).read_text()

    out, ctx = stepkit.apply(RegistrySwap, **swap_params(harbor))
    assert (out["old_image"], out["new_image"]) == (OLD, NEW) and ctx.changed
    assert out["verification"] == {"container_image": NEW, "api_status": 401, "foreign_layer_push": 201}
    assert Path(harbor.files[1]).read_text() == before_text.replace("registry:photon-2.6.0", "registry:2.6.1-photon", 1)
    running = containers(docker_client)
    assert running["registry"].attrs["Config"]["Image"] == NEW
    assert all(c.status == "running" for c in running.values()), {s: c.status for s, c in running.items()}

    after = registry_api.Registry(harbor.url, harbor.user, harbor.password, harbor.ca)
    media_type, manifest = after.manifest("library/kept", "before-swap")
    assert media_type == registry_api.MANIFEST_V2, "an image pushed before the swap is still pulled after it"
    assert after.blob("library/kept", manifest["layers"][0]["digest"]) == layer
    assert after.push_foreign_layer_manifest("library/nanoserver", "after").status == 201

    # Harbor's syslog: every service's logging driver writes to harbor-log (<date>/<service>.log); the ui got the
    # registry's events (src/ui/service/notification.go logs each one it receives)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        registry_log, ui_log = harbor.log("registry"), harbor.log("ui")
        if (
            "----target: library/nanoserver:after" in ui_log
            and "/v2/library/nanoserver/manifests/after" in registry_log
        ):
            break
        time.sleep(0.5)
    assert "/v2/library/nanoserver/manifests/after" in registry_log
    assert "----target: library/nanoserver:after" in ui_log

    ids = {s: c.id for s, c in running.items()}
    again, ctx = stepkit.apply(RegistrySwap, **swap_params(harbor))
    assert ctx.changed is False and again["verification"]["foreign_layer_push"] == 201
    assert {s: c.id for s, c in containers(docker_client).items()} == ids, "a second run changes nothing"


def test_registry_url_defaults_to_harbors_public_https_url():
    from vicflow.plugins.builtin.registry_swap import RegistrySwapParams, registry_url

    assert registry_url(RegistrySwapParams(docker_host="unix:///var/run/docker.sock")) == "https://127.0.0.1"
    assert registry_url(RegistrySwapParams(docker_host="tcp://10.0.0.7:2376")) == "https://10.0.0.7"
    assert registry_url(RegistrySwapParams(registry_url="https://harbor.example/")) == "https://harbor.example"


def test_the_swap_through_the_cli_leaves_no_credential_in_clear(harbor, tmp_path):
    """The registry password reaches Harbor's token service and nothing else the run leaves behind."""
    import os
    import subprocess
    import sys

    from tests.reliability.test_secret_scan import forms, hits

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VICFLOW_"))},
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **BUSY_MACHINE,
        "VICFLOW_STATE_DIR": str(tmp_path / "state"),
        "VICFLOW_SECRET_HARBOR_ADMIN": harbor.password,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    sets = {**{k: v for k, v in swap_params(harbor).items() if k not in ("compose_files", "verify_timeout_seconds")},
            "compose_files": json.dumps(harbor.files), "registry_password": "${{ secrets.harbor_admin }}"}  # fmt: skip
    command = [sys.executable, "-m", "vicflow.flows.cli.main", "run", "harbor-registry-swap", "--output", "json"]
    for name, value in sets.items():
        command += ["--set", f"{name}={value}"]
    copy_to(tmp_path / "prefect-home" / "prefect.db")  # the temporary server's database, already migrated
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["steps"][0]["outputs"]["verification"]["foreign_layer_push"] == 201
    assert not any(form.decode() in result.stdout + result.stderr for form in forms(harbor.password))
    assert not hits(tmp_path, [harbor.password])
