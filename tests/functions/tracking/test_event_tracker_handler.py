"""The event-tracker Lambda end to end: a Kinesis batch in, PutEvents calls out (checked by botocore's Stubber
against the personalize-events API model; moto does not implement it), a partial batch response back."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.config import Config
from botocore.stub import Stubber

from functions.events.canonical import CanonicalEvent, IdentityMode
from functions.events.normalise import normalise
from functions.tracking import event_tracker
from functions.tracking.event_tracker import PersonalizeEventTracker, lambda_handler
from functions.tracking.exposures import Exposure

TRACKING_ID = "a1b2c3d4-e5f6-7a8b-9c0d-1e2f3a4b5c6d"
SCORING = {"_email.click": 100, "_email.open": 50, "purchase": 200, "_SMS.SUCCESS": 1}
ARRIVAL_SECONDS = 1_764_000_000.25


@pytest.fixture
def stubber(monkeypatch) -> Stubber:
    """The function's tracker, on a personalize-events client answered by a Stubber (no botocore retries, so
    every stubbed answer is one PutEvents call)."""
    monkeypatch.setenv("TRACKING_ID", TRACKING_ID)
    monkeypatch.setenv("SCORING", json.dumps(SCORING))
    client = boto3.client("personalize-events", region_name="us-east-1",
                          config=Config(retries={"total_max_attempts": 1}))
    monkeypatch.setattr(event_tracker, "_tracker", lambda: PersonalizeEventTracker(client, TRACKING_ID))
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def app_event(user_id: str, item_id: str | None, *, event_type: str = "purchase", n: int = 0,
              endpoint_id: str | None = None) -> bytes:
    record: dict[str, Any] = {"schema": "engagement-loop/v1", "event_type": event_type, "user_id": user_id,
                              "event_time_ms": 1_763_990_000_000 + n, "event_id": f"evt-{user_id}-{n}"}
    if item_id:
        record["item_id"] = item_id
    if endpoint_id:
        record["endpoint_id"] = endpoint_id
    return json.dumps(record).encode()


def canonical(data: bytes, arrival_ms: int, mode: IdentityMode = IdentityMode.USER_OR_ENDPOINT) -> CanonicalEvent:
    event = normalise(data, identity_mode=mode, arrival_time_ms=arrival_ms)
    assert isinstance(event, CanonicalEvent)
    return event


def arrival(index: int) -> datetime:
    """The approximate arrival time `make_kinesis_event` gives record `index`."""
    return datetime.fromtimestamp(round((ARRIVAL_SECONDS + index / 1000) * 1000) / 1000, tz=timezone.utc)


def expected_call(user_id: str, session_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"trackingId": TRACKING_ID, "userId": user_id, "sessionId": session_id, "eventList": events}


def sequence(index: int) -> str:
    return f"4958{index:020d}"


def test_mixed_batch_sends_only_scored_events_with_user_and_item(stubber, load_json, make_kinesis_event, context):
    click = load_json("pinpoint", "email_click")
    click["attributes"]["item_id"] = "sku-42"  # the sender tagged the message with the item it promoted
    click_bytes = json.dumps(click).encode()
    exposure = Exposure(endpoint_id="e1", item_id="sku-1", personalize_user_id="u1", user_id="u1",
                        campaign_id="c1", send_id="s1", event_time_ms=1_763_990_000_000)
    payloads = [
        app_event("u1", "sku-1", n=1),                                   # 0 sent
        click_bytes,                                                     # 1 sent (user = endpoint)
        json.dumps(load_json("pinpoint", "email_open")).encode(),        # 2 scored, no item
        exposure.to_stream_record().data,                                # 3 not scored
        json.dumps(load_json("pinpoint", "sms_success")).encode(),       # 4 scored, no user
        b"\xff not json",                                                # 5 unparseable
        app_event("u1", "sku-1", n=1),                                   # 6 duplicate delivery of 0
        app_event("u1", None, n=2),                                      # 7 scored, no item
        app_event("u1", "sku-9", event_type="page_view", n=3),           # 8 not scored
    ]
    purchase = canonical(payloads[0], int(ARRIVAL_SECONDS * 1000))
    click_event = canonical(click_bytes, 0)
    endpoint = "49c1413e-a69c-46dc-b1c4-6470eexample"
    stubber.add_response("put_events", {}, expected_call("u1", "u1", [
        {"eventId": purchase.event_id, "eventType": "purchase", "eventValue": 200.0, "itemId": "sku-1",
         "sentAt": arrival(0)},
    ]))
    stubber.add_response("put_events", {}, expected_call(endpoint, endpoint, [
        {"eventId": click_event.event_id, "eventType": "_email.click", "eventValue": 100.0, "itemId": "sku-42",
         # Every source arrives when Kinesis says (docs/events.md), the interactions dataset's TIMESTAMP
         "sentAt": arrival(1)},
    ]))

    response = lambda_handler(make_kinesis_event(payloads, arrival_seconds=ARRIVAL_SECONDS), context)

    assert response == {"batchItemFailures": []}


def test_events_are_grouped_per_user_and_session_at_most_ten_per_call(stubber, make_kinesis_event, context):
    payloads = []
    for n in range(23):
        payloads.append(app_event("u1", f"sku-{n}", n=n, endpoint_id="e1"))
        if n in (0, 5):
            payloads.append(app_event("u2", f"sku-{n}", n=n))
    events = [canonical(p, 0) for p in payloads]
    positions = {event.event_id: index for index, event in enumerate(events)}

    def entry(event: CanonicalEvent) -> dict[str, Any]:
        return {"eventId": event.event_id, "eventType": "purchase", "eventValue": 200.0, "itemId": event.item_id,
                "sentAt": arrival(positions[event.event_id])}

    u1 = [e for e in events if e.user_id == "u1"]
    u2 = [e for e in events if e.user_id == "u2"]
    # Calls in order of their first event: u1 (events 0-9), u2 (both), u1 (10-19), u1 (20-22).
    stubber.add_response("put_events", {}, expected_call("u1", "e1", [entry(e) for e in u1[:10]]))
    stubber.add_response("put_events", {}, expected_call("u2", "u2", [entry(e) for e in u2]))
    stubber.add_response("put_events", {}, expected_call("u1", "e1", [entry(e) for e in u1[10:20]]))
    stubber.add_response("put_events", {}, expected_call("u1", "e1", [entry(e) for e in u1[20:]]))

    assert lambda_handler(make_kinesis_event(payloads, arrival_seconds=ARRIVAL_SECONDS), context) == {
        "batchItemFailures": []}


def test_a_sink_error_fails_that_call_and_the_rest_of_the_batch(stubber, make_kinesis_event, context):
    payloads = [app_event("u1", "a", n=0), app_event("u2", "b", n=1), app_event("u1", "c", n=2),
                app_event("u3", "d", n=3), app_event("u4", None, n=4)]
    events = [canonical(p, 0) for p in payloads]

    def entry(index: int) -> dict[str, Any]:
        return {"eventId": events[index].event_id, "eventType": "purchase", "eventValue": 200.0,
                "itemId": events[index].item_id, "sentAt": arrival(index)}

    stubber.add_response("put_events", {}, expected_call("u1", "u1", [entry(0), entry(2)]))
    stubber.add_client_error("put_events", service_error_code="ThrottlingException", http_status_code=400,
                             expected_params=expected_call("u2", "u2", [entry(1)]))

    response = lambda_handler(make_kinesis_event(payloads, arrival_seconds=ARRIVAL_SECONDS), context)

    # u2's call failed; u3's was never sent. u1's records went through, u4's has no item (skipped).
    assert response == {"batchItemFailures": [{"itemIdentifier": sequence(1)}, {"itemIdentifier": sequence(3)}]}


def test_events_personalize_refuses_are_skipped_not_retried(stubber, make_kinesis_event, context):
    payloads = [app_event("u1", "a", n=0), app_event("u2", "b", n=1)]
    events = [canonical(p, 0) for p in payloads]
    stubber.add_client_error("put_events", service_error_code="InvalidInputException", http_status_code=400)
    stubber.add_response("put_events", {}, expected_call("u2", "u2", [
        {"eventId": events[1].event_id, "eventType": "purchase", "eventValue": 200.0, "itemId": "b",
         "sentAt": arrival(1)}]))

    assert lambda_handler(make_kinesis_event(payloads, arrival_seconds=ARRIVAL_SECONDS), context) == {
        "batchItemFailures": []}


def test_a_batch_that_failed_entirely_is_retried_whole(stubber, make_kinesis_event, context):
    stubber.add_client_error("put_events", service_error_code="ServiceUnavailable", http_status_code=503)

    with pytest.raises(BatchProcessingError):
        lambda_handler(make_kinesis_event([app_event("u1", "a")], arrival_seconds=ARRIVAL_SECONDS), context)


def test_identity_mode_user_leaves_endpoint_only_events_without_user(stubber, monkeypatch, load_json,
                                                                    make_kinesis_event, context):
    monkeypatch.setenv("IDENTITY_MODE", "user")
    click = load_json("pinpoint", "email_click")
    click["attributes"]["item_id"] = "sku-42"

    # No PutEvents call is stubbed: any call would fail the test.
    assert lambda_handler(make_kinesis_event([json.dumps(click).encode()]), context) == {"batchItemFailures": []}


def test_missing_environment_is_named(monkeypatch, make_kinesis_event, context):
    monkeypatch.delenv("TRACKING_ID", raising=False)
    monkeypatch.delenv("SCORING", raising=False)

    with pytest.raises(ValueError, match="TRACKING_ID is missing.*SCORING is missing"):
        lambda_handler(make_kinesis_event([app_event("u1", "a")]), context)
