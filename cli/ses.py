"""`python -m cli ses …`: operate the SES source of a deployed stack.

`ses replay --queue-url URL` reads the SES dead-letter queue (the stack output `ses_dead_letter_queue_url`;
real AWS, boto3's default session) and puts each SES event back onto the engagement stream with the
partition key the EventBridge rules would have used: the `user_id` tag, else the `endpoint_id` tag, else the
message id (functions/events/ses.py `SES_ROUTES`). EventBridge sends the undelivered event itself as the
message body, with attributes RULE_ARN, TARGET_ARN, ERROR_CODE and ERROR_MESSAGE
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rule-dlq.html); the body goes onto the stream
unchanged, so the normaliser gives the event the id it would have had (docs/events.md). A message is deleted
only after its PutRecord succeeded; one that cannot be put stays in the queue (visible again when the run
ends) with the reason printed. `--dry-run` prints what would be put and changes nothing.

The stream is `--stream-name`, else the message's TARGET_ARN (the stream EventBridge was writing to).
Exit status: 0 when every message read was put (or, dry run, could be), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from cli.dead_letters import DeadLetterPass

EXIT_OK, EXIT_LEFT = 0, 1
# PutRecord's PartitionKey is 1..256 Unicode characters
# (https://docs.aws.amazon.com/kinesis/latest/APIReference/API_PutRecord.html).
MAX_PARTITION_KEY_CHARS = 256


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("ses", help="the SES event source", description=__doc__.splitlines()[0])
    commands = group.add_subparsers(dest="command", required=True, metavar="{replay}")
    replay = commands.add_parser("replay", help="put the SES dead letters back onto the engagement stream",
                                 description=__doc__.split("\n\n")[1])
    replay.add_argument("--queue-url", required=True, metavar="URL", help="the SES dead-letter queue")
    replay.add_argument("--stream-name", default=None, metavar="NAME",
                        help="the engagement stream (default: each message's TARGET_ARN)")
    replay.add_argument("--max", type=int, default=None, metavar="N", help="read at most N messages (default all)")
    replay.add_argument("--dry-run", action="store_true", help="print what would be put; change nothing")
    replay.set_defaults(func=replay_command)


@dataclass
class ReplaySummary:
    """What a run did, message by message."""

    put: int = 0
    would_put: int = 0
    left: list[str] = field(default_factory=list)
    """One line per message that stays in the queue, saying why."""

    @property
    def read(self) -> int:
        return self.put + self.would_put + len(self.left)


@dataclass(frozen=True, slots=True)
class _Letter:
    """A dead letter ready to go back onto the stream."""

    data: bytes
    partition_key: str
    stream: dict[str, str]
    """`StreamName` or `StreamARN`, as PutRecord takes it."""


def replay_command(args: argparse.Namespace, *, session: Any = None, out: TextIO | None = None) -> int:
    import boto3

    out = out or sys.stdout
    session = session or boto3.session.Session()
    summary = replay_dead_letters(session.client("sqs"), session.client("kinesis"), args.queue_url,
                                  stream_name=args.stream_name, max_messages=args.max, dry_run=args.dry_run,
                                  out=out)
    for line in summary.left:
        print(f"kept: {line}", file=out)
    if args.dry_run:
        print(f"{summary.read} message(s) read: {summary.would_put} would be put onto the stream, "
              f"{len(summary.left)} could not be; nothing was changed", file=out)
    else:
        print(f"{summary.read} message(s) read: {summary.put} put onto the stream and deleted, "
              f"{len(summary.left)} kept in the queue", file=out)
    return EXIT_OK if not summary.left else EXIT_LEFT


def replay_dead_letters(sqs: Any, kinesis: Any, queue_url: str, *, stream_name: str | None = None,
                        max_messages: int | None = None, dry_run: bool = False, out: TextIO) -> ReplaySummary:
    """Put the SES dead letters of `queue_url` back onto the stream; see the module docstring."""
    from botocore.exceptions import BotoCoreError, ClientError

    summary = ReplaySummary()
    queue = DeadLetterPass(sqs, queue_url, max_messages=max_messages, with_attributes=True)
    for message in queue.messages():
        message_id = message["MessageId"]
        letter = _letter(message, stream_name)
        if isinstance(letter, str):
            summary.left.append(f"message {message_id}: {letter}")
            queue.keep(message)
            continue
        target = next(iter(letter.stream.values()))
        if dry_run:
            print(f"would put message {message_id} onto {target} with partition key {letter.partition_key!r}",
                  file=out)
            summary.would_put += 1
            queue.keep(message)
            continue
        try:
            result = kinesis.put_record(Data=letter.data, PartitionKey=letter.partition_key, **letter.stream)
        except (ClientError, BotoCoreError) as error:
            summary.left.append(f"message {message_id}: PutRecord failed: {error}")
            queue.keep(message)
            continue
        queue.done(message)
        summary.put += 1
        print(f"put message {message_id} onto {target} with partition key {letter.partition_key!r} "
              f"(shard {result['ShardId']}, sequence {result['SequenceNumber']})", file=out)
    queue.release()
    return summary


def _letter(message: dict[str, Any], stream_name: str | None) -> _Letter | str:
    """The message as a record for the stream, or why it cannot be one."""
    from functions.events.ses import ses_partition_key

    body = message.get("Body", "")
    try:
        event = json.loads(body)
    except ValueError:
        return "body is not JSON (expected the SES event EventBridge could not deliver)"
    if not isinstance(event, dict) or event.get("source") != "aws.ses":
        return "body is not an SES event (no \"source\": \"aws.ses\")"
    key = ses_partition_key(event)
    if key is not None and len(key) > MAX_PARTITION_KEY_CHARS:
        # Only a tag can be this long; the normaliser rejects such a user anyway, so any shard will do.
        key = event["detail"]["mail"].get("messageId")
    if not key:
        return "no partition key: the event has no user_id or endpoint_id tag and no detail.mail.messageId"
    if stream_name:
        stream = {"StreamName": stream_name}
    else:
        target = message.get("MessageAttributes", {}).get("TARGET_ARN", {}).get("StringValue", "")
        if not target.startswith("arn:aws") or ":kinesis:" not in target:
            return "no stream: give --stream-name (the message has no Kinesis TARGET_ARN attribute)"
        stream = {"StreamARN": target}
    return _Letter(data=body.encode("utf-8"), partition_key=key, stream=stream)
