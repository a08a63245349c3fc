"""registry_swap on Harbor 1.1 as the VIC appliance runs it: Harbor's own compose files, token auth behind nginx.

The Harbor stand-in (tests/testbed/harbor.py) starts once for the module from photon-2.6.0.  The tests that
must leave it untouched run first; the successful swap runs last.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from pathlib import Path

import docker
import pytest
from vicflow.plugins.builtin.compose import ComposeDown, ComposeUp
from vicflow.plugins.builtin.registry_swap import RegistrySwap
from vicflow.plugins.clients import registry_api
from vicflow.plugins.step import PermanentError

from tests import stepkit
from tests.testbed import harbor as harbor_bed
from tests.testbed.prefect_db import BUSY_MACHINE, copy_to

pytestmark = pytest.mark.docker
OLD, NEW = "vicflow-test/registry:photon-2.6.0", "vicflow-test/registry:2.6.1-photon"


@pytest.fixture(scope="module")
def harbor(docker_engine, docker_images):
    bed = harbor_bed.start(docker_engine)
    yield bed
    harbor_bed.stop(docker_engine)


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


def test_the_stand_in_runs_harbors_own_files_changed_only_in_images_paths_and_host_ports(harbor):
    for name, deployed in (("docker-compose.tpl", harbor.files[1]), ("docker-compose.notary.yml", harbor.files[0])):
        upstream = (harbor_bed.UPSTREAM / name).read_text().splitlines()
        lines = Path(deployed).read_text().splitlines()
        assert len(upstream) == len(lines)
        for before, after in zip(upstream, lines, strict=True):
            if before != after:
                assert before.strip().startswith(
                    ("image:", "- /data", "- /var/log/harbor/", "- 80:80", "- 443:443", "- 1514:514")
                ), f"{name}: {before!r} was changed"


def test_the_seed_error_on_photon_2_6_0_through_the_proxy_with_a_token(harbor):
    registry = registry_api.Registry(harbor.url, harbor.user, harbor.password, harbor.ca)
    anonymous = registry_api.Registry(harbor.url, ca=harbor.ca)
    assert anonymous.ping() == 401 and anonymous.challenge()["realm"] == f"{harbor.url}/service/token"
    assert anonymous.challenge()["service"] == "harbor-registry"
    result = registry.push_foreign_layer_manifest("library/nanoserver", "seed")
    assert result.error_code == "MANIFEST_BLOB_UNKNOWN" and "blob unknown to registry" in result.detail


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"registry_password": "wrong"},
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
    ids=["wrong-password", "wrong-ca", "no-ca", "project-missing"],
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


@pytest.fixture
def engine_trusts_harbor(harbor):
    """The engine trusts the appliance CA for Harbor's host, as `docker login` users set it up."""
    folder = Path("/etc/docker/certs.d") / harbor.url.removeprefix("https://")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(harbor.ca, folder / "ca.crt")
    yield harbor.url.removeprefix("https://")
    shutil.rmtree(folder, ignore_errors=True)


def test_compose_up_pulls_from_a_private_project_with_registry_auth(
    harbor, engine_trusts_harbor, docker_client, tmp_path
):
    image = f"{engine_trusts_harbor}/library/private-box"
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

    # Harbor's syslog: every service's logging driver writes to harbor-log; the ui got the registry's events
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        registry_log = (harbor.log_dir / "registry.log").read_text()
        ui_log = (harbor.log_dir / "ui.log").read_text()
        if (
            "notification: push library/nanoserver:after" in ui_log
            and "/v2/library/nanoserver/manifests/after" in registry_log
        ):
            break
        time.sleep(0.5)
    assert "/v2/library/nanoserver/manifests/after" in registry_log
    assert "notification: push library/nanoserver:after" in ui_log

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
    command = [sys.executable, "-m", "vicflow.flows.cli", "run", "harbor-registry-swap", "--output", "json"]
    for name, value in sets.items():
        command += ["--set", f"{name}={value}"]
    copy_to(tmp_path / "prefect-home" / "prefect.db")  # the temporary server's database, already migrated
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["steps"][0]["outputs"]["verification"]["foreign_layer_push"] == 201
    assert not any(form.decode() in result.stdout + result.stderr for form in forms(harbor.password))
    assert not hits(tmp_path, [harbor.password])
