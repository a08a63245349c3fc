"""The vSphere connection shared by the vSphere steps: a pinned SHA-1 thumbprint, one session per run.

Without a thumbprint the step fails and shows the thumbprint the server presented, with the exact
parameter to add (the seed's run-it-once-and-copy-the-thumbprint trick, made explicit).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import threading
from urllib.parse import urlsplit

from pydantic import Field
from vicflow.flows import masking
from vicflow.plugins.step import Params, PermanentError, StepContext, TransientError


class VSphereParams(Params):
    """Connection settings; each falls back to VSPHERE_SERVER / _USER / _PASSWORD / _THUMBPRINT."""

    server: str | None = Field(None, description="vCenter host, host:port or https://host/sdk")
    user: str | None = None
    password: str | None = Field(None, description="use ${{ secrets.name }}")
    thumbprint: str | None = Field(None, description="SHA-1 of the server certificate, AB:CD:...")
    insecure: bool = Field(False, description="skip certificate checks (logged as a warning)")
    connect_timeout_seconds: float = Field(30, gt=0)


def _setting(params: VSphereParams, name: str) -> str | None:
    return getattr(params, name) or os.environ.get(f"VSPHERE_{name.upper()}")


def split_server(server: str) -> tuple[str, int]:
    parts = urlsplit(server if "://" in server else f"https://{server}")
    return parts.hostname or server, parts.port or 443


def normalise(thumbprint: str) -> str:
    digits = thumbprint.replace(":", "").replace(" ", "").upper()
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def seen_thumbprint(host: str, port: int, timeout: float) -> str:
    """SHA-1 of the certificate the server presents (no trust decision is made here)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise TransientError(
            f"cannot reach vSphere at {host}:{port}: {exc}", "check the server address and that it answers HTTPS"
        ) from None
    return normalise(hashlib.sha1(der).hexdigest())


class Sessions:
    """One logged-in ServiceInstance per (server, user) for a run; ``close()`` logs them out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], object] = {}

    def get(self, params: VSphereParams, ctx: StepContext):
        server, user, password = (_setting(params, n) for n in ("server", "user", "password"))
        missing = [n for n, v in (("server", server), ("user", user), ("password", password)) if not v]
        if missing:
            raise PermanentError(
                f"vSphere {', '.join(missing)} not set",
                f"set {', '.join(missing)} in the step's with:, or VSPHERE_{missing[0].upper()} in the environment",
            )
        masking.add_secret(password)
        with self._lock:
            key = (server, user)
            if key not in self._sessions:
                self._sessions[key] = _login(
                    server,
                    user,
                    password,
                    _setting(params, "thumbprint"),
                    params.insecure,
                    params.connect_timeout_seconds,
                    ctx,
                )
            return self._sessions[key]

    def close(self) -> None:
        from pyVim.connect import Disconnect

        with self._lock:
            for si in self._sessions.values():
                with contextlib.suppress(Exception):  # the server may be gone already; nothing left to release
                    Disconnect(si)
            self._sessions.clear()


def _login(
    server: str, user: str, password: str, thumbprint: str | None, insecure: bool, timeout: float, ctx: StepContext
):
    from pyVim.connect import SmartConnect
    from pyVmomi import vim

    host, port = split_server(server)
    if insecure:
        ctx.logger.warning("insecure: true - the certificate of %s is not checked; pin its thumbprint instead", host)
    else:
        seen = seen_thumbprint(host, port, timeout)
        if not thumbprint:
            raise PermanentError(
                f"Failed to verify certificate for target={host} (thumbprint={seen})",
                f'after checking it against your vCenter, add  thumbprint: "{seen}"  to the step\'s with: '
                "(or set VSPHERE_THUMBPRINT)",
            )
        if normalise(thumbprint) != seen:
            raise PermanentError(
                f"certificate thumbprint mismatch for {host}: expected {normalise(thumbprint)}, the server "
                f"presented {seen}; refusing to connect",
                "if the vCenter certificate was replaced on purpose, update the thumbprint; otherwise "
                "something is intercepting the connection",
            )
    try:
        return SmartConnect(
            host=host,
            port=port,
            user=user,
            pwd=password,
            disableSslCertValidation=True,
            thumbprint=None if insecure else normalise(thumbprint),
            httpConnectionTimeout=int(max(1, timeout)),
            connectionPoolTimeout=-1,
        )
    except vim.fault.InvalidLogin:
        raise PermanentError(
            f"vSphere refused the login of user {user!r} at {host}",
            "check the user and password (secrets are masked in logs)",
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise TransientError(f"cannot connect to vSphere at {host}:{port}: {exc}") from None


def service_instance(params: VSphereParams, ctx: StepContext):
    """The run's session for these settings, logging in on first use."""
    sessions = ctx.resources.setdefault("vsphere", Sessions())
    return sessions.get(params, ctx)
