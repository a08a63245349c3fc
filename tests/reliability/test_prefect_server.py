"""Faults that need a real Prefect server and worker (tests/testbed/prefect_stack.py): the server goes away in
the middle of a run.  The runs go through the `run-blueprint` deployment and the stack's `vicflow worker`, as a
run started from the UI does.  Two operators pressing Run at once are in test_simultaneous_runs.py, on a stack of
their own (under `make test` the two modules run on two workers at once)."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.reliability.deployment_runs import logs_of, start_run, summary_rows, task_runs, wait_final
from tests.testbed import prefect_stack
from tests.testbed.prefect_stack import ts

pytestmark = [pytest.mark.docker, pytest.mark.prefect, pytest.mark.faults]
OUTAGE_SECONDS = 75  # more than the client's retries (2 + 4 + 8 + 16 + 32 s) and the lease (60 s)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, docker_engine, docker_images):
    with prefect_stack.for_tests(tmp_path_factory.mktemp("server-faults"), docker_engine) as stack:
        yield stack


def leases(stack) -> list[dict]:
    """The target leases the server holds: its lease storage on disk (PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE
    filesystem, one JSON file per lease under the server's PREFECT_HOME, prefect/server/concurrency/lease_storage)."""
    found = []
    for path in (stack.home / "concurrency_leases").glob("*-*.json"):  # <lease id>.json, not expirations.json
        with contextlib.suppress(OSError, ValueError):  # removed or replaced while read
            found.append(json.loads(path.read_text()))
    return found


def renewed_since(lease: dict, since: float) -> bool:
    """Whether the lease was renewed after ``since`` (a renewal sets its expiration to now + the lease's length)."""
    from vicflow.flows.on_prefect.flow import LEASE_SECONDS

    return ts(lease["expiration"]) >= since + LEASE_SECONDS - 1


def wait_leases(stack, condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition(leases(stack)):
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s; leases {leases(stack)}"
        time.sleep(0.5)


def wait_step_running(stack, run_id: str, step: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "RUNNING" in task_runs(stack, run_id).get(step, []):
            return
        time.sleep(0.5)
    raise AssertionError(f"step {step} of run {run_id} never started\n{logs_of(stack, run_id)}")


@contextlib.contextmanager
def gate():
    """A port that is closed until ``open_gate`` (returned) is called: a step waiting on it runs until then."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    servers: list[socket.socket] = []

    def open_gate() -> socket.socket:
        servers.append(socket.create_server(("127.0.0.1", port)))
        return servers[-1]

    try:
        yield port, open_gate
    finally:
        for server in servers:
            server.close()


@contextlib.contextmanager
def health_probes(api: str):
    """While the server is stopped, listen on its port: the event is set when a client asks ``/api/health``
    (what a run that waits to report asks, flows/on_prefect/adapter.py ``wait_for_server``). Every connection is
    closed unanswered, as a port nobody serves would refuse it."""
    address = urlsplit(api)
    probed, stopping = threading.Event(), threading.Event()
    server = socket.create_server((address.hostname, address.port))

    def serve():
        while not stopping.is_set():
            if not select.select([server], [], [], 0.2)[0]:
                continue
            conn = server.accept()[0]
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    if b"/api/health" in conn.recv(4096).split(b"\r\n", 1)[0]:
                        probed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield probed
    finally:
        stopping.set()
        thread.join(5)
        server.close()


def outage_blueprint(folder: Path, gate_port: int, open_port: int, target: str = "server-outage-test") -> Path:
    """Three steps; the middle one waits on the gate, so the server can be stopped while it runs."""
    path = folder / f"{target}.yaml"
    check = "uses: health_check\n    with: {kind: tcp, host: 127.0.0.1, port: %d, deadline_seconds: %d}\n"
    path.write_text(
        f"name: server-outage\ntarget: {target}\nsteps:\n"
        "  - id: before\n    " + check % (open_port, 30)
        + "  - id: gate\n    needs: before\n    " + check % (gate_port, 400)
        + "  - id: after\n    needs: gate\n    " + check % (open_port, 30)
    )  # fmt: skip
    return path


def test_a_server_restart_during_a_run(stack, tmp_path):
    """The server stops while a step runs and comes back on the same database: the run completes and
    reports, each step ran once, and the target's slot is free again for the next run."""
    from vicflow.flows.on_prefect.flow import LEASE_SECONDS

    with gate() as (gate_port, open_gate), socket.create_server(("127.0.0.1", 0)) as always_open:
        path = outage_blueprint(tmp_path, gate_port, always_open.getsockname()[1])
        run_id = start_run(stack, blueprint=str(path))
        wait_step_running(stack, run_id, "gate")
        stack.stop_server()
        down = time.monotonic()
        time.sleep(5)
        stack.start_server()
        back = time.time()
        print(f"\nserver down for {time.monotonic() - down:.0f}s")
        # the run outlives a renewal of its target's lease, which the restarted server must still know
        wait_leases(
            stack,
            lambda found: any(renewed_since(lease, back) for lease in found),
            "the run's lease renewed by the restarted server",
            timeout=LEASE_SECONDS + 60,
        )
        open_gate()
        run = wait_final(stack, run_id)
        assert run["state_type"] == "COMPLETED", f"{run['state_name']}\n{logs_of(stack, run_id)}"
        assert task_runs(stack, run_id) == {"before": ["COMPLETED"], "gate": ["COMPLETED"], "after": ["COMPLETED"]}
        assert {k: r["state"] for k, r in summary_rows(stack, run_id).items()} == dict.fromkeys(
            ["before", "gate", "after"], "completed"
        )
        # the target is free: the next run on it does not wait (the gate is open now)
        started = time.monotonic()
        again = wait_final(stack, start_run(stack, blueprint=str(path)), timeout=120)
        assert again["state_type"] == "COMPLETED", logs_of(stack, again["id"])
        assert time.monotonic() - started < 60, f"the next run waited {time.monotonic() - started:.0f}s for the target"


def test_a_server_gone_longer_than_the_clients_retries_and_the_lease(stack, tmp_path):
    """The server is away for 75 s: longer than Prefect's client retries (about 60 s) and than a target's
    lease (60 s).  Two runs on two targets are in a step when it goes.
    - `done`'s steps finish meanwhile: it gives its slot back, waits for the server, then reports Completed
      with its summary.
    - `held`'s step is still running.  Its lease has expired by the time the server is back: if the server
      revokes it before the run renews it, Prefect cancels the run rather than let a second one share the
      target (Crashed), and a resume through the worker completes it without running again the step that
      had completed; if the renewal comes first, the run goes on and completes.  Either is what the issue
      asks; the test says which happened."""
    with (
        gate() as (done_port, open_done),
        gate() as (held_port, open_held),
        socket.create_server(("127.0.0.1", 0)) as always_open,
    ):
        done_path = outage_blueprint(tmp_path, done_port, always_open.getsockname()[1], "outage-done")
        held_path = outage_blueprint(tmp_path, held_port, always_open.getsockname()[1], "outage-held")
        done, held = start_run(stack, blueprint=str(done_path)), start_run(stack, blueprint=str(held_path))
        wait_step_running(stack, done, "gate")
        wait_step_running(stack, held, "gate")
        stack.stop_server()
        with health_probes(stack.api) as probed:
            gate_open = open_done()  # done's steps finish while nobody can hear them
            # the outage is counted from the moment done's gate step connects (its step then finishes): on a busy
            # machine the step's next attempt may come late, and the client's retries would outlast the outage
            assert select.select([gate_open], [], [], 120)[0], "done's gate step did not connect within 120 s"
            gate_connected = time.monotonic()
            # and it lasts until done has run its steps and waits to report: it asks the server's /api/health.
            # Every call before that retries for about 60 s on its own, so on a busy machine a fixed outage could
            # end before the run got there, and it found the server back
            assert probed.wait(400), "done never asked whether the server was back"
            time.sleep(max(5.0, gate_connected + OUTAGE_SECONDS - time.monotonic()))
        outage = time.monotonic() - gate_connected
        stack.start_server()
        back = time.time()

        run = wait_final(stack, done, timeout=180)
        assert run["state_type"] == "COMPLETED", f"{run['state_name']}\n{logs_of(stack, done)}"
        rows = summary_rows(stack, done)
        assert {k: r["state"] for k, r in rows.items()} == dict.fromkeys(["before", "gate", "after"], "completed")
        stack.wait_log(done, "the Prefect server did not answer for", timeout=60)

        # held's next renewal (every 45 s) meets its lease, expired meanwhile: revoked (gone) or renewed
        wait_leases(
            stack,
            lambda found: all(renewed_since(lease, back) for lease in found),
            "held's lease renewed or revoked",
            timeout=120,
        )
        open_held()
        ended = wait_final(stack, held, timeout=240)
        if ended["state_type"] == "COMPLETED":
            assert task_runs(stack, held) == {"before": ["COMPLETED"], "gate": ["COMPLETED"], "after": ["COMPLETED"]}
            outcome = "held completed after the outage"
        else:
            assert ended["state_type"] in ("CRASHED", "CANCELLED"), f"{ended['state_name']}\n{logs_of(stack, held)}"
            resumed = wait_final(stack, start_run(stack, blueprint=str(held_path), resume=held), timeout=180)
            assert resumed["state_type"] == "COMPLETED", logs_of(stack, resumed["id"])
            rows = summary_rows(stack, resumed["id"])
            assert {k: r["state"] for k, r in rows.items()} == {
                "before": "cached",
                "gate": "completed",
                "after": "completed",
            }
            outcome = f"held {ended['state_name']}, its resume completed with 'before' cached"
        print(f"\nafter a {outage:.0f}s outage: done {run['state_name']} and reported; {outcome}")
