"""A Prefect server on PostgreSQL: Debian's `postgresql` (a cluster of its own under a state directory, on
127.0.0.1, with pg_trgm) and `prefect server start` on it (PREFECT_SERVER_DATABASE_CONNECTION_URL).

`python -m tests.testbed prefect-pg` starts both and waits; tests use ``running()``. docs/scale-out.md shows
the same setup on a team's machines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.testbed import TestbedError, say
from tests.testbed.prefect_db import BUSY_MACHINE
from tests.testbed.prefect_stack import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path:
    versions = sorted(PG_ROOT.glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not versions:
        raise TestbedError("PostgreSQL is not installed: apt-get install postgresql (make apt does)")
    return versions[-1].parent


def as_postgres(*argv: str, timeout: float = 120) -> str:
    """Run a PostgreSQL program as the postgres user (initdb and the server refuse root)."""
    result = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise TestbedError(f"{Path(argv[0]).name} failed: {(result.stderr or result.stdout)[-2000:]}")
    return result.stdout


@dataclass
class PrefectOnPostgres:
    folder: Path
    pg_port: int
    api_port: int
    api_host: str = "127.0.0.1"  # another address (a test bridge's) for workers on other hosts
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    server: subprocess.Popen | None = None
    server_env: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://prefect:{self.password}@127.0.0.1:{self.pg_port}/prefect"

    @property
    def api(self) -> str:
        return f"http://{self.api_host}:{self.api_port}/api"

    def env(self) -> dict[str, str]:
        """The environment of a client (CLI, worker) of this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_API_URL=self.api, PREFECT_HOME=str(self.folder / "home"))
        env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", **BUSY_MACHINE)
        return env

    def http(self) -> dict:
        """What ``requests`` needs to be a client of this server (none here: a plain, open API on loopback)."""
        return {}

    def start_postgres(self) -> None:
        data, bin_dir = self.folder / "pgdata", pg_bin()
        shutil.chown(self.folder, "postgres")
        (self.folder / "pwfile").write_text("postgres-" + self.password)
        shutil.chown(self.folder / "pwfile", "postgres")
        as_postgres(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={self.folder / 'pwfile'}",
        )
        self.start_database()
        psql = [
            str(bin_dir / "psql"),
            "-h",
            str(self.folder),
            "-p",
            str(self.pg_port),
            "-U",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ]
        as_postgres(*psql, "-c", f"CREATE ROLE prefect LOGIN PASSWORD '{self.password}'")
        as_postgres(*psql, "-c", "CREATE DATABASE prefect OWNER prefect")
        as_postgres(*psql, "-d", "prefect", "-c", "CREATE EXTENSION IF NOT EXISTS pg_trgm")

    def start_database(self) -> None:
        """PostgreSQL itself (again, after ``stop_database``)."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {self.folder}"
        data, log = self.folder / "pgdata", self.folder / "pg.log"
        as_postgres(str(pg_bin() / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")

    def stop_database(self) -> None:
        """Stop PostgreSQL (a fast shutdown: its connections are cut), as a database host that went away."""
        as_postgres(str(pg_bin() / "pg_ctl"), "-D", str(self.folder / "pgdata"), "-m", "fast", "-w", "stop")

    def start_server(self, timeout: float = 180) -> None:
        env = self.env()
        env.update(
            PREFECT_SERVER_DATABASE_CONNECTION_URL=self.database_url,
            PREFECT_SERVER_API_HOST=self.api_host,
            PREFECT_SERVER_API_PORT=str(self.api_port),
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem",
        )
        env.update(self.server_env)
        log = open(self.folder / "server.log", "w")  # noqa: SIM115 (the server's whole life)
        self.server = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.server.poll() is not None:
                raise TestbedError(f"prefect server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.api}/health", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TestbedError(
            f"prefect server on PostgreSQL not up in {timeout:g}s: {(self.folder / 'server.log').read_text()[-2000:]}"
        )

    def query(self, sql: str) -> list[tuple]:
        """Ask the database directly (what the server stored)."""
        import pg8000.native

        connection = pg8000.native.Connection(
            "prefect", password=self.password, host="127.0.0.1", port=self.pg_port, database="prefect", timeout=30
        )
        try:
            return connection.run(sql)
        finally:
            connection.close()

    def stop(self) -> None:
        if self.server and self.server.poll() is None:
            os.killpg(self.server.pid, 15)
            try:
                self.server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, 9)
                self.server.wait(10)
        if (self.folder / "pgdata" / "postmaster.pid").exists():
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(pg_bin() / "pg_ctl"),
                    "-D",
                    str(self.folder / "pgdata"),
                    "-m",
                    "fast",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def running(api_host: str = "127.0.0.1", **server_env: str):
    """PostgreSQL and a Prefect server on it (listening on ``api_host``; ``server_env``: more server settings),
    both stopped (and their files removed) afterwards."""
    stack = PrefectOnPostgres(Path(tempfile.mkdtemp(prefix="vicflow-pg-")), free_port(), free_port(), api_host)
    stack.server_env = server_env
    try:
        stack.start_postgres()
        stack.start_server()
        yield stack
    finally:
        stack.stop()


def serve() -> None:
    """`python -m tests.testbed prefect-pg`: start both, print how to use them, wait for Ctrl-C."""
    with running() as stack:
        say(f"PostgreSQL on 127.0.0.1:{stack.pg_port} (database prefect, files in {stack.folder})")
        say(f"Prefect server on it: PREFECT_API_URL={stack.api}; Ctrl-C stops both")
        try:
            while stack.server and stack.server.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
