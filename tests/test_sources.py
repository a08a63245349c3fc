"""Event sources against real servers, collecting what they emit (no Prefect needed here)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid

import pytest
import requests
from pyVim.connect import Disconnect
from pyVmomi import vim
from vicflow.plugins.builtin.sources import DockerEvents, RegistryNotifications, VSphereEvents

from tests.helpers import free_port
from tests.testbed import dockerd
from tests.testbed import vcsim as vcsim_mod
from tests.testbed.vchproxy.config import VCHConfig, write


class Collected(list):
    def wait_for(self, predicate, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self if predicate(e)]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no matching event within {timeout}s; got {[e['event'] for e in self]}")


def running(source):
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


@pytest.mark.docker
def test_docker_source_emits_died_with_project_and_service_and_never_twice(docker_engine, docker_images, docker_client):
    got = Collected()
    source = DockerEvents(
        {"docker_host": docker_engine.plain_url, "engine": "testbed", "window_seconds": 1}, got.append
    )
    stop, thread = running(source)
    name = f"src-{uuid.uuid4().hex[:6]}"
    try:
        time.sleep(1)
        box = docker_client.containers.run(
            "vicflow-test/busybox:latest",
            ["sleep", "600"],
            name=name,
            detach=True,
            labels={"com.docker.compose.project": "gogs", "com.docker.compose.service": "gogs"},
        )
        box.kill()
        died = got.wait_for(
            lambda e: e["event"] == "docker.container.died" and e["resource"]["docker.container"] == name
        )
        assert died[0]["resource"]["prefect.resource.id"] == "docker.testbed.compose.gogs.gogs"
        assert died[0]["resource"]["compose.project"] == "gogs" and died[0]["payload"]["exit_code"] == "137"
        removed = docker_client.containers.run(
            "vicflow-test/busybox:latest",
            ["sleep", "600"],
            name=f"{name}-b",
            detach=True,
            labels={"com.docker.compose.project": "gogs"},
        )
        removed.remove(force=True)  # what a replace or compose_down does: die, then destroy
        time.sleep(2.5)  # several windows later, the same event was not emitted again
        assert (
            len([e for e in got if e["event"] == "docker.container.died" and e["resource"]["docker.container"] == name])
            == 1
        )
    finally:
        stop.set()
        thread.join(timeout=10)
        docker_client.containers.get(name).remove(force=True)


class Said(logging.Handler):
    """What a source logged."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"never said {text!r}: {self.lines[-20:]}")


def logged(name: str) -> tuple[logging.Logger, Said]:
    said, logger = Said(), logging.getLogger(f"tests.sources.{name}")
    logger.addHandler(said)
    logger.setLevel(logging.DEBUG)
    return logger, said


def streaming(source, timeout: float = 30) -> None:
    """Wait until the source has read the engine and subscribed (what happens after is seen)."""
    deadline = time.monotonic() + timeout
    while source.since is None:
        assert time.monotonic() < deadline, "the source never subscribed"
        time.sleep(0.05)


COMPOSE_LABELS = {"com.docker.compose.project": "gogs", "com.docker.compose.service": "gogsdb"}


@pytest.mark.docker
def test_on_the_vch_a_die_streams_with_its_exit_code_and_compose_service(docker_engine, docker_images):
    """VIC's events carry the image's labels, not the container's, and no destroy: the source reads the container."""
    import docker

    got = Collected()
    logger, said = logged("vch")
    source = DockerEvents({"docker_host": dockerd.VCH, "engine": "vch", "window_seconds": 1}, got.append, logger)
    stop, thread = running(source)
    vch = docker.DockerClient(base_url=dockerd.VCH, timeout=60)
    names = [f"vchsrc-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    try:
        streaming(source)
        box = vch.containers.run("vicflow-test/busybox:latest", ["sleep", "600"], name=names[0], detach=True,
                                 labels=COMPOSE_LABELS)  # fmt: skip
        box.kill()
        died = got.wait_for(
            lambda e: e["event"] == "docker.container.died" and e["resource"]["docker.container"] == names[0]
        )
        assert died[0]["resource"]["prefect.resource.id"] == "docker.vch.compose.gogs.gogsdb"
        assert died[0]["payload"]["exit_code"] == "137"
        gone = vch.containers.run("vicflow-test/busybox:latest", ["sleep", "600"], name=names[1], detach=True,
                                  labels=COMPOSE_LABELS)  # fmt: skip
        gone.remove(force=True)  # a replace or compose_down: die, and no destroy on a VCH
        said.wait_for(f"dropped die of {names[1]}: it was removed right after")
        assert not [e for e in got if e["resource"]["docker.container"] == names[1] and e["event"].endswith("died")]
        assert not [line for line in said.lines if "polling" in line], "a VCH streams its events"
    finally:
        stop.set()
        thread.join(timeout=10)
        for name in names:
            with contextlib.suppress(docker.errors.NotFound):
                vch.containers.get(name).remove(force=True)
        vch.close()


@pytest.mark.docker
def test_a_broken_stream_falls_back_to_polling_says_so_and_misses_no_die(docker_engine, docker_images, tmp_path):
    """The appliance restarts (its endpoint stops and starts again) while a container dies: the die is seen."""
    import docker

    port = free_port()
    config = tmp_path / "vch.json"
    write(config, VCHConfig(public_ip="127.0.0.1"))

    def appliance():
        proc = dockerd.serve_vch(f"127.0.0.1:{port}", config, tmp_path / "vchproxy.log")
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return proc
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "vchproxy.log").read_text()
                time.sleep(0.1)

    endpoint = appliance()
    got = Collected()
    logger, said = logged("fallback")
    source = DockerEvents(
        {"docker_host": f"tcp://127.0.0.1:{port}", "engine": "own", "poll_seconds": 0.5}, got.append, logger
    )
    stop, thread = running(source)
    socket_client = docker_engine.client()
    name = f"fallback-{uuid.uuid4().hex[:6]}"
    try:
        streaming(source)
        box = socket_client.containers.run("vicflow-test/busybox:latest", ["sleep", "600"], name=name, detach=True,
                                           labels=COMPOSE_LABELS)  # fmt: skip
        got.wait_for(lambda e: e["event"] == "docker.container.started" and e["resource"]["docker.container"] == name)
        endpoint.terminate()
        endpoint.wait(timeout=10)
        said.wait_for("broke")
        assert "polling its containers every 0.5s until it is back" in said.wait_for("broke")
        box.kill()  # while the VCH's API is away
        endpoint = appliance()
        died = got.wait_for(
            lambda e: e["event"] == "docker.container.died" and e["resource"]["docker.container"] == name
        )
        assert died[0]["payload"]["exit_code"] == "137"
        said.wait_for("is back: polling stopped")
    finally:
        stop.set()
        thread.join(timeout=10)
        endpoint.terminate()
        endpoint.wait(timeout=10)
        with contextlib.suppress(docker.errors.NotFound):
            socket_client.containers.get(name).remove(force=True)
        socket_client.close()


def test_vsphere_source_sees_power_off_and_survives_a_server_restart(tmp_path):
    port = free_port()
    sim = vcsim_mod.start(hosts=1, vms=2, listen=f"127.0.0.1:{port}")
    got = Collected()
    source = VSphereEvents(
        {
            "server": sim.url,
            "user": sim.username,
            "password": sim.password,
            "thumbprint": sim.thumbprint,
            "poll_seconds": 0.5,
        },
        got.append,
    )
    source.max_backoff = 2
    stop, thread = running(source)
    try:
        time.sleep(1.5)
        power_off_first_vm(sim)
        off = got.wait_for(lambda e: e["event"] == "vsphere.vm.powered-off")
        assert off[0]["resource"]["prefect.resource.id"].startswith("vsphere.127.0.0.1.vm.")
        sim.stop()
        time.sleep(1)
        sim = vcsim_mod.start(hosts=1, vms=2, listen=f"127.0.0.1:{port}")
        time.sleep(3)  # the source reconnects (backoff) and opens a new collector
        power_off_first_vm(sim)
        got.wait_for(lambda e: e["event"] == "vsphere.vm.powered-off" and e is not off[0], timeout=40)
        assert len({e["id"] for e in got}) == len(got), "no event was emitted twice"
    finally:
        stop.set()
        thread.join(timeout=10)
        sim.stop()


def power_off_first_vm(sim):
    si = sim.connect()
    vm = next(
        v
        for v in si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True).view
        if v.runtime.powerState == "poweredOn"
    )
    task = vm.PowerOffVM_Task()
    while task.info.state not in ("success", "error"):
        time.sleep(0.1)
    Disconnect(si)


def test_registry_receiver_checks_the_token_and_keeps_only_manifest_pushes():
    port = free_port()
    got = Collected()
    source = RegistryNotifications({"listen": f"127.0.0.1:{port}", "token": "s3cret-token"}, got.append)
    stop, thread = running(source)
    url = f"http://127.0.0.1:{port}/events"
    push = {
        "id": "e1",
        "action": "push",
        "timestamp": "2026-11-27T10:00:00Z",
        "request": {"host": "reg:5000"},
        "target": {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "repository": "gogs/gogs",
            "tag": "1.1",
            "digest": "sha256:abc",
        },
    }
    blob = {
        "id": "e2",
        "action": "push",
        "target": {"mediaType": "application/octet-stream", "repository": "gogs/gogs"},
    }
    pull = {**push, "id": "e3", "action": "pull"}
    try:
        for _ in range(50):
            try:
                requests.post(url, json={"events": []}, timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert requests.post(url, json={"events": [push]}, timeout=5).status_code == 401
        assert (
            requests.post(
                url, json={"events": [push]}, headers={"Authorization": "Bearer wrong"}, timeout=5
            ).status_code
            == 401
        )
        auth = {"Authorization": "Bearer s3cret-token"}
        assert requests.post(url, json={"events": [blob, pull, push]}, headers=auth, timeout=5).status_code == 200
        assert requests.post(url, json={"events": [push]}, headers=auth, timeout=5).status_code == 200  # a retry
        assert [e["event"] for e in got] == ["registry.image.pushed"]
        assert got[0]["resource"]["registry.image"] == "reg:5000/gogs/gogs:1.1"
        assert got[0]["payload"]["digest"] == "sha256:abc"
    finally:
        stop.set()
        thread.join(timeout=10)
