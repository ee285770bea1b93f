"""Rule evaluation on hand-computed examples."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from functions.events.canonical import CanonicalEvent, EventSource
from functions.rules.evaluate import (
    DayBucket,
    Qualification,
    RuleState,
    apply_events,
    apply_exit,
    arrival_ms,
    coalesce,
    effective_time_ms,
    event_day,
    exit_check,
    matches,
    metric_value,
    next_exit_day,
    window_totals,
    without_user,
)
from functions.rules.model import ActionKind, AttributeFilter, CountCondition, Operator, Rule, RuleType, SumCondition

from tests.unit.rules.conftest import ms

EQUAL, GREATER, AT_LEAST = Operator.EQUAL, Operator.GREATER, Operator.AT_LEAST


def rule(**fields) -> Rule:
    base = {"rule_id": "r1", "rule_type": RuleType.AGGREGATOR, "event_name": "purchase"}
    return Rule(**{**base, **fields})


def count(operator: Operator, target: int) -> CountCondition:
    return CountCondition(operator, target)


def total(operator: Operator, target: str, metric: str | None = None) -> SumCondition:
    return SumCondition(operator, Decimal(target), metric)


def run(r: Rule, events, state: RuleState | None = None, *, now: str | int | None = None):
    """`apply_events` as of `now` (default: the latest event time given, i.e. processed as they arrive)."""
    events = list(events)
    if now is None:
        now_ms = max((e.event_time_ms for e in events), default=0)
    else:
        now_ms = now if isinstance(now, int) else ms(now)
    return apply_events(r, state or RuleState(), events, now_ms=now_ms)


def fired_by(qualifications: list[Qualification]) -> list[str]:
    return [q.event_id for q in qualifications]


def n_events(event, n: int, **kwargs):
    return [event(f"e{i}", **kwargs) for i in range(1, n + 1)]


# --- count conditions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "operator, target, fires_at",
    [(EQUAL, 3, "e3"), (GREATER, 2, "e3"), (AT_LEAST, 3, "e3"), (AT_LEAST, 1, "e1"), (GREATER, 0, "e1")],
)
def test_count_conditions_qualify_once_and_counting_goes_on(event, operator, target, fires_at):
    state, qualifications = run(rule(count_condition=count(operator, target)), n_events(event, 5))
    assert fired_by(qualifications) == [fires_at]
    assert state == RuleState(count=5, sum=Decimal(0), qualified=True, fired=1)


def test_an_unmet_count_keeps_counting_without_qualifying(event):
    state, qualifications = run(rule(count_condition=count(GREATER, 5)), n_events(event, 5))
    assert qualifications == []
    assert state == RuleState(count=5)


def test_an_already_qualified_user_is_not_qualified_again(event):
    r = rule(count_condition=count(AT_LEAST, 1))
    state, _ = run(r, [event("e1")])
    state, qualifications = run(r, [event("e2")], state)
    assert qualifications == [] and state.count == 2 and state.fired == 1


def test_the_attribute_qualification(event):
    r = rule(count_condition=count(EQUAL, 2), attribute_filter=AttributeFilter("sku", "A1"))
    _, (qualification,) = run(r, n_events(event, 2, attributes={"sku": "A1"}, at="2026-11-02T03:04:05.678"))
    assert qualification == Qualification(
        rule_id="r1", user_id="u1", kind=ActionKind.ATTRIBUTE, name="purchase_A1", value="ready", sequence=1,
        event_id="e2", event_time_ms=1793588645678,
    )  # fmt: skip
    assert qualification.key == "r1#u1#1"


# --- resetting rules ------------------------------------------------------------------------------


def test_a_reset_rule_fires_every_time_in_one_batch(event):
    r = rule(count_condition=count(EQUAL, 2), reset=True)
    state, qualifications = run(r, n_events(event, 7))
    assert fired_by(qualifications) == ["e2", "e4", "e6"]
    assert [q.sequence for q in qualifications] == [1, 2, 3]
    assert {(q.kind, q.name, q.value) for q in qualifications} == {(ActionKind.EVENT, "trk_purchase", None)}
    assert state == RuleState(count=1, sum=Decimal(0), qualified=False, fired=3)


def test_a_reset_sum_rule_zeroes_the_sum(event):
    r = rule(sum_condition=total(AT_LEAST, "10"), reset=True)
    values = [4, 7, 12, 1, 2, 3, 5]
    events = [event(f"e{i}", metrics={"amount": v}) for i, v in enumerate(values, start=1)]
    state, qualifications = run(r, events)
    # 4+7=11 fires at e2; 12 fires at e3; 1+2+3+5=11 fires at e7.
    assert fired_by(qualifications) == ["e2", "e3", "e7"]
    assert (state.count, state.sum, state.fired) == (0, Decimal(0), 3)


def test_reset_rule_fires_the_same_one_by_one(event):
    r = rule(count_condition=count(AT_LEAST, 2), reset=True)
    state, everything = RuleState(), []
    for e in n_events(event, 5):
        state, qualifications = run(r, [e], state)
        everything += qualifications
    assert (state, everything) == run(r, n_events(event, 5))
    assert fired_by(everything) == ["e2", "e4"]


# --- sums -----------------------------------------------------------------------------------------


def test_sum_uses_the_named_metric(event):
    r = rule(sum_condition=total(AT_LEAST, "100.3", "price"))
    events = [event("e1", metrics={"qty": 50, "price": 40.1}), event("e2", metrics={"qty": 90, "price": 30.1}),
              event("e3", metrics={"price": 30.1})]  # fmt: skip
    state, qualifications = run(r, events)
    assert fired_by(qualifications) == ["e3"]
    assert state.sum == Decimal("100.3")


def test_sums_are_exact_decimals(event):
    # In binary floating point 0.1 + 0.2 is 0.30000000000000004, which is not equal to 0.3.
    r = rule(sum_condition=total(EQUAL, "0.3"))
    _, qualifications = run(r, [event("e1", metrics={"m": 0.1}), event("e2", metrics={"m": 0.2})])
    assert fired_by(qualifications) == ["e2"]


def test_without_metric_name_the_records_first_metric_counts(event):
    r = rule(sum_condition=total(EQUAL, "5"))
    assert metric_value(r, event("e1", metrics={"b": 5.0, "a": 1.0})) == Decimal(5)
    assert metric_value(r, event("e1", metrics={"a": 1.0, "b": 5.0})) == Decimal(1)
    assert metric_value(r, event("e1")) == Decimal(0)


def test_an_event_without_the_metric_counts_and_adds_zero(event):
    r = rule(sum_condition=total(AT_LEAST, "3", "price"), count_condition=count(AT_LEAST, 3))
    events = [event("e1", metrics={"price": 3}), event("e2", metrics={"qty": 9}), event("e3")]
    state, qualifications = run(r, events)
    assert fired_by(qualifications) == ["e3"]
    assert (state.count, state.sum) == (3, Decimal(3))


def test_non_finite_metrics_add_zero(event):
    r = rule(sum_condition=total(AT_LEAST, "1"))
    assert metric_value(r, event("e1", metrics={"m": float("nan")})) == 0
    assert metric_value(r, event("e1", metrics={"m": float("inf")})) == 0


def test_count_and_sum_together_must_both_hold(event):
    r = rule(count_condition=count(AT_LEAST, 2), sum_condition=total(AT_LEAST, "10"))
    events = [event("e1", metrics={"m": 20}), event("e2", metrics={"m": -15}), event("e3", metrics={"m": 6})]
    # after e1: count 1, sum 20; after e2: count 2, sum 5; after e3: count 3, sum 11.
    assert fired_by(run(r, events)[1]) == ["e3"]


# --- matching -------------------------------------------------------------------------------------


def test_attribute_filter_matches_exactly(event):
    r = rule(count_condition=count(AT_LEAST, 1), attribute_filter=AttributeFilter("campaign_id", "summer"))
    assert matches(r, event("e", attributes={"campaign_id": "summer"}))
    assert not matches(r, event("e", attributes={"campaign_id": "Summer"}))
    assert not matches(r, event("e", attributes={"campaign_id": "summer "}))
    assert not matches(r, event("e", attributes={"other": "summer"}))
    assert not matches(r, event("e"))


def test_event_name_must_be_equal(event):
    r = rule(count_condition=count(AT_LEAST, 1))
    assert matches(r, event("e", "purchase"))
    assert not matches(r, event("e", "Purchase"))
    assert not matches(r, event("e", "purchase.completed"))


def test_engine_events_and_events_without_a_user_never_count(event):
    r = rule(count_condition=count(AT_LEAST, 1))
    assert not matches(r, event("e", "trk_purchase"))
    assert not matches(r, event("e", user=None))
    stream = [event("e1", "trk_purchase"), event("e2", user=None), event("e3", "trk_date_purchase")]
    assert coalesce([r], stream) == {}
    assert run(r, stream) == (RuleState(), [])
    assert without_user(stream) == [stream[1]]


@pytest.mark.parametrize(
    "at, inside",
    [
        ("2026-10-31T23:59:59.999", False),
        ("2026-11-01T00:00:00.000", True),
        ("2026-11-15T12:00:00.000", True),
        ("2026-11-30T23:59:59.999", True),
        ("2026-12-01T00:00:00.000", False),
    ],
)
def test_date_rules_include_both_whole_days_in_utc(event, at, inside):
    r = rule(rule_type=RuleType.DATE, count_condition=count(AT_LEAST, 1),
             start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30))  # fmt: skip
    assert matches(r, event("e", at=at)) is inside


def test_a_single_day_date_rule(event, to_ms):
    r = rule(rule_type=RuleType.DATE, count_condition=count(AT_LEAST, 1),
             start_date=date(2026, 11, 1), finish_date=date(2026, 11, 1))  # fmt: skip
    assert matches(r, event("e", at=to_ms("2026-11-01T00:00:00") + 86_399_999))
    assert not matches(r, event("e", at=to_ms("2026-11-01T00:00:00") + 86_400_000))


def test_a_date_stamp_ahead_of_arrival_counts_on_its_arrival_day():
    november = rule(rule_type=RuleType.DATE, count_condition=count(AT_LEAST, 1),
                    start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30))  # fmt: skip
    # Stamped in the range by a fast clock, but it arrived before the range opened: not counted.
    assert not matches(november, arrived("early", at="2026-11-02T00:00:00", arrival="2026-10-30T12:00:00"))
    # Stamped after the range, arrived inside it: counts as its arrival.
    assert matches(november, arrived("fast", at="2026-12-03T00:00:00", arrival="2026-11-30T12:00:00"))


def test_a_date_rule_counts_only_in_range_and_qualifies_once(event):
    r = rule(rule_type=RuleType.DATE, sum_condition=total(AT_LEAST, "100"),
             start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30))  # fmt: skip
    events = [
        event("e1", at="2026-10-31T10:00:00", metrics={"amount": 500}),
        event("e2", at="2026-11-02T10:00:00", metrics={"amount": 60}),
        event("e3", at="2026-11-03T10:00:00", metrics={"amount": 40}),
        event("e4", at="2026-11-04T10:00:00", metrics={"amount": 100}),
    ]
    state, (qualification,) = run(r, events)
    assert (qualification.event_id, qualification.name, qualification.value) == ("e3", "trk_date_purchase", "ready")
    assert (state.count, state.sum, state.qualified) == (3, Decimal(200), True)


# --- dedupe, users, coalescing --------------------------------------------------------------------


def test_a_repeated_event_id_counts_once_in_a_batch(event):
    r = rule(count_condition=count(EQUAL, 2), reset=True)
    e1, e2 = event("e1"), event("e2")
    state, qualifications = run(r, [e1, e1, e2, e2, e1])
    assert fired_by(qualifications) == ["e2"] and state.count == 0


def test_one_call_serves_one_user(event):
    with pytest.raises(ValueError, match="users 'u1' and 'u2'"):
        run(rule(count_condition=count(AT_LEAST, 1)), [event("e1"), event("e2", user="u2")])


def test_coalesce_groups_by_rule_and_user_in_stream_order_and_drops_repeats(event):
    buyers = rule(rule_id="buyers", count_condition=count(AT_LEAST, 1))
    sku = rule(rule_id="sku", count_condition=count(AT_LEAST, 1), attribute_filter=AttributeFilter("sku", "A1"))
    opens = rule(rule_id="opens", event_name="_email.open", count_condition=count(AT_LEAST, 1))
    e1 = event("e1", user="u1", attributes={"sku": "A1"})
    e2 = event("e2", "_email.open", user="u2")
    e3 = event("e3", user="u2")
    e4 = event("e4", user="u1")
    e1_again_changed = event("e1", user="u1", attributes={"sku": "B2"})
    groups = coalesce([buyers, sku, opens], [e1, e2, e3, e1_again_changed, e4, e2])
    assert groups == {
        ("buyers", "u1"): [e1, e4],
        ("sku", "u1"): [e1],
        ("opens", "u2"): [e2],
        ("buyers", "u2"): [e3],
    }
    assert list(groups) == [("buyers", "u1"), ("sku", "u1"), ("opens", "u2"), ("buyers", "u2")]


# --- window rules ---------------------------------------------------------------------------------


def window_rule(days: int = 3, **fields) -> Rule:
    return rule(rule_type=RuleType.WINDOW, window_days=days, **fields)


def on(day: int, hour: int = 12) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:00:00"


def test_event_day_is_the_utc_day():
    assert event_day(0) == date(1970, 1, 1)
    assert event_day(86_399_999) == date(1970, 1, 1)
    assert event_day(86_400_000) == date(1970, 1, 2)


def test_window_buckets_slide(event):
    r = window_rule(3, count_condition=count(AT_LEAST, 3), sum_condition=total(AT_LEAST, "0"))
    state, _ = run(r, [event("a", at=on(1), metrics={"m": 1})])
    state, _ = run(r, [event("b", at=on(2), metrics={"m": 2})], state)
    state, qualifications = run(r, [event("c", at=on(4), metrics={"m": 4})], state)
    # Processed on day 4 the window is days 2..4: day 1 has slid out and is dropped.
    assert qualifications == []
    assert state.buckets == (DayBucket(date(2026, 11, 2), 1, Decimal(2)), DayBucket(date(2026, 11, 4), 1, Decimal(4)))
    assert (state.count, state.sum, state.window_end) == (3, Decimal(7), date(2026, 11, 4))

    state, qualifications = run(r, [event("d", at=on(4, 20), metrics={"m": 8})], state)
    assert fired_by(qualifications) == ["d"]
    assert window_totals(r, state, date(2026, 11, 4)) == (3, Decimal(14))
    assert window_totals(r, state, date(2026, 11, 5)) == (2, Decimal(12))
    assert window_totals(r, state, date(2026, 11, 7)) == (0, Decimal(0))


def arrived(event_id: str, *, at: str, arrival: str, user: str = "u1") -> CanonicalEvent:
    return CanonicalEvent(event_id=event_id, source=EventSource.APP, event_type="purchase", event_time_ms=ms(at),
                          arrival_time_ms=ms(arrival), user_id=user, attributes={}, metrics={})


def test_a_backlog_counts_as_of_the_arrival_day_not_the_processing_day():
    r = window_rule(3, count_condition=count(AT_LEAST, 2))
    # Two events of day 1, processed only on day 5 (a backlog): they count as of their arrival, day 1.
    events = [arrived("a", at=on(1), arrival=on(1)), arrived("b", at=on(1), arrival=on(1, 13))]
    state, qualifications = run(r, events, now=on(5))
    assert fired_by(qualifications) == ["b"] and state.window_end == date(2026, 11, 1) and state.count == 2
    assert run(r, events, now=on(1, 13)) == (state, qualifications)  # the processing clock changes nothing
    assert next_exit_day(r, state, from_day=date(2026, 11, 5)) == date(2026, 11, 5)  # the sweeper takes it out


def test_a_batch_crossing_midnight_counts_each_event_as_of_its_own_arrival():
    # Review finding B: the window ended on the processing day, so an event arriving at 23:59:59, processed in
    # a batch whose clock had passed midnight, was counted as of the next day and a 1-day rule missed it.
    daily = window_rule(1, count_condition=count(AT_LEAST, 1))
    before = arrived("a", at="2026-11-30T23:59:58", arrival="2026-11-30T23:59:59")
    for now in ("2026-11-30T23:59:59", "2026-12-01T00:00:01", "2026-12-01T00:01:00", "2026-12-03T00:00:00"):
        state, qualifications = run(daily, [before], now=now)
        assert fired_by(qualifications) == ["a"] and state.window_end == date(2026, 11, 30), now


def test_two_containers_whose_clocks_differ_around_midnight_agree():
    r = window_rule(2, count_condition=count(AT_LEAST, 2))
    first = arrived("a", at=on(29, 10), arrival=on(29, 10))
    second = arrived("b", at="2026-11-30T23:59:30", arrival="2026-11-30T23:59:30")
    outcomes = set()
    for clock_a, clock_b in (("2026-11-29T10:00:01", "2026-11-30T23:59:31"),   # both on time
                             ("2026-11-29T10:00:01", "2026-12-01T00:00:31"),   # the second's clock a minute fast
                             ("2026-11-30T00:00:00", "2026-12-01T00:00:00")):  # both behind by a backlog
        state, fired_a = run(r, [first], now=clock_a)
        state, fired_b = run(r, [second], state, now=clock_b)
        outcomes.add((state, tuple(fired_by(fired_a + fired_b))))
    assert len(outcomes) == 1 and next(iter(outcomes))[1] == ("b",)


def test_a_stale_event_never_qualifies_for_a_window_it_is_older_than():
    week = window_rule(7, count_condition=count(AT_LEAST, 1))
    stale = arrived("old", at=on(1), arrival=on(12))  # happened 11 days before it arrived
    state, qualifications = run(week, [stale], now=on(12, 13))
    assert qualifications == [] and not state.qualified and state.count == 0


def test_an_event_stamped_ahead_counts_as_its_arrival_and_keeps_the_real_days():
    r = window_rule(3, count_condition=count(AT_LEAST, 3))
    state, _ = run(r, [arrived("a", at=on(10), arrival=on(10)), arrived("b", at=on(10, 13), arrival=on(10, 13))],
                   now=on(10, 14))
    ahead = arrived("c", at=on(15), arrival=on(10, 15))  # a device clock five days fast
    assert event_day(effective_time_ms(ahead)) == date(2026, 11, 10)
    state, qualifications = run(r, [ahead], state, now=on(10, 16))
    assert fired_by(qualifications) == ["c"]
    assert state.window_end == date(2026, 11, 10)
    assert state.buckets == (DayBucket(date(2026, 11, 10), 3, Decimal(0)),)


def test_the_arrival_caps_an_event_time_and_the_processing_clock_only_stands_in_for_a_missing_arrival():
    event = arrived("a", at=on(20), arrival=on(19))
    assert effective_time_ms(event) == effective_time_ms(event, ms(on(18))) == ms(on(19))
    assert arrival_ms(event, ms(on(25))) == ms(on(19))
    without = replace(event, arrival_time_ms=0)  # tests, tools: it arrives at its event time, not after the clock
    assert arrival_ms(without) == ms(on(20)) and arrival_ms(without, ms(on(18))) == ms(on(18))


def test_one_call_or_split_calls_give_the_same_result_for_one_processing_clock(event):
    r = window_rule(3, count_condition=count(AT_LEAST, 3))
    events = [event(f"e{i}", at=on(day)) for i, day in enumerate([1, 4, 5, 5, 3, 6])]
    whole = run(r, events, now=on(6, 23))
    first, fired_first = run(r, events[:2], now=on(6, 23))
    second, fired_second = run(r, events[2:], first, now=on(6, 23))
    assert whole == (second, fired_first + fired_second)


def test_window_exit_and_requalification(event):
    r = window_rule(3, count_condition=count(AT_LEAST, 2))
    state, _ = run(r, [event("a", at=on(1)), event("b", at=on(2))])
    assert state.qualified
    assert not exit_check(r, state, date(2026, 11, 3))  # days 1..3 still hold both
    assert exit_check(r, state, date(2026, 11, 4))  # days 2..4 hold one

    state = apply_exit(r, state, date(2026, 11, 4))
    assert not state.qualified
    assert state.buckets == (DayBucket(date(2026, 11, 2), 1, Decimal(0)),)
    assert state.window_end == date(2026, 11, 4)
    assert not exit_check(r, state, date(2026, 11, 4))  # not qualified: nothing to exit

    state, qualifications = run(r, [event("c", at=on(4))], state)
    assert fired_by(qualifications) == ["c"]
    assert qualifications[0].sequence == 2
    assert state.qualified


def test_exit_check_for_equal_means_no_longer_equal(event):
    r = window_rule(7, count_condition=count(EQUAL, 1))
    state, _ = run(r, [event("a", at=on(1)), event("b", at=on(1))])
    assert state.qualified and state.fired == 1
    assert exit_check(r, state, date(2026, 11, 1))


def test_exit_check_is_only_for_window_rules(event):
    r = rule(count_condition=count(AT_LEAST, 1))
    state, _ = run(r, [event("a")])
    assert not exit_check(r, state, date(2030, 1, 1))


def test_a_late_event_older_than_the_window_counts_for_nothing(event):
    r = window_rule(2, count_condition=count(AT_LEAST, 2))
    state, _ = run(r, [event("a", at=on(10))])
    state, qualifications = run(r, [event("late", at=on(3))], state, now=on(10, 13))
    assert qualifications == []
    assert state.count == 1
    assert state.buckets == (DayBucket(date(2026, 11, 10), 1, Decimal(0)),)


def test_a_late_event_inside_the_window_counts(event):
    r = window_rule(3, count_condition=count(AT_LEAST, 2))
    state, _ = run(r, [event("a", at=on(10))])
    _, qualifications = run(r, [event("late", at=on(8))], state, now=on(10, 13))
    assert fired_by(qualifications) == ["late"]


def test_the_sweeper_day_moves_the_window_for_later_events(event):
    r = window_rule(3, count_condition=count(AT_LEAST, 2))
    state = apply_exit(r, RuleState(buckets=(DayBucket(date(2026, 11, 1), 1, Decimal(0)),)), date(2026, 11, 9))
    assert state.buckets == () and state.window_end == date(2026, 11, 9)
    # Day 2 and day 3 would make two events in a window ending on day 3, but the window now ends on day 9.
    _, qualifications = run(r, [event("a", at=on(2)), event("b", at=on(3))], state, now=on(3))
    assert qualifications == []


# --- state records --------------------------------------------------------------------------------


def test_state_record_round_trips_through_json_exactly(event):
    r = window_rule(3, sum_condition=total(GREATER, "1000"))
    events = [event(f"e{i}", at=on(1 + i % 3), metrics={"m": 0.1 * i}) for i in range(10)]
    state, _ = run(r, events)
    record = json.loads(json.dumps(state.to_record()))
    assert RuleState.from_record(record) == state
    assert RuleState.from_record(RuleState().to_record()) == RuleState()
