"""What `normalise` does the same for every source: one arrival clock, the clamp of fast clocks, the bounds."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.normalise import normalise
from functions.events.parsing import MAX_EVENT_ID_BYTES, MAX_ID_BYTES

USER = IdentityMode.USER
USER_OR_ENDPOINT = IdentityMode.USER_OR_ENDPOINT
DAY_MS = 86_400_000
KINESIS_ARRIVAL = 1_795_165_260_000  # 2026-11-20T09:01:00Z
LONG = "u" * 5_000


def app_record(**overrides: Any) -> dict[str, Any]:
    return {"schema": "engagement-loop/v1", "event_type": "purchase", "event_time_ms": KINESIS_ARRIVAL - 60_000,
            "user_id": "user-7", **overrides}


def parse(record: dict, *, arrival_time_ms: int | None = KINESIS_ARRIVAL,
          mode: IdentityMode = USER_OR_ENDPOINT) -> CanonicalEvent:
    result = normalise(json.dumps(record), identity_mode=mode, arrival_time_ms=arrival_time_ms)
    assert isinstance(result, CanonicalEvent), result
    return result


def rejected(record: dict, mode: IdentityMode = USER_OR_ENDPOINT) -> str:
    result = normalise(json.dumps(record), identity_mode=mode, arrival_time_ms=KINESIS_ARRIVAL)
    assert isinstance(result, Rejected), result
    return result.reason


SAMPLES = [("pinpoint", "app_session_stop"), ("pinpoint", "campaign_send"), ("pinpoint", "email_open"),
           ("pinpoint", "sms_success"), ("ses", "open"), ("ses", "click")]


class TestOneArrivalClock:
    @pytest.mark.parametrize("source, name", SAMPLES)
    def test_every_source_arrives_when_kinesis_says(self, load, source, name):
        event = parse(load(source, name))

        assert event.arrival_time_ms == KINESIS_ARRIVAL
        assert event.arrival_date == "2026-11-20"

    def test_without_a_kinesis_time_the_pinpoint_arrival_stamp_stands_in(self, load):
        record = load("pinpoint", "campaign_send")

        assert parse(record, arrival_time_ms=None).arrival_time_ms == record["arrival_timestamp"]

    def test_without_a_kinesis_time_the_eventbridge_envelope_time_stands_in(self, load):
        assert parse(load("ses", "open"), arrival_time_ms=None).arrival_time_ms == 1_795_169_709_000

    @pytest.mark.parametrize("source, name", SAMPLES)
    def test_the_kinesis_arrival_is_not_part_of_the_id(self, load, source, name):
        first = parse(load(source, name), arrival_time_ms=KINESIS_ARRIVAL)
        again = parse(load(source, name), arrival_time_ms=KINESIS_ARRIVAL + DAY_MS)

        assert first.event_id == again.event_id


class TestFastClocksClampToArrival:
    def test_an_app_event_stamped_days_in_the_future_happened_when_it_arrived(self):
        event = parse(app_record(event_time_ms=KINESIS_ARRIVAL + 3 * DAY_MS))

        assert event.event_time_ms == KINESIS_ARRIVAL

    def test_a_pinpoint_event_stamped_days_in_the_future_happened_when_it_arrived(self, load):
        record = load("pinpoint", "app_session_stop")
        record["event_timestamp"] = KINESIS_ARRIVAL + 3 * DAY_MS

        assert parse(record).event_time_ms == KINESIS_ARRIVAL

    def test_an_ses_open_stamped_in_the_future_happened_when_it_arrived(self, load):
        record = load("ses", "open")
        record["detail"]["open"]["timestamp"] = "2026-11-25T10:00:00.000Z"

        assert parse(record).event_time_ms == KINESIS_ARRIVAL

    def test_the_clamp_leaves_the_id_alone(self):
        future = app_record(event_time_ms=KINESIS_ARRIVAL + 3 * DAY_MS)

        assert parse(future).event_id == parse(future, arrival_time_ms=KINESIS_ARRIVAL + 4 * DAY_MS).event_id

    def test_an_event_before_its_arrival_keeps_its_time(self):
        assert parse(app_record()).event_time_ms == KINESIS_ARRIVAL - 60_000


class TestBounds:
    def test_a_5000_character_app_user_id_is_rejected_with_the_limit(self):
        reason = rejected(app_record(user_id=LONG))

        assert reason.startswith("app record: user_id 'uuuu")
        assert f"is 5000 bytes of UTF-8, more than the limit of {MAX_ID_BYTES}" in reason

    def test_the_limit_is_in_bytes_not_characters(self):
        assert "user_id" in rejected(app_record(user_id="é" * 129))
        assert parse(app_record(user_id="é" * 128)).user_id == "é" * 128

    def test_a_5000_character_pinpoint_user_id_is_rejected(self, load):
        record = load("pinpoint", "app_session_stop")
        record["endpoint"] = {"Id": "ep-1", "User": {"UserId": LONG}}

        assert rejected(record).startswith("Pinpoint record: user_id ")

    def test_an_over_long_endpoint_id_standing_in_for_the_user_is_rejected(self, load):
        record = load("pinpoint", "app_session_stop")
        record["client"]["client_id"] = LONG

        assert rejected(record).startswith("Pinpoint record: user_id ")
        assert rejected(record, USER).startswith("Pinpoint record: endpoint_id ")

    def test_an_over_long_ses_user_tag_is_rejected(self, load):
        record = load("ses", "open")
        record["detail"]["mail"]["tags"]["user_id"] = [LONG]

        assert rejected(record).startswith("SES event: user_id ")

    @pytest.mark.parametrize("field", ["endpoint_id", "campaign_id", "journey_id", "item_id"])
    def test_over_long_ids_that_become_keys_are_rejected(self, field):
        assert rejected(app_record(**{field: "x" * (MAX_ID_BYTES + 1)})).startswith(f"app record: {field} ")

    def test_a_5000_character_producer_event_id_is_replaced_by_its_hash(self):
        first = parse(app_record(event_id="e" * 5_000))
        again = parse(app_record(event_id="e" * 5_000), arrival_time_ms=KINESIS_ARRIVAL + 1)
        other = parse(app_record(event_id="e" * 4_999 + "f"))

        assert re.fullmatch(r"idh-[0-9a-f]{64}", first.event_id)
        assert first.event_id == again.event_id != other.event_id

    def test_a_producer_event_id_within_the_limit_is_kept(self):
        event_id = "e" * MAX_EVENT_ID_BYTES

        assert parse(app_record(event_id=event_id)).event_id == event_id

    def test_an_over_long_attribute_name_is_rejected(self):
        assert "name 'aaaa" in rejected(app_record(attributes={"a" * 5_000: "v"}))
