"""How `make test` spreads the suite over pytest-xdist workers: work units, their order, and the scheduler.

Each worker is a host of its own (tests/testbed/hosts.py), so most tests can run anywhere, at the same time as
any other. Some cannot be split:
- the tests that use a module- or class-scoped fixture (a stack started once for the module; they may also rely
  on their order in the file) stay together, in file order;
- the tests that use something at a fixed path of the machine, which namespaces do not separate
  (``SHARED_FIXTURES``), run one after the other on one worker;
- without namespaces (not root), every test-bed test shares the one Docker engine: one worker.
Those are joined into work units (``units``); every other test is a unit of its own. Units are handed out
longest first (``order``: the last to start are short, so the workers end together), by the time each test
took last time (.vicflow/test-durations.json, written after a run without failures) or else a guess.

xdist's own ``--dist loadgroup`` cannot carry this on pytest 9.2 (it renames node ids, which pytest no longer
reads: pytest-dev/pytest-xdist#1386), so the workers write the units to a file the controller names
(``UNITS_ENV``) and ``UnitScheduling`` (xdist's scope scheduler, with our units as scopes) reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from xdist.scheduler import LoadScopeScheduling

from tests.tiers import needs_testbed

REPO = Path(__file__).resolve().parents[1]
UNITS_ENV = "VICFLOW_TEST_UNITS"  # the file where the workers write the units (tests/conftest.py names it)
DURATIONS = REPO / ".vicflow" / "test-durations.json"
SHARED_FIXTURES = {"harbor": "Harbor's folder <state>/harbor and /etc/docker/certs.d/127.0.0.1:18443"}


def resources(item, isolated: bool) -> set[str]:
    """What ``item`` shares with other tests, so that they must run on one worker, one after the other."""
    keys = set()
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        definitions = info.name2fixturedefs.get(name) if info else None
        if definitions and definitions[-1].scope in ("module", "class", "package"):
            keys.add(item.nodeid.split("::")[0])
        if name in SHARED_FIXTURES:
            keys.add(name)
    if not isolated and needs_testbed(item):
        keys.add("testbed")
    return keys


def units(items, isolated: bool) -> dict[str, list]:
    """Items joined, through what they share, into work units (each in file order); name -> items."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    keys_of = {}
    for item in items:
        keys = sorted(resources(item, isolated)) or [item.nodeid]
        keys_of[item.nodeid] = keys
        for key in keys[1:]:
            parent[find(key)] = find(keys[0])
    found: dict[str, list] = {}
    for item in items:
        found.setdefault(find(keys_of[item.nodeid][0]), []).append(item)
    return found


def estimate(item, known: dict[str, float]) -> float:
    """Seconds ``item`` took last time; else a guess: a fault trial is long, a test-bed test slow, the rest fast."""
    if item.nodeid in known:
        return known[item.nodeid]
    if any(mark.name == "faults" for mark in item.iter_markers()):
        return 120.0
    return 30.0 if needs_testbed(item) else 1.0


def order(found: dict[str, list]) -> list:
    """The items, unit by unit, the longest unit first."""
    known: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(DURATIONS.read_text())
    cost = {name: sum(estimate(item, known) for item in members) for name, members in found.items()}
    return [item for name in sorted(found, key=lambda n: (-cost[n], n)) for item in found[name]]


def plan(items, isolated: bool, worker: str) -> list:
    """On a worker: the items in unit order, and the units written where the controller reads them."""
    found = units(items, isolated)
    ordered = order(found)
    path = Path(os.environ[UNITS_ENV])
    mine = path.with_name(f"{path.name}.{worker}")
    mine.write_text(json.dumps({item.nodeid: name for name, members in found.items() for item in members}))
    os.replace(mine, path)  # every worker collects the same units: whichever lands last is the same file
    return ordered


class UnitScheduling(LoadScopeScheduling):
    """xdist's scope scheduling with the units of ``plan`` as scopes, handed out in the workers' order."""

    def __init__(self, config, log=None):
        super().__init__(config, log)
        config.option.loadscopereorder = False  # the order ``plan`` chose
        self._units: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._units is None:  # read once every worker has collected (they wrote it before saying so)
            self._units = json.loads(Path(os.environ[UNITS_ENV]).read_text())
        return self._units.get(nodeid, nodeid)


_TIMES: dict[str, float] = {}  # nodeid -> seconds (setup, call and teardown), on the controller


def record(report) -> None:
    _TIMES[report.nodeid] = _TIMES.get(report.nodeid, 0.0) + report.duration


def keep_durations(failed: int) -> None:
    """Keep each test's time for ``order`` (.vicflow/ is not versioned; a fresh clone orders by the guesses)."""
    if not _TIMES or failed:
        return
    known: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(DURATIONS.read_text())
    known.update(_TIMES)
    DURATIONS.parent.mkdir(exist_ok=True)
    DURATIONS.write_text(json.dumps({k: round(v, 1) for k, v in sorted(known.items())}, indent=0) + "\n")
