"""The delivery check: every event `vicflow listen` emitted that an automation covers gets its run, or is sent again.

Once Prefect has an event, two of its stages can drop it without a retry. The triggers service moves an event
whose evaluation failed three times to a dead-letter folder (prefect/server/utilities/messaging/memory.py
``Subscription.retry``). An automation action that failed is not retried (prefect/server/events/actions.py
``consumer``: "ActionFailed errors are expected errors and will not be retried"). Both happen while the server's
database is away or starved (docs/decisions.md).

So the listener keeps what it emitted. ``wait`` seconds later it asks Prefect about each event. Which
automations cover it? The check keeps to reactive event triggers of threshold 1 with a run-deployment action
that passes the event as a parameter, and judges cover with Prefect's own ``EventTrigger.covers``. Is there a run
of that deployment whose ``event`` is this one? If not, it emits the event again under a derived id, which
names the original in ``payload.redelivery_of``. The derived id is the same in every listener, so Prefect's
triggers drop a second listener's copy. The runs' intake reads the original's id as the event's identity
(flows/events/intake.py ``event_id``): when a run Prefect was only late with meets the redelivery's run, one
acts and the other ends "Duplicate". After ``tries`` deliveries without a run, the check says so and stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

from vicflow.flows.events import intake
from vicflow.flows.observability import metrics
from vicflow.plugins import masking

WAIT_SECONDS = 120.0  # a run Prefect is merely slow with (a loaded server's trigger) comes well within this
CHECK_SECONDS = 5.0
TRIES = 3  # deliveries of one event in all
PENDING = 100_000  # events kept for the check; beyond that the oldest are checked no more (and logged)
NAMESPACE = UUID("5f0c2d8e-6a43-4f0e-9d0e-3b1f0c7a9e21")  # of the ids of events sent again


class DeliveryCheck:
    """`vicflow listen`'s check thread: ``emitted`` takes each event as it is sent; every CHECK_SECONDS the events
    older than ``wait`` are checked against the runs of the deployments whose automations cover them."""

    def __init__(
        self,
        logger: logging.Logger,
        emit: Callable[[dict[str, Any]], None],
        wait: float = WAIT_SECONDS,
        tries: int = TRIES,
    ):
        self.log, self.emit, self.wait, self.tries = logger, emit, wait, tries
        self.pending: deque[tuple[float, int, dict[str, Any]]] = deque()  # (due, delivery number, event)
        self.lock = threading.Lock()
        self.given_up = 0

    def emitted(self, event: dict[str, Any], delivery: int = 1) -> None:
        with self.lock:
            self.pending.append((time.monotonic() + self.wait, delivery, event))
            while len(self.pending) > PENDING:
                _, _, dropped = self.pending.popleft()
                self.log.warning("too many events to check: event %s is not checked for its run", dropped["id"])

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(CHECK_SECONDS):
            due = self.take_due()
            if not due:
                continue
            try:
                self.check(due)
            except Exception as exc:  # Prefect away: check them again on the next pass
                self.log.warning("could not check the runs of %d event(s): %s", len(due), masking.mask(str(exc))[:300])
                with self.lock:
                    self.pending.extendleft(reversed(due))

    def take_due(self) -> list[tuple[float, int, dict[str, Any]]]:
        now, due = time.monotonic(), []
        with self.lock:
            while self.pending and self.pending[0][0] <= now:
                due.append(self.pending.popleft())
        return due

    def check(self, due: list[tuple[float, int, dict[str, Any]]]) -> None:
        with intake.prefect_client() as client:
            watched = self.watched(client)
            if not watched:
                return
            sent = min(at for at, _, _ in due) - self.wait  # the oldest's, on this clock
            since = datetime.now(UTC) - timedelta(seconds=time.monotonic() - sent + 60)  # 60: the hosts' clocks
            taken = {deployment: self.taken(client, deployment, since) for _, deployment, _ in watched}
            for _, delivery, event in due:
                received = _received(event)
                missing = [
                    f"deployment {deployment} (automation {automation!r})"
                    for trigger, deployment, automation in watched
                    if trigger.covers(received) and intake.event_id(event) not in taken[deployment]
                ]
                if missing:
                    self.missed(event, delivery, missing)

    def watched(self, client) -> list[tuple[Any, UUID, str]]:
        """(trigger, deployment, name) of each enabled automation whose runs the check can find: a reactive event
        trigger of threshold 1 and a run-deployment action of a chosen deployment that passes ``event``."""
        from prefect.events.actions import RunDeployment  # start-up: +5 s (Prefect's server schemas), measured
        from prefect.events.schemas.automations import EventTrigger
        from prefect.server.events.schemas.automations import EventTrigger as ServerTrigger

        watched = []
        for automation in client.read_automations():
            trigger = automation.trigger
            if not automation.enabled or not isinstance(trigger, EventTrigger):
                continue
            if trigger.posture != "Reactive" or trigger.threshold != 1:
                continue
            covers = ServerTrigger.model_validate(trigger.model_dump(mode="json"))  # Prefect's own matching
            for action in automation.actions:
                if isinstance(action, RunDeployment) and action.deployment_id and "event" in (action.parameters or {}):
                    watched.append((covers, action.deployment_id, automation.name))
        return watched

    def taken(self, client, deployment: UUID, since: datetime) -> set[str]:
        """The events the deployment's runs carry, of the runs due since ``since`` (a run is due when it is made,
        or later if it waits for its slot: never before its event was sent)."""
        from prefect.client.schemas.filters import FlowRunFilterExpectedStartTime  # start-up: +2.2 s (Prefect)

        after = FlowRunFilterExpectedStartTime(after_=since)
        runs = intake.read_runs(client, str(deployment), expected_start_time=after)
        return {intake.event_id((r.parameters or {}).get("event")) for r in runs}

    def missed(self, event: dict[str, Any], delivery: int, deployments: list[str]) -> None:
        original = intake.event_id(event)
        about = f"event {original} ({event['event']} for {event['resource'].get('prefect.resource.id')})"
        where = ", ".join(deployments)
        if delivery >= self.tries:
            self.given_up += 1
            self.log.error(
                "%s has no run of %s after %d deliveries: Prefect's server did not act on it; look for "
                "'Action failed' or a dead-letter folder (PREFECT_HOME/dlq) in the server's log",
                about,
                where,
                delivery,
            )
            return
        again = {
            **event,
            "id": uuid5(NAMESPACE, f"{original}/{delivery + 1}"),
            "payload": {**(event.get("payload") or {}), "redelivery_of": original},
        }
        self.log.warning(
            "%s has no run of %s %.0fs after it was sent: sending it again as %s", about, where, self.wait, again["id"]
        )
        self.emit(again)
        metrics.redelivered()
        self.emitted(again, delivery + 1)


def _received(event: dict[str, Any]) -> Any:
    from prefect.server.events.schemas.events import ReceivedEvent  # start-up: as ``watched``

    return ReceivedEvent(
        event=event["event"],
        resource=event["resource"],
        payload=event.get("payload") or {},
        id=event["id"],
        occurred=event.get("occurred") or datetime.now(UTC),
        received=datetime.now(UTC),
    )
