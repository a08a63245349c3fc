"""Plays the VCH appliance for the simulator, where no guest boots.

Once the endpoint VM is powered on it does what the appliance does at boot: it reads the VCH's configuration
from the VM's guestinfo (the name, the volume stores, a static public IP) and what vSphere says about itself,
hands them to the VCH's Docker endpoint (tests/testbed/vchproxy/, as the personality reads them), and writes
the client IP into extraConfig (as the real appliance does; VMware Tools is not used). With TLS it serves the
Docker API on <ip>:2376 through the same personality, with the server certificate and client CA that vch_create
put into the guestinfo.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.testbed import dockerd
from tests.testbed.vchproxy.config import VCHConfig, write

STORE_KEY = "storage/volume_stores|"  # guestinfo.vice./storage/volume_stores|<label> = ds://DS/path
PUBLIC_IP_KEY = "init/networks|public/ip"


class Appliance:
    def __init__(self, sim, vm_name: str, ip: str = "127.0.0.1", delay: float = 0.5, serve_tls: bool = False):
        self.sim, self.vm_name, self.ip, self.delay, self.serve_tls = sim, vm_name, ip, delay, serve_tls
        self.stop_event = threading.Event()
        self.proxy: subprocess.Popen | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"appliance-{vm_name}")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(timeout=10)
        if self.proxy and self.proxy.poll() is None:
            self.proxy.terminate()
            self.proxy.wait(timeout=10)

    def _run(self) -> None:
        from pyVim.connect import Disconnect
        from pyVmomi import vim, vmodl
        from vicflow.plugins.vic import target as vch

        si = self.sim.connect()
        served: set[str] = set()
        try:
            while not self.stop_event.is_set():
                # a VM destroyed while it is looked at (a cleanup, a retried create) is no reason to stop
                with contextlib.suppress(vmodl.fault.ManagedObjectNotFound):
                    self._give_ip(si, served, vim, vch)
                time.sleep(0.1)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc
        finally:
            Disconnect(si)

    def _give_ip(self, si, served: set[str], vim, vch) -> None:
        """Every boot of a VM by this name gets its IP (a create that failed and was redone makes a new VM)."""
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
        try:
            vm = next((v for v in view.view if v.name == self.vm_name), None)
        finally:
            view.Destroy()
        if vm is None or vm._moId in served or vm.runtime.powerState != "poweredOn":
            return
        time.sleep(self.delay)
        guestinfo = vch.extra_config(vm)
        config = self.configuration(guestinfo, si.content.about, vch.PREFIX)
        write(dockerd.vch_config_path(self.ip), config)
        if self.serve_tls and self.proxy is None:
            self._serve_tls(guestinfo, vch)
        served.add(vm._moId)
        vm.ReconfigVM_Task(
            spec=vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=vch.CLIENT_IP_KEY, value=self.ip)])
        )

    def configuration(self, guestinfo: dict[str, str], about, prefix: str) -> VCHConfig:
        """The VCH's configuration as the appliance decodes it from guestinfo (and the port layer from vSphere)."""
        stores = {
            key.removeprefix(prefix + STORE_KEY): value
            for key, value in guestinfo.items()
            if key.startswith(prefix + STORE_KEY)
        }
        return VCHConfig(
            name=guestinfo.get(prefix + "common/name", self.vm_name),
            public_ip=(guestinfo.get(prefix + PUBLIC_IP_KEY) or self.ip).split("/")[0],
            volume_stores=stores,
            host_product=about.name,
            host_os=about.osType,
            host_os_version=about.version,
        )

    def _serve_tls(self, config: dict[str, str], vch) -> None:
        folder = Path(tempfile.mkdtemp(prefix="appliance-"))
        (folder / "server.pem").write_bytes(base64.b64decode(config[vch.SERVER_CERT_KEY]))
        (folder / "server-key.pem").write_bytes(base64.b64decode(config[vch.SERVER_KEY_KEY]))
        tls = {"cert": str(folder / "server.pem"), "key": str(folder / "server-key.pem")}
        if vch.PREFIX + "certificate/client_ca" in config:
            (folder / "client-ca.pem").write_bytes(base64.b64decode(config[vch.PREFIX + "certificate/client_ca"]))
            tls["ca"] = str(folder / "client-ca.pem")
        listen = f"{self.ip}:2376"
        log = dockerd.STATE / f"vchproxy-{self.ip}-2376.log"  # the engine's folder (a worker's own under make test)
        self.proxy = dockerd.serve_vch(listen, dockerd.vch_config_path(self.ip), log, tls)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proxy.poll() is not None:
                raise RuntimeError(f"the VCH's TLS endpoint on {listen} exited: {log.read_text()[-2000:]}")
            try:
                socket.create_connection((self.ip, 2376), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the VCH's TLS endpoint on {listen} did not listen within 30 s: {log.read_text()[-2000:]}")
