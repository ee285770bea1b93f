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

The store's one job is state, marks and conditional writes. What a change means — which deliveries are
fresh, how the rule evaluates them, the TTL a rule type gives its counter, the day the sweeper must look at a
qualified window-rule user again — is the rules' knowledge (`counting.py`, `evaluate.py`), which the store
applies at its processing clock. `CounterStoreBase` holds the backend-independent half (the read → compute →
conditional-write loop, the limits); `CounterStore` is DynamoDB, through a low-level boto3 `dynamodb` client
so that requests can be counted; `memory_store.MemoryCounterStore` keeps the same items in memory for the local
engine.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterator, Mapping, Sequence

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from functions.rules.activation import RuleActivations
from functions.rules.activation_tables import DynamoMetaTable
from functions.rules.counter_item import CounterItem, Write
from functions.rules.counting import GroupResult, GroupStep, counter_expires_at
from functions.rules.dedupe import DEDUPE_HORIZON_HOURS, Delivery
from functions.rules.dynamo import error_code, from_attributes, to_attributes
from functions.rules.evaluate import event_day, next_exit_day
from functions.rules.limits import MAX_ITEM_BYTES, OutboxKeyTaken, Unwritable, check_key, item_size_bytes
from functions.rules.outbox import OUTBOX_RETENTION_DAYS, PARTITION_KEY, SWEEP_DAY, SWEEP_INDEX, OutboxEntry, counter_key
from functions.rules.rules_source import Env
from functions.rules.model import Rule

logger = Logger()

COUNTER_TTL_DAYS = 400
"""Default lifetime of an aggregator rule's counter after its last write (COUNTER_TTL_DAYS)."""
MAX_ATTEMPTS = 5

_DAY_SECONDS = 86_400


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


class StoreConflict(Exception):
    """A write kept losing to concurrent writers (or to its own duplicate outbox keys)."""


class WriteConflict(Exception):
    """The item changed since it was read: the backend's conditional write did not hold."""


Step = Callable[[CounterItem], "Write | None"]


class CounterStoreBase(abc.ABC):
    """The counters and their outbox entries, whatever holds them. `clock` gives seconds (epoch): the
    processing clock. A backend provides the reads and the one conditional write (`_put`)."""

    activations: RuleActivations

    def __init__(self, settings: StoreSettings, *, clock: Callable[[], float] = time.time,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        self._settings, self._clock, self._max_attempts = settings, clock, max_attempts

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- the backend ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def read(self, rule_id: str, user_id: str) -> CounterItem:
        """The stored item (consistent), or a new one (`version` 0)."""

    def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], CounterItem]:
        """`read` for several (rule_id, user_id) at once; a backend may leave some out (read them with `read`)."""
        return {key: self.read(*key) for key in keys}

    @abc.abstractmethod
    def _put(self, item: CounterItem, stored: CounterItem, entries: Sequence[OutboxEntry]) -> None:
        """Write `stored` if the item is still `item` (its `version`; absent for 0), together with `entries`,
        each only if its key is new — an entry already there that is this same change is kept, any other is
        `OutboxKeyTaken`. Raises `WriteConflict` when the item changed."""

    @abc.abstractmethod
    def due_for_sweep(self, day: date, *, rule_id: str | None = None) -> Iterator[CounterItem]:
        """The items whose `sweep_day` is `day` (only `rule_id`'s when given)."""

    @abc.abstractmethod
    def read_record(self, key: str) -> dict[str, Any] | None:
        """A plain bookkeeping item (e.g. the sweeper's progress) by key, None when absent."""

    @abc.abstractmethod
    def write_record(self, key: str, record: Mapping[str, Any], *, version: int) -> bool:
        """Store `record` under `key` as version `version + 1` if the stored one is still `version` (0:
        absent); False when another writer got there first."""

    # -- counting ------------------------------------------------------------------------------------

    def apply(self, rule: Rule, user_id: str, deliveries: Sequence[Delivery], *,
              item: CounterItem | None = None) -> GroupResult:
        """Apply one user's deliveries for one rule (stream order) with one read and one write (more only
        on a version conflict, or past `counting.MAX_OUTBOX_PER_WRITE` qualifications). Raises `StoreConflict`,
        and `Unwritable` (before any request) for a change DynamoDB would refuse on every retry. `item`: the
        item as already read (`read_many`), saving the first read; the write is conditional on it all the same."""
        check_key(rule.rule_id, user_id)
        result, remaining = GroupResult(), deliveries
        while remaining:
            step = GroupStep(rule, remaining, self.now_ms(), self._settings.dedupe_horizon_ms)
            self._update(rule, user_id, step, item=item)
            item = None  # read again for the rest: the first write changed it
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
        return self._update(rule, user_id, step, item=item)

    def _update(self, rule: Rule, user_id: str, step: Step, *, item: CounterItem | None = None) -> Write | None:
        for _ in range(self._max_attempts):
            if item is None:
                item = self.read(rule.rule_id, user_id)
            write = step(item)
            if write is None:
                return None
            try:
                self._commit(rule, item, write)
                return write
            except WriteConflict:
                item = None
        raise StoreConflict(f"{counter_key(rule.rule_id, user_id)}: still conflicting after "
                            f"{self._max_attempts} attempts")

    def _commit(self, rule: Rule, item: CounterItem, write: Write) -> None:
        now_ms = self.now_ms()
        today = event_day(now_ms)
        sweep_from = max(today, write.sweep_from) if write.sweep_from else today
        expires_at = max(item.expires_at, counter_expires_at(rule, write.state, now_ms,
                                                             counter_ttl_days=self._settings.counter_ttl_days))
        if write.outbox:
            # The counter outlives its outbox entries, so `fired` (which numbers their keys) never restarts
            # while an entry with the same key could still exist.
            expires_at = max(expires_at, now_ms // 1000 + (OUTBOX_RETENTION_DAYS + 1) * _DAY_SECONDS)
        stored = CounterItem(
            rule_id=item.rule_id, user_id=item.user_id, state=write.state, version=item.version + 1,
            hwm=item.hwm if write.hwm is None else write.hwm, seen=item.seen if write.seen is None else write.seen,
            sweep_day=next_exit_day(rule, write.state, from_day=sweep_from), expires_at=expires_at,
            backfilled=item.backfilled or write.backfilled,
        )
        # The bound spares building and sizing the dedupe map on every write; only an item near the limit is
        # sized exactly.
        if stored.size_at_most() > MAX_ITEM_BYTES and (size := item_size_bytes(stored.to_item())) > MAX_ITEM_BYTES:
            raise Unwritable(f"the counter item of rule {rule.rule_id!r} would be {size:,} bytes, more than "
                             f"DynamoDB's {MAX_ITEM_BYTES:,}")
        for entry in write.outbox:
            if (size := item_size_bytes(entry.to_item())) > MAX_ITEM_BYTES:
                raise Unwritable(f"outbox entry {entry.key[:80]!r}… would be {size:,} bytes, more than DynamoDB's "
                                 f"{MAX_ITEM_BYTES:,}")
        self._put(item, stored, write.outbox)


def same_change(entry: OutboxEntry, rule_id: Any, user_id: Any, change: Any) -> None:
    """Raise `OutboxKeyTaken` unless the entry stored under `entry.key` (its `rule_id`, `user_id` and `change`)
    is this same change — normally this very action, written by a retry that committed before."""
    if (rule_id, user_id, change) != (entry.rule_id, entry.user_id, entry.change.value):
        raise OutboxKeyTaken(
            f"outbox key {entry.key[:80]!r} holds a {change} of rule {rule_id!r} "
            f"for another user, not this {entry.change.value} of rule {entry.rule_id!r}")


class CounterStore(CounterStoreBase):
    """The counters and outbox tables in DynamoDB, through a boto3 `dynamodb` client."""

    def __init__(self, client: Any, settings: StoreSettings, *, clock: Callable[[], float] = time.time,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        super().__init__(settings, clock=clock, max_attempts=max_attempts)
        self._client = client
        self.activations = RuleActivations(DynamoMetaTable(client, settings.counters_table))

    def read(self, rule_id: str, user_id: str) -> CounterItem:
        response = self._client.get_item(TableName=self._settings.counters_table,
                                         Key={PARTITION_KEY: {"S": counter_key(rule_id, user_id)}}, ConsistentRead=True)
        item = response.get("Item")
        return CounterItem.from_item(from_attributes(item)) if item else CounterItem(rule_id=rule_id, user_id=user_id)

    def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], CounterItem]:
        """Consistent BatchGetItem reads, 100 keys a request; keys DynamoDB leaves unprocessed (over 16 MB of
        items, or throttled) are left out: the caller reads those with `read`, whose retries back off, as the API
        reference asks of a retry of unprocessed keys. Each item costs the read capacity a GetItem of it would
        (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_BatchGetItem.html)."""
        table, wanted = self._settings.counters_table, {counter_key(*key): key for key in keys}
        found: dict[tuple[str, str], CounterItem] = {}
        pending = list(wanted)
        for start in range(0, len(pending), 100):
            request = {table: {"Keys": [{PARTITION_KEY: {"S": key}} for key in pending[start:start + 100]],
                               "ConsistentRead": True}}
            response = self._client.batch_get_item(RequestItems=request)
            for raw in response.get("Responses", {}).get(table, []):
                found[wanted[raw[PARTITION_KEY]["S"]]] = CounterItem.from_item(from_attributes(raw))
            unprocessed = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            answered = ({key[PARTITION_KEY]["S"] for key in request[table]["Keys"]}
                        - {key[PARTITION_KEY]["S"] for key in unprocessed})
            for key in answered:
                found.setdefault(wanted[key], CounterItem(rule_id=wanted[key][0], user_id=wanted[key][1]))
        return found

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

    def _put(self, item: CounterItem, stored: CounterItem, entries: Sequence[OutboxEntry]) -> None:
        put: dict[str, Any] = {"TableName": self._settings.counters_table, "Item": to_attributes(stored.to_item())}
        if item.version == 0:
            put |= {"ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": PARTITION_KEY}}
        else:
            put |= {"ConditionExpression": "#version = :version", "ExpressionAttributeNames": {"#version": "version"},
                    "ExpressionAttributeValues": {":version": {"N": str(item.version)}}}
        entries = list(entries)
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
                    raise WriteConflict() from error
                if code != "TransactionCanceledException":
                    raise
                reasons = [reason.get("Code") or "None" for reason in error.response.get("CancellationReasons", [])]
                if reasons[:1] == ["ConditionalCheckFailed"] or {"TransactionConflict", "ThrottlingError"} & {*reasons}:
                    raise WriteConflict() from error
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
            same_change(entry, found.get("rule_id"), found.get("user_id"), found.get("change"))
