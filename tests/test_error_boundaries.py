"""Each client maps its library's exceptions into the error tree where they leave it (plugins/errors.py), with
the original kept as ``__cause__``; a step type then needs no list of exceptions to be retried.

Fast tier: real sockets on 127.0.0.1 (a closed port, a server that cuts the connection), the real requests,
Docker SDK and pyVmomi; no test bed."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import docker
import pytest
import requests
from pyVmomi import SoapStubAdapter, vim
from vicflow.plugins.builtin.http_request import HttpRequest
from vicflow.plugins.clients import http
from vicflow.plugins.clients.dockerapi import DockerParams, connected, docker_errors
from vicflow.plugins.clients.vsphere.errors import map_stub_errors
from vicflow.plugins.errors import (
    ConnectionLost,
    PermanentError,
    RequestRefused,
    ServerUnavailable,
    TLSRejected,
    TransientError,
)
from vicflow.plugins.step import StepType

from tests import stepkit


def closed_port() -> int:
    """A port nothing listens on (bound, then released): a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(answers: list[bytes | None]) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers its n-th connection with ``answers[n]`` (None: closes it after
    reading the request, as a server that goes away mid-call does); yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        for answer in answers:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                if answer is not None:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(5)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nok"
CUT_BODY = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\npartial"


def test_requests_refused_connection_is_connection_lost_with_its_cause():
    url = f"http://127.0.0.1:{closed_port()}/v2/"
    with http.session() as session, pytest.raises(ConnectionLost) as raised:
        session.get(url, timeout=5)
    assert isinstance(raised.value, TransientError)
    assert isinstance(raised.value.__cause__, requests.ConnectionError)
    assert str(raised.value).startswith(f"GET {url}: ConnectionError")


def test_requests_answer_cut_mid_body_is_connection_lost():
    with server([CUT_BODY]) as port, http.session() as session, pytest.raises(ConnectionLost) as raised:
        session.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert isinstance(raised.value.__cause__, requests.RequestException)


def test_requests_tls_failure_is_tls_rejected_with_the_hint():
    with server([OK]) as port, http.session() as session, pytest.raises(TLSRejected) as raised:
        session.get(f"https://127.0.0.1:{port}/", timeout=5)  # TLS to a plain-HTTP server
    assert isinstance(raised.value, PermanentError)
    assert isinstance(raised.value.__cause__, requests.exceptions.SSLError)
    assert "hint: set ca to the CA" in str(raised.value)


def test_requests_tls_connection_cut_in_the_handshake_is_connection_lost():
    """A vCenter cut mid-handshake is an SSLError to requests (an EOF): the network, not the certificate."""
    with server([None]) as port, http.session() as session, pytest.raises(ConnectionLost) as raised:
        session.get(f"https://127.0.0.1:{port}/folder/x.iso", timeout=5)
    assert isinstance(raised.value.__cause__, requests.exceptions.SSLError)
    assert "the TLS connection was cut" in str(raised.value)


def test_docker_unreachable_engine_is_connection_lost():
    params = DockerParams(docker_host=f"tcp://127.0.0.1:{closed_port()}", api_timeout_seconds=5)
    with pytest.raises(ConnectionLost) as raised, connected(params) as client:
        client.ping()
    assert isinstance(raised.value.__cause__, docker.errors.DockerException)  # the SDK's, around requests'
    assert isinstance(raised.value.__cause__.__cause__, requests.ConnectionError)


VERSION = b'{"ApiVersion": "1.41", "Version": "20.10.24"}'
VERSION_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Content-Length: " + str(len(VERSION)).encode() + b"\r\n\r\n" + VERSION
)


def test_docker_connection_dropped_inside_the_block_is_connection_lost():
    """The engine answers the SDK's version question, then goes away: the call in the block is mapped."""
    with server([VERSION_ANSWER, None]) as port:
        params = DockerParams(docker_host=f"tcp://127.0.0.1:{port}", api_timeout_seconds=5)
        with pytest.raises(ConnectionLost) as raised, connected(params) as client:
            client.ping()
    assert isinstance(raised.value.__cause__, requests.ConnectionError)
    assert StepType.is_transient(raised.value)


def docker_api_error(status: int, explanation: str) -> docker.errors.APIError:
    """The SDK's error for an engine's answer, as its ``raise_for_status`` builds it (docker/errors.py)."""
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(f"{status} Server Error", response, explanation)


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, ServerUnavailable), (503, ServerUnavailable), (404, RequestRefused), (409, RequestRefused)],
)
def test_docker_api_errors_map_by_status(status, expected):
    original = docker_api_error(status, "driver failed programming external connectivity")
    with pytest.raises(expected) as raised, docker_errors("tcp://127.0.0.2:2375"):
        raise original
    assert raised.value.__cause__ is original
    assert "tcp://127.0.0.2:2375" in str(raised.value)
    assert StepType.is_transient(raised.value) is (status >= 500)


def test_docker_code_inside_the_block_still_sees_the_sdk_error():
    with docker_errors("tcp://127.0.0.2:2375"):
        try:
            raise docker_api_error(409, "name taken")
        except docker.errors.APIError as exc:  # what deploy.py does for a taken name
            assert exc.status_code == 409


def test_pyvmomi_connection_failure_is_connection_lost():
    port = closed_port()
    stub = SoapStubAdapter(host="127.0.0.1", port=port, version="vim.version.version9", connectionPoolTimeout=-1)
    si = vim.ServiceInstance("ServiceInstance", map_stub_errors(stub, f"127.0.0.1:{port}"))
    with pytest.raises(ConnectionLost) as raised:
        si.RetrieveContent()
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)
    assert f"the connection to vSphere at 127.0.0.1:{port} failed" in str(raised.value)


def test_a_step_type_without_an_exception_list_retries_a_dropped_connection():
    """HttpRequest names no exception worth a retry: the HTTP client's mapping makes the drop a ConnectionLost."""
    assert not hasattr(HttpRequest, "transient_errors")
    with server([None, OK]) as port:
        params = {"url": f"http://127.0.0.1:{port}/install", "expect_status": [200], "timeout_seconds": 5}
        outputs, errors = stepkit.retrying(HttpRequest, params, retries=1, delay=0.1)
    assert [type(e) for e in errors] == [ConnectionLost]
    assert outputs is not None and outputs["status"] == 200
