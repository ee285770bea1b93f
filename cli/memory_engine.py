"""The local replay's default engine: the aggregator's own code — the normaliser, matching, coalescing, rule
evaluation, the exactly-once marks and the outbox — on the in-memory counter store
(`functions/rules/memory_store.py`), in the same batches on the same clocks as the moto engine
(`cli/stream_plan.py`). Only the storage differs: no moto, and no Kinesis, SQS or EventBridge round trips.

What it does not run: the Kinesis and Lambda plumbing (base64, Powertools' batch processor, the partial-batch
response) and the dispatcher. A qualification is read from the outbox entry the aggregator wrote, as the
EventBridge sink would put it on the bus (`EventBridgeSink.detail`). Faults (duplicates, failed writes,
redeliveries) need `--engine aws`.

Parallel, by user. Counters are per (rule, user) and the processing clock of a batch depends only on the
arrivals in it, so `workers` processes (forked, sharing the records read) each plan the whole stream — every
record parsed, the same batches, the same clocks — and count only the users that hash to them. The rules' state
of a user is the same whichever process counts it, so the merged counters and qualifications equal one
process's. Records without a user, and those the normaliser rejects, are reported by the first.
"""

from __future__ import annotations

import os
import time
import zlib
from collections import Counter
from typing import Any, Callable, Sequence

from cli.stream_plan import (
    PROCESSING_LAG_MS,
    PlannedStream,
    QUALIFICATION_FIELDS,
    SHARD_ID,
    TOO_LARGE,
    batches,
    plain_number,
    plan,
    without_user as stream_without_user,
)

MEMORY_BATCH_SIZE = 1_000
"""Records per batch when none is given. The outcome does not depend on it (exactly-once counters); larger
batches coalesce more events per counter write."""
PROGRESS_EVERY = 10_000
"""Records between two progress reports."""


def default_workers() -> int:
    """One process per core the machine gives this one, at most 8."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, available))


class MemoryEngineError(Exception):
    """A counter write failed without any fault injected (a bug, not the input), or a worker died."""


def run_memory_engine(rule_set: Any, lines: Sequence[str] | PlannedStream, *, batch_size: int, identity_mode: str,
                      workers: int = 1, on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Replay `lines` under `rule_set`; returns the qualifications, counters and stats (`ReplayResult`'s
    fields, as plain data). `lines` may be a `PlannedStream` already made (`stream_plan.plan_all`): the workers
    then share it instead of each parsing the records again."""
    if workers <= 1:
        return _merge([_Partition(rule_set, batch_size, identity_mode, 0, 1).run(lines, on_progress)])
    from cli.forked import WorkerFailed, run_forked

    def task(index: int) -> Any:
        # Only the first reports progress: every worker plans every record, so one count says how far all are.
        return lambda report: _Partition(rule_set, batch_size, identity_mode, index, workers).run(
            lines, report if index == 0 else None)

    try:
        return _merge(run_forked([task(index) for index in range(workers)], on_progress=on_progress))
    except WorkerFailed as error:
        raise MemoryEngineError(f"the memory engine failed: {error}") from error


class _Partition:
    """The engine for the users that hash to `index` of `partitions` (all of them when there is one)."""

    def __init__(self, rule_set: Any, batch_size: int, identity_mode: str, index: int, partitions: int) -> None:
        from functions.events.canonical import IdentityMode
        from functions.rules.aggregator import ACTIVATION_MARGIN_MS, Aggregator
        from functions.rules.memory_store import MemoryCounterStore
        from functions.rules.model import RuleType
        from functions.rules.rules_source import DEFAULT_MAX_AGE_SECONDS
        from functions.rules.store import StoreSettings

        self.rules, self.batch_size, self.index, self.partitions = rule_set, batch_size, index, partitions
        self.mode = IdentityMode(identity_mode)
        self.clock_ms = 0
        self.store = MemoryCounterStore(StoreSettings(counters_table="rule-counters", outbox_table="rule-outbox"),
                                        clock=lambda: self.clock_ms / 1000)
        # The file is the whole history: date and window rules are active from the beginning of time, and
        # there is nothing left for a backfill (as in the moto engine).
        for rule in rule_set:
            if rule.rule_type is not RuleType.AGGREGATOR:
                self.store.activations.ensure(rule, 0)
        self.aggregator = Aggregator(self.store,
                                     activation_delay_ms=DEFAULT_MAX_AGE_SECONDS * 1000 + ACTIVATION_MARGIN_MS,
                                     activation_clock=lambda: int(time.time() * 1000))

    def owns(self, user_id: str) -> bool:
        return self.partitions == 1 or zlib.crc32(user_id.encode("utf-8")) % self.partitions == self.index

    def run(self, lines: Sequence[str] | PlannedStream, on_progress: Callable[[int], None] | None) -> dict[str, Any]:
        from functions.events.canonical import Rejected
        from functions.rules.aggregator import Count, not_counted
        from functions.rules.dedupe import Delivery
        from functions.rules.sinks import EventBridgeSink

        reports = self.index == 0  # what concerns no user is reported once
        counts: Counter[Any] = Counter()
        rejected: dict[str, str] = {}
        qualifications: list[dict[str, Any]] = []
        if isinstance(lines, PlannedStream):
            records, too_large = iter(lines.records), list(lines.too_large)
        else:
            too_large = []
            records = plan(lines, self.mode, too_large)
        calls = sequence = 0
        next_progress = PROGRESS_EVERY
        for batch in batches(records, self.batch_size):
            deliveries, newest = [], 0
            for record in batch:
                sequence += 1
                newest = max(newest, record.arrival_ms)
                parsed = record.parsed
                skipped = not_counted(parsed if isinstance(parsed, Rejected) else parsed.event)
                if skipped is not None:
                    if not reports:
                        continue
                    counts[skipped] += 1
                    if isinstance(parsed, Rejected):
                        rejected[str(sequence)] = parsed.reason
                elif self.owns(parsed.event.user_id):
                    deliveries.append(Delivery(parsed.at(record.arrival_ms), SHARD_ID, str(sequence),
                                               record.partition_key))
            self.clock_ms = max(self.clock_ms, newest + PROCESSING_LAG_MS)
            calls += 1
            if deliveries:
                self._process(deliveries, counts, rejected, sequence)
                for entry in self.store.new_outbox_entries():
                    detail = EventBridgeSink.detail(entry)
                    qualifications.append({name: detail[name] for name in QUALIFICATION_FIELDS})
            if on_progress is not None and sequence >= next_progress:
                on_progress(sequence)
                next_progress = sequence + PROGRESS_EVERY
        if on_progress is not None:
            on_progress(sequence)
        without_user = counts[Count.NO_USER]
        if not reports:
            too_large = []
        elif too_large:
            without_user += stream_without_user((), too_large, self.mode)
        counters = [{"rule_id": item.rule_id, "user_id": item.user_id, "count": item.state.count,
                     "sum": plain_number(item.state.sum)} for item in self.store.counters()]
        return {"qualifications": qualifications, "counters": counters, "rejected": rejected,
                "too_large": len(too_large), "without_user": without_user, "calls": calls, "records": sequence,
                "outbox_entries": len(self.store.outbox_entries()),
                "operations": {"writes": counts[Count.WRITES], "pairs_applied": counts[Count.APPLIED],
                               "duplicates_skipped": counts[Count.DUPLICATES] + counts[Count.REPEATED_IN_BATCH]}}

    def _process(self, deliveries: list[Any], counts: Counter[Any], rejected: dict[str, str], position: int) -> None:
        outcome = self.aggregator.process(self.rules, deliveries, counts)
        if outcome.failures:
            (rule_id, _), error = next(iter(outcome.failures.items()))
            raise MemoryEngineError(f"the counter write of rule {rule_id!r} failed by record {position:,}: "
                                    f"{type(error).__name__}: {error}") from error
        for key, reason in outcome.unwritable.items():
            for delivery in outcome.groups[key]:
                rejected[delivery.sequence_number] = f"rule {key[0]}: {reason}"


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    qualifications = sorted((q for part in parts for q in part["qualifications"]),
                            key=lambda q: (q["event_time_ms"], q["rule_id"], q["user_id"], q["name"]))
    counters = sorted((c for part in parts for c in part["counters"]), key=lambda c: (c["rule_id"], c["user_id"]))
    rejected: dict[str, str] = {}
    for part in parts:
        rejected.update(part["rejected"])
    reasons = Counter(rejected.values())
    too_large = sum(part["too_large"] for part in parts)
    if too_large:
        reasons[TOO_LARGE] += too_large
    operations: Counter[str] = Counter()
    for part in parts:
        operations.update(part["operations"])
    records = parts[0]["records"]
    stats = {
        "engine": "memory",
        "workers": len(parts),
        "records": records + too_large,
        "records_put": records,
        "rejected": {"count": sum(reasons.values()), "reasons": dict(reasons.most_common())},
        "without_user": sum(part["without_user"] for part in parts),
        "duplicates_sent": 0,
        "failures_injected": 0,
        "redeliveries": {"aggregator_partial": 0, "aggregator_whole_batch": 0, "dispatcher": 0},
        "aggregator_invocations": parts[0]["calls"],
        "dispatcher_invocations": 0,
        "store_operations": dict(operations),
        "outbox_entries": sum(part["outbox_entries"] for part in parts),
        "dispatched": {},
        "engine_events": {"RuleQualified": len(qualifications), "RuleExited": 0},
        "dead_lettered": 0,
    }
    return {"qualifications": qualifications, "counters": counters, "stats": stats}
