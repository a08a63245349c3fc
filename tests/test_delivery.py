"""The delivery check's decisions, without a server: an event with no run is sent again under an id every
listener derives alike, naming the first; the intake treats both as one event; after three deliveries it says so
and stops. The whole path, with Prefect losing an event for real (its database stopped), is in
tests/test_event_intake.py."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from vicflow.flows.events import delivery, intake


def died(event_id: uuid.UUID) -> dict:
    return {
        "event": "docker.container.died",
        "id": event_id,
        "resource": {"prefect.resource.id": "docker.testbed.container.web"},
        "payload": {"exit_code": "1"},
        "occurred": datetime.now(UTC),
    }


def checks(count: int) -> tuple[list[delivery.DeliveryCheck], list[dict]]:
    sent: list[dict] = []
    return [delivery.DeliveryCheck(logging.getLogger("test"), sent.append, wait=60) for _ in range(count)], sent


def test_an_event_without_its_run_is_sent_again_as_one_copy_whichever_listener_sends_it(caplog):
    first = uuid.uuid4()
    (one, other), sent = checks(2)
    with caplog.at_level(logging.WARNING):
        one.missed(died(first), 1, ["deployment d1 (automation 'heal')"])
        other.missed(died(first), 1, ["deployment d1 (automation 'heal')"])
    assert sent[0]["id"] == sent[1]["id"] != first, "two listeners send the same copy: Prefect keeps one"
    assert sent[0]["payload"] == {"exit_code": "1", "redelivery_of": str(first)}
    assert sent[0]["resource"] == died(first)["resource"] and sent[0]["event"] == "docker.container.died"
    assert intake.event_id(sent[0]) == intake.event_id(died(first)) == str(first), "one event to the intake"
    assert f"event {first} (docker.container.died for docker.testbed.container.web) has no run of deployment d1" in (
        caplog.text
    )
    assert [(n, e["id"]) for _, n, e in one.pending] == [(2, sent[0]["id"])], "the copy is checked in its turn"


def test_a_third_delivery_without_a_run_is_reported_and_not_sent_again(caplog):
    first = uuid.uuid4()
    [check], sent = checks(1)
    check.missed(died(first), 1, ["deployment d1 (automation 'heal')"])
    again = sent[-1]
    check.missed(again, 2, ["deployment d1 (automation 'heal')"])
    assert intake.event_id(sent[-1]) == str(first) and sent[-1]["id"] != again["id"]
    with caplog.at_level(logging.ERROR):
        check.missed(sent[-1], 3, ["deployment d1 (automation 'heal')"])
    assert len(sent) == 2 and check.given_up == 1
    assert f"event {first} (docker.container.died" in caplog.text and "after 3 deliveries" in caplog.text
    assert "PREFECT_HOME/dlq" in caplog.text, "the error says where to look"
