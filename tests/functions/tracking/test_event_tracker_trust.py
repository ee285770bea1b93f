"""The event tracker trusts a record by the stream it was read from (`eventSourceARN`): a forged email
engagement on the app stream is never sent to Personalize, the same record on the trusted stream is."""

from __future__ import annotations

import json

from functions.tracking.event_tracker import Skip, TrackerSettings, lambda_handler
import pytest
from botocore.stub import Stubber

from tests.functions.tracking import test_event_tracker_handler as handler_tests
from tests.functions.tracking.conftest import REGION
from tests.functions.tracking.test_event_tracker_handler import (
    ARRIVAL_SECONDS,
    SCORING,
    TRACKING_ID,
    arrival,
    expected_call,
)



@pytest.fixture
def stubber(monkeypatch) -> Stubber:
    """The handler tests' tracker: PutEvents answered by botocore's Stubber, every call checked."""
    yield from handler_tests.stubber.__wrapped__(monkeypatch)

TRUSTED_STREAM = f"arn:aws:kinesis:{REGION}:123456789012:stream/engagement-events"
APP_STREAM = f"arn:aws:kinesis:{REGION}:123456789012:stream/engagement-app-events"


def forged_click(load_json) -> bytes:
    click = load_json("pinpoint", "email_click")
    click["attributes"]["item_id"] = "sku-42"
    return json.dumps(click).encode()


def test_a_forged_click_on_the_app_stream_is_never_sent(stubber, load_json, make_kinesis_event, context,
                                                        monkeypatch, capsys):
    monkeypatch.setenv("APP_STREAM_ARN", APP_STREAM)
    event = make_kinesis_event([forged_click(load_json)], arrival_seconds=ARRIVAL_SECONDS, stream_arn=APP_STREAM)

    assert lambda_handler(event, context) == {"batchItemFailures": []}  # no stubbed call: nothing sent
    assert '"RecordsRejected":[1.0]' in capsys.readouterr().out.replace(" ", "")


def test_the_same_click_on_the_trusted_stream_is_sent(stubber, load_json, make_kinesis_event, context, monkeypatch):
    monkeypatch.setenv("APP_STREAM_ARN", APP_STREAM)
    click = json.loads(forged_click(load_json))
    endpoint = click["client"]["client_id"]
    stubber.add_response("put_events", {}, expected_call(endpoint, endpoint, [
        {"eventId": _event_id(forged_click(load_json)), "eventType": "_email.click", "eventValue": 100.0,
         "itemId": "sku-42", "sentAt": arrival(0)}]))
    event = make_kinesis_event([forged_click(load_json)], arrival_seconds=ARRIVAL_SECONDS, stream_arn=TRUSTED_STREAM)

    assert lambda_handler(event, context) == {"batchItemFailures": []}


def test_settings_read_the_app_stream_arn():
    settings = TrackerSettings.from_env({"TRACKING_ID": TRACKING_ID, "SCORING": json.dumps(SCORING),
                                         "APP_STREAM_ARN": APP_STREAM})
    assert settings.app_stream_arn == APP_STREAM
    assert Skip.UNPARSEABLE.value == "RecordsRejected"


def _event_id(data: bytes) -> str:
    from functions.events.canonical import CanonicalEvent, IdentityMode
    from functions.events.normalise import normalise

    event = normalise(data, identity_mode=IdentityMode.USER_OR_ENDPOINT)
    assert isinstance(event, CanonicalEvent)
    return event.event_id
