"""Each pytest-xdist worker of `make test` as a host of its own: a network namespace with its own loopback.

The tests use the addresses and names a user's machine has: dockerd on 127.0.0.1:2375 and :2376, the VCH endpoint
on 127.0.0.2:2375, Harbor on 127.0.0.1:18080 and :18443, the seed's containers `gogsapp` and `gogsdb`, and
tests/reliability/test_docker_faults.py restarts dockerd. Inside a namespace of its own (``ip netns``), a worker
has every one of those to itself: its own dockerd (its own socket, data root and exec root under
``ENGINE_RUN``/``ENGINE_STATE``, see tests/testbed/__init__.py; its own docker0 bridge, address pool and iptables,
since those belong to the namespace), its own VCH endpoint, its own ports. So two workers deploy `gogsapp` at once,
and a dockerd restart stops only its own worker's containers.

The worker's main thread (where pytest-xdist runs the tests) enters the namespace at start (setns(2) changes the
calling thread); everything it starts afterwards (servers, dockerd, threads) is inside. The file system stays
shared: the image cache and the simulator binary are reused, and what lives at a fixed path (Harbor's folder,
/etc/docker/certs.d) is grouped onto one worker by tests/conftest.py.

Needs root and iproute2 (what `make test` has). `VICFLOW_TESTBED_HOSTS=0` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.testbed import RUN, WORKER, TestbedError

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def namespace(worker: str = WORKER) -> str:
    return f"vicflow-{worker}"


def _ip(*argv: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if check and result.returncode:
        raise TestbedError(f"ip {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def claim() -> int:
    """One session of workers on this machine at a time (their namespaces and engines are named gw0, gw1, ...):
    the controller holds this lock until it exits. Returns the lock's descriptor."""
    RUN.mkdir(parents=True, exist_ok=True)
    fd = os.open(RUN / "hosts.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TestbedError(
            f"another `pytest -n` session holds {RUN / 'hosts.lock'} (its workers' engines have the same names): "
            "run the suite under `flock /tmp/vicflow-docker.lock`, one at a time"
        ) from None
    return fd


def _pids(name: str) -> list[int]:
    if not (NETNS_DIR / name).exists():
        return []
    return [int(pid) for pid in _ip("netns", "pids", name, check=False).split() if int(pid) != os.getpid()]


def _end(pids: list[int], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL what is left: processes of this worker's own namespace (none of another's)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            if not pids:
                return
            time.sleep(0.1)


def _zombie(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    try:
        return ") Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


def enter(worker: str = WORKER) -> str:
    """Make this worker's namespace afresh (what a worker of an earlier, interrupted session left in it is
    ended first: the lock of ``claim`` says that session is gone) and move the calling thread into it."""
    if os.geteuid() != 0:
        raise TestbedError("a worker's own network namespace needs root (run make test as root, or -n 0)")
    name = namespace(worker)
    _end(_pids(name))
    _ip("netns", "del", name, check=False)
    _ip("netns", "add", name)
    _ip("-n", name, "link", "set", "lo", "up")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise TestbedError(f"setns into {name}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
    return name


def leave(worker: str = WORKER) -> None:
    """End what is still running in the worker's namespace (a server a failed test left) and remove it."""
    name = namespace(worker)
    _end(_pids(name))
    _ip("netns", "del", name, check=False)
