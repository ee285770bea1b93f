"""The RuleEngine's tables and the outbox entry: the contract between the aggregator, the sweeper, the
backfill and the dispatcher.

Counters table (`COUNTERS_TABLE`), partition key `pk`:
- `"<rule_id>#<user_id>"`: one (rule, user)'s `RuleState` record (`state`), an optimistic-lock `version`,
  the dedupe marks (`hwm`: Kinesis shard → highest applied sequence number; `seen`: recent event id →
  arrival ms), `expires_at` (TTL) and, for window-rule users who qualified, `sweep_day` (the sparse
  `SWEEP_INDEX` partition key: the UTC day the sweeper must look at them again).
- `"meta#<rule_id>"`: a date or window rule's activation (`activation_ms`) and backfill status (the sheet
  reserves RuleId `meta`, so no counter key has that form; `keys.RESERVED_RULE_IDS`).

Outbox table (`OUTBOX_TABLE`), partition key `pk` = the entry's key. An entry is written in the same
DynamoDB transaction as the counter change that produced it, so it exists exactly when that change
happened; the dispatcher delivers it to each sink once and records which sinks are done
(`delivered_sinks`) and how it ended (`status`: `pending` → `delivered` / `dead_lettered` / `superseded`).

While an entry is pending it carries `pending_shard` (one of `PENDING_SHARDS` values, a hash of its key): the
partition key of the sparse `PENDING_INDEX` GSI, whose sort key is `created_ms`. An item without the
index's key attributes is not in the index, so removing `pending_shard` when the entry settles takes it
out (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-indexes-general-sparse-indexes.html),
and a Query per shard returns what is still pending, oldest first — the reconciler's way of finding entries
whose stream record was lost, without a Scan. The shards spread index writes: a single index partition key
value would put every outbox write through one index partition, and an index that cannot absorb its
writes throttles the table's writes too
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-indexes-gsi-sharding.html,
https://repost.aws/knowledge-center/dynamodb-gsi-throttling-table).

Entry keys order a (rule, user)'s changes: qualification n is `<rule>#<user>#<n>` (n = the counter's
`fired` after it), the exit that ends it `<rule>#<user>#exit#<n>`, with `%` and `#` of the user id escaped
(`keys.user_key_part`: a user id may contain `#`, and `alice#exit`'s qualification must not be `alice`'s
exit). Every key is built and parsed by `functions.rules.keys`. An attribute rule can only qualify again
after an exit, so its changes run q1 < exit1 < q2 < exit2 …; `ChangePosition` is that order, and the
supersede rule (docs/actions.md) reads it, never clocks.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from functions.rules.evaluate import Qualification
from functions.rules.keys import (  # noqa: F401 - re-exported: the tables' contract lives here
    EXIT_MARK,
    META_PREFIX,
    change_prefix,
    counter_key,
    exit_key,
    meta_key,
    legacy_change_key,
    parse_change_key,
    qualification_key,
    user_key_part,
)
from functions.rules.model import ActionKind

PARTITION_KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
SWEEP_INDEX = "sweep"
SWEEP_DAY = "sweep_day"
OUTBOX_RETENTION_DAYS = 30
PENDING_INDEX = "pending"
PENDING_SHARD = "pending_shard"
"""Present only while an entry is pending: the sparse `PENDING_INDEX` partition key."""
PENDING_SHARDS = 8
"""How many `pending_shard` values there are. Only ever raise it: the reconciler queries shards
0 … PENDING_SHARDS-1, so an entry written with a shard above a lowered count would never be found."""
CREATED_MS = "created_ms"
"""The entry's creation time (epoch ms): the `PENDING_INDEX` sort key."""


class Change(str, enum.Enum):
    """What happened to the user: they met the rule, or (window rules) dropped out of it."""

    QUALIFIED = "qualified"
    EXITED = "exited"


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    SUPERSEDED = "superseded"
    """Not delivered because a later change of the same rule and user exists (attribute actions only)."""

    @property
    def settled(self) -> bool:
        return self is not DeliveryStatus.PENDING


def pending_shard(key: str) -> str:
    """The entry's `pending_shard`: a stable hash of its key (never Python's per-process `hash`)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest()
    return str(int.from_bytes(digest, "big") % PENDING_SHARDS)


@dataclass(frozen=True, slots=True, order=True)
class ChangePosition:
    """Where a change sits in its (rule, user)'s history: qualification n, then exit n, then qualification n+1."""

    sequence: int
    exit: bool

    def key(self, rule_id: str, user_id: str) -> str:
        return (exit_key if self.exit else qualification_key)(rule_id, user_id, self.sequence)

    def keys(self, rule_id: str, user_id: str) -> tuple[str, ...]:
        """Today's key of this change, and its legacy (unescaped) key where that differs."""
        legacy = legacy_change_key(rule_id, user_id, self.sequence, self.exit)
        return (self.key(rule_id, user_id),) if legacy is None else (self.key(rule_id, user_id), legacy)

    def successors(self) -> tuple[ChangePosition, ...]:
        """The changes that can directly follow this one (an exit, or for an exit the next qualification)."""
        following = ChangePosition(self.sequence + 1, False)
        return (following,) if self.exit else (ChangePosition(self.sequence, True), following)

    @classmethod
    def of(cls, key: str, rule_id: str, user_id: str) -> ChangePosition | None:
        """The position a key names, None when it is not one of this (rule, user)'s change keys."""
        parsed = parse_change_key(key, rule_id, user_id)
        return None if parsed is None else cls(*parsed)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """One action to deliver: set/clear a user attribute, or emit a `trk_…` event."""

    key: str
    """Unique and deterministic (`keys.qualification_key` / `keys.exit_key`), so a retry rewrites the same
    entry instead of adding one."""
    change: Change
    rule_id: str
    user_id: str
    action: ActionKind
    name: str
    value: str | None
    event_id: str
    """The event that triggered it (empty for sweeper exits and backfills)."""
    event_time_ms: int
    created_ms: int

    @classmethod
    def qualified(cls, qualification: Qualification, *, created_ms: int) -> "OutboxEntry":
        return cls(key=qualification.key, change=Change.QUALIFIED, rule_id=qualification.rule_id,
                   user_id=qualification.user_id, action=qualification.kind, name=qualification.name,
                   value=qualification.value, event_id=qualification.event_id,
                   event_time_ms=qualification.event_time_ms, created_ms=created_ms)

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB item (plain Python values; the store's serializer types them)."""
        return {
            PARTITION_KEY: self.key, "change": self.change.value, "rule_id": self.rule_id,
            "user_id": self.user_id, "action": self.action.value, "name": self.name, "value": self.value,
            "event_id": self.event_id, "event_time_ms": self.event_time_ms, CREATED_MS: self.created_ms,
            "status": DeliveryStatus.PENDING.value, PENDING_SHARD: pending_shard(self.key),
            TTL_ATTRIBUTE: self.created_ms // 1000 + OUTBOX_RETENTION_DAYS * 86_400,
        }

    @property
    def position(self) -> ChangePosition | None:
        """Where this change sits in its (rule, user)'s history (None for a key of another shape)."""
        return ChangePosition.of(self.key, self.rule_id, self.user_id)

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> "OutboxEntry":
        return cls(key=str(item[PARTITION_KEY]), change=Change(item["change"]), rule_id=str(item["rule_id"]),
                   user_id=str(item["user_id"]), action=ActionKind(item["action"]), name=str(item["name"]),
                   value=None if item.get("value") is None else str(item["value"]),
                   event_id=str(item.get("event_id") or ""), event_time_ms=int(item["event_time_ms"]),
                   created_ms=int(item["created_ms"]))


def create_local_tables(client: Any, settings: Any) -> None:
    """Create both tables with the layout the rules functions expect — for local tools and tests (moto);
    `settings` names them (`counters_table`, `outbox_table`, as `StoreSettings` does); the stack defines the
    real ones the same way (components/rule_engine.py): key `pk` (S); the counters table's sparse GSI `sweep`
    on `sweep_day` (S) and `pk`, projecting ALL; the outbox's (`create_local_outbox_table`); TTL `expires_at`
    on both."""
    string = "S"
    client.create_table(
        TableName=settings.counters_table, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": PARTITION_KEY, "AttributeType": string},
                              {"AttributeName": SWEEP_DAY, "AttributeType": string}],
        GlobalSecondaryIndexes=[{"IndexName": SWEEP_INDEX, "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": SWEEP_DAY, "KeyType": "HASH"},
                                               {"AttributeName": PARTITION_KEY, "KeyType": "RANGE"}]}],
    )
    client.update_time_to_live(TableName=settings.counters_table,
                               TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    create_local_outbox_table(client, settings.outbox_table)


def create_local_outbox_table(client: Any, table_name: str) -> None:
    """The outbox table alone: key `pk` (S); the sparse GSI `pending` on `pending_shard` (S) and
    `created_ms` (N), projecting ALL (the reconciler re-dispatches straight from the index); TTL
    `expires_at`. Streams are not created: moto cannot serve them to a consumer (tests feed records)."""
    client.create_table(
        TableName=table_name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": PARTITION_KEY, "AttributeType": "S"},
                              {"AttributeName": PENDING_SHARD, "AttributeType": "S"},
                              {"AttributeName": CREATED_MS, "AttributeType": "N"}],
        GlobalSecondaryIndexes=[{"IndexName": PENDING_INDEX, "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": PENDING_SHARD, "KeyType": "HASH"},
                                               {"AttributeName": CREATED_MS, "KeyType": "RANGE"}]}],
    )
    client.update_time_to_live(TableName=table_name,
                               TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE})
