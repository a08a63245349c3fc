"""The suite's two tiers: what makes a test need the test bed (`make test` only) rather than run in `make check`.

A test needs the test bed (root, apt packages, dockerd, the simulator, PostgreSQL, network namespaces) when it
- uses one of ``TESTBED_FIXTURES``, directly or through another fixture (``gogs`` uses ``docker_engine``),
- carries one of ``TESTBED_MARKERS`` (``@pytest.mark.testbed`` says it outright), or
- lives in a module that imports a component of tests/testbed: a module (``from tests.testbed import vcsim``)
  or a class (``Appliance``). A helper function (``free_port``, ``prefect_db.copy_to``) does not count.
tests/conftest.py marks those ``testbed``; `make check` runs ``-m "not testbed"``.
"""

from __future__ import annotations

import types

TESTBED_FIXTURES = {"docker_engine", "docker_client", "docker_images", "vcsim", "vcsim_factory"}
TESTBED_MARKERS = {"docker", "vcsim", "faults", "testbed"}


def uses_testbed_modules(module: types.ModuleType | None) -> bool:
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
    return uses_testbed_modules(getattr(item, "module", None))
