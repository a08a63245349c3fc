"""The resume journal: what each step of a run did (state, parameters' hash, masked outputs).

``vicflow run --resume RUN`` reads it to skip the steps that completed with the same parameters. Runs in
Prefect keep it in Prefect (flows/on_prefect/journal.py), so any worker can resume them; this file store is the
thread executor's (the engine without Prefect), one file a run under the state directory.

Both stores write through ``LatestWriter``: a step's end hands the journal to a writer thread and goes on.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vicflow.plugins.errors import StepError

log = logging.getLogger("vicflow.journal")


def state_dir() -> Path:
    return Path(os.environ.get("VICFLOW_STATE_DIR", Path.home() / ".local" / "state" / "vicflow"))


def load(run_ref: str) -> dict[str, Any]:
    """The journal of an earlier run, by flow-run id (a unique prefix is enough)."""
    runs = state_dir() / "runs"
    matches = sorted(runs.glob(f"{run_ref}*.json")) if runs.exists() else []
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise StepError(
            f"--resume {run_ref}: {found} with that id in {runs}", "pass the flow-run id that `vicflow run` printed"
        )
    return json.loads(matches[0].read_text())


def path_of(run_id: str) -> Path:
    return state_dir() / "runs" / f"{run_id}.json"


def save(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` (already masked) atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(json.dumps(data, default=str))  # the C encoder: json.dump streams in Python, 10x slower
    os.replace(tmp, path)


class LatestWriter:
    """A journal store whose ``save`` hands the journal to a writer thread and returns, so a step never waits
    for the disk or the API. Only the latest journal matters (it holds every step so far): saves that come
    while one is written are folded into the next write. A write that fails is logged once and tried again
    with the latest journal every ``RETRY_SECONDS``; ``flush`` waits until the latest is written. A process
    killed meanwhile loses the saves of the last moments: a resume runs those steps again, as it would a step
    killed mid-way. Subclasses say where a journal goes (``_write``) and what a writer holds for its life
    (``_session``: a client, say)."""

    RETRY_SECONDS = 2.0
    IDLE_SECONDS = 30.0  # an idle writer thread ends; the next save starts another

    def __init__(self) -> None:
        self._pending: tuple[str, dict[str, Any]] | None = None
        self._busy = False
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._context = contextvars.copy_context()  # the creator's (a run's Prefect settings: the API it talks to)

    def save(self, run_id: str, data: dict[str, Any]) -> None:
        with self._changed:
            self._pending = (run_id, data)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._context.run, args=(self._write_forever,), daemon=True, name="vicflow-journal"
                )
                self._writer.start()
            self._changed.notify_all()

    def flush(self, timeout: float = 60) -> bool:
        """Wait until the latest journal is written; False if it was not within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending is None and not self._busy, timeout)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        yield None

    def _write(self, session: Any, run_id: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def _write_forever(self) -> None:
        warned = False
        with self._session() as session:  # one for the writer's life, not one a save
            while True:
                with self._changed:
                    if not self._changed.wait_for(lambda: self._pending is not None, timeout=self.IDLE_SECONDS):
                        self._writer = None
                        return
                    assert self._pending is not None
                    (run_id, data), self._pending, self._busy = self._pending, None, True
                try:
                    self._write(session, run_id, data)
                except Exception as exc:  # noqa: BLE001 - any store failure; the run goes on, the write is retried
                    if not warned:
                        log.warning("the run's journal could not be saved (%s); retrying", exc)
                        warned = True
                    with self._changed:
                        self._pending = self._pending or (run_id, data)
                    time.sleep(self.RETRY_SECONDS)
                finally:
                    with self._changed:
                        self._busy = False
                        self._changed.notify_all()


class FileJournal(LatestWriter):
    """The journal store of runs without Prefect: a file a run, written by the writer thread."""

    def _write(self, session: Any, run_id: str, data: dict[str, Any]) -> None:
        save(path_of(run_id), data)

    def load(self, ref: str) -> dict[str, Any]:
        return load(ref)
