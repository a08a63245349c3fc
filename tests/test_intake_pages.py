"""The folder reads a storm's whole queue, page by page (flows/events/intake.py ``Folder.queued``): with 1,000
runs queued (bench/events.py at the issue's scale) it read the first 200, the most Prefect gives a request, and
a burst of one target among the later runs was never folded."""

from __future__ import annotations

import logging
import uuid

from prefect import flow
from prefect.client.orchestration import get_client
from vicflow.flows.events import intake


@flow(name="intake-pages")
def queued_run(event: dict | None = None) -> None:
    """Never runs: its runs only wait in the queue."""


def test_the_folder_sees_every_queued_run_not_only_the_first_page(prefect_api):
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(queued_run)
        deployment_id = client.create_deployment(flow_id=flow_id, name=f"storm-{uuid.uuid4().hex[:8]}")
        made = set()
        for index in range(intake.PAGE + 7):
            event = {
                "id": str(uuid.uuid4()),
                "resource": {"prefect.resource.id": f"docker.test.container.c{index % 3}"},
            }
            run = client.create_flow_run_from_deployment(deployment_id, parameters={"event": event})
            made.add(run.id)
        found = intake.Folder(logging.getLogger("test")).queued(client, deployment_id)
    assert len(made) > intake.PAGE
    assert {run.id for run in found} == made
