"""registry_swap on a Harbor-shaped project, with the test bed's registry tags (real dockerd)."""

from __future__ import annotations

import uuid

import pytest
from vicflow.plugins.builtin import registry_api
from vicflow.plugins.builtin.compose import ComposeDown, ComposeUp
from vicflow.plugins.builtin.registry_swap import RegistrySwap
from vicflow.plugins.step import PermanentError

from tests import stepkit
from tests.helpers import free_port, wait_http

pytestmark = pytest.mark.docker
PLAIN = "tcp://127.0.0.1:2375"

MAIN = """\
# Harbor 1.1's /etc/vmware/harbor/docker-compose.yml, trimmed to what the swap touches.
version: '2'
services:
  registry:
    image: vicflow-test/registry:photon-2.6.0   # plays vmware/registry:photon-2.6.0
    restart: always
    volumes:
      - registry-data:/var/lib/registry
    ports:
      - "127.0.0.1:{port}:5000"
    networks:
      - harbor
  ui:
    image: "vicflow-test/busybox:latest"
    command: ["sleep", "600"]
    stop_signal: SIGKILL
    depends_on: [registry]
    networks: [harbor]
networks:
  harbor: {{}}
volumes:
  registry-data: {{}}
"""
NOTARY = """\
# docker-compose.notary.yml
services:
  notary-server:
    image: vicflow-test/busybox:latest
    command: ["sleep", "600"]
    stop_signal: SIGKILL
    networks: [notary-mdb, harbor]
networks:
  notary-mdb: {}
"""


@pytest.fixture
def harbor(tmp_path, docker_engine, docker_images):
    folder = tmp_path / "harbor"
    folder.mkdir()
    port = free_port()
    (folder / "docker-compose.yml").write_text(MAIN.format(port=port))
    (folder / "docker-compose.notary.yml").write_text(NOTARY)
    project = f"harbor{uuid.uuid4().hex[:6]}"
    files = [str(folder / "docker-compose.notary.yml"), str(folder / "docker-compose.yml")]
    stepkit.apply(ComposeUp, docker_host=PLAIN, files=files, project=project)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v2/")
    params = dict(
        docker_host=PLAIN,
        compose_files=files,
        project=project,
        registry_url=url,
        new_image="vicflow-test/registry:2.6.1-photon",
        verify_timeout_seconds=20,
    )
    yield params, folder
    stepkit.apply(ComposeDown, docker_host=PLAIN, project=project, volumes=True)


def registry_container(client, project):
    found = client.containers.list(
        all=True, filters={"label": [f"com.docker.compose.project={project}", "com.docker.compose.service=registry"]}
    )
    return found[0]


def test_swap_makes_the_seed_push_work_and_keeps_data_and_comments(harbor, docker_client):
    params, folder = harbor
    url = params["registry_url"]
    before_text = (folder / "docker-compose.yml").read_text()
    assert (
        registry_api.push_foreign_layer_manifest(url, "windows/nanoserver", "before").error_code
        == "MANIFEST_BLOB_UNKNOWN"
    )
    target = f"{url.removeprefix('http://')}/library/busybox"
    docker_client.images.get("vicflow-test/busybox:latest").tag(target, "kept")
    for line in docker_client.images.push(target, tag="kept", stream=True, decode=True):
        assert "error" not in line, line

    out, ctx = stepkit.apply(RegistrySwap, **params)
    assert (out["old_image"], out["new_image"]) == (
        "vicflow-test/registry:photon-2.6.0",
        "vicflow-test/registry:2.6.1-photon",
    )
    assert out["verification"]["foreign_layer_push"] == 201
    after_text = (folder / "docker-compose.yml").read_text()
    assert after_text == before_text.replace("registry:photon-2.6.0", "registry:2.6.1-photon", 1)
    assert "# plays vmware/registry:photon-2.6.0" in after_text, "comments are kept byte for byte"
    assert registry_container(docker_client, params["project"]).attrs["Config"]["Image"] == params["new_image"]
    assert registry_api.push_foreign_layer_manifest(url, "windows/nanoserver", "after").status == 201
    media_type, _ = registry_api.manifest(url, "library/busybox", "kept")
    assert media_type == registry_api.MANIFEST_V2, "an image pushed before the swap is still there"
    docker_client.images.remove(f"{target}:kept")

    container_id = registry_container(docker_client, params["project"]).id
    again, ctx = stepkit.apply(RegistrySwap, **params)
    assert ctx.changed is False and again["verification"]["foreign_layer_push"] == 201
    assert registry_container(docker_client, params["project"]).id == container_id
    assert (folder / "docker-compose.yml").read_text() == after_text


@pytest.mark.parametrize("broken", ["broken-exits", "broken-silent"])
def test_a_new_image_that_fails_verification_is_rolled_back(harbor, docker_client, broken):
    params, folder = harbor
    before_text = (folder / "docker-compose.yml").read_text()
    with pytest.raises(
        PermanentError,
        match=r"failed: .*rolled back to vicflow-test/registry:photon-2.6.0, and the "
        r"registry answers again",
    ):
        stepkit.apply(
            RegistrySwap, **{**params, "new_image": f"vicflow-test/registry:{broken}", "verify_timeout_seconds": 8}
        )
    assert (folder / "docker-compose.yml").read_text() == before_text
    container = registry_container(docker_client, params["project"])
    assert container.attrs["Config"]["Image"] == "vicflow-test/registry:photon-2.6.0"
    assert container.status == "running"
    wait_http(f"{params['registry_url']}/v2/", timeout=20)


def test_missing_image_fails_before_any_change(harbor, docker_client):
    params, folder = harbor
    before_text = (folder / "docker-compose.yml").read_text()
    before_id = registry_container(docker_client, params["project"]).id
    with pytest.raises(PermanentError, match="cannot be pulled: .*nothing was changed"):
        stepkit.apply(RegistrySwap, **{**params, "new_image": "127.0.0.1:1/vmware/registry:2.6.1-photon"})
    assert (folder / "docker-compose.yml").read_text() == before_text
    assert registry_container(docker_client, params["project"]).id == before_id
