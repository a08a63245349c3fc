"""Postgres' frontend protocol up to "ready for query": the part where Gogs' two drivers differ.

lib/pq (2016) answers only the cleartext and md5 requests and stops at any other ("unknown authentication
response"); pgx v5.3.0 also speaks SCRAM-SHA-256.  No library in the image lets a caller refuse one method or
see the server's error fields (SQLSTATE) of a failed login, so the handshake is done here, per
https://www.postgresql.org/docs/current/protocol-flow.html; the queries then go through psycopg2.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import socket
import ssl
import struct

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 3, 5, 10, 11, 12
_PROTOCOL_3 = 196608
_SSL_REQUEST = 80877103


class ServerError(Exception):
    """An ErrorResponse: its fields by code (S severity, C SQLSTATE, M message, ...)."""

    def __init__(self, fields: dict[str, str]):
        super().__init__(fields.get("M", ""))
        self.fields = fields

    @property
    def severity(self) -> str:
        return self.fields.get("S", "")

    @property
    def code(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")


class UnsupportedAuth(Exception):
    """The server asked for an authentication method the driver does not answer."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class ProtocolError(Exception):
    pass


class Connection:
    """One socket to the server, speaking protocol 3.0."""

    def __init__(self, sock: socket.socket):
        self.sock: socket.socket | ssl.SSLSocket = sock

    def request_ssl(self) -> bool:
        """SSLRequest: True when the server answers 'S' (then the caller wraps the socket)."""
        self.sock.sendall(struct.pack("!ii", 8, _SSL_REQUEST))
        return self._read(1) == b"S"

    def wrap(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def startup(self, params: dict[str, str]) -> None:
        body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
        self.sock.sendall(struct.pack("!ii", 8 + len(body), _PROTOCOL_3) + body)

    def send(self, kind: bytes, body: bytes) -> None:
        self.sock.sendall(kind + struct.pack("!i", 4 + len(body)) + body)

    def receive(self) -> tuple[bytes, bytes]:
        """The next message; an ErrorResponse is raised as ServerError, notices are skipped."""
        while True:
            kind = self._read(1)
            (length,) = struct.unpack("!i", self._read(4))
            body = self._read(length - 4)
            if kind == b"E":
                raise ServerError(_fields(body))
            if kind != b"N":
                return kind, body

    def authentication(self) -> tuple[int, bytes]:
        """The next 'R' message: (code, the rest)."""
        kind, body = self.receive()
        if kind != b"R":
            raise ProtocolError(f"expected an authentication request, got {kind!r}")
        return struct.unpack("!i", body[:4])[0], body[4:]

    def wait_ready(self) -> None:
        """Skip ParameterStatus and BackendKeyData until ReadyForQuery; an error on the way is raised."""
        while self.receive()[0] != b"Z":
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the server may have closed it already
            self.send(b"X", b"")
        self.sock.close()

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ProtocolError("the server closed the connection")
            data += chunk
        return data


def _fields(body: bytes) -> dict[str, str]:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def password_message(conn: Connection, secret: str) -> None:
    conn.send(b"p", secret.encode() + b"\0")


def md5_secret(user: str, password: str, salt: bytes) -> str:
    """ "md5" + md5(md5(password + user) + salt), as both drivers compute it."""
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def scram_sha_256(conn: Connection, password: str, mechanisms: bytes) -> None:
    """SCRAM-SHA-256 (RFC 5802, 7677) as pgx's auth_scram.go runs it; raises on a bad server answer."""
    if b"SCRAM-SHA-256" not in mechanisms.split(b"\0"):
        raise ProtocolError("SCRAM-SHA-256 not supported")
    nonce = base64.b64encode(secrets.token_bytes(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    conn.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
    code, server_first = conn.authentication()
    if code != AUTH_SASL_CONTINUE:
        raise ProtocolError(f"expected AuthenticationSASLContinue, got {code}")
    attrs = dict(item.split("=", 1) for item in server_first.decode().split(","))
    if not attrs.get("r", "").startswith(nonce):
        raise ProtocolError("invalid SCRAM server-first-message received from server")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first.decode()},{final_bare}".encode()
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
    conn.send(b"p", f"{final_bare},p={proof}".encode())
    code, server_final = conn.authentication()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    expected = b"v=" + base64.b64encode(hmac.digest(server_key, auth_message, "sha256"))
    if code != AUTH_SASL_FINAL or not hmac.compare_digest(server_final, expected):
        raise ProtocolError("invalid SCRAM ServerSignature received from server")
