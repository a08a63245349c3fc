"""``vicflow run`` killed while it runs (SIGTERM or SIGKILL) leaves no temporary Prefect server behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port
from tests.testbed.prefect_db import copy_to

# fault trials (processes killed, their Prefect servers and workers waited on to go): `make test`, not `make check`
pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))) == parent:
                found.append(int(entry.name))
    return found


def server_children(parent: int) -> list[int]:
    """Processes started by ``parent`` that are Prefect's temporary server (uvicorn with Prefect's app)."""
    found = []
    for pid in children_of(parent):
        try:
            if b"prefect.server.api.server:create_app" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return " Z " not in state + " "


def step_running(database: Path) -> bool:
    """Whether the temporary server has recorded a running task run (read from its SQLite database)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as db:
            return bool(db.execute("SELECT count(*) FROM task_run WHERE state_type = 'RUNNING'").fetchone()[0])
    except sqlite3.Error:  # being written, or not migrated yet
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_vicflow_run_takes_its_temporary_prefect_server_with_it(tmp_path, sig):
    blueprint = tmp_path / "wait.yaml"
    blueprint.write_text(
        "name: wait\nsteps:\n  - id: wait\n    uses: health_check\n"
        f"    with: {{kind: tcp, host: 127.0.0.1, port: {free_port()}, deadline_seconds: 300, interval_seconds: 1}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect")}
    env["VICFLOW_STATE_DIR"] = str(tmp_path / "state")
    copy_to(tmp_path / "prefect" / "prefect.db")  # the temporary server's database, already migrated
    for name in ("PREFECT_API_URL", "VICFLOW_PLUGINS"):
        env.pop(name, None)
    stderr_file = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115 - read while the run goes on
    run = subprocess.Popen(
        [sys.executable, "-m", "vicflow.flows.cli.main", "run", str(blueprint)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr_file,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        servers: list[int] = []
        while not servers and time.monotonic() < deadline and run.poll() is None:
            servers = server_children(run.pid)
            time.sleep(0.2)
        assert servers, (
            f"no temporary Prefect server was started: {Path(stderr_file.name).read_text()[-2000:] if run.poll() is not None else ''}"
        )
        started = time.monotonic() + 90
        while b"flow run " not in Path(stderr_file.name).read_bytes() and time.monotonic() < started:
            time.sleep(0.2)
        # the flow run is under way: its step (waiting for a port nobody opens) is a running task run in the database
        while not step_running(tmp_path / "prefect" / "prefect.db") and time.monotonic() < started:
            time.sleep(0.2)
        assert step_running(tmp_path / "prefect" / "prefect.db"), Path(stderr_file.name).read_text()[-2000:]
        assert run.poll() is None, Path(stderr_file.name).read_text()[-2000:]
        run.send_signal(sig)
        code = run.wait(30)
        gone = time.monotonic() + 20
        while any(alive(p) for p in servers) and time.monotonic() < gone:
            time.sleep(0.2)
        assert not any(alive(p) for p in servers), f"the temporary Prefect server {servers} outlived vicflow run"
        assert code == -sig or code == 128 + sig, code
        stderr = Path(stderr_file.name).read_text()
        assert "Traceback" not in stderr
        if sig == signal.SIGTERM:  # the user learns what happened to the flow run and how to go on
            assert "stopped by SIGTERM; flow run " in stderr and "is marked Crashed" in stderr, stderr
            assert f"vicflow run {blueprint} --resume " in stderr, stderr
    finally:
        stderr_file.close()
        if run.poll() is None:
            run.kill()
        for pid in server_children(run.pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.prefect
def test_a_killed_vicflow_worker_takes_its_prefect_worker_and_fork_server_with_it(cli_env, tmp_path):
    """Found by tests/reliability/test_prefect_server.py: a `prefect worker` orphaned by a SIGKILLed
    `vicflow worker` went on taking runs, with the environment of the worker that was gone."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "vicflow.flows.cli.main", "worker", "--pool", f"killed-{os.getpid()}"],
        env={**cli_env, "VICFLOW_HOME": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(children_of(worker.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    children = children_of(worker.pid)
    assert len(children) == 2, f"the fork server and the prefect worker did not start: {children}"
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.3)
    left = [pid for pid in children if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived `vicflow worker`: {left}"
