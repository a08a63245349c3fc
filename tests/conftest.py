"""Fixtures for vicflow's tests, and the hooks that sort the suite into tiers and spread it over workers.

Pure-logic tests need none of these.  Integration tests use the real components of the test bed
(tests/testbed): one Prefect test harness for the session, the private dockerd, and vCenter
simulators.  A component that cannot start fails the test loudly with the reason; nothing skips.

Tiers (tests/tiers.py): a test that needs the test bed is marked ``testbed``; `make check` runs the others.
Workers (`make test` runs `pytest -n`; tests/parallel.py): each worker is a host of its own, with its own network
namespace and Docker engine (tests/testbed/hosts.py); tests that share something run on one worker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.testbed.prefect_db import BUSY_MACHINE
from tests.tiers import needs_testbed

REPO = Path(__file__).resolve().parents[1]
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")

# Before anything builds the plugin registry: the engine's test step types, and no entry points.
os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")
os.environ["VICFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
for _name, _value in BUSY_MACHINE.items():  # `vicflow run`'s temporary Prefect server, on a busy machine
    os.environ.setdefault(_name, _value)
if WORKER:  # before Prefect is imported: a Prefect home (profiles, local storage, its SQLite) per worker
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"vicflow-prefect-{WORKER}-")


def _controller_with_workers(config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "tx", None))


def _hosts() -> bool:
    return os.environ.get("VICFLOW_TESTBED_HOSTS") == "1"


def pytest_configure(config):
    if _controller_with_workers(config):
        if config.getoption("dist") in ("load", "loadgroup"):  # tests/parallel.py's scheduler (below)
            os.environ["VICFLOW_TEST_UNITS"] = str(Path(tempfile.mkdtemp(prefix="vicflow-units-")) / "units.json")
        if os.geteuid() == 0 and os.environ.get("VICFLOW_TESTBED_HOSTS") != "0":
            from tests.testbed import hosts

            config.stash[_HOSTS_LOCK] = hosts.claim()  # held until this process exits
            os.environ["VICFLOW_TESTBED_HOSTS"] = "1"  # the workers, started after this, are hosts of their own
    if WORKER and _hosts():
        from tests.testbed import hosts

        hosts.enter()


_HOSTS_LOCK = pytest.StashKey[int]()


def pytest_xdist_make_scheduler(config, log):
    """`pytest -n N` (``--dist load``, the default) hands out tests/parallel.py's units, longest first."""
    if config.getoption("dist") in ("load", "loadgroup"):
        from tests.parallel import UnitScheduling

        return UnitScheduling(config, log)
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selects (make check)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if needs_testbed(item):
            item.add_marker("testbed")
    if WORKER and os.environ.get("VICFLOW_TEST_UNITS"):
        from tests.parallel import plan

        items[:] = plan(items, isolated=_hosts(), worker=WORKER)


def pytest_runtest_logreport(report):
    if not WORKER and "VICFLOW_TEST_UNITS" in os.environ:  # the controller of workers: every report reaches it
        from tests.parallel import record

        record(report)


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down (dockerd stopped), before xdist
def pytest_sessionfinish(session):  # tells the controller this worker is done (it may end the process then)
    if WORKER and _hosts():
        from tests.testbed import hosts

        hosts.leave()
    if WORKER:
        shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)
    elif "VICFLOW_TEST_UNITS" in os.environ:
        from tests.parallel import keep_durations

        keep_durations(session.testsfailed)
        shutil.rmtree(Path(os.environ["VICFLOW_TEST_UNITS"]).parent, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _state_dir(tmp_path_factory):
    os.environ["VICFLOW_STATE_DIR"] = str(tmp_path_factory.mktemp("vicflow-state"))
    if WORKER:  # the worker's own Prefect home: `vicflow run`'s temporary servers start on a migrated database
        from tests.testbed.prefect_db import copy_to

        copy_to(Path(os.environ["PREFECT_HOME"]) / "prefect.db")


@pytest.fixture(autouse=True)
def _worker_engine(request):
    """On a worker that is a host of its own, a test-bed test finds the worker's Docker engine and images up, as
    `make testbed` leaves the test bed's (a VCH stand-in forwards to 127.0.0.1:2375 without asking for it)."""
    if _hosts() and request.node.get_closest_marker("testbed"):
        request.getfixturevalue("docker_images")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One Prefect test harness (ephemeral server, SQLite) for the whole session; yields its API URL.

    Its database starts as a copy of a migrated one (tests/testbed/prefect_db.py): the harness makes its
    database in the folder ``mkdtemp`` gives it, here one that already holds it."""
    from unittest import mock

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from tests.testbed.prefect_db import copy_to

    folder = tmp_path_factory.mktemp("prefect-harness")
    copy_to(folder / "prefect-test.db")
    with contextlib.ExitStack() as harness:
        with mock.patch("prefect.testing.utilities.mkdtemp", return_value=str(folder)):
            harness.enter_context(prefect_test_harness(server_startup_timeout=180))
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
        [sys.executable, "-m", "vicflow.flows.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
