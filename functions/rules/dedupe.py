"""The counters' dedupe marks: what stops a Kinesis/Lambda redelivery (`hwm`: per (shard, partition key), the
highest sequence number applied) and a producer's duplicate (`dedupe`: short hashes of the event ids applied
within the dedupe horizon of stream arrival time), both bounded so the counter item stays small.

Why per partition key: with a ParallelizationFactor above 1 Lambda keeps records in order only per partition
key within a shard, so two batches of one shard can commit out of sequence order
(https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html, "Polling and batching streams"); a child
shard after resharding has marks of its own. Why bounded: DynamoDB bills a write per started KB of the item
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/read-write-operations.html). Figures:
docs/rules.md, "Limits and their cost".
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from functions.events.canonical import CanonicalEvent
from functions.rules.evaluate import DAY_MS

DEDUPE_HORIZON_HOURS = 24
"""Default DEDUPE_HORIZON_HOURS (stack config `dedupeHorizonHours`): how long, in stream arrival time, an
applied event id is remembered against a producer's duplicate."""
SEEN_MAX_ENTRIES = 5_000
"""At most this many remembered ids per counter (the newest arrivals are kept): about `SEEN_ENTRY_BYTES`
each, so at most ~95 KB of the 400 KB item limit. Past it the oldest are forgotten first, and a duplicate of
a forgotten id counts again (docs/rules.md, "Limits")."""
SEEN_KEY_CHARS = 12
"""A remembered id is 12 base64url characters of a BLAKE2b hash (72 bits) of the event id."""
SEEN_ENTRY_BYTES = 19
"""DynamoDB size of one `dedupe` entry: a 12-byte name, a 10-digit number (6 bytes) and 1 byte of map
element overhead (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html)."""
MARK_KEEP_MS = 8 * DAY_MS
"""A redelivery mark is kept this long after its record's arrival: past the stack's stream retention
(24 h, components/event_stream_pipeline.py) no record it covers can be redelivered. Raise it with the
retention."""
MARK_MAX_ENTRIES = 32
"""At most this many (shard, partition key) marks per counter, newest arrivals kept. A producer keying by
something else than the user (random keys, one per endpoint) fills it; an evicted mark's redeliveries are
then stopped by `dedupe`, within the horizon."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event and where the stream delivered it: its shard, sequence number and the record's partition key
    (the Lambda event's `kinesis.partitionKey`: together, the redelivery mark). For the app stream the shard id
    is namespaced (`app/shardId-…`, functions/rules/aggregator.py `APP_SHARD_PREFIX`): both streams have a
    `shardId-000000000000`, and one stream's mark must never hide the other's records."""

    event: CanonicalEvent
    shard_id: str
    sequence_number: str
    partition_key: str

    @property
    def mark_key(self) -> str:
        return mark_key(self.shard_id, self.partition_key)


@functools.lru_cache(maxsize=1 << 16)
def _short_hash(text: str) -> str:
    # Cached: a batch hashes the same partition keys and event ids once per rule the event matches, twice
    # (the check, then the new marks).
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=SEEN_KEY_CHARS * 3 // 4).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def mark_key(shard_id: str, partition_key: str) -> str:
    """The `hwm` key of a (shard, partition key): the shard id and a short hash of the key (a partition key
    may be 256 characters; the marks must stay small)."""
    return f"{shard_id} {_short_hash(partition_key)}"


def seen_key(event_id: str) -> str:
    """What `dedupe` remembers of an event id: a 72-bit hash, 12 characters, whatever the id's length."""
    return _short_hash(event_id)


@dataclass(frozen=True, slots=True)
class Mark:
    """The highest sequence number applied for one (shard, partition key), and that record's arrival."""

    sequence_number: str
    arrival_ms: int


def advance_hwm(hwm: Mapping[str, Mark], deliveries: Iterable[Delivery], *, now_ms: int) -> dict[str, Mark]:
    """`hwm` moved past `deliveries`; marks whose record arrived more than `MARK_KEEP_MS` before `now_ms`
    dropped (nothing they cover can be redelivered), and at most `MARK_MAX_ENTRIES` kept, newest first."""
    marks = dict(hwm)
    for delivery in deliveries:
        key, mark = delivery.mark_key, marks.get(delivery.mark_key)
        if mark is None or int(delivery.sequence_number) > int(mark.sequence_number):
            arrival = delivery.event.arrival_time_ms // 1000 * 1000
            marks[key] = Mark(delivery.sequence_number, max(arrival, mark.arrival_ms if mark else 0))
    oldest = now_ms - MARK_KEEP_MS
    if len(marks) <= MARK_MAX_ENTRIES and (not marks or min(mark.arrival_ms for mark in marks.values()) >= oldest):
        return marks  # nothing to drop (the usual case): spare the sort
    kept = sorted(((mark.arrival_ms, key) for key, mark in marks.items() if mark.arrival_ms >= oldest), reverse=True)
    return {key: marks[key] for _, key in kept[:MARK_MAX_ENTRIES]}


def remember(seen: Mapping[str, int], entries: Iterable[tuple[str, int]], *, now_ms: int,
             horizon_ms: int) -> dict[str, int]:
    """`seen` (a `CounterItem.seen`) plus `entries` (event id, its stream arrival in ms), keeping the ids that
    arrived within `horizon_ms` before the processing clock `now_ms`, at most `SEEN_MAX_ENTRIES` (newest
    arrivals first). Ids are stored as `seen_key` hashes, arrival times in whole seconds."""
    merged = dict(seen)
    for event_id, arrival_ms in entries:
        key, arrival = seen_key(event_id), arrival_ms // 1000 * 1000
        merged[key] = max(arrival, merged.get(key, arrival))
    oldest = now_ms - horizon_ms
    if len(merged) <= SEEN_MAX_ENTRIES and (not merged or min(merged.values()) >= oldest):
        return merged  # nothing to forget (the usual case): spare the sort
    recent = sorted(((ms, key) for key, ms in merged.items() if ms >= oldest), reverse=True)
    return {key: ms for ms, key in recent[:SEEN_MAX_ENTRIES]}
