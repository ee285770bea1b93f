"""The action dispatcher: the pure `dispatch` core with fake sinks, the settings, and the Lambda handler
end to end against moto (outbox table, dead-letter queue, an EventBridge bus whose events land in a
queue), with a Stubber-backed Pinpoint sink for the optional target."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws

from functions.rules import dispatcher
from functions.rules.dispatcher import (
    NO_RETRY_DELAY,
    DeadLetter,
    DispatcherSettings,
    RetryPolicy,
    Runtime,
    dispatch,
    handle_entry,
)
from functions.rules.outbox import Change, DeliveryStatus, OutboxEntry
from functions.rules.outbox_table import DeadLetterQueue, OutboxTable, Progress
from functions.rules.model import ActionKind
from functions.rules.profile_objects import PROFILE_CREATED, ProfileObjectSink, UnknownUsers
from functions.rules.sinks import Delivered, EventBridgeSink, PinpointSink, SinkError
from cli.lambda_context import LocalLambdaContext
from tests.functions.rules.dispatcher_aws import create_dispatcher_aws, read_bus_events, read_dead_letters

REGION = "us-east-1"
APP_ID = "6e0b7591a90841d2b5d93fa11143e5a7"
EVENT_TIME_MS = 1_764_000_000_000


def entry(user: str = "u-1", sequence: int = 1) -> OutboxEntry:
    return OutboxEntry(key=f"r-1#{user}#{sequence}", change=Change.QUALIFIED, rule_id="r-1", user_id=user,
                       action=ActionKind.ATTRIBUTE, name="vip", value="ready", event_id=f"evt-{user}",
                       event_time_ms=EVENT_TIME_MS, created_ms=EVENT_TIME_MS + 10)


@dataclass
class FakeSink:
    """Fails with the queued errors first, then delivers (or skips with `skip`)."""

    name: str
    errors: list[SinkError] = field(default_factory=list)
    skip: str | Delivered | None = None
    calls: int = 0
    last_writer_wins: bool = True

    def deliver(self, entry: OutboxEntry) -> str | Delivered | None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.skip


@dataclass
class FakeLog:
    marks: list[tuple[str, str]] = field(default_factory=list)

    def mark_delivered(self, key: str, sink_name: str) -> None:
        self.marks.append((key, sink_name))


def throttled() -> SinkError:
    return SinkError("slow down", retryable=True)


# --- The core ---------------------------------------------------------------------------------------------


def test_dispatch_retries_throttling_and_marks_each_sink_as_it_is_done():
    sleeps: list[float] = []
    flaky, steady = FakeSink("a", errors=[throttled(), throttled()]), FakeSink("b")
    log = FakeLog()
    result = dispatch(entry(), frozenset(), [flaky, steady], log=log, retry=RetryPolicy(sleep=sleeps.append))
    assert result.delivered == ("a", "b") and result.complete
    assert flaky.calls == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] * 0.9
    assert log.marks == [("r-1#u-1#1", "a"), ("r-1#u-1#1", "b")]
    assert result.retries == {"a": 2}  # the sink that needed none is not listed


def test_retries_are_counted_up_to_the_last_attempt_and_a_refusal_counts_none():
    always = FakeSink("a", errors=[throttled()] * 5)
    refused = FakeSink("b", errors=[SinkError("bad request", retryable=False)])
    result = dispatch(entry(), frozenset(), [always, refused], log=FakeLog(), retry=NO_RETRY_DELAY)
    assert result.retries == {"a": 2}  # 3 attempts: 2 retries, then it fails


def test_a_delivery_with_a_note_is_done_and_its_note_kept():
    creating = FakeSink("customer_profiles_objects", skip=Delivered(PROFILE_CREATED))
    log = FakeLog()
    result = dispatch(entry(), frozenset(), [creating], log=log, retry=NO_RETRY_DELAY)
    assert result.delivered == ("customer_profiles_objects",) and result.skipped == ()
    assert result.notes == (("customer_profiles_objects", PROFILE_CREATED),)
    assert log.marks == [("r-1#u-1#1", "customer_profiles_objects")]


def test_sink_counts_name_every_per_sink_metric():
    result = dispatcher.DispatchResult(
        delivered=("eventbridge", "customer_profiles_objects"), skipped=(("customer_profiles", "no profile"),),
        notes=(("customer_profiles_objects", PROFILE_CREATED),), retries={"customer_profiles_objects": 2})
    assert dict(dispatcher.sink_counts(result)) == {
        "DeliveredTo_eventbridge": 1, "DeliveredTo_customer_profiles_objects": 1,
        "SkippedBy_customer_profiles": 1, "SinkRetries_customer_profiles_objects": 2, "ProfilesCreated": 1}
    assert dict(dispatcher.sink_counts(dispatcher.DispatchResult(delivered=("eventbridge",)))) == {
        "DeliveredTo_eventbridge": 1}


def test_dispatch_gives_up_after_the_attempts_and_never_retries_a_refusal():
    always = FakeSink("a", errors=[throttled()] * 5)
    refused = FakeSink("b", errors=[SinkError("bad request", retryable=False)])
    log = FakeLog()
    result = dispatch(entry(), frozenset(), [always, refused, FakeSink("c")], log=log, retry=NO_RETRY_DELAY)
    assert result.failed == {"a": "slow down", "b": "bad request"} and not result.complete
    assert (always.calls, refused.calls) == (3, 1)
    assert log.marks == [("r-1#u-1#1", "c")]


def test_dispatch_skips_sinks_already_delivered_and_records_a_skip_as_done():
    done, unknown_user = FakeSink("a"), FakeSink("b", skip="no endpoints")
    log = FakeLog()
    result = dispatch(entry(), frozenset({"a"}), [done, unknown_user], log=log, retry=NO_RETRY_DELAY)
    assert done.calls == 0 and result.already == ("a",)
    assert result.skipped == (("b", "no endpoints"),) and result.complete
    assert log.marks == [("r-1#u-1#1", "b")]


def test_dead_letter_round_trips_and_refuses_other_messages():
    letter = DeadLetter(entry=entry(), failed_sinks=("pinpoint",), errors={"pinpoint": "boom"}, dead_lettered_ms=5)
    assert DeadLetter.from_json(letter.to_json()) == letter
    for text in ("{}", "not json", '{"kind": "engagement-loop.rules.dead-letter/v1"}', "[1]"):
        with pytest.raises(ValueError):
            DeadLetter.from_json(text)


def test_settings_name_every_missing_variable_and_read_the_optional_ones():
    with pytest.raises(ValueError) as raised:
        DispatcherSettings.from_env({"EVENT_BUS_NAME": "rules"})
    assert "OUTBOX_TABLE is missing" in str(raised.value) and "DEAD_LETTER_QUEUE_URL is missing" in str(raised.value)
    assert "EVENT_BUS_NAME" not in str(raised.value)
    settings = DispatcherSettings.from_env({"OUTBOX_TABLE": "o", "EVENT_BUS_NAME": "b", "DEAD_LETTER_QUEUE_URL": "q",
                                            "PINPOINT_APPLICATION_ID": APP_ID, "CONNECT_DOMAIN_NAME": ""})
    assert settings.pinpoint_application_id == APP_ID and settings.connect_domain_name is None
    assert settings.connect_profile_key == "_account"
    assert settings.connect_object_type == "EngagementLoopQualification"
    assert settings.connect_unknown_users is UnknownUsers.SKIP


REQUIRED = {"OUTBOX_TABLE": "o", "EVENT_BUS_NAME": "b", "DEAD_LETTER_QUEUE_URL": "q"}


def test_settings_read_the_object_type_and_what_to_do_with_unknown_users():
    settings = DispatcherSettings.from_env({**REQUIRED, "CONNECT_DOMAIN_NAME": "d", "CONNECT_PROFILE_KEY": "user_id",
                                            "CONNECT_OBJECT_TYPE": "Qualified", "CONNECT_UNKNOWN_USERS": "create"})
    assert (settings.connect_profile_key, settings.connect_object_type) == ("user_id", "Qualified")
    assert settings.connect_unknown_users is UnknownUsers.CREATE


def test_a_bad_unknown_users_mode_is_refused_naming_the_variable_with_the_other_problems():
    with pytest.raises(ValueError) as raised:
        DispatcherSettings.from_env({"EVENT_BUS_NAME": "b", "DEAD_LETTER_QUEUE_URL": "q",
                                     "CONNECT_UNKNOWN_USERS": "Create!"})
    message = str(raised.value)
    assert "CONNECT_UNKNOWN_USERS='Create!' is invalid: expected one of skip, create" in message
    assert "OUTBOX_TABLE is missing" in message and message.startswith("dispatcher function environment: ")


def test_build_sinks_follows_the_configuration():
    settings = DispatcherSettings(outbox_table="o", event_bus_name="b", dead_letter_queue_url="q",
                                  connect_domain_name="d")
    session = boto3.session.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    assert [sink.name for sink in dispatcher.build_sinks(settings, session)] == [
        "eventbridge", "customer_profiles", "customer_profiles_objects"]
    bare = DispatcherSettings(outbox_table="o", event_bus_name="b", dead_letter_queue_url="q")
    assert [sink.name for sink in dispatcher.build_sinks(bare, session)] == ["eventbridge"]
    # Creating unknown users: the object (which creates the profile) before the attribute.
    create = DispatcherSettings(outbox_table="o", event_bus_name="b", dead_letter_queue_url="q",
                                connect_domain_name="d", connect_unknown_users=UnknownUsers.CREATE)
    assert [sink.name for sink in dispatcher.build_sinks(create, session)] == [
        "eventbridge", "customer_profiles_objects", "customer_profiles"]


def test_both_customer_profiles_sinks_share_one_client_with_standard_retries():
    settings = DispatcherSettings(outbox_table="o", event_bus_name="b", dead_letter_queue_url="q",
                                  pinpoint_application_id=APP_ID, connect_domain_name="d", connect_profile_key="k",
                                  connect_object_type="T", connect_unknown_users=UnknownUsers.CREATE)
    session = boto3.session.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    *_, objects, attributes = dispatcher.build_sinks(settings, session)
    assert [sink.name for sink in dispatcher.build_sinks(settings, session)][:2] == ["eventbridge", "pinpoint"]
    assert isinstance(objects, ProfileObjectSink) and objects._client is attributes._client
    assert (objects._domain, objects._type, objects._key, objects._unknown) == ("d", "T", "k", UnknownUsers.CREATE)
    assert objects._client.meta.config.retries["mode"] == "standard"


# --- The handler against moto -----------------------------------------------------------------------------


def FakeLambdaContext() -> LocalLambdaContext:  # noqa: N802 (used like the class it replaces)
    return LocalLambdaContext(function_name="engagement-loop-dispatcher", region=REGION, memory_limit_in_mb=256)


@dataclass
class World:
    dynamodb: Any
    sqs: Any
    events: Any
    table: str
    dlq_url: str
    bus_queue_url: str
    stream_arn: str = f"arn:aws:dynamodb:{REGION}:123456789012:table/outbox/stream/2026-11-01T00:00:00.000"
    sequence: int = 0

    def put(self, item: dict[str, Any]) -> None:
        serializer = TypeSerializer()
        self.dynamodb.put_item(TableName=self.table, Item={k: serializer.serialize(v) for k, v in item.items()})

    def record(self, item: dict[str, Any], event_name: str = "INSERT") -> dict[str, Any]:
        """The DynamoDB stream record a write of `item` produces (NEW_AND_OLD_IMAGES)."""
        serializer = TypeSerializer()
        self.sequence += 1
        image = {k: serializer.serialize(v) for k, v in item.items()}
        return {
            "eventID": uuid.uuid4().hex, "eventName": event_name, "eventVersion": "1.1", "eventSource": "aws:dynamodb",
            "awsRegion": REGION, "eventSourceARN": self.stream_arn,
            "dynamodb": {"ApproximateCreationDateTime": 1_764_000_000, "Keys": {"pk": image["pk"]},
                         "NewImage": image, "SequenceNumber": f"{self.sequence:021d}", "SizeBytes": 300,
                         "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }

    def item(self, key: str) -> dict[str, Any]:
        return self.dynamodb.get_item(TableName=self.table, Key={"pk": {"S": key}})["Item"]

    def bus_events(self) -> list[dict[str, Any]]:
        return read_bus_events(self.sqs, self.bus_queue_url)

    def dead_letters(self) -> list[DeadLetter]:
        return read_dead_letters(self.sqs, self.dlq_url)


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        created = create_dispatcher_aws()
        dynamodb, sqs, events, dlq_url = created.dynamodb, created.sqs, created.events, created.dlq_url
        bus_queue_url = created.bus_queue_url
        for name, value in {"OUTBOX_TABLE": "outbox", "EVENT_BUS_NAME": "rules", "DEAD_LETTER_QUEUE_URL": dlq_url,
                            "PINPOINT_APPLICATION_ID": APP_ID}.items():
            monkeypatch.setenv(name, value)
        caches = (dispatcher._settings, dispatcher._runtime)  # kept: a test may monkeypatch `_runtime`
        for cache in caches:
            cache.cache_clear()
        yield World(dynamodb, sqs, events, "outbox", dlq_url, bus_queue_url)
        for cache in caches:
            cache.cache_clear()


@pytest.fixture
def pinpoint(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The handler's runtime: the real EventBridge sink on moto, Pinpoint on a Stubber, no retry delays."""
    client = boto3.client("pinpoint", region_name=REGION, config=Config(retries={"total_max_attempts": 1}))
    runtime = Runtime(sinks=(EventBridgeSink(world.events, "rules"), PinpointSink(client, APP_ID)),
                      outbox=OutboxTable(world.dynamodb, "outbox"),
                      dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)
    monkeypatch.setattr(dispatcher, "_runtime", lambda: runtime)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def expect_pinpoint_ok(stub: Stubber, user: str = "u-1") -> None:
    stub.add_response("get_user_endpoints", {"EndpointsResponse": {"Item": [{"Id": f"ep-{user}"}]}},
                      {"ApplicationId": APP_ID, "UserId": user})
    stub.add_response("update_endpoint", {"MessageBody": {"Message": "Accepted"}}, {
        "ApplicationId": APP_ID, "EndpointId": f"ep-{user}",
        "EndpointRequest": {"User": {"UserId": user, "UserAttributes": {"vip": ["ready"]}}}})


def invoke(world: World, *records: dict[str, Any]) -> dict[str, Any]:
    return dispatcher.lambda_handler({"Records": list(records)}, FakeLambdaContext())


def test_insert_is_delivered_to_every_sink_once_even_when_the_record_comes_again(world, pinpoint):
    item = entry().to_item()
    world.put(item)
    record = world.record(item)
    expect_pinpoint_ok(pinpoint)
    assert invoke(world, record) == {"batchItemFailures": []}
    stored = world.item(item["pk"])
    assert set(stored["delivered_sinks"]["SS"]) == {"eventbridge", "pinpoint"}
    assert stored["status"]["S"] == "delivered"
    [published] = world.bus_events()
    assert published["detail-type"] == "RuleQualified" and published["detail"]["key"] == "r-1#u-1#1"

    assert invoke(world, record) == {"batchItemFailures": []}  # the stream delivers the record again
    assert world.bus_events() == []


def test_a_sink_that_keeps_failing_dead_letters_the_entry_without_blocking_the_stream(world, pinpoint):
    first, second = entry("u-1").to_item(), entry("u-2").to_item()
    world.put(first)
    world.put(second)
    for _ in range(3):  # each attempt is a whole delivery: look the endpoints up, update them
        pinpoint.add_response("get_user_endpoints", {"EndpointsResponse": {"Item": [{"Id": "ep-u-1"}]}})
        pinpoint.add_client_error("update_endpoint", "TooManyRequestsException", "slow down", 429)
    expect_pinpoint_ok(pinpoint, "u-2")
    records = [world.record(first), world.record(second)]
    assert invoke(world, *records) == {"batchItemFailures": []}

    [letter] = world.dead_letters()
    assert letter.entry == entry("u-1") and letter.failed_sinks == ("pinpoint",)
    assert "TooManyRequestsException" in letter.errors["pinpoint"]
    stored = world.item(first["pk"])
    assert stored["status"]["S"] == "dead_lettered" and stored["delivered_sinks"]["SS"] == ["eventbridge"]
    assert world.item(second["pk"])["status"]["S"] == "delivered"
    assert sorted(event["detail"]["user_id"] for event in world.bus_events()) == ["u-1", "u-2"]

    assert invoke(world, *records) == {"batchItemFailures": []}  # settled entries are not tried again
    assert world.dead_letters() == [] and world.bus_events() == []


def test_when_even_the_dead_letter_queue_fails_the_record_is_retried_and_done_sinks_are_not_repeated(
        world, pinpoint, monkeypatch):
    item = entry().to_item()
    world.put(item)
    record = world.record(item)
    runtime = dispatcher._runtime()
    monkeypatch.setattr(runtime.dead_letters, "_url", world.dlq_url + "-gone")
    pinpoint.add_client_error("get_user_endpoints", "BadRequestException", "project deleted", 400)
    assert invoke(world, record) == {"batchItemFailures": [{"itemIdentifier": record["dynamodb"]["SequenceNumber"]}]}
    assert world.item(item["pk"])["status"]["S"] == "pending"
    assert len(world.bus_events()) == 1

    monkeypatch.setattr(runtime.dead_letters, "_url", world.dlq_url)
    expect_pinpoint_ok(pinpoint)
    assert invoke(world, record) == {"batchItemFailures": []}  # Lambda's retry of the failed record
    assert world.item(item["pk"])["status"]["S"] == "delivered"
    assert world.bus_events() == [] and world.dead_letters() == []


def test_modify_and_remove_records_are_ignored(world, pinpoint):
    item = entry().to_item()
    world.put(item)
    assert invoke(world, world.record(item, "MODIFY"), world.record(item, "REMOVE")) == {"batchItemFailures": []}
    assert world.item(item["pk"])["status"]["S"] == "pending" and world.bus_events() == []


def test_handler_builds_its_sinks_from_the_environment(world, monkeypatch):
    monkeypatch.delenv("PINPOINT_APPLICATION_ID")
    item = entry().to_item()
    world.put(item)
    assert invoke(world, world.record(item)) == {"batchItemFailures": []}
    assert world.item(item["pk"])["delivered_sinks"]["SS"] == ["eventbridge"]
    assert [sink.name for sink in dispatcher._runtime().sinks] == ["eventbridge"]


def test_progress_is_not_recorded_on_an_entry_that_no_longer_exists(world):
    outbox = OutboxTable(world.dynamodb, "outbox")
    outbox.mark_delivered("r-1#gone#1", "eventbridge")
    outbox.set_status("r-1#gone#1", DeliveryStatus.DELIVERED, 1)
    assert "Item" not in world.dynamodb.get_item(TableName="outbox", Key={"pk": {"S": "r-1#gone#1"}})
    assert outbox.progress("r-1#gone#1") == Progress()  # no sinks done, no status, no wait


def test_an_attribute_change_arriving_after_a_later_one_exists_is_superseded_not_delivered(world, pinpoint):
    """A late stream record (retries, a slow shard) of a qualification whose exit is already there must not
    mark the user `ready` again: attributes are last-writer-wins."""
    qualification = entry()
    exit_item = {**OutboxEntry(key="r-1#u-1#exit#1", change=Change.EXITED, rule_id="r-1", user_id="u-1",
                               action=ActionKind.ATTRIBUTE, name="vip", value=None, event_id="",
                               event_time_ms=EVENT_TIME_MS + 60_000, created_ms=EVENT_TIME_MS + 60_000).to_item(),
                 "status": "delivered", "delivered_sinks": {"eventbridge", "pinpoint"}}
    del exit_item["pending_shard"]
    world.put(qualification.to_item())
    world.put(exit_item)
    assert invoke(world, world.record(qualification.to_item())) == {"batchItemFailures": []}
    assert world.bus_events() == []  # and no Pinpoint call: the Stubber has no responses queued
    stored = world.item(qualification.key)
    assert stored["status"]["S"] == "superseded" and "pending_shard" not in stored


def test_settling_an_entry_takes_it_out_of_the_pending_index(world, pinpoint):
    item = entry().to_item()
    world.put(item)
    index = {"TableName": "outbox", "IndexName": "pending", "KeyConditionExpression": "pending_shard = :s",
             "ExpressionAttributeValues": {":s": {"S": item["pending_shard"]}}}
    assert world.dynamodb.query(**index)["Count"] == 1
    expect_pinpoint_ok(pinpoint)
    invoke(world, world.record(item))
    assert world.item(item["pk"])["status"]["S"] == "delivered"
    assert world.dynamodb.query(**index)["Count"] == 0


def exit_of(qualification: OutboxEntry) -> OutboxEntry:
    return OutboxEntry(key=f"r-1#{qualification.user_id}#exit#1", change=Change.EXITED, rule_id="r-1",
                       user_id=qualification.user_id, action=ActionKind.ATTRIBUTE, name="vip", value=None,
                       event_id="", event_time_ms=EVENT_TIME_MS + 60_000, created_ms=EVENT_TIME_MS + 60_000)


class RacingSink:
    """A target (last writer wins) whose call for the qualification is slow: meanwhile the exit is created and
    another dispatcher delivers it. `fail_again` makes every later call fail."""

    name = "recording"

    def __init__(self, world: World, later: OutboxEntry, *, fail_again: bool = False) -> None:
        self.world, self.later, self.fail_again = world, later, fail_again
        self.calls: list[str] = []

    def deliver(self, entry: OutboxEntry) -> None:
        if self.calls and self.fail_again:
            raise SinkError("recording: throttled", retryable=True)
        if not self.calls:  # the other dispatcher, while this call is in flight
            delivered = {**self.later.to_item(), "status": "delivered", "delivered_sinks": {self.name}}
            del delivered["pending_shard"]
            self.world.put(delivered)
            self.calls.append(self.later.key)
        self.calls.append(entry.key)

    @property
    def value(self) -> str:
        """What the target holds now."""
        return self.calls[-1]


def racing_runtime(world: World, sink: RacingSink) -> Runtime:
    return Runtime(sinks=(sink,), outbox=OutboxTable(world.dynamodb, "outbox"),
                   dead_letters=DeadLetterQueue(world.sqs, world.dlq_url), retry=NO_RETRY_DELAY)


def test_a_later_change_delivered_during_the_sink_call_is_delivered_again_after_it(world):
    qualification = entry()
    world.put(qualification.to_item())
    sink = RacingSink(world, exit_of(qualification))
    result = handle_entry(qualification, racing_runtime(world, sink))
    assert sink.calls == ["r-1#u-1#exit#1", "r-1#u-1#1", "r-1#u-1#exit#1"] and sink.value == "r-1#u-1#exit#1"
    assert result.reasserted is not None and result.reasserted.key == "r-1#u-1#exit#1"
    assert world.item(qualification.key)["status"]["S"] == "delivered"
    assert world.item("r-1#u-1#exit#1")["status"]["S"] == "delivered"


def test_when_that_redelivery_fails_the_later_change_is_pending_again_for_the_reconciler(world):
    qualification, later = entry(), exit_of(entry())
    world.put(qualification.to_item())
    sink = RacingSink(world, later, fail_again=True)
    handle_entry(qualification, racing_runtime(world, sink))
    assert sink.value == qualification.key  # for now the older value is at the target …
    stored = world.item(later.key)
    assert stored["status"]["S"] == "pending" and "delivered_sinks" not in stored
    assert stored["pending_shard"]["S"] == later.to_item()["pending_shard"]  # … and the exit is back in the index
    sink.fail_again = False
    assert handle_entry(later, racing_runtime(world, sink)).delivered == ("recording",)  # what the reconciler does
    assert sink.value == later.key


def test_event_actions_and_changes_with_nothing_later_cost_nothing_more(world):
    plain = entry()
    world.put(plain.to_item())
    outbox = OutboxTable(world.dynamodb, "outbox")
    assert dispatcher.reassert_later(plain, (EventBridgeSink(world.events, "rules"),), outbox) is None
    event_action = OutboxEntry(**{**{name: getattr(plain, name) for name in OutboxEntry.__slots__},
                                  "action": ActionKind.EVENT})
    assert dispatcher.reassert_later(event_action, (EventBridgeSink(world.events, "rules"),), outbox) is None
