"""How Gogs' Postgres driver logs in, and the error text it gives, per release.

0.11.19: models/models.go getEngine builds ``postgres://user:pass@host:port/name?sslmode=X`` for the vendored
lib/pq (rev ae8357db, 2016-10-14; vendor/github.com/lib/pq/conn.go): DialOpen dials, then ``ssl`` (sslmode ""
means require), then ``startup``, whose ``auth`` answers cleartext (3) and md5 (5) only.  Its errors are
``pq: <server message>``, or Go 1.8's net error (docker/build-go.sh builds with Go 1.8).

0.13.4: internal/db/models.go getEngine builds the DSN ``user='..' password='..' host='..' port='..' dbname='..'
sslmode='..' search_path='<schema>'`` for pgx v5.3.0 (go.mod; pgconn/config.go ParseConfig, pgconn/pgconn.go
ConnectConfig): an empty sslmode is prefer, the host is looked up, then each address and TLS choice is tried;
its errors are ``failed to connect to `host=.. user=.. database=..`: <step> (<cause>)``.

Both drivers wait for the OS to give up on an address that never answers; the stand-in gives up after
TIMEOUT seconds with Go's "i/o timeout".
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import socket
import ssl
from dataclasses import dataclass

from . import wire
from .release import Release

TIMEOUT = 10.0
_GO_NET = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network is unreachable",
    errno.ECONNRESET: "connection reset by peer",
}
# pgconn/config.go notRuntimeParams
_NOT_RUNTIME = {
    "host",
    "port",
    "database",
    "user",
    "password",
    "passfile",
    "connect_timeout",
    "sslmode",
    "sslkey",
    "sslcert",
    "sslrootcert",
    "sslpassword",
    "sslsni",
    "krbspn",
    "krbsrvname",
    "target_session_attrs",
    "service",
    "servicefile",
}
# pgconn.ConnectConfig stops trying other addresses on these (wrong password, pg_hba, no database, no privilege)
_FINAL_CODES = {"28P01", "28000", "3D000", "42501"}


@dataclass(frozen=True)
class Database:
    """The [database] settings InstallPost takes from the form."""

    type: str
    host: str
    name: str
    user: str
    password: str
    ssl_mode: str
    schema: str = ""  # 0.13.4 only
    path: str = ""


@dataclass(frozen=True)
class Login:
    """Where a handshake succeeded: what psycopg2 connects with for the queries."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    sslmode: str
    options: str


class DriverError(Exception):
    """The driver's own error text."""


def host_port(info: str) -> tuple[str, str]:
    """parsePostgreSQLHostPort (models/models.go; internal/dbutil/dsn.go at 0.13.4)."""
    host, port = "127.0.0.1", "5432"
    if ":" in info and not info.endswith("]"):
        host, _, port = info.rpartition(":")
    elif info:
        host = info
    return host, port


def connect(release: Release, db: Database) -> Login:
    """Log in as the release's driver does; raises DriverError with its text."""
    if release.driver == "lib/pq":
        return _libpq(release, db)
    return _pgx(release, db)


def sql_error(release: Release, exc: Exception) -> str:
    """A query's error as the driver shows it: lib/pq's Error() or pgconn's PgError.Error()."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if not primary:
        return str(exc).strip()
    if release.driver == "lib/pq":
        return f"pq: {primary}"
    return f"{diag.severity}: {primary} (SQLSTATE {exc.pgcode})"  # type: ignore[union-attr,attr-defined]


# ----- lib/pq, 2016 -----


def _libpq(release: Release, db: Database) -> Login:
    host, port_text = host_port(db.host)
    port = _port(port_text, db.host)
    try:
        addresses = _lookup(host, port)
    except socket.gaierror:
        raise DriverError(f"dial tcp: {_lookup_error(host)}") from None
    sock = _dial(release, addresses[0], port)
    conn = wire.Connection(sock)
    try:
        tls = _libpq_ssl(conn, db.ssl_mode, host)
        conn.startup(  # DialOpen's defaults go along as run-time parameters
            {
                "user": db.user,
                "database": db.name,
                "extra_float_digits": "2",
                "client_encoding": "UTF8",
                "datestyle": "ISO, MDY",
            }
        )
        _libpq_auth(conn, db)
        conn.wait_ready()
    except wire.ServerError as exc:
        raise DriverError(f"pq: {exc.message}") from None
    except (wire.ProtocolError, OSError) as exc:
        raise DriverError(_eof(exc)) from None
    finally:
        conn.close()
    return Login(addresses[0], port, db.user, db.password, db.name, "require" if tls else "disable", "")


def _libpq_ssl(conn: wire.Connection, mode: str, host: str) -> bool:
    """conn.go (cn *conn) ssl."""
    if mode == "disable":
        return False
    if mode not in ("", "require", "verify-ca", "verify-full"):
        raise DriverError(
            f'pq: unsupported sslmode "{mode}"; only "require" (default), "verify-full", "verify-ca", and "disable" '
            "supported"
        )
    if not conn.request_ssl():
        raise DriverError("pq: SSL is not enabled on the server")
    conn.wrap(_tls_context(mode), host if mode == "verify-full" else None)
    return True


def _libpq_auth(conn: wire.Connection, db: Database) -> None:
    """conn.go (cn *conn) auth: 0 OK, 3 cleartext, 5 md5; anything else (SCRAM is 10) stops the login."""
    code, rest = conn.authentication()
    if code == wire.AUTH_OK:
        return
    if code == wire.AUTH_CLEARTEXT:
        wire.password_message(conn, db.password)
    elif code == wire.AUTH_MD5:
        wire.password_message(conn, wire.md5_secret(db.user, db.password, rest[:4]))
    else:
        raise DriverError(f"pq: unknown authentication response: {code}")
    if conn.authentication()[0] != wire.AUTH_OK:
        raise DriverError("pq: unexpected authentication response: 'R'")


# ----- pgx v5.3.0 -----


@dataclass(frozen=True)
class _PgxConfig:
    """What pgconn.ParseConfig makes of Gogs' DSN."""

    host: str
    port: int
    user: str
    password: str
    database: str
    tls_choices: list[str]  # in the order tried; "" is no TLS
    runtime: dict[str, str]  # the startup message's parameters

    @property
    def header(self) -> str:  # connectError.Error()
        return f"failed to connect to `host={self.host} user={self.user} database={self.database}`"


def _pgx_config(db: Database) -> _PgxConfig:
    """pgconn/config.go ParseConfig on internal/db/models.go getEngine's DSN (values quoted, not escaped), over
    pgconn's defaults (defaultSettings: the first socket folder, port 5432, the OS user)."""
    host, port_text = host_port(db.host)
    dsn = (
        f"user='{db.user}' password='{db.password}' host='{host}' port='{port_text}' dbname='{db.name}' "
        f"sslmode='{db.ssl_mode}' search_path='{db.schema}'"
    )
    settings = {"host": _default_host(), "port": "5432", "user": _os_user()} | _pgx_settings(dsn)
    port_text, mode = settings["port"], settings.get("sslmode", "") or "prefer"  # configTLS: "" is prefer
    if not re.fullmatch(r"[0-9]+", port_text):
        raise _parse_error(dsn, "invalid port", f'strconv.ParseUint: parsing "{port_text}": invalid syntax')
    if not 1 <= int(port_text) <= 65535:
        raise _parse_error(dsn, "invalid port", "outside range")
    if mode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise _parse_error(dsn, "failed to configure TLS", "sslmode is invalid")
    return _PgxConfig(
        host=settings["host"],
        port=int(port_text),
        user=settings["user"],
        password=settings.get("password", ""),
        database=settings.get("database", ""),
        tls_choices={"disable": [""], "allow": ["", mode], "prefer": [mode, ""]}.get(mode, [mode]),
        runtime={k: v for k, v in settings.items() if k not in _NOT_RUNTIME} | _startup_names(settings),
    )


def _startup_names(settings: dict[str, str]) -> dict[str, str]:
    return {"user": settings["user"], "database": settings.get("database", "")}


def _pgx(release: Release, db: Database) -> Login:
    """pgconn.ConnectConfig: look the host up, then try each address with each TLS choice; a server error on
    the password, pg_hba, the database or the privilege ends the attempts; else the last error is reported."""
    config = _pgx_config(db)
    if config.host.startswith("/"):  # a folder is a Unix socket there (NetworkAddress); the stand-in has none
        where = f"{config.host}/.s.PGSQL.{config.port}"
        raise DriverError(f"{config.header}: dial error (dial unix {where}: connect: no such file or directory)")
    try:
        addresses = _lookup(config.host, config.port)
    except socket.gaierror:
        raise DriverError(f"{config.header}: hostname resolving error ({_lookup_error(config.host)})") from None
    error = ""
    for address in addresses:
        for tls in config.tls_choices:
            try:
                _pgx_attempt(release, config, address, tls)
            except _Final as final:
                raise DriverError(f"{config.header}: {final}") from None
            except DriverError as exc:
                error = f"{config.header}: {exc}"
                continue
            options = f"-c search_path={_escape_option(config.runtime.get('search_path', ''))}"
            return Login(address, config.port, config.user, config.password, config.database, tls or "disable", options)
    raise DriverError(error)


class _Final(DriverError):
    """A server error pgconn does not retry on another address."""


def _pgx_attempt(release: Release, config: _PgxConfig, address: str, tls: str) -> None:
    """pgconn.connect for one address and TLS choice; DriverError holds "<step> (<cause>)"."""
    try:
        sock = _dial(release, address, config.port)
    except DriverError as exc:
        raise DriverError(f"dial error ({exc})") from None
    conn = wire.Connection(sock)
    try:
        if tls and not conn.request_ssl():
            raise DriverError("tls error (server refused TLS connection)")
        if tls:
            conn.wrap(_tls_context(tls), config.host if tls == "verify-full" else None)
        conn.startup(config.runtime)
        _pgx_auth(conn, config.user, config.password)
        conn.wait_ready()
    except wire.ServerError as exc:
        pg_error = f"{exc.severity}: {exc.message} (SQLSTATE {exc.code})"
        if exc.code in _FINAL_CODES:
            raise _Final(f"server error ({pg_error})") from None
        raise DriverError(f"server error ({pg_error})") from None
    except ssl.SSLError as exc:
        raise DriverError(f"tls error ({exc.reason or exc})") from None
    except (wire.ProtocolError, OSError) as exc:
        raise DriverError(f"failed to receive message ({_eof(exc)})") from None
    finally:
        conn.close()


def _pgx_auth(conn: wire.Connection, user: str, password: str) -> None:
    code, rest = conn.authentication()
    if code == wire.AUTH_CLEARTEXT:
        wire.password_message(conn, password)
    elif code == wire.AUTH_MD5:
        wire.password_message(conn, wire.md5_secret(user, password, rest[:4]))
    elif code == wire.AUTH_SASL:
        try:
            wire.scram_sha_256(conn, password, rest)
        except wire.ServerError as exc:
            raise DriverError(f"failed SASL auth ({exc.severity}: {exc.message} (SQLSTATE {exc.code}))") from None
        except wire.ProtocolError as exc:
            raise DriverError(f"failed SASL auth ({exc})") from None
    elif code != wire.AUTH_OK:
        raise DriverError(f"received unexpected message (authentication request {code})")


def _default_host() -> str:
    """pgconn/defaults.go defaultHost: the first of these folders that exists (the image has /tmp)."""
    for folder in ("/var/run/postgresql", "/private/tmp", "/tmp"):
        if os.path.exists(folder):
            return folder
    return "localhost"


def _os_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return ""


def _pgx_settings(dsn: str) -> dict[str, str]:
    """pgconn/config.go parseDSNSettings: key='value' pairs; \\\\ and \\' unescaped; dbname is database."""
    settings: dict[str, str] = {}
    rest = dsn
    while rest:
        key, eq, rest = rest.partition("=")
        if not eq:
            raise _parse_error(dsn, "failed to parse as DSN", "invalid dsn")
        key, rest = key.strip(), rest.lstrip()
        value, rest = _dsn_value(dsn, rest)
        if not key:
            raise _parse_error(dsn, "failed to parse as DSN", "invalid dsn")
        settings["database" if key == "dbname" else key] = value.replace("\\\\", "\\").replace("\\'", "'")
    return settings


def _dsn_value(dsn: str, rest: str) -> tuple[str, str]:
    if not rest.startswith("'"):
        match = re.match(r"(?:\\.|[^\s\\])*", rest)
        value = match.group(0) if match else ""
        return value, rest[len(value) + 1 :]
    match = re.match(r"'((?:\\.|[^'\\])*)'", rest)
    if not match:
        raise _parse_error(dsn, "failed to parse as DSN", "unterminated quoted string in connection info string")
    return match.group(1), rest[match.end() :].lstrip()


def _parse_error(dsn: str, step: str, cause: str) -> DriverError:
    """parseConfigError.Error(), with the password redacted by redactPW."""
    shown = re.sub(r"password='[^']*'", "password=xxxxx", dsn)
    return DriverError(f"cannot parse `{shown}`: {step} ({cause})")


def _escape_option(value: str) -> str:
    return value.replace("\\", "\\\\").replace(" ", "\\ ")


# ----- Go's net package -----


def _port(text: str, info: str) -> int:
    if not re.fullmatch(r"[0-9]+", text) or not 0 < int(text) < 65536:
        raise DriverError(f"gogs-standin: the port of {info!r} is not a number (this error's text is not Gogs')")
    return int(text)


def _lookup(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _lookup_error(host: str) -> str:
    """Go's pure resolver (docker/nsswitch.conf makes the image use it): "lookup <host> on <server>:53: ..."."""
    server = "127.0.0.11"
    try:
        with open("/etc/resolv.conf") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    server = parts[1]
                    break
    except OSError:
        pass
    return f"lookup {host} on {server}:53: no such host"


def _dial(release: Release, address: str, port: int) -> socket.socket:
    """net.Dial("tcp", ...); Go 1.8 named the failing call getsockopt, later Go names it connect."""
    try:
        return socket.create_connection((address, port), timeout=TIMEOUT)
    except TimeoutError:
        raise DriverError(f"dial tcp {address}:{port}: i/o timeout") from None
    except OSError as exc:
        reason = _GO_NET.get(exc.errno or 0, (exc.strerror or str(exc)).lower())
        call = "getsockopt" if release.go_net_legacy else "connect"
        raise DriverError(f"dial tcp {address}:{port}: {call}: {reason}") from None


def _eof(exc: Exception) -> str:
    if isinstance(exc, wire.ProtocolError) and "closed" in str(exc):
        return "EOF"
    return str(exc)


def _tls_context(mode: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if mode != "verify-full":
        context.check_hostname = False
    if mode in ("require", "prefer", "allow", ""):
        context.verify_mode = ssl.CERT_NONE
    return context
