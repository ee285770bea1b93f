"""What the rules say about counting, beside the rules and apart from any storage: when a rule counts an event
(`counts_now`, `counting_closes_ms`), how long its counters must live (`counter_expires_at`), and what applying
one user's deliveries does to a stored counter (`GroupStep`: the redelivery and duplicate marks checked, the
events evaluated, the qualifications turned into outbox entries, the marks moved on).

Both counter stores (`store.py` on DynamoDB, `memory_store.py` in memory) run the same `GroupStep` inside
their read → compute → conditional-write loop, so the local engine and the Lambda differ only in storage.
Semantics: docs/rules.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Sequence

from functions.events.canonical import CanonicalEvent
from functions.rules.counter_item import CounterItem, Write
from functions.rules.dedupe import Delivery, advance_hwm, remember
from functions.rules.evaluate import Qualification, RuleState, apply_events, event_day
from functions.rules.model import Rule, RuleType
from functions.rules.outbox import OutboxEntry

DATE_RULE_GRACE_DAYS = 30
"""A date rule counts events arriving up to this many days after its finish date; then its counters expire."""
WINDOW_TTL_SLACK_DAYS = 2
MAX_OUTBOX_PER_WRITE = 99
"""TransactWriteItems takes at most 100 actions, and one of them is the counter
(https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html). The memory
store splits writes the same way, so both stores number and time qualifications alike."""

_DAY_SECONDS = 86_400
_EPOCH = date(1970, 1, 1)


def _day_start_seconds(day: date) -> int:
    return (day - _EPOCH).days * _DAY_SECONDS


def counting_closes_ms(rule: Rule) -> int | None:
    """For a date rule, the arrival time from which it counts nothing more (its finish day + the grace days),
    which is also when its counters expire; None for other rules. Without it, a very late event could find
    the counter gone and start a second count for a user who already qualified."""
    if rule.finish_date is None:
        return None
    return (_day_start_seconds(rule.finish_date) + (1 + DATE_RULE_GRACE_DAYS) * _DAY_SECONDS) * 1000


def counts_now(rule: Rule, event: CanonicalEvent, activation_ms: int | None) -> bool:
    """Whether the aggregator counts a matching event for `rule`: aggregator rules always; date and window
    rules only if it arrived at or after their activation (and, for date rules, before counting closes)."""
    if rule.rule_type is RuleType.AGGREGATOR:
        return True
    if activation_ms is None or event.arrival_time_ms < activation_ms:
        return False
    closes = counting_closes_ms(rule)
    return closes is None or event.arrival_time_ms < closes


def counter_expires_at(rule: Rule, state: RuleState, now_ms: int, *, counter_ttl_days: int) -> int:
    """The TTL (epoch seconds) the rule's type gives a counter written at `now_ms` (the processing clock)."""
    if rule.rule_type is RuleType.DATE:
        closes = counting_closes_ms(rule)
        assert closes is not None
        return closes // 1000
    if rule.rule_type is RuleType.WINDOW:
        assert rule.window_days is not None
        # The window ends on an arrival day, which a backlog puts days before the processing day: the
        # counter must outlive both (a qualified user's exit is due from today).
        last_day = max(state.window_end or event_day(now_ms), event_day(now_ms))
        return _day_start_seconds(last_day) + (rule.window_days + WINDOW_TTL_SLACK_DAYS) * _DAY_SECONDS
    return now_ms // 1000 + counter_ttl_days * _DAY_SECONDS


@dataclass(frozen=True, slots=True)
class GroupResult:
    """What applying a group of deliveries did."""

    applied: int = 0
    duplicates: int = 0
    writes: int = 0
    qualifications: tuple[Qualification, ...] = ()

    def __add__(self, other: GroupResult) -> GroupResult:
        return GroupResult(self.applied + other.applied, self.duplicates + other.duplicates,
                           self.writes + other.writes, self.qualifications + other.qualifications)


def is_duplicate(item: CounterItem, delivery: Delivery) -> bool:
    """Whether the item's marks say this delivery was applied already: a sequence number at or below its
    (shard, partition key) mark — Lambda delivers one partition key's records of a shard in order — or an
    event id applied within the dedupe horizon."""
    mark = item.hwm.get(delivery.mark_key)
    if mark is not None and int(delivery.sequence_number) <= int(mark.sequence_number):
        return True
    return item.has_seen(delivery.event.event_id)


class GroupStep:
    """The compute step for one group of a user's deliveries to one rule, given the item as read; remembers
    how many deliveries the last computed write covers (a write carries at most `MAX_OUTBOX_PER_WRITE`
    qualifications) and what it did (`result`)."""

    def __init__(self, rule: Rule, deliveries: Sequence[Delivery], created_ms: int, horizon_ms: int) -> None:
        self.rule, self.deliveries, self.created_ms, self.horizon_ms = rule, deliveries, created_ms, horizon_ms
        self.covered, self.result = len(deliveries), GroupResult()

    def __call__(self, item: CounterItem) -> Write | None:
        fresh, ids = [], set()
        for index, delivery in enumerate(self.deliveries):
            if not is_duplicate(item, delivery) and delivery.event.event_id not in ids:
                fresh.append(index)
                ids.add(delivery.event.event_id)
        self.covered = len(self.deliveries)
        if not fresh:
            self.result = GroupResult(duplicates=len(self.deliveries))
            return None
        now_ms = self.created_ms
        state, qualifications = apply_events(self.rule, item.state, [self.deliveries[i].event for i in fresh],
                                             now_ms=now_ms)
        if len(qualifications) > MAX_OUTBOX_PER_WRITE:
            # Stop at the event that fired the last qualification this write can carry; the rest is next.
            last = qualifications[MAX_OUTBOX_PER_WRITE - 1].event_id
            self.covered = next(i for i in fresh if self.deliveries[i].event.event_id == last) + 1
            fresh = [i for i in fresh if i < self.covered]
            state, qualifications = apply_events(self.rule, item.state, [self.deliveries[i].event for i in fresh],
                                                 now_ms=now_ms)
        covered = self.deliveries[:self.covered]
        applied = [self.deliveries[i].event for i in fresh]
        self.result = GroupResult(applied=len(fresh), duplicates=len(covered) - len(fresh), writes=1,
                                  qualifications=tuple(qualifications))
        return Write(
            state=state,
            outbox=tuple(OutboxEntry.qualified(q, created_ms=self.created_ms) for q in qualifications),
            hwm=advance_hwm(item.hwm, covered, now_ms=now_ms),
            seen=remember(item.seen, ((event.event_id, event.arrival_time_ms) for event in applied), now_ms=now_ms,
                          horizon_ms=self.horizon_ms),
        )
