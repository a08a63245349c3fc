"""The fork server behind `vicflow worker`: a run's process behaves like `python -m prefect.engine`.

The worker only sees the launcher (`vicflow-engine`): its output, its exit status, and what a signal
to it does. These tests check each of those, and the fallback when no fork server runs. The engine is
pointed at a closed port (it fails) or at one that never answers (it waits), without any Prefect server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.testbed.prefect_stack import free_port

BIN = Path(sys.executable).parent


@pytest.fixture
def forkserver(tmp_path):
    path = str(tmp_path / "forkserver.sock")
    server = subprocess.Popen(
        [sys.executable, "-m", "vicflow.flows.on_prefect.forkserver", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    line = server.stdout.readline()
    if line.strip() != b"ready":
        server.kill()
        pytest.fail(f"the fork server did not start: {line!r} {server.stderr.read()[-2000:]!r}")
    yield server, path
    server.terminate()
    server.wait(timeout=20)
    assert not os.path.exists(path), "the fork server removes its socket when it stops"


@pytest.fixture
def silent_api():
    """An API address that accepts connections and never answers: the engine waits (60 s) on its first call."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"


def engine_env(socket_path: str | None, flow_run_id: str, api: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT__FLOW_RUN_ID=flow_run_id, PREFECT_API_URL=api or f"http://127.0.0.1:{free_port()}/api")
    env.pop("VICFLOW_FORKSERVER", None)
    if socket_path:
        env["VICFLOW_FORKSERVER"] = socket_path
    return env


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_output_and_exit_status_are_the_engines(forkserver, tmp_path):
    _, path = forkserver
    result = subprocess.run(
        [str(BIN / "vicflow-engine")],
        env=engine_env(path, "not-a-uuid"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Invalid flow run id" in result.stdout + result.stderr, "the child writes to the launcher's stdout/err"
    assert "no fork server" not in result.stderr


def test_without_a_fork_server_the_launcher_is_python_m_prefect_engine(tmp_path):
    result = subprocess.run(
        [str(BIN / "vicflow-engine")],
        env=engine_env(str(tmp_path / "absent.sock"), "not-a-uuid"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"no fork server at {tmp_path / 'absent.sock'}" in result.stderr
    assert "Invalid flow run id" in result.stdout + result.stderr


def wait_for_child(server: subprocess.Popen) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if found := children(server.pid):
            return found[0]
        time.sleep(0.05)
    raise AssertionError("the fork server started no child")


def gone(pid: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            return True
        time.sleep(0.05)
    return False


def test_sigterm_to_the_launcher_stops_the_run(forkserver, silent_api):
    server, path = forkserver
    launcher = subprocess.Popen(
        [str(BIN / "vicflow-engine")], env=engine_env(path, str(uuid.uuid4()), silent_api), stdout=subprocess.DEVNULL
    )
    child = wait_for_child(server)
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=20) == -signal.SIGTERM, "the launcher dies of the signal its child died of"
    assert gone(child)


def test_a_killed_launcher_takes_its_run_with_it(forkserver, silent_api):
    server, path = forkserver
    launcher = subprocess.Popen(
        [str(BIN / "vicflow-engine")], env=engine_env(path, str(uuid.uuid4()), silent_api), stdout=subprocess.DEVNULL
    )
    child = wait_for_child(server)
    launcher.kill()
    launcher.wait(timeout=20)
    assert gone(child), "no orphaned flow run process"
    assert server.poll() is None, "the fork server keeps serving"
