"""A private dockerd for the tests: Debian's docker.io on its own socket, data root and ports.

It listens on a unix socket, on tcp://127.0.0.1:2376 with TLS verification (dockerd's own TLS,
certificates generated for the test bed) and, through socat, on tcp://127.0.0.1:2375 without TLS.
tcp://127.0.0.2:2375 answers like a VCH 1.1 (tests/testbed/vchproxy.py), in front of the same engine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The engine's own folders: the test bed's, or under `pytest -n` the worker's (tests/testbed/hosts.py).
from tests.testbed import ENGINE_RUN as RUN
from tests.testbed import ENGINE_STATE as STATE
from tests.testbed import TestbedError, say

SOCKET = RUN / "docker.sock"
PLAIN = "tcp://127.0.0.1:2375"
TLS = "tcp://127.0.0.1:2376"
VCH = "tcp://127.0.0.2:2375"  # a VCH's address and no-TLS port (loopback range)
CERTS = STATE / "docker-certs"


@dataclass
class Engine:
    socket_url: str
    plain_url: str
    tls_url: str
    cert_dir: str
    vch_url: str = VCH
    started_here: bool = False

    def client(self, which: str = "socket", timeout: int = 120):
        """A DockerClient on the socket, the plain TCP port, or the TLS port (with the test client cert)."""
        import docker
        from vicflow.plugins.clients.dockerapi import DockerParams, docker_client

        if which == "socket":
            return docker.DockerClient(base_url=self.socket_url, timeout=timeout)
        if which == "plain":
            return docker.DockerClient(base_url=self.plain_url, timeout=timeout)
        return docker_client(
            DockerParams(docker_host=self.tls_url, cert_path=self.cert_dir, api_timeout_seconds=timeout)
        )


def _ping(url: str) -> bool:
    import docker

    try:
        docker.DockerClient(base_url=url, timeout=3).ping()
        return True
    except Exception:
        return False


def _ping_vch() -> bool:
    import requests

    try:
        return requests.get(f"http://{VCH.removeprefix('tcp://')}/_ping", timeout=3).status_code == 200
    except requests.RequestException:
        return False


def engine() -> Engine:
    return Engine(f"unix://{SOCKET}", PLAIN, TLS, str(CERTS))


def _certs() -> None:
    if (CERTS / "key.pem").exists():
        return
    from vicflow.plugins.clients.certs import generate

    say(f"generating the test bed's Docker TLS certificates in {CERTS}")
    generate(CERTS, "127.0.0.1", ["localhost", "127.0.0.1"])


def _spawn(cmd: list[str], log: Path, pidfile: Path) -> None:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    pidfile.write_text(str(proc.pid))


def _dockerd_command() -> list[str]:
    """dockerd on the test bed's socket and TLS port, with its state under the test bed's directory."""
    return [
        "dockerd",
        "--host",
        f"unix://{SOCKET}",
        "--host",
        TLS,
        "--tlsverify",
        "--tlscacert",
        str(CERTS / "ca.pem"),
        "--tlscert",
        str(CERTS / "server-cert.pem"),
        "--tlskey",
        str(CERTS / "server-key.pem"),
        "--data-root",
        str(STATE / "docker"),
        "--exec-root",
        str(RUN / "exec"),
        "--pidfile",
        str(RUN / "dockerd.pid"),
        "--storage-driver",
        "overlay2",
    ]


def start(timeout: float = 90) -> Engine:
    """Start dockerd (and the plain-TCP forwarder) unless they already answer."""
    eng = engine()
    if _ping(eng.socket_url) and _ping(eng.plain_url) and _ping_vch():
        return eng
    for tool, package in (("dockerd", "docker.io"), ("socat", "socat")):
        if not shutil.which(tool):
            raise TestbedError(f"{tool} is not installed: apt-get install {package}")
    if os.geteuid() != 0:
        raise TestbedError("dockerd must be started as root (run .ci/run or make testbed as root)")
    RUN.mkdir(parents=True, exist_ok=True)
    (STATE / "docker").mkdir(parents=True, exist_ok=True)
    _certs()
    if not _ping(eng.socket_url):
        say(f"starting dockerd on {SOCKET}, {TLS} (TLS verify); log {STATE / 'dockerd.log'}")
        _spawn(
            _dockerd_command(),
            STATE / "dockerd.log",
            RUN / "dockerd.launcher.pid",
        )
        eng.started_here = True
    if not _ping_vch():
        say(f"a VCH 1.1's Docker API on {VCH} (tests/testbed/vchproxy.py)")
        _spawn(
            [
                sys.executable,
                "-m",
                "tests.testbed.vchproxy",
                "--listen",
                VCH.removeprefix("tcp://"),
                "--socket",
                str(SOCKET),
            ],
            STATE / "vchproxy.log",
            RUN / "vchproxy.pid",
        )
    if not _ping(eng.plain_url):
        say(f"forwarding {PLAIN} (no TLS) to the socket with socat")
        _spawn(
            ["socat", "TCP-LISTEN:2375,bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{SOCKET}"],
            STATE / "socat.log",
            RUN / "socat.pid",
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ping(eng.socket_url) and _ping(eng.plain_url) and _ping_vch():
            return eng
        time.sleep(0.5)
    log = (STATE / "dockerd.log").read_text(errors="replace")[-3000:]
    raise TestbedError(f"dockerd did not answer within {timeout}s; the end of its log:\n{log}")


def stop() -> None:
    """Stop what start() launched (dockerd and socat)."""
    for name in ("vchproxy.pid", "socat.pid", "dockerd.pid"):
        pidfile = RUN / name
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text().strip() or 0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if _gone(pid):
                    break
                time.sleep(0.2)
        pidfile.unlink(missing_ok=True)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited; a child of this process is reaped (a zombie still answers kill(pid, 0))."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def restart(timeout: float = 90) -> None:
    """Stop dockerd (as a host reboot or a package upgrade does) and start it again with the same command.

    The socat forwarder and the VCH proxy stay up; they answer again once dockerd does.
    """
    pidfile = RUN / "dockerd.pid"
    pid = int(pidfile.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _gone(pid) and time.monotonic() < deadline:  # reaps it if an earlier restart() here started it
        time.sleep(0.1)
    deadline = time.monotonic() + timeout
    log = STATE / "dockerd.log"
    for repaired in (False, True):
        start_of_log = log.stat().st_size if log.exists() else 0
        _spawn(_dockerd_command(), log, RUN / "dockerd.launcher.pid")
        while time.monotonic() < deadline:
            if _ping(engine().socket_url):
                return
            with open(log, "rb") as tail:
                tail.seek(start_of_log)
                crashed = b"libnetwork.(*controller).reservePools" in tail.read()
            if crashed and not repaired:
                # Debian's dockerd 20.10 stopped in the middle of a network change can leave a network without
                # its IPAM data and then panics at every start. Its known repair: drop the network store
                # (networks are created again by the next compose_up). Said here, so that a run shows it.
                say("dockerd panics at start (libnetwork reservePools): removing its network store, starting again")
                (STATE / "docker" / "network" / "files" / "local-kv.db").unlink(missing_ok=True)
                break
            time.sleep(0.2)
        else:
            break
    raise TestbedError(f"dockerd did not come back within {timeout}s")
