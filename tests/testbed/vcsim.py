"""Build and run the govmomi vCenter simulator (tests/vcsim/main.go) from Debian's packages."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from tests.testbed import REPO, STATE, TestbedError, say

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
    process: subprocess.Popen

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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


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
    cmd = [
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
