"""Docker SDK clients for a VCH (or any engine): DOCKER_HOST-style settings, TLS, timeouts; a detached exec's
exit code (what a VCH lets a check run in a container), and a watch that notices an engine restart."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from pydantic import Field
from vicflow.plugins.clients.http import requests_errors
from vicflow.plugins.errors import (
    ConnectionLost,
    PermanentError,
    RequestRefused,
    ServerUnavailable,
    TLSRejected,
)
from vicflow.plugins.paths import BlueprintFile
from vicflow.plugins.step import Params

log = logging.getLogger("vicflow.docker")


class DockerParams(Params):
    """Where the Docker API is; each falls back to DOCKER_HOST / DOCKER_TLS_VERIFY / DOCKER_CERT_PATH."""

    docker_host: str | None = Field(None, description="tcp://IP:2375 (no TLS) or tcp://IP:2376 (TLS)")
    tls: bool | None = Field(None, description="use TLS (default: on for port 2376 or when a CA is given)")
    tls_verify: bool | None = Field(None, description="verify the server certificate against ca")
    ca: BlueprintFile | None = Field(None, description="CA certificate file (ca.pem)")
    cert: BlueprintFile | None = Field(None, description="client certificate file (cert.pem)")
    key: BlueprintFile | None = Field(None, description="client key file (key.pem)")
    cert_path: BlueprintFile | None = Field(None, description="folder with ca.pem, cert.pem and key.pem")
    api_timeout_seconds: float = Field(120, gt=0, description="timeout of each Docker API call")


def docker_client(params: DockerParams):
    """A DockerClient for ``params``; a custom CA is honoured even when REQUESTS_CA_BUNDLE is set."""
    import docker

    host = params.docker_host or os.environ.get("DOCKER_HOST")
    if not host:
        raise PermanentError(
            "no Docker host given", "set docker_host (e.g. the vch step's docker_host output) or DOCKER_HOST"
        )
    cert_path = params.cert_path or os.environ.get("DOCKER_CERT_PATH")
    ca = params.ca or (f"{cert_path}/ca.pem" if cert_path else None)
    cert = params.cert or (f"{cert_path}/cert.pem" if cert_path and os.path.exists(f"{cert_path}/cert.pem") else None)
    key = params.key or (f"{cert_path}/key.pem" if cert_path and os.path.exists(f"{cert_path}/key.pem") else None)
    verify = params.tls_verify
    if verify is None:
        verify = (
            bool(ca)
            if os.environ.get("DOCKER_TLS_VERIFY") in (None, "")
            else os.environ["DOCKER_TLS_VERIFY"] not in ("0", "false")
        )
    use_tls = params.tls if params.tls is not None else (host.endswith(":2376") or bool(ca) or bool(cert))
    timeout = int(params.api_timeout_seconds)
    if not use_tls:
        try:  # the SDK asks the engine's API version here
            return docker.DockerClient(base_url=host, timeout=timeout)
        except docker.errors.DockerException as exc:  # as on TLS below: an engine that does not answer
            raise _unreachable(host, exc, False) from exc
    if not verify:  # a tls_noverify VCH (VIC's --no-tlsverify): encrypted, but anyone can answer
        log.warning("TLS without verification for the Docker API at %s: set ca (and tls_verify) to check it", host)
    for label, path in (("ca", ca if verify else None), ("cert", cert), ("key", key)):
        if path and not os.path.exists(path):
            raise PermanentError(
                f"TLS {label} file {path} does not exist",
                "point ca/cert/key (or cert_path) at the files vch_create wrote",
            )
    tls = docker.tls.TLSConfig(
        client_cert=(cert, key) if cert and key else None, ca_cert=ca if verify else None, verify=verify
    )
    url = host.replace("tcp://", "https://")
    # requests lets REQUESTS_CA_BUNDLE override a session's CA (requests#3829), and the SDK negotiates
    # the API version inside its constructor: probe with trust_env off, then pin the version.
    probe = docker.APIClient(base_url=url, tls=tls, timeout=timeout, version="1.24")
    probe.trust_env = False
    try:
        server = probe.version(api_version=False)["ApiVersion"]
    except docker.errors.DockerException as exc:
        raise _unreachable(host, exc, bool(cert)) from exc
    except Exception as exc:  # requests' SSL and connection errors
        raise _unreachable(host, exc, bool(cert)) from exc
    finally:
        probe.close()
    version = min(server, docker.constants.DEFAULT_DOCKER_API_VERSION, key=lambda v: tuple(map(int, v.split("."))))
    client = docker.DockerClient(base_url=url, tls=tls, timeout=timeout, version=version)
    client.api.trust_env = False
    return client


def _unreachable(host: str, exc: Exception, has_client_cert: bool) -> Exception:
    text = str(exc)
    # a client certificate was asked for and none given: Go's TLS 1.2 (a VCH) says "bad certificate", OpenSSL's
    # "handshake failure", TLS 1.3 "certificate required"
    refused = ("ALERT_BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "ALERT_HANDSHAKE_FAILURE")
    if not has_client_cert and any(alert in text for alert in refused):
        return TLSRejected(
            f"the Docker API at {host} requires a client certificate (a tls_verify VCH)",
            "pass cert and key, or cert_path with the cert.pem/key.pem vch_create wrote",
        )
    if not has_client_cert and "EOF occurred in violation of protocol" in text:
        # TLS 1.3: the server checks the client certificate after the handshake; the refusal arrives as an
        # alert or, depending on timing, as a closed connection
        return TLSRejected(
            f"the Docker API at {host} closed the TLS connection: it requires a client certificate (a tls_verify VCH)",
            "pass cert and key, or cert_path with the cert.pem/key.pem vch_create wrote",
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
        return TLSRejected(
            f"TLS handshake with the Docker API at {host} failed: {text[:300]}",
            "check ca/cert/key: they must be the ones generated for this VCH (tls_verify)",
        )
    return ConnectionLost(f"cannot reach the Docker API at {host}: {text[:300]}")


COMPOSE_LABEL = "com.docker.compose"  # the prefix of Docker Compose's container labels


def is_vch(client) -> bool:
    """A VCH says so in ``docker info`` (VIC's Driver is "vSphere Integrated Containers ... Backend Engine")."""
    info = client.info()
    return "vSphere Integrated Containers" in f"{info.get('Driver', '')} {info.get('ID', '')}"


@contextmanager
def docker_errors(host: str, has_client_cert: bool = False) -> Iterator[None]:
    """The Docker SDK's exceptions, mapped into the tree once, as they leave the block (httpx's
    ``map_exceptions``; the original stays as ``__cause__``). Code inside the block may still catch the
    SDK's own (a 409, an ImageNotFound) and decide; what it lets through becomes:

    - an APIError 5xx: ``ServerUnavailable`` (transient: a restarting dockerd answers 500);
    - an APIError 4xx: ``RequestRefused`` (permanent: the same request is refused again);
    - a TLS error: ``TLSRejected`` when a certificate is refused, else ``ConnectionLost`` (a TLS connection
      that a restarting engine cut), as ``docker_client`` judges its first call;
    - requests' other errors underneath the SDK: ``http.requests_errors`` (a refused or cut connection is a
      ``ConnectionLost``).
    """
    import docker
    import requests

    with requests_errors("Docker API", host):
        try:
            yield
        except docker.errors.APIError as exc:
            if (exc.status_code or 0) >= 500:
                raise ServerUnavailable(
                    f"the Docker engine at {host} answered {exc.status_code}: {exc.explanation or exc}",
                    "retried while the engine recovers (a restarting dockerd answers 500)",
                ) from exc
            raise RequestRefused(f"the Docker engine at {host} refused the request: {exc}") from exc
        except requests.exceptions.SSLError as exc:
            raise _unreachable(host, exc, has_client_cert) from exc


@contextmanager
def connected(params: DockerParams) -> Iterator:
    """``docker_client(params)``, closed at the end of the block; what the SDK raises in the block leaves it
    mapped into the tree (``docker_errors``)."""
    client = docker_client(params)
    try:
        host = params.docker_host or os.environ.get("DOCKER_HOST") or "DOCKER_HOST"
        with docker_errors(host, bool(params.cert or params.cert_path or os.environ.get("DOCKER_CERT_PATH"))):
            yield client
    finally:
        client.close()


def exec_detached(client, container: str, command: list[str], timeout: float, interval: float = 0.2) -> int:
    """Run ``command`` in ``container`` as a detached exec and return its exit code, read back through exec
    inspect. A VCH runs only detached execs (VIC 1.1.1 container.go ContainerExecCreate refuses the others) and
    reports ExitCode 0 while the task runs: ``Running`` says when it is final."""
    api = client.api
    body = {"Cmd": command, "Detach": True, "AttachStdin": False, "AttachStdout": False, "AttachStderr": False}
    made = api._result(api._post_json(api._url("/containers/{0}/exec", container), data=body), True)
    api.exec_start(made["Id"], detach=True)
    deadline = time.monotonic() + timeout
    while True:
        found = api.exec_inspect(made["Id"])
        if not found.get("Running") and found.get("ExitCode") is not None:
            return int(found["ExitCode"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"{' '.join(command)} still runs in {container} after {timeout:g}s")
        time.sleep(interval)


class EngineRestarted(PermanentError):  # drawn in plugins/errors.py's tree
    """The Docker engine went away and came back while a step ran: what stopped is no failure of the
    deployment. The completed steps are left as they are (``undo_completed``): the engine never rolls back a
    deployment because the engine bounced."""

    undo_completed = False


class EngineWatch:
    """Notices an engine restart while a block runs: it holds the engine's ``/events`` stream open, which
    dockerd and a VCH (its appliance) both end when they stop. ``restarted`` is set once the stream broke, or
    the engine could not be reached and then could; ``went_away`` is when that was first seen.

    ``with EngineWatch(params) as watch: ...`` then ``watch.restarted``."""

    def __init__(self, params: DockerParams, logger: logging.Logger | logging.LoggerAdapter | None = None):
        self.params = params.model_copy(update={"api_timeout_seconds": 10})
        self.log = logger or log
        self.went_away: float | None = None
        self.restarted = False
        self.stopping = threading.Event()
        self.connected = threading.Event()
        self.stream: Any = None
        self.thread = threading.Thread(target=self._watch, daemon=True, name="engine-watch")

    def __enter__(self) -> EngineWatch:
        self.thread.start()
        self.connected.wait(5)  # the stream is open before the block's first call (or the engine is down)
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        stream = self.stream
        if stream is not None:
            with suppress(Exception):
                stream.close()
        self.thread.join(timeout=5)

    def _watch(self) -> None:
        while not self.stopping.is_set():
            try:
                with connected(self.params) as client:
                    stream = client.api.events(since=int(time.time()), filters={"type": "container"})
                    self.stream = stream
                    if self.went_away is not None:
                        self.restarted = True  # it was away and answers again
                    self.connected.set()
                    for _ in stream:
                        if self.stopping.is_set():
                            return
            except PermanentError as exc:  # no engine to watch (none given, a refused certificate): the block says so
                self.log.debug("engine watch: %s", exc)
                self.connected.set()
                return
            except Exception as exc:  # refused, reset, or a TLS error while it restarts
                if self.stopping.is_set():
                    return
                self.log.debug("engine watch: %s", exc)
            if self.stopping.is_set():
                return
            if self.went_away is None:
                self.went_away = time.time()
                self.log.warning(
                    "the Docker engine at %s does not answer (its event stream ended)", self.params.docker_host
                )
            self.connected.set()
            if self.stream is not None:
                self.restarted = True  # a stream that was open ended: the engine stopped
            self.stream = None
            self.stopping.wait(0.5)
