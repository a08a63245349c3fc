"""Fixtures for vicflow's tests.

Pure-logic tests need none of these.  Integration tests use the real components of the test bed
(tests/testbed): one Prefect test harness for the session, the private dockerd, and vCenter
simulators.  A component that cannot start fails the test loudly with the reason; nothing skips.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Before anything builds the plugin registry: the engine's test step types, and no entry points.
os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")
os.environ["VICFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory):
    os.environ["VICFLOW_STATE_DIR"] = str(tmp_path_factory.mktemp("vicflow-state"))


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test harness (ephemeral server, SQLite) for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@pytest.fixture
def cli_env(prefect_api):
    """Environment for `vicflow` subprocesses: this checkout importable, the session's Prefect server."""
    env = dict(
        os.environ,
        PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        PREFECT_API_URL=prefect_api,
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


@pytest.fixture(scope="session")
def docker_engine():
    """The test bed's dockerd (started here unless already running); removes what tests created."""
    from tests.testbed import dockerd

    engine = dockerd.start()
    client = engine.client()
    before = {
        "containers": {c.id for c in client.containers.list(all=True)},
        "networks": {n.id for n in client.networks.list()},
        "volumes": {v.id for v in client.volumes.list()},
    }
    yield engine
    import docker

    gone = (docker.errors.NotFound, docker.errors.APIError)  # removed meanwhile, or still in use
    for kind, remove in (
        ("containers", lambda c: c.remove(force=True, v=False)),
        ("networks", lambda n: n.remove()),
        ("volumes", lambda v: v.remove(force=True)),
    ):
        for item in getattr(client, kind).list(**({"all": True} if kind == "containers" else {})):
            if item.id not in before[kind]:
                with contextlib.suppress(*gone):
                    remove(item)
    client.close()
    if engine.started_here:
        dockerd.stop()


@pytest.fixture(scope="session")
def docker_images(docker_engine):
    """The test images (built from Debian packages; a second build reuses the cache)."""
    from tests.testbed import images

    return images.build_all(docker_engine.client())


@pytest.fixture
def docker_client(docker_engine):
    client = docker_engine.client()
    yield client
    client.close()


@pytest.fixture
def vcsim_factory():
    """Start simulators with a given inventory; each is stopped after the test."""
    from tests.testbed import vcsim

    started = []

    def start(**kwargs):
        sim = vcsim.start(**kwargs)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def vcsim(vcsim_factory):
    """A simulator over HTTPS with 3 hosts in one cluster."""
    return vcsim_factory(hosts=3)


def run_cli(args: list[str], env: dict, timeout: float = 300):
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "vicflow.flows.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
