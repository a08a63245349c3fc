"""``health_check``: HTTP(S), TCP, container state/health (or a command run in it) and Postgres, retried until
a deadline.

On a VCH a container's Healthcheck is dropped (VIC 1.1.1 never reads it), so "running" says nothing about
readiness there: ``kind: container`` needs a ``command`` (run as a detached exec, which a VCH allows) and
refuses to pass on "running" alone. A check that watches a container holds the engine's event stream open: when
the engine restarts under it and the container stays stopped, it fails with EngineRestarted, which the engine
never answers with a rollback.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import socket
import time
from datetime import UTC, datetime
from typing import Any, Literal

import docker
import requests
from pydantic import Field, field_validator, model_validator
from vicflow.plugins import Change, PermanentError, StepContext, StepType, TransientError, hookimpl
from vicflow.plugins.clients.dockerapi import (
    DockerParams,
    EngineRestarted,
    EngineWatch,
    connected,
    exec_detached,
    is_vch,
)
from vicflow.plugins.errors import VicflowError
from vicflow.plugins.paths import BlueprintFile


class ProbeFailed(VicflowError):
    """The service answered, but not as expected (a real exception: ``assert`` vanishes under ``python -O``)."""


class HealthParams(DockerParams):
    kind: Literal["http", "tcp", "container", "postgres"]
    url: str | None = Field(None, description="http: the URL to GET")
    expect_status: int | list[int] = Field(
        200, description="http: accepted status code(s); redirects are not followed (expect 302 to accept one)"
    )
    body_regex: str | None = Field(None, description="http: a regex the body must match")
    headers: dict[str, str] = Field(default_factory=dict)
    ca: BlueprintFile | None = Field(None, description="http: CA file for https")
    verify_tls: bool = True
    host: str | None = Field(None, description="tcp/postgres: host")
    port: int | None = Field(None, description="tcp/postgres: port (postgres default 5432)")
    container: str | None = Field(None, description="container: name or id")
    command: list[str] | str | None = Field(
        None,
        description="container: a command run in it as a detached exec (what a VCH allows); ready when it exits 0, "
        "e.g. [pg_isready, -h, 127.0.0.1]. Required on a VCH, which drops the container's Healthcheck",
    )
    watch_container: str | None = Field(
        None,
        description="http/tcp/postgres: the container behind the service (on docker_host); "
        "once it has exited the check fails at once instead of waiting out its deadline",
    )
    user: str = "postgres"
    password: str | None = None
    database: str | None = None
    deadline_seconds: float = Field(60, gt=0, description="keep trying this long")
    interval_seconds: float = Field(2, ge=0)
    attempt_timeout_seconds: float = Field(5, gt=0)

    @model_validator(mode="after")
    def _needs(self):
        required = {"http": ["url"], "tcp": ["host", "port"], "container": ["container"], "postgres": ["host"]}
        missing = [f for f in required[self.kind] if getattr(self, f) in (None, "")]
        if missing:
            raise ValueError(f"kind {self.kind} needs {', '.join(missing)}")
        return self

    @field_validator("headers")
    @classmethod
    def _latin1(cls, headers: dict[str, str]) -> dict[str, str]:
        """HTTP/1.1 header values are Latin-1 (RFC 9110 5.5); http.client would fail on each attempt. The value
        is never quoted: it is often a secret."""
        for name, value in headers.items():
            try:
                value.encode("latin-1")
            except UnicodeEncodeError as exc:
                raise ValueError(
                    f"header {name}: character {exc.start + 1} of its value is not Latin-1, which is all HTTP "
                    "headers carry: percent-encode or base64 the value as the service expects"
                ) from None
        return headers


class HealthCheck(StepType[HealthParams]):
    """Probe until it passes or the deadline passes; the failure names the last error."""

    Params = HealthParams
    outputs = {
        "latency_ms": "latency of the passing attempt",
        "attempts": "attempts made",
        "detail": "what the passing attempt saw",
    }

    def plan(self, params: HealthParams, ctx: StepContext) -> list[Change]:
        return [Change("none", _target(params), f"{params.kind} check (read-only)")]

    def apply(self, params: HealthParams, ctx: StepContext) -> dict[str, Any]:
        ctx.changed = False
        if (
            params.kind == "http"
            and (params.url or "").startswith("https:")
            and not params.verify_tls
            and not params.ca
        ):
            ctx.logger.warning("verify_tls: false - the certificate of %s is not verified", params.url)
        watched = params.container if params.kind == "container" else params.watch_container
        with EngineWatch(params, ctx.logger) if watched else contextlib.nullcontext() as watch:
            return self._probe(params, ctx, watch)

    def _probe(self, params: HealthParams, ctx: StepContext, watch: EngineWatch | None) -> dict[str, Any]:
        deadline = min(time.monotonic() + params.deadline_seconds, ctx.deadline or float("inf"))
        attempt, last = 0, ""
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                detail = PROBES[params.kind](params, min(params.attempt_timeout_seconds, max(0.5, deadline - started)))
                latency = (time.monotonic() - started) * 1000
                ctx.logger.info("%s attempt %d passed in %.0f ms: %s", _target(params), attempt, latency, detail)
                return {"latency_ms": round(latency, 1), "attempts": attempt, "detail": detail}
            except PermanentError:
                raise
            except Exception as exc:  # every other failure is a reason to try again until the deadline
                last = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ProbeFailed) else str(exc)
                latency = (time.monotonic() - started) * 1000
                ctx.logger.info("%s attempt %d failed after %.0f ms: %s", _target(params), attempt, latency, last)
                _fail_if_exited(params, last, watch)
            if time.monotonic() + params.interval_seconds >= deadline:
                raise TransientError(
                    f"{_target(params)} did not pass within {params.deadline_seconds:g}s "
                    f"({attempt} attempts); last error: {last}",
                    "check the service's logs; raise deadline_seconds if it is only slow",
                )
            time.sleep(params.interval_seconds)


def _target(params: HealthParams) -> str:
    return {
        "http": params.url or "",
        "tcp": f"{params.host}:{params.port}",
        "container": params.container or "",
        "postgres": f"postgres://{params.user}@{params.host}:{params.port or 5432}/{params.database or params.user}",
    }[params.kind]


def _http(params: HealthParams, timeout: float) -> str:
    session = requests.Session()
    session.trust_env = False  # a pinned CA must not be replaced by REQUESTS_CA_BUNDLE
    verify: Any = params.ca if params.ca else params.verify_tls
    # a redirect is an answer: Gogs sends every page to /install until its first run is done
    response = session.get(
        params.url or "", headers=params.headers, timeout=timeout, verify=verify, allow_redirects=False
    )
    accepted = params.expect_status if isinstance(params.expect_status, list) else [params.expect_status]
    if response.status_code not in accepted:
        where = f" to {response.headers['Location']}" if response.headers.get("Location") else ""
        raise ProbeFailed(f"HTTP {response.status_code}{where} (expected {accepted}): {response.text[:200]}")
    if params.body_regex and not re.search(params.body_regex, response.text):
        raise ProbeFailed(f"body does not match {params.body_regex!r}: {response.text[:200]}")
    return f"HTTP {response.status_code}"


def _tcp(params: HealthParams, timeout: float) -> str:
    with socket.create_connection((params.host, params.port), timeout=timeout):
        return "connected"


def _container(params: HealthParams, timeout: float) -> str:
    params = params.model_copy(update={"api_timeout_seconds": max(1, timeout)})
    with connected(params) as client:
        try:
            return _container_state(client, params, timeout)
        except docker.errors.APIError as exc:  # not there yet, or the engine is busy: the probe's answer, tried again
            raise ProbeFailed(f"{type(exc).__name__}: {exc}") from exc


def _container_state(client, params: HealthParams, timeout: float) -> str:
    """What the container probe sees: running, its health, the command's exit code."""
    container = client.containers.get(params.container)
    state = container.attrs["State"]
    health = (state.get("Health") or {}).get("Status")
    if not state.get("Running"):
        raise ProbeFailed(f"container {params.container} is {state.get('Status')}")
    if params.command:
        command = shlex.split(params.command) if isinstance(params.command, str) else list(params.command)
        code = exec_detached(client, container.id, command, timeout)
        if code != 0:
            raise ProbeFailed(f"{shlex.join(command)} exited with {code} in container {params.container}")
        return f"running, {shlex.join(command)} exited 0"
    if health is None and is_vch(client):
        raise PermanentError(
            f"container {params.container} runs on a VCH, which drops a container's Healthcheck (VIC 1.1.1 "
            "never reads it): that it runs does not say it is ready",
            "give the check a command that exits 0 once the service is ready, run in the container as a "
            "detached exec (e.g. command: [pg_isready, -h, 127.0.0.1] for Postgres)",
        )
    if health not in (None, "healthy"):
        raise ProbeFailed(f"container {params.container} is running but {health}")
    return f"running{', ' + health if health else ''}"


def _fail_if_exited(params: HealthParams, last: str, watch: EngineWatch | None = None) -> None:
    """The container behind the check has exited and will not be restarted: no deadline would help. When the
    engine restarted meanwhile, that is what stopped it: EngineRestarted (the run keeps the app as it is)."""
    name = params.container if params.kind == "container" else params.watch_container
    if not name:
        return
    try:
        with connected(params.model_copy(update={"api_timeout_seconds": 5})) as client:
            container = client.containers.get(name)
            state = container.attrs["State"]
            if state.get("Running") or state.get("Restarting") or state.get("Status") not in ("exited", "dead"):
                return
            tail = container.logs(tail=5).decode(errors="replace").strip()
            policy = ((container.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "none"
    except Exception:  # the engine could not say: keep probing until the deadline
        return
    stopped = f"exit code {state.get('ExitCode')}, at {state.get('FinishedAt')}"
    if watch is not None and watch.restarted:
        went = datetime.fromtimestamp(watch.went_away or time.time(), UTC).isoformat(timespec="seconds")
        raise EngineRestarted(
            f"{_target(params)}: the Docker engine at {params.docker_host} restarted while the check ran (it went "
            f"away at {went}); container {name} stopped ({stopped}) and its restart policy ({policy}) did not start "
            "it again. Nothing was rolled back: the app is left as it was",
            "run the blueprint again: compose_up starts what is stopped (so does the heal-on-die deployment)",
        )
    raise PermanentError(
        f"{_target(params)}: container {name} has {state.get('Status')} ({stopped}); last error: {last}"
        + (f"; its last log lines:\n{tail}" if tail else ""),
        f"read its logs (docker logs {name}) and fix the cause; a restart policy would restart it",
    )


def _postgres(params: HealthParams, timeout: float) -> str:
    """Log in (pg8000 speaks SCRAM-SHA-256, md5 and plain passwords) and run SELECT 1."""
    import pg8000.exceptions
    import pg8000.native

    try:
        connection = pg8000.native.Connection(
            params.user,
            host=params.host,
            port=params.port or 5432,
            database=params.database or params.user,
            password=params.password,
            timeout=timeout,
            application_name="vicflow-health",
        )
    except pg8000.exceptions.DatabaseError as exc:  # the server's own refusal: {'S': 'FATAL', 'M': ..., 'C': ...}
        raise ProbeFailed(_server_message(exc)) from None
    try:
        connection.run("SELECT 1")
        return f"SELECT 1 ok (server {connection.parameter_statuses.get('server_version', '?')})"
    except pg8000.exceptions.DatabaseError as exc:
        raise ProbeFailed(_server_message(exc)) from None
    finally:
        connection.close()


def _server_message(exc: Exception) -> str:
    fields = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    if not fields:
        return str(exc)
    return f"postgres {fields.get('S', 'ERROR')} {fields.get('C', '')}: {fields.get('M', exc)}".replace("  ", " ")


PROBES = {"http": _http, "tcp": _tcp, "container": _container, "postgres": _postgres}


@hookimpl
def register_step_types(register):
    register("health_check", HealthCheck)
