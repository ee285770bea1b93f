"""The local replay's `--engine aws`: raw stream records through the real RuleEngine handlers, against moto's
embedded AWS.

`run_aws_engine(rule_set, lines, options)` sets up what the stack would (the counters and outbox tables, the published
rules in S3, a one-shard Kinesis stream, the aggregator's failures queue, the dispatcher's dead-letter queue,
an EventBridge bus with a rule copying every engine event to a queue it reads back) and then:

1. puts every line on the stream in file order (partition key: the normalised user id, else a hash of the
   line) and reads the records back, with their real sequence numbers;
2. hands them to `functions.rules.aggregator.lambda_handler` in Kinesis-shaped batches of at most
   `batch_size` records that arrived within `BATCHING_WINDOW_MS` of the batch's first (the event source
   mapping invokes as records come, it does not hold a day's records for one batch), moving on like the
   mapping does: after a partial batch response, the next batch starts at the first failed record;
3. after each aggregator call, gives the outbox entries written since to
   `functions.rules.dispatcher.lambda_handler` as DynamoDB-stream INSERT records (moto has no DynamoDB
   Streams, so the replay scans the outbox — a local tool may; the deployed path never scans);
4. collects the qualifications from the bus (what a consumer would receive) and the counters from the table.

Faults, all drawn from one seeded generator:
- `duplicate_rate`: that share of records is put a second time, a little later (a producer retry), so the
  copy has its own sequence number and may land in a later batch;
- `fail_rate`: that share of aggregator calls has one of its DynamoDB writes fail — throttled before it is
  applied, or applied with the response lost (a timeout) — and the batch is redelivered from the first
  failed record; after a call that succeeded, the same batch is delivered again at that rate, as Kinesis may;
  dispatcher batches are delivered twice at that rate too.
With any fault rates, the qualifications and counters must equal the fault-free run's.

Targets moto lacks (Customer Profiles): `run_aws_engine(…, dispatcher_environment=…, clients=…)` adds variables
to the dispatcher's environment (e.g. `CONNECT_DOMAIN_NAME`) and hands the dispatcher's `build_runtime` a
session whose `client(service)` returns the given stand-in for those services (moto's for the rest), without
in-process retry delays — the seam the e2e test of the Connect sinks uses.

Arrival times: moto stamps records with today's time, which would make a date rule's counting window (and
the counters' duplicate window) depend on the day the replay runs. Each record instead gets the arrival time
it names itself — Pinpoint and SES records carry one, an app record's is its event time — made monotonic
as Kinesis' are, and a producer's duplicate arrives up to `DUPLICATE_DELAY_MS` after its original; window rules
count as of these arrivals, so where faults cut the batches changes nothing (docs/rules.md, "Time"). The
aggregator's processing clock (what the dedupe horizon and the marks are pruned against) follows the stream:
each call runs `PROCESSING_LAG_MS` after the newest arrival of its batch, never going back. Date and window rules are activated at the beginning of time: the file is the whole history, nothing
is left for a backfill.

Partition keys are the producers': the normalised user id (apps and SES key by user), else a hash of the
line. A record the engine cannot store (a poison group: a key or an item DynamoDB would refuse) is reported
among the rejected records with its reason, and the run goes on.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from cli.lambda_context import LocalLambdaContext
from cli.stream_plan import (
    BATCHING_WINDOW_MS,
    PROCESSING_LAG_MS,
    QUALIFICATION_FIELDS,
    SHARD_ID,
    TOO_LARGE,
    plain_number,
    plan,
    without_user,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"
DUPLICATE_DELAY_MS = 60_000
PUT_RECORDS_MAX = 500
DISPATCH_BATCH_SIZE = 100
MAX_ROUNDS = 1_000
"""Consecutive failed deliveries of one batch before the replay gives up (each needs an injected fault)."""
_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})


class AwsEngineError(Exception):
    """A handler failed without an injected fault (a bug), or the replay could not run."""


def run_aws_engine(rule_set: Any, lines: Sequence[str], options: Any, *,
                   on_progress: Callable[[int], None] | None = None,
                   dispatcher_environment: Mapping[str, str] | None = None,
                   clients: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Replay `lines` (raw records, blank lines ignored) on moto; returns the qualifications, counters and stats
    (`ReplayResult`'s fields, as plain data). `options` is a `cli.replay.ReplayOptions`; `dispatcher_environment`
    and `clients` (service name → client) configure targets moto does not have (module docstring)."""
    records = [line for line in lines if line.strip()]
    with isolated_aws():
        replay = _Replay(rule_set, records, options, on_progress)
        replay.dispatcher_environment, replay.clients = dict(dispatcher_environment or {}), dict(clients or {})
        return replay.run()


class _WithClients:
    """A boto3 session whose `client(service)` is the given stand-in for some services."""

    def __init__(self, session: Any, clients: Mapping[str, Any]) -> None:
        self._session, self._clients = session, clients

    def client(self, service: str, **kwargs: Any) -> Any:
        return self._clients[service] if service in self._clients else self._session.client(service, **kwargs)


@dataclass(frozen=True, slots=True)
class _Planned:
    """One record to put: the line, its partition key, its arrival time, and whether it is a duplicate."""

    line: str
    partition_key: str
    arrival_ms: int
    duplicate: bool = False


@dataclass
class _FaultInjector:
    """On the aggregator's DynamoDB clients: counts requests and, when armed, fails the `fail_at`-th write of
    the current call — throttled before it is applied, or applied with its response lost.

    The aggregator sends a batch's groups from several threads (GROUP_CONCURRENCY), so the hooks run
    concurrently: counting, and choosing the one write that fails, happen under a lock, and the write chosen
    to lose its response is remembered by its thread (its after-call hook runs in the thread that sent it)."""

    rng: random.Random
    requests: Counter[str] = field(default_factory=Counter)
    fail_at: int | None = None
    lose_response: bool = False
    writes: int = 0
    fired: int = 0
    fired_now: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _doomed: threading.local = field(default_factory=threading.local, repr=False)

    def arm(self, fail_at: int) -> None:
        self.fail_at, self.lose_response = fail_at, self.rng.random() < 0.5

    def start_call(self) -> None:
        self.writes, self.fired_now = 0, False

    def _due(self, operation: str) -> bool:
        return self.fail_at is not None and operation in _WRITES and self.writes == self.fail_at

    def before_call(self, model: Any, **_: Any) -> None:
        from botocore.exceptions import ClientError

        with self._lock:
            self.requests[model.name] += 1
            if model.name in _WRITES:
                self.writes += 1
            due = self._due(model.name)
            throttle = due and not self.lose_response
            if throttle:
                self._fire()
        self._doomed.write = due and not throttle  # this thread's write loses its response
        if throttle:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "injected by the replay"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, model.name)

    def after_call(self, model: Any, http_response: Any, **_: Any) -> None:
        from botocore.exceptions import ReadTimeoutError

        doomed, self._doomed.write = getattr(self._doomed, "write", False), False
        if doomed and http_response.status_code < 300:
            with self._lock:
                self._fire()
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com (injected by the replay)")

    def _fire(self) -> None:
        self.fired += 1
        self.fired_now = True
        self.fail_at = None


def _LambdaContext() -> LocalLambdaContext:
    return LocalLambdaContext(function_name="engagement-loop-replay", region=REGION, account_id=ACCOUNT)


def _LambdaContext() -> LocalLambdaContext:
    return LocalLambdaContext(function_name="engagement-loop-replay", region=REGION, account_id=ACCOUNT)


@contextlib.contextmanager
def isolated_aws() -> Iterator[None]:
    """moto, fake credentials, the handlers' environment, and their cached clients rebuilt before and after."""
    import boto3
    from moto import mock_aws

    from cli.moto_serial import serialised_moto
    from functions.rules import aggregator, dispatcher, rules_source, store

    modules = (aggregator, dispatcher)
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
             "AWS_PROFILE", *_ENVIRONMENT_NAMES)
    saved_env = {name: os.environ.get(name) for name in names}
    for name in ("AWS_PROFILE", "AWS_REGION"):  # a profile named for real AWS need not exist here
        os.environ.pop(name, None)
    saved_session = boto3.DEFAULT_SESSION
    loggers = {logging.getLogger(module.logger.service) for module in (aggregator, dispatcher, rules_source, store)}
    saved_levels = {lg: lg.level for lg in loggers}
    os.environ.update({"AWS_ACCESS_KEY_ID": "replay", "AWS_SECRET_ACCESS_KEY": "replay",
                       "AWS_SESSION_TOKEN": "replay", "AWS_DEFAULT_REGION": REGION})
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)  # injected faults are logged as errors by design; the stats count them
    _clear_caches(modules)
    try:
        # The aggregator writes groups from a thread pool; moto must answer one request at a time.
        with mock_aws(), serialised_moto():
            boto3.setup_default_session(region_name=REGION)
            yield
    finally:
        _clear_caches(modules)
        boto3.DEFAULT_SESSION = saved_session
        for lg, level in saved_levels.items():
            lg.setLevel(level)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_ENVIRONMENT_NAMES = ("COUNTERS_TABLE", "OUTBOX_TABLE", "RULES_BUCKET", "RULES_KEY", "FAILURES_QUEUE_URL",
                      "IDENTITY_MODE", "EVENT_BUS_NAME", "DEAD_LETTER_QUEUE_URL", "PINPOINT_APPLICATION_ID",
                      "CONNECT_DOMAIN_NAME", "CONNECT_PROFILE_KEY", "CONNECT_OBJECT_TYPE", "CONNECT_UNKNOWN_USERS",
                      "RULES_MAX_AGE_SECONDS")


def _quiet() -> contextlib.AbstractContextManager[Any]:
    # The handlers print their CloudWatch metrics (embedded metric format) to stdout, as Lambda wants.
    # (POWERTOOLS_METRICS_DISABLED would not do: Powertools then keeps the values and prints them anyway
    # once a metric has collected 100.)
    return contextlib.redirect_stdout(io.StringIO())


def _clear_caches(modules: Sequence[Any]) -> None:
    for module in modules:
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


class _Replay:
    """One run, inside `isolated_aws`."""

    def __init__(self, rule_set: Any, lines: list[str], options: Any, on_progress: Callable[[int], None] | None) -> None:
        import boto3

        from functions.events.canonical import IdentityMode

        self.rules, self.lines, self.options, self.on_progress = rule_set, lines, options, on_progress
        self.identity_mode = IdentityMode(options.identity_mode)
        self.rng = random.Random(options.seed)
        self.faults = _FaultInjector(random.Random(self.rng.random()))
        # The replay's own clients come from a session of their own, so the fault injector (registered on
        # the default session the handlers' clients are made from) neither counts nor fails them.
        session = boto3.session.Session(region_name=REGION)
        self.dynamodb, self.kinesis = session.client("dynamodb"), session.client("kinesis")
        self.s3, self.sqs, self.events = session.client("s3"), session.client("sqs"), session.client("events")
        self.stats: Counter[str] = Counter()
        self.too_large = self.without_user = 0
        self.dispatched_keys: set[str] = set()
        self.outbox_seen_ms = 0
        self.bus_events: list[dict[str, Any]] = []
        self.clock_ms = 0
        """The aggregator's processing clock (epoch ms): it follows the stream's arrivals."""
        self.dispatcher_environment: dict[str, str] = {}
        self.clients: dict[str, Any] = {}

    # -- setup --------------------------------------------------------------------------------------

    def _setup(self) -> None:
        import boto3

        from functions.rules.model import RuleType
        from functions.rules.store import CounterStore, StoreSettings
        from functions.rules.outbox import create_local_tables

        settings = StoreSettings(counters_table="rule-counters", outbox_table="rule-outbox")
        create_local_tables(self.dynamodb, settings)
        self.s3.create_bucket(Bucket="engagement-rules")
        self.s3.put_object(Bucket="engagement-rules", Key="rules/current.json", Body=self.rules.to_json().encode())
        failures = self.sqs.create_queue(QueueName="rules-failures")["QueueUrl"]
        dead_letters = self.sqs.create_queue(QueueName="rules-dead-letters")["QueueUrl"]
        self.bus_queue = self.sqs.create_queue(QueueName="rules-bus-events")["QueueUrl"]
        queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.bus_queue,
                                                  AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.events.create_event_bus(Name="engagement-rules")
        self.events.put_rule(Name="all-engine-events", EventBusName="engagement-rules",
                             EventPattern=json.dumps({"source": ["engagement-loop.rules"]}))
        self.events.put_targets(Rule="all-engine-events", EventBusName="engagement-rules",
                                Targets=[{"Id": "replay", "Arn": queue_arn}])
        self.kinesis.create_stream(StreamName="engagement-events", ShardCount=1)
        self.stream_arn = self.kinesis.describe_stream_summary(
            StreamName="engagement-events")["StreamDescriptionSummary"]["StreamARN"]
        self.failures_queue, self.dead_letter_queue = failures, dead_letters
        os.environ.update({
            "COUNTERS_TABLE": settings.counters_table, "OUTBOX_TABLE": settings.outbox_table,
            "RULES_BUCKET": "engagement-rules", "RULES_KEY": "rules/current.json", "FAILURES_QUEUE_URL": failures,
            "IDENTITY_MODE": self.identity_mode.value, "EVENT_BUS_NAME": "engagement-rules",
            "DEAD_LETTER_QUEUE_URL": dead_letters,
        })
        for name in ("PINPOINT_APPLICATION_ID", "CONNECT_DOMAIN_NAME", "CONNECT_PROFILE_KEY", "CONNECT_OBJECT_TYPE",
                     "CONNECT_UNKNOWN_USERS", "RULES_MAX_AGE_SECONDS"):
            os.environ.pop(name, None)
        os.environ.update(self.dispatcher_environment)
        store = CounterStore(self.dynamodb, settings)
        for rule in self.rules:
            if rule.rule_type is not RuleType.AGGREGATOR:
                store.activations.ensure(rule, 0)
        events = boto3.DEFAULT_SESSION.events
        events.register("before-call.dynamodb", self.faults.before_call)
        events.register("after-call.dynamodb", self.faults.after_call)

    # -- the stream ---------------------------------------------------------------------------------

    def _plan(self) -> list[_Planned]:
        """Every line once, in file order, as `stream_plan.plan` puts it on the stream (the memory engine's plan),
        plus the producer's duplicates each placed by its arrival time."""
        too_large: list[str] = []  # Kinesis would refuse them; the producer gets the error, not the stream
        planned, originals = [], []
        for record in plan(self.lines, self.identity_mode, too_large):
            originals.append(record)
            planned.append(_Planned(record.line, record.partition_key, record.arrival_ms))
            if self.rng.random() < self.options.duplicate_rate:
                planned.append(_Planned(record.line, record.partition_key,
                                        record.arrival_ms + self.rng.randint(1, DUPLICATE_DELAY_MS), True))
        self.too_large = len(too_large)
        self.without_user = without_user(originals, too_large, self.identity_mode)
        # A stable sort: originals keep file order; a duplicate goes after everything that arrived before it.
        planned.sort(key=lambda record: (record.arrival_ms, record.duplicate))
        return self._monotonic(planned)

    @staticmethod
    def _monotonic(planned: list[_Planned]) -> list[_Planned]:
        result, clock = [], 0
        for record in planned:
            clock = max(clock, record.arrival_ms)
            result.append(replace(record, arrival_ms=clock))
        return result

    def _put_and_read(self, planned: list[_Planned]) -> list[dict[str, Any]]:
        """Put the records, read them back, and shape them as the Lambda Kinesis event's records."""
        for start in range(0, len(planned), PUT_RECORDS_MAX):
            chunk = planned[start:start + PUT_RECORDS_MAX]
            # One shard and moto keep PutRecords' order (real Kinesis only promises it for PutRecord); the
            # read-back below checks it.
            response = self.kinesis.put_records(StreamARN=self.stream_arn, Records=[
                {"Data": record.line.encode("utf-8"), "PartitionKey": record.partition_key} for record in chunk])
            if response.get("FailedRecordCount"):
                raise AwsEngineError(f"Kinesis refused {response['FailedRecordCount']} record(s)")
        stored = []
        iterator = self.kinesis.get_shard_iterator(StreamARN=self.stream_arn, ShardId=SHARD_ID,
                                                   ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = self.kinesis.get_records(ShardIterator=iterator, StreamARN=self.stream_arn, Limit=10_000)
            stored.extend(page["Records"])
            iterator = page.get("NextShardIterator") if page["Records"] else None
        if [r["Data"] for r in stored] != [p.line.encode("utf-8") for p in planned]:
            raise AwsEngineError("the stream does not hold the records in the order they were put")
        return [{
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r["PartitionKey"],
                        "sequenceNumber": r["SequenceNumber"], "data": base64.b64encode(r["Data"]).decode("ascii"),
                        "approximateArrivalTimestamp": p.arrival_ms / 1000},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{SHARD_ID}:{r['SequenceNumber']}",
            "eventName": "aws:kinesis:record", "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/replay",
            "awsRegion": REGION, "eventSourceARN": self.stream_arn,
        } for r, p in zip(stored, planned)]

    # -- the handlers -------------------------------------------------------------------------------

    def _aggregate(self, records: list[dict[str, Any]], arrivals: list[int]) -> None:
        """Feed the stream to the aggregator like the event source mapping, dispatching after each call.
        `arrivals`: each record's arrival (ms), which cuts the batches as `stream_plan.batches` does."""
        from functions.rules import aggregator

        position, rounds, last_writes = 0, 0, self.options.batch_size
        while position < len(records):
            window = arrivals[position:position + self.options.batch_size]
            kept = next((i for i, arrival in enumerate(window) if arrival - window[0] > BATCHING_WINDOW_MS), len(window))
            batch = records[position:position + kept]
            # A fault stays armed until a call makes enough writes to reach it (a call may write nothing).
            if self.faults.fail_at is not None or self.rng.random() < self.options.fail_rate:
                self.faults.arm(self.rng.randint(1, last_writes))
            self.faults.start_call()
            self.clock_ms = max(self.clock_ms, max(window[:kept]) + PROCESSING_LAG_MS)
            try:
                with _quiet():
                    response = aggregator.lambda_handler({"Records": batch}, _LambdaContext())
                failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
            except Exception as error:  # the whole batch failed; Lambda retries it
                if not self.faults.fired_now:
                    raise AwsEngineError(f"the aggregator failed at record {position} without an injected fault: "
                                      f"{type(error).__name__}: {error}") from error
                failed = {batch[0]["kinesis"]["sequenceNumber"]}
            injected, writes = self.faults.fired_now, self.faults.writes
            self.stats["aggregator_invocations"] += 1
            if writes:  # the number of writes a call makes, to aim the next fault
                last_writes = writes
            self._dispatch()
            if failed:
                if not injected:
                    raise AwsEngineError(f"the aggregator reported failed records at record {position} without an "
                                      "injected fault (run with fail rate 0 to see it, or check its log)")
                rounds += 1
                if rounds > MAX_ROUNDS:
                    raise AwsEngineError(f"the batch at record {position} failed {MAX_ROUNDS} times in a row")
                first = min(i for i, r in enumerate(batch) if r["kinesis"]["sequenceNumber"] in failed)
                self.stats["redelivered_partial"] += 1
                position += first
                continue
            rounds = 0
            if self.rng.random() < self.options.fail_rate:
                self.stats["redelivered_whole"] += 1
                continue  # Kinesis delivers the same batch again
            position += len(batch)
            if self.on_progress is not None:
                self.on_progress(position)

    def _new_outbox_items(self) -> list[dict[str, Any]]:
        # Only entries created since the last look (with a second of slack for clock steps): returning the
        # whole outbox each time made long replays quadratic.
        items = []
        pages = self.dynamodb.get_paginator("scan").paginate(
            TableName=os.environ["OUTBOX_TABLE"], FilterExpression="created_ms >= :since",
            ExpressionAttributeValues={":since": {"N": str(self.outbox_seen_ms - 1000)}})
        for page in pages:
            items.extend(item for item in page["Items"] if item["pk"]["S"] not in self.dispatched_keys)
        self.outbox_seen_ms = max([self.outbox_seen_ms, *(int(item["created_ms"]["N"]) for item in items)])
        return sorted(items, key=lambda item: (int(item["created_ms"]["N"]), item["pk"]["S"]))

    def _dispatch(self) -> None:
        from functions.rules import dispatcher

        items = self._new_outbox_items()
        for start in range(0, len(items), DISPATCH_BATCH_SIZE):
            chunk = items[start:start + DISPATCH_BATCH_SIZE]
            records = [self._stream_record(item) for item in chunk]
            pending = records
            for _ in range(MAX_ROUNDS):
                with _quiet():
                    response = dispatcher.lambda_handler({"Records": pending}, _LambdaContext())
                self.stats["dispatcher_invocations"] += 1
                failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
                if failed:
                    raise AwsEngineError(f"the dispatcher failed records {sorted(failed)} without an injected fault")
                if self.rng.random() >= self.options.fail_rate:
                    break
                self.stats["redelivered_dispatcher"] += 1  # the stream delivers the batch again
            self.dispatched_keys.update(item["pk"]["S"] for item in chunk)
            self._drain_bus()

    def _stream_record(self, item: dict[str, Any]) -> dict[str, Any]:
        self.stats["outbox_entries"] += 1
        sequence = f"{self.stats['outbox_entries']:021d}"
        return {
            "eventID": uuid.uuid4().hex, "eventName": "INSERT", "eventVersion": "1.1", "eventSource": "aws:dynamodb",
            "awsRegion": REGION,
            "eventSourceARN": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/rule-outbox/stream/replay",
            "dynamodb": {"Keys": {"pk": item["pk"]}, "NewImage": item, "SequenceNumber": sequence,
                         "SizeBytes": len(json.dumps(item)), "StreamViewType": "NEW_IMAGE"},
        }

    def _drain_bus(self) -> None:
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.bus_queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return
            self.bus_events.extend(json.loads(message["Body"]) for message in messages)
            self.sqs.delete_message_batch(QueueUrl=self.bus_queue, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])

    # -- results ------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        import boto3

        from functions.rules import aggregator, dispatcher

        self._setup()
        planned = self._plan()
        records = self._put_and_read(planned)
        # The handler's own aggregator, on the stream's clock instead of the wall clock (module caches are
        # how the handler holds its clients; `isolated_aws` rebuilds them afterwards).
        made = aggregator.make_aggregator(aggregator.AggregatorSettings.from_env(), clock=lambda: self.clock_ms / 1000,
                                          activation_clock=lambda: int(time.time() * 1000))
        real_factory, real_runtime = aggregator._aggregator, dispatcher._runtime
        aggregator._aggregator = lambda: made  # type: ignore[assignment]
        if self.clients:
            # A session of its own, as the dispatcher's `_runtime` makes: the aggregator's fault injector sits on
            # the default session and must not fail the dispatcher's calls.
            runtime = dispatcher.build_runtime(dispatcher.DispatcherSettings.from_env(),
                                               _WithClients(boto3.session.Session(region_name=REGION), self.clients))
            runtime = replace(runtime, retry=dispatcher.NO_RETRY_DELAY)
            dispatcher._runtime = lambda: runtime  # type: ignore[assignment]
        try:
            self._aggregate(records, [record.arrival_ms for record in planned])
        finally:
            aggregator._aggregator, dispatcher._runtime = real_factory, real_runtime
        qualifications = sorted(
            ({name: event["detail"][name] for name in QUALIFICATION_FIELDS}
             for event in self.bus_events if event["detail-type"] == "RuleQualified"),
            key=lambda q: (q["event_time_ms"], q["rule_id"], q["user_id"], q["name"]))
        counters, delivered = self._counters(), self._delivered_per_sink()
        stats = {
            "records": len(self.lines),
            "records_put": len(planned),
            "rejected": self._rejected(),
            "without_user": self.without_user,
            "duplicates_sent": sum(1 for record in planned if record.duplicate),
            "failures_injected": self.faults.fired,
            "redeliveries": {"aggregator_partial": self.stats["redelivered_partial"],
                             "aggregator_whole_batch": self.stats["redelivered_whole"],
                             "dispatcher": self.stats["redelivered_dispatcher"]},
            "aggregator_invocations": self.stats["aggregator_invocations"],
            "dispatcher_invocations": self.stats["dispatcher_invocations"],
            "dynamodb_requests": {"total": sum(self.faults.requests.values()), **dict(sorted(self.faults.requests.items()))},
            "outbox_entries": self.stats["outbox_entries"],
            "dispatched": delivered,
            "engine_events": {"RuleQualified": len(qualifications),
                              "RuleExited": sum(1 for e in self.bus_events if e["detail-type"] == "RuleExited")},
            "dead_lettered": self._queue_length(self.dead_letter_queue),
        }
        return {"qualifications": qualifications, "counters": counters, "stats": {"engine": "aws", **stats}}

    def _counters(self) -> list[dict[str, Any]]:
        from boto3.dynamodb.types import TypeDeserializer

        from functions.rules.outbox import META_PREFIX
        from functions.rules.counter_item import CounterItem

        plain = TypeDeserializer().deserialize
        counters = []
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=os.environ["COUNTERS_TABLE"]):
            for raw in page["Items"]:
                if raw["pk"]["S"].startswith(META_PREFIX):
                    continue
                item = CounterItem.from_item({name: plain(value) for name, value in raw.items()})
                counters.append({"rule_id": item.rule_id, "user_id": item.user_id, "count": item.state.count,
                                 "sum": plain_number(item.state.sum)})
        return sorted(counters, key=lambda c: (c["rule_id"], c["user_id"]))

    def _delivered_per_sink(self) -> dict[str, int]:
        delivered: Counter[str] = Counter()
        for page in self.dynamodb.get_paginator("scan").paginate(TableName=os.environ["OUTBOX_TABLE"]):
            for item in page["Items"]:
                delivered.update(item.get("delivered_sinks", {}).get("SS", []))
        return dict(sorted(delivered.items()))

    def _rejected(self) -> dict[str, Any]:
        """What the aggregator sent to its failures queue, once per stream record (a redelivered batch sends
        a rejected record again), plus lines too large to put."""
        reasons: dict[str, str] = {}
        while True:
            messages = self.sqs.receive_message(QueueUrl=self.failures_queue,
                                                MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                break
            for message in messages:
                body = json.loads(message["Body"])
                reasons[body["sequence_number"]] = body["reason"]
            self.sqs.delete_message_batch(QueueUrl=self.failures_queue, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        by_reason = Counter(reasons.values())
        if self.too_large:
            by_reason[TOO_LARGE] += self.too_large
        return {"count": sum(by_reason.values()), "reasons": dict(by_reason.most_common())}

    def _queue_length(self, url: str) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])
