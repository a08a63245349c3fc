"""The intake of a run started by an event: one run per event id, and a storm of events folded per target.

Prefect drops an event id it saw in the last 30 minutes before any trigger sees it (the triggers service's
``seen`` record, prefect/server/events/triggers.py and events/ordering), in memory on one server. What that
misses (a server restarted, an id older than its window, more ids than its 10,000-entry memory) the run
catches here, against a record that lives as long as the runs: the tags of the runs that acted on an event.

``admit`` runs while the run holds its target (flows/on_prefect/flow.py ``one_run_per_target``), so no two runs of one
target decide at once: a run whose event id a run of the same deployment already took ends at once, Cancelled
"Duplicate", naming that run; otherwise it tags itself ``vicflow-event:<id>`` and goes on.

``Folder`` runs in `vicflow listen`, one pass every half second. It folds the queued runs of each deployment
whose runs queue (a concurrency limit of 1, as prefect.yaml's event deployments have) per target, the event's
``prefect.resource.id``: the newest stays queued and acts on the latest event, the others end Cancelled
"Folded" naming it, and the newest's ``folded`` parameter counts them (count, first and last event id). Each
fold emits ``vicflow.events.folded``. It never cancels a run that may be starting (cancelling a run a worker had
just made Pending released the slot under it, and Prefect killed it as Crashed when its lease renewal failed):
between two runs it holds the deployment's one slot itself while it folds; while a run holds the slot it folds
only the runs that no worker asks for before it is done (``_not_due_soon``). Runs of other targets are never
touched.  See docs/decisions.md.

`vicflow listen` imports this module and starts its sources before its folder first asks Prefect: each
function imports the Prefect it needs (``start-up: +2.2 s``, python -X importtime).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from vicflow.flows.observability import metrics
from vicflow.plugins import masking
from vicflow.plugins.errors import VicflowError

EVENTS = ("vicflow.events.folded",)  # docs/events.md lists them; tests/test_docs.py compares the two
TAG = "vicflow-event:"
FOLD_SECONDS = 0.5
PAGE = 200  # runs read a request: Prefect's default and largest page (PREFECT_API_DEFAULT_LIMIT)
FOLD_MARGIN = 10  # seconds past a worker's prefetch that a fold while a run holds the slot keeps clear of
NAMESPACE = UUID("0b7e3f0e-2a57-4d55-9a36-1f4c1f6f3c0d")  # of the ids of vicflow.events.folded


class Duplicate(VicflowError):
    """This run's event was already taken by another run (the run ends Cancelled "Duplicate", not failed)."""

    def __init__(self, event_id: str, other: Any):
        super().__init__(
            f"event {event_id} was already taken by flow run {other.name} ({other.id}): this run does nothing"
        )
        self.other = other


def target_of(event: dict[str, Any] | None) -> str:
    """What a run started by ``event`` acts on, as far as folding goes: the event's resource."""
    resource = (event or {}).get("resource") or {}
    return str(resource.get("prefect.resource.id") or "")


def event_id(event: dict[str, Any] | None) -> str:
    """The event's identity: its id as its source first sent it. An event the listener sent again (no run came
    of it: flows/events/delivery.py) has an id of its own and names the first in ``payload.redelivery_of``."""
    event = event or {}
    return str((event.get("payload") or {}).get("redelivery_of") or event.get("id") or "")


def prefect_client():
    from prefect.client.orchestration import get_client  # start-up: +2.2 s (Prefect)

    return get_client(sync_client=True)


def read_runs(client, deployment_id: str | None, **flow_run_filter: Any) -> list[Any]:
    from prefect.client.schemas.filters import (  # start-up: +2.2 s (Prefect)
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    deployments = None
    if deployment_id:
        deployments = DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)]))
    found: list[Any] = []
    while True:  # page by page: a storm queues more runs than the server gives at once (PREFECT_API_DEFAULT_LIMIT)
        page = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(**flow_run_filter),
            deployment_filter=deployments,
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=PAGE,
            offset=len(found),
        )
        found.extend(page)
        if len(page) < PAGE:
            return found


def admit(
    run_id: str,
    deployment_id: str | None,
    event: dict[str, Any] | None,
    logger: logging.LoggerAdapter[Any] | logging.Logger,
) -> None:
    """Take this run's event, or raise Duplicate: another run of the deployment already took it."""
    from prefect.client.schemas.filters import FlowRunFilterId, FlowRunFilterTags  # start-up: +2.2 s (Prefect)

    identity = event_id(event)
    if not identity or run_id == "local":
        return
    tag = TAG + identity
    with prefect_client() as client:
        others = read_runs(
            client,
            deployment_id,
            tags=FlowRunFilterTags(all_=[tag]),
            id=FlowRunFilterId(not_any_=[UUID(run_id)]),
        )
        if others:
            raise Duplicate(identity, others[0])
        mine = client.read_flow_run(UUID(run_id))
        client.update_flow_run(UUID(run_id), tags=[*mine.tags, tag])
    logger.info("event %s: this run takes it (tagged %s)", identity, tag)


def _by_target(runs: list[Any]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for run in runs:
        groups.setdefault(target_of(run.parameters["event"]), []).append(run)
    return groups


def _not_due_soon(group: list[Any]) -> list[Any]:
    """The runs of ``group`` no worker asks for before the folder is done, and the newest (it stays queued).

    A worker makes Pending only runs due within its prefetch (PREFECT_WORKER_PREFETCH_SECONDS, 10 s by
    default: prefect/workers/base.py ``get_scheduled_flow_runs``), and a run that met the held slot was sent back
    PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS (30 s) later. A run due later than the prefetch and
    a margin cannot start while it is folded, even if the running run ends meanwhile."""
    from prefect.settings import get_current_settings  # start-up: +2.2 s (Prefect)

    horizon = datetime.now(UTC) + timedelta(seconds=get_current_settings().worker.prefetch_seconds + FOLD_MARGIN)
    newest = max(group, key=lambda r: (_occurred(r), r.created or datetime.min))
    return [r for r in group if r is newest or (r.expected_start_time and r.expected_start_time > horizon)]


def _occurred(run: Any) -> str:
    return str(((run.parameters or {}).get("event") or {}).get("occurred") or "")


def _span(run: Any) -> dict[str, Any]:
    """The events a queued run stands for: its own, and those folded into it before."""
    event = (run.parameters or {}).get("event") or {}
    folded = (run.parameters or {}).get("folded") or {}
    return {
        "count": int(folded.get("count") or 0) + 1,
        "first_event_id": folded.get("first_event_id") or event.get("id"),
        "first_occurred": folded.get("first_occurred") or event.get("occurred"),
    }


class Folder:
    """`vicflow listen`'s folding thread: every FOLD_SECONDS it folds the queued runs of every deployment whose
    runs queue (a concurrency limit of 1), per target, never one that may be starting (the module's docstring)."""

    def __init__(self, logger: logging.Logger):
        self.log = logger
        self.folded = 0
        self.duplicates = 0

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(FOLD_SECONDS):
            try:
                self.once()
            except Exception as exc:  # folding saves work; what is not folded now still runs, or is folded later
                self.log.warning("could not fold the queued runs: %s", masking.mask(str(exc))[:300])

    def once(self) -> None:
        with prefect_client() as client:
            self.fold_all(client)

    def fold_all(self, client) -> None:
        by_deployment: dict[UUID, list[Any]] = {}
        for run in self.queued(client):
            by_deployment.setdefault(run.deployment_id, []).append(run)
        for deployment_id, runs in by_deployment.items():
            groups = _by_target(runs)
            if all(len(group) < 2 for group in groups.values()):
                continue
            limit = client.read_deployment(deployment_id).global_concurrency_limit
            if limit is None or limit.limit != 1:
                continue  # its runs do not queue: each may start at any moment, none is folded
            lease = self.take_slot(client, limit.name)
            if lease is None:  # a run holds the slot: fold what no worker can make Pending when it ends
                for target, group in groups.items():
                    self.fold(client, target, _not_due_soon(group))
                continue
            try:  # holding the slot, no queued run can start: what is read now stays queued
                for target, group in _by_target(self.queued(client, deployment_id)).items():
                    self.fold(client, target, group)
            finally:
                client.release_concurrency_slots_with_lease(lease)

    def queued(self, client, deployment_id: UUID | None = None) -> list[Any]:
        """Runs started by an event that wait due now (not a schedule's future runs), oldest first."""
        from prefect.client.schemas.filters import (  # start-up: +2.2 s (Prefect)
            FlowRunFilterExpectedStartTime,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        runs = read_runs(
            client,
            str(deployment_id) if deployment_id else None,
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC) + timedelta(minutes=1)),
        )
        return [r for r in runs if r.deployment_id and target_of((r.parameters or {}).get("event"))]

    def take_slot(self, client, limit: str) -> UUID | None:
        """The deployment's one concurrency slot, as a run going Pending takes it (Prefect's
        SecureFlowConcurrencySlots): while the folder holds it, a worker's Pending is sent back to the queue
        (AwaitingConcurrencySlot), so no run it folds is starting. None: a run holds it. The lease is Prefect's
        shortest (60 s): a listener killed while folding holds the queue that long."""
        from prefect.exceptions import PrefectHTTPStatusError  # start-up: +2.2 s (Prefect)

        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[limit], slots=1, mode="concurrency", lease_duration=60
            )
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 423:  # Locked: the slot is taken
                return None
            raise
        return UUID(response.json()["lease_id"])

    def fold(self, client, target: str, runs: list[Any]) -> None:
        if len(runs) < 2:
            return
        taken: set[str] = set()
        distinct = []
        for run in sorted(runs, key=lambda r: (r.created or datetime.min, str(r.id))):
            identity = event_id((run.parameters or {}).get("event"))
            if identity in taken:
                if self.end(client, run, "Duplicate", f"event {identity} is already queued in another run"):
                    self.duplicates += 1
                    metrics.dropped("queued")
            else:
                taken.add(identity)
                distinct.append(run)
        if len(distinct) < 2:
            return
        distinct.sort(key=lambda r: (_occurred(r), r.created or datetime.min))
        newest, older = distinct[-1], distinct[:-1]
        spans = [_span(r) for r in distinct]
        first = min(spans, key=lambda s: str(s["first_occurred"] or ""))
        own = (newest.parameters or {}).get("event") or {}
        folded = {
            "count": sum(s["count"] for s in spans) - 1,
            "first_event_id": first["first_event_id"],
            "first_occurred": first["first_occurred"],
            "last_event_id": own.get("id"),
            "last_occurred": own.get("occurred"),
        }
        # the newest counts them first: a death in between counts an event twice, never loses one
        client.update_flow_run(newest.id, parameters={**(newest.parameters or {}), "folded": folded})
        for run in older:
            identity = event_id((run.parameters or {}).get("event"))
            message = f"folded into flow run {newest.name} ({newest.id}): a newer event for {target} is queued"
            if self.end(client, run, "Folded", message, tag=TAG + identity):
                self.folded += 1
                metrics.folded()
                self.emit(target, run, newest, folded)
        self.log.info(
            "folded %d queued run(s) for %s into flow run %s, which acts on the latest event (%d folded in all)",
            len(older),
            target,
            newest.name,
            folded["count"],
        )

    def end(self, client, run: Any, name: str, message: str, tag: str | None = None) -> bool:
        """Cancel a queued run; False when it had ended already (the other listener's folder was first)."""
        from prefect.client.schemas.objects import StateType  # start-up: +2.2 s (Prefect)
        from prefect.client.schemas.responses import SetStateStatus
        from prefect.states import Cancelled

        if tag:  # the event was taken care of: a later delivery of it is a duplicate
            client.update_flow_run(run.id, tags=[*run.tags, tag])
        result = client.set_flow_run_state(run.id, Cancelled(name=name, message=message))
        if result.status != SetStateStatus.ACCEPT or (result.state and result.state.type != StateType.CANCELLED):
            self.log.debug("%s was not cancelled (%s): it ended or started meanwhile", run.name, result.status)
            return False
        return True

    def emit(self, target: str, run: Any, into: Any, folded: dict[str, Any]) -> None:
        from prefect.events import emit_event  # start-up: +2.2 s (Prefect)

        event = (run.parameters or {}).get("event") or {}
        emit_event(
            event="vicflow.events.folded",
            id=uuid5(NAMESPACE, str(run.id)),  # two folders announcing one fold: Prefect keeps one
            resource={
                "prefect.resource.id": f"vicflow.target.{target}",
                "vicflow.target": target,
                "vicflow.event-id": str(event.get("id") or ""),
            },
            payload={
                "event_id": event.get("id"),
                "event": event.get("event"),
                "folded_run": str(run.id),
                "into_run": str(into.id),
                "count": folded["count"],
                "first_event_id": folded["first_event_id"],
                "last_event_id": folded["last_event_id"],
            },
        )
