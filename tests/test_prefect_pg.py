"""Prefect's server on PostgreSQL (Debian's postgresql, a cluster of the test's own): a vicflow run through it
is stored in PostgreSQL, and the server answers as on SQLite (docs/scale-out.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.testbed import REPO, prefect_pg

pytestmark = pytest.mark.prefect


def test_a_run_through_a_prefect_server_on_postgresql_is_stored_there():
    with prefect_pg.running() as stack:
        assert stack.query("SELECT extname FROM pg_extension WHERE extname = 'pg_trgm'") == [["pg_trgm"]]
        env = {**stack.env(), "VICFLOW_PLUGINS": "tests.plugins.engine_steps", "PYTHONPATH": str(REPO)}
        result = subprocess.run(
            [sys.executable, "-m", "vicflow.flows.cli.main", "run", "tests/data/engine-demo.yaml"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs = stack.query("SELECT id, state_type FROM flow_run")
        assert [state for _, state in runs] == ["COMPLETED"], runs
        tasks = stack.query(f"SELECT name, state_type FROM task_run WHERE flow_run_id = '{runs[0][0]}'")
        assert tasks and all(state == "COMPLETED" for _, state in tasks), tasks
