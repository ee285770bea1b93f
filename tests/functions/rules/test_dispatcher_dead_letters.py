"""`python -m cli actions replay`: dead letters redelivered through the dispatcher's code, against moto
(the dead-letter queue, the outbox table, an EventBridge bus whose events land in a queue)."""

from __future__ import annotations

import io
import json
from typing import Any, Iterator

import pytest
from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws

from cli.__main__ import build_parser
from functions.rules.dispatcher import DeadLetter
from functions.rules.outbox import Change, OutboxEntry
from functions.rules.model import ActionKind
from tests.functions.rules.dispatcher_aws import create_dispatcher_aws

REGION = "us-east-1"
EVENT_TIME_MS = 1_764_000_000_000


def entry(user: str) -> OutboxEntry:
    return OutboxEntry(key=f"r-1#{user}#1", change=Change.QUALIFIED, rule_id="r-1", user_id=user,
                       action=ActionKind.EVENT, name="trk_purchase", value=None, event_id=f"evt-{user}",
                       event_time_ms=EVENT_TIME_MS, created_ms=EVENT_TIME_MS + 10)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    for name in ("EVENT_BUS_NAME", "PINPOINT_APPLICATION_ID", "CONNECT_DOMAIN_NAME", "OUTBOX_TABLE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        created = create_dispatcher_aws()
        yield {"sqs": created.sqs, "dynamodb": created.dynamodb, "dlq": created.dlq_url,
               "bus_queue": created.bus_queue_url}


def dead_letter(aws: dict[str, Any], user: str, failed: tuple[str, ...], *, delivered: tuple[str, ...] = ()) -> None:
    item = {**entry(user).to_item(), "status": "dead_lettered"}
    if delivered:
        item["delivered_sinks"] = set(delivered)
    aws["dynamodb"].put_item(TableName="outbox", Item={k: TypeSerializer().serialize(v) for k, v in item.items()})
    letter = DeadLetter(entry=entry(user), failed_sinks=failed, errors={name: "throttled" for name in failed},
                        dead_lettered_ms=EVENT_TIME_MS + 99)
    aws["sqs"].send_message(QueueUrl=aws["dlq"], MessageBody=letter.to_json())


def run(aws: dict[str, Any], *flags: str) -> tuple[int, str]:
    args = build_parser({"actions": "cli.actions"}).parse_args(
        ["actions", "replay", "--queue-url", aws["dlq"], "--outbox-table", "outbox", *flags])
    out = io.StringIO()
    return args.func(args, out=out), out.getvalue()


def queue_bodies(aws: dict[str, Any], queue: str) -> list[str]:
    messages = aws["sqs"].receive_message(QueueUrl=aws[queue], MaxNumberOfMessages=10).get("Messages", [])
    return [message["Body"] for message in messages]


def status(aws: dict[str, Any], user: str) -> str:
    return aws["dynamodb"].get_item(TableName="outbox", Key={"pk": {"S": f"r-1#{user}#1"}})["Item"]["status"]["S"]


def test_dry_run_lists_and_changes_nothing(aws):
    dead_letter(aws, "u-1", ("eventbridge",))
    code, output = run(aws, "--event-bus", "rules", "--dry-run")
    assert code == 0
    assert "would redeliver r-1#u-1#1 (qualified trk_purchase) to eventbridge" in output
    assert "1 message(s) read: 1 would be redelivered" in output
    assert len(queue_bodies(aws, "dlq")) == 1 and queue_bodies(aws, "bus_queue") == []
    assert status(aws, "u-1") == "dead_lettered"


def test_replay_redelivers_deletes_and_keeps_what_it_cannot_deliver(aws):
    dead_letter(aws, "u-1", ("eventbridge",))
    dead_letter(aws, "u-2", ("eventbridge", "pinpoint"))  # no Pinpoint project given: stays
    dead_letter(aws, "u-3", ("eventbridge",), delivered=("eventbridge",))  # done by an earlier run
    aws["sqs"].send_message(QueueUrl=aws["dlq"], MessageBody='{"something": "else"}')

    code, output = run(aws, "--event-bus", "rules")
    assert code == 1
    assert "4 message(s) read: 2 redelivered and deleted, 2 kept in the queue" in output
    assert "kept: r-1#u-2#1: sink(s) pinpoint not configured for this replay" in output
    assert "not a dispatcher dead letter" in output
    published = [json.loads(body)["detail"] for body in queue_bodies(aws, "bus_queue")]
    assert [(detail["key"], detail["name"]) for detail in published] == [("r-1#u-1#1", "trk_purchase")]
    assert status(aws, "u-1") == "delivered" and status(aws, "u-2") == "dead_lettered"
    assert len(queue_bodies(aws, "dlq")) == 2  # the kept messages are visible again at once


def test_a_sink_failing_again_keeps_the_message(aws):
    dead_letter(aws, "u-1", ("eventbridge",))
    code, output = run(aws, "--event-bus", "no-such-bus", "--max", "5")
    assert code == 1 and "kept: r-1#u-1#1: failed again: eventbridge: PutEvents failed" in output
    [body] = queue_bodies(aws, "dlq")
    assert DeadLetter.from_json(body).entry == entry("u-1")
