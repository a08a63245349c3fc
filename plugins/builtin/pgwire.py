"""A Postgres readiness check at the protocol level: startup, authentication, then SELECT 1.

Supports the authentication methods a Postgres server asks for by default (SCRAM-SHA-256, md5,
cleartext, trust).  Only the standard library is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct

from vicflow.plugins.errors import VicflowError


class PostgresNotReady(VicflowError):
    """The server answered but is not ready (starting up, refusing the login, ...)."""


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _read(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _exactly(sock, 5)
    length = struct.unpack("!I", header[1:])[0]
    return header[:1], _exactly(sock, length - 4)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def _error(payload: bytes) -> str:
    fields = {part[:1]: part[1:].decode(errors="replace") for part in payload.split(b"\0") if part}
    return f"{fields.get(b'C', '?')}: {fields.get(b'M', 'error')}"


def check(host: str, port: int, user: str, password: str | None, database: str, timeout: float) -> str:
    """Log in and run SELECT 1; returns the server version.  Raises PostgresNotReady or OSError."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        params = b"".join(
            k.encode() + b"\0" + v.encode() + b"\0"
            for k, v in (("user", user), ("database", database), ("application_name", "vicflow-health"))
        )
        payload = struct.pack("!I", 196608) + params + b"\0"
        sock.sendall(struct.pack("!I", len(payload) + 4) + payload)
        version = ""
        scram: dict[str, bytes] = {}
        while True:
            kind, body = _read(sock)
            if kind == b"E":
                raise PostgresNotReady(_error(body))
            if kind == b"R":
                code = struct.unpack("!I", body[:4])[0]
                if code == 0:
                    continue
                if password is None:
                    raise PostgresNotReady("the server asks for a password and none was given")
                if code == 3:
                    sock.sendall(_message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    sock.sendall(_message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    if b"SCRAM-SHA-256" not in body[4:].split(b"\0"):
                        raise PostgresNotReady(f"unsupported SASL mechanisms {body[4:]!r}")
                    scram["nonce"] = base64.b64encode(os.urandom(18))
                    scram["first_bare"] = b"n=,r=" + scram["nonce"]
                    first = b"n,," + scram["first_bare"]
                    sock.sendall(_message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
                elif code == 11:
                    sock.sendall(_message(b"p", _scram_final(scram, body[4:], password)))
                elif code == 12:
                    if not hmac.compare_digest(body[4:], b"v=" + base64.b64encode(scram["server_signature"])):
                        raise PostgresNotReady("the server's SCRAM signature does not match")
                else:
                    raise PostgresNotReady(f"unsupported authentication request {code}")
            elif kind == b"S":
                key, _, value = body.partition(b"\0")
                if key == b"server_version":
                    version = value.rstrip(b"\0").decode()
            elif kind == b"Z":
                break
        sock.sendall(_message(b"Q", b"SELECT 1\0"))
        while True:
            kind, body = _read(sock)
            if kind == b"E":
                raise PostgresNotReady(_error(body))
            if kind == b"Z":
                sock.sendall(_message(b"X", b""))
                return version


def _scram_final(scram: dict[str, bytes], server_first: bytes, password: str) -> bytes:
    fields = dict(part.split(b"=", 1) for part in server_first.split(b","))
    nonce, salt, iterations = fields[b"r"], base64.b64decode(fields[b"s"]), int(fields[b"i"])
    if not nonce.startswith(scram["nonce"]):
        raise PostgresNotReady("the server's SCRAM nonce does not extend ours")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = b"c=biws,r=" + nonce
    auth_message = scram["first_bare"] + b"," + server_first + b"," + without_proof
    signature = hmac.new(stored_key, auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    scram["server_signature"] = hmac.new(server_key, auth_message, "sha256").digest()
    return without_proof + b",p=" + base64.b64encode(proof)
