"""RuleEngine aggregator: the Kinesis consumer that counts events per (rule, user) in DynamoDB, exactly once,
and evaluates each rule in the same write.

Per batch:

1. Every record is normalised (with its Kinesis approximate arrival time). A record that cannot be parsed is
   sent to the failures queue (SQS) with its reason and data and counts as processed, so it never blocks the
   shard; an event without a user is counted (`EventsWithoutUser`) and skipped, never retried; the engine's
   own `trk_…` events are skipped.
2. Events are matched against the rules in force (`RulesSource`, at most a minute old). A date or window rule
   counts only events that arrived at or after its activation — the backfill counts the earlier ones from the
   lake, so nothing is counted twice while it runs — and a date rule only until `DATE_RULE_GRACE_DAYS` after
   its finish. A rule removed from the sheet is simply not evaluated any more.
3. Matching events are coalesced per (rule, user) in stream order, and each group is applied with one read
   and one conditional write (`CounterStore.apply`), whose outcome equals applying them one by one. Each
   delivery carries its record's shard, sequence number and partition key (`kinesis.partitionKey` in the
   Lambda event, https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html): the redelivery mark.
4. Trust comes from the stream, never the content (docs/security.md): a record of the app stream (its
   `eventSourceARN` is APP_STREAM_ARN) is normalised untrusted, so a forged SES click, exposure or `trk_` event
   is rejected to the failures queue and never counted. Its redelivery mark uses the shard id `app/<shardId>`
   (`APP_SHARD_PREFIX`): shard ids repeat across streams, and the trusted stream's marks keep their plain ids.
5. A group the store cannot write whatever the retry (`Unwritable`: an item over DynamoDB's 400 KB, a key
   too long) is a poison group: each of its records goes to the failures queue with the reason and counts as
   processed (`GroupsUnwritable`), so it never blocks the shard; the record's other groups are unaffected.

Powertools. Coalescing needs the whole batch before the first write, while `BatchProcessor` calls a handler
per record. `CoalescingBatchProcessor` therefore lets the record handler do the per-record work (normalise,
route rejects, collect the event) and then, still inside `process()`, runs the coalesced writes and turns
each failed group into a failure of *its lowest sequence number* only. Powertools puts those in
`batchItemFailures`; Lambda checkpoints before the lowest one and redelivers from there, and the counters'
dedupe marks make the redelivered records that were already applied a no-op. (Failing every record of a
failed group would say the same thing to Lambda, which only uses the lowest.) A record whose own handling
failed (the failures queue unreachable) fails the usual way, and if every record failed Powertools raises so
the whole batch is retried. Retry cap, bisect-on-error, the on-failure destination and a ParallelizationFactor
(ordering per partition key, i.e. per user) are the event source mapping's settings.

Environment (read once, by `AggregatorSettings.from_env`): COUNTERS_TABLE, OUTBOX_TABLE, RULES_BUCKET,
RULES_KEY, FAILURES_QUEUE_URL (required); RULES_MAX_AGE_SECONDS (default 60), COUNTER_TTL_DAYS (400),
DEDUPE_HORIZON_HOURS (24), IDENTITY_MODE (`user_or_endpoint`), APP_STREAM_ARN (empty: no app stream),
APP_FAILURES_QUEUE_URL (required with APP_STREAM_ARN: the app stream's rejects go there, so that forged records
cannot keep the trusted failures alarm firing), APP_MAY_REPORT (empty), POWERTOOLS_METRICS_NAMESPACE
(`EngagementLoop`), GROUP_CONCURRENCY (16, from 1 to 64).

Concurrency (GROUP_CONCURRENCY). A batch's (rule, user) groups touch different counter items and different
outbox keys, so they are independent: up to GROUP_CONCURRENCY of them are read and written at once, on a
thread pool made once per container. Each group still runs in one thread, in stream order, exactly as before;
the results are merged in the main thread in the groups' order, so counts, the failed sequence numbers and the
partial-batch response are those of the sequential run (GROUP_CONCURRENCY=1, which runs no pool at all).
Threads help because a DynamoDB request is mostly waiting on the network, which releases the GIL; the
aggregator's own CPU work stays serial. The default 16 writes a batch of 100 (about 37 groups in bench.rules'
workload) in three rounds; past that the aggregator is CPU-bound (botocore serialising, signing and parsing
under one GIL) and 8, 16, 32 or 64 threads measure within noise of each other (`python -m bench.aggregator`).
The low-level boto3 client is shared by the threads: clients are thread-safe
(https://boto3.amazonaws.com/v1/documentation/api/latest/guide/clients.html, "Multithreading or
multiprocessing with clients"), sessions and resources are not, and none is used from the pool. The client's
connection pool is sized to the thread pool (`dynamodb_client_config`). Before the pool, the groups' items
are read in one BatchGetItem per 100 (`CounterStore.read_many`, consistent reads), so a group's read is no
request round of its own; the sequential path (GROUP_CONCURRENCY=1) reads each group's item itself, as before.
Semantics: docs/rules.md.
"""

from __future__ import annotations

import base64
import enum
import functools
import json
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE, ConsumerSettings, is_trusted_source
from functions.events.normalise import normalise
from functions.rules.activation import ActivationCache
from functions.rules.evaluate import matches
from functions.rules.rules_source import Env, RulesSettings, RulesSource, S3RulesSource
from functions.rules.model import ENGINE_EVENT_PREFIX, RuleSet
from functions.rules.counting import GroupResult, counts_now
from functions.rules.counter_item import CounterItem
from functions.rules.store import CounterStore, StoreSettings
from functions.rules.dedupe import Delivery
from functions.rules.limits import Unwritable, check_key

logger = Logger()

ACTIVATION_MARGIN_MS = 10_000
"""Added to the rules cache age when activating a rule (clock skew between Lambda and Kinesis)."""
MAX_MESSAGE_BYTES = 256 * 1024
"""SQS message size limit (the lowest of the limits SQS has had)."""
_KEPT_DATA_BYTES = 180_000  # base64 makes this 240,000 characters, leaving room for the other fields
APP_SHARD_PREFIX = "app/"
"""Namespaces the app stream's shard ids in the redelivery marks (`shardId-000000000000` exists in both streams);
no Kinesis shard id contains "/", so a namespaced id never equals a trusted one."""

GroupKey = tuple[str, str]
"""(rule_id, user_id)"""

DEFAULT_GROUP_CONCURRENCY = 16
"""(rule, user) groups of a batch read and written at once (GROUP_CONCURRENCY); see the module docstring."""
MAX_GROUP_CONCURRENCY = 64


class Count(str, enum.Enum):
    """What the aggregator counts; each is a CloudWatch metric."""

    RECORDS = "RecordsReceived"
    REJECTED = "RecordsRejected"
    NO_USER = "EventsWithoutUser"
    ENGINE_EVENTS = "EngineEventsSkipped"
    REPEATED_IN_BATCH = "EventsRepeatedInBatch"
    MATCHED = "MatchedPairs"
    BEFORE_ACTIVATION = "PairsBeforeActivation"
    APPLIED = "PairsApplied"
    DUPLICATES = "DuplicatesSkipped"
    WRITES = "CounterWrites"
    QUALIFICATIONS = "Qualifications"
    GROUPS_FAILED = "GroupWritesFailed"
    GROUPS_UNWRITABLE = "GroupsUnwritable"


@dataclass(frozen=True, slots=True, kw_only=True)
class AggregatorSettings:
    """The function's configuration, parsed once from its environment."""

    store: StoreSettings
    """COUNTERS_TABLE, OUTBOX_TABLE (required), COUNTER_TTL_DAYS (default 400), DEDUPE_HORIZON_HOURS (24)."""
    rules: RulesSettings
    """RULES_BUCKET, RULES_KEY (required), RULES_MAX_AGE_SECONDS (default 60)."""
    failures_queue_url: str
    """FAILURES_QUEUE_URL, required: where records that cannot be parsed go."""
    identity_mode: IdentityMode = IdentityMode.USER_OR_ENDPOINT
    """IDENTITY_MODE, default `user_or_endpoint`, as for the stream's other consumers."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """POWERTOOLS_METRICS_NAMESPACE, default `EngagementLoop`."""
    app_stream_arn: str = ""
    """APP_STREAM_ARN, default empty (no app stream): records read from it are untrusted."""
    app_may_report: frozenset[str] = frozenset()
    """APP_MAY_REPORT, default empty: reserved push event types the app stream may still carry."""
    app_failures_queue_url: str = ""
    """APP_FAILURES_QUEUE_URL, required when APP_STREAM_ARN is set: where the app stream's rejects go."""
    group_concurrency: int = DEFAULT_GROUP_CONCURRENCY
    """GROUP_CONCURRENCY, default 16, 1 to 64: (rule, user) groups written at once; 1 writes them one after
    another."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AggregatorSettings:
        """Read the settings; raises ValueError naming every missing or invalid variable."""
        env = Env(environ)
        store, rules = StoreSettings.read(env), RulesSettings.read(env)
        queue_url = env.text("FAILURES_QUEUE_URL", what="SQS queue for records that cannot be parsed")
        try:
            transform = ConsumerSettings.from_env(env.environ)  # one IDENTITY_MODE parser for every consumer
        except ValueError as error:
            env.problems.append(str(error))
            transform = ConsumerSettings()
        app_queue_url = (env.text("APP_FAILURES_QUEUE_URL", what="SQS queue for the app stream's rejects, "
                                  "required with APP_STREAM_ARN") if transform.app_stream_arn
                         else (env.environ.get("APP_FAILURES_QUEUE_URL") or "").strip())
        concurrency = _group_concurrency(env)
        env.check("rules aggregator")
        return cls(store=store, rules=rules, failures_queue_url=queue_url, identity_mode=transform.identity_mode,
                   metrics_namespace=transform.metrics_namespace, app_stream_arn=transform.app_stream_arn,
                   app_may_report=transform.app_may_report, app_failures_queue_url=app_queue_url,
                   group_concurrency=concurrency)


def _group_concurrency(env: Env) -> int:
    raw = (env.environ.get("GROUP_CONCURRENCY") or "").strip()
    if not raw:
        return DEFAULT_GROUP_CONCURRENCY
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_GROUP_CONCURRENCY:
        env.problems.append(f"GROUP_CONCURRENCY={raw!r} is invalid: expected a whole number from 1 to "
                            f"{MAX_GROUP_CONCURRENCY} (groups written at once; 1 writes them one after another)")
        return DEFAULT_GROUP_CONCURRENCY
    return value


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A stream record that could not become an event, with everything needed to find or replay it."""

    reason: str
    data: bytes
    stream_arn: str
    shard_id: str
    sequence_number: str
    arrival_time_ms: int

    def to_message(self) -> str:
        body: dict[str, Any] = {
            "source": "engagement-loop.rules.aggregator", "reason": self.reason, "stream_arn": self.stream_arn,
            "shard_id": self.shard_id, "sequence_number": self.sequence_number,
            "arrival_time_ms": self.arrival_time_ms, "data": base64.b64encode(self.data).decode("ascii"),
        }
        text = json.dumps(body)
        if len(text) > MAX_MESSAGE_BYTES:  # ASCII only, so characters are bytes
            body |= {"data": base64.b64encode(self.data[:_KEPT_DATA_BYTES]).decode("ascii"),
                     "data_truncated": True, "data_bytes": len(self.data)}
            text = json.dumps(body)
        return text


class FailureQueue(Protocol):
    """Where records that cannot be parsed go."""

    def send(self, record: RejectedRecord) -> None: ...


class SqsFailureQueue:
    """An SQS queue, through a boto3 `sqs` client."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client, self._queue_url = client, queue_url

    def send(self, record: RejectedRecord) -> None:
        self._client.send_message(QueueUrl=self._queue_url, MessageBody=record.to_message())


def not_counted(result: CanonicalEvent | Rejected) -> Count | None:
    """Why a normalised record reaches no rule — rejected, without a user, or one of the engine's own `trk_`
    events — as the count it is reported under; None for an event the rules may count. The local engine
    (`cli/memory_engine.py`) routes records with this too."""
    if isinstance(result, Rejected):
        return Count.REJECTED
    if result.user_id is None:
        return Count.NO_USER
    if result.event_type.startswith(ENGINE_EVENT_PREFIX):
        return Count.ENGINE_EVENTS
    return None


@dataclass
class BatchOutcome:
    """The groups a batch made, what each write did, and which failed."""

    groups: dict[GroupKey, list[Delivery]] = field(default_factory=dict)
    results: dict[GroupKey, GroupResult] = field(default_factory=dict)
    failures: dict[GroupKey, Exception] = field(default_factory=dict)
    unwritable: dict[GroupKey, str] = field(default_factory=dict)
    """Poison groups (`Unwritable`) and why: processed, their records for the failures queue."""

    def failed_sequence_numbers(self) -> dict[str, Exception]:
        """For each failed group, its lowest sequence number (where Lambda must redeliver from)."""
        failed: dict[str, Exception] = {}
        for key, error in self.failures.items():
            first = min(self.groups[key], key=lambda delivery: int(delivery.sequence_number))
            failed.setdefault(first.sequence_number, error)
        return failed


class Aggregator:
    """Matches a batch's events against the rules and applies them per (rule, user) through the store.

    Activations (and the rules' heartbeats) are kept by an `ActivationCache` (functions/rules/activation.py,
    docs/backfill.md): one request per container per date or window rule on first sight, then one per rule
    every few minutes of processing. `one_by_one` writes every event separately (for comparisons; same
    outcome, more requests). `concurrency` groups are written at once (1, the default here: one after another;
    the function passes GROUP_CONCURRENCY), on a pool made at the first batch that needs it and kept.
    """

    def __init__(self, store: CounterStore, *, activation_delay_ms: int, one_by_one: bool = False,
                 activation_clock: Callable[[], int] | None = None, concurrency: int = 1) -> None:
        if not 1 <= concurrency <= MAX_GROUP_CONCURRENCY:
            raise ValueError(f"concurrency={concurrency!r}: expected 1 to {MAX_GROUP_CONCURRENCY}")
        self._store, self._activation_delay_ms, self._one_by_one = store, activation_delay_ms, one_by_one
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # `activation_clock` (ms; default the store's): the local replay runs the counters on the stream's
        # clock but its activations, made once for the whole file, on the wall clock.
        self._activations = ActivationCache(store.activations, activation_clock or store.now_ms, activation_delay_ms)

    def activations(self, rules: RuleSet) -> dict[str, int]:
        """Activation time of each date and window rule in force (`ActivationCache.current`)."""
        return self._activations.current(rules)

    def group(self, rules: RuleSet, deliveries: Sequence[Delivery],
              counts: Counter[Count]) -> dict[GroupKey, list[Delivery]]:
        """Coalesce per (rule, user) in stream order; an event id repeated in the batch for the same user counts
        once."""
        activations = self.activations(rules)
        groups: dict[GroupKey, list[Delivery]] = defaultdict(list)
        # Per user, as the counters' own marks are: another user's record with the same producer id is another
        # event, whether or not the batch holds both (a batch-wide set made the outcome depend on the cuts).
        seen: set[tuple[str | None, str]] = set()
        for delivery in deliveries:
            event = delivery.event
            if (event.user_id, event.event_id) in seen:
                counts[Count.REPEATED_IN_BATCH] += 1
                continue
            seen.add((event.user_id, event.event_id))
            for rule in rules.for_event_type(event.event_type):
                if not matches(rule, event):
                    continue
                if counts_now(rule, event, activations.get(rule.rule_id)):
                    assert event.user_id is not None
                    groups[(rule.rule_id, event.user_id)].append(delivery)
                    counts[Count.MATCHED] += 1
                else:
                    counts[Count.BEFORE_ACTIVATION] += 1
        return dict(groups)

    def _read_first(self, groups: Mapping[GroupKey, list[Delivery]]) -> dict[GroupKey, CounterItem]:
        """The groups' items in as few requests as possible (BatchGetItem), before the pool writes them: a
        group's read is then no request round of its own. The writes stay conditional on the version read, so
        an item changed since is re-read as before. Keys DynamoDB would refuse are left to `apply` (which sets
        the group aside as `Unwritable`), and a failed batch read leaves every group to read its own item."""
        keys = []
        for key in groups:
            try:
                check_key(*key)
            except Unwritable:
                continue
            keys.append(key)
        try:
            return self._store.read_many(keys)
        except Exception:  # noqa: BLE001 - each group reads (and fails, or not) on its own, as without it
            logger.exception("batch read of the counters failed; each group reads its own")
            return {}

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="group")
            return self._pool

    def process(self, rules: RuleSet, deliveries: Sequence[Delivery], counts: Counter[Count]) -> BatchOutcome:
        """Group the deliveries and write each group; a group that cannot be written is reported, not raised.

        The groups are written `concurrency` at a time; their outcomes are merged here, in the groups' order,
        whatever order they finish in, so the outcome does not depend on the concurrency."""
        outcome = BatchOutcome(groups=self.group(rules, deliveries, counts))  # activations: before the pool
        concurrent = self.concurrency > 1 and len(outcome.groups) > 1
        read = self._read_first(outcome.groups) if concurrent and not self._one_by_one else {}

        def run(key: GroupKey, group: list[Delivery]) -> GroupResult:
            if self._one_by_one:
                return self._store.apply_one_by_one(rules.by_id(key[0]), key[1], group)
            item = read.get(key)  # none on the sequential path: `apply` reads it, exactly as before
            if item is None:
                return self._store.apply(rules.by_id(key[0]), key[1], group)
            return self._store.apply(rules.by_id(key[0]), key[1], group, item=item)

        pending: list[tuple[GroupKey, list[Delivery], Future[GroupResult] | None]]
        if concurrent:
            pool = self._executor()
            pending = [(key, group, pool.submit(run, key, group)) for key, group in outcome.groups.items()]
        else:
            pending = [(key, group, None) for key, group in outcome.groups.items()]
        for key, group, future in pending:
            rule_id = key[0]
            try:
                result = run(key, group) if future is None else future.result()
            except Unwritable as error:  # would fail on every retry: set aside, never retried
                logger.warning("counter change cannot be written", extra={"rule_id": rule_id, "records": len(group),
                                                                          "reason": error.reason})
                outcome.unwritable[key] = error.reason
                counts[Count.GROUPS_UNWRITABLE] += 1
                continue
            except Exception as error:  # noqa: BLE001 - any failure: the group is retried from its first record
                logger.exception("counter write failed", extra={"rule_id": rule_id, "records": len(group)})
                outcome.failures[key] = error
                counts[Count.GROUPS_FAILED] += 1
                continue
            outcome.results[key] = result
            counts[Count.APPLIED] += result.applied
            counts[Count.DUPLICATES] += result.duplicates
            counts[Count.WRITES] += result.writes
            counts[Count.QUALIFICATIONS] += len(result.qualifications)
        return outcome


# --- The handler -----------------------------------------------------------------------------------------


class CoalescingBatchProcessor(BatchProcessor):
    """A Kinesis `BatchProcessor` that, after the record handler has seen every record, calls `flush` (the
    coalesced writes) and reports the records it names (sequence number → error) as failed."""

    def __init__(self, flush: Callable[[], Mapping[str, Exception]]) -> None:
        super().__init__(event_type=EventType.KinesisDataStreams)
        self._flush = flush

    def process(self) -> list[tuple]:
        results = super().process()
        failed = self._flush()
        if failed:
            succeeded = {record["kinesis"]["sequenceNumber"]: record for record in self.success_messages}
            for sequence_number, error in failed.items():
                record = succeeded.get(sequence_number)
                if record is not None:
                    self.success_messages.remove(record)
                    results.append(self.failure_handler(KinesisStreamRecord(record),
                                                        (type(error), error, error.__traceback__)))
        return results


class KinesisBatch:
    """One invocation: records read one at a time (`read`, the record handler), then written together
    (`flush`)."""

    def __init__(self, aggregator: Aggregator, rules: RuleSet, identity_mode: IdentityMode,
                 failures: FailureQueue, *, app_stream_arn: str = "",
                 app_may_report: frozenset[str] = frozenset(), app_failures: FailureQueue | None = None) -> None:
        self._aggregator, self._rules, self._identity_mode, self._failures = aggregator, rules, identity_mode, failures
        self._app_stream_arn, self._app_may_report = app_stream_arn, app_may_report
        # The app stream's rejects go to a queue of their own: anyone with the producer policy can send records
        # that are rejected, and they must not keep the trusted failures alarm firing (docs/security.md).
        self._app_failures = app_failures or failures
        self.deliveries: list[Delivery] = []
        self.counts: Counter[Count] = Counter()
        self._raw: dict[str, tuple[bytes, str, str, int]] = {}
        """sequence number → (data, stream ARN, Kinesis shard id, arrival ms) of each delivery, for a poison
        group's records."""

    def read(self, record: KinesisStreamRecord) -> None:
        kinesis = record.kinesis
        shard_id = record.event_id.partition(":")[0]
        trusted = is_trusted_source(record.event_source_arn, self._app_stream_arn)
        mark_shard_id = shard_id if trusted else APP_SHARD_PREFIX + shard_id
        arrival_ms = round(kinesis.approximate_arrival_timestamp * 1000)
        self.counts[Count.RECORDS] += 1
        result: CanonicalEvent | Rejected
        try:
            data = base64.b64decode(kinesis.data, validate=True)
        except ValueError:  # binascii.Error: never from Kinesis itself, but it must not block the shard
            data, result = kinesis.data.encode("utf-8", "replace"), Rejected("record data is not base64")
        else:
            try:
                result = normalise(data, identity_mode=self._identity_mode, arrival_time_ms=arrival_ms,
                                   trusted=trusted, app_may_report=self._app_may_report)
            except Exception:  # noqa: BLE001 - a bug must cost one record, and that record is kept for replay
                logger.exception("normalise raised", extra={"sequence_number": kinesis.sequence_number})
                result = Rejected("internal error while normalising (a bug: see the function's log)")
        skipped = not_counted(result)
        if isinstance(result, Rejected):
            logger.warning("record rejected",
                           extra={"sequence_number": kinesis.sequence_number, "reason": result.reason})
            self._failures_for(trusted).send(RejectedRecord(result.reason, data, record.event_source_arn, shard_id,
                                                            kinesis.sequence_number, arrival_ms))
        if skipped is not None:
            self.counts[skipped] += 1
        else:
            assert isinstance(result, CanonicalEvent)
            self.deliveries.append(Delivery(result, mark_shard_id, kinesis.sequence_number, kinesis.partition_key))
            self._raw[kinesis.sequence_number] = (data, record.event_source_arn, shard_id, arrival_ms)

    def _failures_for(self, trusted: bool) -> FailureQueue:
        return self._failures if trusted else self._app_failures

    def flush(self) -> dict[str, Exception]:
        outcome = self._aggregator.process(self._rules, self.deliveries, self.counts)
        failed = outcome.failed_sequence_numbers()
        for key, reason in outcome.unwritable.items():
            rule_id = key[0]
            for delivery in outcome.groups[key]:
                data, stream_arn, shard_id, arrival_ms = self._raw[delivery.sequence_number]
                trusted = is_trusted_source(stream_arn, self._app_stream_arn)
                try:
                    self._failures_for(trusted).send(RejectedRecord(f"rule {rule_id}: {reason}", data, stream_arn,
                                                                    shard_id, delivery.sequence_number, arrival_ms))
                except Exception as error:  # noqa: BLE001 - not set aside: Lambda must deliver it again
                    logger.exception("could not send a poison record to the failures queue")
                    failed.setdefault(delivery.sequence_number, error)
        return failed


_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


def dynamodb_client_config(group_concurrency: int) -> Config:
    """The DynamoDB client's (https://docs.aws.amazon.com/botocore/latest/reference/config.html): as many pooled
    connections as groups written at once (`max_pool_connections`, default 10: a thread beyond them opens a
    connection it then drops), and no client-side parameter validation ("You can disable parameter validation
    for performance reasons"). Validating a counter item's nested maps was a quarter of botocore's CPU per
    write (bench/aggregator.py), the requests are built by the store from typed values, and DynamoDB validates
    them anyway: a malformed one still fails, as a ValidationException instead of a ParamValidationError."""
    return _CLIENT_CONFIG.merge(Config(max_pool_connections=max(10, group_concurrency), parameter_validation=False))


@functools.cache
def _settings() -> AggregatorSettings:
    return AggregatorSettings.from_env()


@functools.cache
def _rules_source() -> RulesSource:
    return S3RulesSource(boto3.client("s3", config=_CLIENT_CONFIG), _settings().rules)


def make_aggregator(settings: AggregatorSettings, *, clock: Callable[[], float] = time.time,
                    activation_clock: Callable[[], int] | None = None) -> Aggregator:
    """The function's aggregator: its store on a boto3 `dynamodb` client and `clock` (epoch seconds), the
    processing clock window rules are evaluated against (the local replay passes the stream's)."""
    store = CounterStore(boto3.client("dynamodb", config=dynamodb_client_config(settings.group_concurrency)),
                         settings.store, clock=clock)
    return Aggregator(store, activation_delay_ms=settings.rules.max_age_seconds * 1000 + ACTIVATION_MARGIN_MS,
                      activation_clock=activation_clock, concurrency=settings.group_concurrency)


@functools.cache
def _aggregator() -> Aggregator:
    return make_aggregator(_settings())


@functools.cache
def _failure_queue() -> FailureQueue:
    return SqsFailureQueue(boto3.client("sqs", config=_CLIENT_CONFIG), _settings().failures_queue_url)


@functools.cache
def _app_failure_queue() -> FailureQueue | None:
    url = _settings().app_failures_queue_url
    return SqsFailureQueue(boto3.client("sqs", config=_CLIENT_CONFIG), url) if url else None


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (`functions.rules.aggregator.lambda_handler`)."""
    settings = _settings()
    rules = _rules_source().current()  # no rules at all: raise, and the whole batch is retried
    batch = KinesisBatch(_aggregator(), rules, settings.identity_mode, _failure_queue(),
                         app_stream_arn=settings.app_stream_arn, app_may_report=settings.app_may_report,
                         app_failures=_app_failure_queue())
    try:
        return process_partial_response(event=event, record_handler=batch.read,
                                        processor=CoalescingBatchProcessor(batch.flush), context=context)
    finally:
        publish_counts(batch.counts, Count, settings.metrics_namespace)


def publish_counts(counts: Mapping[Any, int], names: Iterable[enum.Enum], namespace: str) -> None:
    """Each of `names` as a CloudWatch count (embedded metric format), zeros included."""
    metrics = Metrics(namespace=namespace)
    for name in names:
        metrics.add_metric(name=str(name.value), unit=MetricUnit.Count, value=counts.get(name, 0))
    metrics.flush_metrics()
