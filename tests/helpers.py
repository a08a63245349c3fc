"""Small helpers shared by the integration tests."""

from __future__ import annotations

import socket
import time

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60, status: int = 200, **kwargs) -> requests.Response:
    """Poll ``url`` until it answers ``status``; raise with the last answer when the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=3, **kwargs)
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
