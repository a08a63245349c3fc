"""Start flow-run processes in milliseconds: fork them from a process that has Prefect and vicflow imported.

A process worker starts every flow run as ``python -m prefect.engine``, and that process spends about
2 s importing Prefect and the flow before the run turns Running: most of an event's latency.
``vicflow worker`` runs a fork server beside ``prefect worker start``: one single-threaded process
that imports all of that once and forks a child per run. The deployments' command, ``vicflow-engine``
(``launch`` below), hands its stdin/stdout/stderr, environment, working directory and arguments to
the fork server, forwards signals to the child and exits with the child's status, so the worker sees
exactly what ``python -m prefect.engine`` would show it. Without a fork server it becomes that command.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import random
import runpy
import select
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

SOCKET_ENV = "VICFLOW_FORKSERVER"
# what `python -m prefect.engine`, the flow and the built-in steps import
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect._internal.metrics",
    "vicflow.flows.on_prefect.flow",
    "docker",
    "pyVmomi",
)
# the tracing extra, when installed: a run that traces would spend about a second importing it (docs/tracing.md)
PRELOAD_IF_INSTALLED = (
    "vicflow.flows.observability.tracing_sdk",
    "opentelemetry.instrumentation.requests",
    "opentelemetry.instrumentation.threading",
)
REQUEST_TIMEOUT = 10  # seconds a launcher has to send its request
STARTED_TIMEOUT = 60  # seconds a launcher waits for the fork server to say which process runs its flow
ORPHAN_GRACE = 10  # seconds a run whose launcher died has to end after SIGTERM before SIGKILL
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec (a Popen preexec_fn)
    """Ask Linux to send this process SIGTERM when its parent dies (``PR_SET_PDEATHSIG``), even of SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# ------------------------------------------------------------------------------------------- launcher


def launch() -> None:
    """``vicflow-engine [ARGS]``: ``python -m prefect.engine [ARGS]``, forked from the fork server."""
    path = os.environ.get(SOCKET_ENV)
    server = _connect(path) if path else None
    if server is None:
        os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[1:]])
    # a signal that comes before the run's pid is known is held, then forwarded: the run gets it as it would from
    # `python -m prefect.engine` (without this the launcher died of it and its run was killed ORPHAN_GRACE later)
    forwarded = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    server.settimeout(STARTED_TIMEOUT)
    try:
        socket.send_fds(server, [b"r"], [0, 1, 2])
        request = {"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}
        server.sendall(json.dumps(request).encode() + b"\n")
        answers = server.makefile("rb")
        pid = int(answers.readline() or 0)
    except TimeoutError:
        sys.exit(f"vicflow-engine: the fork server at {path} started no run in {STARTED_TIMEOUT} s (see its log)")
    if not pid:
        sys.exit(f"vicflow-engine: the fork server at {path} refused the run (see its log)")
    server.settimeout(None)  # the run takes as long as it takes
    for sig in forwarded:
        signal.signal(sig, lambda received, _frame: os.kill(pid, received))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
    status = answers.readline()
    if not status:
        sys.exit(f"vicflow-engine: the fork server at {path} went away while flow run process {pid} ran")
    code = int(status)
    if code < 0:  # killed by a signal: die the same way, as the child did
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _connect(path: str) -> socket.socket | None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.connect(path)
        return server
    except OSError as exc:
        server.close()
        print(f"vicflow-engine: no fork server at {path} ({exc}); running python -m prefect.engine", file=sys.stderr)
        return None


# --------------------------------------------------------------------------------------------- worker


def run_worker(pool: str, name: str | None = None, limit: int | None = None, metrics_port: int | None = None) -> int:
    """``prefect worker start --pool POOL --type process`` with a fork server for its runs; both stop together.
    ``limit`` caps the runs at once: without it the first worker to poll takes every scheduled run it sees.
    ``metrics_port`` (or VICFLOW_METRICS_ADDR): serve the runs' Prometheus metrics (flows/observability/metrics.py)."""
    # the worker's alone: they would cost `vicflow-engine`, which imports this module, +8 ms on its 15 ms
    import shutil
    import subprocess
    import tempfile

    from vicflow.flows.observability import metrics  # start-up of `vicflow-engine`: +158 ms (prometheus_client)

    bin_dir = Path(sys.executable).parent
    path = os.path.join(tempfile.mkdtemp(prefix="vicflow-worker-"), "forkserver.sock")
    # vicflow-engine (the deployments' command) is found next to this Python
    env = {**os.environ, SOCKET_ENV: path, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    where, numbers = metrics.address(metrics_port), None
    if where:  # the fork server, prefect worker and every run write their numbers there; this process serves them
        numbers = metrics.worker_dir()
        env[metrics.MULTIPROC_ENV] = numbers
        metrics.serve_worker(where, numbers)
        print(f"vicflow worker: metrics on http://{where[0]}:{where[1]}/metrics", file=sys.stderr, flush=True)
    # both children die with `vicflow worker`, even when it is SIGKILLed: an orphaned `prefect worker` would
    # go on taking runs with what is by then a stale environment
    server = subprocess.Popen(
        [sys.executable, "-m", "vicflow.flows.on_prefect.forkserver", path],
        env=env,
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    if server.stdout is None or server.stdout.readline().strip() != b"ready":
        server.wait(timeout=30)
        print(f"vicflow worker: the fork server did not start (exit {server.returncode})", file=sys.stderr)
        return 1
    options = [*(["--name", name] if name else []), *(["--limit", str(limit)] if limit else [])]
    worker = subprocess.Popen(
        [str(bin_dir / "prefect"), "worker", "start", "--pool", pool, "--type", "process", *options],
        env=env,
        preexec_fn=die_with_parent,
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.terminate())
    try:
        return worker.wait()
    except KeyboardInterrupt:
        worker.send_signal(signal.SIGINT)
        return worker.wait()
    finally:
        server.terminate()
        server.wait(timeout=30)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(path))
        if numbers and not os.environ.get(metrics.MULTIPROC_ENV):  # the folder it made (not one it was given)
            shutil.rmtree(numbers, ignore_errors=True)


# ---------------------------------------------------------------------------------------- fork server


def serve(path: str) -> None:
    """Import PRELOAD, listen on ``path`` (mode 0600) and fork one child per launcher until SIGTERM."""
    for module in PRELOAD:
        importlib.import_module(module)
    for module in PRELOAD_IF_INSTALLED:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    if threading.active_count() != 1:  # a thread would be lost in every child, holding whatever lock it held
        sys.exit(f"fork server: importing {PRELOAD} started threads {threading.enumerate()}; forking is unsafe")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        listener.bind(path)
    finally:
        os.umask(old_umask)
    listener.listen(16)
    launchers: dict[int, socket.socket] = {}  # child pid -> its launcher's connection
    orphaned: dict[int, float] = {}  # child pid -> when its launcher was found dead
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    print("ready", flush=True)
    try:
        while not stopping:
            readable, _, _ = select.select([listener, *launchers.values()], [], [], 0.2)
            for sock in readable:
                if sock is listener:
                    _start_child(listener, launchers)
                else:  # a launcher only ever closes: it was killed, so stop its run too
                    pid = next(p for p, s in launchers.items() if s is sock)
                    orphaned.setdefault(pid, time.monotonic())
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
            # Prefect's own SIGTERM handler reports the run to the API before it exits; with the API gone that
            # waits on its timeouts, so a run still there ORPHAN_GRACE seconds after its launcher died is killed
            for pid, since in list(orphaned.items()):
                if pid not in launchers:
                    del orphaned[pid]
                elif time.monotonic() - since > ORPHAN_GRACE:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            _reap(launchers)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _start_child(listener: socket.socket, launchers: dict[int, socket.socket]) -> None:
    conn, _ = listener.accept()
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        _, fds, _, _ = socket.recv_fds(conn, 1, 3)
        request = json.loads(conn.makefile("rb").readline())
    except (OSError, ValueError) as exc:
        print(f"fork server: dropped a launcher that sent no valid request: {exc}", file=sys.stderr, flush=True)
        conn.close()
        return
    # SIGTERM is held from the fork until the child has dropped the server's handler: a launcher killed at once
    # (its run's SIGTERM sent right after the fork) would otherwise meet that handler and leave the run orphaned
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        listener.close()
        for other in launchers.values():
            other.close()
        conn.close()
        _run_engine(fds, request)  # never returns
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    for fd in fds:
        os.close(fd)
    conn.settimeout(None)
    conn.sendall(f"{pid}\n".encode())
    launchers[pid] = conn


def _reap(launchers: dict[int, socket.socket]) -> None:
    while launchers:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        conn = launchers.pop(pid, None)
        if conn is not None:
            process_ended(pid)
            with contextlib.suppress(OSError):  # the launcher may be gone
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def process_ended(pid: int) -> None:
    """A run's process is gone: its live gauges are dropped from the worker's metrics (observability/metrics.py)."""
    from vicflow.flows.observability import metrics  # preloaded here; `vicflow-engine`: +158 ms

    metrics.process_ended(pid)


def _exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives a process: the number, 0 for None, 1 for anything else (a message)."""
    if isinstance(code, int):
        return code
    if code is None:
        return 0
    return 1


def _run_engine(fds: list[int], request: dict) -> None:
    """In the child: become the launcher's process (stdio, cwd, environment), run prefect.engine, exit."""
    # preloaded in the fork server (PRELOAD): costs nothing here; `vicflow-engine` (the launcher): +2.2 s (Prefect)
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin, sys.stdout, sys.stderr = (
        os.fdopen(n, mode, closefd=False) for n, mode in ((0, "r"), (1, "w"), (2, "w"))
    )
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    random.seed()  # not the fork server's sequence
    sys.argv = ["prefect.engine", *request["argv"]]
    code = 0
    try:  # settings were read from the fork server's environment at import: read them again
        with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
            # prefect.engine is imported already (by prefect.flow_engine); running it as __main__ is intended
            warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules", RuntimeWarning)
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = _exit_status(exc.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()  # Prefect flushes its logs and events here
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(sys.argv[1])
