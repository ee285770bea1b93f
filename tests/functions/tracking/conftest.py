"""Fixtures for the tracking handlers: a moto Kinesis stream, a Lambda context, fixture loading, stream reading."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import pytest
from moto import mock_aws

from functions.events.canonical import CanonicalEvent, IdentityMode
from functions.events.normalise import normalise
from functions.tracking import event_tracker, exposures
from cli.lambda_context import LocalLambdaContext

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
REGION = "us-east-1"


FakeLambdaContext = LocalLambdaContext


@pytest.fixture
def context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No real credentials, one region, and every cached setting/client rebuilt per test."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    caches = [exposures._settings, exposures._writer, event_tracker._settings, event_tracker._tracker]
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:
        cache.cache_clear()


@pytest.fixture
def load_json() -> Callable[[str, str], dict[str, Any]]:
    """load_json("tracking", "recommender_campaign") → a fresh dict (safe to mutate)."""

    def _load(folder: str, name: str) -> dict[str, Any]:
        return json.loads((FIXTURES / folder / f"{name}.json").read_text(encoding="utf-8"))

    return _load


@dataclass(frozen=True)
class StreamedRecord:
    partition_key: str
    data: bytes
    event: CanonicalEvent


@dataclass
class Stream:
    """A moto Kinesis stream and a reader of everything written to it."""

    client: Any
    arn: str

    def read_all(self) -> list[StreamedRecord]:
        records: list[StreamedRecord] = []
        for shard in self.client.list_shards(StreamARN=self.arn)["Shards"]:
            iterator = self.client.get_shard_iterator(StreamARN=self.arn, ShardId=shard["ShardId"],
                                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while iterator:
                page = self.client.get_records(ShardIterator=iterator, StreamARN=self.arn, Limit=10_000)
                for record in page["Records"]:
                    arrival_ms = int(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
                    event = normalise(record["Data"], identity_mode=IdentityMode.USER, arrival_time_ms=arrival_ms)
                    assert isinstance(event, CanonicalEvent), event  # every exposure record must normalise
                    records.append(StreamedRecord(record["PartitionKey"], record["Data"], event))
                iterator = page.get("NextShardIterator") if page["Records"] else None
        return records


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stream]:
    """A two-shard stream in moto, with STREAM_ARN pointing at it."""
    with mock_aws():
        client = boto3.client("kinesis", region_name=REGION)
        client.create_stream(StreamName="engagement-events", ShardCount=2)
        arn = client.describe_stream_summary(StreamName="engagement-events")["StreamDescriptionSummary"]["StreamARN"]
        monkeypatch.setenv("STREAM_ARN", arn)
        yield Stream(client, arn)


def kinesis_event(payloads: list[bytes], *, arrival_seconds: float = 1_764_000_000.25,
                  stream_arn: str = f"arn:aws:kinesis:{REGION}:123456789012:stream/engagement-events",
                  ) -> dict[str, Any]:
    """A Lambda Kinesis event (as the event source mapping delivers it) carrying `payloads` in order."""
    records = []
    for index, payload in enumerate(payloads):
        sequence = f"4958{index:020d}"
        records.append({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": f"pk-{index}",
                "sequenceNumber": sequence,
                "data": base64.b64encode(payload).decode("ascii"),
                "approximateArrivalTimestamp": arrival_seconds + index / 1000,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"shardId-000000000000:{sequence}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/engagement-loop-tracker",
            "awsRegion": REGION,
            "eventSourceARN": stream_arn,
        })
    return {"Records": records}


@pytest.fixture
def make_kinesis_event() -> Callable[..., dict[str, Any]]:
    return kinesis_event
