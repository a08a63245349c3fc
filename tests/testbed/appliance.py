"""Plays the VCH appliance for the simulator, where no guest boots.

Once the endpoint VM is powered on it writes the client IP into extraConfig (as the real appliance
does; VMware Tools is not used).  With TLS it first serves the Docker API the way a VCH does: with
the server certificate and client CA that vch_create put into the VM's guestinfo, forwarding to the
test bed's dockerd.
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from tests.testbed import dockerd


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
        if self.serve_tls and self.proxy is None:
            self._serve_tls(vch.extra_config(vm), vch)
        served.add(vm._moId)
        vm.ReconfigVM_Task(
            spec=vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=vch.CLIENT_IP_KEY, value=self.ip)])
        )

    def _serve_tls(self, config: dict[str, str], vch) -> None:
        folder = Path(tempfile.mkdtemp(prefix="appliance-"))
        (folder / "server.pem").write_bytes(base64.b64decode(config[vch.SERVER_CERT_KEY]))
        (folder / "server-key.pem").write_bytes(base64.b64decode(config[vch.SERVER_KEY_KEY]))
        verify = "verify=0"
        if vch.PREFIX + "certificate/client_ca" in config:
            (folder / "client-ca.pem").write_bytes(base64.b64decode(config[vch.PREFIX + "certificate/client_ca"]))
            verify = f"cafile={folder / 'client-ca.pem'},verify=1"
        self.proxy = subprocess.Popen(
            [
                "socat",
                "-d",
                "-d",
                "-lf",
                str(folder / "socat.log"),
                f"OPENSSL-LISTEN:2376,bind={self.ip},reuseaddr,fork,cert={folder / 'server.pem'},"
                f"key={folder / 'server-key.pem'},{verify},openssl-min-proto-version=TLS1.2",
                f"UNIX-CONNECT:{dockerd.SOCKET}",
            ],
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        if self.proxy.poll() is not None:
            raise RuntimeError(f"socat TLS proxy failed: {self.proxy.stderr.read().decode()}")
