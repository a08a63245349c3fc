"""OpenTelemetry traces from an event to the calls a step makes (docs/tracing.md lists the spans; tests/test_docs.py
compares the two). Off unless configured: the standard ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` or
``OTEL_TRACES_EXPORTER=otlp``, or ``vicflow worker|listen --otlp-endpoint URL``; exported over OTLP/HTTP.

One trace spans the processes: `vicflow listen` puts the W3C ``traceparent`` of its ``vicflow.event`` span in the
event's payload, the trigger hands the event to the run as its ``event`` parameter, and the run's ``vicflow.run``
span (in the worker's flow-run process) is its child. Steps and attempts run on other threads (Prefect's task
runs, the thread executor), so their spans name their parent explicitly, from the run's open spans kept here per
run; an attempt's span is the current span while the step's ``apply`` runs, so the requests instrumentation
(Docker's and HTTP calls) and the pyVmomi hook below (every SOAP call) hang their spans under it, also from the
threads a step starts (the threading instrumentation carries the context into them).

vicflow keeps a tracer provider of its own (never the global one: Prefect's run telemetry would start recording
its own flow- and task-run spans into it, a second tree). Its sampler keeps a trace only from a vicflow span: a
call made outside any run (a source's Docker stream in the listener) is not traced. Every exported span passes
through ``plugins/masking.py`` (name, attributes, events, status), so no secret the run knows leaves in a span.
What needs the SDK (the tracing extra) is in flows/observability/tracing_sdk.py, imported only when tracing is on.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from vicflow.flows.language.rendering import item_label
from vicflow.plugins import masking
from vicflow.plugins.errors import ConfigError

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
DISABLED_ENV = "OTEL_SDK_DISABLED"
PROTOCOL_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
TRACEPARENT = "traceparent"  # the key in an event's payload (W3C Trace Context)
SCOPE = "vicflow"

# Every span vicflow starts, with the attributes it may carry (docs/tracing.md lists them).
SPANS: dict[str, tuple[str, ...]] = {
    "vicflow.event": ("vicflow.event.name", "vicflow.event.id", "vicflow.event.source", "vicflow.event.resource"),
    "vicflow.run": (
        "vicflow.blueprint",
        "vicflow.run.id",
        "vicflow.run.dry_run",
        "vicflow.event.name",
        "vicflow.event.id",
        "vicflow.run.state",
    ),
    "vicflow.step": (
        "vicflow.step.id",
        "vicflow.step.type",
        "vicflow.step.state",
        "vicflow.step.attempts",
        "vicflow.step.items",
    ),
    "vicflow.attempt": (
        "vicflow.step.id",
        "vicflow.step.type",
        "vicflow.attempt",
        "vicflow.item.index",
        "vicflow.item",
        "vicflow.retryable",
        "error.type",
    ),
    "vicflow.rollback": ("vicflow.step.id", "vicflow.step.type", "error.type"),
    "vsphere {object}.{method}": (
        "rpc.system",
        "rpc.service",
        "rpc.method",
        "vsphere.moid",
        "server.address",
        "server.port",
        "error.type",
    ),
}
ROOTS = ("vicflow.event", "vicflow.run")  # the spans a trace may start from
# made by opentelemetry-instrumentation-requests (its names and attributes: the HTTP semantic conventions)
INSTRUMENTED = {"{method}": "a Docker Engine API or HTTP call through requests (GET, POST, ...)"}

_lock = threading.Lock()
_state: dict[str, Any] = {}  # provider, tracer, the pyVmomi method it replaced


def enabled() -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, or ``OTEL_TRACES_EXPORTER=otlp``; never with
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. Only OTLP over HTTP (protobuf) is shipped."""
    if os.environ.get(DISABLED_ENV, "").strip().lower() == "true":
        return False
    exporters = {name.strip().lower() for name in os.environ.get(EXPORTER_ENV, "").split(",") if name.strip()}
    if exporters - {"otlp", "none"}:
        raise ConfigError(
            f"{EXPORTER_ENV}={os.environ[EXPORTER_ENV]!r}: vicflow exports traces only over OTLP",
            f"set {EXPORTER_ENV}=otlp (or none, or unset it)",
        )
    if exporters == {"none"}:
        return False
    wanted = "otlp" in exporters or bool(os.environ.get(ENDPOINT_ENV) or os.environ.get(TRACES_ENDPOINT_ENV))
    for name in PROTOCOL_ENVS:
        protocol = os.environ.get(name, "").strip()
        if wanted and protocol and protocol != "http/protobuf":
            raise ConfigError(
                f"{name}={protocol!r}: vicflow ships the OTLP/HTTP exporter only",
                f"set {name}=http/protobuf and point the endpoint at the collector's HTTP port (4318)",
            )
    return wanted


def endpoint() -> str:
    """Where spans go (as the SDK's OTLP/HTTP exporter reads the variables): for the logs."""
    if os.environ.get(TRACES_ENDPOINT_ENV):
        return os.environ[TRACES_ENDPOINT_ENV]
    return os.environ.get(ENDPOINT_ENV, "http://localhost:4318").rstrip("/") + "/v1/traces"


def configure(service: str, exporter: Any = None) -> bool:
    """Start tracing in this process once (idempotent): to ``exporter`` (tests: an in-memory one) or, when the
    environment asks (``enabled``), OTLP/HTTP. Returns whether tracing is on."""
    with _lock:
        if "tracer" in _state:
            return True
        if exporter is None and not enabled():
            return False
        try:  # the SDK is the tracing extra: imported only when tracing is on
            from opentelemetry.instrumentation.requests import RequestsInstrumentor
            from opentelemetry.instrumentation.threading import ThreadingInstrumentor
            from vicflow.flows.observability import tracing_sdk
        except ImportError as exc:
            raise ConfigError(
                f"tracing is configured ({EXPORTER_ENV}/{ENDPOINT_ENV}) but the OpenTelemetry SDK is missing: {exc}",
                "pip install 'vicflow[tracing]', or unset the OTEL_ variables",
            ) from None
        provider = tracing_sdk.provider(service, exporter, ROOTS)
        RequestsInstrumentor().instrument(tracer_provider=provider)
        ThreadingInstrumentor().instrument()  # a step's own thread pool (the firewall's hosts) keeps the attempt's span
        _state.update(provider=provider, tracer=provider.get_tracer(SCOPE), soap=_hook_pyvmomi())
        return True


def shutdown() -> None:
    """Flush and stop tracing in this process (tests; a process that exits is flushed by the SDK's atexit)."""
    with _lock:
        if "tracer" not in _state:
            return
        # the tracing extra, imported by configure() already (tracing is on)
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        from opentelemetry.instrumentation.threading import ThreadingInstrumentor

        RequestsInstrumentor().uninstrument()
        ThreadingInstrumentor().uninstrument()
        _unhook_pyvmomi(_state.get("soap"))
        _state.pop("provider").shutdown()
        _state.clear()


def _tracer() -> Any:
    return _state.get("tracer")


def _start(name: str, parent: Context | None, attributes: dict[str, Any], kind: SpanKind = SpanKind.INTERNAL) -> Span:
    known = SPANS[name]  # a span that is not declared is a programming error: add it to SPANS and docs/tracing.md
    unknown = set(attributes) - set(known)
    if unknown:
        raise ValueError(f"span {name!r} has undeclared attributes {sorted(unknown)}: add them to tracing.SPANS")
    return _tracer().start_span(name, context=parent, kind=kind, attributes=_values(attributes))


def _values(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attribute values as OpenTelemetry takes them (str, bool, int, float), masked; None is left out."""
    found = {}
    for key, value in attributes.items():
        if value is None:
            continue
        if not isinstance(value, str | bool | int | float):
            value = str(value)
        found[key] = masking.mask(value)
    return found


def _failed(span: Span, message: str, error: BaseException | None = None) -> None:
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
    span.set_status(Status(StatusCode.ERROR, masking.mask(message)[:1000]))


# ------------------------------------------------------------------------------------------- the listener


def event_emitted(source: str, event: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """`vicflow listen` emits ``event``: within a ``vicflow.event`` span, whose traceparent the event's payload
    carries to the run its trigger starts. Without tracing: ``emit(event)``."""
    if _tracer() is None:
        return emit(event)
    attributes = {
        "vicflow.event.name": event.get("event"),
        "vicflow.event.id": event.get("id"),
        "vicflow.event.source": source,
        "vicflow.event.resource": (event.get("resource") or {}).get("prefect.resource.id"),
    }
    span = _start("vicflow.event", None, attributes, SpanKind.PRODUCER)
    try:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
        event = {**event, "payload": {**(event.get("payload") or {}), **carrier}}
        emit(event)
    except Exception as exc:
        _failed(span, str(exc), exc)
        raise
    finally:
        span.end()


# ------------------------------------------------------------------------------------------- runs and steps


@dataclass
class _RunSpans:
    """One run's open spans: its own, and its steps' (by step id)."""

    span: Span
    steps: dict[str, Span] = field(default_factory=dict)
    tries: dict[tuple[str, int | None], int] = field(default_factory=dict)  # (step, item) -> attempts so far
    lock: threading.Lock = field(default_factory=threading.Lock)


def traceparent_of(event: dict[str, Any] | None) -> str | None:
    payload = (event or {}).get("payload") or {}
    value = payload.get(TRACEPARENT) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def run_started(run: Any) -> None:
    """The run's span: a child of its event's (the traceparent in the payload), else of the current span (a
    fleet step's child run in this process), else a new trace."""
    if not configure("vicflow-run") or run.spans is not None:
        return
    parent, kind = None, SpanKind.INTERNAL
    traceparent = traceparent_of(run.event)
    if traceparent:
        parent, kind = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent}), SpanKind.CONSUMER
    attributes = {
        "vicflow.blueprint": run.blueprint.name,
        "vicflow.run.id": run.run_id,
        "vicflow.run.dry_run": run.dry_run,
        "vicflow.event.name": (run.event or {}).get("event"),
        "vicflow.event.id": (run.event or {}).get("id"),
    }
    run.spans = _RunSpans(_start("vicflow.run", parent, attributes, kind))


def run_ended(run: Any) -> None:
    """The run's final state (``planned`` for a plan; ``error``: the engine raised before it had one)."""
    spans, run.spans = run.spans, None
    if spans is None:
        return
    state = str(run.state)  # a RunState: its value
    if run.dry_run and state == "running":
        state = "planned"
    if state == "running":
        state = "error"
    for step_id in list(spans.steps):  # steps a failure left open (the engine stopped waiting for them)
        spans.steps.pop(step_id).end()
    spans.span.set_attribute("vicflow.run.state", state)
    if state in ("failed", "error", "denied"):
        _failed(spans.span, run.error or run.cancelled or state)
    spans.span.end()


def step_started(run: Any, step_id: str) -> None:
    """Run.start: the step's span, a child of the run's, open until ``step_ended``."""
    spans = run.spans
    if spans is None:
        return
    attributes = {"vicflow.step.id": step_id, "vicflow.step.type": run.records[step_id].uses}
    with spans.lock:
        spans.steps[step_id] = _start("vicflow.step", trace.set_span_in_context(spans.span), attributes)


def step_ended(run: Any, step_id: str) -> None:
    """Run's transitions to a final state: the step's state; a step that never started (skipped, resumed,
    cancelled) gets a span of no length."""
    spans = run.spans
    if spans is None:
        return
    record = run.records[step_id]
    with spans.lock:
        span = spans.steps.pop(step_id, None)
    if span is None:
        attributes = {"vicflow.step.id": step_id, "vicflow.step.type": record.uses}
        span = _start("vicflow.step", trace.set_span_in_context(spans.span), attributes)
    state = str(record.state)  # a StepState: its value
    ended = {"vicflow.step.state": state, "vicflow.step.attempts": record.attempts}
    span.set_attributes(_values({**ended, "vicflow.step.items": record.items or None}))
    if state in ("failed", "timed_out"):
        _failed(span, record.error or state)
    span.end()


def attempt(body: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates one attempt of a step (``attempt.apply_step(run, step_id, index)``, which both executors run, the
    Prefect one in a task run's thread): a ``vicflow.attempt`` span under its step's, the current span while it
    runs."""

    @functools.wraps(body)
    def traced(run: Any, step_id: str, index: int | None = None) -> Any:
        spans = run.spans
        if spans is None:
            return body(run, step_id, index)
        with spans.lock:
            number = spans.tries[(step_id, index)] = spans.tries.get((step_id, index), 0) + 1
            parent = spans.steps.get(step_id, spans.span)
        attributes: dict[str, Any] = {
            "vicflow.step.id": step_id,
            "vicflow.step.type": run.records[step_id].uses,
            "vicflow.attempt": number,
        }
        if index is not None:
            attributes["vicflow.item.index"] = index
            attributes["vicflow.item"] = item_label(run.items[step_id][index])
        span = _start("vicflow.attempt", trace.set_span_in_context(parent), attributes)
        with _current(span):
            try:
                return body(run, step_id, index)
            except BaseException as exc:
                span.set_attribute("vicflow.retryable", bool(getattr(exc, "transient", False)))
                _failed(span, str(exc), exc)
                raise

    return traced


def rollback(body: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates one undo of a step (``attempt.undo_step(run, step_id)``): a ``vicflow.rollback`` span under the
    run's."""

    @functools.wraps(body)
    def traced(run: Any, step_id: str) -> Any:
        spans = run.spans
        if spans is None:
            return body(run, step_id)
        attributes = {"vicflow.step.id": step_id, "vicflow.step.type": run.records[step_id].uses}
        span = _start("vicflow.rollback", trace.set_span_in_context(spans.span), attributes)
        with _current(span):
            try:
                return body(run, step_id)
            except BaseException as exc:
                _failed(span, str(exc), exc)
                raise

    return traced


@contextmanager
def _current(span: Span) -> Iterator[None]:
    """``span`` is the current span meanwhile (threads the body starts with a copy of this context see it); it
    ends afterwards."""
    try:
        with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            yield
    finally:
        span.end()


# ------------------------------------------------------------------------------------------- vSphere (pyVmomi)


def _hook_pyvmomi() -> Any:
    """A span around every SOAP call: ``SoapStubAdapter.InvokeMethod`` (pyVmomi/SoapAdapter.py) serialises one
    method call, POSTs it and reads the answer; property reads go through it too (RetrievePropertiesEx). Returns
    the method it replaced."""
    try:
        from pyVmomi.SoapAdapter import SoapStubAdapter  # only when tracing is on: +172 ms (python -X importtime)
    except ImportError:
        return None
    original = SoapStubAdapter.InvokeMethod
    if getattr(original, "__vicflow_traced__", False):
        return None

    @functools.wraps(original)
    def invoke(stub: Any, mo: Any, info: Any, args: Any, *rest: Any, **options: Any) -> Any:
        tracer = _tracer()
        if tracer is None or not trace.get_current_span().is_recording():  # outside a run: not traced
            return original(stub, mo, info, args, *rest, **options)
        service = getattr(mo, "_wsdlName", type(mo).__name__)
        method = getattr(info, "wsdlName", "?")
        host, _, port = str(getattr(stub, "host", "")).rpartition(":")
        if not port.isdigit():
            host, port = str(getattr(stub, "host", "")), ""
        attributes = _values(
            {
                "rpc.system": "vsphere-soap",
                "rpc.service": service,
                "rpc.method": method,
                "vsphere.moid": getattr(mo, "_moId", None),
                "server.address": host.strip("[]") or None,
                "server.port": int(port) if port else None,
            }
        )
        with tracer.start_as_current_span(
            f"vsphere {service}.{method}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                return original(stub, mo, info, args, *rest, **options)
            except BaseException as exc:  # a vmodl fault (InvalidLogin, NotFound) or a cut connection
                _failed(span, getattr(exc, "msg", None) or str(exc) or type(exc).__name__, exc)
                raise

    invoke.__vicflow_traced__ = True  # type: ignore[attr-defined]
    SoapStubAdapter.InvokeMethod = invoke  # type: ignore[method-assign,assignment]
    return original


def _unhook_pyvmomi(original: Any) -> None:
    if original is not None:
        from pyVmomi.SoapAdapter import SoapStubAdapter  # imported by _hook_pyvmomi already

        SoapStubAdapter.InvokeMethod = original  # type: ignore[method-assign]
