"""Property tests: for random rule sets and event streams (few users, small targets, repeats), evaluating
one event per state write, one write per batch group, and an independent from-scratch model all agree."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.events.canonical import CanonicalEvent, EventSource
from functions.rules.evaluate import Qualification, RuleState, apply_events, coalesce
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


@st.composite
def streams(draw: st.DrawFn) -> list[CanonicalEvent]:
    """Events in stream order (times roughly increasing, some late), then repeats of earlier records."""
    events = []
    for index in range(draw(st.integers(0, 40))):
        day = draw(st.integers(0, DAYS - 1))
        time_in_day = draw(st.sampled_from([0, 1, DAY_MS // 2, DAY_MS - 1]))
        metric_names = draw(st.permutations(["m1", "m2"]).flatmap(lambda names: st.sampled_from(
            [names, names[:1], []])))  # fmt: skip
        events.append(
            CanonicalEvent(
                event_id=f"ev{index}",
                source=EventSource.APP,
                event_type=draw(st.sampled_from(["a", "a", "b", "trk_a"])),
                event_time_ms=(datetime.combine(FIRST_DAY, datetime.min.time(), timezone.utc) - EPOCH)
                // timedelta(milliseconds=1) + day * DAY_MS + time_in_day,
                arrival_time_ms=0,
                user_id=draw(st.sampled_from(["u1", "u1", "u2", "u3", None])),
                attributes=draw(st.sampled_from([{}, {"k": "x"}, {"k": "y"}, {"k": "X"}])),
                metrics={name: draw(st.sampled_from(METRIC_VALUES)) for name in metric_names},
            )
        )
    # A redelivered record is the same record again, later in the stream.
    for _ in range(draw(st.integers(0, 8)) if events else 0):
        copy = draw(st.sampled_from(events))
        events.insert(draw(st.integers(events.index(copy) + 1, len(events))), copy)
    return events


# --- three ways to evaluate -----------------------------------------------------------------------

Key = tuple[str, str]
Outcome = tuple[dict[Key, RuleState], dict[Key, list[Qualification]]]


def one_by_one(rule_set: RuleSet, stream: list[CanonicalEvent]) -> Outcome:
    """One state write per event; the state goes through its stored record between writes, and applied
    event ids are remembered as the store will."""
    records: dict[Key, dict] = {}
    fired: dict[Key, list[Qualification]] = defaultdict(list)
    applied: set[str] = set()
    for event in stream:
        if event.event_id in applied:
            continue
        applied.add(event.event_id)
        for rule in rule_set:
            key = (rule.rule_id, event.user_id)
            state = RuleState.from_record(records[key]) if key in records else RuleState()
            new_state, qualifications = apply_events(rule, state, [event])
            if new_state != state:
                records[key] = new_state.to_record()
            fired[key] += qualifications
    return {key: RuleState.from_record(record) for key, record in records.items()}, dict(fired)


def in_batches(rule_set: RuleSet, stream: list[CanonicalEvent], cuts: list[int]) -> Outcome:
    """The stream split into batches at `cuts`; one `apply_events` call (one write) per group per batch."""
    states: dict[Key, RuleState] = {}
    fired: dict[Key, list[Qualification]] = defaultdict(list)
    applied: set[str] = set()
    bounds = [0, *sorted(cuts), len(stream)]
    for start, end in zip(bounds, bounds[1:]):
        batch = [event for event in stream[start:end] if event.event_id not in applied]
        applied.update(event.event_id for event in batch)
        for (rule_id, user_id), events in coalesce(rule_set, batch).items():
            key = (rule_id, user_id)
            states[key], qualifications = apply_events(rule_set.by_id(rule_id), states.get(key, RuleState()), events)
            fired[key] += qualifications
    return states, dict(fired)


def day_of(event: CanonicalEvent) -> date:
    return (EPOCH + timedelta(milliseconds=event.event_time_ms)).date()


def model_counts(rule: Rule, event: CanonicalEvent) -> bool:
    if event.user_id is None or event.event_type != rule.event_name or event.event_type.startswith("trk_"):
        return False
    if rule.attribute_filter and event.attributes.get(rule.attribute_filter.name) != rule.attribute_filter.value:
        return False
    return rule.rule_type is not RuleType.DATE or rule.start_date <= day_of(event) <= rule.finish_date


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
    """The rule's qualifications per user, recomputed from scratch after every event with exact fractions
    and no shared code: user -> [(event_id, sequence)]."""
    seen: set[str] = set()
    history: dict[str, list[CanonicalEvent]] = defaultdict(list)
    since_reset: dict[str, int] = defaultdict(int)
    qualified: set[str] = set()
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for event in stream:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        if not model_counts(rule, event):
            continue
        user = event.user_id
        history[user].append(event)
        if rule.rule_type is RuleType.WINDOW:
            latest = max(day_of(e) for e in history[user])
            scope = [e for e in history[user] if (latest - day_of(e)).days < rule.window_days]
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
@given(rule_set=rule_sets, stream=streams())
def test_coalesced_equals_one_by_one(rule_set, stream):
    states_1, fired_1 = one_by_one(rule_set, stream)
    states_n, fired_n = in_batches(rule_set, stream, cuts=[])
    assert states_n == states_1
    assert nonempty(fired_n) == nonempty(fired_1)


@SETTINGS
@given(rule_set=rule_sets, stream=streams(), data=st.data())
def test_any_batching_equals_one_by_one(rule_set, stream, data):
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=5))
    states_1, fired_1 = one_by_one(rule_set, stream)
    states_n, fired_n = in_batches(rule_set, stream, cuts)
    assert states_n == states_1
    assert nonempty(fired_n) == nonempty(fired_1)


@SETTINGS
@given(rule_set=rule_sets, stream=streams())
def test_qualifications_match_a_from_scratch_model(rule_set, stream):
    _, fired = in_batches(rule_set, stream, cuts=[])
    for rule in rule_set:
        got = {user: [(q.event_id, q.sequence) for q in qualifications]
               for (rule_id, user), qualifications in fired.items() if rule_id == rule.rule_id and qualifications}
        assert got == model(rule, stream), rule
        for (rule_id, _), qualifications in fired.items():
            if rule_id == rule.rule_id:
                assert all(q.name == rule.action_name and q.kind is rule.action_kind for q in qualifications)


@SETTINGS
@given(rule_set=rule_sets, stream=streams())
def test_every_counted_event_counts_exactly_once(rule_set, stream):
    states, _ = in_batches(rule_set, stream, cuts=[])
    first_deliveries: dict[str, CanonicalEvent] = {}
    for event in stream:
        first_deliveries.setdefault(event.event_id, event)
    for rule in rule_set:
        expected_counts: dict[str, int] = defaultdict(int)
        expected_sums: dict[str, Fraction] = defaultdict(Fraction)
        for event in first_deliveries.values():
            if model_counts(rule, event):
                expected_counts[event.user_id] += 1
                expected_sums[event.user_id] += model_value(rule, event)
        got = {user: state for (rule_id, user), state in states.items() if rule_id == rule.rule_id}
        assert set(got) == set(expected_counts)
        if not rule.reset:  # a reset zeroes them
            assert {user: state.count for user, state in got.items()} == expected_counts
            if rule.sum_condition is not None:
                assert {user: Fraction(state.sum) for user, state in got.items()} == expected_sums
