"""The aggregator writing a batch's (rule, user) groups concurrently (GROUP_CONCURRENCY): the same counters,
outbox, counts and partial-batch responses as one after another; a failing group fails exactly its lowest
sequence number while the others commit; a redelivery ends where a fault-free run does; order within a group
is kept; the setting is validated.

Most run on `bench.dynamodb_standin` with a millisecond of latency per request, so that the pool's threads
really overlap (moto answers one request at a time: `cli.moto_serial`); one runs on moto itself."""

from __future__ import annotations

import json
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from bench.aggregator import invoke, kinesis_records, workload
from bench.dynamodb_standin import DynamoDbStandIn
from cli.lambda_context import LocalLambdaContext
from functions.events.canonical import CanonicalEvent, EventSource
from functions.rules.aggregator import (DEFAULT_GROUP_CONCURRENCY, Aggregator, AggregatorSettings, Count,
                                        dynamodb_client_config)
from functions.rules.model import CountCondition, Operator, Rule, RuleSet, RuleType
from functions.rules.outbox import counter_key, create_local_tables
from functions.rules.store import CounterStore, StoreSettings

REGION = "us-east-1"
SETTINGS = StoreSettings(counters_table="counters", outbox_table="outbox")
CONTEXT = LocalLambdaContext(function_name="aggregator", region=REGION, account_id="123456789012")


class World:
    """An aggregator on a stand-in DynamoDB, on a clock that follows the batches."""

    def __init__(self, rules: RuleSet, concurrency: int, *, latency_s: float = 0.001, **standin: Any) -> None:
        self.standin = DynamoDbStandIn((SETTINGS.counters_table, SETTINGS.outbox_table), latency_s=latency_s,
                                       **standin)
        self.client = boto3.client("dynamodb", region_name=REGION, config=dynamodb_client_config(concurrency),
                                   aws_access_key_id="test", aws_secret_access_key="test")
        self.standin.register(self.client)
        self.now_ms = 1_793_000_000_000
        self.rules = rules
        self.store = CounterStore(self.client, SETTINGS, clock=lambda: self.now_ms / 1000)
        for rule in rules:
            if rule.rule_type is not RuleType.AGGREGATOR:
                self.store.activations.ensure(rule, 0)
        self.aggregator = Aggregator(self.store, activation_delay_ms=0, activation_clock=lambda: 0,
                                     concurrency=concurrency)

    def invoke(self, batch: list[dict[str, Any]]) -> tuple[dict[str, Any], Counter[Count]]:
        self.now_ms = max(self.now_ms, round(max(r["kinesis"]["approximateArrivalTimestamp"] for r in batch)
                                             * 1000) + 1000)
        return invoke(self.aggregator, self.rules, batch, CONTEXT)

    def tables(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.standin.tables, sort_keys=True))


def stream(events: int = 600, users: int = 120, seed: int = 3) -> tuple[RuleSet, list[dict[str, Any]]]:
    rules, canonical = workload(events, users, 20, seed)
    return rules, kinesis_records(canonical)


def batches(records: list[dict[str, Any]], size: int = 100) -> list[list[dict[str, Any]]]:
    return [records[start:start + size] for start in range(0, len(records), size)]


def test_concurrent_and_sequential_give_the_same_tables_counts_and_responses():
    rules, records = stream()
    one, many = World(rules, 1), World(rules, 16)
    for batch in batches(records):
        assert one.invoke(batch) == many.invoke(batch)
    assert one.tables() == many.tables()
    assert sum(1 for key in many.standin.tables["outbox"]) > 10  # the workload qualifies users
    # The concurrent path reads each batch's items in one BatchGetItem, the sequential one per group.
    assert many.standin.requests["BatchGetItem"] == len(batches(records)) and "GetItem" not in many.standin.requests
    assert one.standin.requests["GetItem"] > 0 and "BatchGetItem" not in one.standin.requests
    # and the requests really overlapped
    assert many.standin.in_flight_peak > 1 and one.standin.in_flight_peak == 1


def test_a_redelivered_batch_is_a_no_op_concurrently_too():
    rules, records = stream(events=200)
    world = World(rules, 16)
    for batch in batches(records):
        world.invoke(batch)
    before = world.tables()
    response, counts = world.invoke(records[:100])
    assert response == {"batchItemFailures": []}
    assert world.tables() == before and counts[Count.WRITES] == 0 and counts[Count.DUPLICATES] > 0


class FailWrites:
    """A botocore hook failing every write to the given counter keys (the service throttling them)."""

    def __init__(self, keys: set[str]) -> None:
        self.keys, self.failed = keys, 0

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        items = ([params["Item"]] if model.name == "PutItem" else
                 [action["Put"]["Item"] for action in params["TransactItems"]] if model.name == "TransactWriteItems"
                 else [])
        if any(item["pk"]["S"] in self.keys for item in items):
            self.failed += 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, model.name)


def groups_of(world: World, batch: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """The batch's groups (as the aggregator makes them), each as its sequence numbers in stream order."""
    from bench.aggregator import _NoFailures
    from functions.events.canonical import IdentityMode
    from functions.rules.aggregator import KinesisBatch
    from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

    reader = KinesisBatch(world.aggregator, world.rules, IdentityMode.USER_OR_ENDPOINT, _NoFailures())
    for record in batch:
        reader.read(KinesisStreamRecord(record))
    grouped = world.aggregator.group(world.rules, reader.deliveries, Counter())
    return {key: [d.sequence_number for d in deliveries] for key, deliveries in grouped.items()}


def test_a_failing_group_fails_exactly_its_lowest_sequence_number_and_the_others_commit():
    rules, records = stream(events=100)
    batch = records[:100]
    world = World(rules, 16)
    groups = groups_of(world, batch)
    keys = list(groups)
    # a group in the middle, of several records, whose first record is not the batch's first
    failing = next(key for key in keys[len(keys) // 2:]
                   if len(groups[key]) > 1 and groups[key][0] != batch[0]["kinesis"]["sequenceNumber"])
    hook = FailWrites({counter_key(*failing)})
    world.client.meta.events.register("before-parameter-build.dynamodb", hook)
    response, counts = world.invoke(batch)
    assert response == {"batchItemFailures": [{"itemIdentifier": groups[failing][0]}]}
    assert counts[Count.GROUPS_FAILED] == 1 and hook.failed >= 1
    # every other group committed (fresh tables: each group has something to write)
    stored = {key for key in world.standin.tables["counters"] if not key.startswith("meta#")}
    assert stored == {counter_key(*key) for key in keys} - {counter_key(*failing)}


def test_several_failing_groups_report_each_lowest_sequence_number_whatever_order_they_finish_in():
    rules, records = stream(events=100, seed=5)
    batch = records[:100]
    world = World(rules, 16)
    groups = groups_of(world, batch)
    chosen = random.Random(1).sample(list(groups), 4)
    world.client.meta.events.register("before-parameter-build.dynamodb", FailWrites({counter_key(*k) for k in chosen}))
    response, _ = world.invoke(batch)
    expected = {groups[key][0] for key in chosen}
    got = [failure["itemIdentifier"] for failure in response["batchItemFailures"]]
    assert set(got) == expected and len(got) == len(expected)
    # the same response as the sequential aggregator gives
    one = World(rules, 1)
    one.client.meta.events.register("before-parameter-build.dynamodb", FailWrites({counter_key(*k) for k in chosen}))
    assert one.invoke(batch)[0] == response


@pytest.mark.parametrize("seed", [2, 9])
def test_redelivery_after_a_failure_ends_where_a_fault_free_run_does(seed):
    rules, records = stream(events=300, seed=seed)
    clean, faulty = World(rules, 16), World(rules, 16)
    rng = random.Random(seed)
    position = 0
    while position < len(records):
        batch = records[position:position + 100]
        assert clean.invoke(batch)[0] == {"batchItemFailures": []}
        groups = groups_of(faulty, batch)
        doomed = set(rng.sample(list(groups), 3))
        hook = FailWrites({counter_key(*key) for key in doomed})
        faulty.client.meta.events.register("before-parameter-build.dynamodb", hook)
        response, _ = faulty.invoke(batch)
        faulty.client.meta.events.unregister("before-parameter-build.dynamodb", hook)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        assert failed == {groups[key][0] for key in doomed}
        # Lambda checkpoints before the lowest failed record and delivers from there again
        first = min(i for i, record in enumerate(batch) if record["kinesis"]["sequenceNumber"] in failed)
        retried, _ = faulty.invoke(batch[first:])
        assert retried == {"batchItemFailures": []}
        position += len(batch)
    assert faulty.tables()["outbox"].keys() == clean.tables()["outbox"].keys()
    assert counters_state(faulty) == counters_state(clean)


def counters_state(world: World) -> dict[str, Any]:
    """Each counter's state, version and marks (not its TTL, which follows the clock of the last write)."""
    return {key: {name: item[name] for name in ("state", "hwm", "dedupe", "version")}
            for key, item in world.tables()["counters"].items() if not key.startswith("meta#")}


def resetting_rule() -> Rule:
    return Rule(rule_id="twice", rule_type=RuleType.AGGREGATOR, event_name="purchase",
                count_condition=CountCondition(Operator.AT_LEAST, 2), reset=True)


def event(number: int, user: str) -> CanonicalEvent:
    at = 1_793_000_000_000 + number * 1000
    return CanonicalEvent(event_id=f"{user}-e{number}", source=EventSource.APP, event_type="purchase",
                          event_time_ms=at, arrival_time_ms=at, user_id=user, attributes={},
                          metrics={"amount": float(number)})


def test_order_within_a_group_is_kept():
    """A resetting rule fires on every second event of a user, so which events fire depends on the order the
    user's events are applied in (e1, e3, e5 in stream order; e4, e2, e0 backwards); 16 users' 6 events each,
    interleaved, in one batch."""
    rules = RuleSet((resetting_rule(),))
    users = [f"user{n:02d}" for n in range(16)]
    canonical = [event(number, user) for number in range(6) for user in users]
    world = World(rules, 16)
    response, counts = world.invoke(kinesis_records(canonical))
    assert response == {"batchItemFailures": []} and counts[Count.QUALIFICATIONS] == 3 * len(users)
    fired = sorted((item["user_id"]["S"], item["event_id"]["S"]) for item in world.standin.tables["outbox"].values())
    assert fired == sorted((user, f"{user}-e{n}") for user in users for n in (1, 3, 5))
    for user in users:
        state = world.standin.tables["counters"][counter_key("twice", user)]["state"]["M"]
        assert Decimal(state["count"]["N"]) == 0  # reset at e5


def test_items_the_batch_read_leaves_unprocessed_are_read_one_by_one():
    rules, records = stream(events=200)
    limited, one = World(rules, 16, batch_get_limit=5), World(rules, 1)
    for batch in batches(records):
        assert limited.invoke(batch) == one.invoke(batch)
    assert limited.tables() == one.tables()
    # one BatchGetItem per batch; its unprocessed keys are read with GetItem, whose retries back off (review:
    # asking for them again at once is what the API reference advises against)
    assert limited.standin.requests["BatchGetItem"] == len(batches(records))
    assert limited.standin.requests["GetItem"] > 0


def test_a_failed_batch_read_leaves_each_group_to_read_its_own_item():
    rules, records = stream(events=100)
    world, one = World(rules, 16), World(rules, 1)

    def refuse(model: Any, **_: Any) -> None:
        if model.name == "BatchGetItem":
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"},
                               "ResponseMetadata": {"HTTPStatusCode": 500}}, model.name)

    world.client.meta.events.register("before-call.dynamodb", refuse)
    assert world.invoke(records[:100]) == one.invoke(records[:100])
    assert world.tables() == one.tables() and world.standin.requests["GetItem"] > 0


def test_the_pool_is_made_once_and_kept_and_never_for_one():
    rules, records = stream(events=200)
    many, one = World(rules, 16), World(rules, 1)
    many.invoke(records[:100])
    pool = many.aggregator._pool
    many.invoke(records[100:])
    assert pool is not None and many.aggregator._pool is pool and pool._max_workers == 16
    one.invoke(records[:100])
    assert one.aggregator._pool is None


def test_the_concurrent_aggregator_on_moto_matches_the_sequential_one(aws, clock):
    """On moto (serialised by the `aws` fixture), in two pairs of tables."""
    rules, records = stream(events=200)
    worlds = {}
    for concurrency in (1, 16):
        settings = StoreSettings(counters_table=f"counters-{concurrency}", outbox_table=f"outbox-{concurrency}")
        create_local_tables(aws.inspect, settings)
        store = CounterStore(aws.dynamodb, settings, clock=clock)
        worlds[concurrency] = (settings, Aggregator(store, activation_delay_ms=0, activation_clock=lambda: 0,
                                                    concurrency=concurrency))
        for rule in rules:
            if rule.rule_type is not RuleType.AGGREGATOR:
                store.activations.ensure(rule, 0)
    for batch in batches(records):
        clock.now = max(r["kinesis"]["approximateArrivalTimestamp"] for r in batch) + 1
        responses = [invoke(aggregator, rules, batch, CONTEXT) for _, aggregator in worlds.values()]
        assert responses[0] == responses[1]

    def scan(table: str) -> list[dict[str, Any]]:
        return sorted((item for page in aws.inspect.get_paginator("scan").paginate(TableName=table)
                       for item in page["Items"]), key=lambda item: item["pk"]["S"])

    for kind in ("counters_table", "outbox_table"):
        assert scan(getattr(worlds[1][0], kind)) == scan(getattr(worlds[16][0], kind))
    assert scan(worlds[16][0].outbox_table)


# --- the setting -----------------------------------------------------------------------------------------

BASE_ENV = {"COUNTERS_TABLE": "c", "OUTBOX_TABLE": "o", "RULES_BUCKET": "b", "RULES_KEY": "k",
            "FAILURES_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/f"}


def test_group_concurrency_defaults_to_16_and_is_read_from_the_environment():
    assert AggregatorSettings.from_env(BASE_ENV).group_concurrency == DEFAULT_GROUP_CONCURRENCY == 16
    assert AggregatorSettings.from_env({**BASE_ENV, "GROUP_CONCURRENCY": "1"}).group_concurrency == 1
    assert AggregatorSettings.from_env({**BASE_ENV, "GROUP_CONCURRENCY": " 64 "}).group_concurrency == 64


@pytest.mark.parametrize("value", ["0", "65", "-3", "eight", "2.5"])
def test_a_bad_group_concurrency_is_refused_naming_the_variable(value):
    with pytest.raises(ValueError, match=rf"GROUP_CONCURRENCY='{value}' is invalid: expected a whole number from 1 to 64"):
        AggregatorSettings.from_env({**BASE_ENV, "GROUP_CONCURRENCY": value})


def test_the_aggregator_refuses_a_pool_size_out_of_range():
    store = CounterStore(object(), SETTINGS)
    for bad in (0, 65):
        with pytest.raises(ValueError, match="concurrency"):
            Aggregator(store, activation_delay_ms=0, concurrency=bad)


def test_the_client_has_a_connection_for_every_thread():
    assert dynamodb_client_config(32).max_pool_connections == 32
    assert dynamodb_client_config(1).max_pool_connections == 10  # never below botocore's default
    assert dynamodb_client_config(16).parameter_validation is False
    assert dynamodb_client_config(16).retries["mode"] == "standard"  # the function's other settings kept
