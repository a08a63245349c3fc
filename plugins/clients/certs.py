"""Certificates for a VCH's Docker endpoint, as ``vic-machine create`` generates them.

File names follow vic-machine: ``ca.pem``/``ca-key.pem``, ``server-cert.pem``/``server-key.pem``
and the client's ``cert.pem``/``key.pem``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _sans(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def generate(folder: str | Path, cname: str, names: list[str], client: bool = True, days: int = 825) -> dict:
    """Write a CA, a server certificate for ``names`` and (with ``client``) a client certificate.

    Returns the paths.  Without ``client`` (tls_noverify) only the server pair is kept, signed by
    a throwaway CA so that clients can still pin it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = (
        _builder(f"{cname} CA", _name(f"{cname} CA"), ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    server_cert = (
        _builder(cname, ca_cert.subject, server_key, days)
        .add_extension(_sans([cname, *names]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {
        "ca": folder / "ca.pem",
        "server_cert": folder / "server-cert.pem",
        "server_key": folder / "server-key.pem",
    }
    _write(paths["ca"], ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(paths["server_cert"], server_cert.public_bytes(serialization.Encoding.PEM))
    _write(paths["server_key"], _pem_key(server_key), private=True)
    if client:
        client_key = _key()
        client_cert = (
            _builder("client", ca_cert.subject, client_key, days)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        paths["ca_key"] = folder / "ca-key.pem"
        paths["cert"] = folder / "cert.pem"
        paths["key"] = folder / "key.pem"
        _write(paths["ca_key"], _pem_key(ca_key), private=True)
        _write(paths["cert"], client_cert.public_bytes(serialization.Encoding.PEM))
        _write(paths["key"], _pem_key(client_key), private=True)
    return {k: str(v) for k, v in paths.items()}
