"""Event sources: Docker engine events, vSphere events and registry notifications become Prefect events.

Each source runs in its own thread under ``vicflow listen``, reconnects with backoff when its server
goes away, gives every event a deterministic id (so a reconnect never emits the same event twice),
and logs what it drops and why.  Event names and resources are documented in docs/events.md.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from pydantic import Field, model_validator
from vicflow.plugins import hookimpl, masking
from vicflow.plugins.clients.dockerapi import COMPOSE_LABEL, DockerParams, connected
from vicflow.plugins.clients.vsphere import connection
from vicflow.plugins.source import EventSource, SourceConfig

# ---------------------------------------------------------------------------------------------- docker

EXIT_RE = re.compile(r"Exited \((-?\d+)\)")
COMPOSE_PROJECT = f"{COMPOSE_LABEL}.project"


class DockerSourceConfig(DockerParams):
    engine: str | None = Field(None, description="name for this engine in resource ids (default: docker_host)")
    window_seconds: float = Field(1, gt=0, description="each events request ends after this long, then resumes")
    removal_grace_seconds: float = Field(
        1.5,
        ge=0,
        description="a die followed by the container's removal within this long was a deliberate removal (a "
        "replace, compose_down): it is dropped, not taken for a crash",
    )
    mode: Literal["auto", "events", "poll"] = Field(
        "auto",
        description="events: the /events stream (a VCH streams them too), reconnecting when it breaks; poll: list "
        "containers every poll_seconds; auto: the stream, and polling while it is broken",
    )
    poll_seconds: float = Field(2, gt=0, description="poll: how often the compose-labelled containers are listed")
    replay_seconds: float = Field(
        5,
        ge=0,
        description="a restarted listener resumes the stream this long before its saved place: events it had "
        "queued but not yet sent when it was killed are sent again (their ids make the repeats harmless)",
    )


DOCKER_EVENTS = {"die": "docker.container.died", "start": "docker.container.started"}
REMOVED = "dropped die of %s: it was removed right after (a replace or compose_down)"


def _changes(before: dict[str, dict], after: dict[str, dict]) -> list[dict[str, Any]]:
    """Docker-event-shaped records for what changed between two container listings.

    A container that its restart policy revived between two listings is running in both: nothing is emitted,
    and nothing needed healing.
    """
    out = []
    nano = time.time_ns()
    for cid, old in before.items():
        new = after.get(cid)
        if new is None:
            out.append(_raw("destroy", old, nano))
        elif old["State"] == "running" and new["State"] != "running":
            out.append(_raw("die", new, nano))
        elif new["State"] == "running" and old["State"] != "running":
            out.append(_raw("start", new, nano))
    for cid, new in after.items():
        if cid not in before and new["State"] == "running":
            out.append(_raw("start", new, nano))
    return out


def _raw(action: str, summary: dict[str, Any], nano: int) -> dict[str, Any]:
    exit_code = EXIT_RE.search(summary.get("Status", ""))
    attributes = {
        **(summary.get("Labels") or {}),
        "name": (summary.get("Names") or ["/" + summary["Id"][:12]])[0].lstrip("/"),
        "image": summary.get("Image", ""),
    }
    if exit_code:
        attributes["exitCode"] = exit_code.group(1)
    return {"Action": action, "id": summary["Id"], "timeNano": nano, "Actor": {"Attributes": attributes}}


def _summary(raw: dict[str, Any], state: str) -> dict[str, Any]:
    """A listing entry for a container known from an event (the fallback's starting point)."""
    attributes = (raw.get("Actor") or {}).get("Attributes") or {}
    return {
        "Id": raw.get("id", ""),
        "State": state,
        "Status": "Up" if state == "running" else f"Exited ({attributes.get('exitCode', '')})",
        "Labels": {k: v for k, v in attributes.items() if k not in ("name", "image", "exitCode", "signal")},
        "Names": ["/" + attributes.get("name", raw.get("id", "")[:12])],
        "Image": attributes.get("image", ""),
    }


class DockerEvents(EventSource[DockerSourceConfig]):
    """Container die / start / health_status from the Docker engine's event stream (a VCH's too).

    VIC 1.1.1 streams die (with the exit code), start, stop, kill ... but never destroy or health_status, and
    its event attributes carry the labels of the container's image, not the container's: the compose labels
    are read from the container (inspect) when an event lacks them, and a die is dropped when the container is
    gone by the end of the grace (a removal), whether or not a destroy came. When the stream breaks (the engine
    restarts) the source lists containers until it is back, so a container stopped meanwhile still dies."""

    Config = DockerSourceConfig
    events = (*DOCKER_EVENTS.values(), "docker.container.health-changed")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.since: str | None = None
        self.pending: dict[str, list[tuple[dict, float]]] = {}  # container id -> its held dies, (event, emit after)
        self.known: dict[str, dict[str, Any]] = {}  # the compose containers as last seen (the fallback's start)
        self.labels: dict[str, dict[str, str]] = {}  # container id -> its labels, read once
        self.client: Any = None

    @property
    def engine(self) -> str:
        name = self.config.engine or self.config.docker_host or "local"
        return name.replace("tcp://", "").replace("unix://", "").replace("/", "_")

    def stream(self, stop: threading.Event) -> None:
        with connected(self.config) as client:
            self.client = client
            client.ping()
            if self.config.mode == "poll":
                return self.poll(stop)
            self.known = self.listing(client)
            if self.since is None:
                self.since = self.resume_from()
            while not stop.is_set():
                try:
                    self.window(client)
                except stream_errors() as exc:
                    if self.config.mode == "events":
                        raise
                    self.fall_back(stop, exc)

    def window(self, client) -> None:
        until = f"{time.time() + self.config.window_seconds:.9f}"
        for raw in client.events(
            decode=True,
            since=self.since,
            until=until,
            filters={"type": "container", "event": ["die", "start", "health_status", "destroy"]},
        ):
            self.take(raw)
            nano = raw.get("timeNano")
            if nano:
                self.since = _stamp(nano)
            self.flush()
        self.flush()

    def fall_back(self, stop: threading.Event, exc: BaseException) -> None:
        """The stream broke: list the containers every poll_seconds until the engine streams again."""
        self.log.warning(
            "the event stream of %s broke (%s): polling its containers every %gs until it is back",
            self.engine,
            str(exc)[:200],
            self.config.poll_seconds,
        )
        while not stop.is_set():
            stop.wait(self.config.poll_seconds)
            try:
                with connected(self.config) as client:
                    self.client = client
                    self.poll_once(client)
                    now = f"{time.time():.9f}"
                    list(client.events(decode=True, since=now, until=now))  # answers: the stream is back
                    self.since = now  # what happened while it was broken came from the listings
                    self.log.info("the event stream of %s is back: polling stopped", self.engine)
                    return
            except Exception as again:  # still away: keep polling
                self.log.debug("%s still away: %s", self.engine, again)

    def listing(self, client) -> dict[str, dict[str, Any]]:
        summaries = client.api.containers(all=True, filters={"label": COMPOSE_PROJECT})
        return {c["Id"]: c for c in summaries}

    def poll_once(self, client) -> None:
        now = self.listing(client)
        for raw in _changes(self.known, now):
            if raw["Action"] in ("die", "start"):
                raw["timeNano"] = self.state_time(client, raw["id"], raw["Action"]) or raw["timeNano"]
            self.take(raw)
        self.known = now
        self.flush()

    def poll(self, stop: threading.Event) -> None:
        """List the compose-labelled containers; a running one that stopped is a die, a new one or a stopped one
        running again a start, a vanished one a destroy (so a deliberate removal is dropped as with the stream)."""
        self.known = self.listing(self.client)
        while not stop.is_set():
            stop.wait(self.config.poll_seconds)
            self.poll_once(self.client)

    def take(self, raw: dict[str, Any]) -> None:
        """Hold a die until it is clear the container was not removed on purpose; handle the rest now."""
        action, container = raw.get("Action") or raw.get("status") or "", raw.get("id", "")
        if action == "destroy":
            self.known.pop(container, None)
            for raw_die, _ in self.pending.pop(container, []):
                self.log.info(REMOVED, _name(raw_die))
            return
        if action in ("die", "start"):
            self.remember(raw, "running" if action == "start" else "exited")
        if action == "die" and self.config.removal_grace_seconds > 0:
            # `since` is inclusive: a new window replays the last event; keep its first deadline. Every die is
            # held on its own: a storm of dies is folded by the runs' intake, counted, never here
            held = self.pending.setdefault(container, [])
            if all(h.get("timeNano") != raw.get("timeNano") for h, _ in held):
                held.append((raw, time.monotonic() + self.config.removal_grace_seconds))
            return
        self.handle(raw)

    def remember(self, raw: dict[str, Any], state: str) -> None:
        container = raw.get("id", "")
        if container in self.known:
            self.known[container] = {**self.known[container], "State": state}
        elif COMPOSE_PROJECT in ((raw.get("Actor") or {}).get("Attributes") or {}):
            self.known[container] = _summary(raw, state)

    def flush(self) -> None:
        now = time.monotonic()
        for container, held in list(self.pending.items()):
            due = [raw for raw, at in held if at <= now]
            if not due:
                continue
            self.pending[container] = [(raw, at) for raw, at in held if at > now]
            if not self.pending[container]:
                del self.pending[container]
            if self.removed(container):
                self.pending.pop(container, None)
                self.known.pop(container, None)
                for raw in due:
                    self.log.info(REMOVED, _name(raw))
                continue
            for raw in due:
                self.handle(raw)
        self.save_place()

    def resume_from(self) -> str:
        """The stream's start: the saved place less ``replay_seconds`` after a restart, else now."""
        saved = self.load_cursor().get("since_ns")
        if isinstance(saved, int) and saved > 0:
            start = saved - int(self.config.replay_seconds * 1e9)
            self.log.info("resuming the event stream of %s from %s (its saved place)", self.engine, _stamp(start))
            return _stamp(start)
        return f"{time.time():.9f}"

    def save_place(self) -> None:
        """The place to resume from: the oldest die still held, or the stream's position."""
        if self.since is None:
            return
        places = [int(raw.get("timeNano") or 0) for held in self.pending.values() for raw, _ in held]
        seconds, _, fraction = self.since.partition(".")
        places.append(int(seconds) * 10**9 + int((fraction or "0").ljust(9, "0")[:9]))
        place = min(p for p in places if p > 0)
        if place != getattr(self, "saved_place", None):
            self.save_cursor({"since_ns": place})
            self.saved_place = place

    def state_time(self, client, container: str, action: str) -> int | None:
        """When the container died or started, by its own state (inspect's FinishedAt / StartedAt): a change seen
        by polling gets the same time, and so the same id, in every listener that polls it."""
        try:
            state = client.api.inspect_container(container)["State"]
        except Exception as exc:  # gone, or the engine could not say: the listing's time stands
            self.log.debug("could not inspect %s: %s", container, exc)
            return None
        return _nanoseconds(state.get("FinishedAt" if action == "die" else "StartedAt") or "")

    def removed(self, container: str) -> bool:
        """Whether the container is gone (a VCH sends no destroy); reads its labels on the way."""
        try:
            self.labels[container] = self.client.api.inspect_container(container)["Config"].get("Labels") or {}
        except docker_not_found():
            return True
        except Exception as exc:  # the engine could not say: the die stands
            self.log.debug("could not inspect %s: %s", container, exc)
        return False

    def attributes(self, raw: dict[str, Any]) -> dict[str, str]:
        """The event's attributes, with the container's own labels when the event lacks them (VIC's events carry
        the image's labels)."""
        attributes = dict((raw.get("Actor") or {}).get("Attributes") or {})
        if COMPOSE_PROJECT in attributes:
            return attributes
        container = raw.get("id", "")
        if container not in self.labels:
            self.removed(container)
        while len(self.labels) > 1000:
            self.labels.pop(next(iter(self.labels)))
        return {**attributes, **self.labels.get(container, {})}

    def handle(self, raw: dict[str, Any]) -> None:
        action = raw.get("Action") or raw.get("status") or ""
        if action.startswith("health_status"):
            event, status = "docker.container.health-changed", action.split(":", 1)[-1].strip()
        elif action in DOCKER_EVENTS:
            event, status = DOCKER_EVENTS[action], action
        else:
            self.log.debug("dropped docker event %s: not a die/start/health_status", action)
            return
        attributes = self.attributes(raw)
        name = attributes.get("name", raw.get("id", "")[:12])
        project = attributes.get("com.docker.compose.project")
        service = attributes.get("com.docker.compose.service")
        rid = f"docker.{self.engine}." + (
            f"compose.{project}.{service}" if project and service else f"container.{name}"
        )
        resource = {
            "prefect.resource.id": rid,
            "prefect.resource.name": name,
            "docker.engine": self.engine,
            "docker.container": name,
            "docker.image": attributes.get("image", ""),
            "compose.project": project or "",
            "compose.service": service or "",
        }
        payload = {
            "container_id": raw.get("id"),
            "status": status,
            "exit_code": attributes.get("exitCode"),
            "docker_host": self.config.docker_host,
        }
        occurred = datetime.fromtimestamp(raw.get("timeNano", time.time_ns()) / 1e9, UTC)
        # Docker's own identity of the event: the container id (unique across engines), time and status; not
        # the engine's name in this config, which another listener may spell otherwise
        self.publish(event, f"docker/{raw.get('id')}/{raw.get('timeNano')}/{action}", resource, payload, occurred)


def _stamp(nano: int) -> str:
    """Docker's ``since``/``until`` form of a time in nanoseconds: seconds.nanoseconds."""
    return f"{nano // 10**9}.{nano % 10**9:09d}"


def _nanoseconds(value: str) -> int | None:
    """A Docker timestamp (RFC 3339 with up to 9 fraction digits) in nanoseconds; None for the zero time."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", value)
    if not match or value.startswith("0001-"):
        return None
    whole = datetime.fromisoformat(match.group(1) + (match.group(3).replace("Z", "+00:00")))
    return int(whole.timestamp()) * 10**9 + int((match.group(2) or "0").ljust(9, "0")[:9])


def _name(raw: dict[str, Any]) -> str:
    return ((raw.get("Actor") or {}).get("Attributes") or {}).get("name", raw.get("id", "")[:12])


def docker_not_found() -> type[BaseException]:
    import docker

    return docker.errors.NotFound


def stream_errors() -> tuple[type[BaseException], ...]:
    """What a broken event stream raises: the connection refused, reset or cut mid-chunk, or a 5xx."""
    import docker
    import requests

    return (requests.RequestException, docker.errors.DockerException)


# ---------------------------------------------------------------------------------------------- vsphere


class VSphereSourceConfig(connection.VSphereParams):
    poll_seconds: float = Field(1, gt=0)


VSPHERE_EVENTS = {
    "VmPoweredOffEvent": "vsphere.vm.powered-off",
    "VmPoweredOnEvent": "vsphere.vm.powered-on",
    "HostConnectionLostEvent": "vsphere.host.connection-lost",
    "VmReconfiguredEvent": "vsphere.vm.reconfigured",
}


class VSphereEvents(EventSource[VSphereSourceConfig]):
    """VM power and reconfiguration events and lost hosts, from an EventHistoryCollector."""

    Config = VSphereSourceConfig
    events = tuple(VSPHERE_EVENTS.values())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.begin: datetime | None = None

    def resume_from(self) -> datetime:
        """A restarted listener resumes at its saved place (the newest event it handled), else now."""
        saved = self.load_cursor().get("begin")
        if isinstance(saved, str):
            try:
                return datetime.fromisoformat(saved)
            except ValueError:
                self.log.warning("ignored the saved place %r: starting from now", saved)
        return datetime.now(UTC)

    def stream(self, stop: threading.Event) -> None:
        from pyVmomi import vim

        if self.begin is None:
            self.begin = self.resume_from()
        sessions = connection.Sessions()
        si = sessions.get(self.config, self.log)
        server = connection.split_server(connection.setting(self.config, "server") or "")[0]
        try:
            spec = vim.event.EventFilterSpec(
                eventTypeId=list(VSPHERE_EVENTS), time=vim.event.EventFilterSpec.ByTime(beginTime=self.begin)
            )
            collector = connection.content(si).eventManager.CreateCollectorForEvents(filter=spec)
            collector.SetCollectorPageSize(maxCount=100)
            try:
                # latestPage (newest events) works on vCenter and on the simulator, whose collector only
                # pages through what existed when it was created; keys make the overlap harmless
                while not stop.is_set():
                    for ev in sorted(collector.latestPage or [], key=lambda e: e.key):
                        self.handle(server, ev)
                    stop.wait(self.config.poll_seconds)
            finally:
                collector.DestroyCollector()
        finally:
            sessions.close()

    def handle(self, server: str, ev) -> None:
        kind = type(ev).__name__.rsplit(".", 1)[-1]
        name = VSPHERE_EVENTS.get(kind)
        if name is None:
            self.log.debug("dropped vSphere event %s: not one of %s", kind, ", ".join(VSPHERE_EVENTS))
            return
        begin = self.begin or datetime.now(UTC)
        if ev.createdTime and ev.createdTime < begin:
            return  # from before this listener started (or an older page after a reconnect)
        vm = getattr(ev, "vm", None)
        host = getattr(ev, "host", None)
        if vm is not None and name.startswith("vsphere.vm"):
            rid, label = f"vsphere.{server}.vm.{vm.vm._moId}", vm.name
        else:
            rid, label = f"vsphere.{server}.host.{host.host._moId if host else 'unknown'}", host.name if host else ""
        resource = {
            "prefect.resource.id": rid,
            "prefect.resource.name": label,
            "vsphere.server": server,
            "vsphere.vm": vm.name if vm else "",
            "vsphere.host": host.name if host else "",
        }
        payload = {"key": ev.key, "message": ev.fullFormattedMessage or "", "user": ev.userName or ""}
        # the key includes the time: a restarted server (the simulator) numbers its events from 1 again
        self.publish(name, f"vsphere/{server}/{ev.key}/{ev.createdTime.isoformat()}", resource, payload, ev.createdTime)
        if ev.createdTime and ev.createdTime > begin:
            self.begin = ev.createdTime  # a reconnect or a restart resumes from here; the key drops repeats
            self.save_cursor({"begin": ev.createdTime.isoformat()})


# ---------------------------------------------------------------------------------------------- registry


# The registry side (docker/distribution v2.6.1, docs/configuration.md "notifications", notifications/http.go):
# each endpoint has a url and static ``headers`` sent with every request, here ``Authorization: [Bearer <token>]``;
# its client is Go's http.DefaultTransport, so an https url is verified against the system's CAs (or the file
# that SSL_CERT_FILE names, crypto/x509 root_unix.go).
RECEIVER_TIMEOUT = 30  # seconds a connection may take for its TLS handshake, its headers and its body
REFUSED_BODY = 1 << 20  # bytes of a refused request's body read before the answer (a larger one is not read)


class RegistrySourceConfig(SourceConfig):
    listen: str = Field("127.0.0.1:5080", description="HOST:PORT for the registry's notification endpoint")
    path: str = "/events"
    token: str = Field(
        min_length=8, description="shared secret: the registry sends Authorization: Bearer <token> (its headers)"
    )
    tls_cert: str | None = Field(None, description="PEM certificate (and chain) to serve HTTPS with; needs tls_key")
    tls_key: str | None = Field(None, description="the PEM private key of tls_cert")

    @model_validator(mode="after")
    def _tls_pair(self) -> RegistrySourceConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: set both to serve HTTPS, or neither for plain HTTP")
        if self.tls_cert:
            self.tls_context()  # a certificate that does not load is a config error, not a receiver that never starts
        return self

    def tls_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (TLS 1.2 and later), or None for plain HTTP."""
        if not self.tls_cert or not self.tls_key:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
            raise ValueError(f"cannot load tls_cert {self.tls_cert} with tls_key {self.tls_key}: {reason}") from None
        return context


class _Receiver(ThreadingHTTPServer):
    """The receiver's server. With TLS, each connection's handshake runs in that connection's thread (a client
    that stalls in it holds its own thread only), bounded by RECEIVER_TIMEOUT; a failed one is logged."""

    daemon_threads = True
    # the listen backlog: socketserver's default of 5 refused connections of a registry's burst (bench/events.py,
    # 32 senders: 2 POSTs refused, sent again by the registry's retry)
    request_queue_size = socket.SOMAXCONN

    def __init__(self, address: tuple[str, int], handler, tls: ssl.SSLContext | None, log: logging.Logger):
        self.tls, self.log = tls, log
        super().__init__(address, handler)

    def finish_request(self, request, client_address) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(RECEIVER_TIMEOUT)
        try:
            secure = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:  # plain HTTP to the TLS port, an untrusting client, a timeout
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.log.warning("refused a connection from %s: TLS handshake failed (%s)", client_address[0], reason)
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            self.shutdown_request(secure)  # FIN after the answer, then close


MANIFEST_TYPES = {
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
}


def _bearer_challenge(given: bytes) -> str:
    """What a 401 of the receiver says it wants (RFC 6750 section 3): the Bearer scheme, and "invalid_token"
    when a token was given and is not the one."""
    if given:
        return 'Bearer realm="vicflow listen", error="invalid_token"'
    return 'Bearer realm="vicflow listen"'


class RegistryNotifications(EventSource[RegistrySourceConfig]):
    """An HTTP receiver for the distribution registry's notifications: pushes become registry.image.pushed."""

    Config = RegistrySourceConfig
    events = ("registry.image.pushed",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        masking.add_secret(self.config.token)  # however it was written in the config: masked in every log

    def stream(self, stop: threading.Event) -> None:
        host, _, port = self.config.listen.rpartition(":")
        source = self

        class Handler(BaseHTTPRequestHandler):
            timeout = RECEIVER_TIMEOUT

            def do_POST(self):
                if self.path.split("?")[0] != source.config.path:
                    self.refuse(404)
                    return
                given = self.headers.get("Authorization", "").encode()
                if not hmac.compare_digest(given, f"Bearer {source.config.token}".encode()):  # no timing leak
                    source.log.warning(  # what was sent is never logged: it may be a secret of something else
                        "dropped a notification from %s: %s bearer token",
                        self.client_address[0],
                        "wrong" if given else "missing",
                    )
                    self.refuse(401, {"WWW-Authenticate": _bearer_challenge(given)})
                    return
                body = self.rfile.read(_length(self.headers))
                try:
                    envelope = json.loads(body)
                except ValueError:
                    source.log.warning("dropped a notification: body is not JSON")
                    self.send_error(400)
                    return
                for event in envelope.get("events", []):
                    source.handle(event)
                self.send_response(200)
                self.end_headers()

            def refuse(self, status: int, headers: dict[str, str] | None = None) -> None:
                """Answer ``status`` (with ``headers``) after reading what the client sends (up to REFUSED_BODY
                bytes): a connection closed with unread data is reset, and the client would see the reset
                instead of the answer."""
                length = _length(self.headers)
                if length <= REFUSED_BODY:
                    self.rfile.read(length)
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, fmt, *args):
                source.log.debug("receiver: " + fmt, *args)

        tls = self.config.tls_context()
        server = _Receiver((host, int(port)), Handler, tls, self.log)
        server.timeout = 0.5
        scheme = "https" if tls else "http"
        self.log.info("receiving registry notifications on %s://%s%s", scheme, self.config.listen, self.config.path)
        if not tls and not _loopback(host):
            self.log.warning(
                "the registry's bearer token reaches %s in clear text: set tls_cert and tls_key to serve HTTPS", host
            )
        try:
            while not stop.is_set():
                server.handle_request()
        finally:
            server.server_close()

    def handle(self, event: dict[str, Any]) -> None:
        target = event.get("target") or {}
        if event.get("action") != "push" or target.get("mediaType") not in MANIFEST_TYPES:
            self.log.debug(
                "dropped registry event %s %s: not a manifest push", event.get("action"), target.get("mediaType")
            )
            return
        if not target.get("tag"):
            self.log.info(
                "dropped push of %s@%s: no tag (a push by digest)", target.get("repository"), target.get("digest")
            )
            return
        host = (event.get("request") or {}).get("host", "")
        repository, tag, digest = target["repository"], target["tag"], target.get("digest", "")
        image = f"{host}/{repository}:{tag}" if host else f"{repository}:{tag}"
        resource = {
            "prefect.resource.id": f"registry.{host or 'registry'}.repository.{repository}",
            "prefect.resource.name": repository,
            "registry.host": host,
            "registry.repository": repository,
            "registry.tag": tag,
            "registry.digest": digest,
            "registry.image": image,
        }
        payload = {
            "repository": repository,
            "tag": tag,
            "digest": digest,
            "image": image,
            "actor": (event.get("actor") or {}).get("name", ""),
            "url": target.get("url", ""),
        }
        occurred = None
        if event.get("timestamp"):
            try:
                occurred = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            except ValueError:
                occurred = None
        self.publish(
            "registry.image.pushed", f"registry/{event.get('id') or digest + tag}", resource, payload, occurred
        )


def _length(headers) -> int:
    try:
        return max(0, int(headers.get("Content-Length", "0")))
    except ValueError:
        return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@hookimpl
def register_event_sources(register):
    register("docker", DockerEvents)
    register("vsphere", VSphereEvents)
    register("registry", RegistryNotifications)
