"""Property tests: for random rule sets and event streams (few users, small targets, repeats, device clocks
behind and ahead of arrival), evaluating one event per state write, one write per batch group, and an
independent from-scratch model all agree — for any split into batches and any processing clocks at or after
the arrivals (each write its own container's clock, a backlog of days included): a window rule counts as of
the events' arrival, never as of the processing clock (docs/rules.md, "Time")."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.events.canonical import CanonicalEvent, EventSource
from functions.rules.evaluate import Qualification, RuleState, apply_events, coalesce, matches
from functions.rules.model import AttributeFilter, CountCondition, Operator, Rule, RuleSet, RuleType, SumCondition

DAY_MS = 86_400_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
FIRST_DAY = date(2026, 11, 1)
DAYS = 10
METRIC_VALUES = [0.1, 0.2, 0.25, 0.3, 1.0, 1.5, 2.0, -0.3, -1.0, 3.7]

# --- strategies -----------------------------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn, rule_id: str) -> Rule:
    rule_type = draw(st.sampled_from(RuleType))
    count = draw(st.none() | st.builds(CountCondition, st.sampled_from(Operator), st.integers(1, 4)))
    total = draw(
        st.builds(
            SumCondition,
            st.sampled_from(Operator),
            st.sampled_from(["0", "0.3", "0.5", "1", "2.5", "3", "-0.3"]).map(Decimal),
            st.sampled_from([None, "m1", "m2"]),
        )
        | st.none()
    )
    if count is None and total is None:
        count = CountCondition(Operator.AT_LEAST, draw(st.integers(0, 3)))
    start = FIRST_DAY + timedelta(days=draw(st.integers(0, DAYS - 1)))
    return Rule(
        rule_id=rule_id,
        rule_type=rule_type,
        event_name=draw(st.sampled_from(["a", "b"])),
        attribute_filter=draw(st.none() | st.builds(AttributeFilter, st.just("k"), st.sampled_from(["x", "y"]))),
        count_condition=count,
        sum_condition=total,
        reset=rule_type is RuleType.AGGREGATOR and draw(st.booleans()),
        start_date=start if rule_type is RuleType.DATE else None,
        finish_date=start + timedelta(days=draw(st.integers(0, 4))) if rule_type is RuleType.DATE else None,
        window_days=draw(st.integers(1, 4)) if rule_type is RuleType.WINDOW else None,
    )


rule_sets = st.integers(1, 4).flatmap(lambda n: st.tuples(*(rules(f"rule{i}") for i in range(n)))).map(RuleSet)


SKEWS_MS = [0, 0, 0, -3_600_000, -3 * DAY_MS, -11 * DAY_MS, 2 * DAY_MS]
"""Event time minus arrival: on time, an hour or days late (an offline device), a clock two days fast."""


@st.composite
def streams(draw: st.DrawFn) -> list[CanonicalEvent]:
    """Events in stream order (arrival order; event times late or ahead by `SKEWS_MS`), then repeats of
    earlier records."""
    events = []
    first_ms = (datetime.combine(FIRST_DAY, datetime.min.time(), timezone.utc) - EPOCH) // timedelta(milliseconds=1)
    for index in range(draw(st.integers(0, 40))):
        day = draw(st.integers(0, DAYS - 1))
        time_in_day = draw(st.sampled_from([0, 1, DAY_MS // 2, DAY_MS - 1]))
        metric_names = draw(st.permutations(["m1", "m2"]).flatmap(lambda names: st.sampled_from(
            [names, names[:1], []])))  # fmt: skip
        arrival = first_ms + day * DAY_MS + time_in_day
        events.append(
            CanonicalEvent(
                event_id=f"ev{index}",
                source=EventSource.APP,
                event_type=draw(st.sampled_from(["a", "a", "b", "trk_a"])),
                event_time_ms=arrival + draw(st.sampled_from(SKEWS_MS)),
                arrival_time_ms=arrival,
                user_id=draw(st.sampled_from(["u1", "u1", "u2", "u3", None])),
                attributes=draw(st.sampled_from([{}, {"k": "x"}, {"k": "y"}, {"k": "X"}])),
                metrics={name: draw(st.sampled_from(METRIC_VALUES)) for name in metric_names},
            )
        )
    events.sort(key=lambda event: event.arrival_time_ms)
    # A redelivered record is the same record again, later in the stream.
    for _ in range(draw(st.integers(0, 8)) if events else 0):
        copy = draw(st.sampled_from(events))
        events.insert(draw(st.integers(events.index(copy) + 1, len(events))), copy)
    return events


LAGS_MS = [0, 1, 60_000, DAY_MS // 2, DAY_MS, 3 * DAY_MS]
lags = st.sampled_from(LAGS_MS)
"""How long after the newest arrival the engine processes (a minute past midnight, a backlog of days)."""


def clock_after(stream: list[CanonicalEvent], lag: int) -> int:
    return max((event.arrival_time_ms for event in stream), default=0) + lag


def clocks_for(data: st.DataObject, stream: list[CanonicalEvent], cuts: list[int]) -> list[int]:
    """A processing clock per batch: each at or after its own batch's newest arrival by its own lag, so two
    containers may disagree by minutes or days and a later batch may run on an earlier clock."""
    bounds = [0, *sorted(cuts), len(stream)]
    return [clock_after(stream[start:end], data.draw(lags)) for start, end in zip(bounds, bounds[1:])]


# --- three ways to evaluate -----------------------------------------------------------------------

Key = tuple[str, str]
Outcome = tuple[dict[Key, RuleState], dict[Key, list[Qualification]]]


def one_by_one(rule_set: RuleSet, stream: list[CanonicalEvent], lag: int = 0) -> Outcome:
    """One state write per event, each `lag` after that event's arrival; the state goes through its stored
    record between writes, and applied event ids are remembered as the store will."""
    records: dict[Key, dict] = {}
    fired: dict[Key, list[Qualification]] = defaultdict(list)
    applied: set[str] = set()
    for event in stream:
        if event.event_id in applied:
            continue
        applied.add(event.event_id)
        for rule in rule_set:
            if not matches(rule, event):  # the store writes only the groups `coalesce` makes
                continue
            key = (rule.rule_id, event.user_id)
            state = RuleState.from_record(records[key]) if key in records else RuleState()
            new_state, qualifications = apply_events(rule, state, [event], now_ms=event.arrival_time_ms + lag)
            if new_state != state:
                records[key] = new_state.to_record()
            fired[key] += qualifications
    return {key: RuleState.from_record(record) for key, record in records.items()}, dict(fired)


def in_batches(rule_set: RuleSet, stream: list[CanonicalEvent], cuts: list[int], clocks: list[int] | None = None
               ) -> Outcome:
    """The stream split into batches at `cuts`; one `apply_events` call (one write) per group per batch, batch
    `i` at processing clock `clocks[i]` (default: its newest arrival)."""
    states: dict[Key, RuleState] = {}
    fired: dict[Key, list[Qualification]] = defaultdict(list)
    applied: set[str] = set()
    bounds = [0, *sorted(cuts), len(stream)]
    for index, (start, end) in enumerate(zip(bounds, bounds[1:])):
        clock = clocks[index] if clocks is not None else clock_after(stream[start:end], 0)
        batch = [event for event in stream[start:end] if event.event_id not in applied]
        applied.update(event.event_id for event in batch)
        for (rule_id, user_id), events in coalesce(rule_set, batch).items():
            key = (rule_id, user_id)
            states[key], qualifications = apply_events(rule_set.by_id(rule_id), states.get(key, RuleState()), events,
                                                       now_ms=clock)
            fired[key] += qualifications
    return states, dict(fired)


def day_of(event: CanonicalEvent) -> date:
    """The day the event counts on: its time, or its arrival when its clock ran ahead."""
    return (EPOCH + timedelta(milliseconds=min(event.event_time_ms, event.arrival_time_ms))).date()


def arrival_day(event: CanonicalEvent) -> date:
    return (EPOCH + timedelta(milliseconds=event.arrival_time_ms)).date()


def model_matches(rule: Rule, event: CanonicalEvent) -> bool:
    """Whether the rule looks at the event at all (its user, type and filter; a date rule: its range)."""
    if event.user_id is None or event.event_type != rule.event_name or event.event_type.startswith("trk_"):
        return False
    if rule.attribute_filter and event.attributes.get(rule.attribute_filter.name) != rule.attribute_filter.value:
        return False
    return rule.rule_type is not RuleType.DATE or rule.start_date <= day_of(event) <= rule.finish_date


def in_window(rule: Rule, event: CanonicalEvent, as_of: date) -> bool:
    return (as_of - day_of(event)).days < rule.window_days


def as_of_days(rule: Rule, stream: list[CanonicalEvent]) -> dict[str, date]:
    """Window rules: the day each first delivery is counted as of — the latest arrival day of its user's
    events the rule has looked at so far, itself included."""
    latest: dict[str, date] = {}
    out: dict[str, date] = {}
    for event in stream:
        if event.event_id in out or not model_matches(rule, event):
            continue
        latest[event.user_id] = max(latest.get(event.user_id, arrival_day(event)), arrival_day(event))
        out[event.event_id] = latest[event.user_id]
    return out


def model_value(rule: Rule, event: CanonicalEvent) -> Fraction:
    metrics = list(event.metrics.items())
    if rule.sum_condition is None or not metrics:
        return Fraction(0)
    if rule.sum_condition.metric_name is None:
        return Fraction(str(metrics[0][1]))
    return Fraction(str(event.metrics.get(rule.sum_condition.metric_name, 0.0)))


def model_holds(operator: Operator, left: Fraction | int, right: Fraction | int) -> bool:
    return {"equal": left == right, "greater": left > right, "at_least": left >= right}[operator.value]


def model(rule: Rule, stream: list[CanonicalEvent]) -> dict[str, list[tuple[str, int]]]:
    """The rule's qualifications per user, recomputed from scratch after every event with exact fractions and
    no shared code, whatever the processing clocks: user -> [(event_id, sequence)]."""
    seen: set[str] = set()
    history: dict[str, list[CanonicalEvent]] = defaultdict(list)
    since_reset: dict[str, int] = defaultdict(int)
    qualified: set[str] = set()
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    as_of = as_of_days(rule, stream) if rule.rule_type is RuleType.WINDOW else {}
    for event in stream:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        if not model_matches(rule, event):
            continue
        if rule.rule_type is RuleType.WINDOW and not in_window(rule, event, as_of[event.event_id]):
            continue  # older than the window as of its arrival: counts for nothing
        user = event.user_id
        history[user].append(event)
        if rule.rule_type is RuleType.WINDOW:
            scope = [e for e in history[user] if in_window(rule, e, as_of[event.event_id])]
        else:
            scope = history[user][since_reset[user]:]
        count, total = len(scope), sum((model_value(rule, e) for e in scope), Fraction(0))
        count_condition, sum_condition = rule.count_condition, rule.sum_condition
        met = (count_condition is None or model_holds(count_condition.operator, count, count_condition.target)) and (
            sum_condition is None or model_holds(sum_condition.operator, total, Fraction(sum_condition.target)))
        if met and rule.reset:
            out[user].append((event.event_id, len(out[user]) + 1))
            since_reset[user] = len(history[user])
        elif met and user not in qualified:
            qualified.add(user)
            out[user].append((event.event_id, len(out[user]) + 1))
    return dict(out)


def nonempty(fired: dict[Key, list[Qualification]]) -> dict[Key, list[Qualification]]:
    return {key: qualifications for key, qualifications in fired.items() if qualifications}


# --- properties -----------------------------------------------------------------------------------

SETTINGS = settings(max_examples=400, deadline=None)


@SETTINGS
@given(rule_set=rule_sets, stream=streams(), lag=lags)
def test_coalesced_equals_one_by_one(rule_set, stream, lag):
    states_1, fired_1 = one_by_one(rule_set, stream, lag)
    states_n, fired_n = in_batches(rule_set, stream, cuts=[], clocks=[clock_after(stream, lag)])
    assert states_n == states_1
    assert nonempty(fired_n) == nonempty(fired_1)


@SETTINGS
@given(rule_set=rule_sets, stream=streams(), lag=lags, data=st.data())
def test_any_batching_and_any_clocks_equal_one_by_one(rule_set, stream, lag, data):
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=5))
    states_1, fired_1 = one_by_one(rule_set, stream, lag)
    states_n, fired_n = in_batches(rule_set, stream, cuts, clocks_for(data, stream, cuts))
    assert states_n == states_1
    assert nonempty(fired_n) == nonempty(fired_1)


@SETTINGS
@given(rule_set=rule_sets, stream=streams(), data=st.data())
def test_qualifications_match_a_from_scratch_model(rule_set, stream, data):
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=5))
    _, fired = in_batches(rule_set, stream, cuts, clocks_for(data, stream, cuts))
    for rule in rule_set:
        got = {user: [(q.event_id, q.sequence) for q in qualifications]
               for (rule_id, user), qualifications in fired.items() if rule_id == rule.rule_id and qualifications}
        assert got == model(rule, stream), rule
        for (rule_id, _), qualifications in fired.items():
            if rule_id == rule.rule_id:
                assert all(q.name == rule.action_name and q.kind is rule.action_kind for q in qualifications)


@SETTINGS
@given(rule_set=rule_sets, stream=streams(), data=st.data())
def test_every_counted_event_counts_exactly_once(rule_set, stream, data):
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=5))
    states, _ = in_batches(rule_set, stream, cuts, clocks_for(data, stream, cuts))
    first_deliveries: dict[str, CanonicalEvent] = {}
    for event in stream:
        first_deliveries.setdefault(event.event_id, event)
    for rule in rule_set:
        expected_counts: dict[str, int] = defaultdict(int)
        expected_sums: dict[str, Fraction] = defaultdict(Fraction)
        matched: set[str] = set()
        as_of = as_of_days(rule, stream) if rule.rule_type is RuleType.WINDOW else {}
        for event in first_deliveries.values():
            if not model_matches(rule, event):
                continue
            matched.add(event.user_id)  # a group was written, even if the window counted nothing
            if rule.rule_type is not RuleType.WINDOW or in_window(rule, event, as_of[event.event_id]):
                expected_counts[event.user_id] += 1
                expected_sums[event.user_id] += model_value(rule, event)
        got = {user: state for (rule_id, user), state in states.items() if rule_id == rule.rule_id}
        assert set(got) == matched
        if not rule.reset:  # a reset zeroes them
            assert {user: state.count for user, state in got.items()} == {u: expected_counts.get(u, 0) for u in got}
            if rule.sum_condition is not None:
                assert {user: Fraction(state.sum) for user, state in got.items()} == {
                    u: expected_sums.get(u, Fraction(0)) for u in got}
