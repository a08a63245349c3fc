"""The vSphere connection shared by the vSphere steps: a pinned SHA-1 thumbprint, one session per run.

Without a thumbprint the step fails and shows the thumbprint the server presented, with the exact
parameter to add (the seed's run-it-once-and-copy-the-thumbprint trick, made explicit).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import requests
import requests.adapters
from pydantic import Field, model_validator
from vicflow.plugins import masking
from vicflow.plugins.clients.inventory import (  # noqa: F401 (the vSphere client's one surface)
    VIM,
    Compute,
    collect,
    collect_xml,
    compute_resource,
    content,
    datacenter,
    datastore,
    find_vapp_or_pool,
    find_vm,
    is_gone,
    network,
    path_exists,
    wait_task,
    walk,
)
from vicflow.plugins.step import Params, PermanentError, TransientError

Logger = logging.Logger | logging.LoggerAdapter


class VSphereParams(Params):
    """Connection settings; each falls back to VSPHERE_SERVER / _USER / _PASSWORD / _THUMBPRINT."""

    server: str | None = Field(
        None, description="vCenter host, host:port, https://host/sdk, or vic-machine's target form host/Datacenter"
    )
    user: str | None = None
    password: str | None = Field(None, description="use ${{ secrets.name }}")
    thumbprint: str | None = Field(None, description="SHA-1 of the server certificate, AB:CD:...")
    insecure: bool = Field(False, description="skip certificate checks (logged as a warning)")
    connect_timeout_seconds: float = Field(30, gt=0)

    @model_validator(mode="after")
    def _target_form(self):
        """vic-machine's ``--target host/Datacenter``: the datacenter moves to ``datacenter``, never dropped."""
        if not self.server:
            return self
        host, dc = split_target(self.server)
        if dc is None:
            return self
        if "datacenter" not in type(self).model_fields:
            raise ValueError(
                f"server {self.server!r} names datacenter {dc!r}, which this step does not use: set server: {host}"
            )
        current = getattr(self, "datacenter", None)
        if current not in (None, dc):
            raise ValueError(
                f"server {self.server!r} names datacenter {dc!r} but datacenter is {current!r}: "
                f"set server: {host} and keep datacenter: {current}, or drop datacenter"
            )
        self.server = host
        setattr(self, "datacenter", dc)  # noqa: B010 (a field of the subclasses that have one)
        return self


T = TypeVar("T")

# A reset, a refused or timed-out connection, an EOF in TLS, a half-read answer: the network, not the
# request. Worth another try once the connection is back.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


RETRYABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TransientError)


def until_back(fn: Callable[[], T], budget: float, logger: Logger, what: str) -> T:
    """``fn()``, called again after connection failures until ``budget`` seconds have passed.

    For cleanup and rollback, which must outlast a short cut instead of giving up at its first error.
    """
    deadline = time.monotonic() + budget
    delay = 0.5
    while True:
        try:
            return fn()
        except RETRYABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s: %s; trying again in %.1fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def setting(params: VSphereParams, name: str) -> str | None:
    return getattr(params, name) or os.environ.get(f"VSPHERE_{name.upper()}")


def split_target(server: str) -> tuple[str, str | None]:
    """``host[:port][/sdk]`` -> (that, None); vic-machine's ``host/Datacenter`` -> (host, Datacenter)."""
    parts = urlsplit(server if "://" in server else f"https://{server}")
    path = unquote(parts.path).strip("/")
    if path in ("", "sdk"):
        return server, None
    base = f"{parts.scheme}://{parts.netloc}" if "://" in server else parts.netloc
    return base, path


def split_server(server: str) -> tuple[str, int]:
    host, dc = split_target(server)
    if dc is not None:  # e.g. from VSPHERE_SERVER, which no validator saw
        raise PermanentError(
            f"the vSphere server {server!r} names datacenter {dc!r} (vic-machine's host/Datacenter form)",
            f"set server: {host} and datacenter: {dc}",
        )
    parts = urlsplit(server if "://" in server else f"https://{server}")
    return parts.hostname or server, parts.port or 443


def thumbprint_of(der: bytes | None) -> str:
    """The SHA-1 thumbprint (AB:CD:...) of a DER certificate, as vSphere shows it."""
    if not der:
        raise TransientError("the server presented no certificate")
    return normalise(hashlib.sha1(der).hexdigest())


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
    return thumbprint_of(der)


class LoginCut(TransientError):
    """The connection broke after the login was sent: a session may exist on the server that nothing can log out.
    ``line`` is the run's report line for it."""

    def __init__(self, message: str, line: str):
        super().__init__(message)
        self.line = line


class Sessions:
    """One logged-in ServiceInstance per (server, user) for a run; ``close()`` logs them out."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, str], object] = {}
        self._unknown: list[str] = []  # logins cut after they were sent: a session may exist that we cannot name

    def get(self, params: VSphereParams, logger: Logger):
        server, user, _ = _credentials(params)
        with self._lock:
            key = (server, user)
            if key not in self._sessions:
                try:
                    self._sessions[key] = login(params, logger)
                except LoginCut as exc:
                    if exc.line not in self._unknown:
                        self._unknown.append(exc.line)
                    raise
            else:  # an attempt after an outage: nothing the outage broke is handed out again
                drop_broken_connections(self._sessions[key], logger)
            return self._sessions[key]

    def close(self, budget: float = 10.0) -> list[str]:
        """Log every session out (retrying a cut connection for ``budget`` s); returns what stays logged in."""
        with self._lock:
            sessions, self._sessions = dict(self._sessions), {}
            unknown, self._unknown = self._unknown, []
        left = [line for (server, user), si in sessions.items() if (line := logout(si, server, user, _log, budget))]
        return left + unknown


_log = logging.getLogger("vicflow.vsphere")


def drop_broken_connections(si, logger: Logger) -> int:
    """Close the session's idle connections whose other end closed or reset them; returns how many.

    pyVmomi keeps idle connections in its stub's pool and hands the newest out for the next call without looking
    at it (pyVmomi/SoapAdapter.py, SoapStubAdapter.GetConnection); it empties the pool only when a call fails on
    one. After a cut link is back, the pool still holds the connections the cut reset, so the next attempt's first
    call failed with SSLEOFError. An idle HTTP connection the server has not closed has nothing to read: one
    that is readable (EOF, a reset, stray bytes) is broken, as urllib3 judges its own pooled connections."""
    stub: Any = getattr(si, "_stub", None)
    if getattr(stub, "pool", None) is None or getattr(stub, "lock", None) is None:
        return 0
    with stub.lock:
        broken = [(conn, at) for conn, at in stub.pool if _closed_by_peer(conn)]
        stub.pool = [entry for entry in stub.pool if entry not in broken]
    for conn, _ in broken:
        with contextlib.suppress(Exception):
            conn.close()
    if broken:
        logger.info("dropped %d vSphere connection(s) broken since their last use", len(broken))
    return len(broken)


def _closed_by_peer(conn) -> bool:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return True
    try:
        pending = getattr(sock, "pending", None)  # TLS bytes already read and not asked for
        if pending is not None and pending():
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _credentials(params: VSphereParams) -> tuple[str, str, str]:
    server, user, password = (setting(params, n) or "" for n in ("server", "user", "password"))
    missing = [n for n, v in (("server", server), ("user", user), ("password", password)) if not v]
    if missing:
        variables = ", ".join(f"VSPHERE_{name.upper()}" for name in missing)
        raise PermanentError(
            f"vSphere {', '.join(missing)} not set",
            f"give them to the step (with: {', '.join(missing)}; the shipped blueprints take them as inputs: "
            f"--set {missing[0]}=...), or set {variables}",
        )
    masking.add_secret(password)
    return server, user, password


def login(params: VSphereParams, logger: Logger):
    """A new logged-in session (the caller logs it out: ``logout``)."""
    server, user, password = _credentials(params)
    return _login(
        server, user, password, setting(params, "thumbprint"), params.insecure, params.connect_timeout_seconds, logger
    )


def logout(si, server: str, user: str, logger: Logger, budget: float = 10.0) -> str | None:
    """Log out, retrying a cut connection; returns a line for the run's report if the session stays."""
    try:
        until_back(lambda: content(si).sessionManager.Logout(), budget, logger, f"log out of {server}")
        return None
    except Exception as exc:
        logger.warning("could not log out of %s: %s", server, exc)
        return (
            f"vSphere session of {user} on {server} (log out failed: {type(exc).__name__}) - "
            "it ends at vCenter's idle-session timeout (30 min by default), or: govc session.rm KEY"
        )


@contextlib.contextmanager
def fresh_session(params: VSphereParams, logger: Logger, leftovers: list[str]):
    """A session of its own, logged out afterwards: cleanup after a cut must not depend on the run's session."""
    server, user, _ = _credentials(params)
    try:
        si = login(params, logger)
    except LoginCut as exc:
        leftovers.append(exc.line)
        raise
    try:
        yield si
    finally:
        left = logout(si, server, user, logger)
        if left:
            leftovers.append(left)


def _mismatch(host: str, expected: str, seen: str) -> PermanentError:
    return PermanentError(
        f"certificate thumbprint mismatch for {host}: expected {expected}, the server presented {seen}; "
        "refusing to connect",
        "if the vCenter certificate was replaced on purpose, update the thumbprint; otherwise "
        "something is intercepting the connection",
    )


class PinnedContext(ssl.SSLContext):
    """TLS that accepts exactly one certificate, by SHA-1 (no CA chain), on every connection made with it.

    That is pyvmomi's API-version discovery and every connection of the session's pool, reconnects
    included. pyvmomi's own thumbprint check runs only when CA verification fails, which never happens
    with verification off (how a self-signed vCenter is reached), so it cannot be relied on.
    """

    pinned_host: str
    pinned_thumbprint: str
    io_timeout: float

    @classmethod
    def of(cls, host: str, thumbprint: str, timeout: float) -> PinnedContext:
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        context.pinned_host, context.pinned_thumbprint, context.io_timeout = host, thumbprint, timeout
        return context

    def wrap_socket(self, sock, *args, **kwargs):
        if sock.gettimeout() is None:  # pyvmomi's version discovery sets none
            sock.settimeout(self.io_timeout)
        tls = super().wrap_socket(sock, *args, **kwargs)
        seen = thumbprint_of(tls.getpeercert(binary_form=True))
        if seen != self.pinned_thumbprint:
            tls.close()
            raise _mismatch(self.pinned_host, self.pinned_thumbprint, seen)
        return tls


def pinned_session(host: str, thumbprint: str | None, timeout: float) -> requests.Session:
    """A requests session to vCenter's other HTTPS interfaces (the datastore's /folder) that accepts the
    same one certificate as the API session (``PinnedContext``); ``thumbprint`` None only when the step
    said ``insecure: true``."""
    session = requests.Session()
    session.trust_env = False
    session.verify = False  # the pinned SHA-1 is checked instead of a CA chain
    if thumbprint:
        session.mount("https://", _PinnedAdapter(PinnedContext.of(host, normalise(thumbprint), timeout)))
    return session


class _PinnedAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, context: PinnedContext):
        self.context = context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self.context
        # urllib3 checks the same SHA-1 itself and counts the connection as verified: no InsecureRequestWarning
        # for this session only (the warning stays for any connection that is really unverified)
        kwargs["assert_fingerprint"] = self.context.pinned_thumbprint
        return super().init_poolmanager(*args, **kwargs)


POOL_SIZE = 64  # connections kept open: a step's parallel calls (the firewall's 64 hosts) each reuse one


def _login(
    server: str, user: str, password: str, thumbprint: str | None, insecure: bool, timeout: float, logger: Logger
):
    from pyVim.connect import SmartStubAdapter
    from pyVmomi import vim

    host, port = split_server(server)
    if insecure:
        logger.warning("insecure: true - the certificate of %s is not checked; pin its thumbprint instead", host)
    elif not thumbprint:
        seen = seen_thumbprint(host, port, timeout)
        raise PermanentError(
            f"Failed to verify certificate for target={host} (thumbprint={seen})",
            f'after checking it against your vCenter, add  thumbprint: "{seen}"  to the step\'s with: '
            "(or set VSPHERE_THUMBPRINT)",
        )
    try:
        stub = SmartStubAdapter(  # reads the API version first, then makes no connection until the first call
            host=host,
            port=port,
            sslContext=None if insecure else PinnedContext.of(host, normalise(thumbprint or ""), timeout),
            disableSslCertValidation=insecure,
            httpConnectionTimeout=int(max(1, timeout)),
            connectionPoolTimeout=-1,
            poolSize=POOL_SIZE,  # pyVmomi's default 5 closes the other connections of a fan-out after each call
        )
        si = vim.ServiceInstance("ServiceInstance", stub)
        manager = content(si).sessionManager  # content() keeps the ServiceContent it read
    except (OSError, ssl.SSLError) as exc:
        raise TransientError(f"cannot connect to vSphere at {host}:{port}: {exc}") from None
    try:
        manager.Login(user, password, None)
        return si
    except vim.fault.InvalidLogin:
        raise PermanentError(
            f"vSphere refused the login of user {user!r} at {host}",
            "check the user and password (secrets are masked in logs)",
        ) from None
    except (OSError, ssl.SSLError) as exc:  # the server may have logged us in and the answer was lost
        raise LoginCut(
            f"cannot connect to vSphere at {host}:{port}: {exc}",
            f"vSphere session of {user} on {server} (the login was cut after it was sent; vCenter may have opened "
            "it) - it ends at vCenter's idle-session timeout (30 min by default), or: govc session.ls, then "
            "govc session.rm KEY",
        ) from None


def service_instance(params: VSphereParams, resources: dict[str, Any], logger: Logger):
    """The run's session for these settings, logging in on first use (``resources``: shared by the run's steps,
    closed at its end)."""
    sessions = resources.setdefault("vsphere", Sessions())
    return sessions.get(params, logger)
