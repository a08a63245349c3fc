"""How ``vicflow run`` ends when it is killed: the flow run marked Crashed, no Prefect server left behind.

Without PREFECT_API_URL, Prefect starts a temporary server as a child process (``SubprocessASGIServer``) and
stops it from ``atexit``. Neither a SIGTERM (Prefect's handler unwinds the flow, and the unwinding waits for
every step's thread) nor a SIGKILL got there, and the server was left running as an orphan. Here a SIGTERM
marks the flow run Crashed, says how to resume it, stops the server and exits 143; and the server's process
asks Linux to send it SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), which covers SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

from prefect.client.orchestration import get_client
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL
from prefect.states import Crashed
from vicflow.flows.on_prefect.forkserver import die_with_parent


@contextmanager
def _popen_dies_with_parent():
    original = subprocess.Popen
    subprocess.Popen = partial(original, preexec_fn=die_with_parent)  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        subprocess.Popen = original  # type: ignore[misc]


def exit_now(code: int) -> None:
    """Stop the temporary server and exit at once: step threads still blocked in I/O must not hold the exit."""
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()
    sys.stderr.flush()
    os._exit(code)


def _mark_crashed(flow_run_id: str) -> None:
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message="vicflow run received SIGTERM"), force=True)
    except Exception as exc:  # the server may be the one going away
        print(f"vicflow: could not mark flow run {flow_run_id} Crashed: {exc}", file=sys.stderr)


_on_sigterm: Callable | None = None  # set by install(): this process is `vicflow run`


def reclaim_sigterm() -> None:
    """Inside the flow: put install()'s handler back over Prefect's own.

    Prefect's handler raises into the flow and unwinds it, and the unwinding waits for every step's thread,
    which may be blocked for minutes in I/O. Only for ``vicflow run``: a worker's runs keep Prefect's handler,
    which its cancellation relies on.
    """
    if _on_sigterm is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def install(blueprint: str, flow_run_id: Callable[[], str | None]) -> None:
    """Before the first Prefect call. On SIGTERM: mark the flow run Crashed, say how to resume it, stop the
    temporary server and exit 143 (Prefect's own unwinding would wait for every step thread to finish).
    Without an API URL, the temporary server also dies with this process on SIGKILL."""

    def terminated(signum, frame):
        if sys.stderr.isatty():  # the progress display hid the cursor (rich itself may hold its lock here)
            sys.stderr.write("\x1b[?25h\n")
        run = flow_run_id()
        if run:
            print(
                f"vicflow: stopped by SIGTERM; flow run {run} is marked Crashed. "
                f"Resume it with: vicflow run {blueprint} --resume {run}",
                file=sys.stderr,
            )
        else:
            print("vicflow: stopped by SIGTERM before the flow run started; nothing ran", file=sys.stderr)
        if run:
            _mark_crashed(run)
        exit_now(128 + signum)

    global _on_sigterm
    _on_sigterm = terminated
    signal.signal(signal.SIGTERM, terminated)
    if PREFECT_API_URL.value():
        return

    class ServerThatDiesWithItsParent(SubprocessASGIServer):
        def _run_uvicorn_command(self):
            with _popen_dies_with_parent():  # only the server's start: nothing else runs a process meanwhile
                return super()._run_uvicorn_command()

    # SubprocessASGIServer() returns the instance registered for its port (None: any free one), so every later
    # SubprocessASGIServer() in Prefect gets this one
    ServerThatDiesWithItsParent()
