"""Pure rule evaluation: which events a rule counts, and how a user's counted events move its state.

State is kept per (rule, user) in a `RuleState`. `apply_events` folds an ordered list of one user's events
into a state, one event at a time, checking the rule after each, so the store may call it once per event or
once per batch with the same result: for any split of a user's events into consecutive runs, and any
processing clocks `t1`, `t2`, `t` at or after the events' arrivals,

    apply_events(rule, apply_events(rule, s, first, now_ms=t1)[0], rest, now_ms=t2)

gives the same state as `apply_events(rule, s, first + rest, now_ms=t)` and the two qualification lists
concatenated (provided no event id appears in both runs).

Time (docs/rules.md, "Time"): an event is taken to have happened at `effective_time_ms` — its event time, but
never after its Kinesis arrival (a device clock running ahead cannot put an event in a future date range or
move a window). A window rule counts an event as of its **arrival day**: the window ends on the latest arrival
day of the events applied (or the later day the sweeper already reached), never on an event's own day nor on
the processing clock. The arrival is the one clock every consumer and the backfill share, so the result
depends neither on how records are batched nor on which container's clock processes them; `now_ms` is used
only for an event built without an arrival (tests, tools: it is taken to arrive at its event time, but not
after `now_ms`).

Sums are `Decimal`s so that equality holds exactly, whatever the grouping. Nothing here remembers which
events were applied: a record delivered twice in *different* batches must be stopped by the store.
"""

from __future__ import annotations

import decimal
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

from functions.events.canonical import CanonicalEvent
from functions.rules.keys import qualification_key
from functions.rules.model import ENGINE_EVENT_PREFIX, READY, ActionKind, Rule, RuleType

DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
_ZERO = Decimal(0)

# DynamoDB numbers carry 38 significant digits; summing in that precision means every sum the store
# writes reads back as the same number, so per-event writes and one batched write stay identical.
_SUMS = decimal.Context(prec=38, traps=[decimal.InvalidOperation, decimal.Overflow])


def event_day(event_time_ms: int) -> date:
    """The UTC day an event happened on."""
    return _EPOCH + timedelta(days=event_time_ms // DAY_MS)


def arrival_ms(event: CanonicalEvent, now_ms: int | None = None) -> int:
    """The event's Kinesis arrival: the day a window rule counts it as of. An event built without one (0: tests,
    tools) is taken to arrive at its event time, but no later than `now_ms`, the processing clock, when given."""
    if event.arrival_time_ms > 0:
        return event.arrival_time_ms
    return event.event_time_ms if now_ms is None else min(event.event_time_ms, now_ms)


def effective_time_ms(event: CanonicalEvent, now_ms: int | None = None) -> int:
    """When the engine takes `event` to have happened: its event time, but no later than its arrival (a time
    ahead of arrival counts as its arrival). The normaliser already clamps to arrival; this is the engine's own
    guard (docs/rules.md, "Time"). `now_ms` matters only for an event without an arrival (`arrival_ms`)."""
    return min(event.event_time_ms, arrival_ms(event, now_ms))


def _day_start_ms(day: date) -> int:
    return (day - _EPOCH).days * DAY_MS


@dataclass(frozen=True, slots=True)
class DayBucket:
    """A window rule's counted events on one UTC day."""

    day: date
    count: int
    sum: Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleState:
    """What the engine remembers for one (rule, user).

    `count`/`sum`: counted events and their metric sum (since the last reset, for resetting rules; all
    time for window rules, whose conditions read `buckets` instead). `qualified`: the user holds the rule's
    attribute (never set by resetting rules). `fired`: qualifications so far, which numbers them.
    `buckets` (window rules): per-day totals inside the window ending at `window_end`, oldest first;
    `window_end` is the latest day the window has reached: the latest arrival day of the events applied, or
    the sweeper's day of an exit (never an event's own time). A window rule's `count`/`sum` total the events it
    counted: an event already older than the window as of its arrival counts for nothing, there as in the
    buckets.
    """

    count: int = 0
    sum: Decimal = _ZERO
    qualified: bool = False
    fired: int = 0
    buckets: tuple[DayBucket, ...] = ()
    window_end: date | None = None

    def to_record(self) -> dict[str, Any]:
        """A JSON- and DynamoDB-safe mapping; decimals as strings so nothing is rounded in transit."""
        return {
            "count": self.count,
            "sum": str(self.sum),
            "qualified": self.qualified,
            "fired": self.fired,
            "buckets": [[b.day.isoformat(), b.count, str(b.sum)] for b in self.buckets],
            "window_end": self.window_end.isoformat() if self.window_end else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RuleState:
        return cls(
            count=int(record["count"]),
            sum=Decimal(str(record["sum"])),
            qualified=bool(record["qualified"]),
            fired=int(record["fired"]),
            buckets=tuple(DayBucket(date.fromisoformat(d), int(c), Decimal(str(s))) for d, c, s in record["buckets"]),
            window_end=date.fromisoformat(record["window_end"]) if record.get("window_end") else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Qualification:
    """A user met a rule: set attribute `name` = `value`, or (kind event) emit event `name`.

    `sequence` numbers a (rule, user)'s qualifications from 1, so `key` names this one uniquely and
    deterministically: a retried batch produces the same key, which lets the outbox drop the repeat.
    """

    rule_id: str
    user_id: str
    kind: ActionKind
    name: str
    value: str | None
    sequence: int
    event_id: str
    event_time_ms: int

    @property
    def key(self) -> str:
        return qualification_key(self.rule_id, self.user_id, self.sequence)


def matches(rule: Rule, event: CanonicalEvent) -> bool:
    """Whether `rule` counts `event`. Events without a user never match (the caller reports them), and
    neither do the engine's own `trk_` events."""
    if event.user_id is None or event.event_type.startswith(ENGINE_EVENT_PREFIX):
        return False
    if event.event_type != rule.event_name:
        return False
    flt = rule.attribute_filter
    if flt is not None and event.attributes.get(flt.name) != flt.value:
        return False
    if rule.rule_type is RuleType.DATE:
        assert rule.start_date is not None and rule.finish_date is not None
        first_ms = _day_start_ms(rule.start_date)
        last_ms = _day_start_ms(rule.finish_date) + DAY_MS - 1
        # A stamp ahead of the record's arrival must not land in a future date range.
        return first_ms <= effective_time_ms(event) <= last_ms
    return True


def metric_value(rule: Rule, event: CanonicalEvent) -> Decimal:
    """What `event` adds to the rule's sum: the rule's metric, else the record's first metric, else 0."""
    metric = rule.sum_condition.metric_name if rule.sum_condition else None
    if metric is not None:
        value = event.metrics.get(metric)
    else:
        value = next(iter(event.metrics.values()), None)
    if value is None or not math.isfinite(value):
        return _ZERO  # a NaN would make every later comparison false and cannot be stored
    # str() is the shortest text that round-trips the float, so 0.1 adds exactly 0.1.
    return Decimal(str(value))


def conditions_met(rule: Rule, count: int, total: Decimal) -> bool:
    """The rule's count and sum conditions, AND-ed (a missing condition holds)."""
    count_ok = rule.count_condition is None or rule.count_condition.operator.holds(count, rule.count_condition.target)
    sum_ok = rule.sum_condition is None or rule.sum_condition.operator.holds(total, rule.sum_condition.target)
    return count_ok and sum_ok


def _window_start(rule: Rule, as_of_day: date) -> date:
    assert rule.window_days is not None
    return as_of_day - timedelta(days=rule.window_days - 1)


def window_totals(rule: Rule, state: RuleState, as_of_day: date) -> tuple[int, Decimal]:
    """Count and sum of the window rule's events in the `window_days` days ending on `as_of_day`."""
    first = _window_start(rule, as_of_day)
    return _add_up((b.count, b.sum) for b in state.buckets if first <= b.day <= as_of_day)


def _add_up(day_totals: Iterable[tuple[int, Decimal]]) -> tuple[int, Decimal]:
    count, total = 0, _ZERO
    for day_count, day_sum in day_totals:
        count, total = count + day_count, _SUMS.add(total, day_sum)
    return count, total


def exit_check(rule: Rule, state: RuleState, as_of_day: date) -> bool:
    """Whether the sweeper should take a window rule's qualified user out: the rule no longer holds over
    the window ending on `as_of_day` (for `equal`, that includes going above the target)."""
    if rule.rule_type is not RuleType.WINDOW or not state.qualified:
        return False
    return not conditions_met(rule, *window_totals(rule, state, as_of_day))


def apply_exit(rule: Rule, state: RuleState, as_of_day: date) -> RuleState:
    """The state after the sweeper takes the user out on `as_of_day`: not qualified (so a later event can
    qualify the user again), and the window moved on to that day."""
    window_end = max(as_of_day, state.window_end) if state.window_end else as_of_day
    first = _window_start(rule, window_end)
    return RuleState(
        count=state.count,
        sum=state.sum,
        qualified=False,
        fired=state.fired,
        buckets=tuple(b for b in state.buckets if b.day >= first),
        window_end=window_end,
    )


def apply_events(
    rule: Rule, state: RuleState, events: Iterable[CanonicalEvent], *, now_ms: int
) -> tuple[RuleState, list[Qualification]]:
    """Apply one user's events to `state` in order, checking the rule after each; return the new state and
    the qualifications fired. `now_ms` is the processing clock (the store's); the result is the same for any
    `now_ms` at or after the events' arrivals (it only stands in for a missing arrival, `arrival_ms`).

    Events the rule does not count are skipped, and an event id seen earlier in `events` counts once.
    Resetting rules fire each time the rule is met and zero the count and sum; the others qualify the
    user the first time and keep counting. A window rule's window moves, event by event, to the event's
    arrival day when that is later than `window_end`: an event whose effective day is older than the window
    counts for nothing, and a stamp ahead of its arrival counts on its arrival day.
    """
    count, total, qualified, fired = state.count, state.sum, state.qualified, state.fired
    buckets = {b.day: (b.count, b.sum) for b in state.buckets}
    window_end = state.window_end
    window = rule.rule_type is RuleType.WINDOW
    user_id: str | None = None
    seen: set[str] = set()
    qualifications: list[Qualification] = []

    for event in events:
        if event.event_id in seen or not matches(rule, event):
            continue
        seen.add(event.event_id)
        if user_id is None:
            user_id = event.user_id
        elif event.user_id != user_id:
            raise ValueError(f"apply_events got events of users {user_id!r} and {event.user_id!r}; "
                             "state is per (rule, user)")
        value = metric_value(rule, event)

        if window:
            arrived = event_day(arrival_ms(event, now_ms))
            if window_end is None or arrived > window_end:
                window_end = arrived
                first = _window_start(rule, window_end)
                buckets = {d: totals for d, totals in buckets.items() if d >= first}  # the days that slid out
            day = event_day(effective_time_ms(event, now_ms))
            if day < _window_start(rule, window_end):
                continue  # older than the window as of its arrival (or a later one): counts for nothing
            count, total = count + 1, _SUMS.add(total, value)
            day_count, day_sum = buckets.get(day, (0, _ZERO))
            buckets[day] = (day_count + 1, _SUMS.add(day_sum, value))
            met = conditions_met(rule, *_add_up(buckets.values()))
        else:
            count, total = count + 1, _SUMS.add(total, value)
            met = conditions_met(rule, count, total)

        if not met or qualified:  # never set for resetting rules
            continue
        fired += 1
        qualifications.append(
            Qualification(
                rule_id=rule.rule_id,
                user_id=event.user_id,
                kind=rule.action_kind,
                name=rule.action_name,
                value=None if rule.reset else READY,
                sequence=fired,
                event_id=event.event_id,
                event_time_ms=event.event_time_ms,
            )
        )
        if rule.reset:
            count, total = 0, _ZERO
        else:
            qualified = True

    new_state = RuleState(
        count=count,
        sum=total,
        qualified=qualified,
        fired=fired,
        buckets=tuple(DayBucket(day, c, s) for day, (c, s) in sorted(buckets.items())),
        window_end=window_end,
    )
    return new_state, qualifications


def coalesce(
    rules: Iterable[Rule], events: Iterable[CanonicalEvent]
) -> dict[tuple[str, str], list[CanonicalEvent]]:
    """Group a batch's events by the (rule_id, user_id) that counts them, keeping stream order, so that
    one `apply_events` call (one state write) serves each group.

    A user's repeated event id is dropped (the first wins); another user's record with the same id is another
    event. Events without a user and `trk_` events land in no
    group; the caller reports the former.
    """
    rules = tuple(rules)
    groups: dict[tuple[str, str], list[CanonicalEvent]] = defaultdict(list)
    seen: set[tuple[str | None, str]] = set()
    for event in events:
        if (event.user_id, event.event_id) in seen:
            continue
        seen.add((event.user_id, event.event_id))
        for rule in rules:
            if matches(rule, event):
                assert event.user_id is not None
                groups[(rule.rule_id, event.user_id)].append(event)
    return dict(groups)


def without_user(events: Sequence[CanonicalEvent]) -> list[CanonicalEvent]:
    """The events no rule can count because they name no user (to be reported, not silently lost)."""
    return [event for event in events if event.user_id is None]


def next_exit_day(rule: Rule, state: RuleState, *, from_day: date | None = None) -> date | None:
    """The first day on or after `from_day` (and the state's `window_end`) on which, with no new events, a
    qualified window-rule user no longer meets the rule; None if that never happens or the user holds nothing
    to exit from. The sweeper looks at the user again on that day."""
    if rule.rule_type is not RuleType.WINDOW or not state.qualified or state.window_end is None:
        return None
    assert rule.window_days is not None
    first = state.window_end if from_day is None else max(from_day, state.window_end)
    # Totals only change on the day a bucket slides out, so those days (and `first`) are the only candidates;
    # once every bucket is out the totals stay at zero for good.
    leaving = {bucket.day + timedelta(days=rule.window_days) for bucket in state.buckets}
    for day in sorted({first, *(d for d in leaving if d > first)}):
        if not conditions_met(rule, *window_totals(rule, state, day)):
            return day
    return None


def apply_backfill(
    rule: Rule, state: RuleState, days: Iterable[DayBucket], activation_ms: int, *, user_id: str
) -> tuple[RuleState, list[Qualification]]:
    """Merge a user's events from before the rule's activation (per-day totals read from the lake) into a
    state that already holds the events counted since, and qualify the user if the rule is met.

    Only for date and window rules, which qualify at most once and never reset. The backfilled events
    arrived before every event already in `state`, so a date rule is checked after each backfilled day (in day
    order) and then on the merged totals; a window rule is checked once, over the window ending on the later
    of the activation day and the latest day seen, so only a user who meets it *now* is marked. For conditions
    that only grow (`greater`/`at_least` with non-negative metrics) that is exactly what evaluating every event
    in stream order gives; for `equal` or negative metrics, a target passed and left within one day is missed.
    """
    if rule.rule_type is RuleType.AGGREGATOR:
        raise ValueError(f"rule {rule.rule_id!r}: only date and window rules are backfilled")
    days = sorted(days, key=lambda bucket: bucket.day)
    if not days:
        return state, []
    added_count, added_sum = _add_up((b.count, b.sum) for b in days)
    count, total = state.count + added_count, _SUMS.add(state.sum, added_sum)
    buckets, window_end = state.buckets, state.window_end

    if rule.rule_type is RuleType.WINDOW:
        window_end = max(d for d in (state.window_end, event_day(activation_ms), days[-1].day) if d is not None)
        first = _window_start(rule, window_end)
        merged = {b.day: (b.count, b.sum) for b in state.buckets if b.day >= first}
        for bucket in days:
            if bucket.day >= first:
                day_count, day_sum = merged.get(bucket.day, (0, _ZERO))
                merged[bucket.day] = (day_count + bucket.count, _SUMS.add(day_sum, bucket.sum))
        buckets = tuple(DayBucket(day, c, s) for day, (c, s) in sorted(merged.items()))
        met = conditions_met(rule, *_add_up(merged.values()))
    else:
        running_count, running_sum, met = 0, _ZERO, False
        for bucket in days:
            running_count, running_sum = running_count + bucket.count, _SUMS.add(running_sum, bucket.sum)
            met = met or conditions_met(rule, running_count, running_sum)
        met = met or conditions_met(rule, count, total)

    qualified, fired, qualifications = state.qualified, state.fired, []
    if met and not qualified:
        qualified, fired = True, fired + 1
        qualifications.append(Qualification(
            rule_id=rule.rule_id, user_id=user_id, kind=rule.action_kind, name=rule.action_name, value=READY,
            sequence=fired, event_id="", event_time_ms=activation_ms,
        ))
    new_state = RuleState(count=count, sum=total, qualified=qualified, fired=fired, buckets=buckets,
                          window_end=window_end)
    return new_state, qualifications
