"""``vicflow listen``: run the configured event sources, each in its own thread, until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

# Prefect at the top, in the main thread: imported first by the sources' and the folder's threads at once, it met
# its own import lock ("Failed to initialize plugins: deadlock detected by _ModuleLock('prefect.events.schemas.
# events')", a listener of bench/events.py). The client is what the folder's thread uses (flows/events/intake.py).
import prefect.client.orchestration  # noqa: F401
from prefect.events import emit_event
from prefect.events.worker import EventsWorker
from pydantic import BaseModel, ValidationError
from vicflow.flows.engine import journal
from vicflow.flows.events import delivery, intake
from vicflow.flows.language import expressions
from vicflow.flows.language.problems import Collector, Problem, short
from vicflow.flows.language.secrets import Secrets
from vicflow.flows.observability import metrics, tracing
from vicflow.plugins import SourceConfig, masking, yamlpos
from vicflow.plugins.errors import ExpressionError, ListenConfigError, StepError
from vicflow.plugins.hints import did_you_mean, listing
from vicflow.plugins.manager import default_registry

log = logging.getLogger("vicflow.listen")


def prefect_emit(event: dict[str, Any]) -> None:
    emit_event(
        event=event["event"],
        resource=event["resource"],
        payload=event["payload"],
        id=event["id"],
        occurred=event["occurred"],
    )


def counted(source: str, check: delivery.DeliveryCheck | None = None):
    """The emit function of one source: Prefect's, counting what the source emits and, with a delivery check,
    keeping each event for it."""

    def emit(event: dict[str, Any]) -> None:
        tracing.event_emitted(source, event, prefect_emit)  # in a span whose traceparent the event carries
        metrics.received(source)
        if check is not None:
            check.emitted(event)

    return emit


def load_config(path: str, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """The sources' settings, read by the one YAML loader (yamlpos.load_file: size, regular files only, UTF-8,
    aliases and depth bounded) and checked against each source's model, every problem at its line and column.
    Values may be ${{ secrets.name }}."""
    try:
        located = yamlpos.load_file(path, "listen config")
    except yamlpos.YAMLSyntaxError as exc:
        raise ListenConfigError([Problem(path, exc.line, exc.column, str(exc), exc.hint or "")]) from None
    config = located.data or {}
    if not isinstance(config, dict):
        raise ListenConfigError([Problem(path, 1, 1, "the listen config maps source names to their settings")])
    out = Collector(path, located)
    sources = default_registry().event_sources
    names = wanted or list(config)
    for name in names:
        if not isinstance(name, str) or name not in sources:
            hint = f"{did_you_mean(str(name), sources)}installed: {listing(sources)}"
            out.add((name,), f"unknown event source {short(name)}", hint, key=True)
        elif name not in config:
            out.add((), f"source {name!r} has no section in the config", f"add a section {name}: to {path}")
        elif config[name] is not None and not isinstance(config[name], dict):
            out.add((name,), f"the settings of source {name!r} are a mapping", "e.g. docker: {url: ...}")
        else:
            model: type[BaseModel] = getattr(sources[name], "Config", SourceConfig)
            try:  # expressions (${{ secrets.x }}) are checked once rendered
                static = {k: v for k, v in (config[name] or {}).items() if not expressions.has_expression(v)}
                model.model_validate(static)
            except ValidationError as exc:
                dynamic = {k for k, v in (config[name] or {}).items() if expressions.has_expression(v)}
                out.pydantic((name,), exc, model, skip=dynamic)
    if out.problems:
        out.finish()
        raise ListenConfigError(out.problems)
    context = {"secrets": Secrets(), "event": {}}
    settings = {}
    for name in names:
        try:
            settings[name] = expressions.render(config[name] or {}, context)
        except (ExpressionError, StepError) as exc:
            line, column = located.where((name,))
            raise ListenConfigError([Problem(path, line, column, f"source {name!r}: {exc}", exc.hint or "")]) from None
    return settings


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_config(args.config, args.sources)
    where = metrics.address(getattr(args, "metrics_port", None))
    if where:
        metrics.serve_listener(where)
        log.info("metrics on http://%s:%d/metrics", *where)
    if tracing.configure("vicflow-listen"):
        log.info("traces to OTLP/HTTP %s", tracing.endpoint())
    sources = default_registry().event_sources
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = []
    check = None
    wait = getattr(args, "redeliver_after", None)
    if wait is None:
        wait = delivery.WAIT_SECONDS
    if wait > 0:  # an event no run came of is sent again (flows/events/delivery.py)
        check = delivery.DeliveryCheck(logging.getLogger("vicflow.delivery"), prefect_emit, wait)
        thread = threading.Thread(target=check.run, args=(stop,), name="delivery-check", daemon=True)
        thread.start()
        threads.append(thread)
    for name, config in settings.items():
        try:
            source = sources[name](config, counted(name, check), logging.getLogger(f"vicflow.sources.{name}"))
        except ValidationError as exc:  # a value that was an expression, checked once rendered
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ListenConfigError(
                [Problem(args.config, 1, 1, masking.mask(f"source {name!r}: {problems}"))]
            ) from None
        source.cursor_file = journal.state_dir() / "listen" / f"{name}.json"
        thread = threading.Thread(target=source.run, args=(stop,), name=f"source-{name}", daemon=True)
        thread.start()
        threads.append(thread)
        log.info("source %s started", name)
    # the runs that events queue are folded per target (flows/events/intake.py); two listeners take turns
    folder = intake.Folder(logging.getLogger("vicflow.intake"))
    thread = threading.Thread(target=folder.run, args=(stop,), name="intake-folder", daemon=True)
    thread.start()
    threads.append(thread)
    print(f"vicflow listen: {', '.join(settings)} running; SIGTERM or Ctrl-C stops", flush=True)
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join(timeout=10)
    try:
        EventsWorker.drain_all(timeout=10)
    except Exception as exc:  # events already sent cannot be lost; report what could not be flushed
        log.warning("could not flush pending events: %s", exc)
    return 0
