"""The endpoint's HTTP server: VIC's routes answered here, everything else relayed to the engine behind.

Requests reach the personality's handlers as vendor/github.com/docker/docker/api/server (Docker 1.13, vendored by
VIC 1.1.1) routes them: an optional /vX.Y prefix, the version middleware, then the route. Relayed answers are
streamed both ways (logs, pulls, waits). With ``tls`` the server speaks TLS 1.2 only, as cmd/docker/main.go
configures it, and requires a client certificate signed by the given CA when there is one (--tls-verify).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import select
import socket
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.testbed.vchproxy import containers, events, refusals, system, vic, volumes
from tests.testbed.vchproxy.config import ConfigFile

CONTAINER = re.compile(r"^/containers/([^/]+)/(json|start|exec|attach)$")
EXEC = re.compile(r"^/exec/([^/]+)/(start|json|resize)$")
VOLUME = re.compile(r"^/volumes/([^/]+)$")
HIDDEN_HEADERS = {
    "transfer-encoding", "connection", "content-length", "server", "api-version", "docker-experimental", "ostype",
    "builder-version", "date",
}  # fmt: skip


class UpstreamDown(Exception):
    """The engine behind does not answer: to a client, the VCH does not answer either."""


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None = 300):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class Upstream:
    """The engine behind, on its unix socket; ``prefix`` is the API version the client asked for."""

    def __init__(self, path: str, prefix: str = ""):
        self.path, self.prefix = path, prefix

    def open(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = UnixConnection(self.path)
        try:
            conn.request(method, self.prefix + path, body=body, headers=headers or {})
            return conn, conn.getresponse()
        except (TimeoutError, ConnectionError, FileNotFoundError) as exc:
            conn.close()
            raise UpstreamDown(str(exc)) from None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn, response = self.open(method, path, data, headers)
        try:
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: VCHServer

    def version_string(self) -> str:  # middleware/version.go: "Docker/<API version> (<os>)"
        return f"Docker/{vic.API_VERSION} (linux)"

    def log_message(self, fmt, *args):
        print(f"vchproxy: {self.address_string()} {fmt % args}", flush=True)

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    # ---- answers
    def _headers(self, status: int, content_type: str | None, length: int | None) -> None:
        self.send_response(status)
        self.send_header("Api-Version", vic.API_VERSION)
        if content_type:
            self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _json(self, status: int, body: Any) -> None:
        data = (json.dumps(body) + "\n").encode()
        self._headers(status, "application/json", len(data))
        if self.command != "HEAD":
            self.wfile.write(data)

    def _empty(self, status: int) -> None:
        self._headers(status, None, 0)

    def _error(self, error: vic.VicError) -> None:
        self._body()
        if not error.message:
            return self._empty(error.status)
        if vic.json_errors(self.version):
            return self._json(error.status, {"message": error.message})
        data = (error.message + "\n").encode()  # http.Error: plain text
        self._headers(error.status, "text/plain; charset=utf-8", len(data))
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> bytes | None:
        """The request's body, read once (an answer that does not need it still drains it: keep-alive)."""
        if not hasattr(self, "_read"):
            self._read = self._read_body()
        return self._read

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _json_body(self) -> dict[str, Any]:
        raw = self._body()
        try:
            return json.loads(raw) if raw else {}
        except ValueError as exc:
            raise vic.VicError(400, str(exc)) from None

    # ---- routing
    def _handle(self) -> None:
        if hasattr(self, "_read"):
            del self._read  # the body of the connection's previous request
        parsed = urllib.parse.urlsplit(self.path)
        self.version: str | None = None
        path = parsed.path
        match = vic.VERSION_PATH.match(path)
        if match:
            self.version, path = match.group(1), match.group(2)
        self.query = urllib.parse.parse_qs(parsed.query)
        self.raw_query = parsed.query
        self.upstream = Upstream(self.server.socket_path, f"/v{self.version}" if self.version else "")
        try:
            vic.check_version(self.version)
            refused = refusals.refusal(self.command, path, self.query, self.version or vic.API_VERSION)
            if refused is not None:
                return self._error(refused)
            self._route(path)
        except vic.VicError as exc:
            self._error(exc)
        except UpstreamDown as exc:
            self.log_message("the engine behind does not answer (%s): closing the connection", exc)
            self.close_connection = True

    def _route(self, path: str) -> None:
        config = self.server.config.get()
        cache = self.server.cache
        method = self.command
        if method == "GET" and path == "/info":
            status, engine = self.upstream.call("GET", "/info")
            return self._json(200, system.info(engine if status == 200 else {}, config))
        if method == "GET" and path == "/version":
            return self._json(200, system.version())
        if method == "GET" and path == "/events":
            return self._events()
        if method == "POST" and path == "/containers/create":
            return self._json(201, containers.create(self.upstream, self.query, self._json_body(), config, cache))
        if method == "GET" and path == "/containers/json":
            return self._json(200, containers.listing(self._relayed_json(path), config))
        if path == "/volumes/create" and method == "POST":
            return self._json(201, volumes.create(self.upstream, self._json_body(), config))
        if path == "/volumes" and method == "GET":
            return self._json(200, volumes.listing(self.upstream, self.query))
        volume = VOLUME.match(path)
        if volume and method in ("GET", "DELETE"):
            name = urllib.parse.unquote(volume.group(1))
            if method == "GET":
                return self._json(200, volumes.inspect(self.upstream, name))
            volumes.remove(self.upstream, name, self.raw_query)
            return self._empty(204)
        container = CONTAINER.match(path)
        if container:
            return self._container(container.group(1), container.group(2), path, config, cache)
        exec_ = EXEC.match(path)
        if exec_ and method in ("GET", "POST"):
            return self._exec(exec_.group(1), exec_.group(2), path)
        self._relay(self.path)

    def _container(self, ident: str, what: str, path: str, config, cache) -> None:
        if what == "json" and self.command == "GET":
            return self._json(200, containers.inspect(self._relayed_json(path), config, cache))
        if what == "start" and self.command == "POST":
            body = self._body()
            conn, response = self.upstream.open("POST", path + self._query_string(), body, self._forward_headers(body))
            try:
                raw = response.read()
            finally:
                conn.close()
            if response.status >= 300:
                message = json.loads(raw).get("message", "") if raw else ""
                raise containers.start_error(response.status, message)
            return self._empty(response.status)
        if what == "exec" and self.command == "POST":
            status, made = self.upstream.call("POST", path, containers.exec_create(self._json_body()))
            if status >= 300:
                raise vic.VicError(status, made.get("message", "") if isinstance(made, dict) else str(made))
            return self._json(201, {"Id": made["Id"]})
        if what == "attach" and self.command == "POST":
            return self._tunnel()
        self._relay(self.path)

    def _exec(self, exec_id: str, what: str, path: str) -> None:
        status, found = self.upstream.call("GET", f"/exec/{exec_id}/json")
        if status == 404:
            self._body()
            raise vic.VicError(404, f"No such container: {exec_id}")  # the exec is looked up in the container cache
        if what == "json":
            return self._json(200, containers.exec_inspect(found))
        if what == "resize":  # ContainerExecResize: a no-op in 1.1.1 (FIXME in container.go)
            self._body()
            return self._empty(200)
        start = self._json_body()
        status, answer = self.upstream.call("POST", path, {"Detach": True, "Tty": bool(start.get("Tty"))})
        if status >= 300:
            raise vic.VicError(status, answer.get("message", "") if isinstance(answer, dict) else str(answer))
        if start.get("Detach"):
            return self._empty(200)
        # router/container/exec.go: a start that is not detached hijacks the connection; the task was joined
        # without streams (detached exec only), so nothing comes before the connection ends
        upgrade = "Upgrade" in self.headers
        head = "HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else "HTTP/1.1 200 OK\r\n"
        self.wfile.write(f"{head}Content-Type: application/vnd.docker.raw-stream\r\n\r\n".encode())
        self.close_connection = True

    # ---- relaying
    def _query_string(self) -> str:
        return f"?{self.raw_query}" if self.raw_query else ""

    def _forward_headers(self, body: bytes | None) -> dict[str, str]:
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in ("host", "transfer-encoding", "connection")
        }
        if body is not None:
            headers["Content-Length"] = str(len(body))
        return headers

    def _relayed_json(self, path: str) -> Any:
        status, data = self.upstream.call(self.command, path + self._query_string())
        if status >= 300:
            raise vic.VicError(status, data.get("message", "") if isinstance(data, dict) else str(data))
        return data

    def _relay(self, full_path: str) -> None:
        body = self._body()
        conn = UnixConnection(self.server.socket_path)
        try:
            conn.request(self.command, full_path, body=body, headers=self._forward_headers(body))
            response = conn.getresponse()
        except (TimeoutError, ConnectionError, FileNotFoundError) as exc:
            conn.close()
            raise UpstreamDown(str(exc)) from None
        try:
            self.send_response(response.status)
            self.send_header("Api-Version", vic.API_VERSION)
            bodiless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
            chunked = not bodiless and (
                response.getheader("Transfer-Encoding", "").lower() == "chunked"
                or response.getheader("Content-Length") is None
            )
            for key, value in response.getheaders():
                if key.lower() not in HIDDEN_HEADERS:
                    self.send_header(key, value)
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            elif response.getheader("Content-Length") is not None:
                self.send_header("Content-Length", response.getheader("Content-Length"))
            self.end_headers()
            if bodiless:
                return
            while True:
                data = response.read1(65536) if chunked else response.read(65536)
                if not data:
                    break
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
                self.wfile.flush()
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            conn.close()

    def _raw_upstream(self, request: bytes) -> tuple[socket.socket, bytes]:
        """A raw connection to the engine behind with ``request`` sent; returns it and the response head."""
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.server.socket_path)
            upstream.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = upstream.recv(4096)
                if not chunk:
                    raise UpstreamDown("the engine closed the connection")
                head += chunk
        except (ConnectionError, FileNotFoundError) as exc:
            upstream.close()
            raise UpstreamDown(str(exc)) from None
        return upstream, head

    def _tunnel(self) -> None:
        """A hijacked connection (attach): the request as it came, then bytes both ways until one side ends."""
        body = self._body() or b""
        lines = [f"{self.command} {self.path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        upstream, head = self._raw_upstream(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.wfile.write(head)
        self.wfile.flush()
        self.close_connection = True
        with upstream:
            pipe(self.connection, upstream, self.server.stopping)

    def _events(self) -> None:
        """SubscribeToEvents: the engine's stream since/until as asked, translated, filtered, flushed at once."""
        since, until = (self.query.get("since") or [""])[0], (self.query.get("until") or [""])[0]
        start, end = _number(since), _number(until)
        if start is not None and end is not None and end < start:
            raise vic.VicError(400, f"`since` time ({since}) cannot be after `until` time ({until})")
        wanted = events.Filter((self.query.get("filters") or [None])[0])
        params = urllib.parse.urlencode({k: v for k, v in (("since", since), ("until", until)) if v})
        request = f"GET /events{'?' + params if params else ''} HTTP/1.0\r\nHost: docker\r\n\r\n"
        upstream, head = self._raw_upstream(request.encode())
        status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 200 " not in status_line + " ":
            upstream.close()
            raise vic.VicError(500, f"Server error from the events port layer: {status_line}")
        self.send_response(200)
        self.send_header("Api-Version", vic.API_VERSION)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()  # system_routes.go getEvents: output.Flush() before the first event
        pending = head.split(b"\r\n\r\n", 1)[1]
        with upstream, contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            for line in lines_of(upstream, self.connection, self.server.stopping, pending):
                message = events.translate(json.loads(line), self.server.cache)
                if message is not None and wanted.include(message):
                    data = (json.dumps(message) + "\n").encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def lines_of(upstream: socket.socket, client: socket.socket, stopping: threading.Event, pending: bytes = b""):
    """The engine's event lines until it ends the stream, the client goes away or the server stops."""
    buffer = pending
    while not stopping.is_set():
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
        readable, _, _ = select.select([upstream, client], [], [], 0.5)
        if client in readable and not _peek(client):
            return  # the client went away
        if upstream in readable:
            chunk = upstream.recv(65536)
            if not chunk:
                return  # the engine ended it (it stopped, or `until` passed)
            buffer += chunk


def _peek(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return True
    except (OSError, ssl.SSLError):
        return False


def pipe(client: socket.socket, upstream: socket.socket, stopping: threading.Event) -> None:
    while not stopping.is_set():
        readable, _, _ = select.select([client, upstream], [], [], 0.5)
        for source in readable:
            target = upstream if source is client else client
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            target.sendall(data)


class VCHServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], socket_path: str, config: ConfigFile, tls: ssl.SSLContext | None):
        super().__init__(address, Handler)
        self.socket_path, self.config, self.tls = socket_path, config, tls
        self.cache = containers.Cache()
        self.stopping = threading.Event()

    def process_request_thread(self, request, client_address):
        """The TLS handshake happens here, in the connection's own thread, not in the accept loop."""
        if self.tls is not None:
            try:
                request.settimeout(30)
                request = self.tls.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (ssl.SSLError, OSError) as exc:
                print(f"vchproxy: TLS handshake with {client_address[0]} failed: {exc}", flush=True)
                self.shutdown_request(request)
                return
        super().process_request_thread(request, client_address)


def tls_context(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    """cmd/docker/main.go: TLS 1.2 only; with client CAs (--tls-verify), a client certificate is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(ca)
    return context
