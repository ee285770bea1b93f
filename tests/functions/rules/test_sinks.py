"""The action sinks' real boto3 calls: EventBridge against moto (bus → rule → SQS, to read what was
published), Pinpoint and Customer Profiles against botocore's Stubber (moto does not implement them; the
Stubber checks every request against the service's API model and the exact parameters we expect)."""

from __future__ import annotations

import json
from typing import Any, Iterator

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws

from functions.rules.outbox import Change, OutboxEntry
from functions.rules.model import ActionKind
from functions.rules.sinks import CustomerProfilesSink, EventBridgeSink, PinpointSink, SinkError

REGION = "us-east-1"
APP_ID = "6e0b7591a90841d2b5d93fa11143e5a7"
DOMAIN = "engagement"
EVENT_TIME_MS = 1_764_000_000_123  # 2025-11-24T16:00:00.123Z
NO_RETRIES = Config(retries={"total_max_attempts": 1})


def entry(*, action: ActionKind = ActionKind.ATTRIBUTE, change: Change = Change.QUALIFIED, user: str = "u-1",
          name: str = "purchase_vip", sequence: int = 1) -> OutboxEntry:
    value = "ready" if action is ActionKind.ATTRIBUTE and change is Change.QUALIFIED else None
    key = f"r-1#{user}#{sequence}" if change is Change.QUALIFIED else f"r-1#{user}#exit#{sequence}"
    return OutboxEntry(key=key, change=change, rule_id="r-1", user_id=user, action=action, name=name, value=value,
                       event_id="evt-9", event_time_ms=EVENT_TIME_MS, created_ms=EVENT_TIME_MS + 50)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)


# --- EventBridge ------------------------------------------------------------------------------------------


@pytest.fixture
def bus() -> Iterator[tuple[Any, Any, str]]:
    """(events client, sqs client, URL of a queue receiving every engine event on bus `rules`)."""
    with mock_aws():
        events, sqs = boto3.client("events"), boto3.client("sqs")
        events.create_event_bus(Name="rules")
        url = sqs.create_queue(QueueName="engine-events")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="all", EventBusName="rules", EventPattern=json.dumps({"source": ["engagement-loop.rules"]}))
        events.put_targets(Rule="all", EventBusName="rules", Targets=[{"Id": "queue", "Arn": arn}])
        yield events, sqs, url


def received(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_eventbridge_publishes_qualified_and_exited_with_the_entry_as_detail(bus):
    events, sqs, url = bus
    sink = EventBridgeSink(events, "rules")
    assert sink.deliver(entry()) is None
    assert sink.deliver(entry(change=Change.EXITED)) is None
    first, second = received(sqs, url)
    assert (first["source"], first["detail-type"], second["detail-type"]) == (
        "engagement-loop.rules", "RuleQualified", "RuleExited")
    assert first["detail"] == {"rule_id": "r-1", "user_id": "u-1", "action": "attribute", "name": "purchase_vip",
                               "value": "ready", "event_time_ms": EVENT_TIME_MS, "event_id": "evt-9",
                               "key": "r-1#u-1#1"}
    assert second["detail"]["key"] == "r-1#u-1#exit#1" and second["detail"]["value"] is None


def test_eventbridge_missing_bus_is_a_permanent_failure(bus):
    events, _, _ = bus
    with pytest.raises(SinkError, match="ResourceNotFoundException") as raised:
        EventBridgeSink(events, "no-such-bus").deliver(entry())
    assert not raised.value.retryable


@pytest.mark.parametrize(("code", "retryable"), [("ThrottlingException", True), ("MalformedDetail", False)])
def test_eventbridge_refused_entry_raises_even_though_the_call_succeeded(code, retryable):
    client = boto3.client("events", region_name=REGION, config=NO_RETRIES)
    with Stubber(client) as stub:
        stub.add_response("put_events", {"FailedEntryCount": 1, "Entries": [{"ErrorCode": code, "ErrorMessage": "no"}]})
        with pytest.raises(SinkError, match=code) as raised:
            EventBridgeSink(client, "rules").deliver(entry())
    assert raised.value.retryable is retryable


# --- Pinpoint ---------------------------------------------------------------------------------------------


@pytest.fixture
def pinpoint() -> Iterator[tuple[PinpointSink, Stubber]]:
    client = boto3.client("pinpoint", region_name=REGION, config=NO_RETRIES)
    with Stubber(client) as stub:
        yield PinpointSink(client, APP_ID), stub
        stub.assert_no_pending_responses()


def endpoints_response(*ids: str) -> dict[str, Any]:
    return {"EndpointsResponse": {"Item": [
        {"Id": endpoint_id, "ChannelType": "EMAIL", "Address": "someone@example.com", "OptOut": "ALL",
         "User": {"UserId": "u-1"}} for endpoint_id in ids]}}


def expect_user_endpoints(stub: Stubber, *ids: str) -> None:
    stub.add_response("get_user_endpoints", endpoints_response(*ids), {"ApplicationId": APP_ID, "UserId": "u-1"})


def expect_update(stub: Stubber, endpoint_id: str, values: list[str]) -> None:
    # Exactly this request: no ChannelType, Address or OptOut, so an opted-out endpoint stays opted out.
    stub.add_response("update_endpoint", {"MessageBody": {"Message": "Accepted", "RequestID": "r"}}, {
        "ApplicationId": APP_ID, "EndpointId": endpoint_id,
        "EndpointRequest": {"User": {"UserId": "u-1", "UserAttributes": {"purchase_vip": values}}}})


def test_pinpoint_attribute_is_set_to_ready_on_every_endpoint_of_the_user(pinpoint):
    sink, stub = pinpoint
    expect_user_endpoints(stub, "ep-email", "ep-push")
    expect_update(stub, "ep-email", ["ready"])
    expect_update(stub, "ep-push", ["ready"])
    assert sink.deliver(entry()) is None


def test_pinpoint_exit_clears_the_attribute_values(pinpoint):
    sink, stub = pinpoint
    expect_user_endpoints(stub, "ep-email")
    expect_update(stub, "ep-email", [])
    assert sink.deliver(entry(change=Change.EXITED)) is None


def test_pinpoint_user_without_endpoints_is_skipped_with_a_reason(pinpoint):
    sink, stub = pinpoint
    stub.add_client_error("get_user_endpoints", "NotFoundException", "Resource not found", 404,
                          expected_params={"ApplicationId": APP_ID, "UserId": "u-1"})
    assert sink.deliver(entry()) == f"user 'u-1' has no endpoints in Pinpoint project {APP_ID}"


def test_pinpoint_event_action_records_the_trk_event_keyed_by_the_outbox_key(pinpoint):
    sink, stub = pinpoint
    expect_user_endpoints(stub, "ep-email", "ep-push")
    event = {"EventType": "trk_purchase", "Timestamp": "2025-11-24T16:00:00.123+00:00",
             "Attributes": {"rule_id": "r-1", "outbox_key": "r-1#u-1#2"}}
    stub.add_response(
        "put_events",
        {"EventsResponse": {"Results": {
            endpoint_id: {"EndpointItemResponse": {"StatusCode": 202, "Message": "Accepted"},
                          "EventsItemResponse": {"r-1#u-1#2": {"StatusCode": 202, "Message": "Accepted"}}}
            for endpoint_id in ("ep-email", "ep-push")}}},
        {"ApplicationId": APP_ID, "EventsRequest": {"BatchItem": {
            endpoint_id: {"Endpoint": {}, "Events": {"r-1#u-1#2": event}} for endpoint_id in ("ep-email", "ep-push")}}},
    )
    assert sink.deliver(entry(action=ActionKind.EVENT, name="trk_purchase", sequence=2)) is None


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (400, False)])
def test_pinpoint_event_refused_inside_an_accepted_call_raises(pinpoint, status, retryable):
    sink, stub = pinpoint
    expect_user_endpoints(stub, "ep-email")
    stub.add_response("put_events", {"EventsResponse": {"Results": {"ep-email": {
        "EndpointItemResponse": {"StatusCode": 202},
        "EventsItemResponse": {"r-1#u-1#1": {"StatusCode": status, "Message": "refused"}}}}}})
    with pytest.raises(SinkError, match=f"ep-email event r-1#u-1#1: {status} refused") as raised:
        sink.deliver(entry(action=ActionKind.EVENT, name="trk_purchase"))
    assert raised.value.retryable is retryable


def test_pinpoint_throttling_is_retryable_and_a_bad_request_is_not(pinpoint):
    sink, stub = pinpoint
    expect_user_endpoints(stub, "ep-email")
    stub.add_client_error("update_endpoint", "TooManyRequestsException", "slow down", 429)
    with pytest.raises(SinkError) as throttled:
        sink.deliver(entry())
    stub.add_client_error("get_user_endpoints", "BadRequestException", "no such project", 400)
    with pytest.raises(SinkError, match="BadRequestException") as refused:
        sink.deliver(entry())
    assert throttled.value.retryable and not refused.value.retryable


# --- Customer Profiles ------------------------------------------------------------------------------------


@pytest.fixture
def profiles() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("customer-profiles", region_name=REGION, config=NO_RETRIES)
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def expect_update_profile(stub: Stubber, profile_id: str, value: str, name: str = "purchase_vip") -> None:
    stub.add_response("update_profile", {"ProfileId": profile_id},
                      {"DomainName": DOMAIN, "ProfileId": profile_id, "Attributes": {name: value}})


def test_profiles_found_by_account_number_get_the_attribute_across_result_pages(profiles):
    client, stub = profiles
    search = {"DomainName": DOMAIN, "KeyName": "_account", "Values": ["u-1"]}
    stub.add_response("search_profiles", {"Items": [{"ProfileId": "p-1"}], "NextToken": "t2"}, search)
    stub.add_response("search_profiles", {"Items": [{"ProfileId": "p-2"}]}, {**search, "NextToken": "t2"})
    expect_update_profile(stub, "p-1", "ready")
    expect_update_profile(stub, "p-2", "ready")
    assert CustomerProfilesSink(client, DOMAIN).deliver(entry()) is None


def test_profiles_exit_removes_the_value_and_an_event_stores_its_time(profiles):
    client, stub = profiles
    search = {"DomainName": DOMAIN, "KeyName": "user_id", "Values": ["u-1"]}
    sink = CustomerProfilesSink(client, DOMAIN, "user_id")
    stub.add_response("search_profiles", {"Items": [{"ProfileId": "p-1"}]}, search)
    expect_update_profile(stub, "p-1", "")
    stub.add_response("search_profiles", {"Items": [{"ProfileId": "p-1"}]}, search)
    expect_update_profile(stub, "p-1", "2025-11-24T16:00:00.123+00:00", name="trk_purchase")
    assert sink.deliver(entry(change=Change.EXITED)) is None
    assert sink.deliver(entry(action=ActionKind.EVENT, name="trk_purchase")) is None


def test_profiles_unknown_user_is_skipped_and_throttling_is_retryable(profiles):
    client, stub = profiles
    sink = CustomerProfilesSink(client, DOMAIN)
    stub.add_response("search_profiles", {"Items": []})
    assert sink.deliver(entry()) == f"no profile with _account = 'u-1' in domain {DOMAIN}"
    stub.add_client_error("search_profiles", "ThrottlingException", "slow down", 429)
    with pytest.raises(SinkError) as raised:
        sink.deliver(entry())
    assert raised.value.retryable


def test_a_connection_failure_is_a_retryable_sink_error():
    from botocore.exceptions import EndpointConnectionError

    class Unreachable:
        def put_events(self, **_: Any) -> dict[str, Any]:
            raise EndpointConnectionError(endpoint_url="https://events.us-east-1.amazonaws.com")

    with pytest.raises(SinkError, match="Could not connect") as raised:
        EventBridgeSink(Unreachable(), "rules").deliver(entry())
    assert raised.value.retryable
