"""Gogs' database work: the test engine of InstallPost, the admin account, /healthcheck's ping, the user search.

Sources: models/models.go, models/user.go, models/user_mail.go (0.11.19); internal/db/models.go, internal/db/
users.go (0.13.4).  Gogs creates its ~35 tables (xorm Sync2); the stand-in creates the one it uses, ``user``,
with Gogs' column names, so a table creation really happens where Gogs' would (schema, privileges).
The login goes through ``drivers`` (the release's driver and its error text); the queries through psycopg2.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import string
import time
from collections.abc import Iterator

import psycopg2

from . import drivers
from .drivers import Database, DriverError
from .release import Release

_COLUMNS = (
    "id BIGSERIAL PRIMARY KEY, lower_name VARCHAR(255) NOT NULL UNIQUE, name VARCHAR(255) NOT NULL UNIQUE, "
    "full_name VARCHAR(255), email VARCHAR(255) NOT NULL, passwd VARCHAR(255) NOT NULL, "
    "login_source BIGINT NOT NULL DEFAULT 0, login_name VARCHAR(255), type INTEGER, rands VARCHAR(10), "
    "salt VARCHAR(10), created_unix BIGINT, updated_unix BIGINT, max_repo_creation INTEGER NOT NULL DEFAULT -1, "
    "is_active BOOL, is_admin BOOL, avatar VARCHAR(2048) NOT NULL, avatar_email VARCHAR(255) NOT NULL, "
    "use_custom_avatar BOOL"
)
# models/user.go reservedUsernames / internal/db/users.go reservedUsernames (0.13.4 adds "-", explore, create)
_RESERVED_0_11 = {
    *("assets", "css", "img", "js", "less", "plugins", "debug", "raw", "install", "api", "avatar", "user", "org"),
    *("help", "stars", "issues", "pulls", "commits", "repo", "template", "admin", "new", ".", ".."),
}
_RESERVED = {"0.11.19": _RESERVED_0_11, "0.13.4": _RESERVED_0_11 | {"-", "explore", "create"}}
_RESERVED_PATTERNS = ("*.keys",)
_SALT = string.ascii_letters + string.digits  # tool.RandomString / strutil.RandomChars


class InstallError(Exception):
    """An error InstallPost shows (its text as Gogs formats it, without the locale's prefix)."""


def test_engine(release: Release, db: Database) -> None:
    """NewTestEngine: the engine for the form's settings, and its tables (Sync2)."""
    if db.type != "postgres":
        raise InstallError(_other_type(release, db.type))
    try:
        login = drivers.connect(release, db)
    except DriverError as exc:
        raise InstallError(str(exc)) from None
    try:
        with _session(login) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {_user_table(release, db)} ({_COLUMNS})")
    except psycopg2.Error as exc:
        raise InstallError(drivers.sql_error(release, exc)) from None


def _other_type(release: Release, kind: str) -> str:
    """getEngine's answer for a type that is not PostgreSQL."""
    if kind in ("mysql", "mssql", "sqlite3"):
        return f"gogs-standin: only PostgreSQL is reproduced, not {kind} (this error's text is not Gogs')"
    if release.version == "0.11.19":
        return f"Connect to database: Unknown database type: {kind}"
    return f"connect to database: unknown database type: {kind}"


def _user_table(release: Release, db: Database) -> str:
    """xorm qualifies the table with the engine's schema (x.SetSchema, 0.13.4 only); unqualified, the server's
    search_path decides, and 0.13.4's DSN sets it to the form's schema (empty: no schema to create in)."""
    if release.driver == "pgx" and db.schema:
        return f'"{db.schema}"."user"'
    return '"user"'


@contextlib.contextmanager
def _session(login: drivers.Login) -> Iterator:
    """A psycopg2 connection where the handshake succeeded; committed and closed at the end."""
    conn = psycopg2.connect(
        host=login.host,
        port=login.port,
        user=login.user,
        password=login.password,
        dbname=login.dbname,
        sslmode=login.sslmode,
        options=login.options or None,
        connect_timeout=int(drivers.TIMEOUT),
    )
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def ping(release: Release, db: Database) -> str:
    """models.Ping: "OK" or the driver's error (a new connection each time: the stand-in keeps no pool)."""
    try:
        drivers.connect(release, db)
    except DriverError as exc:
        return str(exc)
    return "OK"


def name_not_allowed(release: Release, name: str) -> str | None:
    """isUsableName (models/user.go) / isNameAllowed (internal/db/users.go): the error text, or None."""
    name = name.strip().lower()
    v0_11 = release.version == "0.11.19"
    if not name:
        return "empty name" if v0_11 else "name is not allowed: map[reason:empty name]"
    if name in _RESERVED[release.version]:
        return f"name is reserved [name: {name}]" if v0_11 else f"name is not allowed: map[name:{name} reason:reserved]"
    for pattern in _RESERVED_PATTERNS:
        if (pattern[0] == "*" and name.endswith(pattern[1:])) or (pattern[-1] == "*" and name.startswith(pattern[:-1])):
            if v0_11:
                return f"name pattern is not allowed [pattern: {pattern}]"
            return f"name is not allowed: map[pattern:{pattern} reason:reserved]"
    return None


def create_admin(release: Release, db: Database, name: str, email: str, password: str) -> None:
    """CreateUser (0.11.19) / Users.Create (0.13.4) for the install's admin; an existing name is kept as it is
    (InstallPost logs "Admin account already exist").  Raises InstallError with the model's error text."""
    refused = name_not_allowed(release, name)
    if refused:
        raise InstallError(refused)
    login = drivers.connect(release, db)
    email = email.lower()
    with _session(login) as conn, conn.cursor() as cur:
        table = _user_table(release, db)
        cur.execute(f"SELECT 1 FROM {table} WHERE lower_name = %s", (name.lower(),))
        if cur.fetchone():
            print("Admin account already exist", flush=True)
            return
        _check_email(release, cur, table, email)
        salt, rands = _random(10), _random(10)
        now = int(time.time())
        cur.execute(
            f"INSERT INTO {table} (lower_name, name, full_name, email, passwd, type, rands, salt, created_unix, "
            "updated_unix, is_active, is_admin, avatar, avatar_email, use_custom_avatar) "
            "VALUES (%s, %s, '', %s, %s, 0, %s, %s, %s, %s, true, true, %s, %s, false)",
            (
                name.lower(),
                name,
                email,
                encode_password(password, salt),
                rands,
                salt,
                now,
                now,
                hash_email(email),
                email,
            ),
        )


def _check_email(release: Release, cur, table: str, email: str) -> None:
    """isEmailUsed says an empty address is used (models/user_mail.go, 0.11.19); 0.13.4's GetByEmail finds no
    user for it."""
    if release.version == "0.11.19":
        if not email:
            raise InstallError("e-mail has been used [email: ]")
        cur.execute(f"SELECT 1 FROM {table} WHERE email = %s", (email,))
        if cur.fetchone():
            raise InstallError(f"e-mail has been used [email: {email}]")
        return
    if email:
        cur.execute(f"SELECT 1 FROM {table} WHERE email = %s AND is_active", (email,))
        if cur.fetchone():
            raise InstallError(f"email has been used: map[email:{email}]")


def encode_password(password: str, salt: str) -> str:
    """EncodePasswd / userutil.EncodePassword: PBKDF2-SHA256, 10000 rounds, 50 bytes, hex."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 10000, 50).hex()


def hash_email(email: str) -> str:
    """tool.HashEmail: md5 of the trimmed, lower-cased address."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def _random(size: int) -> str:
    return "".join(secrets.choice(_SALT) for _ in range(size))


def search_users(release: Release, db: Database, keyword: str, limit: int) -> list[tuple[int, str, str, str]]:
    """SearchUserByName / searchUserByName: nothing for an empty keyword; else individuals whose lower_name or
    full_name holds it.  Rows (id, name, full_name, avatar_email)."""
    if not keyword:
        return []
    login = drivers.connect(release, db)
    pattern = f"%{keyword.lower()}%"
    with _session(login) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT id, name, coalesce(full_name, ''), avatar_email FROM {_user_table(release, db)} "
            "WHERE type = 0 AND (lower_name LIKE %s OR LOWER(full_name) LIKE %s) ORDER BY id LIMIT %s",
            (pattern, pattern, limit),
        )
        return cur.fetchall()
