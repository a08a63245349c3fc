"""The vSphere connection shared by the vSphere steps: its settings, logging in and out, one session per run.

Without a thumbprint the step fails and shows the thumbprint the server presented, with the exact
parameter to add (the seed's run-it-once-and-copy-the-thumbprint trick, made explicit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import Field, model_validator
from vicflow.plugins import masking
from vicflow.plugins.clients.vsphere.errors import map_stub_errors
from vicflow.plugins.clients.vsphere.pinning import PinnedContext, normalise, seen_thumbprint
from vicflow.plugins.errors import ConnectionLost, PermanentError, TransientError
from vicflow.plugins.step import Params

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

# What ``until_back`` tries again: what StepType.is_transient calls transient (a ConnectionLost is one).
RETRYABLE = (TransientError, ConnectionError, TimeoutError)


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


class LoginCut(ConnectionLost):  # drawn in plugins/errors.py's tree
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
        si = vim.ServiceInstance("ServiceInstance", map_stub_errors(stub, f"{host}:{port}"))
        manager = content(si).sessionManager  # content() keeps the ServiceContent it read
    except (OSError, ConnectionLost) as exc:  # SmartStubAdapter's version discovery is not mapped: an OSError
        raise ConnectionLost(f"cannot connect to vSphere at {host}:{port}: {exc}") from exc
    try:
        manager.Login(user, password, None)
        return si
    except vim.fault.InvalidLogin:
        raise PermanentError(
            f"vSphere refused the login of user {user!r} at {host}",
            "check the user and password (secrets are masked in logs)",
        ) from None
    except ConnectionLost as exc:  # the server may have logged us in and the answer was lost
        raise LoginCut(
            f"cannot connect to vSphere at {host}:{port}: {exc}",
            f"vSphere session of {user} on {server} (the login was cut after it was sent; vCenter may have opened "
            "it) - it ends at vCenter's idle-session timeout (30 min by default), or: govc session.ls, then "
            "govc session.rm KEY",
        ) from exc


_contents: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # a session's stub -> its ServiceContent


def content(si):
    """The ServiceContent of a session, fetched once (every ``si.content`` read is a round trip)."""
    if si._stub not in _contents:
        _contents[si._stub] = si.RetrieveContent()
    return _contents[si._stub]


def service_instance(params: VSphereParams, resources: dict[str, Any], logger: Logger):
    """The run's session for these settings, logging in on first use (``resources``: shared by the run's steps,
    closed at its end)."""
    sessions = resources.setdefault("vsphere", Sessions())
    return sessions.get(params, logger)
