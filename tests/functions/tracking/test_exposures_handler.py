"""The exposure Lambda end to end: a documented Pinpoint recommender event in, the documented response out,
one `_custom.recommender` record per (endpoint, item) on a (moto) Kinesis stream, read back and normalised."""

from __future__ import annotations

import copy
import json
from collections import Counter
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from functions.tracking import exposures
from functions.tracking.exposures import ExposureSettings, handle, lambda_handler
from functions.tracking.stream import KinesisWriter, PutRecordsFailed

SCHEDULED_MS = 1_582_743_600_000  # the fixture's ScheduledTime, 2020-02-26T19:00:00Z
CAMPAIGN_ID = "4f8d6097c2e8400fa3081d875example"
DOCUMENTED_ITEMS = {
    "endpointIDexample-1": ["1815", "2009", "1527"],
    "endpointIDexample-2": ["1210", "6542", "4582"],
}
USERS = {"endpointIDexample-1": "SofiaMartínez", "endpointIDexample-2": "AlejandroRosalez"}


@pytest.fixture
def recommender_event(load_json) -> dict[str, Any]:
    return load_json("tracking", "recommender_campaign")


def expected_response(event: dict[str, Any], attribute: str = "RecommendedItems") -> dict[str, Any]:
    """The documented output: the input's endpoint map, each endpoint with its items under Recommendations."""
    endpoints = copy.deepcopy(event["Endpoints"])
    for endpoint_id, items in DOCUMENTED_ITEMS.items():
        endpoints[endpoint_id]["Recommendations"] = {attribute: items}
    return endpoints


def test_pinpoint_invocation_returns_the_documented_response(stream, recommender_event, context):
    original = copy.deepcopy(recommender_event)

    response = lambda_handler(recommender_event, context)

    assert response == expected_response(original)
    # Bare endpoint map, as the documented handler returns it; no other field of an endpoint is touched.
    assert set(response) == set(original["Endpoints"])
    for endpoint_id, definition in response.items():
        assert {k: v for k, v in definition.items() if k != "Recommendations"} == original["Endpoints"][endpoint_id]
    json.dumps(response)  # serialisable as Lambda must return it


def test_one_exposure_per_endpoint_and_item_is_on_the_stream(stream, recommender_event, context):
    lambda_handler(recommender_event, context)

    records = stream.read_all()
    assert len(records) == 2 * 3  # endpoints × items
    pairs = {(r.event.endpoint_id, r.event.item_id) for r in records}
    assert pairs == {(endpoint, item) for endpoint, items in DOCUMENTED_ITEMS.items() for item in items}
    for record in records:
        event = record.event
        endpoint_id = event.endpoint_id
        assert event.event_type == "_custom.recommender"
        assert event.user_id == USERS[endpoint_id]
        assert record.partition_key == USERS[endpoint_id]
        assert event.campaign_id == CAMPAIGN_ID and event.journey_id is None
        assert event.event_time_ms == SCHEDULED_MS
        assert dict(event.attributes) == {
            "personalize_user_id": USERS[endpoint_id],
            "item_id": event.item_id,
            "campaign_id": CAMPAIGN_ID,
            "rank": str(DOCUMENTED_ITEMS[endpoint_id].index(event.item_id) + 1),
        }
        assert event.event_id.startswith("exp-")
        assert b"@example.com" not in record.data  # addresses are never copied
    assert len({r.event.event_id for r in records}) == 6


def test_pinpoint_retrying_the_invocation_writes_the_same_event_ids(stream, recommender_event, context, monkeypatch):
    lambda_handler(copy.deepcopy(recommender_event), context)
    first = Counter(r.event.event_id for r in stream.read_all())
    # Pinpoint's next attempt: a new synchronous invoke (new request id), a few seconds later.
    retry_context = type(context)()
    monkeypatch.setattr(exposures.time, "time_ns", lambda: (SCHEDULED_MS + 20_000) * 1_000_000)
    lambda_handler(copy.deepcopy(recommender_event), retry_context)

    after = Counter(r.event.event_id for r in stream.read_all())
    assert set(after) == set(first)
    assert set(after.values()) == {2}  # every id twice: the consumers' de-duplication collapses them


def test_the_next_run_of_a_recurring_campaign_gets_new_event_ids(stream, recommender_event, context):
    lambda_handler(copy.deepcopy(recommender_event), context)
    first = {r.event.event_id for r in stream.read_all()}
    recommender_event["ScheduledTime"] = "2020-02-27T19:00:00.000Z"
    lambda_handler(recommender_event, type(context)())

    ids = {r.event.event_id for r in stream.read_all()}
    assert len(ids) == 12 and first < ids


def test_journey_invocation_records_the_journey(stream, recommender_event, context):
    del recommender_event["CampaignId"]
    recommender_event["JourneyId"] = "546401670c5547b08811ac6a9example"

    lambda_handler(recommender_event, context)

    records = stream.read_all()
    assert len(records) == 6
    for record in records:
        assert record.event.journey_id == "546401670c5547b08811ac6a9example"
        assert record.event.campaign_id is None
        assert record.event.attributes["journey_id"] == "546401670c5547b08811ac6a9example"
        assert "campaign_id" not in record.event.attributes


def test_endpoints_without_recommendations_are_returned_not_dropped(stream, recommender_event, context):
    without_items = copy.deepcopy(recommender_event["Endpoints"]["endpointIDexample-2"])
    del without_items["RecommendationItems"]
    recommender_event["Endpoints"]["endpoint-no-items"] = without_items
    recommender_event["Endpoints"]["endpoint-empty-items"] = {**without_items, "RecommendationItems": []}
    original = copy.deepcopy(recommender_event)

    response = lambda_handler(recommender_event, context)

    assert set(response) == set(original["Endpoints"])  # four in, four out
    assert response["endpoint-no-items"] == original["Endpoints"]["endpoint-no-items"]
    assert response["endpoint-empty-items"] == original["Endpoints"]["endpoint-empty-items"]
    assert {r.event.endpoint_id for r in stream.read_all()} == set(DOCUMENTED_ITEMS)


def test_endpoint_without_a_user_under_each_provider_id_type(stream, recommender_event, context, monkeypatch):
    del recommender_event["Endpoints"]["endpointIDexample-2"]["User"]

    # Personalize knows users by Pinpoint user id (default): nobody to credit for endpoint 2.
    response = lambda_handler(copy.deepcopy(recommender_event), context)
    assert response["endpointIDexample-2"]["Recommendations"] == {"RecommendedItems": DOCUMENTED_ITEMS[
        "endpointIDexample-2"]}
    assert {r.event.endpoint_id for r in stream.read_all()} == {"endpointIDexample-1"}

    # Personalize knows users by endpoint id: endpoint 2 is its own Personalize user.
    monkeypatch.setenv("RECOMMENDATION_PROVIDER_ID_TYPE", "PINPOINT_ENDPOINT_ID")
    exposures._settings.cache_clear()
    recommender_event["ScheduledTime"] = "2020-02-27T19:00:00.000Z"
    lambda_handler(recommender_event, type(context)())
    second_run = [r for r in stream.read_all() if r.event.event_time_ms != SCHEDULED_MS]
    assert len(second_run) == 6
    for record in second_run:
        assert record.event.attributes["personalize_user_id"] == record.event.endpoint_id
    endpoint_2 = [r for r in second_run if r.event.endpoint_id == "endpointIDexample-2"]
    assert {r.partition_key for r in endpoint_2} == {"endpointIDexample-2"}
    assert {r.event.user_id for r in endpoint_2} == {"endpointIDexample-2"}


def test_recommended_attribute_name_comes_from_the_environment(stream, recommender_event, context, monkeypatch):
    monkeypatch.setenv("RECOMMENDATION_ATTRIBUTE", "ItemIds")
    original = copy.deepcopy(recommender_event)

    assert lambda_handler(recommender_event, context) == expected_response(original, "ItemIds")


def test_generic_entry_point_records_exposures_of_any_sender(stream, context):
    event = {"exposures": [
        {"endpoint_id": "web-u1", "item_id": "sku-1", "user_id": "u1", "campaign_id": "spring-sale",
         "send_id": "msg-1", "event_time_ms": 1_764_000_000_000},
        {"endpoint_id": "web-u1", "item_id": "sku-2", "personalize_user_id": "pu-1", "user_id": "u1",
         "journey_id": "onboarding", "send_id": "msg-1"},
    ]}

    result = lambda_handler(event, context)

    assert result["recorded"] == 2
    records = {r.event.event_id: r for r in stream.read_all()}
    assert set(records) == set(result["event_ids"])
    by_item = {r.event.item_id: r for r in records.values()}
    assert by_item["sku-1"].event.attributes["personalize_user_id"] == "u1"
    assert by_item["sku-1"].event.campaign_id == "spring-sale"
    assert by_item["sku-1"].event.event_time_ms == 1_764_000_000_000
    assert by_item["sku-2"].event.attributes["personalize_user_id"] == "pu-1"
    assert by_item["sku-2"].event.journey_id == "onboarding"
    assert {r.partition_key for r in records.values()} == {"u1"}

    # The same send again (the sender's retry): the same ids.
    assert lambda_handler(event, type(context)())["event_ids"] == result["event_ids"]


def test_generic_entry_point_without_send_id_is_refused_before_anything_is_written(stream, context):
    """A default send id (the request id) would make a caller's retry a new send, counted twice."""
    event = {"exposures": [{"endpoint_id": "e1", "item_id": "i1", "user_id": "u1", "campaign_id": "c1"}]}

    with pytest.raises(ValueError, match=r"exposures\[0\]: give send_id"):
        lambda_handler(event, context)
    assert stream.read_all() == []

    # The call's send_id covers its entries; a retry of the call with a new request id writes the same ids.
    first = lambda_handler({**event, "send_id": "msg-7"}, context)["event_ids"]
    assert lambda_handler({**event, "send_id": "msg-7"}, type(context)())["event_ids"] == first
    assert len({r.event.event_id for r in stream.read_all()}) == 1


def test_generic_entry_point_caps_a_call_at_500_exposures(stream, context):
    entry = {"endpoint_id": "e1", "user_id": "u1", "campaign_id": "c1", "send_id": "s1"}
    with pytest.raises(ValueError, match="501 in one call, more than 500"):
        lambda_handler({"exposures": [{**entry, "item_id": f"i{n}"} for n in range(501)]}, context)
    assert stream.read_all() == []
    assert lambda_handler({"exposures": [{**entry, "item_id": f"i{n}"} for n in range(500)]},
                          context)["recorded"] == 500


@pytest.mark.parametrize("entry, reason", [
    ({"item_id": "i" * 1_001}, "item_id"),
    ({"item_id": "i1", "campaign_id": "c" * 300}, "campaign_id"),
    ({"item_id": "i1", "personalize_user_id": "p" * 1_001}, "personalize_user_id"),
])
def test_an_exposure_the_consumers_would_reject_fails_the_call_naming_it(stream, context, entry, reason):
    """Reported recorded means counted: the function applies the normaliser's own limits."""
    good = {"endpoint_id": "e1", "item_id": "ok", "user_id": "u1", "campaign_id": "c1"}
    with pytest.raises(ValueError, match=r"exposures\[1\]: the stream's consumers would reject it: .*" + reason):
        lambda_handler({"exposures": [good, {**good, **entry}], "send_id": "s1"}, context)
    assert stream.read_all() == []


def test_a_pinpoint_endpoint_whose_exposure_would_be_rejected_is_left_out_and_the_rest_recorded(
        stream, recommender_event, context):
    first = next(iter(recommender_event["Endpoints"].values()))
    first["RecommendationItems"] = ["x" * 300, *first["RecommendationItems"][1:]]

    lambda_handler(recommender_event, context)

    items = {r.event.item_id for r in stream.read_all()}
    assert "x" * 300 not in items and items  # the other exposures were recorded


def test_generic_entry_point_writes_more_than_one_request_worth(stream, context):
    event = {"exposures": [{"endpoint_id": f"e{n % 37}", "item_id": f"i{n}", "user_id": f"u{n % 37}",
                            "campaign_id": "c1", "send_id": "s1"} for n in range(500)]}

    assert lambda_handler(event, context)["recorded"] == 500  # PutRecords takes at most 500 a request
    assert len(stream.read_all()) == 500


@pytest.mark.parametrize(("entry", "message"), [
    ({"item_id": "i1", "user_id": "u1", "campaign_id": "c1"}, "exposures[0].endpoint_id"),
    ({"endpoint_id": "e1", "user_id": "u1", "campaign_id": "c1"}, "exposures[0].item_id"),
    ({"endpoint_id": "e1", "item_id": "i1", "campaign_id": "c1"}, "personalize_user_id or user_id"),
    ({"endpoint_id": "e1", "item_id": "i1", "user_id": "u1"}, "campaign_id, journey_id"),
    ({"endpoint_id": "e1", "item_id": 7, "user_id": "u1", "campaign_id": "c1"}, "exposures[0].item_id"),
    ({"endpoint_id": "e1", "item_id": "i1", "user_id": "u1", "campaign_id": "c1", "event_time_ms": 1_764_000_000},
     "exposures[0].event_time_ms"),
])
def test_generic_entry_point_rejects_bad_input_naming_the_field(stream, context, entry, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        lambda_handler({"exposures": [entry], "send_id": "s1"}, context)
    assert stream.read_all() == []


def test_unrecognised_event_is_an_error(stream, context):
    with pytest.raises(ValueError, match="unrecognised event"):
        lambda_handler({"Records": []}, context)


def test_missing_environment_is_named(context, monkeypatch, recommender_event):
    monkeypatch.delenv("STREAM_ARN", raising=False)
    with pytest.raises(ValueError, match="STREAM_ARN is missing"):
        lambda_handler(recommender_event, context)


# --- PutRecords partial failures, through botocore's Stubber (the real request is validated) --------------

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/engagement-events"


def stubbed_writer(max_attempts: int = 4) -> tuple[KinesisWriter, Stubber, list[float]]:
    client = boto3.client("kinesis", region_name="us-east-1")
    sleeps: list[float] = []
    return KinesisWriter(client, STREAM_ARN, max_attempts=max_attempts, sleep=sleeps.append), Stubber(client), sleeps


def request_for(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"StreamARN": STREAM_ARN, "Records": records}


def results(*codes: str | None) -> dict[str, Any]:
    entries = [{"ErrorCode": code, "ErrorMessage": "Rate exceeded for shard"} if code
               else {"SequenceNumber": f"{n + 1}", "ShardId": "shardId-000000000000"} for n, code in enumerate(codes)]
    failed = sum(code is not None for code in codes)
    return {"Records": entries, **({"FailedRecordCount": failed} if failed else {})}


def capture_request(recommender_event: dict[str, Any], settings: ExposureSettings) -> list[dict[str, Any]]:
    """The PutRecords entries one invocation sends (captured from a writer that accepts everything)."""
    sent: list[dict[str, Any]] = []

    class Accepting:
        def put_records(self, **request):
            sent.extend(request["Records"])
            return {"Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in request["Records"]]}

    handle(copy.deepcopy(recommender_event), settings=settings, writer=KinesisWriter(Accepting(), STREAM_ARN),
           now_ms=SCHEDULED_MS)
    return sent


def test_only_the_failed_records_are_sent_again(recommender_event):
    settings = ExposureSettings(stream_arn=STREAM_ARN)
    entries = capture_request(recommender_event, settings)
    writer, stubber, sleeps = stubbed_writer()
    stubber.add_response("put_records", results(None, "ProvisionedThroughputExceededException", None, None,
                                                "InternalFailure", None), request_for(entries))
    stubber.add_response("put_records", results(None, "ProvisionedThroughputExceededException"),
                         request_for([entries[1], entries[4]]))
    stubber.add_response("put_records", results(None), request_for([entries[4]]))

    with stubber:
        response = handle(copy.deepcopy(recommender_event), settings=settings, writer=writer,
                          now_ms=SCHEDULED_MS)

    stubber.assert_no_pending_responses()
    assert response == expected_response(recommender_event)
    assert sleeps == [0.1, 0.2]


def test_records_still_failing_make_the_invocation_fail(recommender_event):
    settings = ExposureSettings(stream_arn=STREAM_ARN)
    entries = capture_request(recommender_event, settings)
    writer, stubber, sleeps = stubbed_writer(max_attempts=3)
    stubber.add_response("put_records", results(None, None, "InternalFailure", None, None, None),
                         request_for(entries))
    for _ in range(2):
        stubber.add_response("put_records", results("InternalFailure"), request_for([entries[2]]))

    with stubber, pytest.raises(PutRecordsFailed, match="1 record.*after 3 PutRecords attempts.*InternalFailure"):
        handle(copy.deepcopy(recommender_event), settings=settings, writer=writer,
               now_ms=SCHEDULED_MS)

    stubber.assert_no_pending_responses()  # bounded: exactly three attempts
    assert sleeps == [0.1, 0.2]
