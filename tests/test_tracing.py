"""OpenTelemetry traces (issue 30, item 4; docs/tracing.md): the span tree of a local `vicflow run`, read from the
SDK's in-memory exporter behind vicflow's masking exporter, and how tracing is switched on.

tests/test_tracing_e2e.py follows one event from `vicflow listen` through a worker's run to its calls, over OTLP.
"""

from __future__ import annotations

import uuid

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from vicflow.flows.cli import main as cli
from vicflow.flows.observability import tracing
from vicflow.plugins.errors import ConfigError

from tests import helpers


@pytest.fixture
def hook():
    """A hook server: its port, and the requests it got."""
    with helpers.hook_server() as served:
        yield served


@pytest.fixture
def exported():
    """Tracing on in this process, to an in-memory exporter (through the masking exporter, as OTLP would be)."""
    memory = InMemorySpanExporter()
    assert tracing.configure("vicflow-test", exporter=memory)
    try:
        yield memory
    finally:
        tracing.shutdown()


def traceparent(span) -> str:
    """The W3C traceparent of ``span`` (sampled; the SDK also sets the random-trace-id flag)."""
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


BLUEPRINT = """
name: traced-{tag}
inputs:
  token: {{type: secret}}
steps:
  - {{id: nap, uses: sleep, with: {{seconds: 0.05}}}}
  - {{id: shaky, uses: flaky, needs: nap, retries: 1, retry_delay_seconds: 0, with: {{key: "{tag}"}}}}
  - id: call
    uses: http_request
    needs: shaky
    with: {{url: "http://127.0.0.1:{port}/hooks/${{{{ inputs.token }}}}", expect_status: [200]}}
  - {{id: each, uses: echo, needs: call, for_each: [alpha, beta], with: {{message: "${{{{ item }}}}"}}}}
  - {{id: never, uses: echo, if: "${{{{ false }}}}", with: {{message: "-"}}}}
"""


def test_a_local_run_is_one_trace_of_run_steps_attempts_and_the_http_call(
    prefect_api, exported, hook, tmp_path, capsys
):
    tag = f"t{uuid.uuid4().hex[:8]}"
    token = f"tok-{uuid.uuid4().hex}"
    path = tmp_path / "traced.yaml"
    path.write_text(BLUEPRINT.format(tag=tag, port=hook[0]))
    assert cli.main(["run", str(path), "--set", f"token={token}"]) == 0, capsys.readouterr()

    spans = exported.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    [run] = [s for s in spans if s.name == "vicflow.run"]
    assert run.parent is None and run.kind == SpanKind.INTERNAL  # no event: the run starts the trace
    assert run.attributes["vicflow.blueprint"] == f"traced-{tag}" and run.attributes["vicflow.run.state"] == "completed"
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}, "one trace"

    def parent(span):
        return by_id[span.parent.span_id]

    steps = {s.attributes["vicflow.step.id"]: s for s in spans if s.name == "vicflow.step"}
    assert set(steps) == {"nap", "shaky", "call", "each", "never"}
    assert all(parent(s) is run for s in steps.values())
    assert (
        steps["never"].attributes["vicflow.step.state"] == "skipped"
        and steps["never"].attributes["vicflow.step.attempts"] == 0
    )
    assert (
        steps["shaky"].attributes["vicflow.step.attempts"] == 2
        and steps["shaky"].attributes["vicflow.step.state"] == "completed"
    )
    assert steps["each"].attributes["vicflow.step.items"] == 2

    attempts = [s for s in spans if s.name == "vicflow.attempt"]
    by_step: dict[str, list] = {}
    for span in attempts:
        assert parent(span) is steps[span.attributes["vicflow.step.id"]]
        by_step.setdefault(span.attributes["vicflow.step.id"], []).append(span)
    assert {k: len(v) for k, v in by_step.items()} == {"nap": 1, "shaky": 2, "call": 1, "each": 2}
    first, second = sorted(by_step["shaky"], key=lambda s: s.attributes["vicflow.attempt"])
    assert (first.attributes["vicflow.attempt"], second.attributes["vicflow.attempt"]) == (1, 2)
    assert first.status.status_code == StatusCode.ERROR and first.attributes["vicflow.retryable"] is True
    assert f"{tag}: failure 1 of 1" in first.status.description
    assert second.status.status_code != StatusCode.ERROR
    assert sorted(s.attributes["vicflow.item"] for s in by_step["each"]) == ["alpha", "beta"]
    assert all(s.attributes["vicflow.step.type"] == "echo" for s in by_step["each"])

    # the HTTP call, made by the step through requests, is a client span under its attempt
    [call] = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert call.name == "GET" and parent(call) is by_step["call"][0]
    url = call.attributes.get("url.full") or call.attributes.get("http.url")
    assert url == f"http://127.0.0.1:{hook[0]}/hooks/***", f"the secret in the URL is masked: {url}"
    # and its traceparent went with the request: the server could continue the trace
    assert [r["headers"].get("traceparent") for r in hook[1]] == [traceparent(call)]

    # nothing exported holds the secret
    for span in spans:
        text = (
            f"{span.name} {dict(span.attributes)} {span.status.description} {[dict(e.attributes) for e in span.events]}"
        )
        assert token not in text, span.name


def test_a_plan_is_traced_as_a_planned_run(exported, tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text("name: planned\nsteps:\n  - {id: hello, uses: echo, with: {message: hi}}\n")
    assert cli.main(["plan", str(path)]) == 0
    [run] = [s for s in exported.get_finished_spans() if s.name == "vicflow.run"]
    assert run.attributes["vicflow.run.state"] == "planned" and run.attributes["vicflow.run.dry_run"] is True


def test_a_run_continues_the_trace_of_its_events_traceparent(exported, tmp_path):
    from vicflow.flows.engine import execution
    from vicflow.flows.engine.thread_executor import ThreadSteps
    from vicflow.flows.language import blueprint as bp
    from vicflow.plugins.manager import default_registry

    path = tmp_path / "ev.yaml"
    path.write_text("name: evented\nsteps:\n  - {id: hello, uses: echo, with: {message: hi}}\n")
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    event = {"event": "registry.image.pushed", "id": "e1", "payload": {"traceparent": f"00-{trace_id}-{span_id}-01"}}
    registry = default_registry()
    execution.execute(bp.load(str(path), registry), {}, registry, "r1", event=event, executor=ThreadSteps)
    [run] = [s for s in exported.get_finished_spans() if s.name == "vicflow.run"]
    assert run.kind == SpanKind.CONSUMER and run.parent.is_remote
    assert (f"{run.context.trace_id:032x}", f"{run.parent.span_id:016x}") == (trace_id, span_id)
    assert run.attributes["vicflow.event.name"] == "registry.image.pushed"


def test_a_failed_steps_rollback_is_a_span_of_the_run_per_undone_step(exported, tmp_path, monkeypatch):
    from vicflow.flows.engine import execution
    from vicflow.flows.engine.thread_executor import ThreadSteps
    from vicflow.flows.language import blueprint as bp
    from vicflow.plugins.errors import RunFailed
    from vicflow.plugins.manager import default_registry

    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "state"))
    path = tmp_path / "undo.yaml"
    path.write_text(
        "name: undone\nsteps:\n"
        "  - {id: a, uses: undoable, with: {name: a}}\n"
        "  - {id: b, uses: undoable, needs: a, with: {name: b}}\n"
        "  - {id: c, uses: undoable, needs: b, on_failure: rollback, with: {name: c, fail: true}}\n"
    )
    registry = default_registry()
    with pytest.raises(RunFailed):
        execution.execute(bp.load(str(path), registry), {}, registry, "r-undo", executor=ThreadSteps)
    spans = exported.get_finished_spans()
    [run] = [s for s in spans if s.name == "vicflow.run"]
    assert run.attributes["vicflow.run.state"] == "failed" and run.status.status_code == StatusCode.ERROR
    steps = {s.attributes["vicflow.step.id"]: s for s in spans if s.name == "vicflow.step"}
    assert {k: v.attributes["vicflow.step.state"] for k, v in steps.items()} == {
        "a": "completed",
        "b": "completed",
        "c": "failed",
    }
    assert steps["c"].status.status_code == StatusCode.ERROR
    undos = sorted((s for s in spans if s.name == "vicflow.rollback"), key=lambda s: s.start_time)
    assert [s.attributes["vicflow.step.id"] for s in undos] == ["b", "a"], "newest first"
    assert all(s.parent.span_id == run.context.span_id for s in undos)


def test_the_listener_puts_its_spans_traceparent_in_the_event(exported):
    sent = []
    event = {
        "event": "docker.container.died",
        "id": "x",
        "resource": {"prefect.resource.id": "docker.e.c"},
        "payload": {"a": 1},
    }
    tracing.event_emitted("docker", event, sent.append)
    [span] = exported.get_finished_spans()
    assert span.name == "vicflow.event" and span.kind == SpanKind.PRODUCER and span.parent is None
    assert sent[0]["payload"] == {"a": 1, "traceparent": traceparent(span)}
    assert "traceparent" not in event["payload"], "the source's own event is left as it was"
    assert (
        span.attributes["vicflow.event.resource"] == "docker.e.c"
        and span.attributes["vicflow.event.source"] == "docker"
    )


def test_a_call_outside_any_vicflow_span_is_not_traced(exported, hook):
    import requests

    requests.get(f"http://127.0.0.1:{hook[0]}/alone", timeout=10)
    assert exported.get_finished_spans() == ()


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ],
)
def test_tracing_is_off_unless_configured(monkeypatch, env, on):
    for name in (
        *tracing.PROTOCOL_ENVS,
        tracing.ENDPOINT_ENV,
        tracing.TRACES_ENDPOINT_ENV,
        tracing.EXPORTER_ENV,
        tracing.DISABLED_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracing.enabled() is on


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER=otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf"),
    ],
)
def test_a_configuration_vicflow_cannot_export_is_a_named_error(monkeypatch, env, fix):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        tracing.enabled()
    assert fix in caught.value.hint and list(env)[-1] in str(caught.value)


def test_otlp_endpoint_is_an_http_url(capsys):
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["listen", "--config", "x.yaml", "--otlp-endpoint", "127.0.0.1:4318"])
    assert "is not an http:// or https:// URL" in capsys.readouterr().err
