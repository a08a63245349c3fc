"""A highly available Prefect control plane on this machine, from Debian's packages and Prefect's own parts,
laid out as Prefect's "How to scale self-hosted Prefect" guide (docs/v3/advanced/self-hosted.mdx) says:

| part | process | what it holds |
|---|---|---|
| PostgreSQL | Debian's `postgresql`, a cluster of its own (tests/testbed/prefect_pg.py) | every flow run, task run, limit, event |
| Redis | Debian's `redis-server`, append-only file fsynced on every write | messaging (events), its dedup cache, causal ordering, concurrency leases, Docket's queue |
| API replicas | two `prefect server start --no-services` | the REST API and the websockets |
| background services | `prefect server services start` (one process, apart from the API) | event persister, triggers, actions, task run recorder, scheduler, repossessor, ... |
| load balancer | Debian's `haproxy`, TLS (a CA of the plane's own), health checks on `/api/health` | the one address clients use: PREFECT_API_URL (https) |

The API is closed to strangers, as docs/scale-out.md's production layout: every replica runs with
PREFECT_SERVER_API_AUTH_STRING (Prefect's basic authentication, prefect/server/api/server.py ``token_validation``:
every request but ``GET /api/health`` and ``/api/ready`` without ``Authorization: Basic base64(<auth string>)``
is answered 401), and haproxy terminates TLS (``bind ... ssl crt``) with a certificate of a CA made for the plane
(vicflow.plugins.clients.certs). Clients get PREFECT_API_AUTH_STRING and PREFECT_API_SSL_CERT_FILE in ``env()``;
``http()`` gives ``requests`` the same credentials and trust. Behind haproxy, on loopback, the replicas speak
plain HTTP (haproxy's health checks use the open ``/api/health``).

Clients of the plane (`vicflow listen`, workers) may be started with ``start_client``: they are stopped with it.
The settings every Prefect process gets are ``PrefectHA.server_settings()`` (those of the guide, with
``prefect-redis``); the database is migrated once, before the replicas start (`prefect server database
upgrade -y`, migrations on start off). Everything listens on 127.0.0.1 on ports found free, lives in a
temporary folder, and is stopped (and the folder removed) by ``running()``. A part can be killed with SIGKILL
(``kill``) and started again (``start``) as a supervisor would, for the failover tests
(tests/test_prefect_ha.py). `python -m tests.testbed prefect-ha` starts it and waits for Ctrl-C.

``PrefectHA`` is a ``PrefectOnPostgres``: ``api`` is haproxy's address, so tests/testbed/pool.py (workers,
deployments, runs) works on it unchanged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from vicflow.plugins.clients import certs

from tests.testbed import TestbedError, say
from tests.testbed.prefect_pg import PrefectOnPostgres
from tests.testbed.prefect_stack import BIN, free_port

REPLICAS = ("api-1", "api-2")
SERVICES = "services"
REDIS = "redis"
HAPROXY = "haproxy"
PARTS = (REDIS, *REPLICAS, SERVICES, HAPROXY)

# haproxy's configuration (Debian's haproxy 2.6; keywords from its configuration.txt). A replica that stops
# answering /api/health is out after 2 failed checks 1 s apart, back after 2 good ones; a request whose
# connection is refused (the replica is dead, not yet marked down) is sent to the other one (redispatch).
# Nothing that reached a replica is replayed by haproxy: Prefect's client retries those itself (a 502 and
# a dropped connection are retried; runs are created with an idempotency key, so a retry cannot make two).
HAPROXY_CFG = """\
global
    log stdout format raw local0 info
    stats socket {folder}/haproxy.sock mode 600 level admin
    pidfile {folder}/haproxy.pid

defaults
    mode http
    log global
    option httplog
    option redispatch 1
    retries 3
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    timeout check 2s

frontend prefect
    bind 127.0.0.1:{port} ssl crt {folder}/tls/haproxy.pem
    default_backend prefect_api

backend prefect_api
    balance roundrobin
    option httpchk
    http-check send meth GET uri /api/health
    http-check expect status 200
    default-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions
{servers}
"""

REDIS_ARGS = [
    "--appendonly",
    "yes",  # leases, messages and Docket's queue survive a restart: without it a restarted Redis has forgotten
    "--appendfsync",  # every lease, and each run holding a target is cancelled at its next renewal (410)
    "always",
    "--save",
    "",
    "--protected-mode",
    "yes",
]


@dataclass
class PrefectHA(PrefectOnPostgres):
    redis_port: int = 0
    replica_ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # part -> time.monotonic() of its last start
    # Prefect's convention for the auth string is "user:password": then it is exactly HTTP basic credentials
    user: str = "vicflow"
    secret: str = field(default_factory=lambda: uuid.uuid4().hex)

    # -- settings ---------------------------------------------------------------------------------------------
    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/1"

    @property
    def api(self) -> str:
        return f"https://{self.api_host}:{self.api_port}/api"

    @property
    def auth_string(self) -> str:
        return f"{self.user}:{self.secret}"

    @property
    def ca(self) -> Path:
        return self.folder / "tls" / "ca.pem"

    def env(self) -> dict[str, str]:
        """A client's environment: haproxy's https address, the auth string and the plane's CA."""
        env = super().env()
        env.update(PREFECT_API_AUTH_STRING=self.auth_string, PREFECT_API_SSL_CERT_FILE=str(self.ca))
        return env

    def http(self) -> dict:
        """What ``requests`` needs to be a client of the plane: the credentials and the CA."""
        return {"auth": (self.user, self.secret), "verify": str(self.ca)}

    def make_certificates(self) -> None:
        """A CA of the plane's own and haproxy's certificate for 127.0.0.1; haproxy reads the certificate and its
        key from one file (configuration.txt, ``crt``)."""
        paths = certs.generate(self.folder / "tls", "127.0.0.1", ["127.0.0.1", "localhost"], client=False)
        combined = self.folder / "tls" / "haproxy.pem"
        combined.write_text(Path(paths["server_cert"]).read_text() + Path(paths["server_key"]).read_text())
        combined.chmod(0o600)

    def server_settings(self) -> dict[str, str]:
        """The environment of every server process (replicas, services, migration): the guide's settings, on
        prefect-redis, and ``server_env`` (a test's own)."""
        env = self.env()
        env.update(
            PREFECT_SERVER_API_AUTH_STRING=self.auth_string,
            PREFECT_API_DATABASE_CONNECTION_URL=self.database_url,
            PREFECT_API_DATABASE_MIGRATE_ON_START="false",
            PREFECT_MESSAGING_BROKER="prefect_redis.messaging",
            PREFECT_MESSAGING_CACHE="prefect_redis.messaging",
            PREFECT_SERVER_EVENTS_CAUSAL_ORDERING="prefect_redis.ordering",
            PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect_redis.lease_storage",
            PREFECT_REDIS_MESSAGING_HOST="127.0.0.1",
            PREFECT_REDIS_MESSAGING_PORT=str(self.redis_port),
            PREFECT_REDIS_MESSAGING_DB="0",
            PREFECT_SERVER_DOCKET_URL=self.redis_url,
            PREFECT_SERVER_DOCKET_NAME="prefect-server",
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        env.update(self.server_env)
        return env

    # -- parts ------------------------------------------------------------------------------------------------
    def _spawn(self, part: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.folder / f"{part}.log", "ab") as log:
            log.write(f"\n--- {part} started {datetime.now(UTC).isoformat()} ---\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[part] = proc
        self.started[part] = time.monotonic()
        return proc

    def start_client(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        """A client of the plane (a `vicflow listen`, a worker ...) with its PREFECT_API_URL (haproxy) and ``env``;
        its log is ``log(name)``, ``kill(name)`` kills it, and it is stopped before the plane is."""
        if name in PARTS:
            raise TestbedError(f"{name!r} is a part of the plane; name the client otherwise")
        client_env = self.env()
        client_env.update(env)
        return self._spawn(name, argv, client_env)

    def log(self, part: str, tail: int = 3000) -> str:
        path = self.folder / f"{part}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def start(self, part: str, timeout: float = 120) -> None:
        """Start (or start again, as a supervisor would) one part, and wait until it serves."""
        if part == REDIS:
            (self.folder / "redis").mkdir(exist_ok=True)
            argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.redis_port)]
            self._spawn(part, [*argv, "--dir", str(self.folder / "redis"), *REDIS_ARGS], self.env())
            self._wait(part, self._redis_ping, timeout)
        elif part in REPLICAS:
            self._spawn_replica(part)
            self._wait(part, lambda: self._healthy(f"http://127.0.0.1:{self.replica_ports[part]}/api"), timeout)
        elif part == SERVICES:
            self._spawn(part, [str(BIN / "prefect"), "server", "services", "start"], self.server_settings())
            self._wait(part, self.events_flow, timeout)
        elif part == HAPROXY:
            servers = "\n".join(f"    server {n} 127.0.0.1:{p} check" for n, p in self.replica_ports.items())
            config = HAPROXY_CFG.format(folder=self.folder, port=self.api_port, servers=servers)
            (self.folder / "haproxy.cfg").write_text(config)
            self._spawn(part, ["haproxy", "-db", "-f", str(self.folder / "haproxy.cfg")], self.env())
            self._wait(part, lambda: self._healthy(self.api) and self.backends_up() == set(REPLICAS), timeout)
        else:
            raise TestbedError(f"no part {part!r}; the parts are {', '.join(PARTS)}")

    def _spawn_replica(self, part: str) -> None:
        env = self.server_settings()
        env.update(PREFECT_SERVER_API_HOST="127.0.0.1", PREFECT_SERVER_API_PORT=str(self.replica_ports[part]))
        self._spawn(part, [str(BIN / "prefect"), "server", "start", "--no-services"], env)

    def _wait(self, part: str, ready, timeout: float) -> None:
        proc, deadline = self.processes[part], time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise TestbedError(f"{part} exited with {proc.returncode}:\n{self.log(part)}")
            with suppress(Exception):
                if ready():
                    return
            time.sleep(0.2)
        raise TestbedError(f"{part} did not serve within {timeout:g}s:\n{self.log(part)}")

    def kill(self, part: str, sig: int = signal.SIGKILL) -> float:
        """Kill one part (its whole session) with ``sig``; returns the time.monotonic() of the kill."""
        proc = self.processes[part]
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        at = time.monotonic()
        proc.wait(30)
        return at

    def alive(self, part: str) -> bool:
        proc = self.processes.get(part)
        return proc is not None and proc.poll() is None

    # -- probes -----------------------------------------------------------------------------------------------
    def _redis_ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def _healthy(self, api: str) -> bool:
        return requests.get(f"{api}/health", timeout=2, verify=str(self.ca)).status_code == 200

    def answers(self) -> bool:
        """The plane answers a client: health and a read of the database, through haproxy."""
        try:  # 5 s: a replica that is alive but slow (a loaded machine) is not a failure
            health = requests.get(f"{self.api}/health", timeout=5, **self.http())
            read = requests.post(f"{self.api}/flow_runs/filter", json={"limit": 1}, timeout=5, **self.http())
        except requests.RequestException:
            return False
        return health.status_code == 200 and read.status_code == 200

    def events_flow(self, timeout: float = 10) -> bool:
        """An event posted to the API (published to Redis) is stored by the services' persister within
        ``timeout``: the event pipeline works end to end."""
        event_id = str(uuid.uuid4())
        now = datetime.now(UTC).isoformat()
        event = {"id": event_id, "occurred": now, "event": "vicflow.testbed.probe",
                 "resource": {"prefect.resource.id": f"vicflow.testbed.probe.{event_id}"}}  # fmt: skip
        try:
            if requests.post(f"{self.api}/events", json=[event], timeout=3, **self.http()).status_code >= 300:
                return False
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = requests.post(
                    f"{self.api}/events/filter",
                    json={"filter": {"id": {"id": [event_id]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}},
                    timeout=3,
                    **self.http(),
                )
                if found.status_code == 200 and found.json()["events"]:
                    return True
                time.sleep(0.2)
        except requests.RequestException:
            return False
        return False

    def backends_up(self) -> set[str]:
        """The replicas haproxy sends traffic to (its runtime API: `show servers state`)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(self.folder / "haproxy.sock"))
            sock.sendall(b"show servers state prefect_api\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        up = set()
        for line in answer.decode().splitlines():
            fields = line.split()
            # be_id be_name srv_id srv_name srv_addr srv_op_state ... (op_state 2 = running)
            if len(fields) > 5 and fields[1] == "prefect_api" and fields[5] == "2":
                up.add(fields[3])
        return up

    # -- the whole plane --------------------------------------------------------------------------------------
    def migrate(self) -> None:
        result = subprocess.run(
            [str(BIN / "prefect"), "server", "database", "upgrade", "-y"],
            env=self.server_settings(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode:
            raise TestbedError(
                f"prefect server database upgrade failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def start_server(self, timeout: float = 180) -> None:
        """Redis, the migration, both replicas, haproxy (TLS), the services."""
        self.make_certificates()
        self.start(REDIS)
        self.migrate()
        for part in REPLICAS:  # one after the other: two replicas starting at once both register Prefect's block
            self.start(part, timeout)  # types, and the second fails on uq_block_type__slug
        self.start(HAPROXY)
        self.start(SERVICES)

    def stop(self) -> None:
        clients = [name for name in self.processes if name not in PARTS]
        for part in [*reversed(clients), *reversed(PARTS)]:  # the clients first, the load balancer before the rest
            proc = self.processes.get(part)
            if proc is None or proc.poll() is not None:
                continue
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        super().stop()  # PostgreSQL, then the folder


@contextmanager
def running(**server_env: str):
    """The whole plane (``server_env``: more settings for its server processes); everything is stopped and its
    files removed afterwards."""
    ports = {part: free_port() for part in REPLICAS}
    plane = PrefectHA(
        Path(tempfile.mkdtemp(prefix="vicflow-ha-")),
        pg_port=free_port(),
        api_port=free_port(),
        redis_port=free_port(),
        replica_ports=ports,
    )
    plane.server_env = server_env
    try:
        plane.start_postgres()
        plane.start_server()
        yield plane
    finally:
        plane.stop()


class Watch:
    """Asks ``probe`` (a callable answering True when the plane does what it should) every ``every`` seconds in a
    thread, and records the answers: how long the plane did not answer after a kill."""

    def __init__(self, probe, every: float = 0.1):
        self.probe, self.every = probe, every
        self.answers: list[tuple[float, bool]] = []  # (time.monotonic(), answered)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plane-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            ok = bool(self.probe())
            self.answers.append((at, ok))
            self._stop.wait(max(0.0, self.every - (time.monotonic() - at)))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def until_answered(self, since: float, timeout: float = 120) -> float:
        """Seconds from ``since`` (a kill) to the first answer after the last failed probe (0 when no probe
        failed); waits for an answer. Call it once the trial's work is done."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = [(at, ok) for at, ok in list(self.answers) if at >= since]
            failed = [at for at, ok in after if not ok]
            back = [at for at, ok in after if ok and (not failed or at > failed[-1])]
            if back:
                return back[0] - since if failed else 0.0
            time.sleep(0.1)
        raise TestbedError(f"the plane did not answer within {timeout:g}s of the kill")

    def failures(self, since: float) -> int:
        return sum(1 for at, ok in list(self.answers) if at >= since and not ok)


def serve() -> None:
    """`python -m tests.testbed prefect-ha`: start the plane, print its parts, wait for Ctrl-C."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops everything, as Ctrl-C does
    with running() as plane:
        settings = {k: v for k, v in plane.env().items() if k.startswith("PREFECT_API_")}
        client_env = plane.folder / "client.env"
        client_env.touch(mode=0o600)
        client_env.write_text("".join(f"{k}={v}\n" for k, v in sorted(settings.items())))
        say(f"PostgreSQL on 127.0.0.1:{plane.pg_port}, Redis on 127.0.0.1:{plane.redis_port} (files in {plane.folder})")
        for part, port in plane.replica_ports.items():
            say(f"{part}: prefect server start --no-services on 127.0.0.1:{port}")
        say("background services: prefect server services start")
        say(f"haproxy in front of both: PREFECT_API_URL={plane.api} PREFECT_API_SSL_CERT_FILE={plane.ca}")
        say(f"the API's credentials: PREFECT_API_AUTH_STRING in {plane.folder / 'client.env'}; Ctrl-C stops everything")
        try:
            while all(plane.alive(part) for part in PARTS):
                time.sleep(1)
            dead = [part for part in PARTS if not plane.alive(part)]
            say(f"stopped: {', '.join(dead)} exited:\n" + "\n".join(plane.log(part) for part in dead))
        except KeyboardInterrupt:
            pass
