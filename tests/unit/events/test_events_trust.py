"""normalise(trusted=False): what the app stream may carry. Only app records and Pinpoint app-event shapes, and
never an event type reserved for the trusted routes (docs/security.md, "Who may write what")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.consumer_settings import ConsumerSettings, is_trusted_source
from functions.events.normalise import RESERVED_EVENT_TYPES, normalise, reserved_type_reason

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODE = IdentityMode.USER_OR_ENDPOINT
APP = "arn:aws:kinesis:eu-west-1:123456789012:stream/events-app-stream"
TRUSTED = "arn:aws:kinesis:eu-west-1:123456789012:stream/events-stream"


def app(event_type: str) -> str:
    return json.dumps({"schema": "engagement-loop/v1", "event_type": event_type, "user_id": "u1",
                       "event_time_ms": 1_764_000_000_000})


def pinpoint(name: str, event_type: str | None = None) -> str:
    record = json.loads((FIXTURES / "pinpoint" / f"{name}.json").read_text())
    if event_type:
        record["event_type"] = event_type
    return json.dumps(record)


@pytest.mark.parametrize("event_type", ["trk_x", "TRK_purchase", "_email.open", "_EMAIL.open", "_email.click",
                                        "_SMS.SUCCESS", "_sms.buffered", "_custom.recommender",
                                        "_CUSTOM.Recommender"])
def test_an_app_record_of_a_reserved_type_is_rejected_from_the_app_stream(event_type):
    result = normalise(app(event_type), identity_mode=MODE, trusted=False)
    assert isinstance(result, Rejected)
    assert result.reason.startswith(f"app record on the app stream: event type {event_type!r} is reserved")
    assert result.reason.endswith("apps write to the app stream, which may not carry it")
    assert isinstance(normalise(app(event_type), identity_mode=MODE), CanonicalEvent)  # trusted: as today


@pytest.mark.parametrize("event_type", ["purchase", "_custom.recommender_click", "_session.stop", "email.open",
                                        "trk", "_custom.view"])
def test_an_app_record_of_an_ordinary_type_is_accepted_from_the_app_stream(event_type):
    assert isinstance(normalise(app(event_type), identity_mode=MODE, trusted=False), CanonicalEvent)


@pytest.mark.parametrize("name", sorted(p.stem for p in (FIXTURES / "ses").glob("*.json")))
def test_every_ses_event_is_rejected_from_the_app_stream(name):
    raw = (FIXTURES / "ses" / f"{name}.json").read_text()
    result = normalise(raw, identity_mode=MODE, trusted=False)
    assert isinstance(result, Rejected)
    assert result.reason.startswith("SES event on the app stream: only the SES/Pinpoint routes may send SES events")
    assert isinstance(normalise(raw, identity_mode=MODE), CanonicalEvent)


@pytest.mark.parametrize("name, accepted", [
    ("app_session_stop", True),
    # Pinpoint's own campaign and journey events: only Pinpoint knows a send happened.
    ("campaign_send", False), ("journey_send", False),
    ("email_click", False), ("email_open", False), ("email_send", False), ("sms_success", False),
])
def test_pinpoint_shapes_from_the_app_stream_are_accepted_only_for_app_event_types(name, accepted):
    result = normalise(pinpoint(name), identity_mode=MODE, trusted=False)
    assert isinstance(result, CanonicalEvent) is accepted, result
    if not accepted:
        assert result.reason.startswith("Pinpoint record on the app stream: event type")


def test_a_forged_pinpoint_exposure_is_rejected_naming_the_exposures_function():
    result = normalise(pinpoint("app_session_stop", "_custom.recommender"), identity_mode=MODE, trusted=False)
    assert isinstance(result, Rejected)
    assert "only the exposures function may send it" in result.reason


def test_the_reserved_list_is_lower_case_and_each_entry_names_its_senders():
    assert {r.name for r in RESERVED_EVENT_TYPES} == {"_email.", "_sms.", "_custom.recommender", "trk_",
                                                      "_campaign.", "_journey."}
    assert all(r.name == r.name.lower() and r.senders for r in RESERVED_EVENT_TYPES)
    assert reserved_type_reason("purchase") is None


@pytest.mark.parametrize("source, app_stream, trusted", [
    (TRUSTED, APP, True),
    (APP, APP, False),
    (APP + "/consumer/fanout:1700000000", APP, False),
    (None, APP, False),    # with two streams, a record naming none is not trusted
    ("", APP, False),
    (APP, "", True),       # no app stream: today's single trusted stream
    (None, "", True),
])
def test_trust_is_decided_by_the_source_stream(source, app_stream, trusted):
    assert is_trusted_source(source, app_stream) is trusted
    assert ConsumerSettings(app_stream_arn=app_stream).trusts(source) is trusted


def test_an_app_cannot_take_the_id_of_a_trusted_event():
    """The rules engine and the event tracker drop a second event with the same id: an app sending the id of a
    real SES click would otherwise make the real one a 'duplicate'."""
    forged = json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "user_id": "u1",
                         "event_time_ms": 1_764_000_000_000, "event_id": "ses-0123abcd"})
    from_app = normalise(forged, identity_mode=MODE, trusted=False)
    from_route = normalise(forged, identity_mode=MODE, trusted=True)
    assert isinstance(from_app, CanonicalEvent) and isinstance(from_route, CanonicalEvent)
    assert from_route.event_id == "ses-0123abcd"
    assert from_app.event_id == "app/ses-0123abcd"
    # Still deterministic, so a producer's retry of the record is recognised as the same event.
    assert normalise(forged, identity_mode=MODE, trusted=False).event_id == from_app.event_id


@pytest.mark.parametrize("event_type", ["_campaign.opened_notification", "_campaign.send", "_journey.delivered"])
def test_push_engagement_is_reserved_unless_the_stack_lets_apps_report_that_exact_type(event_type):
    """A forged push open naming someone else's endpoint and campaign credits their exposed item in training."""
    assert isinstance(normalise(app(event_type), identity_mode=MODE, trusted=False), Rejected)
    allowed = frozenset({"_campaign.opened_notification"})
    result = normalise(app(event_type), identity_mode=MODE, trusted=False, app_may_report=allowed)
    assert isinstance(result, CanonicalEvent) is (event_type in allowed)


@pytest.mark.parametrize("value, problem", [
    ("_email.open", "never the app's"), ("_custom.recommender", "never the app's"), ("trk_x", "never the app's"),
    ("_campaign.*", "exact types"), ("purchase", "exact types"),
])
def test_only_exact_push_types_may_be_let_through(value, problem):
    with pytest.raises(ValueError, match="APP_MAY_REPORT") as raised:
        ConsumerSettings.from_env({"APP_MAY_REPORT": f"_campaign.opened_notification,{value}"})
    assert problem in str(raised.value)
    assert ConsumerSettings.from_env({"APP_MAY_REPORT": " _campaign.opened_notification , _journey.opened_notification"}
                                     ).app_may_report == {"_campaign.opened_notification", "_journey.opened_notification"}
