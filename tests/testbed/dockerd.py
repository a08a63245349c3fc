"""A private dockerd for the tests: Debian's docker.io on its own socket, data root and ports.

It listens on a unix socket, on tcp://127.0.0.1:2376 with TLS verification (dockerd's own TLS,
certificates generated for the test bed) and, through socat, on tcp://127.0.0.1:2375 without TLS.
tcp://127.0.0.2:2375 answers as a VCH 1.1.1 does (tests/testbed/vchproxy/), in front of the same engine;
``VICFLOW_TESTBED_VCH_IP`` moves it (an engineer's own endpoint beside the shared one). A VCH with TLS gets its
own endpoint on 2376 from the appliance harness (``serve_vch``), through the same personality.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from tests.testbed import REPO, TestbedError, say

SOCKET = RUN / "docker.sock"
PLAIN = "tcp://127.0.0.1:2375"
TLS = "tcp://127.0.0.1:2376"
VCH_IP = os.environ.get("VICFLOW_TESTBED_VCH_IP", "127.0.0.2")  # a VCH's address (loopback range)
VCH = f"tcp://{VCH_IP}:2375"  # and its no-TLS port
CERTS = STATE / "docker-certs"
ENDPOINT = REPO / "tests" / "testbed" / "vchproxy"


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


def vch_config_path(ip: str) -> Path:
    """Where the appliance harness leaves the configuration of the VCH at ``ip`` for its endpoint."""
    return RUN / f"vch-{ip}.json"


def endpoint_digest() -> str:
    """The endpoint's code: an endpoint started from other code is started again (it answers differently)."""
    digest = hashlib.sha256()
    for source in sorted(ENDPOINT.glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def endpoint_command(listen: str, config: Path, tls: dict[str, str] | None = None) -> list[str]:
    """The endpoint's command line: on ``listen``, the VCH's ``config``, and with ``tls`` (cert, key, optional
    ca) a TLS one."""
    command = [sys.executable, "-m", "tests.testbed.vchproxy", "--listen", listen, "--socket", str(SOCKET)]
    command += ["--config", str(config)]
    for option, path in (tls or {}).items():
        command += [f"--tls-{option}", path]
    return command


def serve_vch(listen: str, config: Path, log: Path, tls: dict[str, str] | None = None) -> subprocess.Popen:
    """An endpoint of one's own (the appliance harness's TLS VCH): a child of this process, stopped by its caller."""
    out = open(log, "ab")  # noqa: SIM115 - the child keeps the descriptor
    return subprocess.Popen(
        endpoint_command(listen, config, tls), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=REPO, start_new_session=True,
    )  # fmt: skip


def _endpoint_files() -> tuple[Path, Path, Path]:
    """pid file, digest file and log of the test bed's VCH endpoint at VCH_IP."""
    return RUN / f"vchproxy-{VCH_IP}.pid", RUN / f"vchproxy-{VCH_IP}.digest", STATE / f"vchproxy-{VCH_IP}.log"


def _outdated_endpoint() -> bool:
    """The endpoint answers but was started from other code (or by a test bed that did not record it)."""
    _, digest_file, _ = _endpoint_files()
    return not digest_file.exists() or digest_file.read_text().strip() != endpoint_digest()


def _stop_endpoint() -> None:
    pidfile, digest_file, _ = _endpoint_files()
    legacy = RUN / "vchproxy.pid"  # the single endpoint of test beds before the VCH_IP files
    for path in (pidfile, legacy if VCH_IP == "127.0.0.2" else None):
        if path is not None and path.exists():
            _terminate(int(path.read_text().strip() or 0))
            path.unlink(missing_ok=True)
    digest_file.unlink(missing_ok=True)


def _start_endpoint() -> None:
    pidfile, digest_file, log = _endpoint_files()
    say(f"a VCH 1.1.1's Docker API on {VCH} (tests/testbed/vchproxy/); log {log}")
    _spawn(endpoint_command(VCH.removeprefix("tcp://"), vch_config_path(VCH_IP)), log, pidfile)
    digest_file.write_text(endpoint_digest())


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
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO
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
    if _ping(eng.socket_url) and _ping(eng.plain_url) and _ping_vch() and not _outdated_endpoint():
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
    if _ping_vch() and _outdated_endpoint():
        say(f"the VCH endpoint on {VCH} runs other code than tests/testbed/vchproxy/: starting it again")
        _stop_endpoint()
    if not _ping_vch():
        _start_endpoint()
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
    """Stop what start() launched (the VCH endpoint, socat and dockerd)."""
    _stop_endpoint()
    for name in ("socat.pid", "dockerd.pid"):
        pidfile = RUN / name
        if pidfile.exists():
            _terminate(int(pidfile.read_text().strip() or 0))
            pidfile.unlink(missing_ok=True)


def _terminate(pid: int) -> None:
    """SIGTERM ``pid`` (a process the test bed started, named in its pid file) and wait up to 20 s for it."""
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _gone(pid):
                break
            time.sleep(0.2)


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
