"""Metric values within what the live sum and the backfill's DECIMAL(38, 17) both hold exactly; ids among the
attributes are held to the id limit and never scrubbed as addresses."""

from __future__ import annotations

import json
from decimal import Context, Decimal

import pytest

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.normalise import normalise


def app_record(**fields) -> str:
    return json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "event_time_ms": 1_764_000_000_000,
                       "user_id": "u-1", **fields})


def normalised(**fields):
    return normalise(app_record(**fields), identity_mode=IdentityMode.USER, arrival_time_ms=1_764_000_000_000)


@pytest.mark.parametrize("value, problem", [
    (1e21, "outside ±1e+12"),  # one such value made every later backfill query overflow DECIMAL(38, 17)
    (-1e13, "outside ±1e+12"),
    (10**13, "outside ±1e+12"),
    (1.5e-18, "more than 17 decimals"),  # DECIMAL(38, 17) would round it, the live sum would not
])
def test_a_metric_the_backfill_could_not_sum_exactly_rejects_the_record(value, problem):
    result = normalised(metrics={"revenue": value})
    assert isinstance(result, Rejected) and problem in result.reason and "metrics.revenue" in result.reason


@pytest.mark.parametrize("value", [1e12, -1e12, 0.1, 19.99, 1e-17, 123456.78901234567])
def test_metrics_in_range_are_kept_and_add_up_as_the_backfill_casts_them(value):
    event = normalised(metrics={"revenue": value})
    assert isinstance(event, CanonicalEvent) and event.metrics["revenue"] == value
    # The live sum adds Decimal(str(v)); the backfill CASTs the same text to DECIMAL(38, 17): equal when the
    # text has at most 17 decimals.
    live = Decimal(str(value))
    assert live == live.quantize(Decimal("1e-17"), context=Context(prec=38))


@pytest.mark.parametrize("address", ["jane.doe@example.com", "+14155550123"])
def test_an_exposure_join_key_that_looks_like_an_address_is_kept(address):
    """Scrubbing `personalize_user_id` would lose the exposure's join to its engagements, not the address: ids
    are kept as given (docs/security.md); an address in an ordinary attribute is still dropped."""
    event = normalised(event_type="_custom.recommender", item_id="sku-1",
                       attributes={"personalize_user_id": address, "item_id": "sku-1", "campaign_id": "c-1",
                                   "note": f"contact {address}"})
    assert isinstance(event, CanonicalEvent)
    assert event.attributes["personalize_user_id"] == address
    assert "note" not in event.attributes


def test_an_identifier_attribute_is_held_to_the_id_limit():
    result = normalised(attributes={"personalize_user_id": "p" * 257})
    assert isinstance(result, Rejected) and "personalize_user_id" in result.reason and "limit of 256" in result.reason


@pytest.mark.parametrize("field, value", [("user_id", "u\n1"), ("item_id", "sku\r1"), ("campaign_id", "c\x00"),
                                          ("endpoint_id", "e\x85")])
def test_an_id_with_a_line_break_or_control_character_rejects_the_record(field, value):
    result = normalised(**{field: value})
    assert isinstance(result, Rejected) and field in result.reason and "control character" in result.reason


def test_an_identifier_attribute_with_a_line_break_rejects_the_record():
    result = normalised(attributes={"personalize_user_id": "p\n1"})
    assert isinstance(result, Rejected) and "personalize_user_id" in result.reason


@pytest.mark.parametrize("event_type, problem", [("e" * 257, "more than the limit of 256"),
                                                 ("purchase\n", "control character")])
def test_the_event_type_is_bounded_like_a_name(event_type, problem):
    """100,000-character event types were accepted: each is a rules EventName and a Personalize EVENT_TYPE."""
    result = normalised(event_type=event_type)
    assert isinstance(result, Rejected) and problem in result.reason and "event type" in result.reason


def test_an_event_type_of_256_characters_is_accepted():
    assert isinstance(normalised(event_type="e" * 256), CanonicalEvent)
