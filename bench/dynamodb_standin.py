"""A DynamoDB stand-in below botocore, for timing the aggregator with a network latency of our choosing.

moto answers DynamoDB requests with far more CPU than DynamoDB's network round trip costs a client, so timing
the aggregator on moto measures moto. `DynamoDbStandIn` is a botocore `before-send` handler on one client:
botocore still builds, serialises and signs each request and parses each answer (real per-request CPU in
Lambda), but instead of going to the network the request is decoded here (DynamoDB's JSON protocol: the
operation from the `X-Amz-Target` header, https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Programming.LowLevelAPI.html),
executed atomically under a lock against in-memory tables, and answered after `latency_s` — slept *outside*
the lock (a sleep releases the GIL, as a socket wait does), so concurrent requests overlap their waits.

Only what the rule engine's counters send is implemented, exactly:

- GetItem (ConsistentRead, ProjectionExpression of `#name`s), BatchGetItem (ConsistentRead; UnprocessedKeys
  on demand, `batch_get_limit`), PutItem and TransactWriteItems of Puts;
- condition expressions made of `attribute_not_exists(#n)`, `#n = :v`, `#n >= :v`, joined by AND, and one
  parenthesised OR of two such terms (the counters' `attribute_not_exists(#pk)` and `#version = :version`, and
  the activation records' heartbeat conditions);
- DynamoDB's error shapes: `ConditionalCheckFailedException` (with `Item` for
  ReturnValuesOnConditionCheckFailure=ALL_OLD) and `TransactionCanceledException` with one
  `CancellationReasons` entry per action, in order, `None` for the actions that did not fail
  (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html).

Anything else raises `Unsupported`, never a silent answer. `tests/bench/test_dynamodb_standin.py` runs the same
batches through the aggregator on moto and on the stand-in and requires identical tables and responses.
"""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from collections import Counter
from decimal import Decimal
from io import BytesIO
from typing import Any, Callable, Iterator

from botocore.awsrequest import AWSResponse
from urllib3 import HTTPHeaderDict

TARGET_PREFIX = "DynamoDB_20120810."
_ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
Item = dict[str, dict[str, Any]]
"""An item as DynamoDB's JSON protocol carries it: attribute name → attribute value (`{"S": …}`, …)."""


class Unsupported(Exception):
    """The request uses something the stand-in does not implement."""


class _Failed(Exception):
    """A condition failed; `old` is the item as stored (None when absent)."""

    def __init__(self, old: Item | None) -> None:
        super().__init__("The conditional request failed")
        self.old = old


class _Body(BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        contents = self.read()
        while contents:
            yield contents
            contents = self.read()


def _scalar(value: dict[str, Any]) -> tuple[str, Any]:
    (kind, raw), = value.items()
    if kind == "N":
        return kind, Decimal(raw)
    if kind in ("S", "BOOL", "NULL"):
        return kind, raw
    return kind, json.dumps(raw, sort_keys=True)


_TERM = re.compile(r"^(?:attribute_not_exists\((#\w+)\)|(#\w+) (=|>=) (:\w+))$")


def _condition(expression: str, names: dict[str, str], values: dict[str, Any]) -> Callable[[Item | None], bool]:
    """The condition as a predicate on the stored item; raises `Unsupported` for anything else."""

    def term(text: str) -> Callable[[Item | None], bool]:
        text = text.strip()
        if text.startswith("(") and text.endswith(")"):
            parts = text[1:-1].split(" OR ")
            if len(parts) != 2:
                raise Unsupported(f"condition {expression!r}: only one OR of two terms is implemented")
            left, right = term(parts[0]), term(parts[1])
            return lambda item: left(item) or right(item)
        match = _TERM.match(text)
        if match is None:
            raise Unsupported(f"condition {expression!r}: term {text!r} is not implemented")
        absent, name, operator, value = match.groups()
        if absent:
            attribute = names[absent]
            return lambda item: item is None or attribute not in item
        attribute, operand = names[name], values[value]
        if operator == "=":
            return lambda item: item is not None and attribute in item and _scalar(item[attribute]) == _scalar(operand)

        def at_least(item: Item | None) -> bool:
            if item is None or attribute not in item:
                return False
            (kind, left), (other, right) = _scalar(item[attribute]), _scalar(operand)
            return kind == other and left >= right

        return at_least

    checks = [term(part) for part in expression.split(" AND ")]
    return lambda item: all(check(item) for check in checks)


class DynamoDbStandIn:
    """In-memory tables answering one botocore client's DynamoDB requests after `latency_s` each.

    `register(client)` installs it; `requests` counts by operation, `cpu_s` is the CPU time the stand-in's own
    work took (decode, execute, encode: not the client's, so the benchmark subtracts it), and `in_flight_peak`
    the most requests waiting at once."""

    def __init__(self, tables: tuple[str, ...], *, latency_s: float = 0.0, key: str = "pk",
                 batch_get_limit: int | None = None) -> None:
        self.tables: dict[str, dict[str, Item]] = {name: {} for name in tables}
        self.latency_s, self._key = latency_s, key
        self.batch_get_limit = batch_get_limit
        """Answer at most this many keys per BatchGetItem, the rest as UnprocessedKeys (as DynamoDB does past
        16 MB or when throttled); None: all."""
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.cpu_s = 0.0
        self._in_flight = 0
        self.in_flight_peak = 0

    def register(self, client: Any) -> None:
        # First, so that it answers before anything else (moto's stubber included) could.
        client.meta.events.register_first("before-send.dynamodb", self)

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        began = time.thread_time()
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else target).removeprefix(TARGET_PREFIX)
        body = json.loads(request.body or b"{}")
        with self._lock:
            self.requests[operation] += 1
            try:
                status, answer = 200, self._execute(operation, body)
            except _Failed as failed:
                status, answer = 400, {"__type": _ERROR_PREFIX + "ConditionalCheckFailedException",
                                       "message": "The conditional request failed"}
                if failed.old is not None and body.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD":
                    answer["Item"] = failed.old
            except _Cancelled as cancelled:
                status, answer = 400, {"__type": _ERROR_PREFIX + "TransactionCanceledException",
                                       "Message": "Transaction cancelled, please refer cancellation reasons for "
                                                  f"specific reasons [{', '.join(r['Code'] for r in cancelled.reasons)}]",
                                       "CancellationReasons": cancelled.reasons}
            self._in_flight += 1
            self.in_flight_peak = max(self.in_flight_peak, self._in_flight)
        payload = json.dumps(answer).encode()
        spent = time.thread_time() - began
        if self.latency_s:
            time.sleep(self.latency_s)  # the network and DynamoDB: outside the lock, the GIL released
        with self._lock:
            self._in_flight -= 1
            self.cpu_s += spent
        # What DynamoDB sends, in the header mapping botocore gets from urllib3 in Lambda: its CRC32 header
        # makes botocore check the body, as it does with the real service.
        headers = HTTPHeaderDict({"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "standin",
                                  "x-amz-crc32": str(zlib.crc32(payload)), "Content-Length": str(len(payload)),
                                  "Connection": "keep-alive"})
        return AWSResponse(request.url, status, headers, _Body(payload))  # type: ignore[arg-type]

    # -- operations (called under the lock) ------------------------------------------------------------

    def _table(self, name: str) -> dict[str, Item]:
        if name not in self.tables:
            raise Unsupported(f"table {name!r} does not exist in the stand-in")
        return self.tables[name]

    def _key_of(self, key: Item) -> str:
        if set(key) != {self._key} or "S" not in key[self._key]:
            raise Unsupported(f"key {sorted(key)}: only a string key {self._key!r} is implemented")
        return key[self._key]["S"]

    def _execute(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if operation == "GetItem":
            return self._get(body)
        if operation == "PutItem":
            put = self._check_put(body)
            self._apply(put)
            return {}
        if operation == "TransactWriteItems":
            return self._transact(body)
        if operation == "BatchGetItem":
            return self._batch_get(body)
        raise Unsupported(f"DynamoDB {operation or '(no X-Amz-Target)'} is not implemented by the stand-in")

    def _get(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"TableName", "Key", "ConsistentRead", "ProjectionExpression", "ExpressionAttributeNames"}
        if unknown:
            raise Unsupported(f"GetItem with {sorted(unknown)}")
        item = self._table(body["TableName"]).get(self._key_of(body["Key"]))
        if item is None:
            return {}
        if "ProjectionExpression" in body:
            names = body.get("ExpressionAttributeNames", {})
            wanted = [names[part.strip()] if part.strip().startswith("#") else part.strip()
                      for part in body["ProjectionExpression"].split(",")]
            item = {name: item[name] for name in wanted if name in item}
        return {"Item": item}

    def _batch_get(self, body: dict[str, Any]) -> dict[str, Any]:
        if set(body) != {"RequestItems"}:
            raise Unsupported(f"BatchGetItem with {sorted(set(body) - {'RequestItems'})}")
        responses: dict[str, list[Item]] = {}
        unprocessed: dict[str, dict[str, Any]] = {}
        answered = 0
        for name, request in body["RequestItems"].items():
            if set(request) - {"Keys", "ConsistentRead"}:
                raise Unsupported(f"BatchGetItem of {name} with {sorted(set(request) - {'Keys', 'ConsistentRead'})}")
            if not request.get("ConsistentRead"):
                raise Unsupported("BatchGetItem without ConsistentRead: the store only reads consistently")
            table, items = self._table(name), responses.setdefault(name, [])
            for key in request["Keys"]:
                if self.batch_get_limit is not None and answered >= self.batch_get_limit:
                    unprocessed.setdefault(name, {"Keys": [], "ConsistentRead": True})["Keys"].append(key)
                    continue
                answered += 1
                if (item := table.get(self._key_of(key))) is not None:
                    items.append(item)
        return {"Responses": responses, "UnprocessedKeys": unprocessed}

    def _check_put(self, put: dict[str, Any]) -> tuple[dict[str, Item], str, Item]:
        """Validate one Put and evaluate its condition; raises `_Failed` when the condition does not hold."""
        unknown = set(put) - {"TableName", "Item", "ConditionExpression", "ExpressionAttributeNames",
                              "ExpressionAttributeValues", "ReturnValuesOnConditionCheckFailure"}
        if unknown:
            raise Unsupported(f"Put with {sorted(unknown)}")
        if put.get("ReturnValuesOnConditionCheckFailure", "ALL_OLD") not in ("ALL_OLD", "NONE"):
            raise Unsupported(f"ReturnValuesOnConditionCheckFailure={put['ReturnValuesOnConditionCheckFailure']}")
        table = self._table(put["TableName"])
        key = self._key_of({self._key: put["Item"][self._key]})
        if "ConditionExpression" in put:
            holds = _condition(put["ConditionExpression"], put.get("ExpressionAttributeNames", {}),
                               put.get("ExpressionAttributeValues", {}))
            if not holds(table.get(key)):
                raise _Failed(table.get(key))
        return table, key, put["Item"]

    @staticmethod
    def _apply(put: tuple[dict[str, Item], str, Item]) -> None:
        table, key, item = put
        table[key] = item

    def _transact(self, body: dict[str, Any]) -> dict[str, Any]:
        # botocore fills in ClientRequestToken (an idempotency token); the store does not rely on it (an
        # outbox entry already there from a retry is recognised by its key), so it is accepted and unused.
        if set(body) - {"TransactItems", "ClientRequestToken"}:
            raise Unsupported(f"TransactWriteItems with {sorted(set(body) - {'TransactItems', 'ClientRequestToken'})}")
        actions = body["TransactItems"]
        if not 1 <= len(actions) <= 100:
            raise Unsupported(f"TransactWriteItems of {len(actions)} actions")
        checked, reasons, failed = [], [], False
        seen: set[tuple[str, str]] = set()
        for action in actions:
            if set(action) != {"Put"}:
                raise Unsupported(f"TransactWriteItems action {sorted(action)}: only Put is implemented")
            target = (action["Put"]["TableName"], self._key_of({self._key: action["Put"]["Item"][self._key]}))
            if target in seen:
                raise Unsupported("two actions on one item in a transaction (DynamoDB refuses it: ValidationException)")
            seen.add(target)
            try:
                checked.append(self._check_put(action["Put"]))
                reasons.append({"Code": "None"})
            except _Failed:
                failed = True
                reasons.append({"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"})
        if failed:
            raise _Cancelled(reasons)
        for put in checked:
            self._apply(put)
        return {}


class _Cancelled(Exception):
    def __init__(self, reasons: list[dict[str, str]]) -> None:
        super().__init__("Transaction cancelled")
        self.reasons = reasons
