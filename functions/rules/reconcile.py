"""Outbox reconciler: nothing stays pending forever.

The dispatcher learns of an outbox entry only from the outbox table's DynamoDB stream, and a stream record
can be lost to it: stream records are removed after 24 hours
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Streams.html), an event source mapping
whose retries are exhausted sends only metadata about the batch to its on-failure destination, not the
records (https://docs.aws.amazon.com/lambda/latest/dg/services-dynamodb-errors.html), and a recreated
mapping starts at LATEST. Such an entry keeps `status = pending` and would never be delivered.

On a schedule, this function finds the entries pending for longer than `RECONCILE_AFTER_SECONDS` through
the outbox's sparse pending index (`outbox.PENDING_INDEX`: partition `pending_shard`, sort `created_ms`;
one Query per shard, oldest first — never a Scan) and hands each to `dispatcher.handle_entry`, the live
dispatcher's own delivery code. So it is idempotent with the live dispatcher: `handle_entry` re-reads the
item with a strongly consistent read (the index itself is only eventually consistent,
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/HowItWorks.ReadConsistency.html), returns at once for an entry
settled meanwhile, skips every sink already in `delivered_sinks`, applies the supersede rule, and
dead-letters what still fails exactly as the dispatcher does. The threshold leaves young entries to the
live dispatcher (an entry is pending for a few seconds legitimately); should both still take the same
entry, the sink-level marks limit the overlap to the sinks in flight at that moment (at least once per
sink, docs/actions.md).

Metrics (namespace `POWERTOOLS_METRICS_NAMESPACE`, dimension `service`): `OutboxEntriesReconciled` (entries
this run settled or advanced), `OutboxEntriesReconcileFailed` (entries it could not handle; retried next run)
the per-sink counts the dispatcher emits for the entries this run handled (`dispatcher.sink_counts`:
`DeliveredTo_<sink>`, `SkippedBy_<sink>`, `SinkRetries_<sink>`, `ProfilesCreated`),
and `OldestPendingEntryAgeSeconds` (the oldest entry pending when the run began — settled ones the index
still listed are not counted, and are taken out of it — 0 when none), which the stack alarms on: when
it exceeds the threshold plus two runs, reconciliation is not keeping up, or an entry fails every run (its
error is logged each time). Failures do not count against `RECONCILE_MAX_ENTRIES` (the time budget bounds
them), and the shards are taken in an order that rotates every minute, so entries that keep failing never
starve the rest.

Environment (`ReconcilerSettings.from_env`): the dispatcher's (`OUTBOX_TABLE`, `EVENT_BUS_NAME`,
`DEAD_LETTER_QUEUE_URL` required; `PINPOINT_APPLICATION_ID`, `CONNECT_DOMAIN_NAME`, `CONNECT_PROFILE_KEY`,
`CONNECT_OBJECT_TYPE`, `CONNECT_UNKNOWN_USERS`, `POWERTOOLS_METRICS_NAMESPACE` optional), plus
`RECONCILE_AFTER_SECONDS` (default 900) and `RECONCILE_MAX_ENTRIES` (default 500 per run).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.rules.dispatcher import DispatcherSettings, Runtime, build_runtime, handle_entry, sink_counts
from functions.rules.dynamo import from_attributes
from functions.rules.outbox import CREATED_MS, PENDING_INDEX, PENDING_SHARD, PENDING_SHARDS, OutboxEntry
from functions.rules.rules_source import Env

logger = Logger()

DEFAULT_PENDING_AFTER_SECONDS = 900
"""An entry pending longer than this is taken: well past the live dispatcher's normal seconds."""
DEFAULT_MAX_ENTRIES = 500
PAGE_SIZE = 100
TIME_RESERVE_MS = 15_000
"""Stop taking entries when less than this is left of the invocation (one entry may retry its sinks)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReconcilerSettings:
    """The function's configuration, parsed once from its environment."""

    delivery: DispatcherSettings
    """Where entries go, exactly as the dispatcher reads it."""
    pending_after_seconds: int = DEFAULT_PENDING_AFTER_SECONDS
    """`RECONCILE_AFTER_SECONDS`, default 900: how long an entry must have been pending to be taken."""
    max_entries: int = DEFAULT_MAX_ENTRIES
    """`RECONCILE_MAX_ENTRIES`, default 500: entries handled per run at most (the rest wait for the next);
    entries that fail do not count."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReconcilerSettings:
        """Read the settings; raises ValueError naming every missing or invalid variable."""
        env = Env(environ)
        settings = cls(delivery=DispatcherSettings.read(env),
                       pending_after_seconds=env.positive_int("RECONCILE_AFTER_SECONDS",
                                                              DEFAULT_PENDING_AFTER_SECONDS),
                       max_entries=env.positive_int("RECONCILE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES))
        env.check("outbox reconciler")
        return settings


class PendingEntries(Protocol):
    """The pending entries, per shard, oldest first."""

    def oldest_created_ms(self, shard: str, *, after_ms: int | None = None) -> int | None:
        """The oldest `created_ms` of the shard (created after `after_ms` when given); None when none."""
        ...

    def created_until(self, shard: str, until_ms: int) -> Iterator[Mapping[str, Any]]: ...


def shards() -> list[str]:
    return [str(number) for number in range(PENDING_SHARDS)]


@dataclass
class ReconcileReport:
    """What one run found and did."""

    reconciled: list[str] = field(default_factory=list)
    """Keys of the entries this run settled or advanced (delivered, dead-lettered, superseded)."""
    already_settled: list[str] = field(default_factory=list)
    """Keys the index still listed but that were settled when read (the index lags the table, or an earlier
    release left `pending_shard` on a settled entry); each is taken out of the index."""
    failed: dict[str, str] = field(default_factory=dict)
    """Key → the error; the entry stays pending and is taken again next run (without counting against the
    budget of the entries behind it)."""
    waiting: list[str] = field(default_factory=list)
    """Keys of entries a sink could not take yet (`sinks.NotYet`): still pending, asked again next run, and,
    like failures, not counted against the budget of the entries behind them."""
    oldest_pending_age_ms: int = 0
    stopped_early: bool = False
    """The run hit `max_entries` or its time budget; the rest waits for the next run."""
    sink_counts: Counter[str] = field(default_factory=Counter)
    """The dispatcher's per-sink metrics over the entries reconciled (`dispatcher.sink_counts`)."""

    def as_dict(self) -> dict[str, Any]:
        return {"reconciled": len(self.reconciled), "already_settled": len(self.already_settled),
                "failed": len(self.failed), "waiting": len(self.waiting), "oldest_pending_age_seconds": self.oldest_pending_age_ms // 1000,
                "stopped_early": self.stopped_early}


def reconcile(pending: PendingEntries, runtime: Runtime, *, now_ms: int, pending_after_ms: int,
              max_entries: int = DEFAULT_MAX_ENTRIES,
              time_left_ms: Callable[[], float] = lambda: math.inf) -> ReconcileReport:
    """Re-dispatch every entry pending since before `now_ms - pending_after_ms`, oldest first per shard.

    `max_entries` bounds the entries handled (settled, advanced or cleaned out of the index); entries that
    fail do not count, so one that fails every run never takes the budget of those behind it. Only the
    time budget bounds them: an entry fails on an exception of its own (an item that does not parse) or
    of DynamoDB or SQS, both quick, while a sink that fails dead-letters the entry, which settles it.
    The shards are taken in a rotating order (`_shard_order`), so a budget spent early is not always spent
    on the same shard. The reported age is that of the oldest entry pending when the run began, leaving out
    those a consistent read found settled (the index lags the table, or an earlier release left their
    `pending_shard`): they must not keep the age alarm on, and they are taken out of the index."""
    report = ReconcileReport()
    cutoff_ms = now_ms - pending_after_ms
    heads = {shard: pending.oldest_created_ms(shard) for shard in shards()}
    oldest: dict[str, int | None] = dict(heads)
    """Per shard, the creation time of its oldest entry not confirmed settled (the index's head until read)."""
    for shard in _shard_order(now_ms):
        head = heads[shard]
        if head is None or head > cutoff_ms:
            continue
        unsettled: int | None = None
        for item in pending.created_until(shard, cutoff_ms):
            created = int(item.get(CREATED_MS, 0))
            if len(report.reconciled) + len(report.already_settled) >= max_entries or time_left_ms() < TIME_RESERVE_MS:
                report.stopped_early = True
                oldest[shard] = created if unsettled is None else unsettled
                report.oldest_pending_age_ms = _age(oldest, now_ms)
                return report
            if not _reconcile_one(item, runtime, report):  # pending when the run began
                unsettled = created if unsettled is None else unsettled
        oldest[shard] = unsettled if unsettled is not None else pending.oldest_created_ms(shard, after_ms=cutoff_ms)
    report.oldest_pending_age_ms = _age(oldest, now_ms)
    return report


def _reconcile_one(item: Mapping[str, Any], runtime: Runtime, report: ReconcileReport) -> bool:
    """Handle one indexed entry; True when a consistent read found it settled already (the index lagging),
    False when it was pending (whether this run settled it or failed on it)."""
    key = str(item.get("pk", "?"))
    try:
        result = handle_entry(OutboxEntry.from_item(item), runtime)
        if result is None:
            # Settled, as a consistent read shows, but still indexed: the index lagging, or a dispatcher of an
            # earlier release that settled without removing `pending_shard`. Take it out, or it is read (and
            # counted in the age) every run.
            runtime.outbox.leave_pending_index(key)
    except Exception as error:  # noqa: BLE001 - one entry must not stop the others; it stays pending
        logger.exception("reconciling an entry failed", extra={"key": key})
        report.failed[key] = f"{type(error).__name__}: {error}"
        return False
    if result is None:
        report.already_settled.append(key)
        return True
    (report.reconciled if result.complete or result.failed else report.waiting).append(key)
    report.sink_counts.update(sink_counts(result))
    logger.info("entry reconciled", extra={
        "key": key, "delivered": result.delivered, "failed": result.failed,
        "superseded_by": result.superseded_by.key if result.superseded_by else None})
    return False


def _shard_order(now_ms: int) -> list[str]:
    """All shards, starting at one that moves on every minute (the schedule's granularity)."""
    names = shards()
    start = (now_ms // 60_000) % len(names)
    return names[start:] + names[:start]


def _age(oldest: Mapping[str, int | None], now_ms: int) -> int:
    return max((now_ms - created for created in oldest.values() if created is not None), default=0)


# --- AWS side effects ----------------------------------------------------------------------------------


class PendingIndex:
    """The outbox's sparse pending index (`PENDING_INDEX`), one Query per shard."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def _query(self, shard: str, *, until_ms: int | None = None, after_ms: int | None = None,
               limit: int) -> dict[str, Any]:
        condition, values = "#shard = :shard", {":shard": {"S": shard}}
        if until_ms is not None:
            condition, values[":until"] = condition + " AND #created <= :until", {"N": str(until_ms)}
        if after_ms is not None:
            condition, values[":after"] = condition + " AND #created > :after", {"N": str(after_ms)}
        bounded = until_ms is not None or after_ms is not None
        return {"TableName": self._table, "IndexName": PENDING_INDEX, "KeyConditionExpression": condition,
                "ExpressionAttributeNames": {"#shard": PENDING_SHARD, **({"#created": CREATED_MS} if bounded else {})},
                "ExpressionAttributeValues": values, "ScanIndexForward": True, "Limit": limit}

    def oldest_created_ms(self, shard: str, *, after_ms: int | None = None) -> int | None:
        items = self._client.query(**self._query(shard, after_ms=after_ms, limit=1)).get("Items", [])
        return int(items[0][CREATED_MS]["N"]) if items else None

    def created_until(self, shard: str, until_ms: int) -> Iterator[Mapping[str, Any]]:
        params = self._query(shard, until_ms=until_ms, limit=PAGE_SIZE)
        while True:
            page = self._client.query(**params)
            for raw in page.get("Items", []):
                yield from_attributes(raw)
            if not page.get("LastEvaluatedKey"):
                return
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# --- The handler ---------------------------------------------------------------------------------------


@functools.cache
def _settings() -> ReconcilerSettings:
    return ReconcilerSettings.from_env()


@functools.cache
def _runtime() -> tuple[Runtime, PendingIndex]:
    settings = _settings()
    session = boto3.session.Session()
    return (build_runtime(settings.delivery, session),
            PendingIndex(session.client("dynamodb"), settings.delivery.outbox_table))


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    runtime, index = _runtime()
    report = reconcile(index, runtime, now_ms=runtime.clock_ms(),
                       pending_after_ms=settings.pending_after_seconds * 1000, max_entries=settings.max_entries,
                       time_left_ms=context.get_remaining_time_in_millis)
    metrics = Metrics(namespace=settings.delivery.metrics_namespace)
    metrics.add_metric(name="OutboxEntriesReconciled", unit=MetricUnit.Count, value=len(report.reconciled))
    metrics.add_metric(name="OutboxEntriesReconcileFailed", unit=MetricUnit.Count, value=len(report.failed))
    metrics.add_metric(name="OutboxEntriesWaiting", unit=MetricUnit.Count, value=len(report.waiting))
    metrics.add_metric(name="OldestPendingEntryAgeSeconds", unit=MetricUnit.Seconds,
                       value=report.oldest_pending_age_ms / 1000)
    for name, value in sorted(report.sink_counts.items()):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics()
    summary = report.as_dict()
    logger.info("reconciliation run", extra=summary)
    return summary
