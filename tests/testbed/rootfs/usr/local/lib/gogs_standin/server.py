"""Gogs' routes as a user meets them (cmd/web.go at 0.11.19, internal/cmd/web.go at 0.13.4), on :3000.

- /healthcheck is macaron toolbox's (go-macaron/toolbox healthcheck.go, mounted before every page): always 200,
  "* Database connection: OK" or the driver's error.  Before install there is no engine: 0.11.19's models.Ping
  dereferences it (a panic: 500 from macaron.Recovery), 0.13.4's db.Ping answers "database not available".
- The pages behind context.Toggle (/, /explore/..., /user/login, ...) answer 302 to /install until INSTALL_LOCK
  is true (pkg/context/auth.go, internal/context/auth.go); /install answers the form, and 404 once installed.
- /api/v1/users/search is the API's user search (routers/api/v1/user/user.go, internal/route/api/v1/user/
  user.go), behind the same Toggle.
- Anything else is the 404 page.  There are no static assets, sessions, sign-in or repositories.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import psycopg2

from . import appini, database, install, pages
from .drivers import Database, DriverError
from .release import Release

# routes behind context.Toggle: {path: (methods, sign-in required)}; the API group is behind ignSignIn too
_TOGGLED = {
    "/api/v1/users/search": ("GET", False),
    "/": ("GET", False),
    "/explore": ("GET", False),
    "/explore/repos": ("GET", False),
    "/explore/users": ("GET", False),
    "/explore/organizations": ("GET", False),
    "/user/login": ("GET POST", False),
    "/user/sign_up": ("GET POST", False),
    "/issues": ("GET", True),
    "/pulls": ("GET", True),
}
_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True", "YES", "yes", "Yes", "y", "ON", "on", "On"}  # ini.v1 parseBool
_NIL_DEREFERENCE = "runtime error: invalid memory address or nil pointer dereference"


class App:
    """The process' state: the settings GlobalInit read, the install lock, the database engine."""

    def __init__(self, release: Release, custom_conf: str):
        self.release = release
        self.custom_conf = custom_conf
        self.started = time.monotonic()
        self.lock = threading.Lock()  # one install at a time
        self.settings: appini.Settings = {"": {}}
        self.install_lock = False
        self.engine: Database | None = None
        self.reload()

    def reload(self) -> None:
        """GlobalInit: read app.ini; with INSTALL_LOCK, the engine on its [database] (models.NewEngine)."""
        self.settings = appini.load(self.custom_conf)
        self.install_lock = self.settings.get("security", {}).get("INSTALL_LOCK", "") in _GO_TRUE
        if self.install_lock:
            self.engine = appini.database(self.release, self.settings)

    @property
    def app_name(self) -> str:
        return appini.app_name(self.release, self.settings)


class Handler(BaseHTTPRequestHandler):
    app: App  # set by main
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._route("GET")

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        self.started = time.monotonic()
        url = urlparse(self.path)
        path = url.path.rstrip("/") or "/"
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
        try:
            if path == "/healthcheck" and method in ("GET", "HEAD"):
                return self._healthcheck()
            if method == "HEAD" and not self.app.release.auto_head:
                return self._not_found()
            if path == "/install":
                return self._install(method, body)
            if path in _TOGGLED and method in _TOGGLED[path][0].split():
                return self._toggled(path, method, parse_qs(url.query))
            self._not_found()
        except Exception as exc:  # macaron.Recovery: a panic is a 500
            print(f"PANIC: {type(exc).__name__}: {exc}", flush=True)
            self._panic(str(exc))

    # ----- handlers -----

    def _healthcheck(self) -> None:
        engine = self.app.engine
        if engine is None and self.app.release.ping_without_engine is None:
            return self._panic(_NIL_DEREFERENCE)
        status = self.app.release.ping_without_engine if engine is None else database.ping(self.app.release, engine)
        self._send(200, f"* Database connection: {status}\n".encode(), "text/plain; charset=utf-8")

    def _install(self, method: str, body: bytes) -> None:
        if self.app.install_lock:  # InstallInit
            return self._not_found()
        if method != "POST":
            values, option = install.form_defaults(self.app)
            return self._html(200, pages.install(self.app.release, values, option, "", self.started))
        with self.app.lock:
            out = install.post(self.app, parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
        if out.redirect:
            return self._redirect(out.redirect)
        print(f"install: {out.error}", flush=True)
        self._html(200, pages.install(self.app.release, out.values, out.db_option, out.error, self.started))

    def _toggled(self, path: str, method: str, query: dict[str, list[str]]) -> None:
        if not self.app.install_lock:
            return self._redirect("/install")
        if path.startswith("/api/"):
            return self._search(query)
        if _TOGGLED[path][1]:  # sign-in required, and nobody is signed in
            return self._redirect("/user/login")
        if method == "POST":
            return self._send(400, b"Bad Request: invalid CSRF token\n", "text/plain; charset=utf-8")
        release, name = self.app.release, self.app.app_name
        if path == "/user/login":
            return self._html(200, pages.login(release, name, self.started))
        self._html(200, pages.home(release, name, self.started))

    def _search(self, query: dict[str, list[str]]) -> None:
        release, engine = self.app.release, self.app.engine
        keyword = query.get("q", [""])[0]
        limit_text = query.get("limit", ["0"])[0]
        limit = int(limit_text) if limit_text.isdigit() and int(limit_text) > 0 else 10
        if release.version == "0.11.19":
            limit = min(limit, 20)  # SearchUserByName caps the page at [ui] EXPLORE_PAGING_NUM
        try:
            rows = database.search_users(release, engine, keyword, limit) if engine else []
        except (DriverError, psycopg2.Error) as exc:
            return self._json(500, {"error": str(exc).strip(), "ok": False})
        data = [
            {
                "id": uid,
                "login": name,
                "full_name": full_name,
                "email": "",  # only a signed-in caller sees e-mail addresses
                "avatar_url": f"https://secure.gravatar.com/avatar/{database.hash_email(email)}"
                + release.gravatar_suffix,
                "username": name,
            }
            for uid, name, full_name, email in rows
        ]
        self._json(200, {"data": data, "ok": True})

    # ----- responses -----

    def _not_found(self) -> None:
        self._html(404, pages.not_found(self.app.release, self.app.app_name, self.started))

    def _panic(self, error: str) -> None:
        development = not self.app.install_lock  # RUN_MODE = prod comes with the install
        body = pages.panic(error) if development else b""
        self._send(500, body, "text/html" if body else "")

    def _redirect(self, location: str) -> None:
        """macaron ctx.Redirect: net/http's Redirect, 302 (with its little body on GET)."""
        body = f'<a href="{pages.esc(location)}">Found</a>.\n\n'.encode() if self.command == "GET" else b""
        self._send(302, body, "text/html; charset=utf-8" if self.command != "POST" else "", location)

    def _html(self, status: int, body: bytes) -> None:
        self._send(status, body, "text/html; charset=UTF-8")

    def _json(self, status: int, value: dict) -> None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # encoding/json
        self._send(status, text.encode(), "application/json; charset=UTF-8")

    def _send(self, status: int, body: bytes, content_type: str, location: str = "") -> None:
        self.send_response_only(status)
        self.send_header("Date", self.date_time_string())
        if content_type:
            self.send_header("Content-Type", content_type)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.log_request(status)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class' name
        print(f"[Macaron] {self.address_string()} {format % args}", flush=True)
