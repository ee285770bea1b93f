"""Exposures as pure logic: identity and determinism of event ids, the Pinpoint response, the send occasion,
and the function's settings."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode
from functions.events.normalise import normalise
from functions.tracking.exposures import (
    MAX_RESPONSE_BYTES,
    SEND_WINDOW_MS,
    Exposure,
    ExposureSettings,
    ProviderIdType,
    RecommenderRequest,
    check_response_size,
    pinpoint_exposures,
    recommender_response,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "tracking" / "recommender_campaign.json"
NOW = 1_764_000_000_000


@pytest.fixture
def event() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


def exposure(**changes) -> Exposure:
    base = dict(endpoint_id="e1", item_id="i1", personalize_user_id="u1", user_id="u1", campaign_id="c1",
                send_id="s1", event_time_ms=NOW, rank=1)
    return Exposure(**{**base, **changes})


@pytest.mark.parametrize("field, value", [
    ("endpoint_id", "e2"), ("item_id", "i2"), ("campaign_id", "c2"), ("journey_id", "j1"), ("send_id", "s2"),
])
def test_event_id_depends_on_what_identifies_the_exposure(field, value):
    assert exposure(**{field: value}).event_id != exposure().event_id


@pytest.mark.parametrize("field, value", [
    ("event_time_ms", NOW + 5_000), ("rank", 3), ("user_id", None), ("personalize_user_id", "pu-9"),
])
def test_event_id_ignores_what_a_retry_may_change(field, value):
    assert exposure(**{field: value}).event_id == exposure().event_id


def test_the_stream_record_normalises_to_the_exposure_in_either_identity_mode():
    exposed = exposure(user_id=None, personalize_user_id="e1", endpoint_id="e1", journey_id="j1")
    data = exposed.to_stream_record().data
    for mode in IdentityMode:
        event = normalise(data, identity_mode=mode, arrival_time_ms=NOW + 40)
        assert event == CanonicalEvent(
            event_id=exposed.event_id, source=EventSource.APP, event_type="_custom.recommender",
            event_time_ms=NOW, arrival_time_ms=NOW + 40, user_id="e1", endpoint_id="e1", campaign_id="c1",
            journey_id="j1", item_id="i1",
            attributes={"personalize_user_id": "e1", "item_id": "i1", "campaign_id": "c1", "journey_id": "j1",
                        "rank": "1"})
    assert exposed.to_stream_record().partition_key == "e1"


@pytest.mark.parametrize("changes, message", [
    ({"campaign_id": None}, "campaign_id, journey_id"),
    ({"item_id": ""}, "item_id"),
    ({"personalize_user_id": None}, "personalize_user_id"),
    ({"event_time_ms": 1_764_000_000}, "event_time_ms"),
    ({"rank": 0}, "rank"),
    ({"user_id": ""}, "user_id"),
])
def test_invalid_exposures_are_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        exposure(**changes)


def test_response_caps_items_at_five_and_keeps_other_recommendations(event):
    definition = event["Endpoints"]["endpointIDexample-1"]
    definition["RecommendationItems"] = [f"i{n}" for n in range(7)]
    definition["Recommendations"] = {"Title": ["a"]}

    response = recommender_response(RecommenderRequest.parse(event), "Items")

    assert response["endpointIDexample-1"]["Recommendations"] == {"Title": ["a"], "Items": [f"i{n}" for n in range(5)]}
    assert len(pinpoint_exposures(RecommenderRequest.parse(event), ProviderIdType.PINPOINT_USER_ID,
                                  now_ms=NOW).exposures) == 5 + 3


def test_malformed_endpoints_pass_through_without_exposures(event):
    event["Endpoints"]["odd"] = "not an object"
    event["Endpoints"]["bad-items"] = {"RecommendationItems": ["ok", 7]}
    request = RecommenderRequest.parse(event)

    response = recommender_response(request, "Items")
    found = pinpoint_exposures(request, ProviderIdType.PINPOINT_USER_ID, now_ms=NOW)

    assert response["odd"] == "not an object" and response["bad-items"] == {"RecommendationItems": ["ok", 7]}
    assert {e.endpoint_id for e in found.exposures} == {"endpointIDexample-1", "endpointIDexample-2"}
    assert found.without_items == 2


def test_without_campaign_or_journey_nothing_is_recorded_but_the_response_stands(event):
    del event["CampaignId"]
    request = RecommenderRequest.parse(event)
    assert pinpoint_exposures(request, ProviderIdType.PINPOINT_USER_ID, now_ms=NOW).exposures == ()
    assert set(recommender_response(request, "Items")) == set(event["Endpoints"])


def test_send_id_with_scheduled_time_ignores_the_clock(event):
    request = RecommenderRequest.parse(event)
    assert request.send_id(NOW) == request.send_id(NOW + 10 * SEND_WINDOW_MS)
    later_run = RecommenderRequest.parse({**event, "ScheduledTime": "2020-02-26T20:00:00Z"})
    assert later_run.send_id(NOW) != request.send_id(NOW)
    other_treatment = RecommenderRequest.parse({**event, "TreatmentId": "1"})
    assert other_treatment.send_id(NOW) != request.send_id(NOW)


def test_send_id_without_scheduled_time_is_the_invocation_window(event):
    del event["ScheduledTime"]
    request = RecommenderRequest.parse(event)
    window_start = (NOW // SEND_WINDOW_MS) * SEND_WINDOW_MS
    assert request.send_id(window_start) == request.send_id(window_start + SEND_WINDOW_MS - 1)
    assert request.send_id(window_start) != request.send_id(window_start + SEND_WINDOW_MS)
    assert pinpoint_exposures(request, ProviderIdType.PINPOINT_USER_ID, now_ms=NOW).exposures[0].event_time_ms == NOW


def test_unparseable_scheduled_time_still_gives_stable_ids(event):
    event["ScheduledTime"] = "soon"
    request = RecommenderRequest.parse(event)
    assert request.scheduled_time_ms is None
    assert request.send_id(NOW) == request.send_id(NOW + 10 * SEND_WINDOW_MS)


def test_endpoints_must_be_an_object():
    with pytest.raises(ValueError, match="Endpoints must be an object"):
        RecommenderRequest.parse({"Endpoints": ["e1"]})


def test_a_response_pinpoint_could_not_accept_is_refused():
    check_response_size({"e": "x" * (MAX_RESPONSE_BYTES - 100)})
    with pytest.raises(ValueError, match="over the 6291456 Pinpoint accepts"):
        check_response_size({"e": "x" * MAX_RESPONSE_BYTES})


def test_settings_from_env_defaults_and_choices():
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/engagement-events"
    assert ExposureSettings.from_env({"STREAM_ARN": arn}) == ExposureSettings(stream_arn=arn)
    settings = ExposureSettings.from_env({"STREAM_ARN": arn, "RECOMMENDATION_ATTRIBUTE": "Item_Ids-2",
                                          "RECOMMENDATION_PROVIDER_ID_TYPE": "PINPOINT_ENDPOINT_ID"})
    assert settings.recommendation_attribute == "Item_Ids-2"
    assert settings.provider_id_type is ProviderIdType.PINPOINT_ENDPOINT_ID


def test_settings_from_env_names_every_problem():
    with pytest.raises(ValueError) as raised:
        ExposureSettings.from_env({"RECOMMENDATION_ATTRIBUTE": "_bad name", "RECOMMENDATION_PROVIDER_ID_TYPE": "X"})
    message = str(raised.value)
    assert "STREAM_ARN is missing" in message
    assert "RECOMMENDATION_ATTRIBUTE='_bad name'" in message
    assert "RECOMMENDATION_PROVIDER_ID_TYPE='X'" in message and "PINPOINT_ENDPOINT_ID" in message
    with pytest.raises(ValueError, match="not a Kinesis stream ARN"):
        ExposureSettings.from_env({"STREAM_ARN": "engagement-events"})


def test_settings_are_frozen():
    settings = ExposureSettings(stream_arn="arn:aws:kinesis:eu-west-1:123456789012:stream/s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.stream_arn = "x"  # type: ignore[misc]
