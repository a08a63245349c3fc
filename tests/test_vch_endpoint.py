"""The test bed's VCH endpoint answers as VIC 1.1.1's own code does (tests/testbed/vchproxy/).

Each expectation is quoted from vmware/vic at tag v1.1.1, lib/apiservers/engine/backends/ unless named
otherwise; tests/README.md tables them. Everything runs against the endpoint in front of the test bed's dockerd
(``dockerd.VCH``), plus endpoints of the tests' own for a VCH configured otherwise and for TLS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid

import docker
import pytest
import requests
from vicflow.plugins.clients.dockerapi import DockerParams, connected, exec_detached

from tests.helpers import free_port
from tests.testbed import dockerd
from tests.testbed.vchproxy.config import VCHConfig, write

pytestmark = pytest.mark.docker
PRODUCT = "vSphere Integrated Containers"
BASE = f"http://{dockerd.VCH_IP}:2375"
BUSYBOX = "vicflow-test/busybox:latest"


@pytest.fixture
def vch(docker_engine, docker_images):
    with connected(DockerParams(docker_host=dockerd.VCH)) as client:
        yield client


@pytest.fixture
def names(docker_engine):
    """Unique names; every container and volume made under them is removed afterwards."""
    made: list[str] = []

    def name(prefix: str = "vch") -> str:
        made.append(f"{prefix}-{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield name
    client = docker_engine.client()
    for item in made:  # containers first: a volume in use cannot go
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(item).remove(force=True, v=True)
    for item in made:
        with contextlib.suppress(docker.errors.NotFound):
            client.volumes.get(item).remove(force=True)
    client.close()


def running(vch, names, **kwargs):
    return vch.containers.run(BUSYBOX, ["sleep", "600"], name=names(), detach=True, **kwargs)


def vic_error(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["message"]


# ------------------------------------------------------------------------------------------- system.go


def test_info_is_vics_and_passes_vic_machines_check(vch):
    info = vch.info()
    driver = f"{PRODUCT} v1.1.1-10711-56a309f Backend Engine"
    assert info["Driver"] == driver and info["ID"] == PRODUCT
    # lib/install/management/appliance.go isPortLayerRunning: the row named after the driver says RUNNING
    assert [status for name, status in info["SystemStatus"] if name == info["Driver"]] == ["RUNNING"]
    rows = dict(info["SystemStatus"])
    assert {" VCH CPU limit", " VCH memory limit", " VMware Product", " VMware OS", " VMware OS version"} <= set(rows)
    assert "default" in rows["VolumeStores"].split(), "the stores of the VCH booted last at this IP; all have default"
    assert info["OperatingSystem"] == rows[" VMware OS"] == "linux-x64", "the vSphere host's OS, not the appliance's"
    assert rows[" VMware Product"] == "VMware vCenter Server"
    assert info["Plugins"]["Volume"] == ["vsphere"], "local is an alias of vsphere, not listed"
    assert info["ServerVersion"] == "v1.1.1-10711-56a309f"


def test_version_has_no_v_is_experimental_and_has_no_kernel(vch):
    version = vch.version()
    assert (version["Version"], version["ApiVersion"], version["MinAPIVersion"]) == ("1.1.1", "1.25", "1.19")
    assert version["Experimental"] is True and version["KernelVersion"] == "-"
    answer = requests.get(f"{BASE}/v1.25/version", timeout=10)
    assert answer.headers["Server"] == "Docker/1.25 (linux)" and answer.headers["Api-Version"] == "1.25"


def test_a_client_too_old_is_refused_in_plain_text_and_a_newer_one_is_served(vch):
    old = requests.get(f"{BASE}/v1.18/version", timeout=10)
    assert old.status_code == 400 and old.headers["Content-Type"].startswith("text/plain")
    assert old.text.strip() == (
        "client version 1.18 is too old. Minimum supported API version is 1.19, please upgrade your client to a "
        "newer version"
    )
    newer = requests.get(f"{BASE}/v1.41/info", timeout=10)  # the vendored middleware has no "newer than" check
    assert newer.status_code == 200 and newer.json()["ID"] == PRODUCT


# ------------------------------------------------------------------------------------------- refusals

REFUSALS = [  # (method, path, VIC's words), container.go unless the comment says otherwise
    ("GET", "/containers/{id}/archive?path=/etc", "does not yet implement ContainerArchivePath"),
    ("PUT", "/containers/{id}/archive?path=/tmp", "does not yet implement ContainerExtractToDir"),
    ("GET", "/containers/{id}/export", "does not yet implement ContainerExport"),
    ("POST", "/containers/{id}/pause", "does not yet implement ContainerPause"),
    ("POST", "/containers/{id}/unpause", "does not yet implement ContainerUnpause"),
    ("POST", "/containers/{id}/update", "does not yet implement ontainerUpdate"),  # sic
    ("GET", "/containers/{id}/changes", "does not yet implement ontainerChanges"),  # sic
    ("GET", "/containers/{id}/top", "does not yet implement ContainerTop"),
    ("POST", "/containers/prune", "does not yet implement ContainersPrune"),
    ("POST", "/volumes/prune", "does not yet implement VolumesPrune"),  # volume.go
    ("POST", "/images/prune", "does not yet implement image.ImagesPrune"),  # image.go
    ("POST", "/networks/prune", "does not yet implement NetworksPrune"),  # network.go
    ("POST", "/networks/bridge/disconnect", "does not yet implement network.DisconnectContainerFromNetwork"),
    ("POST", "/build", "does not yet implement BuildFromContext"),  # build.go
    ("POST", "/commit?container={id}", "does not yet implement image.Commit"),  # image.go
    ("GET", "/images/vicflow-test/busybox:latest/history", "does not yet implement image.History"),
    ("POST", "/images/vicflow-test/busybox/push", "does not yet implement image.PushImage"),
    ("GET", "/images/vicflow-test/busybox:latest/get", "does not yet implement image.ExportImage"),
    ("POST", "/images/load", "does not yet implement image.LoadImage"),
    ("POST", "/images/create?fromSrc=-&repo=x", "does not yet implement image.ImportImage"),
    ("GET", "/images/search?term=x", "does not yet implement image.SearchRegistryForImages"),
    ("GET", "/system/df", "does not yet implement SystemDiskUsage"),  # system.go
    ("GET", "/containers/{id}/checkpoints", "does not yet implement checkpointing"),  # checkpoint.go
    ("GET", "/swarm", "does not yet support Docker Swarm"),  # swarm.go
    ("GET", "/services", "does not yet support Docker Swarm"),
    ("GET", "/plugins", "does not yet support plugins"),  # plugins.go
]


@pytest.fixture(scope="module")
def box(docker_engine, docker_images):
    """One running container the refusals are asked about (they never reach it)."""
    with connected(DockerParams(docker_host=dockerd.VCH)) as client:
        container = client.containers.run(
            BUSYBOX, ["sleep", "600"], name=f"refused-{uuid.uuid4().hex[:8]}", detach=True
        )
        yield container
        container.remove(force=True)


@pytest.mark.parametrize(("method", "path", "words"), REFUSALS, ids=[f"{m} {p.split('?')[0]}" for m, p, _ in REFUSALS])
def test_what_vic_does_not_implement_is_refused_in_its_words(box, method, path, words):
    answer = requests.request(method, f"{BASE}/v1.25{path.format(id=box.id)}", timeout=10)
    assert vic_error(answer) == (500, f"{PRODUCT} {words}")
    box.reload()
    assert box.status == "running", "the refused operation never reached the container"


def test_docker_cp_is_gone_since_api_1_24_and_refused_before(box):
    assert (
        requests.post(f"{BASE}/v1.25/containers/{box.id}/copy", json={"Resource": "/etc"}, timeout=10).status_code
        == 404
    )
    old = requests.post(f"{BASE}/v1.23/containers/{box.id}/copy", json={"Resource": "/etc"}, timeout=10)
    assert (old.status_code, old.text.strip()) == (500, f"{PRODUCT} does not yet implement ContainerCopy")


# ------------------------------------------------------------------------------------------- exec


def test_attached_exec_is_refused_and_a_detached_one_runs(vch, names):
    box = running(vch, names)
    with pytest.raises(docker.errors.APIError) as refused:
        box.exec_run(["true"])  # the SDK asks for an attached exec
    assert refused.value.status_code == 500
    assert refused.value.explanation == f"{PRODUCT} only supports detached exec commands at this time"
    assert exec_detached(vch, box.id, ["sh", "-c", "echo done > /tmp/mark"], timeout=30) == 0
    assert exec_detached(vch, box.id, ["test", "-s", "/tmp/mark"], timeout=30) == 0, "the detached exec ran"
    assert exec_detached(vch, box.id, ["sh", "-c", "exit 3"], timeout=30) == 3


def test_exec_inspect_reads_exit_code_zero_while_the_task_runs(vch, names):
    box = running(vch, names)
    made = vch.api._result(
        vch.api._post_json(vch.api._url("/containers/{0}/exec", box.id), data={"Cmd": ["sleep", "3"], "Detach": True}),
        True,
    )
    vch.api.exec_start(made["Id"], detach=True)
    first = vch.api.exec_inspect(made["Id"])
    assert first["Running"] is True and first["ExitCode"] == 0, "the port layer's exit code before the end"
    deadline = time.monotonic() + 30
    while vch.api.exec_inspect(made["Id"])["Running"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert vch.api.exec_inspect(made["Id"])["ExitCode"] == 0


# ------------------------------------------------------------------------------------------- events


def test_events_are_vics_and_a_die_carries_its_exit_code(vch, names):
    since = time.time()
    box = vch.containers.create(
        BUSYBOX, ["sleep", "600"], name=names(), labels={"com.docker.compose.project": "evproj"}
    )
    box.start()
    box.kill()
    box.wait(timeout=30)
    box.remove()
    seen = list(vch.events(decode=True, since=since, until=time.time() + 3, filters={"container": box.id}))
    actions = [e["Action"] for e in seen]
    assert actions[:2] == ["create", "start"] and {"kill", "die"} <= set(actions), actions
    assert "destroy" not in actions, "VIC logs no destroy"
    die = next(e for e in seen if e["Action"] == "die")
    assert die["Actor"]["Attributes"]["exitCode"] == "137" and die["status"] == "die" and die["id"] == box.id
    kill = next(e for e in seen if e["Action"] == "kill")
    assert kill["Actor"]["Attributes"]["signal"] == "9"
    attributes = die["Actor"]["Attributes"]
    assert attributes["name"] == box.name
    # CreateContainerEventActorWithAttributes reads VicContainer.Config: the image's config, overrides copied in,
    # labels not: the image's labels, not the container's
    image = vch.images.get(BUSYBOX).attrs["Config"]
    assert "com.docker.compose.project" not in attributes
    assert {k: attributes.get(k) for k in image["Labels"]} == image["Labels"]


def test_events_stream_as_they_happen_and_filter_like_docker(vch, names):
    box = vch.containers.create(BUSYBOX, ["sh", "-c", "sleep 1; exit 7"], name=names())
    got: list[dict] = []
    stream = vch.events(decode=True, filters={"event": "die", "container": box.name})  # open before the start

    def read():
        for event in stream:
            got.append(event)
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    box.start()
    reader.join(timeout=30)
    stream.close()
    assert [(e["Action"], e["Actor"]["Attributes"]["exitCode"]) for e in got] == [("die", "7")]


# ------------------------------------------------------------------------------------------- health


def test_a_healthcheck_is_dropped_and_inspect_shows_no_health(docker_engine, vch, names):
    health = {"test": ["CMD", "true"], "interval": 500_000_000, "start_period": 0, "retries": 1}
    on_vch = running(vch, names, healthcheck=health)
    plain = docker_engine.client("plain")
    on_dockerd = plain.containers.run(BUSYBOX, ["sleep", "600"], name=names(), detach=True, healthcheck=health)
    deadline = time.monotonic() + 60
    while (on_dockerd.attrs["State"].get("Health") or {}).get("Status") != "healthy":  # the control: dockerd runs it
        assert time.monotonic() < deadline, on_dockerd.attrs["State"]
        time.sleep(0.3)
        on_dockerd.reload()
    inspect = vch.api.inspect_container(on_vch.id)
    assert "Health" not in inspect["State"] and inspect["State"]["Running"]
    assert not inspect["Config"].get("Healthcheck"), "the personality never read it"
    events = list(vch.events(decode=True, since=time.time() - 60, until=time.time(), filters={"container": on_vch.id}))
    assert not [e for e in events if e["Action"].startswith("health_status")]
    plain.close()


# ------------------------------------------------------------------------------------------- ports


def listens(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_host_ip_other_than_0000_or_the_public_ip_is_refused(vch, names):
    with pytest.raises(docker.errors.APIError) as refused:
        vch.containers.create(BUSYBOX, ["sleep", "1"], name=names(), ports={"80/tcp": ("127.0.0.9", free_port())})
    assert (refused.value.status_code, refused.value.explanation) == (
        500,
        "Server error from portlayer: host IP for port bindings is only supported for 0.0.0.0 and the public "
        "interface IP address",
    )


def test_a_host_port_range_is_refused(vch, names):
    answer = requests.post(
        f"{BASE}/v1.25/containers/create?name={names()}",
        json={
            "Image": BUSYBOX,
            "Cmd": ["true"],
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "18000-18001"}]}},
        },
        timeout=30,
    )
    assert vic_error(answer) == (
        500,
        "Server error from portlayer: host port ranges are not supported for port bindings",
    )


def test_0000_is_the_public_interface_and_inspect_shows_what_vic_shows(vch, names):
    port, public_port = free_port(), free_port()
    box = vch.containers.run(
        BUSYBOX,
        ["busybox", "httpd", "-f", "-p", "80"],
        name=names(),
        detach=True,
        ports={"80/tcp": ("0.0.0.0", port), "81/tcp": (dockerd.VCH_IP, public_port)},
    )
    deadline = time.monotonic() + 30
    while not listens(dockerd.VCH_IP, port):
        assert time.monotonic() < deadline, "the binding answers on the VCH's public IP"
        time.sleep(0.2)
    assert not listens("127.0.0.1", port), "0.0.0.0 on a VCH is its public interface, not this machine's every one"
    inspect = vch.api.inspect_container(box.id)
    assert inspect["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": str(port)}],
        "81/tcp": [{"HostIp": "", "HostPort": str(public_port)}],
    }, "the port layer keeps hostPort:port/proto"
    assert inspect["NetworkSettings"]["Ports"]["80/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(port)}]
    assert inspect["NetworkSettings"]["Ports"]["81/tcp"] == [{"HostIp": dockerd.VCH_IP, "HostPort": str(public_port)}]
    listed = vch.api.containers(filters={"id": box.id})[0]["Ports"]
    assert {(p["IP"], p["PublicPort"]) for p in listed} == {(dockerd.VCH_IP, port), (dockerd.VCH_IP, public_port)}


def test_a_host_port_in_use_fails_the_start_in_vics_words(vch, names):
    port = free_port()
    running(vch, names, ports={"80/tcp": port})
    second = vch.containers.create(BUSYBOX, ["sleep", "600"], name=names(), ports={"80/tcp": port})
    with pytest.raises(docker.errors.APIError) as refused:
        second.start()
    assert (
        refused.value.explanation == f"Server error from portlayer: error mapping ports: port {port} is not available"
    )


# ------------------------------------------------------------------------------------------- volumes


def test_a_vsphere_volume_lives_in_a_volume_store_and_holds_lost_found(vch, names):
    name = names()
    made = vch.api.create_volume(name, driver="vsphere", driver_opts={"Capacity": "2GB"}, labels={"app": "x"})
    assert made == {
        "Driver": "vsphere",
        "Labels": {"app": "x"},
        "Mountpoint": hashlib.md5(name.encode()).hexdigest()[:16],  # the filesystem label of the VMDK
        "Name": name,
        "Options": None,
        "Scope": "",
    }
    alias = vch.api.create_volume(names(), driver="local")
    assert alias["Driver"] == "local" and vch.api.inspect_volume(alias["Name"])["Driver"] == "vsphere"
    listed = {v["Name"]: v["Driver"] for v in vch.api.volumes(filters={"driver": "vsphere"})["Volumes"]}
    assert listed[name] == "vsphere"
    reader = vch.containers.run(BUSYBOX, ["ls", "-A", "/data"], name=names(), detach=True, volumes=[f"{name}:/data"])
    assert reader.wait(timeout=60)["StatusCode"] == 0
    assert reader.logs().decode().split() == ["lost+found"], "a fresh VMDK's filesystem"


def test_postgres_refuses_the_root_of_a_fresh_volume_as_in_the_seed(vch, names):
    box = vch.containers.run(
        "vicflow-test/postgres:15",
        name=names(),
        detach=True,
        environment={"POSTGRES_PASSWORD": "x", "PGDATA": "/var/lib/postgresql/data"},
        volumes=[f"{names()}:/var/lib/postgresql/data"],
    )
    assert box.wait(timeout=120)["StatusCode"] != 0
    assert "exists but is not empty" in box.logs().decode(), "why the seed points PGDATA at a subdirectory"


def test_volume_errors_are_vics(vch, names):
    with pytest.raises(docker.errors.APIError) as unknown:
        vch.api.create_volume(names(), driver="vsphere", driver_opts={"VolumeStore": "nosuchstore"})
    assert (unknown.value.status_code, unknown.value.explanation) == (500, "No volume store named (nosuchstore) exists")
    with pytest.raises(docker.errors.APIError) as bad_option:
        vch.api.create_volume(names(), driver="vsphere", driver_opts={"size": "1"})
    assert bad_option.value.explanation == "bad driver value - size is not a supported option"
    with pytest.raises(docker.errors.APIError) as plugin:
        vch.api.create_volume(names(), driver="nfs")
    assert plugin.value.explanation == "error looking up volume plugin nfs: plugin not found"
    name = names()
    vch.api.create_volume(name, driver="vsphere")
    with pytest.raises(docker.errors.APIError) as twice:
        vch.api.create_volume(name, driver="vsphere")
    assert twice.value.explanation == f"A volume named {name} already exists. Choose a different volume name."
    with pytest.raises(docker.errors.APIError) as directory:
        vch.containers.create(BUSYBOX, ["true"], name=names(), volumes=["/tmp:/x"])
    assert (directory.value.status_code, directory.value.explanation) == (
        400,
        f"Bad request error from portlayer: {PRODUCT} does not support mounting directories as a data volume.",
    )
    with pytest.raises(docker.errors.NotFound) as missing:
        vch.api.inspect_volume(names())
    assert missing.value.explanation.startswith("No such volume: ")


@pytest.fixture
def own_vch(docker_engine, docker_images, tmp_path):
    """An endpoint of the test's own, for a VCH configured as ``start(config)`` says; stopped afterwards."""
    started: list[subprocess.Popen] = []

    def start(config: VCHConfig, tls: dict[str, str] | None = None) -> str:
        port = free_port()
        path = tmp_path / "vch.json"
        write(path, config)
        proc = dockerd.serve_vch(f"127.0.0.1:{port}", path, tmp_path / "vchproxy.log", tls)
        started.append(proc)
        deadline = time.monotonic() + 30
        while not listens("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "vchproxy.log").read_text()
            time.sleep(0.1)
        return f"127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_volume_stores_are_the_ones_the_vch_was_created_with(own_vch, names):
    address = own_vch(VCHConfig(name="vch-fast", public_ip="127.0.0.1", volume_stores={"fast": "ds://LocalDS_1/fast"}))
    with connected(DockerParams(docker_host=f"tcp://{address}")) as vch:
        info = vch.info()
        assert info["Name"] == "vch-fast" and dict(info["SystemStatus"])["VolumeStores"] == "fast"
        with pytest.raises(docker.errors.APIError) as no_default:
            vch.api.create_volume(names(), driver="vsphere")
        assert no_default.value.explanation == "No volume store named (default) exists"
        with pytest.raises(docker.errors.APIError) as implicit:  # a container's volume goes to the default store
            vch.containers.create(BUSYBOX, ["true"], name=names(), volumes=[f"{names()}:/data"])
        assert implicit.value.explanation == "No volume store named (default) exists"
        name = names()
        assert vch.api.create_volume(name, driver="vsphere", driver_opts={"VolumeStore": "fast"})["Name"] == name


# ------------------------------------------------------------------------------------------- TLS


def test_a_tls_vch_is_the_same_personality_tls_12_only_with_client_certificates(own_vch, tmp_path):
    from vicflow.plugins.clients.certs import generate

    certs = tmp_path / "certs"
    generate(certs, "127.0.0.1", ["127.0.0.1"])
    tls = {"cert": str(certs / "server-cert.pem"), "key": str(certs / "server-key.pem"), "ca": str(certs / "ca.pem")}
    address = own_vch(VCHConfig(public_ip="127.0.0.1"), tls)
    host, port = address.split(":")
    with connected(DockerParams(docker_host=f"tcp://{host}:{port}", tls=True, cert_path=str(certs))) as vch:
        assert vch.info()["Driver"].startswith(PRODUCT) and vch.version()["KernelVersion"] == "-"
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "cert.pem"), str(certs / "key.pem"))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError), socket.create_connection((host, int(port)), timeout=10) as raw:
        context.wrap_socket(raw, server_hostname=host)
    anonymous = ssl.create_default_context(cafile=str(certs / "ca.pem"))  # no client certificate
    with pytest.raises(ssl.SSLError), socket.create_connection((host, int(port)), timeout=10) as raw:
        anonymous.wrap_socket(raw, server_hostname=host)


# ------------------------------------------------------------------------------------------- docker-compose 1.x

COMPOSE = """\
version: "2.1"
services:
  web:
    image: vicflow-test/busybox:latest
    command: ["busybox", "httpd", "-f", "-p", "80"]
    ports: ["0.0.0.0:{port}:80"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "true"]
      interval: 1s
volumes:
  data:
    driver: vsphere
"""


def test_debian_docker_compose_1_runs_up_and_ps_against_the_vch(vch, tmp_path):
    port, project = free_port(), f"dc{uuid.uuid4().hex[:6]}"
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.format(port=port))
    env = {**os.environ, "DOCKER_HOST": dockerd.VCH, "COMPOSE_PROJECT_NAME": project}
    env.pop("DOCKER_TLS_VERIFY", None)

    def compose(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker-compose", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )

    try:
        up = compose("up", "-d")
        assert up.returncode == 0, up.stderr
        listed = compose("ps")
        assert listed.returncode == 0, listed.stderr
        assert f"{project}_web_1" in listed.stdout and "Up" in listed.stdout
        assert f"0.0.0.0:{port}->80/tcp" in listed.stdout, listed.stdout  # inspect's NetworkSettings, as VIC
        web = vch.containers.get(f"{project}_web_1")
        assert "Health" not in web.attrs["State"]
        assert vch.api.inspect_volume(f"{project}_data")["Driver"] == "vsphere"
        assert compose("up", "-d").returncode == 0, "a second up converges"
    finally:
        down = compose("down", "-v")
        assert down.returncode == 0, down.stderr
