"""The dispatcher with the profile object sink: the handler's per-sink metrics (skips, retries, profiles
created) and the rule that a later change is re-asserted only at last-writer-wins sinks, never by putting a
profile object again."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.rules import dispatcher
from functions.rules.dispatcher import NO_RETRY_DELAY, Runtime, handle_entry
from functions.rules.outbox_table import DeadLetterQueue, OutboxTable
from functions.rules.outbox import OutboxEntry
from functions.rules.profile_objects import PROFILE_CREATED
from functions.rules.sinks import Delivered, EventBridgeSink, NotYet, SinkError
from tests.functions.rules import test_dispatcher
from tests.functions.rules.test_dispatcher import FakeLambdaContext, FakeSink, RacingSink, entry, exit_of

world = test_dispatcher.world
"""The dispatcher tests' moto world (outbox table, dead-letter queue, bus), as a fixture here too."""


def emitted(capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    """The metrics of the handler's EMF line (Powertools writes each value as a list)."""
    [document] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = [definition["Name"] for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    return {name: sum(document[name]) if isinstance(document[name], list) else document[name] for name in names}


def test_the_handler_counts_skips_retries_and_profiles_created_per_sink(world, monkeypatch, capsys):
    objects = FakeSink("customer_profiles_objects", errors=[SinkError("slow down", retryable=True)],
                       skip=Delivered(PROFILE_CREATED), last_writer_wins=False)
    attributes = FakeSink("customer_profiles", skip="no profile with _account = 'u-1'")
    runtime = Runtime(sinks=(EventBridgeSink(world.events, "rules"), attributes, objects),
                      outbox=OutboxTable(world.dynamodb, "outbox"),
                      dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)
    monkeypatch.setattr(dispatcher, "_runtime", lambda: runtime)
    first, second = entry("u-1").to_item(), entry("u-2").to_item()
    for item in (first, second):
        world.put(item)
    capsys.readouterr()
    assert dispatcher.lambda_handler({"Records": [world.record(first), world.record(second)]},
                                     FakeLambdaContext()) == {"batchItemFailures": []}
    metrics = emitted(capsys)
    assert metrics["EntriesDelivered"] == 2
    assert metrics["DeliveredTo_eventbridge"] == 2 and metrics["DeliveredTo_customer_profiles_objects"] == 2
    assert metrics["SkippedBy_customer_profiles"] == 2 and "SkippedBy_customer_profiles_objects" not in metrics
    assert metrics["SinkRetries_customer_profiles_objects"] == 1  # only the first entry was throttled once
    assert metrics["ProfilesCreated"] == 2
    assert set(world.item(first["pk"])["delivered_sinks"]["SS"]) == {
        "eventbridge", "customer_profiles", "customer_profiles_objects"}


class RecordingObjects:
    """An object target (not last-writer-wins): records every put."""

    name = "customer_profiles_objects"
    last_writer_wins = False

    def __init__(self) -> None:
        self.puts: list[str] = []

    def deliver(self, entry: OutboxEntry) -> None:
        self.puts.append(entry.key)


def test_a_later_change_is_reasserted_at_the_attribute_sink_but_never_put_again_as_an_object(world):
    qualification = entry()
    world.put(qualification.to_item())
    attribute, objects = RacingSink(world, exit_of(qualification)), RecordingObjects()
    runtime = Runtime(sinks=(attribute, objects), outbox=OutboxTable(world.dynamodb, "outbox"),
                      dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)
    result = handle_entry(qualification, runtime)
    assert result.reasserted is not None and result.reasserted.key == "r-1#u-1#exit#1"
    assert attribute.calls == ["r-1#u-1#exit#1", "r-1#u-1#1", "r-1#u-1#exit#1"]  # the exit wins there
    assert objects.puts == ["r-1#u-1#1"]  # the qualification's object, once; the exit's is its own dispatcher's
    assert world.item(qualification.key)["status"]["S"] == "delivered"


class RecordingAttributes:
    """A last-writer-wins sink that records the keys it was given."""

    name = "recording"
    last_writer_wins = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    def deliver(self, entry) -> None:
        self.calls.append(entry.key)


def test_a_superseded_change_still_writes_its_object_but_not_its_state(world):
    # A qualification dead-lettered (or reconciled) after its exit: the exit carries the attribute's state, but
    # the qualification's object is its own record, and a campaign may start from it (review of issue 14).
    qualification, later = entry(), exit_of(entry())
    delivered: dict[str, Any] = {**later.to_item(), "status": "delivered",
                                 "delivered_sinks": {"recording", "customer_profiles_objects"}}
    del delivered["pending_shard"]
    world.put(qualification.to_item())
    world.put(delivered)
    attributes, objects = RecordingAttributes(), RecordingObjects()
    runtime = Runtime(sinks=(attributes, objects), outbox=OutboxTable(world.dynamodb, "outbox"),
                      dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)
    result = handle_entry(qualification, runtime)
    assert result.superseded_by.key == later.key and result.delivered == ("customer_profiles_objects",)
    assert objects.puts == [qualification.key] and attributes.calls == []
    assert world.item(qualification.key)["status"]["S"] == "superseded"
    assert world.item(qualification.key)["delivered_sinks"]["SS"] == ["customer_profiles_objects"]
    assert handle_entry(qualification, runtime) is None and objects.puts == [qualification.key]  # settled: once


def test_reassert_later_with_only_object_sinks_writes_nothing(world):
    qualification = entry()
    world.put(qualification.to_item())
    world.put({**exit_of(qualification).to_item(), "status": "pending"})
    objects = RecordingObjects()
    assert dispatcher.reassert_later(qualification, [objects], OutboxTable(world.dynamodb, "outbox")) is None
    assert objects.puts == []


def test_the_reconciler_counts_the_same_per_sink_metrics(world):
    from functions.rules.reconcile import PendingIndex, reconcile

    lost = entry()
    world.put(lost.to_item())  # pending, its stream record lost
    objects = FakeSink("customer_profiles_objects", skip="several profiles have _account = 'u-1'",
                       last_writer_wins=False)
    runtime = Runtime(sinks=(EventBridgeSink(world.events, "rules"), objects),
                      outbox=OutboxTable(world.dynamodb, "outbox"),
                      dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)
    report = reconcile(PendingIndex(world.dynamodb, "outbox"), runtime, now_ms=lost.created_ms + 3_600_000,
                       pending_after_ms=900_000)
    assert report.reconciled == [lost.key]
    assert dict(report.sink_counts) == {"DeliveredTo_eventbridge": 1, "SkippedBy_customer_profiles_objects": 1}


# --- Create mode: the attribute waits for the profile the object creates ------------------------------------


def not_yet_runtime(world, attributes, objects, now_ms: int) -> Runtime:
    return Runtime(sinks=(objects, attributes), outbox=OutboxTable(world.dynamodb, "outbox"),
                   dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY,
                   clock_ms=lambda: now_ms)


def test_an_attribute_not_yet_deliverable_leaves_the_entry_pending_for_that_sink_only(world, monkeypatch, capsys):
    # Customer Profiles creates the profile from the object shortly after ingestion; the attribute sink searching
    # before that answers NotYet. The entry stays pending (in the pending index) for the attribute sink alone, and
    # the reconciler's later handle_entry delivers it once the profile exists; the object is never put again.
    qualification = entry()
    world.put(qualification.to_item())
    attributes = FakeSink("customer_profiles", skip=NotYet("no profile yet"))
    objects = RecordingObjects()
    runtime = not_yet_runtime(world, attributes, objects, qualification.created_ms + 1_000)
    monkeypatch.setattr(dispatcher, "_runtime", lambda: runtime)
    capsys.readouterr()
    assert dispatcher.lambda_handler({"Records": [world.record(qualification.to_item())]},
                                     FakeLambdaContext()) == {"batchItemFailures": []}
    metrics = emitted(capsys)
    assert metrics["EntriesLeftPending"] == 1 and metrics["NotYetFor_customer_profiles"] == 1
    assert metrics["EntriesDelivered"] == 0 and metrics["EntriesDeadLettered"] == 0
    item = world.item(qualification.key)
    assert item["status"]["S"] == "pending" and "pending_shard" in item
    assert item["delivered_sinks"]["SS"] == ["customer_profiles_objects"]
    assert world.dead_letters() == []

    attributes.skip = None  # the profile exists now: the reconciler's turn (900 s later)
    later = not_yet_runtime(world, attributes, objects, qualification.created_ms + 900_000)
    result = handle_entry(qualification, later)
    assert result.complete and result.delivered == ("customer_profiles",) and result.already == (
        "customer_profiles_objects",)
    assert objects.puts == [qualification.key] and attributes.calls == 2
    item = world.item(qualification.key)
    assert item["status"]["S"] == "delivered" and "pending_shard" not in item


def test_the_wait_runs_from_the_first_not_yet_not_from_the_entrys_creation(world):
    # First delivered two hours after it was created (a reconciled lost record, a backlog): the object is put just
    # now, so the attribute still waits; the skip comes only an hour after the first NotYet (review of issue 14).
    qualification = entry()
    world.put(qualification.to_item())
    attributes = FakeSink("customer_profiles", skip=NotYet("no profile yet"))
    first = qualification.created_ms + 2 * 3_600_000
    result = handle_entry(qualification, not_yet_runtime(world, attributes, RecordingObjects(), first))
    assert result.not_yet == {"customer_profiles": "no profile yet"} and result.skipped == ()
    assert world.item(qualification.key)["waiting_since_ms"]["N"] == str(first)
    # Asked again within the hour: still waiting, and the start of the wait is kept.
    result = handle_entry(qualification, not_yet_runtime(world, attributes, RecordingObjects(), first + 1_800_000))
    assert result.not_yet and world.item(qualification.key)["waiting_since_ms"]["N"] == str(first)
    # Past the hour since the first answer: a skip with the reason, and the entry is settled.
    late = first + dispatcher.MAX_NOT_YET_MS + 1
    result = handle_entry(qualification, not_yet_runtime(world, attributes, RecordingObjects(), late))
    assert result.complete and result.not_yet == {}
    assert result.skipped == (("customer_profiles", "no profile yet, but none appeared within 60 minutes"),)
    assert world.item(qualification.key)["status"]["S"] == "delivered"


def test_a_not_yet_beside_a_failure_goes_into_the_dead_letter_after_the_object_sink(world):
    # The object put failed (so no profile is coming from it yet) and the attribute sink had none: both go to
    # the letter, the object sink first, so a replay puts the object before it asks for the attribute again.
    qualification = entry()
    world.put(qualification.to_item())
    objects = FakeSink("customer_profiles_objects", errors=[SinkError("refused", retryable=False)],
                       last_writer_wins=False)
    attributes = FakeSink("customer_profiles", skip=NotYet("no profile yet"))
    runtime = not_yet_runtime(world, attributes, objects, qualification.created_ms + 1_000)
    result = handle_entry(qualification, runtime)
    assert result.failed and result.not_yet
    [letter] = world.dead_letters()
    assert letter.failed_sinks == ("customer_profiles_objects", "customer_profiles")
    assert set(letter.errors) == {"customer_profiles_objects", "customer_profiles"}
    item = world.item(qualification.key)
    assert item["status"]["S"] == "dead_lettered" and "pending_shard" not in item
    # No object was put, so no profile is on its way: the wait has not started (a replay hours later that puts
    # the object must not find it "over"; third review of issue 14).
    assert "waiting_since_ms" not in item


def test_the_letter_lists_the_sinks_in_their_order_whatever_failed_first(world):
    # An exit of a user whose profile is still being created: the object sink answers NotYet, the attribute
    # sink fails; the letter still lists the object sink first.
    qualification = entry()
    exit_entry = exit_of(qualification)
    world.put(exit_entry.to_item())
    objects = FakeSink("customer_profiles_objects", skip=NotYet("no profile yet"), last_writer_wins=False)
    attributes = FakeSink("customer_profiles", errors=[SinkError("refused", retryable=False)])
    handle_entry(exit_entry, not_yet_runtime(world, attributes, objects, exit_entry.created_ms + 1_000))
    [letter] = world.dead_letters()
    assert letter.failed_sinks == ("customer_profiles_objects", "customer_profiles")
    assert world.item(exit_entry.key)["waiting_since_ms"]["N"] == str(exit_entry.created_ms + 1_000)


def test_waiting_never_reopens_an_entry_another_run_settled(world):
    # A reconciler run answering NotYet while another run delivered the entry: the late `wait` leaves it settled.
    qualification = entry()
    world.put({**qualification.to_item(), "status": "delivered", "delivered_sinks": {"customer_profiles"}})
    OutboxTable(world.dynamodb, "outbox").wait(qualification.key, qualification.created_ms + 5, pending=True)
    item = world.item(qualification.key)
    assert item["status"]["S"] == "delivered" and item["delivered_sinks"]["SS"] == ["customer_profiles"]
    assert "waiting_since_ms" not in item


def test_the_attribute_sink_answers_not_yet_only_in_create_mode():
    import boto3
    from botocore.stub import Stubber

    from functions.rules.outbox import Change
    from functions.rules.sinks import CustomerProfilesSink

    client = boto3.client("customer-profiles", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    qualification = entry()
    exit_entry = OutboxEntry.from_item({**qualification.to_item(), "change": Change.EXITED.value})
    with Stubber(client) as stub:
        for _ in range(3):
            stub.add_response("search_profiles", {"Items": []},
                              {"DomainName": "d", "KeyName": "_account", "Values": [qualification.user_id]})
        assert isinstance(CustomerProfilesSink(client, "d", profiles_created=True).deliver(qualification), NotYet)
        # An exit waits too: its qualification's object is creating the profile, and the attribute must be cleared.
        assert isinstance(CustomerProfilesSink(client, "d", profiles_created=True).deliver(exit_entry), NotYet)
        assert isinstance(CustomerProfilesSink(client, "d").deliver(qualification), str)  # skip mode: a skip
        stub.assert_no_pending_responses()
