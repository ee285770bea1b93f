"""SES v2 configuration-set events (EventBridge envelope, SES's documented record shapes) → canonical events."""

from __future__ import annotations

import json
import re

import pytest

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode, Rejected
from functions.events.normalise import normalise

USER = IdentityMode.USER
USER_OR_ENDPOINT = IdentityMode.USER_OR_ENDPOINT
T = 1_795_165_200_000  # 2026-11-20T09:00:00Z; the fixtures' message was sent at T + 120 ms
MESSAGE_ID = "010001922b3c4d5e-6f7a8b9c-0d1e-2f3a-4b5c-6d7e8f9a0b1c-000000"

# fixture → (event_type, event_time_ms, arrival_time_ms, user_id, endpoint_id, campaign_id, item_id)
# (user_id under user_or_endpoint)
EXPECTED = {
    "send": ("_email.send", T + 120, T + 1_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"),
    "delivery": ("_email.delivered", T + 3_410, T + 4_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"),
    "open": ("_email.open", T + 4_507_652, T + 4_509_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"),
    # The link tag names the item behind the clicked link.
    "click": ("_email.click", T + 4_558_570, T + 4_560_000, "user-42", "ep-42", "cmp-2026-11", "sku-981"),
    "bounce_permanent": (
        "_email.hardbounce", T + 4_669, T + 5_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"
    ),
    "bounce_transient": (
        "_email.softbounce", T + 1_804_001, T + 1_805_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"
    ),
    "complaint": (
        "_email.complaint", T + 82_802_669, T + 82_803_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"
    ),
    # Reject and rendering failure carry no time of their own: the send time stands in.
    "reject": ("_email.rejected", T + 120, T + 1_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"),
    "rendering_failure": ("_email.rendering_failure", T + 120, T + 1_000, None, None, None, None),
    "delivery_delay": ("_email.delivery_delay", T + 640_095, T + 641_000, "ep-77", "ep-77", None, None),
    "subscription": (
        "_email.unsubscribe", T + 165_617_910, T + 165_618_000, "user-42", "ep-42", "cmp-2026-11", "item-newsletter"
    ),
}


def parse(record: dict, mode: IdentityMode = USER_OR_ENDPOINT) -> CanonicalEvent:
    result = normalise(json.dumps(record), identity_mode=mode)
    assert isinstance(result, CanonicalEvent), result
    return result


def reject(record: dict) -> str:
    result = normalise(json.dumps(record), identity_mode=USER)
    assert isinstance(result, Rejected), result
    return result.reason


def test_every_fixture_has_an_expectation(fixtures_dir):
    assert sorted(path.stem for path in (fixtures_dir / "ses").glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_maps_to_canonical_fields(load, name):
    event_type, event_time, arrival_time, user_id, endpoint_id, campaign_id, item_id = EXPECTED[name]

    event = parse(load("ses", name))

    assert event.source is EventSource.SES
    assert event.event_type == event_type
    assert event.event_time_ms == event_time
    assert event.arrival_time_ms == arrival_time
    assert event.user_id == user_id
    assert event.endpoint_id == endpoint_id
    assert event.campaign_id == campaign_id
    assert event.item_id == item_id
    assert event.journey_id is None
    assert event.attributes["message_id"] == MESSAGE_ID
    assert event.attributes["configuration_set"] == "engagement"
    assert re.fullmatch(r"ses-[0-9a-f]{64}", event.event_id)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_address_reaches_the_canonical_event(load, addresses_in, name):
    raw = load("ses", name)
    assert addresses_in(json.dumps(raw)), "the fixture should carry addresses to drop"

    assert addresses_in(parse(raw).to_json()) == []


def test_only_user_or_endpoint_mode_falls_back_to_the_endpoint_tag(load):
    assert parse(load("ses", "delivery_delay"), USER).user_id is None
    assert parse(load("ses", "delivery_delay"), USER_OR_ENDPOINT).user_id == "ep-77"
    assert parse(load("ses", "open"), USER).user_id == "user-42"


def test_custom_tags_become_attributes_but_ses_tags_and_identity_tags_do_not(load):
    event = parse(load("ses", "open"))

    assert dict(event.attributes) == {
        "segment": "vip",
        "campaign_id": "cmp-2026-11",
        "item_id": "item-newsletter",
        "message_id": MESSAGE_ID,
        "configuration_set": "engagement",
    }


def test_event_specific_facts_become_attributes(load):
    assert parse(load("ses", "bounce_permanent")).attributes["bounce_sub_type"] == "General"
    assert parse(load("ses", "bounce_transient")).attributes["bounce_type"] == "Transient"
    assert parse(load("ses", "complaint")).attributes["complaint_feedback_type"] == "abuse"
    assert parse(load("ses", "reject")).attributes["reject_reason"] == "Bad content"
    assert parse(load("ses", "rendering_failure")).attributes["template_name"] == "WeeklyPicks"
    assert parse(load("ses", "delivery_delay")).attributes["delay_type"] == "TransientCommunicationFailure"
    subscription = parse(load("ses", "subscription")).attributes
    assert (subscription["contact_list"], subscription["unsubscribe_all"]) == ("Newsletter", "true")
    assert parse(load("ses", "click")).attributes["link"] == "https://shop.example.com/p/sku-981?utm_source=ses"


def test_both_spellings_of_rendering_failure_are_one_event(load):
    documented = load("ses", "rendering_failure")
    unspaced = load("ses", "rendering_failure")
    unspaced["detail"]["eventType"] = "RenderingFailure"

    assert parse(documented) == parse(unspaced)


def test_an_over_long_link_keeps_only_the_page(load):
    record = load("ses", "click")
    record["detail"]["click"]["link"] = "https://shop.example.com/p/sku-981?token=" + "x" * 2_000

    assert parse(record).attributes["link"] == "https://shop.example.com/p/sku-981"


def test_an_address_valued_custom_tag_is_dropped(load):
    record = load("ses", "send")
    record["detail"]["mail"]["tags"]["reply_to"] = ["support@example.com"]

    assert "reply_to" not in parse(record).attributes


class TestEventId:
    def test_a_redelivery_in_a_new_envelope_is_the_same_event(self, load):
        record = load("ses", "open")
        again = load("ses", "open")
        again["id"] = "another-eventbridge-id"
        again["time"] = "2026-11-20T10:20:00Z"

        assert parse(record).event_id == parse(again).event_id

    def test_each_fixture_is_a_different_event(self, load):
        assert len({parse(load("ses", name)).event_id for name in EXPECTED}) == len(EXPECTED)

    def test_two_opens_of_one_message_at_different_times_are_different_events(self, load):
        record = load("ses", "open")
        later = load("ses", "open")
        later["detail"]["open"]["timestamp"] = "2026-11-20T18:00:00.000Z"

        assert parse(record).event_id != parse(later).event_id

    def test_clicks_on_different_links_at_the_same_time_are_different_events(self, load):
        record = load("ses", "click")
        other = load("ses", "click")
        other["detail"]["click"]["link"] = "https://shop.example.com/p/sku-982"

        assert parse(record).event_id != parse(other).event_id


    def test_two_opens_in_the_same_millisecond_from_two_devices_are_different_events(self, load):
        record = load("ses", "open")
        other = load("ses", "open")
        other["detail"]["open"]["ipAddress"] = "198.51.100.7"

        assert parse(record).event_id != parse(other).event_id
        assert "198.51.100.7" not in parse(other).to_json()

    def test_two_clicks_on_one_link_at_different_times_are_different_events(self, load):
        record = load("ses", "click")
        later = load("ses", "click")
        later["detail"]["click"]["timestamp"] = "2026-11-21T08:00:00.000Z"

        assert parse(record).event_id != parse(later).event_id

    def test_an_identical_envelope_delivered_again_is_the_same_event(self, fixtures_dir):
        raw = (fixtures_dir / "ses" / "click.json").read_bytes()

        first = normalise(raw, identity_mode=USER, arrival_time_ms=T + 4_560_100)
        again = normalise(raw, identity_mode=USER, arrival_time_ms=T + 9_000_000)

        assert first.event_id == again.event_id


class TestRejections:
    def test_unknown_event_type(self, load):
        record = load("ses", "open")
        record["detail"]["eventType"] = "Opened"

        assert reject(record).startswith("SES event: field detail.eventType: 'Opened' is not an SES email event")

    def test_a_non_email_ses_event(self):
        record = {
            "version": "0",
            "detail-type": "Sending Status Disabled",
            "source": "aws.ses",
            "time": "2026-11-20T09:00:00Z",
            "detail": {"sendingStatus": "DISABLED"},
        }

        assert reject(record) == "SES event: missing field detail.eventType"

    def test_missing_message_id(self, load):
        record = load("ses", "open")
        del record["detail"]["mail"]["messageId"]

        assert reject(record) == "SES event: missing field detail.mail.messageId"

    def test_envelope_time_that_is_not_iso(self, load):
        record = load("ses", "open")
        record["time"] = "yesterday"

        assert reject(record) == "SES event: field time: expected an ISO-8601 time, got 'yesterday'"

    def test_tags_that_are_not_lists_of_strings(self, load):
        record = load("ses", "open")
        record["detail"]["mail"]["tags"]["user_id"] = "user-42"

        assert reject(record) == (
            "SES event: field detail.mail.tags.user_id: expected a list of strings, got 'user-42'"
        )
