"""The resume journal of a flow run, kept in Prefect: an artifact of that flow run (type ``vicflow-journal``).

A journal on the worker's disk made ``--resume`` work only on the machine of the first attempt; in Prefect's
database any worker, and ``vicflow run`` anywhere with the same ``PREFECT_API_URL``, finds it. Its step outputs
are masked before they are written (docs/decisions.md), as everything vicflow sends to Prefect.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

from vicflow.flows.engine.journal import LatestWriter
from vicflow.plugins.errors import StepError

ARTIFACT_TYPE = "vicflow-journal"
HINT = "pass the flow-run id (or name) that `vicflow run` or the Prefect UI shows, on the same Prefect server"


class PrefectJournal(LatestWriter):
    """The journal store of runs in Prefect: the run's journal artifact, created once and updated with the
    latest journal by the writer thread (``LatestWriter``), which retries while the server is away (Prefect's
    client alone retries for about a minute); ``flush`` waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.artifact_id: uuid.UUID | None = None

    def load(self, ref: str) -> dict[str, Any]:
        return load(ref)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Any]:
        from prefect.client.orchestration import get_client  # start-up: +2.2 s (Prefect)

        with get_client(sync_client=True) as client:
            yield client

    def _write(self, client: Any, run_id: str, data: dict[str, Any]) -> None:
        from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate  # start-up: +2.2 s (Prefect)

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
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName  # start-up: +2.2 s (Prefect)
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
    from prefect.client.orchestration import get_client  # start-up: +2.2 s (Prefect)
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
    from prefect.settings import PREFECT_API_URL  # start-up: +2.2 s (Prefect)

    return PREFECT_API_URL.value() or "the temporary server of `vicflow run`"
