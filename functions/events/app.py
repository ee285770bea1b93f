"""Canonical JSON written by apps straight to Kinesis → canonical events.

An app record is recognised by its marker alone — `"schema": "engagement-loop/v1"` — never by guessing
from its other fields, so it cannot be mistaken for a Pinpoint or SES record or the other way round:

    {"schema": "engagement-loop/v1",
     "event_type": "purchase",
     "event_time_ms": 1764000000000,            # or "event_time": "2025-11-24T16:00:00Z" (one of the two)
     "user_id": "u-123",
     "event_id": "…",                           # optional: the producer's id, used as-is for de-duplication
     "endpoint_id": "…", "campaign_id": "…", "journey_id": "…", "item_id": "…",   # optional
     "attributes": {"str": "str"}, "metrics": {"str": 1.5}}                        # optional

`user_id` is required: an app always knows its user (it is also the stream's partition key).
The record has no arrival stamp of its own: `normalise` sets the Kinesis approximate arrival time, else the
event time stands in. The id is the producer's `event_id` (hashed when over-long, see `normalise`), else a
hash of the content without any arrival time, so a producer retry of the same record is recognised.
Address-looking attributes are dropped, as for every source. Details: docs/events.md.
"""

from __future__ import annotations

from functions.events.canonical import CanonicalEvent, EventSource
from functions.events.parsing import FieldError, Fields, stable_event_id, without_addresses

APP_SCHEMA = "engagement-loop/v1"
"""The value of `schema` that marks an app record."""


def parse_app(record: Fields) -> CanonicalEvent:
    """Map one app record (already known to carry the schema marker); raises `FieldError` if malformed."""
    event_type = record.text("event_type")
    if record.has("event_time_ms") and record.has("event_time"):
        raise FieldError("fields event_time_ms and event_time: give one of them, not both")
    if record.has("event_time"):
        event_time_ms = record.iso_millis("event_time")
    elif record.has("event_time_ms"):
        event_time_ms = record.millis("event_time_ms")
    else:
        raise FieldError("missing field event_time_ms (or event_time)")
    user_id = record.text("user_id")
    endpoint_id = record.text("endpoint_id", required=False)
    campaign_id = record.text("campaign_id", required=False)
    journey_id = record.text("journey_id", required=False)
    item_id = record.text("item_id", required=False)
    attributes = without_addresses(record.text_map("attributes"))
    metrics = record.number_map("metrics")

    event_id = record.text("event_id", required=False) or stable_event_id(
        "app-",
        [event_type, event_time_ms, user_id, endpoint_id, campaign_id, journey_id, item_id, attributes, metrics],
    )
    return CanonicalEvent(
        event_id=event_id,
        source=EventSource.APP,
        event_type=event_type,
        event_time_ms=event_time_ms,
        arrival_time_ms=event_time_ms,
        user_id=user_id,
        endpoint_id=endpoint_id,
        campaign_id=campaign_id,
        journey_id=journey_id,
        item_id=item_id,
        attributes=attributes,
        metrics=metrics,
    )
