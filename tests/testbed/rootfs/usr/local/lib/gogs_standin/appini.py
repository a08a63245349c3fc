"""custom/conf/app.ini (GOGS_CUSTOM=/data/gogs in the image): read at start, saved by InstallPost.

InstallPost's "Save settings" (routers/install.go at 0.11.19, internal/route/install.go at 0.13.4) loads the file
when there is one (cfg.Append keeps what a user put there), sets its keys and saves it.  The keys differ:
0.12 renamed DB_TYPE, PASSWD, APP_NAME, ROOT_URL and [mailer] (TYPE, PASSWORD, BRAND_NAME, EXTERNAL_URL, [email])
and moved the service switches to [auth] and [user], reading the old names too (handleDeprecated in
internal/conf/static.go); at 0.13.4 handleDeprecated is empty and the old names are ignored.  The file is written as gopkg.in/ini.v1 writes it: keys padded to one column per
section (PrettyFormat), a value with # or ; between backquotes, with a newline or backquote between \"\"\".
"""

from __future__ import annotations

import os
from typing import Any

from .drivers import Database
from .release import Release

Settings = dict[str, dict[str, str]]


def load(path: str) -> Settings:
    """{section: {KEY: value}}; the keys before any section are under ""."""
    settings: Settings = {"": {}}
    section = ""
    if not os.path.isfile(path):
        return settings
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        index += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            settings.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value.startswith('"""'):
            body = value[3:]
            while '"""' not in body and index < len(lines):
                body += "\n" + lines[index]
                index += 1
            value = body.split('"""', 1)[0]
        else:
            value = _unquote(value)
        settings.setdefault(section, {})[key.strip()] = value
    return settings


def _unquote(value: str) -> str:
    for quote in ("`", '"'):
        if value.startswith(quote) and quote in value[1:]:
            return value[1:].split(quote, 1)[0]
    for mark in "#;":
        value = value.split(mark, 1)[0]
    return value.strip()


def database(release: Release, settings: Settings) -> Database:
    """[database] as models.LoadConfigs (0.11.19) / conf.Init (0.13.4) reads it, over conf/app.ini's defaults."""
    sec = settings.get("database", {})
    if release.version == "0.11.19":
        return Database(
            type=sec.get("DB_TYPE", "mysql"),
            host=sec.get("HOST", "127.0.0.1:3306"),
            name=sec.get("NAME", "gogs"),
            user=sec.get("USER", "root"),
            password=sec.get("PASSWD", ""),
            ssl_mode=sec.get("SSL_MODE", "disable"),
            path=sec.get("PATH", "data/gogs.db"),
        )
    return Database(
        type=sec.get("TYPE", "postgres"),
        host=sec.get("HOST", "127.0.0.1:5432"),
        name=sec.get("NAME", "gogs"),
        user=sec.get("USER", "gogs"),
        password=sec.get("PASSWORD", ""),
        ssl_mode=sec.get("SSL_MODE", "disable"),
        schema=sec.get("SCHEMA", "public"),
        path=sec.get("PATH", "data/gogs.db"),
    )


def app_name(release: Release, settings: Settings) -> str:
    return settings[""].get("APP_NAME" if release.version == "0.11.19" else "BRAND_NAME", "Gogs")


def external_url(release: Release, settings: Settings) -> str:
    url = settings.get("server", {}).get("ROOT_URL" if release.version == "0.11.19" else "EXTERNAL_URL", "")
    return url or "http://localhost:3000/"


def install_settings(release: Release, f: dict[str, Any], db: Database, secret_key: str) -> list[tuple[str, str, str]]:
    """(section, KEY, value) in the order InstallPost sets them."""
    v0_11 = release.version == "0.11.19"
    rows = [("database", "DB_TYPE" if v0_11 else "TYPE", db.type), ("database", "HOST", db.host)]
    rows += [("database", "NAME", db.name)] + ([] if v0_11 else [("database", "SCHEMA", db.schema)])
    rows += [("database", "USER", db.user), ("database", "PASSWD" if v0_11 else "PASSWORD", db.password)]
    rows += [("database", "SSL_MODE", db.ssl_mode), ("database", "PATH", db.path)]
    rows += [("", "APP_NAME" if v0_11 else "BRAND_NAME", f["app_name"]), ("repository", "ROOT", f["repo_root_path"])]
    rows += [] if v0_11 else [("repository", "DEFAULT_BRANCH", f["default_branch"])]
    rows += [
        ("", "RUN_USER", f["run_user"]),
        ("server", "DOMAIN", f["domain"]),
        ("server", "HTTP_PORT", f["http_port"]),
    ]
    rows += [("server", "ROOT_URL" if v0_11 else "EXTERNAL_URL", f["app_url"])]
    if f["ssh_port"] == 0:
        rows += [("server", "DISABLE_SSH", "true")]
    else:
        rows += [("server", "DISABLE_SSH", "false"), ("server", "SSH_PORT", str(f["ssh_port"]))]
        rows += [("server", "START_SSH_SERVER", _bool(f["use_builtin_ssh_server"]))]
    rows += _mail(v0_11, f) + _services(v0_11, f)
    rows += [("", "RUN_MODE", "prod"), ("session", "PROVIDER", "file")]
    rows += [("log", "MODE", "console, file" if f["enable_console_mode"] else "file"), ("log", "LEVEL", "Info")]
    rows += [("log", "ROOT_PATH", f["log_root_path"])]
    rows += [("security", "INSTALL_LOCK", "true"), ("security", "SECRET_KEY", secret_key)]
    return rows


def _mail(v0_11: bool, f: dict[str, Any]) -> list[tuple[str, str, str]]:
    section = "mailer" if v0_11 else "email"
    if not f["smtp_host"].strip():
        return [(section, "ENABLED", "false")]
    return [
        (section, "ENABLED", "true"),
        (section, "HOST", f["smtp_host"]),
        (section, "FROM", f["smtp_from"]),
        (section, "USER", f["smtp_user"]),
        (section, "PASSWD" if v0_11 else "PASSWORD", f["smtp_passwd"]),
    ]


def _services(v0_11: bool, f: dict[str, Any]) -> list[tuple[str, str, str]]:
    if v0_11:
        return [
            ("service", "REGISTER_EMAIL_CONFIRM", _bool(f["register_confirm"])),
            ("service", "ENABLE_NOTIFY_MAIL", _bool(f["mail_notify"])),
            ("server", "OFFLINE_MODE", _bool(f["offline_mode"])),
            ("picture", "DISABLE_GRAVATAR", _bool(f["disable_gravatar"])),
            ("picture", "ENABLE_FEDERATED_AVATAR", _bool(f["enable_federated_avatar"])),
            ("service", "DISABLE_REGISTRATION", _bool(f["disable_registration"])),
            ("service", "ENABLE_CAPTCHA", _bool(f["enable_captcha"])),
            ("service", "REQUIRE_SIGNIN_VIEW", _bool(f["require_sign_in_view"])),
        ]
    return [
        ("server", "OFFLINE_MODE", _bool(f["offline_mode"])),
        ("auth", "REQUIRE_EMAIL_CONFIRMATION", _bool(f["register_confirm"])),
        ("auth", "DISABLE_REGISTRATION", _bool(f["disable_registration"])),
        ("auth", "ENABLE_REGISTRATION_CAPTCHA", _bool(f["enable_captcha"])),
        ("auth", "REQUIRE_SIGNIN_VIEW", _bool(f["require_sign_in_view"])),
        ("user", "ENABLE_EMAIL_NOTIFICATION", _bool(f["mail_notify"])),
        ("picture", "DISABLE_GRAVATAR", _bool(f["disable_gravatar"])),
        ("picture", "ENABLE_FEDERATED_AVATAR", _bool(f["enable_federated_avatar"])),
    ]


def _bool(value: bool) -> str:
    return "true" if value else "false"  # com.ToStr(bool)


def save(path: str, rows: list[tuple[str, str, str]]) -> None:
    """cfg.Append(existing); set each key; cfg.SaveTo(path).  Raises OSError."""
    settings = load(path)
    for section, key, value in rows:
        settings.setdefault(section, {})[key] = value
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_render(settings))


def _render(settings: Settings) -> str:
    blocks = []
    for section, keys in settings.items():
        if not keys and section == "":
            continue
        width = max((len(k) for k in keys), default=0)
        lines = [f"[{section}]"] if section else []
        lines += [f"{key.ljust(width)} = {_quote(value)}" for key, value in keys.items()]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _quote(value: str) -> str:
    if "\n" in value or "`" in value:
        return f'"""{value}"""'
    if "#" in value or ";" in value:
        return f"`{value}`"
    return value
