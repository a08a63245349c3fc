"""GET and POST /install: Install and InstallPost (routers/install.go at 0.11.19, internal/route/install.go at
0.13.4), check by check in their order.  Every failure shows the form again (200) with Gogs' message.

The order: the form's binding rules; ``git`` on PATH; the database (the driver logs in and the tables are
created); the repository root, then the log root (os.MkdirAll); the run user; the SMTP host's port; registration
without an admin; the admin password, then its confirmation.  Then app.ini is saved (INSTALL_LOCK = true),
GlobalInit reloads it, and only then is the admin account created: a refused admin name (reserved, or an empty
e-mail at 0.11.19) fails the install after app.ini was saved, so the next start finds Gogs installed, without
that admin.  That is Gogs' behaviour, kept.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg2

from . import appini, binding, database, system
from .drivers import Database, DriverError, sql_error
from .messages import tr
from .release import Release


class App(Protocol):
    """What the handlers share (server.App)."""

    release: Release
    custom_conf: str
    settings: appini.Settings
    install_lock: bool

    def reload(self) -> None: ...


@dataclass
class Outcome:
    values: dict[str, Any]
    db_option: str
    error: str = ""
    redirect: str = ""  # a finished install: APP_URL/user/login
    log: list[str] = field(default_factory=list)


def form_defaults(app: App) -> tuple[dict[str, Any], str]:
    """Install: the form as GET /install shows it, from the settings (conf/app.ini defaults, then app.ini)."""
    release, settings = app.release, app.settings
    db = appini.database(release, settings)
    server = settings.get("server", {})
    options = {"mysql": "MySQL", "postgres": "PostgreSQL", "mssql": "MSSQL", "sqlite3": "SQLite3"}
    values: dict[str, Any] = binding.fill(release, {})
    values |= {
        "db_host": db.host,
        "db_user": db.user,
        "db_name": db.name,
        "db_schema": db.schema,
        "db_path": db.path,
        "app_name": appini.app_name(release, settings),
        "repo_root_path": settings.get("repository", {}).get("ROOT", "/data/git/gogs-repositories"),
        "run_user": settings[""].get("RUN_USER", "git"),
        "domain": server.get("DOMAIN", "localhost"),
        "ssh_port": int(server.get("SSH_PORT", "22") or 0),
        "http_port": server.get("HTTP_PORT", "3000"),
        "app_url": appini.external_url(release, settings),
        "log_root_path": settings.get("log", {}).get("ROOT_PATH", "/app/gogs/log"),
        "default_branch": settings.get("repository", {}).get("DEFAULT_BRANCH", "master"),
        "enable_captcha": True,
        "enable_federated_avatar": release.version == "0.11.19",
    }
    return values, options.get(db.type, release.default_db_option)


def post(app: App, posted: Mapping[str, list[str]]) -> Outcome:
    """InstallPost."""
    release = app.release
    f = binding.fill(release, posted)
    out = Outcome(values=f, db_option=f["db_type"])  # c.Data["CurDbOption"] = f.DbType
    out.error = binding.first_error(release, f) or ""
    checks: list[Callable[[App, dict[str, Any]], str | None]] = [
        _git,
        _database,
        _repository_root,
        _log_root,
        _run_user,
        _smtp,
        _admin_password,
    ]
    for check in checks:
        if out.error:
            return out
        out.error = check(app, f) or ""
    if out.error:
        return out
    if not f["app_url"].endswith("/"):
        f["app_url"] += "/"
    out.error = _save_and_create_admin(app, f)
    if not out.error:
        print("First-time run install finished!", flush=True)
        out.redirect = f["app_url"] + "user/login"
    return out


def _git(app: App, f: dict[str, Any]) -> str | None:
    missing = system.git_missing()
    return tr(app.release, "install.test_git_failed", missing) if missing else None


def form_database(release: Release, f: Mapping[str, Any]) -> Database:
    """dbTypes[f.DbType] and the form's settings: conf.Database as InstallPost fills it."""
    return Database(
        type=release.db_types.get(f["db_type"], ""),
        host=f["db_host"],
        name=f["db_name"],
        user=f["db_user"],
        password=f["db_passwd"],
        ssl_mode=f["ssl_mode"],
        schema=f.get("db_schema", ""),
        path=f["db_path"],
    )


def _database(app: App, f: dict[str, Any]) -> str | None:
    db = form_database(app.release, f)
    if db.type == "sqlite3" and not db.path:
        return tr(app.release, "install.err_empty_db_path")
    try:
        database.test_engine(app.release, db)
    except database.InstallError as exc:
        return tr(app.release, "install.invalid_db_setting", exc)
    return None


def _repository_root(app: App, f: dict[str, Any]) -> str | None:
    f["repo_root_path"] = f["repo_root_path"].replace("\\", "/")
    error = system.mkdir_all(f["repo_root_path"])
    return tr(app.release, "install.invalid_repo_path", error) if error else None


def _log_root(app: App, f: dict[str, Any]) -> str | None:
    f["log_root_path"] = f["log_root_path"].replace("\\", "/")
    error = system.mkdir_all(f["log_root_path"])
    return tr(app.release, "install.invalid_log_root_path", error) if error else None


def _run_user(app: App, f: dict[str, Any]) -> str | None:
    current = system.current_username(app.release)
    if f["run_user"] != current:
        return tr(app.release, "install.run_user_not_match", f["run_user"], current)
    return None


def _smtp(app: App, f: dict[str, Any]) -> str | None:
    """The SMTP host needs a port.  (The From address goes through Go's mail.ParseAddress: not reproduced.)"""
    if f["smtp_host"] and ":" not in f["smtp_host"]:
        return tr(app.release, "install.smtp_host_missing_port")
    return None


def _admin_password(app: App, f: dict[str, Any]) -> str | None:
    if f["disable_registration"] and not f["admin_name"]:
        return tr(app.release, "install.no_admin_and_disable_registration")
    if f["admin_name"] and not f["admin_passwd"]:
        return tr(app.release, "install.err_empty_admin_password")
    if f["admin_passwd"] != f["admin_confirm_passwd"]:
        return tr(app.release, "form.password_not_match")
    return None


def _save_and_create_admin(app: App, f: dict[str, Any]) -> str:
    release = app.release
    db = form_database(release, f)
    secret_key = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(15))
    try:
        appini.save(app.custom_conf, appini.install_settings(release, f, db, secret_key))
    except OSError as exc:
        return tr(release, "install.save_config_failed", f"open {exc.filename}: {(exc.strerror or '').lower()}")
    app.reload()  # GlobalInit: INSTALL_LOCK is now true
    if not f["admin_name"]:
        return ""
    try:
        database.create_admin(release, db, f["admin_name"], f["admin_email"], f["admin_passwd"])
    except (database.InstallError, DriverError) as exc:
        app.install_lock = False  # setting.InstallLock / conf.Security.InstallLock = false; app.ini stays
        return tr(release, "install.invalid_admin_setting", exc)
    except psycopg2.Error as exc:
        app.install_lock = False
        return tr(release, "install.invalid_admin_setting", sql_error(release, exc))
    return ""
