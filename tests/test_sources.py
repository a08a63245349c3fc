"""Event sources against real servers, collecting what they emit (no Prefect needed here)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests
from pyVim.connect import Disconnect
from pyVmomi import vim
from vicflow.plugins.builtin.sources import DockerEvents, RegistryNotifications, VSphereEvents

from tests.helpers import free_port
from tests.testbed import vcsim as vcsim_mod


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
