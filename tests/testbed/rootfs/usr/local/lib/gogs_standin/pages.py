"""The markup Gogs serves, from templates/ at each tag: base/head.tmpl, base/alert.tmpl, base/footer.tmpl,
install.tmpl, home.tmpl, user/auth/login.tmpl, status/404.tmpl; macaron's recovery.go for a panic.

Shortened where nothing is checked (scripts, menus, translations), kept byte for byte where a user or a
blueprint reads it: the title, the alert around an error, the form's fields, the footer.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from .binding import FIELDS
from .messages import tr
from .release import Release

# html/template's escaper (text and quoted attributes)
_HTML = {"\0": "\ufffd", '"': "&#34;", "&": "&amp;", "'": "&#39;", "+": "&#43;", "<": "&lt;", ">": "&gt;"}
# golang.org/x/net/html EscapeString: what bluemonday's Sanitize (Str2html) does to plain text
_SANITIZED = {"&": "&amp;", "'": "&#39;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "\r": "&#13;"}


def esc(text: Any) -> str:
    return "".join(_HTML.get(c, c) for c in str(text))


def sanitized(text: str) -> str:
    return "".join(_SANITIZED.get(c, c) for c in text)


def alert(message: str) -> str:
    """templates/base/alert.tmpl with .Flash.ErrorMsg (Str2html), as install.tmpl includes it."""
    if not message:
        return ""
    return f'\n\t<div class="ui negative message">\n\t\t<p>{sanitized(message)}</p>\n\t</div>\n\n'


def page(release: Release, title: str, body: str, app_name: str, started: float) -> bytes:
    """base/head.tmpl + body + base/footer.tmpl."""
    if release.version == "0.11.19":
        asset = "?v=" + _md5(release.app_ver)
        css, js = f"/css/gogs.css{asset}", f"/js/gogs.js{asset}"
    else:
        css, js = f"/css/gogs.min.css?v={release.build_commit}", f"/js/gogs.js?v={release.build_commit}"
    head = (
        '<!DOCTYPE html>\n<html>\n<head data-suburl="">\n'
        '\t<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />\n'
        f'\t<link rel="stylesheet" href="{css}">\n\t<script src="{js}"></script>\n'
        f"\t<title>{esc(title) + ' - ' if title else ''}{esc(app_name)}</title>\n"
        '</head>\n<body>\n\t<div class="full height">\n'
    )
    return (head + body + footer(release, app_name, started)).encode()


def footer(release: Release, app_name: str, started: float) -> str:
    """templates/base/footer.tmpl: 0.11.19 shows "© 2017 Gogs Version: <AppVer>" (SHOW_FOOTER_VERSION and
    SHOW_FOOTER_TEMPLATE_LOAD_TIME are true in conf/app.ini); from v0.12.0 it is "© {{Year}} {{AppName}}"."""
    elapsed = f"{int((time.monotonic() - started) * 1000)}ms"
    load = f"{tr(release, 'page')}: <strong>{elapsed}</strong> {tr(release, 'template')}: <strong>0ms</strong>"
    website = f'<a target="_blank" href="https://gogs.io">{tr(release, "website")}</a>'
    if release.version == "0.11.19":
        left = f"© 2017 Gogs {tr(release, 'version')}: {release.app_ver} {load}"
        right = f'\t\t\t\t{website}\n\t\t\t\t<span class="version">go1.8</span>\n'
    else:
        left = f"© {time.gmtime().tm_year} {esc(app_name)}"
        right = f"\t\t\t\t\n\t\t\t\t\t<span>\n\t\t\t\t\t\t{load}\n\t\t\t\t\t</span>\n\t\t\t\t\n\t\t\t\t{website}\n"
    return (
        '\t</div>\n\t<footer>\n\t\t<div class="ui container">\n'
        f'\t\t\t<div class="ui left">\n\t\t\t\t{left}\n\t\t\t</div>\n'
        f'\t\t\t<div class="ui right links">\n{right}\t\t\t</div>\n'
        "\t\t</div>\n\t</footer>\n</body>\n</html>\n"
    )


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def install(release: Release, values: Mapping[str, Any], db_option: str, error: str, started: float) -> bytes:
    """templates/install.tmpl: the form with the values Gogs assigned (form.Assign), the error in its alert."""
    inputs = []
    for field in FIELDS[release.version]:
        value = values.get(field.form, "")
        if field.form == "db_type":
            inputs.append(f'<input type="hidden" id="db_type" name="db_type" value="{esc(db_option)}">')
        elif field.kind == "bool":
            checked = " checked" if value else ""
            inputs.append(f'<input name="{field.form}" type="checkbox"{checked}>')
        else:
            kind = ' type="password"' if "passwd" in field.form else ""
            inputs.append(f'<input id="{field.form}" name="{field.form}"{kind} value="{esc(value)}">')
    body = (
        '<div class="install">\n\t<div class="ui middle very relaxed page grid">\n'
        '\t\t<div class="sixteen wide center aligned centered column">\n'
        f'\t\t\t<h3 class="ui top attached header">\n\t\t\t\t{tr(release, "install.title")}\n\t\t\t</h3>\n'
        f'\t\t\t<div class="ui attached segment">\n\t\t\t\t{alert(error)}\n'
        '\t\t\t\t<form class="ui form" action="/install" method="post">\n'
        + "".join(f"\t\t\t\t\t{i}\n" for i in inputs)
        + f'\t\t\t\t\t<button class="ui primary button">{tr(release, "install.install")}</button>\n'
        "\t\t\t\t</form>\n\t\t\t</div>\n\t\t</div>\n\t</div>\n</div>\n"
    )
    return page(release, tr(release, "install.install"), body, "Gogs", started)


def home(release: Release, app_name: str, started: float) -> bytes:
    body = (
        '<div class="home">\n\t<div class="hero">\n\t\t<h1 class="ui icon header title">\n\t\t\tGogs\n\t\t</h1>\n'
        "\t\t<h2>A painless self-hosted Git service</h2>\n\t</div>\n</div>\n"
    )
    return page(release, "", body, app_name, started)


def login(release: Release, app_name: str, started: float) -> bytes:
    body = (
        '<div class="user signin">\n\t<form class="ui form" action="/user/login" method="post">\n'
        '\t\t<input id="user_name" name="user_name" required>\n'
        '\t\t<input id="password" name="password" type="password" autocomplete="off" required>\n'
        "\t</form>\n</div>\n"
    )
    return page(release, "Sign In", body, app_name, started)


def not_found(release: Release, app_name: str, started: float) -> bytes:
    """status/404.tmpl; 0.11.19 also shows the version (ShowFooterVersion)."""
    version = f"\t<p>Application Version: {release.app_ver}</p>\n" if release.version == "0.11.19" else ""
    issues = "gogits/gogs" if release.version == "0.11.19" else "gogs/gogs"
    body = (
        '<div class="ui container center">\n\t<p style="margin-top: 100px"><img src="/img/404.png" alt="404"/></p>\n'
        f'\t<div class="ui divider"></div>\n\t<br>\n{version}'
        f'\t<p>If you think this is an error, please open an issue on <a href="https://github.com/{issues}/issues/new">'
        "GitHub</a>.</p>\n</div>\n"
    )
    return page(release, "Page Not Found", body, app_name, started)


def panic(error: str) -> bytes:
    """macaron recovery.go in development mode (RUN_MODE is dev until the install saves prod): the panic, no
    stack here (the stand-in has no Go stack to show)."""
    return (
        f'<html>\n<head><title>PANIC: {esc(error)}</title>\n<meta charset="utf-8" />\n</head><body>\n'
        f'<h1>PANIC</h1>\n<pre style="font-weight: bold;">{esc(error)}</pre>\n</body>\n</html>'
    ).encode()
