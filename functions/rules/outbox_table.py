"""The outbox table and the dead-letter queue as the dispatcher uses them (its AWS side effects).

`OutboxTable` reads an entry's progress (the sinks in `delivered_sinks`, the status), marks sinks, settles
entries (which takes them out of the sparse pending index), makes them pending again, and walks a (rule, user)'s
later changes for the supersede rule (docs/actions.md). `DeadLetterQueue` is the SQS queue of entries no sink
retry could deliver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from functions.rules.dynamo import from_attributes
from functions.rules.model import ActionKind
from functions.rules.outbox import PARTITION_KEY, PENDING_SHARD, DeliveryStatus, OutboxEntry, pending_shard

logger = Logger()


@dataclass(frozen=True, slots=True)
class Progress:
    """An entry's delivery progress as the outbox records it."""

    delivered: frozenset[str] = frozenset()
    status: DeliveryStatus | None = None
    waiting_since_ms: int | None = None


class Letter(Protocol):
    """A dead letter as the queue needs it (`dispatcher.DeadLetter`)."""

    def to_json(self) -> str: ...

DELIVERED_SINKS = "delivered_sinks"
"""The outbox item's string set of sinks that have the entry."""
WAITING_SINCE = "waiting_since_ms"
"""When a sink first answered that it could not take the entry yet (`sinks.NotYet`), epoch ms."""
MAX_CHANGE_PROBES = 10_000
"""Bound on the walk through a (rule, user)'s later changes (each step is one qualification or exit)."""


@dataclass(frozen=True, slots=True)
class LaterChange:
    """The newest change of an entry's (rule, user) after it, as the outbox records it."""

    key: str
    status: DeliveryStatus | None
    delivered_sinks: frozenset[str] = frozenset()

    def describe(self) -> str:
        """E.g. `r-1#u-1#exit#1 (delivered to eventbridge)`, for replay output and logs."""
        if self.status is DeliveryStatus.DELIVERED or (self.status is None and self.delivered_sinks):
            state = f"delivered to {', '.join(sorted(self.delivered_sinks)) or 'every sink'}"
        elif self.status is DeliveryStatus.DEAD_LETTERED:
            done = f"; delivered to {', '.join(sorted(self.delivered_sinks))}" if self.delivered_sinks else ""
            state = f"dead-lettered too, it is replayed on its own{done}"
        elif self.status is DeliveryStatus.PENDING:
            state = "pending: the dispatcher or the reconciler delivers it"
        else:
            state = self.status.value if self.status else "status unknown"
        return f"{self.key} ({state})"


class OutboxTable:
    """The outbox table as the dispatcher uses it: read progress, mark sinks, set the status."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def progress(self, key: str) -> Progress:
        """The sinks already done, the status and since when a sink has waited (consistent read); an empty
        `Progress` when the item is gone (TTL)."""
        item = self._client.get_item(
            TableName=self._table, Key={PARTITION_KEY: {"S": key}}, ConsistentRead=True,
            ProjectionExpression="#d, #s, #w",
            ExpressionAttributeNames={"#d": DELIVERED_SINKS, "#s": "status", "#w": WAITING_SINCE}).get("Item")
        if item is None:
            return Progress()
        status = item.get("status", {}).get("S")
        waiting = item.get(WAITING_SINCE, {}).get("N")
        return Progress(frozenset(item.get(DELIVERED_SINKS, {}).get("SS", [])),
                        DeliveryStatus(status) if status else None, int(waiting) if waiting else None)

    def wait(self, key: str, now_ms: int, *, pending: bool, restart: bool = False) -> None:
        """Record that a sink could not take the entry yet (`sinks.NotYet`): `waiting_since_ms` is set the first
        time, so the wait is measured from then however often it is asked again — or set anew with `restart`
        (the object that creates the awaited profile was put just now). With `pending`, the entry also stays
        pending and in the pending index for the reconciler, but only while it is pending: a run that settled it
        meanwhile (the reconciler overlapping the dispatcher) is never undone."""
        expression = "SET #w = :t" if restart else "SET #w = if_not_exists(#w, :t)"
        names, values = {"#w": WAITING_SINCE}, {":t": {"N": str(now_ms)}}
        condition = "attribute_exists(#pk)"
        if pending:
            expression += ", #t = :t, #p = :p"
            names |= {"#t": "status_ms", "#p": PENDING_SHARD, "#s": "status"}
            values |= {":p": {"S": pending_shard(key)}, ":pending": {"S": DeliveryStatus.PENDING.value}}
            condition += " AND #s = :pending"
        try:
            self._client.update_item(TableName=self._table, Key={PARTITION_KEY: {"S": key}},
                                     UpdateExpression=expression, ConditionExpression=condition,
                                     ExpressionAttributeNames={"#pk": PARTITION_KEY, **names},
                                     ExpressionAttributeValues=values)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            logger.info("outbox entry settled or gone meanwhile; left as it is", extra={"key": key})

    def _update(self, key: str, expression: str, values: dict[str, Any], names: dict[str, str]) -> None:
        # attribute_exists: never re-create an entry the TTL removed while it sat in the dead-letter queue.
        try:
            self._client.update_item(TableName=self._table, Key={PARTITION_KEY: {"S": key}},
                                     UpdateExpression=expression, ConditionExpression="attribute_exists(#pk)",
                                     ExpressionAttributeNames={"#pk": PARTITION_KEY, **names},
                                     ExpressionAttributeValues=values)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            logger.info("outbox entry no longer exists; progress not recorded", extra={"key": key})

    def mark_delivered(self, key: str, sink_name: str) -> None:
        self._update(key, "ADD #d :sink", {":sink": {"SS": [sink_name]}}, {"#d": DELIVERED_SINKS})

    def set_status(self, key: str, status: DeliveryStatus, now_ms: int) -> None:
        """Record how the entry ended; a settled entry leaves the sparse pending index (no `pending_shard`)."""
        expression = "SET #s = :s, #t = :t" + (" REMOVE #p" if status.settled else "")
        names = {"#s": "status", "#t": "status_ms", **({"#p": PENDING_SHARD} if status.settled else {})}
        self._update(key, expression, {":s": {"S": status.value}, ":t": {"N": str(now_ms)}}, names)

    def read_entry(self, key: str) -> OutboxEntry | None:
        """The entry stored under `key` (consistent read); None when it is gone."""
        item = self._client.get_item(TableName=self._table, Key={PARTITION_KEY: {"S": key}},
                                     ConsistentRead=True).get("Item")
        return None if item is None else OutboxEntry.from_item(from_attributes(item))

    def reopen(self, key: str, sink_names: Sequence[str], now_ms: int) -> None:
        """Make the entry pending again for `sink_names` (no longer in `delivered_sinks`), back in the sparse
        pending index, so that the reconciler delivers it to them."""
        self._update(key, "SET #s = :s, #t = :t, #p = :p DELETE #d :sinks",
                     {":s": {"S": DeliveryStatus.PENDING.value}, ":t": {"N": str(now_ms)},
                      ":p": {"S": pending_shard(key)}, ":sinks": {"SS": list(sink_names)}},
                     {"#s": "status", "#t": "status_ms", "#p": PENDING_SHARD, "#d": DELIVERED_SINKS})

    def leave_pending_index(self, key: str) -> None:
        """Remove `pending_shard` from a settled entry (one that still has it leaves the sparse pending index);
        conditional on the status not being `pending`, so a pending entry is never taken out."""
        try:
            self._client.update_item(
                TableName=self._table, Key={PARTITION_KEY: {"S": key}}, UpdateExpression="REMOVE #p",
                ConditionExpression="attribute_exists(#pk) AND #s <> :pending",
                ExpressionAttributeNames={"#pk": PARTITION_KEY, "#p": PENDING_SHARD, "#s": "status"},
                ExpressionAttributeValues={":pending": {"S": DeliveryStatus.PENDING.value}})
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            logger.info("outbox entry pending again or gone; left in the pending index", extra={"key": key})

    def later_change(self, entry: OutboxEntry) -> LaterChange | None:
        """The newest change of `entry`'s (rule, user) after `entry` that the outbox holds; None when there is
        none, or when `entry` is an event action (those are never superseded) or has a key of another shape.

        Walks the keys that can follow (exit n, qualification n+1, …), one BatchGetItem per step, with
        strongly consistent reads, so a change written a moment ago is seen. Later changes are created later
        and so expire (TTL) later: the walk cannot meet a gap left by an expired entry."""
        position = entry.position
        if position is None or entry.action is not ActionKind.ATTRIBUTE:
            return None
        latest: LaterChange | None = None
        for _ in range(MAX_CHANGE_PROBES):
            candidates = {key: p for p in position.successors() for key in p.keys(entry.rule_id, entry.user_id)}
            found = self._read_many(list(candidates), entry.rule_id, entry.user_id)
            if not found:
                break
            newest = max(found, key=lambda key: candidates[key])
            position, latest = candidates[newest], found[newest]
        return latest

    def _read_many(self, keys: list[str], rule_id: str, user_id: str) -> dict[str, LaterChange]:
        """The items of `keys` that are changes of (`rule_id`, `user_id`). An item of another (rule, user)
        under one of these keys (written before user ids were escaped in keys, `keys.user_key_part`) is not
        a change of this one, whatever its key says."""
        request: dict[str, Any] = {self._table: {
            "Keys": [{PARTITION_KEY: {"S": key}} for key in keys], "ConsistentRead": True,
            "ProjectionExpression": "#pk, #d, #s, #r, #u",
            "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#d": DELIVERED_SINKS, "#s": "status",
                                         "#r": "rule_id", "#u": "user_id"}}}
        found: dict[str, LaterChange] = {}
        for attempt in range(1, 6):
            response = self._client.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(self._table, []):
                if (item.get("rule_id", {}).get("S"), item.get("user_id", {}).get("S")) != (rule_id, user_id):
                    logger.warning("outbox key holds another rule's or user's change; ignored",
                                   extra={"key": item[PARTITION_KEY]["S"]})
                    continue
                status = item.get("status", {}).get("S")
                found[item[PARTITION_KEY]["S"]] = LaterChange(
                    item[PARTITION_KEY]["S"], DeliveryStatus(status) if status else None,
                    frozenset(item.get(DELIVERED_SINKS, {}).get("SS", [])))
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(0.05 * 2 ** attempt)  # BatchGetItem hands back what it could not read under load
        raise RuntimeError(f"outbox {self._table}: BatchGetItem left keys unread after retries")


class DeadLetterQueue:
    """The SQS queue of entries no retry could deliver."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self._url = queue_url

    def send(self, letter: Letter) -> None:
        self._client.send_message(QueueUrl=self._url, MessageBody=letter.to_json())
