"""`python -m cli ses replay`: the SES dead-letter queue back onto the Kinesis stream, against moto."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cli.__main__ import build_parser
from cli.ses import EXIT_LEFT, EXIT_OK, replay_command
from functions.events.canonical import CanonicalEvent, IdentityMode
from functions.events.normalise import normalise

REGION = "eu-west-1"
STREAM = "engagement-loop-dev-events"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def ses_event(**tags: list[str]) -> dict[str, Any]:
    event = json.loads((FIXTURES / "ses" / "open.json").read_text())
    kept = {k: v for k, v in event["detail"]["mail"]["tags"].items() if k not in ("user_id", "endpoint_id")}
    event["detail"]["mail"]["tags"] = {**kept, **tags}
    return event


@pytest.fixture
def world(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        sqs, kinesis = session.client("sqs"), session.client("kinesis")
        queue_url = sqs.create_queue(QueueName="events-ses-dlq")["QueueUrl"]
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        stream_arn = kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["StreamARN"]
        yield {"session": session, "sqs": sqs, "kinesis": kinesis, "queue_url": queue_url, "stream_arn": stream_arn}


def dead_letter(world: dict[str, Any], body: str, target_arn: str | None = None) -> None:
    # The attributes EventBridge adds to each dead letter (eb-rule-dlq.html).
    attributes = {"RULE_ARN": "arn:aws:events:eu-west-1:123456789012:rule/events-ses-rule",
                  "ERROR_CODE": "SDK_CLIENT_ERROR", "ERROR_MESSAGE": "Unable to get partition key"}
    attributes["TARGET_ARN"] = target_arn or world["stream_arn"]
    world["sqs"].send_message(QueueUrl=world["queue_url"], MessageBody=body, MessageAttributes={
        name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()})


def run(world: dict[str, Any], *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["ses", "replay", "--queue-url", world["queue_url"], *argv])
    out = io.StringIO()
    return replay_command(args, session=world["session"], out=out), out.getvalue()


def stream_records(world: dict[str, Any]) -> list[dict[str, Any]]:
    kinesis = world["kinesis"]
    shard = kinesis.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(StreamName=STREAM, ShardId=shard,
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return kinesis.get_records(ShardIterator=iterator)["Records"]


def queued(world: dict[str, Any]) -> int:
    attributes = world["sqs"].get_queue_attributes(QueueUrl=world["queue_url"], AttributeNames=["All"])
    counts = attributes["Attributes"]
    return int(counts["ApproximateNumberOfMessages"]) + int(counts["ApproximateNumberOfMessagesNotVisible"])


def test_the_command_is_registered():
    args = build_parser().parse_args(["ses", "replay", "--queue-url", "https://q", "--dry-run"])
    assert args.func is replay_command and args.dry_run and args.stream_name is None


def test_each_event_goes_back_with_the_partition_key_the_rules_use_and_is_deleted(world):
    tagged, endpoint_only, untagged = (ses_event(user_id=["user-42"], endpoint_id=["ep-42"]),
                                       ses_event(endpoint_id=["ep-77"]), ses_event())
    for event in (tagged, endpoint_only, untagged):
        dead_letter(world, json.dumps(event))

    status, out = run(world)

    assert status == EXIT_OK
    records = stream_records(world)
    assert [r["PartitionKey"] for r in records] == ["user-42", "ep-77", tagged["detail"]["mail"]["messageId"]]
    assert [json.loads(r["Data"]) for r in records] == [tagged, endpoint_only, untagged]
    assert queued(world) == 0
    assert "3 message(s) read: 3 put onto the stream and deleted, 0 kept in the queue" in out


def test_a_replayed_event_normalises_to_the_event_it_would_have_been(world):
    event = ses_event(endpoint_id=["ep-77"])
    dead_letter(world, json.dumps(event))

    run(world)

    [record] = stream_records(world)
    replayed = normalise(record["Data"], identity_mode=IdentityMode.USER_OR_ENDPOINT)
    original = normalise(json.dumps(event), identity_mode=IdentityMode.USER_OR_ENDPOINT)
    assert isinstance(replayed, CanonicalEvent) and replayed.event_id == original.event_id
    assert replayed.user_id == "ep-77"


def test_the_stream_name_flag_wins_over_the_target_arn(world):
    dead_letter(world, json.dumps(ses_event(user_id=["user-42"])),
                target_arn="arn:aws:kinesis:eu-west-1:123456789012:stream/gone")

    status, _ = run(world, "--stream-name", STREAM)

    assert status == EXIT_OK and len(stream_records(world)) == 1


def test_a_message_whose_put_fails_stays_in_the_queue(world):
    dead_letter(world, json.dumps(ses_event(user_id=["user-42"])),
                target_arn="arn:aws:kinesis:eu-west-1:123456789012:stream/gone")

    status, out = run(world)

    assert status == EXIT_LEFT
    assert "PutRecord failed" in out and "0 put onto the stream and deleted, 1 kept in the queue" in out
    assert queued(world) == 1 and stream_records(world) == []


@pytest.mark.parametrize("body, reason", [
    ("not json", "body is not JSON"),
    (json.dumps({"source": "aws.events", "detail": {}}), "body is not an SES event"),
    (json.dumps({"source": "aws.ses", "detail": {"mail": {"tags": {}}}}), "no partition key"),
])
def test_a_message_that_is_not_a_replayable_ses_event_stays_with_its_reason(world, body, reason):
    dead_letter(world, body)

    status, out = run(world)

    assert status == EXIT_LEFT and reason in out
    assert queued(world) == 1 and stream_records(world) == []


def test_dry_run_prints_and_changes_nothing(world):
    dead_letter(world, json.dumps(ses_event(user_id=["user-42"])))

    status, out = run(world, "--dry-run")

    assert status == EXIT_OK
    assert "would put message" in out and "partition key 'user-42'" in out and "nothing was changed" in out
    assert queued(world) == 1 and stream_records(world) == []


def test_max_limits_how_many_are_read(world):
    for n in range(3):
        dead_letter(world, json.dumps(ses_event(user_id=[f"user-{n}"])))

    status, _ = run(world, "--max", "2")

    assert status == EXIT_OK and len(stream_records(world)) == 2 and queued(world) == 1


def test_replay_command_accepts_a_namespace_without_optional_flags(world):
    dead_letter(world, json.dumps(ses_event()))
    args = argparse.Namespace(queue_url=world["queue_url"], stream_name=None, max=None, dry_run=False)

    assert replay_command(args, session=world["session"], out=io.StringIO()) == EXIT_OK
