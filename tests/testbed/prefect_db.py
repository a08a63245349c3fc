"""A Prefect SQLite database already migrated to the installed Prefect's head, made once and copied for each server.

A fresh Prefect server runs its 116 SQLite migrations before it answers: about 7 s of CPU, and the suite starts
a dozen servers (the test harness on each worker, the stacks, `vicflow run`'s temporary ones). A copy of a
migrated database starts the same server without them (Prefect still checks it is at head: ``alembic upgrade``
finds nothing to do). The copy is made by Prefect itself (`prefect server database upgrade`), kept under
.vicflow/ per Prefect version, and made again when Prefect changes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.testbed import REPO, TestbedError

CACHE = REPO / ".vicflow" / "prefect-db"
# The suite runs many Prefect servers at once on 2 cores: Prefect's defaults (kept in what vicflow ships) for how
# long `vicflow run` waits for its temporary server to start (20 s) and a server for a SQLite lock (10 s, else HTTP
# 503) are too short there. tests/conftest.py sets these for the tests; the stacks pass them to their servers.
BUSY_MACHINE = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PREFECT_SERVER_DATABASE_TIMEOUT": "60"}


def template() -> Path:
    """The migrated database for the installed Prefect, made on first use (one process at a time)."""
    import prefect

    path = CACHE / f"prefect-{prefect.__version__}.db"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be making it
        if path.exists():
            return path
        work = path.with_suffix(f".{os.getpid()}.tmp")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(CACHE / "home"),
            PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{work}",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        result = subprocess.run(
            [str(Path(sys.executable).parent / "prefect"), "server", "database", "upgrade", "-y"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode:
            raise TestbedError(
                f"prefect server database upgrade failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
        with sqlite3.connect(work) as db:  # everything in the one file: the copies are single files
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("PRAGMA journal_mode=DELETE")
        for extra in ("-wal", "-shm"):
            Path(f"{work}{extra}").unlink(missing_ok=True)
        os.replace(work, path)
    return path


def copy_to(path: Path) -> Path:
    """A migrated database at ``path`` (a server's PREFECT_HOME/prefect.db, or the file its URL names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template(), path)
    return path
