"""``vicflow listen``: run the configured event sources, each in its own thread, until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import yaml
from vicflow.flows import expressions
from vicflow.flows.blueprint import Problem
from vicflow.flows.secrets import Secrets
from vicflow.plugins.errors import ListenConfigError
from vicflow.plugins.hints import did_you_mean
from vicflow.plugins.manager import default_registry

log = logging.getLogger("vicflow.listen")


def prefect_emit(event: dict[str, Any]) -> None:
    from prefect.events import emit_event

    emit_event(
        event=event["event"],
        resource=event["resource"],
        payload=event["payload"],
        id=event["id"],
        occurred=event["occurred"],
    )


def load_config(path: str, wanted: list[str]) -> dict[str, dict[str, Any]]:
    """The sources' settings; values may be ${{ secrets.name }}."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ListenConfigError([Problem(path, 1, 1, f"cannot read the listen config: {exc}")]) from None
    if not isinstance(config, dict):
        raise ListenConfigError([Problem(path, 1, 1, "the listen config maps source names to their settings")])
    sources = default_registry().event_sources
    names = wanted or list(config)
    problems = [
        Problem(
            path,
            1,
            1,
            f"unknown event source {name!r}",
            f"{did_you_mean(name, sources)}installed: {', '.join(sorted(sources))}",
        )
        for name in names
        if name not in sources
    ]
    problems += [
        Problem(path, 1, 1, f"source {name!r} has no section in the config")
        for name in names
        if name in sources and name not in config
    ]
    if problems:
        raise ListenConfigError(problems)
    context = {"secrets": Secrets(), "event": {}}
    return {name: expressions.render(config[name] or {}, context) for name in names}


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = load_config(args.config, args.sources)
    sources = default_registry().event_sources
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = []
    for name, config in settings.items():
        source = sources[name](config, prefect_emit, logging.getLogger(f"vicflow.sources.{name}"))
        thread = threading.Thread(target=source.run, args=(stop,), name=f"source-{name}", daemon=True)
        thread.start()
        threads.append(thread)
        log.info("source %s started", name)
    print(f"vicflow listen: {', '.join(settings)} running; SIGTERM or Ctrl-C stops", flush=True)
    while not stop.wait(0.5):
        pass
    for thread in threads:
        thread.join(timeout=10)
    try:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=10)
    except Exception as exc:  # events already sent cannot be lost; report what could not be flushed
        log.warning("could not flush pending events: %s", exc)
    return 0
