"""The dispatcher's AWS on moto, shared by its handler, reconciler and dead-letter replay tests: the outbox
table (the stack's layout, with its pending index), the dead-letter queue, and an EventBridge bus whose
events land in a queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3

from functions.rules.outbox import create_local_outbox_table

OUTBOX_TABLE = "outbox"
EVENT_BUS = "rules"


@dataclass(frozen=True)
class DispatcherAws:
    dynamodb: Any
    sqs: Any
    events: Any
    dlq_url: str
    bus_queue_url: str



def create_dispatcher_aws() -> DispatcherAws:
    """Create the resources; call inside `mock_aws()` with fake credentials and a region set."""
    dynamodb, sqs, events = boto3.client("dynamodb"), boto3.client("sqs"), boto3.client("events")
    create_local_outbox_table(dynamodb, OUTBOX_TABLE)
    dlq_url = sqs.create_queue(QueueName="dispatcher-dlq")["QueueUrl"]
    bus_queue_url = sqs.create_queue(QueueName="bus-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=bus_queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.create_event_bus(Name=EVENT_BUS)
    events.put_rule(Name="all", EventBusName=EVENT_BUS, EventPattern=json.dumps({"source": ["engagement-loop.rules"]}))
    events.put_targets(Rule="all", EventBusName=EVENT_BUS, Targets=[{"Id": "queue", "Arn": arn}])
    return DispatcherAws(dynamodb, sqs, events, dlq_url, bus_queue_url)


def read_bus_events(sqs: Any, bus_queue_url: str) -> list[dict[str, Any]]:
    """The events the bus delivered so far (read from its queue)."""
    messages = sqs.receive_message(QueueUrl=bus_queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def read_dead_letters(sqs: Any, dlq_url: str) -> list[Any]:
    """The dispatcher's dead letters so far."""
    from functions.rules.dispatcher import DeadLetter

    messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    return [DeadLetter.from_json(message["Body"]) for message in messages]
