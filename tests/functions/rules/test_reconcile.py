"""The outbox reconciler: the scheduled handler against moto (the outbox table with its pending index, the
dead-letter queue, an EventBridge bus whose events land in a queue), with a Stubber-backed Pinpoint sink
where a second target is needed, and the pure `reconcile` loop with a lagging fake index."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, Iterator, Mapping

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws

from cli.lambda_context import LocalLambdaContext
from functions.rules import reconcile
from functions.rules.dispatcher import NO_RETRY_DELAY, DeadLetter, Runtime
from functions.rules.outbox_table import DeadLetterQueue, OutboxTable
from functions.rules.model import ActionKind
from functions.rules.outbox import Change, OutboxEntry
from functions.rules.reconcile import PendingIndex, ReconcilerSettings
from functions.rules.sinks import EventBridgeSink, PinpointSink
from tests.functions.rules.dispatcher_aws import OUTBOX_TABLE, create_dispatcher_aws, read_bus_events, read_dead_letters

REGION = "us-east-1"
APP_ID = "6e0b7591a90841d2b5d93fa11143e5a7"
MINUTE_MS = 60_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def entry(user: str, *, age_minutes: float, action: ActionKind = ActionKind.ATTRIBUTE) -> OutboxEntry:
    created = now_ms() - int(age_minutes * MINUTE_MS)
    return OutboxEntry(key=f"r-1#{user}#1", change=Change.QUALIFIED, rule_id="r-1", user_id=user, action=action,
                       name="vip", value="ready", event_id=f"evt-{user}", event_time_ms=created - 5,
                       created_ms=created)


class World:
    def __init__(self) -> None:
        created = create_dispatcher_aws()
        self.dynamodb, self.sqs, self.dlq_url, self.bus_queue_url = (created.dynamodb, created.sqs,
                                                                     created.dlq_url, created.bus_queue_url)
        self.calls: Counter[str] = Counter()
        self.dynamodb.meta.events.register("before-call.dynamodb", lambda model, **_: self.calls.update([model.name]))

    def put(self, item: Mapping[str, Any]) -> None:
        serializer = TypeSerializer()
        self.dynamodb.put_item(TableName=OUTBOX_TABLE, Item={k: serializer.serialize(v) for k, v in item.items()})

    def item(self, key: str) -> dict[str, Any]:
        return self.dynamodb.get_item(TableName=OUTBOX_TABLE, Key={"pk": {"S": key}})["Item"]

    def bus_events(self) -> list[dict[str, Any]]:
        return read_bus_events(self.sqs, self.bus_queue_url)

    def dead_letters(self) -> list[DeadLetter]:
        return read_dead_letters(self.sqs, self.dlq_url)

    def pending_keys(self) -> set[str]:
        keys = set()
        for shard in reconcile.shards():
            page = self.dynamodb.query(TableName=OUTBOX_TABLE, IndexName="pending",
                                       KeyConditionExpression="pending_shard = :s",
                                       ExpressionAttributeValues={":s": {"S": shard}})
            keys |= {item["pk"]["S"] for item in page["Items"]}
        return keys


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    for name in ("PINPOINT_APPLICATION_ID", "CONNECT_DOMAIN_NAME", "RECONCILE_AFTER_SECONDS", "RECONCILE_MAX_ENTRIES"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        created = World()
        for name, value in {"OUTBOX_TABLE": OUTBOX_TABLE, "EVENT_BUS_NAME": "rules",
                            "DEAD_LETTER_QUEUE_URL": created.dlq_url}.items():
            monkeypatch.setenv(name, value)
        caches = (reconcile._settings, reconcile._runtime)
        for cache in caches:
            cache.cache_clear()
        yield created
        for cache in caches:
            cache.cache_clear()


def run(world: World, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Invoke the scheduled handler as EventBridge does; return its answer and the metrics it published."""
    capsys.readouterr()
    answer = reconcile.lambda_handler({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}},
                                      LocalLambdaContext(function_name="rules-reconciler", region=REGION))
    [emf] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    # Powertools writes each metric's values as a list; one value per metric here.
    return answer, {name: value[0] if isinstance(value, list) and len(value) == 1 else value
                    for name, value in emf.items()}


def test_an_entry_whose_stream_record_was_lost_is_delivered_and_counted(world, capsys):
    lost = entry("u-1", age_minutes=40)
    world.put(lost.to_item())  # pending, and the dispatcher never heard of it
    answer, emf = run(world, capsys)

    [published] = world.bus_events()
    assert published["detail-type"] == "RuleQualified" and published["detail"]["key"] == lost.key
    stored = world.item(lost.key)
    assert stored["status"]["S"] == "delivered" and stored["delivered_sinks"]["SS"] == ["eventbridge"]
    assert world.pending_keys() == set()
    assert answer["reconciled"] == 1
    assert emf["OutboxEntriesReconciled"] == 1.0 and emf["OutboxEntriesReconcileFailed"] == 0.0
    assert 40 * 60 - 5 <= emf["OldestPendingEntryAgeSeconds"] <= 40 * 60 + 60
    assert emf["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "EngagementLoop"
    assert world.calls["Scan"] == 0 and world.calls["Query"] >= 1  # through the index, never a Scan

    answer, emf = run(world, capsys)  # the next run finds nothing: the entry left the index
    assert answer["reconciled"] == 0 and world.bus_events() == []
    assert emf["OldestPendingEntryAgeSeconds"] == 0.0


def test_a_young_entry_is_left_to_the_live_dispatcher_but_shows_in_the_age(world, capsys):
    young = entry("u-1", age_minutes=2)
    world.put(young.to_item())
    answer, emf = run(world, capsys)
    assert answer["reconciled"] == 0 and world.bus_events() == []
    assert world.item(young.key)["status"]["S"] == "pending"
    assert 115 <= emf["OldestPendingEntryAgeSeconds"] <= 180


def test_the_threshold_is_a_function_setting(world, capsys, monkeypatch):
    monkeypatch.setenv("RECONCILE_AFTER_SECONDS", "60")
    world.put(entry("u-1", age_minutes=2).to_item())
    answer, _ = run(world, capsys)
    assert answer["reconciled"] == 1 and len(world.bus_events()) == 1


def test_settled_entries_are_not_touched_even_when_old(world, capsys):
    done = {**entry("u-1", age_minutes=60).to_item(), "status": "delivered", "delivered_sinks": {"eventbridge"}}
    del done["pending_shard"]  # what the dispatcher leaves behind
    world.put(done)
    answer, _ = run(world, capsys)
    assert answer["reconciled"] == 0 and world.bus_events() == []


def test_a_sink_that_already_has_the_entry_is_not_called_again_and_a_failing_one_dead_letters(world, monkeypatch):
    """The live dispatcher delivered to EventBridge and died before Pinpoint; the stream record is gone."""
    half = {**entry("u-1", age_minutes=31).to_item(), "delivered_sinks": {"eventbridge"}}
    failing = entry("u-2", age_minutes=30).to_item()
    world.put(half)
    world.put(failing)
    client = boto3.client("pinpoint", region_name=REGION, config=Config(retries={"total_max_attempts": 1}))
    runtime = Runtime(sinks=(EventBridgeSink(boto3.client("events"), "rules"), PinpointSink(client, APP_ID)),
                      outbox=OutboxTable(world.dynamodb, OUTBOX_TABLE),
                      dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)
    with Stubber(client) as stub:
        calls = {"u-1": [("get_user_endpoints", {"EndpointsResponse": {"Item": [{"Id": "ep-1"}]}}),
                         ("update_endpoint", {"MessageBody": {"Message": "Accepted"}})],
                 "u-2": [("get_user_endpoints", None)]}
        shards_in_order = sorted([half, failing], key=lambda item: (reconcile.shards().index(item["pending_shard"]),
                                                                   item["created_ms"]))
        for item in shards_in_order:
            for method, response in calls[item["user_id"]]:
                if response is None:
                    stub.add_client_error(method, "BadRequestException", "project deleted", 400)
                else:
                    stub.add_response(method, response)
        report = reconcile.reconcile(PendingIndex(world.dynamodb, OUTBOX_TABLE), runtime, now_ms=now_ms(),
                                     pending_after_ms=15 * MINUTE_MS)
        stub.assert_no_pending_responses()
    assert sorted(report.reconciled) == ["r-1#u-1#1", "r-1#u-2#1"] and report.failed == {}
    assert [event["detail"]["user_id"] for event in world.bus_events()] == ["u-2"]  # u-1 had it already
    assert set(world.item("r-1#u-1#1")["delivered_sinks"]["SS"]) == {"eventbridge", "pinpoint"}
    [letter] = world.dead_letters()
    assert letter.entry.user_id == "u-2" and letter.failed_sinks == ("pinpoint",)
    assert world.item("r-1#u-2#1")["status"]["S"] == "dead_lettered"
    assert world.pending_keys() == set()


class LaggingIndex:
    """The index as it can be for a moment: still listing an entry the dispatcher has just settled."""

    def __init__(self, items: list[Mapping[str, Any]]) -> None:
        self.items = items

    def oldest_created_ms(self, shard: str, *, after_ms: int | None = None) -> int | None:
        mine = [int(item["created_ms"]) for item in self.items
                if item["pending_shard"] == shard and (after_ms is None or item["created_ms"] > after_ms)]
        return min(mine) if mine else None

    def created_until(self, shard: str, until_ms: int) -> Iterator[Mapping[str, Any]]:
        yield from (item for item in self.items if item["pending_shard"] == shard and item["created_ms"] <= until_ms)


def test_an_entry_the_live_dispatcher_settled_meanwhile_is_not_delivered_again(world):
    stale = entry("u-1", age_minutes=20).to_item()
    world.put({**{k: v for k, v in stale.items() if k != "pending_shard"}, "status": "delivered",
               "delivered_sinks": {"eventbridge"}})
    report = reconcile.reconcile(LaggingIndex([stale]), runtime_on(world), now_ms=now_ms(),
                                 pending_after_ms=15 * MINUTE_MS)
    assert report.already_settled == ["r-1#u-1#1"] and report.reconciled == []
    assert world.bus_events() == []


def runtime_on(world: World) -> Runtime:
    return Runtime(sinks=(EventBridgeSink(boto3.client("events"), "rules"),),
                   outbox=OutboxTable(world.dynamodb, OUTBOX_TABLE),
                   dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)


def test_an_entry_that_cannot_be_handled_does_not_stop_the_others(world):
    items = [entry(f"u-{n}", age_minutes=30 + n).to_item() for n in range(3)]
    broken = {**entry("u-x", age_minutes=50).to_item(), "change": "nonsense"}
    for item in items:
        world.put(item)
    report = reconcile.reconcile(LaggingIndex([broken, *items]), runtime_on(world), now_ms=now_ms(),
                                 pending_after_ms=15 * MINUTE_MS)
    assert list(report.failed) == ["r-1#u-x#1"] and "ValueError" in report.failed["r-1#u-x#1"]
    assert len(report.reconciled) == 3 and not report.stopped_early and len(world.bus_events()) == 3


def test_a_run_stops_at_its_entry_budget_and_its_time_budget(world):
    items = [entry(f"u-{n}", age_minutes=30 + n).to_item() for n in range(5)]
    for item in items:
        world.put(item)
    report = reconcile.reconcile(PendingIndex(world.dynamodb, OUTBOX_TABLE), runtime_on(world), now_ms=now_ms(),
                                 pending_after_ms=15 * MINUTE_MS, max_entries=3)
    assert len(report.reconciled) == 3 and report.stopped_early
    report = reconcile.reconcile(PendingIndex(world.dynamodb, OUTBOX_TABLE), runtime_on(world), now_ms=now_ms(),
                                 pending_after_ms=15 * MINUTE_MS, time_left_ms=lambda: 1_000)
    assert report.reconciled == [] and report.stopped_early
    report = reconcile.reconcile(PendingIndex(world.dynamodb, OUTBOX_TABLE), runtime_on(world), now_ms=now_ms(),
                                 pending_after_ms=15 * MINUTE_MS)
    assert len(report.reconciled) == 2 and not report.stopped_early
    assert len({event["detail"]["key"] for event in world.bus_events()}) == 5


def test_settings_name_what_is_missing_and_read_the_reconciler_options():
    with pytest.raises(ValueError) as raised:
        ReconcilerSettings.from_env({"EVENT_BUS_NAME": "rules", "RECONCILE_AFTER_SECONDS": "soon"})
    message = str(raised.value)
    assert message.startswith("outbox reconciler function environment")
    assert "OUTBOX_TABLE is missing" in message and "DEAD_LETTER_QUEUE_URL is missing" in message
    assert "RECONCILE_AFTER_SECONDS='soon' is invalid" in message
    settings = ReconcilerSettings.from_env({"OUTBOX_TABLE": "o", "EVENT_BUS_NAME": "b", "DEAD_LETTER_QUEUE_URL": "q",
                                            "RECONCILE_MAX_ENTRIES": "50"})
    assert settings.pending_after_seconds == 900 and settings.max_entries == 50
    assert settings.delivery.outbox_table == "o" and settings.delivery.pinpoint_application_id is None


def test_a_settled_entry_still_in_the_index_is_taken_out_and_leaves_the_age_alone(world):
    """/tmp/review1/test_reconcile_review.py: a dispatcher of an earlier release settled the entry without
    removing `pending_shard`; the alarm must not stay on, and the entry must not cost a read every run."""
    world.put({**entry("u-1", age_minutes=60).to_item(), "status": "delivered", "delivered_sinks": {"eventbridge"}})
    index = PendingIndex(world.dynamodb, OUTBOX_TABLE)
    report = reconcile.reconcile(index, runtime_on(world), now_ms=now_ms(), pending_after_ms=15 * MINUTE_MS)
    assert report.already_settled == ["r-1#u-1#1"] and report.oldest_pending_age_ms == 0
    assert "pending_shard" not in world.item("r-1#u-1#1") and world.pending_keys() == set()
    assert world.item("r-1#u-1#1")["status"]["S"] == "delivered" and world.bus_events() == []
    world.calls.clear()
    report = reconcile.reconcile(index, runtime_on(world), now_ms=now_ms(), pending_after_ms=15 * MINUTE_MS)
    assert report.already_settled == [] and "GetItem" not in world.calls


def test_taking_an_entry_out_of_the_index_never_touches_a_pending_one(world):
    pending = entry("u-1", age_minutes=60)
    world.put(pending.to_item())
    OutboxTable(world.dynamodb, OUTBOX_TABLE).leave_pending_index(pending.key)
    assert world.pending_keys() == {pending.key}


def test_entries_that_fail_every_run_do_not_take_the_budget_of_those_behind_them(world):
    """/tmp/review1/test_reconcile_review.py: the oldest entries fail every run, on the good one's shard."""
    good = entry("good", age_minutes=30)
    bad = [{**entry(f"bad-{n}", age_minutes=120 + n).to_item(), "change": "nonsense",
            "pending_shard": good.to_item()["pending_shard"]} for n in range(3)]
    for item in (*bad, good.to_item()):
        world.put(item)
    report = reconcile.reconcile(PendingIndex(world.dynamodb, OUTBOX_TABLE), runtime_on(world), now_ms=now_ms(),
                                 pending_after_ms=15 * MINUTE_MS, max_entries=3)
    assert report.reconciled == [good.key] and len(report.failed) == 3 and not report.stopped_early
    assert [event["detail"]["key"] for event in world.bus_events()] == [good.key]
    assert report.oldest_pending_age_ms >= 122 * MINUTE_MS  # the failing ones are pending: the alarm says so


def test_the_shards_are_taken_in_an_order_that_moves_on_every_minute():
    orders = [reconcile._shard_order(minute * MINUTE_MS) for minute in range(len(reconcile.shards()))]
    assert all(sorted(order) == reconcile.shards() for order in orders)
    assert len({order[0] for order in orders}) == len(reconcile.shards())


def test_entries_waiting_for_a_profile_do_not_take_the_budget_of_those_behind_them(world):
    # Create mode: the oldest entries of a shard wait for profiles that do not appear (NotYet every run); a lost
    # entry behind them must still be reached (third review of issue 14).
    from functions.rules.sinks import NotYet

    class WaitingOn:
        """An attribute target that has no profile yet for the `waiting` users, and takes everyone else."""

        name = "customer_profiles"
        last_writer_wins = True

        def __init__(self, waiting: set[str]) -> None:
            self.waiting = waiting

        def deliver(self, entry):
            return NotYet("no profile yet") if entry.user_id in self.waiting else None

    good = entry("good", age_minutes=30)
    waiting = [{**entry(f"new-{n}", age_minutes=120 + n).to_item(), "pending_shard": good.to_item()["pending_shard"]}
               for n in range(3)]
    for item in (*waiting, good.to_item()):
        world.put(item)
    runtime = Runtime(sinks=(WaitingOn({f"new-{n}" for n in range(3)}),),
                      outbox=OutboxTable(world.dynamodb, OUTBOX_TABLE),
                      dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY,
                      clock_ms=now_ms)
    report = reconcile.reconcile(PendingIndex(world.dynamodb, OUTBOX_TABLE), runtime, now_ms=now_ms(),
                                 pending_after_ms=15 * MINUTE_MS, max_entries=3)
    assert report.reconciled == [good.key] and len(report.waiting) == 3 and not report.stopped_early
    assert report.as_dict()["waiting"] == 3
    assert all(world.item(item["pk"])["status"]["S"] == "pending" for item in waiting)
    assert world.item(good.key)["status"]["S"] == "delivered"
