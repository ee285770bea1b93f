"""Canonical JSON written by apps straight to Kinesis → canonical events."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode, Rejected
from functions.events.normalise import normalise

KINESIS_ARRIVAL = 1_795_165_260_000  # 2026-11-20T09:01:00Z


def record(**overrides: Any) -> dict[str, Any]:
    base = {
        "schema": "engagement-loop/v1",
        "event_type": "purchase",
        "event_time_ms": 1_795_165_200_000,
        "user_id": "user-7",
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def parse(raw: dict, arrival_time_ms: int | None = KINESIS_ARRIVAL) -> CanonicalEvent:
    result = normalise(json.dumps(raw), identity_mode=IdentityMode.USER, arrival_time_ms=arrival_time_ms)
    assert isinstance(result, CanonicalEvent), result
    return result


def reject(raw: dict) -> str:
    result = normalise(json.dumps(raw), identity_mode=IdentityMode.USER, arrival_time_ms=KINESIS_ARRIVAL)
    assert isinstance(result, Rejected), result
    return result.reason


def test_a_full_record_maps_field_for_field():
    event = parse(
        record(
            event_id="order-991",
            endpoint_id="ep-7",
            campaign_id="cmp-1",
            journey_id="jr-1",
            item_id="sku-1",
            attributes={"currency": "EUR"},
            metrics={"amount": 19.99, "quantity": 2},
        )
    )

    assert event == CanonicalEvent(
        event_id="order-991",
        source=EventSource.APP,
        event_type="purchase",
        event_time_ms=1_795_165_200_000,
        arrival_time_ms=KINESIS_ARRIVAL,
        user_id="user-7",
        endpoint_id="ep-7",
        campaign_id="cmp-1",
        journey_id="jr-1",
        item_id="sku-1",
        attributes={"currency": "EUR"},
        metrics={"amount": 19.99, "quantity": 2.0},
    )


def test_iso_event_time_with_an_offset():
    event = parse(record(event_time_ms=None, event_time="2026-11-20T10:00:00.250+01:00"))

    assert event.event_time_ms == 1_795_165_200_250


def test_without_a_kinesis_arrival_time_the_event_time_stands_in():
    assert parse(record(), arrival_time_ms=None).arrival_time_ms == 1_795_165_200_000


def test_without_a_producer_id_the_id_is_a_stable_hash():
    first, again = parse(record()), parse(record(), arrival_time_ms=KINESIS_ARRIVAL + 5_000)
    other = parse(record(metrics={"amount": 1.0}))

    assert re.fullmatch(r"app-[0-9a-f]{64}", first.event_id)
    assert first.event_id == again.event_id
    assert first.event_id != other.event_id


def test_address_attributes_are_dropped():
    event = parse(
        record(attributes={"email": "ada@example.org", "note": "call +14155550123", "tier": "gold", "v": "1.2.3.4.5"})
    )

    assert dict(event.attributes) == {"tier": "gold", "v": "1.2.3.4.5"}


@pytest.mark.parametrize(
    "raw, reason",
    [
        (record(user_id=None), "app record: missing field user_id"),
        (record(user_id=42), "app record: field user_id: expected a string, got 42"),
        (record(event_type=""), "app record: field event_type: must not be empty"),
        (record(event_time_ms=None), "app record: missing field event_time_ms (or event_time)"),
        (
            record(event_time="2026-11-20T09:00:00Z"),
            "app record: fields event_time_ms and event_time: give one of them, not both",
        ),
        (
            record(event_time_ms=None, event_time="2026-11-20T09:00:00"),
            "app record: field event_time: time '2026-11-20T09:00:00' has no UTC offset (add 'Z' or '+00:00')",
        ),
        (
            record(event_time_ms=1_795_165_200),
            "app record: field event_time_ms: time 1795165200 is outside 2000-01-01..9999-12-31 in Unix "
            "milliseconds (seconds instead of milliseconds?)",
        ),
        (
            record(event_time_ms="1795165200000"),
            "app record: field event_time_ms: expected integer milliseconds, got '1795165200000'",
        ),
        (record(event_time_ms=True), "app record: field event_time_ms: expected integer milliseconds, got True"),
        (
            record(schema="engagement-loop/v2"),
            "app record: unsupported schema 'engagement-loop/v2' (expected 'engagement-loop/v1')",
        ),
    ],
    ids=[
        "no user",
        "numeric user",
        "empty type",
        "no time",
        "two times",
        "naive time",
        "seconds",
        "string ms",
        "bool ms",
        "schema version",
    ],
)
def test_malformed_app_records_are_rejected_with_the_reason(raw, reason):
    assert reject(raw) == reason


def test_without_the_schema_marker_an_app_record_is_not_recognised():
    raw = record(schema=None)

    assert reject(raw).startswith('unrecognised record: not a Pinpoint, SES or app event (app events need "schema"')
