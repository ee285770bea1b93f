"""The interactions SQL's semantics (`docs/interactions.md`), on DuckDB over a lake of hand-built events.

Run date D is 2026-11-08 throughout; every expected row is worked out by hand from the event times.
"""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone

import pytest

from functions.events.canonical import CanonicalEvent, EventSource
from functions.retraining.lake import Interaction, run_interactions, write_lake
from functions.retraining.scoring import ScoringModel
from functions.retraining.sql import InteractionsQuery

D = date(2026, 11, 8)
DAY_MS = 86_400_000
SCORING = ScoringModel.from_mapping({"_email.open": 1, "_email.click": 5, "purchase": 20}, source="test")
_ids = itertools.count()


def at(days_before_d: int, hour: int = 12, ms: int = 0) -> int:
    """Unix ms of `hour`:00 UTC on day D-`days_before_d`, plus `ms`."""
    moment = datetime(D.year, D.month, D.day, hour, tzinfo=timezone.utc) - timedelta(days=days_before_d)
    return int(moment.timestamp() * 1000) + ms


def exposure(arrival_ms: int, *, endpoint="ep-1", user="pu-1", item="item-1", campaign="camp-1",
             journey=None) -> CanonicalEvent:
    attributes = {"personalize_user_id": user, "item_id": item, "campaign_id": campaign, "journey_id": journey}
    return CanonicalEvent(
        event_id=f"x-{next(_ids)}", source=EventSource.PINPOINT, event_type="_custom.recommender",
        event_time_ms=arrival_ms, arrival_time_ms=arrival_ms, user_id=endpoint, endpoint_id=endpoint,
        campaign_id=campaign, journey_id=journey, item_id=item,
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def engagement(arrival_ms: int, event_type="_email.open", *, endpoint="ep-1", user="user-1",
               campaign="camp-1", journey=None, item=None, event_time_ms=None) -> CanonicalEvent:
    return CanonicalEvent(
        event_id=f"e-{next(_ids)}", source=EventSource.PINPOINT, event_type=event_type,
        event_time_ms=arrival_ms if event_time_ms is None else event_time_ms, arrival_time_ms=arrival_ms,
        user_id=user, endpoint_id=endpoint, campaign_id=campaign, journey_id=journey, item_id=item,
        attributes={"item_id": item} if item else {},
    )


def row(engaged: CanonicalEvent, user="pu-1", item="item-1") -> Interaction:
    return Interaction(user, item, engaged.event_type, SCORING.values[engaged.event_type],
                       engaged.arrival_time_ms // 1000)


@pytest.fixture
def run(tmp_path):
    """Write `events` to a fresh lake and run the query for D with `query`'s options."""
    def run(events, **query):
        lake = tmp_path / f"lake-{next(_ids)}"
        write_lake(events, lake)
        return run_interactions(InteractionsQuery(scoring=SCORING, as_of=D, **query), lake)
    return run


# --- exposure timing -------------------------------------------------------------------------------------

def test_exposure_before_the_engagement_credits_the_exposed_user_and_item(run):
    opened = engagement(at(2, 9))
    assert run([exposure(at(3)), opened]) == [row(opened)]


def test_exposure_arriving_in_the_same_millisecond_counts(run):
    opened = engagement(at(2))
    assert run([exposure(at(2)), opened]) == [row(opened)]


def test_exposure_after_the_engagement_does_not_count(run):
    assert run([engagement(at(2)), exposure(at(2, ms=1))]) == []


def test_window_edge_is_inclusive_and_one_millisecond_more_is_outside(run):
    opened = engagement(at(1))
    edge = exposure(at(1) - 7 * DAY_MS, item="at-edge")
    outside = exposure(at(1) - 7 * DAY_MS - 1, item="outside")
    assert run([edge, outside, opened]) == [row(opened, item="at-edge")]


def test_attribution_days_sets_the_window(run):
    opened = engagement(at(1))
    events = [exposure(at(1) - 2 * DAY_MS, item="two-days"), exposure(at(1) - 2 * DAY_MS - 1, item="older"),
              opened]
    assert run(events, attribution_days=2) == [row(opened, item="two-days")]


# --- matching --------------------------------------------------------------------------------------------

def test_another_campaign_does_not_count(run):
    assert run([exposure(at(3), campaign="camp-2"), engagement(at(2))]) == []


def test_journeys_match_by_journey_id(run):
    opened = engagement(at(2), campaign=None, journey="jour-1")
    events = [exposure(at(3), campaign=None, journey="jour-1", item="same-journey"),
              exposure(at(3), campaign=None, journey="jour-2", item="other-journey"), opened]
    assert run(events) == [row(opened, item="same-journey")]


def test_campaign_and_journey_ids_are_not_interchangeable(run):
    assert run([exposure(at(3), campaign="x-1"), engagement(at(2), campaign=None, journey="x-1")]) == []


def test_another_endpoint_does_not_count(run):
    assert run([exposure(at(3), endpoint="ep-2"), engagement(at(2))]) == []


def test_engagement_without_campaign_or_journey_matches_no_exposure(run):
    assert run([exposure(at(3), campaign=None, journey=None), engagement(at(2), campaign=None)]) == []


def test_every_exposure_in_the_window_is_credited(run):
    opened = engagement(at(1))
    events = [exposure(at(4), item="item-a"), exposure(at(3), item="item-b", user="pu-2"), opened]
    assert run(events) == [row(opened, item="item-a"), row(opened, user="pu-2", item="item-b")]


def test_exposure_without_a_personalize_user_or_item_yields_nothing(run):
    no_user = exposure(at(3))
    no_user = CanonicalEvent(**{**_fields(no_user), "attributes": {"item_id": "item-1", "campaign_id": "camp-1"}})
    no_item = CanonicalEvent(**{**_fields(exposure(at(3))), "item_id": None})
    assert run([no_user, no_item, engagement(at(2))]) == []


def _fields(event: CanonicalEvent) -> dict:
    return {name: getattr(event, name) for name in CanonicalEvent.__dataclass_fields__}


# --- types, values, duplicates ---------------------------------------------------------------------------

def test_unscored_types_yield_nothing_even_when_they_match_an_exposure(run):
    # The seed's `type = a OR type = b AND …` let any event through; this one matches all but the type.
    events = [exposure(at(3)), engagement(at(2), "_email.delivered"),
              engagement(at(2), "_email.send", item="item-9")]
    assert run(events) == []


def test_an_exposure_alone_is_not_an_interaction(run):
    assert run([exposure(at(3))]) == []


def test_event_value_comes_from_the_scoring_model(run):
    clicked, bought = engagement(at(2), "_email.click"), engagement(at(2, 13), "purchase")
    result = run([exposure(at(3)), clicked, bought])
    assert result == [row(clicked), row(bought)]
    assert [r.event_value for r in result] == [5.0, 20.0]


def test_duplicate_engagements_and_exposures_give_one_row(run):
    opened, shown = engagement(at(2)), exposure(at(3))
    assert run([shown, shown, opened, opened]) == [row(opened)]


def test_identical_rows_from_different_events_appear_once(run):
    first, second = engagement(at(2, ms=100)), engagement(at(2, ms=900))  # same second
    assert run([exposure(at(3)), first, second]) == [row(first)]


def test_timestamp_is_the_arrival_in_whole_seconds(run):
    # Email events carry the send time as event time; the arrival is what counts.
    opened = engagement(at(2, ms=1_999), event_time_ms=at(5))
    (result,) = run([exposure(at(3)), opened])
    assert result.timestamp == at(2) // 1000 + 1


# --- direct item events ----------------------------------------------------------------------------------

def test_engagement_with_its_own_item_credits_its_own_user(run):
    bought = engagement(at(2), "purchase", campaign=None, item="sku-7")
    assert run([bought]) == [row(bought, user="user-1", item="sku-7")]


def test_engagement_with_an_item_also_credits_matching_exposures(run):
    bought = engagement(at(2), "purchase", item="sku-7")
    assert run([exposure(at(3)), bought]) == [row(bought), row(bought, user="user-1", item="sku-7")]


def test_direct_item_event_without_a_user_yields_nothing(run):
    assert run([engagement(at(2), "purchase", user=None, item="sku-7")]) == []


# --- rows the event tracker streamed (realTimeEvents) ---------------------------------------------------

def test_exclude_streamed_leaves_out_the_own_item_row_and_keeps_exposure_rows(run):
    bought = engagement(at(2), "purchase", item="sku-7")
    assert run([exposure(at(3)), bought], exclude_streamed=True) == [row(bought)]


def test_exclude_streamed_leaves_out_an_exposure_row_identical_to_the_streamed_one(run):
    bought = engagement(at(2), "purchase", item="sku-7")
    same = exposure(at(3), user="user-1", item="sku-7")
    other = exposure(at(3), user="user-1", item="item-1")
    assert run([same, other, bought]) == [row(bought, user="user-1", item="item-1"),
                                          row(bought, user="user-1", item="sku-7")]
    assert run([same, other, bought], exclude_streamed=True) == [row(bought, user="user-1", item="item-1")]


def test_exclude_streamed_keeps_exposure_rows_of_engagements_the_tracker_skips(run):
    opened = engagement(at(2))  # no item of its own: the tracker sends nothing
    anonymous = engagement(at(2), "purchase", user=None, item="sku-7")  # no user: nothing sent
    assert run([exposure(at(3)), opened, anonymous], exclude_streamed=True) == [row(opened), row(anonymous)]


# --- history ---------------------------------------------------------------------------------------------

def test_history_reads_whole_days_d_minus_n_to_d_minus_1(run):
    events = [engagement(at(4, 23, 3_599_999), item="d-4-last-ms"),  # D-4 23:59:59.999: out
              engagement(at(3, 0), item="d-3-first-ms"),  # D-3 00:00:00.000: in
              engagement(at(1, 23, 3_599_999), item="d-1-last-ms"),  # in
              engagement(at(0, 0), item="d-first-ms")]  # D itself: out
    assert [r.item_id for r in run(events, history_days=3)] == ["d-1-last-ms", "d-3-first-ms"]


def test_history_minus_one_reads_everything_before_d(run):
    events = [engagement(at(900), item="old"), engagement(at(1), item="recent"), engagement(at(0), item="today")]
    assert [r.item_id for r in run(events, history_days=-1)] == ["old", "recent"]


def test_exposures_older_than_the_history_still_attribute_within_the_window(run):
    opened = engagement(at(1, 0, 30))
    events = [exposure(at(1, 0, 30) - 7 * DAY_MS, item="edge"), exposure(at(6), item="in-window"), opened]
    assert run(events, history_days=1) == [row(opened, item="edge"), row(opened, item="in-window")]


def test_scoring_with_a_quote_in_an_event_type_is_escaped(tmp_path):
    scoring = ScoringModel.from_mapping({"it's": 3}, source="test")
    opened = engagement(at(2), "it's", item="sku-1")
    write_lake([opened], tmp_path)
    result = run_interactions(InteractionsQuery(scoring=scoring, as_of=D), tmp_path)
    assert result == [Interaction("user-1", "sku-1", "it's", 3.0, opened.arrival_time_ms // 1000)]
