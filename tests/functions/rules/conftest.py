"""Fixtures for the rules functions: moto DynamoDB tables whose requests are counted, the published rules in
S3, the failures queue in SQS, a settable clock, canonical and Kinesis-shaped events, and a local lake that
answers the backfill's SQL with DuckDB."""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
from botocore.config import Config
from moto import mock_aws

from cli.moto_serial import serialised_moto
from functions.events.canonical import CanonicalEvent, EventSource
from functions.retraining.lake import duckdb_sql
from functions.rules import aggregator, backfill, sweeper
from functions.rules.lake_queries import QueryState
from functions.rules.outbox import OutboxEntry
from functions.rules.model import RuleSet
from functions.rules.counter_item import CounterItem
from functions.rules.store import CounterStore, StoreSettings
from functions.rules.dedupe import Delivery
from functions.rules.outbox import create_local_tables
from cli.lambda_context import LocalLambdaContext

REGION = "us-east-1"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SETTINGS = StoreSettings(counters_table="rule-counters", outbox_table="rule-outbox")
RULES_BUCKET, RULES_KEY = "engagement-rules", "rules/current.json"
STREAM_ARN = f"arn:aws:kinesis:{REGION}:123456789012:stream/engagement-events"
APP_STREAM_ARN = f"arn:aws:kinesis:{REGION}:123456789012:stream/engagement-app-events"
# No botocore retries: one stubbed or injected answer is one request.
NO_RETRIES = Config(retries={"total_max_attempts": 1})


def ms(text: str) -> int:
    """Unix ms of an ISO UTC time like `2026-11-20T12:00:00`."""
    moment = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


class Clock:
    """Epoch seconds that only move when told."""

    def __init__(self, at: str = "2026-11-20T12:00:00") -> None:
        self.now = ms(at) / 1000

    def __call__(self) -> float:
        return self.now

    def set(self, at: str) -> None:
        self.now = ms(at) / 1000

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Aws:
    """The embedded AWS of one test: tables, rules bucket, failures queue; `calls` counts DynamoDB requests
    by operation made through `dynamodb` (the inspection helpers use a client of their own)."""

    dynamodb: Any
    inspect: Any
    s3: Any
    sqs: Any
    queue_url: str
    app_queue_url: str = ""
    """The app stream's failures queue (APP_FAILURES_QUEUE_URL)."""
    calls: Counter[str] = field(default_factory=Counter)

    def store(self, clock: Callable[[], float], client: Any = None, **options: Any) -> CounterStore:
        return CounterStore(client or self.dynamodb, SETTINGS, clock=clock, **options)

    def publish(self, rules: RuleSet) -> None:
        self.s3.put_object(Bucket=RULES_BUCKET, Key=RULES_KEY, Body=rules.to_json().encode())

    def counter(self, rule_id: str, user_id: str) -> CounterItem | None:
        item = CounterStore(self.inspect, SETTINGS).read(rule_id, user_id)
        return item if item.version else None

    def counters(self) -> dict[tuple[str, str], CounterItem]:
        items = {}
        for page in self.inspect.get_paginator("scan").paginate(TableName=SETTINGS.counters_table):
            for raw in page["Items"]:
                if not raw["pk"]["S"].startswith("meta#"):
                    item = CounterItem.from_item({k: _plain(v) for k, v in raw.items()})
                    items[(item.rule_id, item.user_id)] = item
        return items

    def outbox(self) -> dict[str, OutboxEntry]:
        entries = {}
        for page in self.inspect.get_paginator("scan").paginate(TableName=SETTINGS.outbox_table):
            for raw in page["Items"]:
                entry = OutboxEntry.from_item({k: _plain(v) for k, v in raw.items()})
                entries[entry.key] = entry
        return entries

    def failures(self, queue_url: str | None = None) -> list[dict[str, Any]]:
        """The messages of the (trusted) failures queue, or of `queue_url`."""
        messages = self.sqs.receive_message(QueueUrl=queue_url or self.queue_url,
                                            MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]

    def app_failures(self) -> list[dict[str, Any]]:
        return self.failures(self.app_queue_url)


def _plain(value: Any) -> Any:
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer().deserialize(value)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION,
                        "COUNTERS_TABLE": SETTINGS.counters_table, "OUTBOX_TABLE": SETTINGS.outbox_table,
                        "RULES_BUCKET": RULES_BUCKET, "RULES_KEY": RULES_KEY, "IDENTITY_MODE": "user",
                        "APP_STREAM_ARN": APP_STREAM_ARN,
                        "ATHENA_WORKGROUP": "engagement"}.items():
        monkeypatch.setenv(name, value)
    caches = [aggregator._settings, aggregator._rules_source, aggregator._aggregator, aggregator._failure_queue,
              aggregator._app_failure_queue,
              sweeper._settings, sweeper._rules_source, sweeper._store,
              backfill._settings, backfill._rules_source, backfill._backfill]
    for cache in caches:
        cache.cache_clear()
    # The handler's aggregator writes groups from a thread pool (GROUP_CONCURRENCY); moto answers one at a time.
    with mock_aws(), serialised_moto():
        dynamodb = boto3.client("dynamodb", region_name=REGION, config=NO_RETRIES)
        world = Aws(dynamodb=dynamodb, inspect=boto3.client("dynamodb", region_name=REGION),
                    s3=boto3.client("s3", region_name=REGION), sqs=boto3.client("sqs", region_name=REGION),
                    queue_url="")
        create_local_tables(world.inspect, SETTINGS)
        dynamodb.meta.events.register("before-call.dynamodb",
                                      lambda model, **_: world.calls.update([model.name]))
        world.s3.create_bucket(Bucket=RULES_BUCKET)
        world.queue_url = world.sqs.create_queue(QueueName="rules-failures")["QueueUrl"]
        monkeypatch.setenv("FAILURES_QUEUE_URL", world.queue_url)
        world.app_queue_url = world.sqs.create_queue(QueueName="rules-app-failures")["QueueUrl"]
        monkeypatch.setenv("APP_FAILURES_QUEUE_URL", world.app_queue_url)
        yield world
    for cache in caches:
        cache.cache_clear()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_event(event_id: str, event_type: str = "purchase", *, user: str | None = "u1",
               at: str | int = "2026-11-20T12:00:00", arrival: str | int | None = None,
               attributes: dict[str, str] | None = None, metrics: dict[str, float] | None = None) -> CanonicalEvent:
    time_ms = at if isinstance(at, int) else ms(at)
    arrival_ms = time_ms if arrival is None else arrival if isinstance(arrival, int) else ms(arrival)
    return CanonicalEvent(event_id=event_id, source=EventSource.APP, event_type=event_type, event_time_ms=time_ms,
                          arrival_time_ms=arrival_ms, user_id=user, attributes=attributes or {},
                          metrics=metrics or {})


@pytest.fixture(scope="session")
def event() -> Callable[..., CanonicalEvent]:
    return make_event


def make_deliveries(events: list[CanonicalEvent], *, shard: str = "shardId-000000000000",
                    first: int = 49_000_000_000_000_000_000, partition_key: str | None = None) -> list[Delivery]:
    """Deliveries in stream order, with growing sequence numbers of realistic (long) length; partition key
    `partition_key`, else the event's user (as apps and SES key their records)."""
    return [Delivery(e, shard, str(first + index * 7), partition_key or e.user_id or f"pk-{index}")
            for index, e in enumerate(events)]


@pytest.fixture(scope="session")
def deliveries() -> Callable[..., list[Delivery]]:
    return make_deliveries


def app_record(event_id: str, event_type: str = "purchase", *, user: str | None = "u1",
               at: str = "2026-11-20T12:00:00", **fields: Any) -> bytes:
    record: dict[str, Any] = {"schema": "engagement-loop/v1", "event_type": event_type, "event_time_ms": ms(at),
                              "event_id": event_id, **fields}
    if user is not None:
        record["user_id"] = user
    return json.dumps(record).encode()


@pytest.fixture(scope="session")
def app() -> Callable[..., bytes]:
    return app_record


def _user_of(payload: bytes) -> str | None:
    try:
        user = json.loads(payload).get("user_id")
    except (ValueError, AttributeError):
        return None
    return user if isinstance(user, str) else None


def kinesis_event(payloads: list[bytes], *, arrival: str = "2026-11-20T12:00:00",
                  shard: str = "shardId-000000000000", first: int = 49_000_000_000_000_000_000,
                  sequences: list[int] | None = None, partition_keys: list[str] | None = None,
                  stream_arn: str = STREAM_ARN) -> dict[str, Any]:
    """A Lambda Kinesis event as the event source mapping of `stream_arn` delivers it; record i has sequence
    `first + 10·i` (or `sequences[i]`), arrives i ms after `arrival` and has partition key `partition_keys[i]`,
    else its app record's user id (as the stack's producers key), else `pk-<i>`."""
    arrival_seconds = ms(arrival) / 1000
    records = []
    for index, payload in enumerate(payloads):
        sequence = str(sequences[index] if sequences else first + 10 * index)
        key = partition_keys[index] if partition_keys else (_user_of(payload) or f"pk-{index}")
        records.append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": key, "sequenceNumber": sequence,
                        "data": base64.b64encode(payload).decode("ascii"),
                        "approximateArrivalTimestamp": arrival_seconds + index / 1000},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{shard}:{sequence}",
            "eventName": "aws:kinesis:record", "awsRegion": REGION, "eventSourceARN": stream_arn,
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/engagement-loop-rules",
        })
    return {"Records": records}


@pytest.fixture(scope="session")
def make_kinesis_event() -> Callable[..., dict[str, Any]]:
    return kinesis_event


@pytest.fixture
def load_json() -> Callable[[str, str], dict[str, Any]]:
    def _load(folder: str, name: str) -> dict[str, Any]:
        return json.loads((FIXTURES / folder / f"{name}.json").read_text(encoding="utf-8"))

    return _load


FakeLambdaContext = LocalLambdaContext


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext()


# --- the lake, on DuckDB --------------------------------------------------------------------------


class DuckDbLake:
    """`LakeQueries` over a local lake (`functions.retraining.lake.write_lake` layout): the Athena text is
    transpiled and run by DuckDB. As with Athena, the table's schema comes from the catalogue (here: an empty
    file written with the Glue types, listed first) rather than from whichever data file DuckDB opens first,
    and only the partitions the query's `dt` conditions select are read."""

    def __init__(self, root: Path, *, database: str = "engagement_loop", table: str = "events") -> None:
        self.root, self.database, self.table = root, database, table
        self.sql: list[str] = []
        self._results: dict[str, QueryState | list[tuple[str | None, ...]]] = {}
        self._tokens: dict[str, str] = {}

    def start(self, sql: str, *, token: str) -> str:
        if token in self._tokens:
            return self._tokens[token]
        query_id = f"q-{len(self._tokens) + 1}"
        self._tokens[token] = query_id
        self.sql.append(sql)
        try:
            self._results[query_id] = self._run(sql)
        except Exception as error:  # noqa: BLE001 - reported the way Athena reports a failed query
            self._results[query_id] = QueryState("FAILED", str(error))
        return query_id

    def wait(self, query_id: str, *, timeout_seconds: float) -> QueryState:
        result = self._results[query_id]
        return result if isinstance(result, QueryState) else QueryState("SUCCEEDED")

    def rows(self, query_id: str) -> Iterator[tuple[str | None, ...]]:
        result = self._results[query_id]
        assert not isinstance(result, QueryState)
        yield from result

    def _run(self, sql: str) -> list[tuple[str | None, ...]]:
        import duckdb
        import pyarrow as pa
        import pyarrow.parquet as pq

        from functions.retraining.lake import arrow_schema

        anchor = self.root / "_catalogue" / "dt=0000-00-00" / "part-0.parquet"
        if not anchor.exists():
            anchor.parent.mkdir(parents=True)
            pq.write_table(pa.Table.from_pylist([], schema=arrow_schema()), anchor)
        files = [anchor, *sorted((self.root / "events").glob("*/*.parquet"))]
        listed = ", ".join("'" + str(path).replace("'", "''") + "'" for path in files)
        with duckdb.connect() as con:
            con.execute(f'CREATE SCHEMA "{self.database}"')
            con.execute(f'CREATE VIEW "{self.database}"."{self.table}" AS SELECT * FROM read_parquet([{listed}], '
                        "hive_partitioning = true, hive_types = {'dt': 'VARCHAR'})")
            return [tuple(None if value is None else str(value) for value in row)
                    for row in con.execute(duckdb_sql(sql)).fetchall()]
