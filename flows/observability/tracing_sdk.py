"""The parts of tracing that need the OpenTelemetry SDK (the ``tracing`` extra; tracing.py imports this module only
when tracing is on): the tracer provider, its root sampler and the exporter that masks every span."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from vicflow.plugins import masking

SERVICE_ENV = "OTEL_SERVICE_NAME"


def provider(service: str, exporter: SpanExporter | None, roots: tuple[str, ...]) -> TracerProvider:
    """vicflow's provider (never the global one): OTLP/HTTP as the OTEL_ variables say, in batches, or ``exporter``
    (tests: in memory) span by span; every span masked; a trace starts only at one of ``roots``."""
    resource = Resource.create({} if os.environ.get(SERVICE_ENV) else {"service.name": service})
    made = TracerProvider(resource=resource, sampler=sampling.ParentBased(root=OnlyFrom(roots)))
    if exporter is None:
        made.add_span_processor(BatchSpanProcessor(MaskingExporter(OTLPSpanExporter())))
    else:
        made.add_span_processor(SimpleSpanProcessor(MaskingExporter(exporter)))
    return made


class OnlyFrom(sampling.Sampler):
    """A root sampler: a trace starts only at a span named one of ``roots``; a span with no parent of any other name
    (an HTTP call outside a run) is dropped."""

    def __init__(self, roots: tuple[str, ...]):
        self.roots = roots

    def should_sample(
        self, parent_context, trace_id, name, kind=None, attributes=None, links=None, trace_state=None
    ) -> sampling.SamplingResult:
        if name in self.roots:
            return sampling.SamplingResult(sampling.Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return sampling.SamplingResult(sampling.Decision.DROP, None, trace_state)

    def get_description(self) -> str:
        return f"OnlyFrom{list(self.roots)}"


class MaskingExporter(SpanExporter):
    """An exporter that masks every span before ``inner`` exports it: the name, the attributes (the requests
    instrumentation's ``url.full`` too), the events' attributes and the status message (plugins/masking.py)."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([masked(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def masked(span: ReadableSpan) -> ReadableSpan:
    """A copy of the finished ``span`` with every known secret masked."""

    def clean(attributes: Any) -> dict[str, Any]:
        found = {}
        for key, value in dict(attributes or {}).items():
            value = masking.mask(value)
            found[key] = tuple(value) if isinstance(value, list) else value
        return found

    status = span.status
    if status.description:
        status = Status(status.status_code, masking.mask(status.description))
    return ReadableSpan(
        name=masking.mask(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=clean(span.attributes),
        events=[Event(e.name, clean(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )
