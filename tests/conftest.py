"""Fixtures for vicflow's tests, the suite's two tiers, and how `make test` spreads it over pytest-xdist workers.

Pure-logic tests need none of these.  Integration tests use the real components of the test bed
(tests/testbed): one Prefect test harness for the session, the private dockerd, and vCenter
simulators.  A component that cannot start fails the test loudly with the reason; nothing skips.

Tiers (tests/README.md): a test that needs the test bed is marked ``testbed`` here, from what it uses (see
``needs_testbed``); `make check` runs the others (`-m "not testbed"`), `make test` runs all.

Workers (`make test` runs `pytest -n`): each worker is a host of its own, with its own network namespace and
Docker engine (tests/testbed/hosts.py), so fixed ports and container names need no care.  What is still shared
(files at fixed paths: Harbor's) and what a module shares between its tests (a module-scoped fixture, tests that
run in order) is grouped onto one worker (``units``); the work is handed out longest first (``order``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")

# Before anything builds the plugin registry: the engine's test step types, and no entry points.
os.environ.setdefault("VICFLOW_PLUGINS", "tests.plugins.engine_steps")
os.environ["VICFLOW_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
if WORKER:  # before Prefect is imported: a Prefect home (profiles, local storage, its SQLite) per worker
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix=f"vicflow-prefect-{WORKER}-")

# What makes a test need the test bed (root, apt packages, servers): these fixtures (directly or through another
# fixture), the markers that say so, or a module that uses tests/testbed's modules itself.
TESTBED_FIXTURES = {"docker_engine", "docker_client", "docker_images", "vcsim", "vcsim_factory"}
TESTBED_MARKERS = {"docker", "vcsim", "faults", "testbed"}
# Fixtures for things at a fixed path on the machine (shared by every worker's namespace): their tests share a worker.
SHARED_FIXTURES = {"harbor": "Harbor's folder <state>/harbor and /etc/docker/certs.d/127.0.0.1:18443"}
DURATIONS = REPO / ".vicflow" / "test-durations.json"  # the last parallel run's, for ``order``


def pytest_cmdline_main(config):
    """`pytest -n N` groups with loadgroup and keeps this file's order (unless told another --dist)."""
    if getattr(config.option, "numprocesses", None) and config.option.dist in ("no", "load"):
        config.option.dist = "loadgroup"
        config.option.loadscopereorder = False


def _controller_with_workers(config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "tx", None))


def pytest_configure(config):
    if _controller_with_workers(config) and os.geteuid() == 0 and os.environ.get("VICFLOW_TESTBED_HOSTS") != "0":
        from tests.testbed import hosts

        config._vicflow_hosts_lock = hosts.claim()  # held until this process exits
        os.environ["VICFLOW_TESTBED_HOSTS"] = "1"  # the workers, started after this, are hosts of their own
    if WORKER and os.environ.get("VICFLOW_TESTBED_HOSTS") == "1":
        from tests.testbed import hosts

        hosts.enter()


@pytest.hookimpl(trylast=True)  # after the session's fixtures are torn down (dockerd stopped), before xdist
def pytest_sessionfinish(session):  # tells the controller this worker is done (it may end the process then)
    if WORKER and os.environ.get("VICFLOW_TESTBED_HOSTS") == "1":
        from tests.testbed import hosts

        hosts.leave()
    if WORKER:
        shutil.rmtree(os.environ["PREFECT_HOME"], ignore_errors=True)
    _keep_durations(session)


def _uses_testbed_modules(module: types.ModuleType | None) -> bool:
    """The module imports a component of tests/testbed (a module, or a class such as Appliance); a helper
    function (free_port) does not count."""
    for value in vars(module or types.ModuleType("none")).values():
        if isinstance(value, types.ModuleType):
            name = value.__name__
        elif isinstance(value, type) and not issubclass(value, BaseException):
            name = value.__module__
        else:
            continue
        if name.startswith("tests.testbed."):
            return True
    return False


def needs_testbed(item) -> bool:
    if TESTBED_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    if any(mark.name in TESTBED_MARKERS for mark in item.iter_markers()):
        return True
    return _uses_testbed_modules(getattr(item, "module", None))


def _resources(item, isolated: bool) -> set[str]:
    """What ``item`` shares with other tests, so that they must run on one worker, one after the other."""
    keys = set()
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        definitions = info.name2fixturedefs.get(name) if info else None
        if definitions and definitions[-1].scope in ("module", "class", "package"):
            keys.add(item.nodeid.split("::")[0])  # set up once for the module, its tests possibly in order
        if name in SHARED_FIXTURES:
            keys.add(name)
    if not isolated and needs_testbed(item):  # no namespaces (not root): one Docker engine, one worker
        keys.add("testbed")
    return keys


def units(items, isolated: bool) -> dict[str, list]:
    """Items joined, through what they share, into the work units xdist hands out whole (in file order)."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    keys_of = {}
    for item in items:
        keys = sorted(_resources(item, isolated)) or [item.nodeid]
        keys_of[item.nodeid] = keys
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
    found: dict[str, list] = {}
    for item in items:
        found.setdefault(find(keys_of[item.nodeid][0]), []).append(item)
    return found


def _estimate(item, known: dict[str, float]) -> float:
    """Seconds ``item`` took in the last parallel run; else a guess: a test-bed test is slow, the rest fast."""
    if item.nodeid in known:
        return known[item.nodeid]
    if any(mark.name == "faults" for mark in item.iter_markers()):
        return 120.0
    return 30.0 if needs_testbed(item) else 1.0


def order(found: dict[str, list]) -> list:
    """Longest unit first (the largest-first rule: the last units to start are short, so workers end together)."""
    known: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(DURATIONS.read_text())
    cost = {name: sum(_estimate(item, known) for item in members) for name, members in found.items()}
    return [item for name in sorted(found, key=lambda n: (-cost[n], n)) for item in found[name]]


@pytest.hookimpl(tryfirst=True)  # before -m selects (make check) and before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if needs_testbed(item):
            item.add_marker("testbed")
    if WORKER and getattr(config.option, "loadgroup", False):  # what xdist makes of --dist loadgroup on a worker
        found = units(items, isolated=os.environ.get("VICFLOW_TESTBED_HOSTS") == "1")
        for name, members in found.items():
            if len(members) > 1:
                for item in members:
                    item.add_marker(pytest.mark.xdist_group(name))
        items[:] = order(found)


_TIMES: dict[str, float] = {}  # nodeid -> seconds (setup, call and teardown) in this run


def pytest_runtest_logreport(report):
    if not WORKER:  # the reports of every worker reach the controller
        nodeid = report.nodeid.split("@", 1)[0]  # without loadgroup's suffix
        _TIMES[nodeid] = _TIMES.get(nodeid, 0.0) + report.duration


def _keep_durations(session):
    """Keep each test's time for ``order`` (.vicflow/ is not versioned; a fresh clone orders by the guesses)."""
    if WORKER or not _TIMES or session.testsfailed:
        return
    known: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(DURATIONS.read_text())
    known.update(_TIMES)
    DURATIONS.parent.mkdir(exist_ok=True)
    DURATIONS.write_text(json.dumps({k: round(v, 1) for k, v in sorted(known.items())}, indent=0) + "\n")


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
