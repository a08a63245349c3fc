"""The real components vicflow's tests run against: the vCenter simulator, dockerd and test images.

``python -m tests.testbed all`` builds and starts everything (what .ci/run and ``make`` call);
the pytest fixtures in tests/conftest.py reuse what is running or start it themselves.
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("VICFLOW_TESTBED_DIR", "/var/lib/vicflow-testbed"))
RUN = Path(os.environ.get("VICFLOW_TESTBED_RUN", "/run/vicflow-testbed"))

# Under `pytest -n N` (make test) each xdist worker is a host of its own with its own Docker engine
# (tests/testbed/hosts.py); the engine's files are then the worker's: <state>/hosts/gw0, <run>/hosts/gw0.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "") if os.environ.get("VICFLOW_TESTBED_HOSTS") == "1" else ""
ENGINE_STATE = STATE / "hosts" / WORKER if WORKER else STATE
ENGINE_RUN = RUN / "hosts" / WORKER if WORKER else RUN


class TestbedError(RuntimeError):
    """A test-bed component could not be built or started; the message says why and what to do."""


def say(message: str) -> None:
    print(f"[testbed] {message}", flush=True)
