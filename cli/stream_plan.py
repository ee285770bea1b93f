"""How the local engines put a file of raw records on a stream, shared by both (`cli/memory_engine.py`,
`cli/aws_engine.py`): which partition key a record gets, what arrival time, and how the event source mapping
would cut the stream into batches — so the two engines see the same batches on the same clocks.

- Partition keys are the producers': the normalised user id (apps and SES key by user; at most
  `MAX_PARTITION_KEY_CHARS`), else a hash of the line.
- Arrival times: each record gets the arrival time it names itself — Pinpoint and SES records carry one, an app
  record's is its event time — made monotonic as Kinesis' are (a record that cannot be read arrives with the
  one before it). moto would stamp today's time instead, making date rules and the duplicate horizon depend on
  the day the replay runs.
- Batches: at most `batch_size` records that arrived within `BATCHING_WINDOW_MS` of the batch's first (the
  mapping invokes as records come; it does not hold a day's records for one batch). The aggregator's
  processing clock runs `PROCESSING_LAG_MS` after the newest arrival of its batch, never going back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Iterator

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.normalise import Parsed, parse_record

BATCHING_WINDOW_MS = 5_000
"""A batch holds records that arrived within this of its first (the mapping's batching window, a few seconds)."""
PROCESSING_LAG_MS = 1_000
"""The aggregator's clock in the replay: this long after the newest arrival of the batch it handles."""
MAX_PARTITION_KEY_CHARS = 256
MAX_RECORD_BYTES = 1_048_576
"""Kinesis' record size limit: a larger record is refused to its producer, never put."""
TOO_LARGE = f"larger than Kinesis' {MAX_RECORD_BYTES}-byte record limit (not put)"
"""How the tools report such a record among the rejected ones."""
SHARD_ID = "shardId-000000000000"


def partition_key(line: str, event: CanonicalEvent | None) -> str:
    """The key a producer would put the record with: its user, else a hash of the record."""
    user = event.user_id if event is not None and event.user_id else None
    if user is not None and len(user) <= MAX_PARTITION_KEY_CHARS:
        return user
    return hashlib.sha256(line.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PlannedRecord:
    """One record as the stream holds it: its text, key, arrival, and what the normaliser made of it (parsed
    once, without the stream's clock: `parsed.at(arrival_ms)` is the event the aggregator sees)."""

    line: str
    partition_key: str
    arrival_ms: int
    parsed: Parsed | Rejected
    position: int
    """Where the line is in the input (from 0, blank lines included)."""


def plan(lines: Iterable[str], identity_mode: IdentityMode, skipped: list[str] | None = None
         ) -> Iterator[PlannedRecord]:
    """The records in file order with their keys and monotonic arrivals; blank lines ignored. A line larger
    than Kinesis' record limit is not put (appended to `skipped`, when given)."""
    clock = 0
    for position, line in enumerate(lines):
        if not line.strip():
            continue
        if len(line) > MAX_RECORD_BYTES // 4 and len(line.encode("utf-8")) > MAX_RECORD_BYTES:
            if skipped is not None:
                skipped.append(line)
            continue
        parsed = parse_record(line, identity_mode=identity_mode)
        event = None if isinstance(parsed, Rejected) else parsed.event
        if event is not None:
            clock = max(clock, event.arrival_time_ms)
        yield PlannedRecord(line, partition_key(line, event), clock, parsed, position)


@dataclass(frozen=True, slots=True)
class PlannedStream:
    """A whole file planned at once (`plan_all`): what a tool that looks at every record anyway can hand to
    the engine, so the records are parsed once."""

    records: list[PlannedRecord]
    too_large: list[str]


def plan_all(lines: Iterable[str], identity_mode: IdentityMode) -> PlannedStream:
    skipped: list[str] = []
    return PlannedStream(list(plan(lines, identity_mode, skipped)), skipped)


def without_user(records: Iterable[PlannedRecord], too_large: Iterable[str], identity_mode: IdentityMode) -> int:
    """Records the normaliser reads but that name no user (reported, never counted by a rule): those planned, and
    those too large to put (parsed here, as nothing else parses them)."""
    planned = sum(1 for record in records if not isinstance(record.parsed, Rejected) and record.parsed.event.user_id
                  is None)
    return planned + sum(1 for line in too_large
                         if not isinstance(parsed := parse_record(line, identity_mode=identity_mode), Rejected)
                         and parsed.event.user_id is None)


def batches(records: Iterable[PlannedRecord], batch_size: int) -> Iterator[list[PlannedRecord]]:
    """The mapping's batches: at most `batch_size` records, within `BATCHING_WINDOW_MS` of the first."""
    batch: list[PlannedRecord] = []
    for record in records:
        if batch and (len(batch) >= batch_size or record.arrival_ms - batch[0].arrival_ms > BATCHING_WINDOW_MS):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


# --- what both engines report ----------------------------------------------------------------------------

QUALIFICATION_FIELDS = ("rule_id", "user_id", "action", "name", "value", "event_time_ms")
"""A qualification as the replay reports it: the fields of the EventBridge detail a consumer reads."""


def plain_number(value: Decimal) -> int | float:
    """JSON has one number type; integral sums print as integers, the rest as the float nearest the decimal."""
    return int(value) if value == value.to_integral_value() else float(value)
