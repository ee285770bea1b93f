"""Pinpoint event-stream records (the Developer Guide's documented samples) → canonical events."""

from __future__ import annotations

import json
import re

import pytest

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode, Rejected
from functions.events.normalise import normalise

USER = IdentityMode.USER
USER_OR_ENDPOINT = IdentityMode.USER_OR_ENDPOINT

# sample → (event_type, event_time_ms, arrival_time_ms, endpoint_id, campaign_id, journey_id)
# (no Kinesis arrival time given: the record's arrival_timestamp stands in). Email events happen when Pinpoint
# received them (arrival_timestamp); their event_timestamp is the send time of the message.
EXPECTED = {
    "app_session_stop": (
        "_session.stop", 1487973802507, 1487973803515, "m3n4o5p6-a1b2-c3d4-e5f6-g7h8i9j0k1l2", None, None
    ),
    "campaign_send": (
        "_campaign.send",
        1562109497426,
        1562109497494,
        "d8dcf7c5-e81a-48ae-8313-f540cexample",
        "4f8d6097c2e8400fa3081d875example",
        None,
    ),
    "email_click": ("_email.click", 1564618713751, 1564618713751, "49c1413e-a69c-46dc-b1c4-6470eexample", None, None),
    "email_delivered": (
        "_email.delivered", 1564618622690, 1564618622690, "e9a3000d-daa2-40dc-ac47-1cd34example", None, None
    ),
    "email_open": ("_email.open", 1564618712316, 1564618712316, "8dc1f651-b3ec-46fc-9b67-2a050example", None, None),
    "email_send": ("_email.send", 1564618622025, 1564618622025, "9a311b17-6f8e-4093-be61-4d0bbexample", None, None),
    "journey_send": (
        "_journey.send",
        1572989078843,
        1572989078843,
        "d8dcf7c5-e81a-48ae-8313-f540cexample",
        None,
        "546401670c5547b08811ac6a9example",
    ),
    # The SMS sample's client_id is the account id: no endpoint. Its event time is after its arrival: clamped.
    "sms_success": ("_SMS.SUCCESS", 1553104954064, 1553104954064, None, "52dc44b35c4742c98c5935269example", None),
}


def parse(record: dict, mode: IdentityMode = USER_OR_ENDPOINT) -> CanonicalEvent:
    result = normalise(json.dumps(record).encode("utf-8"), identity_mode=mode)
    assert isinstance(result, CanonicalEvent), result
    return result


def test_every_sample_file_has_an_expectation(fixtures_dir):
    assert sorted(path.stem for path in (fixtures_dir / "pinpoint").glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_maps_to_canonical_fields(load, name):
    event_type, event_time, arrival_time, endpoint_id, campaign_id, journey_id = EXPECTED[name]

    event = parse(load("pinpoint", name))

    assert event.source is EventSource.PINPOINT
    assert event.event_type == event_type
    assert event.event_time_ms == event_time
    assert event.arrival_time_ms == arrival_time
    assert event.endpoint_id == endpoint_id
    assert event.campaign_id == campaign_id
    assert event.journey_id == journey_id
    assert event.item_id is None
    assert re.fullmatch(r"pp-[0-9a-f]{64}", event.event_id)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_identity_mode_decides_whether_the_endpoint_stands_in_for_the_user(load, name):
    endpoint_id = EXPECTED[name][3]

    # None of the documented samples names a user.
    assert parse(load("pinpoint", name), USER).user_id is None
    assert parse(load("pinpoint", name), USER_OR_ENDPOINT).user_id == endpoint_id


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_address_reaches_the_canonical_event(load, addresses_in, fixtures_dir, name):
    event = parse(load("pinpoint", name))

    assert addresses_in(event.to_json()) == []


def test_the_address_check_is_not_vacuous(addresses_in, fixtures_dir):
    raw = "".join(path.read_text() for path in (fixtures_dir / "pinpoint").glob("*.json"))
    found = set(addresses_in(raw))
    assert {"sender@example.com", "+12065550142", "+14255550199", "72.21.198.67", "Mozilla/"} <= found


def test_sms_keeps_its_price_metric_and_drops_both_phone_numbers(load):
    event = parse(load("pinpoint", "sms_success"))

    assert event.metrics == {"price_in_millicents_usd": 645.0}
    assert "origination_phone_number" not in event.attributes
    assert "destination_phone_number" not in event.attributes
    assert event.attributes["record_status"] == "DELIVERED"
    assert event.attributes["message_id"] == "1111-2222-3333"
    assert event.user_id is None


def test_campaign_attributes_are_copied(load):
    event = parse(load("pinpoint", "campaign_send"))

    assert dict(event.attributes) == {
        "treatment_id": "0",
        "campaign_activity_id": "5473285727f04865bc673e527example",
        "delivery_type": "GCM",
        "campaign_id": "4f8d6097c2e8400fa3081d875example",
        "campaign_send_status": "SUCCESS",
    }


def test_address_valued_attributes_are_dropped_whatever_their_name(load):
    record = load("pinpoint", "app_session_stop")
    record["attributes"] = {
        "contact": "Ada <ada@example.org>",
        "mobile": "+447700900123",
        "seen_from": "203.0.113.9",
        "Email": "no-at-sign-but-a-denied-name",
        "user_agent": "curl/8.4",
        "plan": "gold",
        "phone_count": "+3",
    }

    event = parse(record)

    assert dict(event.attributes) == {"plan": "gold", "phone_count": "+3"}


def test_user_comes_from_the_top_level_endpoint_object(load):
    record = load("pinpoint", "app_session_stop")
    record["event_type"] = "_custom.recommender"
    record["endpoint"] = {"Id": "ep-top", "ChannelType": "APNS", "User": {"UserId": "user-top"}}
    record["attributes"] = {"item_id": "item-9", "campaign_id": "cmp-1", "personalize_user_id": "user-top"}

    event = parse(record, USER)

    assert (event.user_id, event.endpoint_id, event.item_id, event.campaign_id) == (
        "user-top",
        "ep-top",
        "item-9",
        "cmp-1",
    )


def test_user_comes_from_the_client_context_endpoint_string(load):
    record = load("pinpoint", "campaign_send")
    record["client_context"]["custom"]["endpoint"] = json.dumps(
        {"ChannelType": "GCM", "User": {"UserId": "user-ctx", "UserAttributes": {}}}
    )

    event = parse(record, USER)

    assert event.user_id == "user-ctx"
    assert event.endpoint_id == "d8dcf7c5-e81a-48ae-8313-f540cexample"


def test_top_level_endpoint_user_wins_over_the_client_context(load):
    record = load("pinpoint", "campaign_send")
    record["client_context"]["custom"]["endpoint"] = json.dumps({"User": {"UserId": "user-ctx"}})
    record["endpoint"] = {"Id": "ep-top", "User": {"UserId": "user-top"}}

    assert parse(record, USER).user_id == "user-top"


def test_client_id_is_the_endpoint_when_the_record_has_no_account_id(load):
    record = load("pinpoint", "sms_success")
    del record["awsAccountId"]

    assert parse(record, USER).endpoint_id == "123456789012"


class TestEventId:
    def test_the_same_record_twice_has_the_same_id(self, load):
        assert parse(load("pinpoint", "email_open")).event_id == parse(load("pinpoint", "email_open")).event_id

    @pytest.mark.parametrize("name", sorted(name for name in EXPECTED if not name.startswith("email_")))
    def test_a_retry_with_a_new_arrival_time_is_the_same_event(self, load, name):
        record = load("pinpoint", name)
        retry = load("pinpoint", name)
        retry["arrival_timestamp"] += 60_000

        first, second = parse(record), parse(retry)

        assert first.event_id == second.event_id
        assert second.arrival_time_ms == first.arrival_time_ms + 60_000

    def test_the_same_email_record_redelivered_byte_for_byte_is_one_event(self, load, fixtures_dir):
        raw = (fixtures_dir / "pinpoint" / "email_open.json").read_bytes()
        first = normalise(raw, identity_mode=USER_OR_ENDPOINT, arrival_time_ms=1564618712400)
        again = normalise(raw, identity_mode=USER_OR_ENDPOINT, arrival_time_ms=1564618799000)

        assert first.event_id == again.event_id

    @pytest.mark.parametrize("name", ["email_open", "email_click"])
    def test_a_second_engagement_with_one_email_is_a_different_event(self, load, name):
        # Pinpoint stamps every event of a message with its send time: only the arrival tells them apart.
        first = load("pinpoint", name)
        second = load("pinpoint", name)
        second["arrival_timestamp"] += 3_600_000

        assert first["event_timestamp"] == second["event_timestamp"]
        assert parse(first).event_id != parse(second).event_id

    @pytest.mark.parametrize(
        "field, value", [("ip_address", "198.51.100.7"), ("user_agent", "Mozilla/5.0 (Android 14)")]
    )
    def test_two_opens_recorded_in_the_same_millisecond_from_two_devices_differ(self, load, field, value):
        first = load("pinpoint", "email_open")
        second = load("pinpoint", "email_open")
        second["facets"]["email_channel"]["mail_event"]["open"][field] = value

        assert parse(first).event_id != parse(second).event_id
        assert value not in parse(second).to_json()

    def test_an_email_engagement_happens_when_pinpoint_records_it_not_at_the_send_time(self, load):
        record = load("pinpoint", "email_open")

        event = parse(record)

        assert event.event_time_ms == record["arrival_timestamp"]
        assert event.event_time_ms != record["event_timestamp"]

    def test_two_push_opens_at_different_times_differ_and_an_sdk_retry_does_not(self, load):
        record = load("pinpoint", "campaign_send")
        record["event_type"] = "_campaign.opened_notification"
        later = load("pinpoint", "campaign_send")
        later["event_type"] = "_campaign.opened_notification"
        later["event_timestamp"] += 60_000
        retry = json.loads(json.dumps(record))
        retry["arrival_timestamp"] += 5_000

        assert parse(record).event_id != parse(later).event_id
        assert parse(record).event_id == parse(retry).event_id
        assert parse(record).event_time_ms == record["event_timestamp"]

    @pytest.mark.parametrize("name", ["campaign_send", "journey_send", "sms_success", "app_session_stop"])
    def test_non_email_events_at_different_reported_times_differ(self, load, name):
        record = load("pinpoint", name)
        other = load("pinpoint", name)
        other["event_timestamp"] -= 1_000

        assert parse(record).event_id != parse(other).event_id

    def test_every_sample_is_a_different_event(self, load):
        ids = {parse(load("pinpoint", name)).event_id for name in EXPECTED}
        assert len(ids) == len(EXPECTED)

    @pytest.mark.parametrize(
        "change",
        [
            lambda r: r.update(event_timestamp=r["event_timestamp"] + 1),
            lambda r: r.update(event_type="_email.click"),
            lambda r: r["client"].update(client_id="another-endpoint"),
            lambda r: r["application"].update(app_id="another-app"),
            lambda r: r["attributes"].update(feedback="clicked"),
            lambda r: r.update(metrics={"score": 1.0}),
            lambda r: r["facets"]["email_channel"]["mail_event"]["mail"].update(message_id="another-message"),
        ],
        ids=["event time", "event type", "client", "app", "attribute", "metric", "message id"],
    )
    def test_a_change_in_identifying_content_is_a_different_event(self, load, change):
        record = load("pinpoint", "email_open")
        changed = load("pinpoint", "email_open")
        change(changed)

        assert parse(record).event_id != parse(changed).event_id

    def test_clicks_on_different_links_are_different_events(self, load):
        record = load("pinpoint", "email_click")
        other = load("pinpoint", "email_click")
        other["facets"]["email_channel"]["mail_event"]["click"]["link"] = "https://example.com/other"

        assert parse(record).event_id != parse(other).event_id

    def test_sessions_tell_apart_otherwise_equal_app_events(self, load):
        record = load("pinpoint", "app_session_stop")
        other = load("pinpoint", "app_session_stop")
        other["session"]["session_id"] = "another-session"

        assert parse(record).event_id != parse(other).event_id


def test_canonical_json_round_trips(load):
    event = parse(load("pinpoint", "sms_success"))

    assert CanonicalEvent.from_json_dict(json.loads(event.to_json())) == event


def test_malformed_client_context_endpoint_is_rejected_naming_the_field(load):
    record = load("pinpoint", "campaign_send")
    record["client_context"]["custom"]["endpoint"] = "{not json"

    result = normalise(json.dumps(record), identity_mode=USER)

    assert isinstance(result, Rejected)
    assert "field client_context.custom.endpoint: expected a JSON object string" in result.reason
