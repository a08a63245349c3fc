"""Smoke tests proving the test bed is real: simulator over HTTPS, dockerd (plain and TLS), images, registry."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import uuid

import docker
import pytest
import requests
from vicflow.plugins.clients import certs, registry_api
from vicflow.plugins.clients.vsphere.connection import Sessions, VSphereParams, split_server
from vicflow.plugins.errors import PermanentError

from tests.helpers import free_port, run_registry, wait_http

LOG = logging.getLogger("vicflow.test")


def test_pyvmomi_logs_in_to_the_simulator_with_the_pinned_thumbprint(vcsim):
    sessions = Sessions()
    params = VSphereParams(server=vcsim.url, user=vcsim.username, password=vcsim.password, thumbprint=vcsim.thumbprint)
    si = sessions.get(params, LOG)
    content = si.RetrieveContent()
    assert content.about.apiType == "VirtualCenter"
    assert [dc.name for dc in content.rootFolder.childEntity] == ["DC0"]
    sessions.close()


def test_wrong_thumbprint_is_refused(vcsim):
    wrong = "AA:" + vcsim.thumbprint[3:]
    params = VSphereParams(server=vcsim.url, user=vcsim.username, password=vcsim.password, thumbprint=wrong)
    with pytest.raises(PermanentError, match="thumbprint mismatch .* refusing to connect"):
        Sessions().get(params, LOG)


@contextlib.contextmanager
def interceptor(target: tuple[str, int], tmp_path, passed: int):
    """A proxy on 127.0.0.1 that passes its first ``passed`` connections through untouched and answers every
    later one with a certificate of its own (a man in the middle), relaying what it decrypts to ``target``."""
    paths = certs.generate(tmp_path / "mitm", "127.0.0.1", ["127.0.0.1"], client=False)
    own = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    own.load_cert_chain(paths["server_cert"], paths["server_key"])
    upstream = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    upstream.check_hostname, upstream.verify_mode = False, ssl.CERT_NONE
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def pipe(a, b):
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for sock in (a, b):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def serve():
        accepted = 0
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(10)
            server = socket.create_connection(target, timeout=10)
            with contextlib.suppress(OSError):
                if accepted >= passed:  # intercept: terminate TLS here with our own certificate
                    client = own.wrap_socket(client, server_side=True)
                    server = upstream.wrap_socket(server)
                threading.Thread(target=pipe, args=(client, server), daemon=True).start()
                threading.Thread(target=pipe, args=(server, client), daemon=True).start()
            accepted += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("passed", [0, 1], ids=["version-discovery-intercepted", "session-intercepted"])
def test_every_connection_is_pinned_not_only_the_first(vcsim, tmp_path, passed):
    host, port = split_server(vcsim.url)
    with interceptor((host, port), tmp_path, passed) as proxy:
        params = VSphereParams(server=proxy, user=vcsim.username, password=vcsim.password, thumbprint=vcsim.thumbprint)
        sessions = Sessions()
        try:  # connection 1 reads the API version, connection 2 logs in
            with pytest.raises(PermanentError, match="thumbprint mismatch .* refusing to connect"):
                sessions.get(params, LOG)
        finally:
            sessions.close()


def test_missing_thumbprint_shows_the_one_seen_and_how_to_pin_it(vcsim):
    params = VSphereParams(server=vcsim.url, user=vcsim.username, password=vcsim.password)
    with pytest.raises(PermanentError) as info:
        Sessions().get(params, LOG)
    assert f"(thumbprint={vcsim.thumbprint})" in str(info.value)
    assert f'thumbprint: "{vcsim.thumbprint}"' in info.value.hint


def test_app_and_postgres_on_a_user_network_with_a_volume_and_a_published_port(docker_client, docker_images):
    tag = uuid.uuid4().hex[:6]
    network = docker_client.networks.create(f"smoke-{tag}", driver="bridge")
    volume = docker_client.volumes.create(f"smoke-db-{tag}")
    port = free_port()
    try:
        db = docker_client.containers.run(
            "vicflow-test/postgres:15",
            name=f"smoke-db-{tag}",
            detach=True,
            network=network.name,
            environment={
                "POSTGRES_USER": "gogsuser",
                "POSTGRES_PASSWORD": "pw-smoke",
                "POSTGRES_DB": "gogsdb",
                "PGDATA": "/var/lib/postgresql/data/data",
            },
            volumes={volume.name: {"bind": "/var/lib/postgresql/data", "mode": "rw"}},
        )
        network.disconnect(db)
        network.connect(db, aliases=["gogsdb"])
        docker_client.containers.run(
            "vicflow-test/app:1.0",
            name=f"smoke-app-{tag}",
            detach=True,
            network=network.name,
            ports={"3000/tcp": ("127.0.0.1", port)},
        )
        url = f"http://127.0.0.1:{port}"
        assert wait_http(f"{url}/", status=302, timeout=90).headers["Location"] == "/install"
        form = {
            "db_type": "PostgreSQL",
            "db_host": "gogsdb:5432",
            "db_user": "gogsuser",
            "db_passwd": "pw-smoke",
            "db_name": "gogsdb",
            "ssl_mode": "disable",
            "app_name": "Gogs",
            "repo_root_path": "/data/git/repos",
            "run_user": "git",
            "domain": "localhost",
            "http_port": "3000",
            "app_url": f"{url}/",
            "log_root_path": "/data/log",
            "admin_name": "smoke",
            "admin_passwd": "x",
            "admin_confirm_passwd": "x",
            "admin_email": "smoke@example.com",  # 0.11's isEmailUsed counts an empty address as used
        }
        deadline = time.monotonic() + 60
        while True:  # until Postgres has initialised and accepts the password
            answer = requests.post(f"{url}/install", data=form, timeout=10, allow_redirects=False)
            if answer.status_code == 302 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert (answer.status_code, answer.headers.get("Location")) == (302, f"{url}/user/login"), answer.text[-500:]
        assert "Gogs Version: 1.0" in wait_http(f"{url}/", timeout=10).text
    finally:
        for name in (f"smoke-app-{tag}", f"smoke-db-{tag}"):
            with contextlib.suppress(docker.errors.NotFound):
                docker_client.containers.get(name).remove(force=True)
        network.remove()
        volume.remove(force=True)


def test_tls_endpoint_requires_a_client_certificate(docker_engine):
    from vicflow.plugins.clients.dockerapi import DockerParams, docker_client

    assert docker_engine.client("tls").ping() is True
    with pytest.raises(PermanentError, match="requires a client certificate"):
        docker_client(DockerParams(docker_host=docker_engine.tls_url, ca=f"{docker_engine.cert_dir}/ca.pem"))
    assert docker_engine.client("plain").ping() is True


def test_registry_accepts_a_push_and_stores_schema_2(docker_client, docker_images):
    name = f"smoke-registry-{uuid.uuid4().hex[:6]}"
    container, url = run_registry(docker_client, "2.6.1-photon", name)
    try:
        wait_http(f"{url}/v2/")
        target = f"{url.removeprefix('http://')}/smoke/busybox"
        docker_client.images.get("vicflow-test/busybox:latest").tag(target, "1")
        for line in docker_client.images.push(target, tag="1", stream=True, decode=True):
            assert "error" not in line, line
        media_type, body = registry_api.manifest(url, "smoke/busybox", "1")
        assert media_type == registry_api.MANIFEST_V2
        assert body["schemaVersion"] == 2
    finally:
        container.remove(force=True)
        docker_client.images.remove(f"{target}:1")


@pytest.mark.parametrize(("tag", "accepted"), [("photon-2.6.0", False), ("2.6.1-photon", True)])
def test_foreign_layer_manifest_is_refused_by_old_and_accepted_by_new(docker_client, docker_images, tag, accepted):
    container, url = run_registry(docker_client, tag, f"smoke-{tag}-{uuid.uuid4().hex[:6]}")
    try:
        wait_http(f"{url}/v2/")
        result = registry_api.push_foreign_layer_manifest(url, "windows/nanoserver", "smoke")
        assert result.accepted is accepted, result
        if accepted:
            assert result.status == 201
        else:
            assert result.error_code == "MANIFEST_BLOB_UNKNOWN", result
    finally:
        container.remove(force=True)
