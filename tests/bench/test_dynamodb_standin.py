"""The benchmark's DynamoDB stand-in (`bench.dynamodb_standin`) answers the aggregator exactly as moto does: the
same batches through the real handler path on both leave identical counters and outbox tables and identical
partial-batch responses — with duplicates, redeliveries and failed groups — and its error answers have
DynamoDB's shapes. Nothing here is timed."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from bench.aggregator import COUNTERS, OUTBOX, invoke, kinesis_records, workload
from bench.dynamodb_standin import DynamoDbStandIn, Unsupported
from cli.lambda_context import LocalLambdaContext
from cli.moto_serial import serialised_moto
from functions.rules.aggregator import Aggregator, dynamodb_client_config
from functions.rules.model import RuleType
from functions.rules.outbox import counter_key, create_local_tables
from functions.rules.store import CounterStore, StoreSettings

REGION = "us-east-1"
SETTINGS = StoreSettings(counters_table=COUNTERS, outbox_table=OUTBOX)
CONTEXT = LocalLambdaContext(function_name="aggregator", region=REGION, account_id="123456789012")


@pytest.fixture
def backends(monkeypatch):
    """A moto client and a stand-in client (the stand-in answers before moto's stubber could)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "test")
    with mock_aws(), serialised_moto():
        on_moto = boto3.client("dynamodb", region_name=REGION, config=dynamodb_client_config(16))
        create_local_tables(on_moto, SETTINGS)
        standin = DynamoDbStandIn((COUNTERS, OUTBOX))
        on_standin = boto3.client("dynamodb", region_name=REGION, config=dynamodb_client_config(16))
        standin.register(on_standin)
        yield on_moto, on_standin, standin


def scan(client: Any, table: str) -> dict[str, Any]:
    return {item["pk"]["S"]: item for page in client.get_paginator("scan").paginate(TableName=table)
            for item in page["Items"]}


def normalised(items: dict[str, Any]) -> str:
    return json.dumps(items, sort_keys=True)


class FailWrites:
    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        items = ([params["Item"]] if model.name == "PutItem" else
                 [a["Put"]["Item"] for a in params["TransactItems"]] if model.name == "TransactWriteItems" else [])
        if any(item["pk"]["S"] in self.keys for item in items):
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, model.name)


@pytest.mark.parametrize("concurrency", [1, 16])
def test_the_aggregator_leaves_the_same_tables_and_answers_on_moto_and_on_the_standin(backends, concurrency):
    on_moto, on_standin, standin = backends
    rules, canonical = workload(400, 80, 20, 11)
    records = kinesis_records(canonical)
    now = [canonical[0].arrival_time_ms]
    aggregators = []
    for client in (on_moto, on_standin):
        store = CounterStore(client, SETTINGS, clock=lambda: now[0] / 1000)
        for rule in rules:
            if rule.rule_type is not RuleType.AGGREGATOR:
                store.activations.ensure(rule, 0)
        aggregators.append(Aggregator(store, activation_delay_ms=0, activation_clock=lambda: 0,
                                      concurrency=concurrency))
    rng = random.Random(concurrency)
    deliveries = [records[i:i + 100] for i in range(0, len(records), 100)]
    deliveries.insert(2, deliveries[0])  # a whole batch delivered again
    for number, batch in enumerate(deliveries):
        now[0] = max(now[0], round(max(r["kinesis"]["approximateArrivalTimestamp"] for r in batch) * 1000) + 1000)
        hooks = []
        if number % 2 == 1:  # some groups fail on both, then the batch is delivered from the lowest failure
            users = sorted({json.loads(base64.b64decode(r["kinesis"]["data"]))["user_id"] for r in batch})
            doomed = {counter_key(rule.rule_id, user) for rule in rng.sample(list(rules), 6) for user in users}
            hooks = [FailWrites(doomed)] * 2
        for client, hook in zip((on_moto, on_standin), hooks):
            client.meta.events.register("before-parameter-build.dynamodb", hook)
        answers = [invoke(aggregator, rules, batch, CONTEXT) for aggregator in aggregators]
        assert answers[0] == answers[1]
        for client, hook in zip((on_moto, on_standin), hooks):
            client.meta.events.unregister("before-parameter-build.dynamodb", hook)
        failed = {f["itemIdentifier"] for f in answers[0][0]["batchItemFailures"]}
        if failed:
            first = min(i for i, r in enumerate(batch) if r["kinesis"]["sequenceNumber"] in failed)
            retried = [invoke(aggregator, rules, batch[first:], CONTEXT) for aggregator in aggregators]
            assert retried[0] == retried[1] and retried[0][0] == {"batchItemFailures": []}
    for table in (COUNTERS, OUTBOX):  # every item, every attribute
        assert normalised(scan(on_moto, table)) == normalised(standin.tables[table]), table
    assert len(standin.tables[OUTBOX]) > 5 and len(standin.tables[COUNTERS]) > 100


def test_errors_have_dynamodb_shapes_on_both(backends):
    on_moto, on_standin, _ = backends
    item = {"pk": {"S": "a"}, "version": {"N": "1"}}
    absent = {"ConditionExpression": "attribute_not_exists(#pk)", "ExpressionAttributeNames": {"#pk": "pk"}}

    def error(call) -> dict[str, Any]:
        with pytest.raises(ClientError) as caught:
            call()
        response = caught.value.response
        return {"code": response["Error"]["Code"], "item": response.get("Item"),
                "reasons": [r.get("Code") for r in response.get("CancellationReasons", [])]}

    answers = []
    for client in (on_moto, on_standin):
        client.put_item(TableName=COUNTERS, Item=item, **absent)
        answers.append([
            error(lambda: client.put_item(TableName=COUNTERS, Item=item, ReturnValuesOnConditionCheckFailure="ALL_OLD",
                                          **absent)),
            error(lambda: client.put_item(TableName=COUNTERS, Item=item, ConditionExpression="#v = :v",
                                          ExpressionAttributeNames={"#v": "version"},
                                          ExpressionAttributeValues={":v": {"N": "7"}})),
            error(lambda: client.transact_write_items(TransactItems=[
                {"Put": {"TableName": OUTBOX, "Item": {"pk": {"S": "new"}}, **absent}},
                {"Put": {"TableName": COUNTERS, "Item": item, **absent}}])),
        ])
        # the cancelled transaction wrote nothing
        assert "Item" not in client.get_item(TableName=OUTBOX, Key={"pk": {"S": "new"}}, ConsistentRead=True)
        assert client.get_item(TableName=COUNTERS, Key={"pk": {"S": "a"}}, ConsistentRead=True,
                               ProjectionExpression="#v", ExpressionAttributeNames={"#v": "version"})["Item"] == {
            "version": {"N": "1"}}
        got = client.batch_get_item(RequestItems={COUNTERS: {"Keys": [{"pk": {"S": "a"}}, {"pk": {"S": "b"}}],
                                                             "ConsistentRead": True}})
        assert got["Responses"] == {COUNTERS: [item]} and not got.get("UnprocessedKeys")
    assert answers[0] == answers[1]
    assert answers[1][2]["reasons"] == ["None", "ConditionalCheckFailed"]


def test_anything_the_standin_does_not_implement_is_refused(backends):
    _, on_standin, _ = backends
    with pytest.raises(Unsupported, match="Scan"):
        on_standin.scan(TableName=COUNTERS)
    with pytest.raises(Unsupported, match="UpdateItem"):
        on_standin.update_item(TableName=COUNTERS, Key={"pk": {"S": "a"}})
    with pytest.raises(Unsupported, match="condition"):
        on_standin.put_item(TableName=COUNTERS, Item={"pk": {"S": "a"}}, ConditionExpression="size(#pk) > :n",
                            ExpressionAttributeNames={"#pk": "pk"}, ExpressionAttributeValues={":n": {"N": "1"}})
    with pytest.raises(Unsupported, match="ConsistentRead"):
        on_standin.batch_get_item(RequestItems={COUNTERS: {"Keys": [{"pk": {"S": "a"}}]}})
