"""A `vicflow run` holding its target, killed with SIGKILL, under Prefect's default temporary server (no
PREFECT_API_URL: each `vicflow run` starts its own server process on PREFECT_HOME's SQLite database).

The next run on that target must not wait for good: "its slot is freed within 60s" has to hold here as on a
shared `prefect server` (tests/test_events.py has that case). Found by a trial: the next run was still waiting
128 s later, the limit still at `active_slots: 1` (the temporary server runs no lease repossessor, and the killed
run's lease lived in its own server's memory, which died with it)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from vicflow.flows.on_prefect.flow import LEASE_SECONDS

from tests.helpers import free_port

# a fault trial (a run SIGKILLed, three temporary Prefect servers): `make test`, not `make check`
pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
LIMIT = "vicflow-target-killed-holder-here"


def blueprint(folder: Path, name: str, port: int, deadline: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntarget: killed-holder-here\nsteps:\n  - id: wait\n    uses: health_check\n"
        f"    with: {{kind: tcp, host: 127.0.0.1, port: {port}, deadline_seconds: {deadline}, interval_seconds: 1}}\n"
    )
    return path


def query(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql).fetchall()


def test_a_killed_holders_target_is_freed_under_the_temporary_server(tmp_path):
    home = tmp_path / "prefect"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "VICFLOW_PLUGINS"}
    env.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(home), VICFLOW_STATE_DIR=str(tmp_path / "state"))
    # Prefect gives its temporary server 20 s to start; on a shared 2-core machine it may take longer
    env.update(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")

    def run(path: Path, log: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "vicflow.flows.cli.main", "run", str(path)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / log, "wb"),  # noqa: SIM115 (the child's whole life)
            start_new_session=True,
        )

    # a run on the target that fails (nothing listens, 1 s) gives its slot back and is not taken for a dead holder
    failed = run(blueprint(tmp_path, "failing", free_port(), 1), "failing.txt")
    assert failed.wait(timeout=300) == 1, (tmp_path / "failing.txt").read_text()[-2000:]

    holder = run(blueprint(tmp_path, "holder", free_port(), 600), "holder.txt")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if query(home, f"SELECT active_slots FROM concurrency_limit_v2 WHERE name = '{LIMIT}'") == [(1,)]:
                break
        except sqlite3.Error:
            pass  # the database is being made
        time.sleep(0.5)
    else:
        holder.kill()
        raise AssertionError(f"the holder never took its slot: {(tmp_path / 'holder.txt').read_text()[-2000:]}")
    time.sleep(1)  # the holder is in its step, holding the slot
    os.killpg(holder.pid, signal.SIGKILL)  # the run and, with it, its temporary server (PR_SET_PDEATHSIG)
    holder.wait(10)
    killed = time.monotonic()

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        waiter = run(blueprint(tmp_path, "waiter", listening.getsockname()[1], 60), "waiter.txt")
        try:
            code = waiter.wait(timeout=LEASE_SECONDS + 90)
        except subprocess.TimeoutExpired:
            os.killpg(waiter.pid, signal.SIGKILL)
            waiter.wait(10)
            slots = query(home, f"SELECT active_slots FROM concurrency_limit_v2 WHERE name = '{LIMIT}'")
            raise AssertionError(
                f"the next run still waited {time.monotonic() - killed:.0f}s after the holder was killed "
                f"(the limit's active slots: {slots})"
            ) from None
    waited = time.monotonic() - killed
    assert code == 0, (tmp_path / "waiter.txt").read_text()[-3000:]
    assert query(home, f"SELECT active_slots FROM concurrency_limit_v2 WHERE name = '{LIMIT}'") == [(0,)]
    logs = [m for (m,) in query(home, "SELECT message FROM log") if "killed-holder-here" in m]
    print(f"\nthe next run went ahead {waited:.0f}s after the holder was killed; it logged: {logs}")
    killed_lines = [m for m in logs if "was killed while it held target 'killed-holder-here'" in m]
    assert len(killed_lines) == 1, logs  # the holder; not the run that failed
