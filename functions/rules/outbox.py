"""The RuleEngine's tables and the outbox entry: the contract between the aggregator, the sweeper, the
backfill and the dispatcher.

Counters table (`COUNTERS_TABLE`), partition key `pk`:
- `"<rule_id>#<user_id>"`: one (rule, user)'s `RuleState` record (`state`), an optimistic-lock `version`,
  the dedupe marks (`hwm`: Kinesis shard → highest applied sequence number; `seen`: recent event id →
  arrival ms), `expires_at` (TTL) and, for window-rule users who qualified, `sweep_day` (the sparse
  `SWEEP_INDEX` partition key: the UTC day the sweeper must look at them again).
- `"meta#<rule_id>"`: a date or window rule's activation (`activation_ms`) and backfill status.

Outbox table (`OUTBOX_TABLE`), partition key `pk` = the entry's key. An entry is written in the same
DynamoDB transaction as the counter change that produced it, so it exists exactly when that change
happened; the dispatcher delivers it to each sink once and records which sinks are done.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Mapping

from functions.rules.evaluate import Qualification
from functions.rules.sheet import ActionKind

PARTITION_KEY = "pk"
TTL_ATTRIBUTE = "expires_at"
SWEEP_INDEX = "sweep"
SWEEP_DAY = "sweep_day"
META_PREFIX = "meta#"
OUTBOX_RETENTION_DAYS = 30


def counter_key(rule_id: str, user_id: str) -> str:
    return f"{rule_id}#{user_id}"


def meta_key(rule_id: str) -> str:
    return f"{META_PREFIX}{rule_id}"


class Change(str, enum.Enum):
    """What happened to the user: they met the rule, or (window rules) dropped out of it."""

    QUALIFIED = "qualified"
    EXITED = "exited"


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """One action to deliver: set/clear a user attribute, or emit a `trk_…` event."""

    key: str
    """Unique and deterministic (`Qualification.key`, or `<rule>#<user>#exit#<n>`), so a retry rewrites
    the same entry instead of adding one."""
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
            "event_id": self.event_id, "event_time_ms": self.event_time_ms, "created_ms": self.created_ms,
            "status": DeliveryStatus.PENDING.value,
            TTL_ATTRIBUTE: self.created_ms // 1000 + OUTBOX_RETENTION_DAYS * 86_400,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> "OutboxEntry":
        return cls(key=str(item[PARTITION_KEY]), change=Change(item["change"]), rule_id=str(item["rule_id"]),
                   user_id=str(item["user_id"]), action=ActionKind(item["action"]), name=str(item["name"]),
                   value=None if item.get("value") is None else str(item["value"]),
                   event_id=str(item.get("event_id") or ""), event_time_ms=int(item["event_time_ms"]),
                   created_ms=int(item["created_ms"]))
