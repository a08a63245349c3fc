"""The resume journal of a flow run, kept in Prefect: an artifact of that flow run (type ``vicflow-journal``).

A journal on the worker's disk made ``--resume`` work only on the machine of the first attempt; in Prefect's
database any worker, and ``vicflow run`` anywhere with the same ``PREFECT_API_URL``, finds it. Its step outputs
are masked before they are written (docs/decisions.md), as everything vicflow sends to Prefect.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from typing import Any

from vicflow.plugins.errors import StepError

ARTIFACT_TYPE = "vicflow-journal"
HINT = "pass the flow-run id (or name) that `vicflow run` or the Prefect UI shows, on the same Prefect server"
log = logging.getLogger("vicflow.journal")


class PrefectJournal:
    """``save`` hands the journal to a writer thread and returns: a step never waits for the API (with the
    server away, Prefect's client retries for about a minute). The writer creates the run's journal artifact
    once, updates it with the latest data, and retries while the server is away; ``flush`` waits for it."""

    def __init__(self) -> None:
        self.artifact_id: uuid.UUID | None = None
        self._pending: tuple[str, dict[str, Any]] | None = None
        self._busy = False
        self._changed = threading.Condition()
        self._writer: threading.Thread | None = None
        self._settings = contextvars.copy_context()  # the run's Prefect settings (the API it talks to)

    def save(self, run_id: str, data: dict[str, Any]) -> None:
        with self._changed:
            self._pending = (run_id, data)  # only the latest matters: it holds every step so far
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._settings.run, args=(self._write_forever,), daemon=True, name="vicflow-journal"
                )
                self._writer.start()
            self._changed.notify_all()

    def flush(self, timeout: float = 60) -> bool:
        """Wait until the latest data is in Prefect (the summary is published first, once the server answers)."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def load(self, ref: str) -> dict[str, Any]:
        return load(ref)

    def _write_forever(self) -> None:
        from prefect.client.orchestration import get_client

        warned = False
        with get_client(sync_client=True) as client:  # one client for the writer's life, not one a save
            while True:
                with self._changed:
                    if not self._changed.wait_for(lambda: self._pending is not None, timeout=30):
                        self._writer = None  # idle: the next save starts another
                        return
                    assert self._pending is not None
                    (run_id, data), self._pending, self._busy = self._pending, None, True
                try:
                    self._write(client, run_id, data)
                except Exception as exc:  # noqa: BLE001 - any client or server failure; the run goes on
                    if not warned:
                        log.warning("the run's journal could not be saved in Prefect (%s); retrying", exc)
                        warned = True
                    with self._changed:
                        self._pending = self._pending or (run_id, data)
                    time.sleep(2)
                finally:
                    with self._changed:
                        self._busy = False
                        self._changed.notify_all()

    def _write(self, client: Any, run_id: str, data: dict[str, Any]) -> None:
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate

        if self.artifact_id is None:
            made = client.create_artifact(
                ArtifactCreate(
                    type=ARTIFACT_TYPE,
                    data=data,
                    flow_run_id=uuid.UUID(run_id),
                    description="vicflow's resume journal: each step's state, parameters' hash, masked outputs",
                )
            )
            self.artifact_id = made.id
        else:
            client.update_artifact(self.artifact_id, ArtifactUpdate(data=data))


def flow_run_id(client: Any, ref: str) -> str:
    """The id of the flow run ``ref`` names: its id, or its name (``bright-tiger``)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.exceptions import ObjectNotFound

    try:
        return str(client.read_flow_run(uuid.UUID(ref)).id)
    except ValueError:  # not a UUID: a name
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[ref])), limit=2)
        if len(runs) == 1:
            return str(runs[0].id)
        found = "no run" if not runs else "more than one run"
    except ObjectNotFound:
        found = "no run"
    raise StepError(f"--resume {ref}: {found} with that id in Prefect ({_api()})", HINT)


def load(ref: str) -> dict[str, Any]:
    """The journal of an earlier flow run (by id or name), from any machine that reaches the same server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        run_id = flow_run_id(client, ref)
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)]),
                type=ArtifactFilterType(any_=[ARTIFACT_TYPE]),
            ),
            limit=1,
        )
    if not found or not isinstance(found[0].data, dict):
        raise StepError(
            f"--resume {ref}: flow run {run_id} has no vicflow journal (it ran no step, or it was a plan)", HINT
        )
    return found[0].data


def _api() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or "the temporary server of `vicflow run`"
