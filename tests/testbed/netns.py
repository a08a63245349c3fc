"""Hosts on this machine: network namespaces (``ip netns``) on a private bridge that the test creates and removes.

Each "host" has its own network stack: a veth pair with one end in the namespace (10.<n>.0.11, .12, ...) and
the other on the bridge, whose address (10.<n>.0.1) is where services in the root namespace listen for the
hosts. Nothing is routed off the bridge, so the traffic stays on this machine. ``forward`` makes a service
that listens on 127.0.0.1 (the test Docker engine, the simulator) reachable from the hosts at the bridge's
address, with socat. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.testbed import TestbedError


def ip(*argv: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise TestbedError(f"ip {' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Host:
    name: str  # the namespace; "" for this machine's own network (bench/scale.py)
    address: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    @classmethod
    def local(cls) -> Host:
        return cls("", "127.0.0.1")

    def start(self, argv: list[str], env: dict[str, str], log: Path, cwd: str | None = None) -> subprocess.Popen:
        """Start ``argv`` inside this host's namespace (its own session, output to ``log``)."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.name, *argv] if self.name else argv,
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every process running in this host's namespace (on this machine: the sessions it started)."""
        if not self.name:
            found = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split()
            sessions = {str(proc.pid) for proc in self.processes}
            return [int(pid) for pid, sid in zip(found[::2], found[1::2], strict=True) if sid in sessions]
        return [int(p) for p in ip("netns", "pids", self.name, check=False).split()]

    def kill(self, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to every process of the host at once: a host that dies (SIGKILL) or shuts down."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        return pids


@dataclass
class Lan:
    bridge: str
    gateway: str  # the bridge's address: services for the hosts listen here
    hosts: list[Host]
    forwards: list[subprocess.Popen] = field(default_factory=list)
    _mirrored: dict[str, str] = field(default_factory=dict)  # address -> its forward on the gateway

    def forward(self, port: int, target: str) -> str:
        """Listen on gateway:``port`` and pass each connection to ``target`` (host:port on 127.0.0.1)."""
        proc = subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={self.gateway},fork,reuseaddr", f"TCP:{target}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.forwards.append(proc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TestbedError(f"socat could not listen on {self.gateway}:{port}")
            if f"{self.gateway}:{port} " in subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout:
                return f"{self.gateway}:{port}"
            time.sleep(0.05)
        raise TestbedError(f"socat on {self.gateway}:{port} did not listen within 10s")

    def mirror(self, host: Host, address: str, log: Path) -> None:
        """Make ``address`` (host:port of a service on this machine's loopback, such as the VCH endpoint's
        127.0.0.2:2375) answer at the same address inside ``host``: the run finds what its blueprint names."""
        from tests.testbed.prefect_stack import free_port

        outside = self._mirrored.get(address) or self.forward(free_port(), address)
        self._mirrored[address] = outside
        name, port = address.rsplit(":", 1)
        host.start(["socat", f"TCP-LISTEN:{port},bind={name},fork,reuseaddr", f"TCP:{outside}"], dict(os.environ), log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listening = subprocess.run(
                ["ip", "netns", "exec", host.name, "ss", "-ltnH"], capture_output=True, text=True, timeout=10
            ).stdout
            if f"{address} " in listening:
                return
            time.sleep(0.05)
        raise TestbedError(f"{address} inside {host.name} did not listen within 10s")


@contextmanager
def lan(count: int):
    """``count`` hosts on a bridge of their own; everything (processes, namespaces, bridge) removed afterwards."""
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    net = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    bridge, created = f"vfbr{tag}", []
    the_lan = Lan(bridge, f"{net}.1", [])
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{net}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for index in range(count):
            name, outside = f"vf{tag}h{index + 1}", f"vf{tag}v{index + 1}"
            ip("netns", "add", name)
            created.append(name)
            ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", outside, "master", bridge, "up")
            ip("-n", name, "addr", "add", f"{net}.{11 + index}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
            the_lan.hosts.append(Host(name, f"{net}.{11 + index}"))
        yield the_lan
    finally:
        for host in the_lan.hosts:
            host.kill()
        for proc in the_lan.forwards:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for name in created:
            ip("netns", "del", name, check=False)  # removes the veth pair with it
        ip("link", "del", bridge, check=False)
