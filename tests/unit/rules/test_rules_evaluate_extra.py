"""`next_exit_day` (when the sweeper must look at a window-rule user again) and `apply_backfill` (merging
per-day totals from the lake into a counter)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.events.canonical import CanonicalEvent, EventSource
from functions.rules.evaluate import (
    DayBucket,
    RuleState,
    apply_backfill,
    apply_events,
    event_day,
    exit_check,
    next_exit_day,
)
from functions.rules.model import ActionKind, CountCondition, Operator, Rule, RuleType, SumCondition

D = date(2026, 11, 10)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def rule(**fields) -> Rule:
    base = {"rule_id": "r1", "rule_type": RuleType.WINDOW, "event_name": "purchase", "window_days": 3,
            "count_condition": CountCondition(Operator.AT_LEAST, 2)}
    return Rule(**{**base, **fields})


def day_ms(day: date, offset_ms: int = 0) -> int:
    return (datetime.combine(day, datetime.min.time(), timezone.utc) - EPOCH) // timedelta(milliseconds=1) + offset_ms


def state_after(r: Rule, *days: date, metrics: dict[str, float] | None = None) -> RuleState:
    events = [CanonicalEvent(event_id=f"e{i}", source=EventSource.APP, event_type="purchase",
                             event_time_ms=day_ms(day, i), arrival_time_ms=day_ms(day, i), user_id="u1",
                             metrics=metrics or {}) for i, day in enumerate(days)]
    return apply_events(r, RuleState(), events, now_ms=max(e.arrival_time_ms for e in events))[0]


# --- next_exit_day ---------------------------------------------------------------------------------


def test_a_qualified_user_exits_when_the_oldest_needed_day_leaves_the_window():
    state = state_after(rule(), D, D + timedelta(days=1))
    assert state.qualified
    assert next_exit_day(rule(), state) == D + timedelta(days=3)  # D leaves; one event is not enough


def test_no_exit_day_for_other_rules_or_users_not_qualified():
    assert next_exit_day(rule(), state_after(rule(), D)) is None
    aggregator = rule(rule_type=RuleType.AGGREGATOR, window_days=None)
    assert next_exit_day(aggregator, state_after(aggregator, D, D)) is None


def test_an_equal_rule_already_above_its_target_exits_at_once_and_from_day_moves_the_search():
    equal = rule(count_condition=CountCondition(Operator.EQUAL, 1))
    state = state_after(equal, D, D + timedelta(days=1))  # qualified on D, 2 ≠ 1 since D+1
    assert next_exit_day(equal, state) == D + timedelta(days=1)
    # With D gone (D+3) the total is 1 again; it drops to 0 on D+4.
    assert next_exit_day(equal, state, from_day=D + timedelta(days=3)) == D + timedelta(days=4)


def test_a_rule_that_holds_with_an_empty_window_never_exits():
    lenient = rule(count_condition=None, sum_condition=SumCondition(Operator.AT_LEAST, Decimal("-1")))
    assert next_exit_day(lenient, state_after(lenient, D)) is None


@settings(max_examples=300, deadline=None)
@given(window=st.integers(1, 5), target=st.integers(1, 4), operator=st.sampled_from(Operator),
       offsets=st.lists(st.integers(0, 8), min_size=1, max_size=8), start=st.integers(0, 12))
def test_next_exit_day_is_the_first_day_exit_check_says_so(window, target, operator, offsets, start):
    r = rule(window_days=window, count_condition=CountCondition(operator, target))
    state = state_after(r, *(D + timedelta(days=o) for o in offsets))
    from_day = D + timedelta(days=start)
    found = next_exit_day(r, state, from_day=from_day)
    if not state.qualified:
        assert found is None
        return
    first = max(from_day, state.window_end)
    scan = [first + timedelta(days=n) for n in range(window + 20)]
    assert found == next((day for day in scan if exit_check(r, state, day)), None)


# --- apply_backfill --------------------------------------------------------------------------------

NOV = rule(rule_type=RuleType.DATE, window_days=None, start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30),
           count_condition=CountCondition(Operator.AT_LEAST, 3))
ACTIVATION_MS = day_ms(D, 3_600_000)


def test_backfilled_days_are_added_and_qualify_once_with_a_deterministic_key():
    days = [DayBucket(D - timedelta(days=2), 1, Decimal("1.5")), DayBucket(D, 1, Decimal("0.5"))]
    after_stream = state_after(NOV, D)  # one event counted since activation
    state, qualifications = apply_backfill(NOV, after_stream, days, ACTIVATION_MS, user_id="u1")
    assert (state.count, state.sum, state.qualified, state.fired) == (3, Decimal("2.0"), True, 1)
    (q,) = qualifications
    assert (q.key, q.kind, q.name, q.value, q.event_id, q.event_time_ms) == (
        "r1#u1#1", ActionKind.ATTRIBUTE, "trk_date_purchase", "ready", "", ACTIVATION_MS)
    again, none = apply_backfill(NOV, state, days, ACTIVATION_MS, user_id="u1")
    assert none == [] and again.count == 5  # the store's mark, not this function, keeps a merge single


def test_a_date_rule_checks_each_backfilled_day_in_order():
    equal = rule(rule_type=RuleType.DATE, window_days=None, start_date=date(2026, 11, 1),
                 finish_date=date(2026, 11, 30), count_condition=CountCondition(Operator.EQUAL, 2))
    days = [DayBucket(D - timedelta(days=1), 2, Decimal(0)), DayBucket(D, 1, Decimal(0))]
    state, qualifications = apply_backfill(equal, RuleState(), days, ACTIVATION_MS, user_id="u1")
    assert state.count == 3 and len(qualifications) == 1  # the count was 2 after the first day


def test_nothing_to_merge_changes_nothing_and_aggregator_rules_are_refused():
    state = state_after(NOV, D)
    assert apply_backfill(NOV, state, [], ACTIVATION_MS, user_id="u1") == (state, [])
    with pytest.raises(ValueError, match="only date and window rules"):
        apply_backfill(rule(rule_type=RuleType.AGGREGATOR, window_days=None), state, [], 0, user_id="u1")


def test_a_window_rule_qualifies_only_on_the_window_ending_on_the_activation_day():
    week = rule(window_days=3)
    old_days = [DayBucket(D - timedelta(days=5), 2, Decimal(0)), DayBucket(D - timedelta(days=1), 1, Decimal(0))]
    state, qualifications = apply_backfill(week, RuleState(), old_days, ACTIVATION_MS, user_id="u1")
    assert qualifications == [] and state.count == 3  # the lifetime count keeps everything
    assert state.window_end == D and state.buckets == (old_days[1],)
    recent = [DayBucket(D - timedelta(days=2), 1, Decimal(0)), DayBucket(D, 1, Decimal(0))]
    state, qualifications = apply_backfill(week, RuleState(), recent, ACTIVATION_MS, user_id="u1")
    assert len(qualifications) == 1 and state.qualified
    assert next_exit_day(week, state) == D + timedelta(days=1)


def test_a_window_rule_merges_with_buckets_the_stream_already_has():
    week = rule(window_days=3, count_condition=CountCondition(Operator.AT_LEAST, 3))
    streamed = state_after(week, D + timedelta(days=1))  # counted after activation, the next day
    days = [DayBucket(D, 2, Decimal(0))]
    state, qualifications = apply_backfill(week, streamed, days, ACTIVATION_MS, user_id="u1")
    assert state.window_end == D + timedelta(days=1)
    assert [(b.day, b.count) for b in state.buckets] == [(D, 2), (D + timedelta(days=1), 1)]
    assert len(qualifications) == 1


@settings(max_examples=300, deadline=None)
@given(
    target=st.integers(1, 5),
    sum_target=st.sampled_from([None, "0.5", "2.5"]),
    events=st.lists(st.tuples(st.integers(-3, 40), st.integers(0, 3), st.sampled_from([0.0, 0.1, 0.7, 1.5])),
                    max_size=12),
    split_day=st.integers(0, 30),
)
def test_backfill_then_stream_equals_all_at_once_for_growing_conditions(target, sum_target, events, split_day):
    """For `at_least` conditions and non-negative metrics, the backfill (events arrived before activation,
    as per-day totals) merged into the stream's count (the rest) equals evaluating every event in order."""
    r = rule(rule_type=RuleType.DATE, window_days=None, start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30),
             count_condition=CountCondition(Operator.AT_LEAST, target),
             sum_condition=SumCondition(Operator.AT_LEAST, Decimal(sum_target)) if sum_target else None)
    nov1 = date(2026, 11, 1)
    stream = sorted(
        (CanonicalEvent(event_id=f"e{i}", source=EventSource.APP, event_type="purchase",
                        event_time_ms=day_ms(nov1 + timedelta(days=d)),
                        arrival_time_ms=day_ms(nov1 + timedelta(days=d), lag * 3_600_000 + i), user_id="u1",
                        metrics={"m": value}) for i, (d, lag, value) in enumerate(events)),
        key=lambda e: e.arrival_time_ms)
    activation_ms = day_ms(nov1 + timedelta(days=split_day), 43_200_000)
    before = [e for e in stream if e.arrival_time_ms < activation_ms]
    after = [e for e in stream if e.arrival_time_ms >= activation_ms]
    now_ms = max((e.arrival_time_ms for e in stream), default=activation_ms)
    whole, _ = apply_events(r, RuleState(), stream, now_ms=now_ms)

    streamed, _ = apply_events(r, RuleState(), after, now_ms=now_ms)
    totals: dict[date, DayBucket] = {}
    for e in before:
        if nov1 <= event_day(e.event_time_ms) <= date(2026, 11, 30):
            day = event_day(e.event_time_ms)
            old = totals.get(day, DayBucket(day, 0, Decimal(0)))
            totals[day] = DayBucket(day, old.count + 1, old.sum + Decimal(str(e.metrics["m"])))
    merged, qualifications = apply_backfill(r, streamed, totals.values(), activation_ms, user_id="u1")
    assert (merged.count, merged.sum, merged.qualified) == (whole.count, whole.sum, whole.qualified)
    assert merged.fired == whole.fired
    assert len(qualifications) == (merged.fired - streamed.fired)
