"""What the counter store holds per (rule, user) — `CounterItem` — and what it is asked to write — `Write`.
Plain data, shared by every backend (`store.py`: DynamoDB; `memory_store.py`: in-process memory) and by the
functions that compute changes (`counting.py`, the sweeper, the backfill)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Mapping

from functions.rules.dedupe import Mark, seen_key
from functions.rules.evaluate import RuleState
from functions.rules.outbox import PARTITION_KEY, SWEEP_DAY, TTL_ATTRIBUTE, OutboxEntry, counter_key

# Sizes as https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html
# gives them (and `limits.item_size_bytes` computes them): a number (digits + 1) // 2 + 1 bytes, at most 21; a
# list or map 3 + 1 per element; a boolean or null 1; strings and names their UTF-8 bytes.
_NUMBER_MAX = 21
_SECONDS_BYTES = 7
_MAP_ELEMENT = _LIST_ELEMENT = 1
_CONTAINER = 3
_BUCKET_FIXED = _CONTAINER + 3 * _LIST_ELEMENT + len("2026-01-01") + _NUMBER_MAX
"""A window bucket `[day, count, "sum"]`, but its sum's characters."""
_MARK_FIXED = _CONTAINER + 2 * _LIST_ELEMENT + _SECONDS_BYTES
"""A redelivery mark `[sequence number, seconds]`, but its key's and its sequence number's characters."""
_STATE_FIXED = (_CONTAINER + 6 * _MAP_ELEMENT + len("countsumqualifiedfiredbucketswindow_end") + 2 * _NUMBER_MAX + 1
                + _CONTAINER + len("2026-01-01"))
_ITEM_FIXED = (len(f"{PARTITION_KEY}rule_iduser_idstateversionhwmdedupe{TTL_ATTRIBUTE}{SWEEP_DAY}backfilled")
               + _STATE_FIXED + 2 * _CONTAINER + 2 * _NUMBER_MAX + len("2026-01-01") + 1)
"""Every name, the state's fixed part, the `hwm` and `dedupe` maps' own bytes, version, TTL, sweep day and
the backfilled flag."""


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

    def to_item(self, *, with_dedupe: bool = True) -> dict[str, Any]:
        item: dict[str, Any] = {
            PARTITION_KEY: self.key, "rule_id": self.rule_id, "user_id": self.user_id,
            "state": self.state.to_record(), "version": self.version,
            "hwm": {key: [mark.sequence_number, mark.arrival_ms // 1000] for key, mark in self.hwm.items()},
            TTL_ATTRIBUTE: self.expires_at,
        }
        if with_dedupe:
            item["dedupe"] = {key: ms // 1000 for key, ms in self.seen.items()}
        if self.sweep_day is not None:  # absent, not null: the sweep index is sparse
            item[SWEEP_DAY] = self.sweep_day.isoformat()
        if self.backfilled:
            item["backfilled"] = True
        return item

    def size_at_most(self) -> int:
        """An upper bound of the item's DynamoDB size (`limits.item_size_bytes(self.to_item())`), in time linear
        in the marks and buckets but without building the item: every number counted at DynamoDB's largest (38
        digits, 21 bytes), each `dedupe` entry an ASCII `seen_key` and a number of seconds (at most 7 bytes until
        the year 5138). The store sizes an item exactly only when this exceeds the limit."""
        rule_bytes, user_bytes = len(self.rule_id.encode("utf-8")), len(self.user_id.encode("utf-8"))
        state = self.state
        buckets = sum(_LIST_ELEMENT + _BUCKET_FIXED + len(str(bucket.sum)) for bucket in state.buckets)
        marks = sum(_MAP_ELEMENT + len(key.encode("utf-8")) + _MARK_FIXED + len(mark.sequence_number)
                    for key, mark in self.hwm.items())
        dedupe = len(self.seen) * (_MAP_ELEMENT + _SECONDS_BYTES) + sum(map(len, self.seen))
        return (_ITEM_FIXED + 2 * (rule_bytes + user_bytes) + 1 + len(str(state.sum)) + buckets + marks + dedupe)

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
