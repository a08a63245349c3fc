"""The one certificate a vSphere connection accepts: its SHA-1 thumbprint, pinned on every connection of the
API session (``PinnedContext``) and of the datastore's HTTPS (``pinned_session``)."""

from __future__ import annotations

import hashlib
import socket
import ssl

import requests
from vicflow.plugins.clients import http
from vicflow.plugins.errors import PermanentError, TransientError


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
    session = http.session(verify=False)  # the pinned SHA-1 is checked instead of a CA chain
    if thumbprint:
        http.mount(session, _PinnedAdapter(PinnedContext.of(host, normalise(thumbprint), timeout)))
    return session


class _PinnedAdapter(http.MappedAdapter):  # its failures leave as the tree's errors (ConnectionLost ...)
    def __init__(self, context: PinnedContext):
        self.context = context
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["ssl_context"] = self.context
        # urllib3 checks the same SHA-1 itself and counts the connection as verified: no InsecureRequestWarning
        # for this session only (the warning stays for any connection that is really unverified)
        kwargs["assert_fingerprint"] = self.context.pinned_thumbprint
        return super().init_poolmanager(*args, **kwargs)
