"""The profile object sink's real boto3 calls through botocore's Stubber (moto has no Customer Profiles; the
Stubber validates every request against the service's API model and checks the exact parameters), and the
object it writes, field by field and as the exact JSON string."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber

from functions.rules.model import ActionKind
from functions.rules.outbox import Change, OutboxEntry
from functions.rules.profile_objects import (
    MAX_OBJECT_CHARS,
    PROFILE_CREATED,
    ProfileObjectSink,
    UnknownUsers,
    object_json,
    profile_object,
)
from functions.rules.sinks import CustomerProfilesSink, Delivered, SinkError
from tests.functions.rules import test_sinks as sink_tests

REGION = "us-east-1"
DOMAIN = "engagement"
OBJECT_TYPE = "EngagementLoopQualification"
EVENT_TIME_MS = 1_764_000_000_123  # 2025-11-24T16:00:00.123Z
NO_RETRIES = Config(retries={"total_max_attempts": 1})
QUALIFIED_JSON = ('{"outbox_key":"r-1#u-1#1","user_id":"u-1","rule_id":"r-1","action_name":"purchase_vip",'
                  '"action":"attribute","change":"qualified","value":"ready",'
                  '"event_time":"2025-11-24T16:00:00.123+00:00","event_id":"evt-9"}')
"""Written out by hand: what the object type's field mappings read (`_source.<field>`)."""


def entry(*, action: ActionKind = ActionKind.ATTRIBUTE, change: Change = Change.QUALIFIED, user: str = "u-1",
          name: str = "purchase_vip", event_id: str = "evt-9") -> OutboxEntry:
    value = "ready" if action is ActionKind.ATTRIBUTE and change is Change.QUALIFIED else None
    key = f"r-1#{user}#1" if change is Change.QUALIFIED else f"r-1#{user}#exit#1"
    return OutboxEntry(key=key, change=change, rule_id="r-1", user_id=user, action=action, name=name, value=value,
                       event_id=event_id, event_time_ms=EVENT_TIME_MS, created_ms=EVENT_TIME_MS + 50)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)


profiles = sink_tests.profiles  # the Stubber-wrapped client fixture the attribute sink's tests use


def expect_search(stub: Stubber, *ids: str, key: str = "_account", user: str = "u-1",
                  next_token: str | None = None) -> None:
    response: dict[str, Any] = {"Items": [{"ProfileId": profile_id, "AccountNumber": user} for profile_id in ids]}
    if next_token:
        response["NextToken"] = next_token
    stub.add_response("search_profiles", response, {"DomainName": DOMAIN, "KeyName": key, "Values": [user]})


def expect_put(stub: Stubber, document: str, object_type: str = OBJECT_TYPE) -> None:
    stub.add_response("put_profile_object", {"ProfileObjectUniqueKey": "generated-by-the-service"},
                      {"DomainName": DOMAIN, "ObjectTypeName": object_type, "Object": document})


# --- The object -------------------------------------------------------------------------------------------


def test_the_object_has_exactly_the_contract_fields_as_strings():
    assert profile_object(entry()) == {
        "outbox_key": "r-1#u-1#1", "user_id": "u-1", "rule_id": "r-1", "action_name": "purchase_vip",
        "action": "attribute", "change": "qualified", "value": "ready",
        "event_time": "2025-11-24T16:00:00.123+00:00", "event_id": "evt-9"}
    exited = profile_object(entry(change=Change.EXITED, event_id=""))
    assert (exited["outbox_key"], exited["change"], exited["value"], exited["event_id"]) == (
        "r-1#u-1#exit#1", "exited", "", "")
    fired = profile_object(entry(action=ActionKind.EVENT, name="trk_purchase"))
    assert (fired["action"], fired["action_name"], fired["value"]) == ("event", "trk_purchase", "")
    assert all(isinstance(value, str) for value in fired.values())


def test_the_object_json_is_compact_and_exact():
    assert object_json(entry()) == QUALIFIED_JSON
    assert json.loads(object_json(entry())) == profile_object(entry())


# --- Delivery ---------------------------------------------------------------------------------------------


def test_one_profile_gets_the_object(profiles):
    client, stub = profiles
    expect_search(stub, "p-1")
    expect_put(stub, QUALIFIED_JSON)
    assert ProfileObjectSink(client, DOMAIN, OBJECT_TYPE).deliver(entry()) is None


def test_a_custom_key_and_object_type_are_used(profiles):
    client, stub = profiles
    expect_search(stub, "p-1", key="user_id")
    expect_put(stub, QUALIFIED_JSON, object_type="Qualified-2")
    assert ProfileObjectSink(client, DOMAIN, "Qualified-2", "user_id").deliver(entry()) is None


def test_skip_mode_without_a_profile_searches_only_and_says_why(profiles):
    client, stub = profiles
    expect_search(stub)
    reason = ProfileObjectSink(client, DOMAIN, OBJECT_TYPE, unknown_users=UnknownUsers.SKIP).deliver(entry())
    assert reason == f"no profile with _account = 'u-1' in domain {DOMAIN} (unknown users are skipped)"


def test_create_mode_without_a_profile_puts_the_object_and_reports_the_profile_created(profiles):
    client, stub = profiles
    expect_search(stub)
    expect_put(stub, QUALIFIED_JSON)
    sink = ProfileObjectSink(client, DOMAIN, OBJECT_TYPE, unknown_users=UnknownUsers("create"))
    assert sink.deliver(entry()) == Delivered(PROFILE_CREATED)


@pytest.mark.parametrize("mode", list(UnknownUsers))
def test_two_profiles_sharing_the_key_are_skipped_with_a_request_to_merge_them(profiles, mode):
    client, stub = profiles
    expect_search(stub, "p-1", "p-2", next_token="more")  # two are enough: the next page is never read
    reason = ProfileObjectSink(client, DOMAIN, OBJECT_TYPE, unknown_users=mode).deliver(entry())
    assert isinstance(reason, str) and "several profiles have _account = 'u-1'" in reason
    assert "merge" in reason and "ambiguous" in reason


def test_profiles_on_two_pages_are_ambiguous_too(profiles):
    client, stub = profiles
    expect_search(stub, "p-1", next_token="t2")
    stub.add_response("search_profiles", {"Items": [{"ProfileId": "p-2"}]},
                      {"DomainName": DOMAIN, "KeyName": "_account", "Values": ["u-1"], "NextToken": "t2"})
    assert "several profiles" in ProfileObjectSink(client, DOMAIN, OBJECT_TYPE).deliver(entry())


@pytest.mark.parametrize("operation", ["search_profiles", "put_profile_object"])
def test_throttling_is_retryable(profiles, operation):
    client, stub = profiles
    if operation == "put_profile_object":
        expect_search(stub, "p-1")
    stub.add_client_error(operation, "ThrottlingException", "Rate exceeded", 429)
    with pytest.raises(SinkError, match="customer_profiles_objects: .* failed: ThrottlingException") as raised:
        ProfileObjectSink(client, DOMAIN, OBJECT_TYPE).deliver(entry())
    assert raised.value.retryable and raised.value.code == "ThrottlingException"


def test_a_service_fault_is_retryable_and_a_bad_request_is_not(profiles):
    client, stub = profiles
    sink = ProfileObjectSink(client, DOMAIN, OBJECT_TYPE)
    expect_search(stub, "p-1")
    stub.add_client_error("put_profile_object", "InternalServerException", "oops", 500)
    with pytest.raises(SinkError) as faulted:
        sink.deliver(entry())
    expect_search(stub, "p-1")
    stub.add_client_error("put_profile_object", "BadRequestException", "no such object type", 400)
    with pytest.raises(SinkError, match="BadRequestException: no such object type") as refused:
        sink.deliver(entry())
    assert faulted.value.retryable and not refused.value.retryable


def test_an_object_over_the_limit_is_refused_before_any_call_naming_the_key(profiles):
    client, _ = profiles  # no response queued: any call would fail the Stubber
    # 256,000 characters of name and value: the other fields take the JSON over the limit.
    huge = OutboxEntry(**{**{name: getattr(entry(), name) for name in OutboxEntry.__slots__},
                          "name": "n" * 128_000, "value": "v" * 128_000})
    assert len(object_json(huge)) > MAX_OBJECT_CHARS
    message = r"the object of r-1#u-1#1 has 256,\d{3} characters; PutProfileObject takes at most 256,000"
    with pytest.raises(SinkError, match=message) as raised:
        ProfileObjectSink(client, DOMAIN, OBJECT_TYPE).deliver(huge)
    assert not raised.value.retryable


def test_an_object_at_the_limit_is_put(profiles):
    client, stub = profiles
    base = len(object_json(entry(name="")))
    exact = OutboxEntry(**{**{name: getattr(entry(), name) for name in OutboxEntry.__slots__},
                           "name": "n" * (MAX_OBJECT_CHARS - base)})
    assert len(object_json(exact)) == MAX_OBJECT_CHARS
    expect_search(stub, "p-1")
    expect_put(stub, object_json(exact))
    assert ProfileObjectSink(client, DOMAIN, OBJECT_TYPE).deliver(exact) is None


def test_both_customer_profiles_sinks_find_profiles_the_same_way(profiles):
    """One lookup helper: the attribute sink and the object sink send the same SearchProfiles request."""
    client, stub = profiles
    expect_search(stub, "p-1", key="user_id")
    stub.add_response("update_profile", {"ProfileId": "p-1"},
                      {"DomainName": DOMAIN, "ProfileId": "p-1", "Attributes": {"purchase_vip": "ready"}})
    expect_search(stub, "p-1", key="user_id")
    expect_put(stub, QUALIFIED_JSON)
    assert CustomerProfilesSink(client, DOMAIN, "user_id").deliver(entry()) is None
    assert ProfileObjectSink(client, DOMAIN, OBJECT_TYPE, "user_id").deliver(entry()) is None


def test_only_the_object_sink_is_not_last_writer_wins():
    from functions.rules.sinks import EventBridgeSink, PinpointSink

    assert (EventBridgeSink.last_writer_wins, PinpointSink.last_writer_wins,
            CustomerProfilesSink.last_writer_wins) == (True, True, True)
    assert ProfileObjectSink.last_writer_wins is False
    assert ProfileObjectSink.name == "customer_profiles_objects"


@pytest.mark.parametrize("mode", list(UnknownUsers))
def test_a_user_id_longer_than_a_search_key_is_skipped_by_both_sinks_without_a_call(mode):
    # The stream takes user ids up to 256 bytes; SearchProfiles values (and so profile keys) at most 255
    # characters. botocore's validator does not check list members' maximum, so Stubber alone would not catch it:
    # no response is queued, and any call would fail the test.
    from functions.rules.sinks import CustomerProfilesSink

    long_entry = replace(entry(), user_id="u" * 256)
    client = boto3.client("customer-profiles", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    with Stubber(client) as stub:
        for sink in (ProfileObjectSink(client, "d", "T", "_account", mode), CustomerProfilesSink(client, "d")):
            reason = sink.deliver(long_entry)
            assert isinstance(reason, str) and "has 256 characters" in reason and "at most 255" in reason
        stub.assert_no_pending_responses()


def test_in_create_mode_an_exit_without_a_profile_creates_none_and_waits_for_the_one_on_its_way(profiles):
    # The exit's qualification put an object that creates the profile; matching may still be under way.
    from functions.rules.sinks import NotYet

    client, stub = profiles
    exit_entry = entry(change=Change.EXITED)
    stub.add_response("search_profiles", {"Items": []},
                      {"DomainName": "d", "KeyName": "_account", "Values": [exit_entry.user_id]})
    reason = ProfileObjectSink(client, "d", "T", "_account", UnknownUsers.CREATE).deliver(exit_entry)
    assert isinstance(reason, NotYet) and "to record the exit on" in reason.reason  # no put queued: none made
