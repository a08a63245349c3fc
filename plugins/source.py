"""The contract between ``vicflow listen`` and an event source: the base class every source derives from."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from pydantic import BaseModel, ConfigDict

NAMESPACE = uuid.UUID("5b1f3c52-7d5e-4c36-9d0e-6f0b8c1a2e11")
Emit = Callable[[dict[str, Any]], None]


class SourceConfig(BaseModel):
    """Base of a source's settings (one entry of the listen config): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


C = TypeVar("C", bound=BaseModel)


class EventSource(Generic[C]):
    """Base of every source: ``run(stop)`` streams until ``stop`` is set, reconnecting with backoff.

    A subclass sets ``Config`` (its settings' model), ``events`` (every event name it emits) and implements
    ``stream(stop)``, which calls ``publish`` for each event; ``run`` reconnects when ``stream`` raises.
    ``class Mine(EventSource[MyConfig])`` types ``self.config`` as ``MyConfig``.
    """

    Config: type[BaseModel] = SourceConfig
    max_backoff = 30.0
    events: tuple[str, ...] = ()  # every event name the source emits (docs/events.md lists them)

    def __init__(self, config: dict[str, Any], emit: Emit, logger: logging.Logger | None = None):
        self.config: C = cast(C, self.Config.model_validate(config or {}))
        self.emit_fn = emit
        self.log = logger or logging.getLogger(f"vicflow.sources.{type(self).__name__}")
        self.seen: OrderedDict[uuid.UUID, None] = OrderedDict()
        self.emitted = 0
        self.cursor_file: Path | None = None  # set by `vicflow listen`: where the source keeps its place

    def load_cursor(self) -> dict[str, Any]:
        """Where the source was when it last saved its place (``{}`` the first time, or without a file): a
        restarted listener resumes there and replays what followed, so nothing that happened while it was down
        is lost; the replayed events keep their ids and are not run twice (docs/decisions.md)."""
        if self.cursor_file is None or not self.cursor_file.exists():
            return {}
        try:
            return dict(json.loads(self.cursor_file.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            self.log.warning("ignored the saved place in %s (%s): starting from now", self.cursor_file, exc)
            return {}

    def save_cursor(self, cursor: dict[str, Any]) -> None:
        """Save the source's place atomically (a SIGKILL leaves the old or the new file, never half of one)."""
        if self.cursor_file is None:
            return
        self.cursor_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.cursor_file.with_suffix(".tmp")
        partial.write_text(json.dumps(cursor))
        os.replace(partial, self.cursor_file)

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.stream(stop)
            except Exception as exc:  # the server went away: say so, wait, reconnect
                if stop.is_set():
                    break
                if time.monotonic() - started > 30:
                    backoff = 1.0
                self.log.warning(
                    "%s: connection lost (%s); reconnecting in %.0fs", type(self).__name__, str(exc)[:200], backoff
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            else:
                backoff = 1.0

    def stream(self, stop: threading.Event) -> None:
        """Read the server's events until ``stop`` is set; raise when the connection is lost."""
        raise NotImplementedError

    def publish(
        self, name: str, key: str, resource: dict[str, str], payload: dict[str, Any], occurred: datetime | None = None
    ) -> bool:
        """Emit once per ``key``; a key seen before (a replay after reconnecting) is dropped.

        ``key`` is the event's identity at its source (a registry notification's id, Docker's container id, time
        and status, vCenter's event key): the event id is a UUIDv5 of it, the same in every listener and after a
        restart, so Prefect and the run's intake (flows/events/intake.py) recognise a second delivery."""
        if name not in self.events:
            raise ValueError(f"{type(self).__name__} emits {name!r} without declaring it in events")
        event_id = uuid.uuid5(NAMESPACE, key)
        if event_id in self.seen:
            self.log.debug("dropped %s: already emitted (%s)", name, key)
            return False
        self.seen[event_id] = None
        while len(self.seen) > 10000:
            self.seen.popitem(last=False)
        self.emit_fn(
            {
                "event": name,
                "id": event_id,
                "resource": resource,
                "payload": payload,
                "occurred": occurred or datetime.now(UTC),
            }
        )
        self.emitted += 1
        self.log.info("emitted %s %s for %s", name, event_id, resource.get("prefect.resource.id"))
        return True
