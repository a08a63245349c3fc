"""Build and run the govmomi vCenter simulator (tests/vcsim/main.go) from Debian's packages."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

from tests.testbed import REPO, RUN, STATE, TestbedError, say

SOURCE = REPO / "tests" / "vcsim" / "main.go"


def binary() -> str:
    """The simulator binary, built once per version of main.go."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = STATE / "bin" / f"vcsim-{digest}"
    if out.exists():
        return str(out)
    if not shutil.which("go"):
        raise TestbedError("go is not installed: apt-get install golang-go golang-github-vmware-govmomi-dev")
    if not os.path.isdir("/usr/share/gocode/src/github.com/vmware/govmomi"):
        raise TestbedError("govmomi sources missing: apt-get install golang-github-vmware-govmomi-dev")
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"building the vCenter simulator into {out}")
    env = dict(os.environ, GOPATH="/usr/share/gocode", GO111MODULE="off", GOFLAGS="", GOCACHE=str(STATE / "gocache"))
    tmp = f"{out}.{os.getpid()}.tmp"  # two workers may build it at once: each into its own file
    result = subprocess.run(
        ["go", "build", "-o", tmp, "."],
        cwd=SOURCE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode:
        raise TestbedError(f"go build of {SOURCE} failed:\n{result.stderr}")
    os.replace(tmp, out)
    return str(out)


@dataclass
class Simulator:
    url: str
    username: str
    password: str
    thumbprint: str
    process: subprocess.Popen | None  # None: a simulator that outlives its starter (``persistent``)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].split("/", 1)[0]

    def connect(self, **kwargs):
        """A pyvmomi session of its own (as govc would open), thumbprint pinned; Disconnect() it."""
        from pyVim.connect import SmartConnect

        host, port = self.host.split(":")
        return SmartConnect(
            host=host,
            port=int(port),
            user=self.username,
            pwd=self.password,
            disableSslCertValidation=True,
            thumbprint=self.thumbprint,
            **kwargs,
        )

    def stop(self) -> None:
        if self.process is None:
            return  # persistent: stopped by stop_persistent()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _command(listen: str, tls: bool, hosts: int, delay_ms: int, clusters: int, datastores: int, portgroups: int,
             vms: int, username: str, password: str) -> list[str]:  # fmt: skip
    return [
        binary(),
        "-listen",
        listen,
        f"-tls={str(tls).lower()}",
        "-host",
        str(hosts),
        "-cluster",
        str(clusters),
        "-ds",
        str(datastores),
        "-pg",
        str(portgroups),
        "-vm",
        str(vms),
        "-delay",
        str(delay_ms),
        "-username",
        username,
        "-password",
        password,
    ]


def persistent(name: str, listen: str, hosts: int = 3, username: str = "vicflow", password: str = "vicflow-pass",
               timeout: float = 30) -> Simulator:  # fmt: skip
    """A simulator that outlives the process that started it: the demo's vCenter. A later run finds it again,
    with the inventory, the firewall and the VCH that earlier runs left, as a real vCenter keeps them (a new
    simulator per run would make every run change everything again). ``stop_persistent`` stops it."""
    state = RUN / f"vcsim-{name}.json"
    if state.exists():
        found = json.loads(state.read_text())
        if found.get("binary") == binary() and _alive(found["pid"]) and _answers(found["url"]):
            return Simulator(found["url"], username, password, found["thumbprint"], None)
        stop_persistent(name)
    RUN.mkdir(parents=True, exist_ok=True)
    log = STATE / f"vcsim-{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            _command(listen, True, hosts, 0, 1, 2, 3, 1, username, password),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = dict(line.partition("=")[::2] for line in log.read_text().splitlines() if "=" in line)
        if "VCSIM_READY" in log.read_text().split():
            found = {"pid": proc.pid, "url": lines["VCSIM_URL"], "thumbprint": lines.get("VCSIM_THUMBPRINT", "")}
            state.write_text(json.dumps({**found, "binary": binary()}))
            say(f"vCenter simulator {name} on {listen} (pid {proc.pid}; kept for the next run)")
            return Simulator(found["url"], username, password, found["thumbprint"], None)
        if proc.poll() is not None:
            raise TestbedError(f"vcsim {name} exited before it was ready: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    raise TestbedError(f"vcsim {name} did not become ready within {timeout}s")


def stop_persistent(name: str) -> None:
    """Stop a simulator ``persistent`` started (its pid is in the test bed's run directory)."""
    state = RUN / f"vcsim-{name}.json"
    if not state.exists():
        return
    pid = json.loads(state.read_text())["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not _alive(pid):
                break
            time.sleep(0.2)
    state.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie (a child of this process) still answers kill(pid, 0)
        return "zombie" not in open(f"/proc/{pid}/status").read().lower()
    return True


def _answers(url: str) -> bool:
    host, _, port = url.split("://", 1)[1].split("/", 1)[0].rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return True
    except OSError:
        return False


def start(
    hosts: int = 3,
    delay_ms: int = 0,
    tls: bool = True,
    clusters: int = 1,
    datastores: int = 2,
    portgroups: int = 3,
    vms: int = 1,
    username: str = "vicflow",
    password: str = "vicflow-pass",
    timeout: float = 30,
    listen: str = "127.0.0.1:0",
) -> Simulator:
    """Start a simulator (on a free 127.0.0.1 port unless ``listen`` says) and wait until it prints its URL."""
    cmd = _command(listen, tls, hosts, delay_ms, clusters, datastores, portgroups, vms, username, password)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise TestbedError(f"vcsim exited before it was ready: {proc.stderr.read()}")
        if line.strip() == "VCSIM_READY":
            return Simulator(found["VCSIM_URL"], username, password, found.get("VCSIM_THUMBPRINT", ""), proc)
        key, _, value = line.strip().partition("=")
        found[key] = value
    proc.kill()
    raise TestbedError(f"vcsim did not become ready within {timeout}s")
