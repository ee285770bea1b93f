"""The rule engine's DynamoDB side: per-(rule, user) counters that apply each stream event exactly once and
the outbox entries written with them (layouts: `outbox.py`; semantics: docs/rules.md).

Every change to a (rule, user) is read → compute → ONE conditional write:

- the write is conditional on the item's `version` (or on its absence), so two writers never overwrite each
  other: the loser re-reads and recomputes (bounded, `MAX_ATTEMPTS`);
- qualifications go out in the same TransactWriteItems as the counter, so an outbox entry exists exactly when
  the change that produced it does;
- the item carries its own dedupe marks, written in that same write. `hwm` stops a Kinesis/Lambda
  redelivery: per (shard, partition key), the highest sequence number applied. It is keyed by partition key
  too because with a ParallelizationFactor above 1 Lambda keeps records in order only per partition key
  within a shard, so two batches of one shard can commit out of sequence order
  (https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html, "Polling and batching streams" and
  concurrent batches per shard); a child shard after resharding has marks of its own, and Lambda finishes a
  parent shard before its children. `dedupe` (`dedupe.remember`) stops a producer's duplicate: short hashes of
  the event ids applied within the dedupe horizon of stream arrival time. Both are bounded
  (`dedupe.py`), because DynamoDB bills a write per started KB of the item
  (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html). So when a
  batch is redelivered, even after the function died between two groups' writes, nothing is applied twice:
  each group's write happened together with its marks, or not at all.
- an item DynamoDB would refuse whatever the retry (over 400 KB, or a key too long:
  https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html) is never sent:
  `limits.Unwritable` says why, and the aggregator routes that group's records to its failures queue.

The store also decides what a write implies: `expires_at` (TTL) from the rule type, and for qualified
window-rule users `sweep_day`, the day the sweeper must look at them again (`next_exit_day`). Its clock is
the processing clock that window rules are evaluated against.

Requests go through a low-level boto3 `dynamodb` client, so that they can be counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Callable, Iterator, Mapping, Sequence

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from functions.rules.evaluate import Qualification, RuleState, apply_events, event_day, next_exit_day
from functions.rules.activation import RuleActivations
from functions.rules.dedupe import (
    DEDUPE_HORIZON_HOURS,
    Delivery,
    Mark,
    advance_hwm,
    remember,
    seen_key,
)
from functions.rules.dynamo import error_code, from_attributes, to_attributes
from functions.rules.limits import MAX_ITEM_BYTES, OutboxKeyTaken, Unwritable, check_key, item_size_bytes
from functions.rules.outbox import (
    OUTBOX_RETENTION_DAYS,
    PARTITION_KEY,
    SWEEP_DAY,
    SWEEP_INDEX,
    TTL_ATTRIBUTE,
    OutboxEntry,
    counter_key,
)
from functions.rules.rules_source import Env
from functions.rules.model import Rule, RuleType

logger = Logger()

COUNTER_TTL_DAYS = 400
"""Default lifetime of an aggregator rule's counter after its last write (COUNTER_TTL_DAYS)."""
DATE_RULE_GRACE_DAYS = 30
"""A date rule counts events arriving up to this many days after its finish date; then its counters expire."""
WINDOW_TTL_SLACK_DAYS = 2
MAX_ATTEMPTS = 5
MAX_OUTBOX_PER_WRITE = 99
"""TransactWriteItems takes at most 100 actions, and one of them is the counter."""

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


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """The tables, as the rules functions' environments name them."""

    counters_table: str
    """COUNTERS_TABLE, required."""
    outbox_table: str
    """OUTBOX_TABLE, required."""
    counter_ttl_days: int = COUNTER_TTL_DAYS
    """COUNTER_TTL_DAYS, default 400: an aggregator rule's counter lives this long after its last write."""
    dedupe_horizon_hours: int = DEDUPE_HORIZON_HOURS
    """DEDUPE_HORIZON_HOURS, default 24: an applied event id is remembered this long (stream arrival time,
    against the processing clock), so a producer's duplicate arriving within it counts once."""

    @property
    def dedupe_horizon_ms(self) -> int:
        return self.dedupe_horizon_hours * 3_600_000

    @classmethod
    def read(cls, env: Env) -> StoreSettings:
        return cls(counters_table=env.text("COUNTERS_TABLE", what="the rule counters table"),
                   outbox_table=env.text("OUTBOX_TABLE", what="the rule actions outbox table"),
                   counter_ttl_days=env.positive_int("COUNTER_TTL_DAYS", COUNTER_TTL_DAYS),
                   dedupe_horizon_hours=env.positive_int("DEDUPE_HORIZON_HOURS", DEDUPE_HORIZON_HOURS))


@dataclass(frozen=True, slots=True, kw_only=True)
class CounterItem:
    """One stored (rule, user); `version` 0 means not stored yet."""

    rule_id: str
    user_id: str
    state: RuleState = RuleState()
    version: int = 0
    hwm: Mapping[str, Mark] = field(default_factory=dict)
    """`mark_key(shard, partition key)` → the highest sequence number applied (compared as integers)."""
    seen: Mapping[str, int] = field(default_factory=dict)
    """`seen_key(event id)` of recently applied events → arrival time (ms, whole seconds)."""
    sweep_day: date | None = None
    expires_at: int = 0
    backfilled: bool = False
    """The rule's backfill has been merged into this counter."""

    @property
    def key(self) -> str:
        return counter_key(self.rule_id, self.user_id)

    def has_seen(self, event_id: str) -> bool:
        """Whether an event with this id was applied to this counter within the dedupe horizon."""
        return seen_key(event_id) in self.seen

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            PARTITION_KEY: self.key, "rule_id": self.rule_id, "user_id": self.user_id,
            "state": self.state.to_record(), "version": self.version,
            "hwm": {key: [mark.sequence_number, mark.arrival_ms // 1000] for key, mark in self.hwm.items()},
            "dedupe": {key: ms // 1000 for key, ms in self.seen.items()}, TTL_ATTRIBUTE: self.expires_at,
        }
        if self.sweep_day is not None:  # absent, not null: the sweep index is sparse
            item[SWEEP_DAY] = self.sweep_day.isoformat()
        if self.backfilled:
            item["backfilled"] = True
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> CounterItem:
        # Items written before the marks were keyed by partition key hold `hwm` as shard → sequence number and
        # `seen` as raw event id → ms: the old shard marks cannot say which partition key they covered, so they
        # are dropped (`dedupe` still stops those redeliveries), and the old ids are hashed.
        hwm = {k: Mark(str(v[0]), int(v[1]) * 1000) for k, v in item.get("hwm", {}).items() if isinstance(v, list)}
        seen = {seen_key(k): int(v) // 1000 * 1000 for k, v in item.get("seen", {}).items()}
        seen |= {k: int(v) * 1000 for k, v in item.get("dedupe", {}).items()}
        return cls(
            rule_id=str(item["rule_id"]), user_id=str(item["user_id"]), state=RuleState.from_record(item["state"]),
            version=int(item["version"]), hwm=hwm, seen=seen,
            sweep_day=date.fromisoformat(item[SWEEP_DAY]) if item.get(SWEEP_DAY) else None,
            expires_at=int(item.get(TTL_ATTRIBUTE, 0)), backfilled=bool(item.get("backfilled", False)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Write:
    """A change to one (rule, user), computed from the item as read."""

    state: RuleState
    outbox: tuple[OutboxEntry, ...] = ()
    """Written in the same transaction as the counter, each only if its key is new."""
    hwm: Mapping[str, Mark] | None = None
    """New dedupe marks; None keeps the item's."""
    seen: Mapping[str, int] | None = None
    backfilled: bool = False
    """Mark the item as backfilled (a mark is never removed)."""
    sweep_from: date | None = None
    """The earliest day `sweep_day` may take; default today (the sweeper passes tomorrow)."""


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


class StoreConflict(Exception):
    """A write kept losing to concurrent writers (or to its own duplicate outbox keys)."""


class _Conflict(Exception):
    """The item changed since it was read."""


def is_duplicate(item: CounterItem, delivery: Delivery) -> bool:
    """Whether the item's marks say this delivery was applied already: a sequence number at or below its
    (shard, partition key) mark — Lambda delivers one partition key's records of a shard in order — or an
    event id applied within the dedupe horizon."""
    mark = item.hwm.get(delivery.mark_key)
    if mark is not None and int(delivery.sequence_number) <= int(mark.sequence_number):
        return True
    return item.has_seen(delivery.event.event_id)


class _GroupStep:
    """The read → compute step for one group of a user's deliveries to one rule; remembers how many deliveries
    the last computed write covers (a write carries at most `MAX_OUTBOX_PER_WRITE` qualifications)."""

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


Step = Callable[[CounterItem], "Write | None"]


class CounterStore:
    """The counters and outbox tables, through a boto3 `dynamodb` client. `clock` gives seconds (epoch)."""

    def __init__(self, client: Any, settings: StoreSettings, *, clock: Callable[[], float] = time.time,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self._client, self._settings, self._clock, self._max_attempts = client, settings, clock, max_attempts
        self.activations = RuleActivations(client, settings.counters_table)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- counters ------------------------------------------------------------------------------------

    def read(self, rule_id: str, user_id: str) -> CounterItem:
        response = self._client.get_item(TableName=self._settings.counters_table,
                                         Key={PARTITION_KEY: {"S": counter_key(rule_id, user_id)}}, ConsistentRead=True)
        item = response.get("Item")
        return CounterItem.from_item(from_attributes(item)) if item else CounterItem(rule_id=rule_id, user_id=user_id)

    def apply(self, rule: Rule, user_id: str, deliveries: Sequence[Delivery]) -> GroupResult:
        """Apply one user's deliveries for one rule (stream order) with one read and one write (more only
        on a version conflict, or past `MAX_OUTBOX_PER_WRITE` qualifications). Raises `StoreConflict`, and
        `Unwritable` (before any request) for a change DynamoDB would refuse on every retry."""
        check_key(rule.rule_id, user_id)
        result, remaining = GroupResult(), list(deliveries)
        while remaining:
            step = _GroupStep(rule, remaining, self.now_ms(), self._settings.dedupe_horizon_ms)
            self.update(rule, user_id, step)
            result, remaining = result + step.result, remaining[step.covered:]
        return result

    def apply_one_by_one(self, rule: Rule, user_id: str, deliveries: Sequence[Delivery]) -> GroupResult:
        """The same outcome as `apply`, with one read and one write per delivery (for comparison)."""
        result = GroupResult()
        for delivery in deliveries:
            result += self.apply(rule, user_id, [delivery])
        return result

    def update(self, rule: Rule, user_id: str, step: Step, *, item: CounterItem | None = None) -> Write | None:
        """Read the item (unless given one, e.g. from the sweep index), compute `step(item)` and write it
        conditionally; on a conflict, re-read and recompute. Returns the write made, or None when the step
        had nothing to write."""
        check_key(rule.rule_id, user_id)
        for _ in range(self._max_attempts):
            if item is None:
                item = self.read(rule.rule_id, user_id)
            write = step(item)
            if write is None:
                return None
            try:
                self._commit(rule, item, write)
                return write
            except _Conflict:
                item = None
        raise StoreConflict(f"{counter_key(rule.rule_id, user_id)}: still conflicting after "
                            f"{self._max_attempts} attempts")

    def due_for_sweep(self, day: date, *, rule_id: str | None = None) -> Iterator[CounterItem]:
        """The items whose `sweep_day` is `day`, from the sparse sweep index (a Query, never a Scan); only
        `rule_id`'s when given (a filter: the index has no rule key, so DynamoDB still reads the day's items)."""
        request: dict[str, Any] = {
            "TableName": self._settings.counters_table, "IndexName": SWEEP_INDEX,
            "KeyConditionExpression": "#day = :day", "ExpressionAttributeNames": {"#day": SWEEP_DAY},
            "ExpressionAttributeValues": {":day": {"S": day.isoformat()}},
        }
        if rule_id is not None:
            request["FilterExpression"] = "#rule = :rule"
            request["ExpressionAttributeNames"]["#rule"] = "rule_id"
            request["ExpressionAttributeValues"][":rule"] = {"S": rule_id}
        for page in self._client.get_paginator("query").paginate(**request):
            for raw in page.get("Items", []):
                yield CounterItem.from_item(from_attributes(raw))

    # -- the few bookkeeping items beside the counters (e.g. the sweeper's progress) ----------------------

    def read_record(self, key: str) -> dict[str, Any] | None:
        """A plain item of the counters table by key (consistent read), None when absent."""
        response = self._client.get_item(TableName=self._settings.counters_table,
                                         Key={PARTITION_KEY: {"S": key}}, ConsistentRead=True)
        item = response.get("Item")
        return from_attributes(item) if item else None

    def write_record(self, key: str, record: Mapping[str, Any], *, version: int) -> bool:
        """Store `record` under `key` as version `version + 1` if the stored one is still `version` (0:
        absent); False when another writer got there first."""
        item = {**record, PARTITION_KEY: key, "version": version + 1}
        condition: dict[str, Any] = (
            {"ConditionExpression": "attribute_not_exists(#pk)", "ExpressionAttributeNames": {"#pk": PARTITION_KEY}}
            if version == 0 else
            {"ConditionExpression": "#version = :version", "ExpressionAttributeNames": {"#version": "version"},
             "ExpressionAttributeValues": {":version": {"N": str(version)}}})
        try:
            self._client.put_item(TableName=self._settings.counters_table, Item=to_attributes(item), **condition)
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _commit(self, rule: Rule, item: CounterItem, write: Write) -> None:
        now_ms = self.now_ms()
        today = event_day(now_ms)
        sweep_from = max(today, write.sweep_from) if write.sweep_from else today
        expires_at = max(item.expires_at, self._expiry(rule, write.state, now_ms))
        if write.outbox:
            # The counter outlives its outbox entries, so `fired` (which numbers their keys) never restarts
            # while an entry with the same key could still exist.
            expires_at = max(expires_at, now_ms // 1000 + (OUTBOX_RETENTION_DAYS + 1) * _DAY_SECONDS)
        stored = replace(
            item, state=write.state, version=item.version + 1,
            hwm=item.hwm if write.hwm is None else write.hwm, seen=item.seen if write.seen is None else write.seen,
            sweep_day=next_exit_day(rule, write.state, from_day=sweep_from), expires_at=expires_at,
            backfilled=item.backfilled or write.backfilled,
        )
        plain = stored.to_item()
        if (size := item_size_bytes(plain)) > MAX_ITEM_BYTES:
            raise Unwritable(f"the counter item of rule {rule.rule_id!r} would be {size:,} bytes, more than "
                             f"DynamoDB's {MAX_ITEM_BYTES:,}")
        for entry in write.outbox:
            if (size := item_size_bytes(entry.to_item())) > MAX_ITEM_BYTES:
                raise Unwritable(f"outbox entry {entry.key[:80]!r}… would be {size:,} bytes, more than DynamoDB's "
                                 f"{MAX_ITEM_BYTES:,}")
        put: dict[str, Any] = {"TableName": self._settings.counters_table, "Item": to_attributes(plain)}
        if item.version == 0:
            put |= {"ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": PARTITION_KEY}}
        else:
            put |= {"ConditionExpression": "#version = :version", "ExpressionAttributeNames": {"#version": "version"},
                    "ExpressionAttributeValues": {":version": {"N": str(item.version)}}}
        entries = list(write.outbox)
        while True:
            try:
                if not entries:
                    self._client.put_item(**put)
                else:
                    self._client.transact_write_items(TransactItems=[{"Put": put}, *(
                        {"Put": {"TableName": self._settings.outbox_table, "Item": to_attributes(entry.to_item()),
                                 "ConditionExpression": "attribute_not_exists(#pk)",
                                 "ExpressionAttributeNames": {"#pk": PARTITION_KEY}}}
                        for entry in entries)])
                return
            except ClientError as error:
                code = error_code(error)
                if code == "ConditionalCheckFailedException":
                    raise _Conflict() from error
                if code != "TransactionCanceledException":
                    raise
                reasons = [reason.get("Code") or "None" for reason in error.response.get("CancellationReasons", [])]
                if reasons[:1] == ["ConditionalCheckFailed"] or {"TransactionConflict", "ThrottlingError"} & {*reasons}:
                    raise _Conflict() from error
                existing = {entries[i - 1].key for i, reason in enumerate(reasons)
                            if i and reason == "ConditionalCheckFailed"}
                if reasons[:1] != ["None"] or not existing:
                    raise
                # Keys are deterministic, so an entry already there is normally this very action (a retry that
                # committed before): keep it, write the rest. Only when it is the same change of the same
                # (rule, user), though: anything else under that key would silently swallow this change.
                self._check_retried(entries, existing)
                logger.warning("outbox entries already exist", extra={"keys": sorted(existing)})
                entries = [entry for entry in entries if entry.key not in existing]

    def _check_retried(self, entries: Sequence[OutboxEntry], existing: set[str]) -> None:
        """Raise `OutboxKeyTaken` unless each entry under a key in `existing` is this same change."""
        for entry in entries:
            if entry.key not in existing:
                continue
            stored = self._client.get_item(
                TableName=self._settings.outbox_table, Key={PARTITION_KEY: {"S": entry.key}}, ConsistentRead=True,
                ProjectionExpression="#r, #u, #c",
                ExpressionAttributeNames={"#r": "rule_id", "#u": "user_id", "#c": "change"}).get("Item")
            found = None if stored is None else from_attributes(stored)
            if found is None:
                continue  # gone meanwhile (TTL): the retry writes it again
            if (found.get("rule_id"), found.get("user_id"), found.get("change")) != (
                    entry.rule_id, entry.user_id, entry.change.value):
                raise OutboxKeyTaken(
                    f"outbox key {entry.key[:80]!r} holds a {found.get('change')} of rule {found.get('rule_id')!r} "
                    f"for another user, not this {entry.change.value} of rule {entry.rule_id!r}")

    def _expiry(self, rule: Rule, state: RuleState, now_ms: int) -> int:
        """The TTL (epoch seconds) the rule's type gives the counter."""
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
        return now_ms // 1000 + self._settings.counter_ttl_days * _DAY_SECONDS
