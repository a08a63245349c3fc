"""Small helpers shared by the integration tests."""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests
from vicflow.flows.engine import execution
from vicflow.flows.engine.thread_executor import ThreadSteps
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language.inputs import prepare
from vicflow.plugins.errors import RunFailed
from vicflow.plugins.manager import default_registry


@contextmanager
def hook_server() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A chat hook on a free port of 127.0.0.1: 200 for any path, 500 with a JSON body that echoes the path for
    /fail/... (so an error quotes it). Yields the port and the requests it got: path (unquoted), headers, body."""
    seen: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = unquote(self.path)
            seen.append({"path": path, "headers": self.headers, "body": body.decode("utf-8", "replace")})
            status = 500 if path.startswith("/fail/") else 200
            payload = json.dumps({"error": f"no hook {path}"} if status == 500 else {"ok": True}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer

        def log_message(self, *args):  # the server's own log is not what the tests read
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, message):
    """``condition()``'s first true value, asked every 0.5 s; after ``timeout`` s an AssertionError saying
    ``message`` (called if it is callable, for what it knows only then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(message() if callable(message) else message)


def wait_http(url: str, timeout: float = 60, status: int = 200, **kwargs) -> requests.Response:
    """Poll ``url`` until it answers ``status``; raise with the last answer when the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=3, allow_redirects=False, **kwargs)  # a 302 is an answer
            if response.status_code == status:
                return response
            last = f"HTTP {response.status_code}: {response.text[:300]}"
        except requests.RequestException as exc:
            last = str(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer {status} within {timeout}s; last: {last}")


def run_registry(client, tag: str, name: str, port: int | None = None, **kwargs):
    """A registry container from the test images, published on 127.0.0.1; returns (container, url)."""
    port = port or free_port()
    container = client.containers.run(
        f"vicflow-test/registry:{tag}", name=name, detach=True, ports={"5000/tcp": ("127.0.0.1", port)}, **kwargs
    )
    return container, f"http://127.0.0.1:{port}"


def gogs_first_run(base_url: str, db_password: str, admin_password: str = "admin-pw-1") -> dict:
    """The shipped gogs blueprint's first_run step parameters, rendered for a Gogs at ``base_url``.

    Tests install Gogs exactly as the blueprint does, so the two cannot drift apart.
    """
    from urllib.parse import urlparse

    from vicflow.flows.language import blueprint as bp
    from vicflow.flows.language import expressions
    from vicflow.plugins.manager import default_registry

    from tests.stepkit import REPO

    document = bp.load(REPO / "blueprints" / "gogs.yaml", default_registry())
    url = urlparse(base_url)
    inputs = {
        **{name: spec.default for name, spec in document.inputs.items()},
        "app_host": url.hostname,
        "http_port": url.port,
        "db_password": db_password,
        "admin_password": admin_password,
    }
    return expressions.render(document.step("first_run").with_, {"inputs": inputs})


def run_on_threads(path: Path, inputs: dict) -> dict:
    """A blueprint run by the engine on its thread executor, in this process (no Prefect); its summary, failed or
    not."""
    registry = default_registry()
    document = bp.load(path, registry)
    try:
        return execution.execute(
            document, prepare(document, inputs=inputs).values, registry, uuid.uuid4().hex, executor=ThreadSteps
        )
    except RunFailed as exc:
        return exc.summary
