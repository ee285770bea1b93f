"""The real-time path as pure logic: which events go to Personalize, how calls are planned, what fails."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode
from functions.retraining.scoring import ScoringModel
from functions.tracking.event_tracker import (
    EventsRefused,
    PutEventsCall,
    RawRecord,
    Skip,
    TrackedEvent,
    TrackerSettings,
    forward,
    plan_calls,
    to_tracked,
)

SCORING = ScoringModel({"purchase": 200.0, "_email.click": 100.0})
SETTINGS = TrackerSettings(tracking_id="t", scoring=SCORING)


def event(**changes) -> CanonicalEvent:
    base = dict(event_id="e-1", source=EventSource.APP, event_type="purchase", event_time_ms=1_763_990_000_000,
                arrival_time_ms=1_764_000_000_000, user_id="u1", endpoint_id="ep1", item_id="sku-1")
    return CanonicalEvent(**{**base, **changes})


def test_a_scored_event_with_user_and_item_is_tracked():
    tracked = to_tracked("r1", event(), SCORING)
    assert isinstance(tracked, TrackedEvent)
    assert (tracked.user_id, tracked.session_id) == ("u1", "ep1")
    assert tracked.event["eventId"] == "e-1"
    assert tracked.event["eventValue"] == 200.0
    assert tracked.event["sentAt"].timestamp() == 1_764_000_000


@pytest.mark.parametrize("changes, reason", [
    ({"event_type": "page_view"}, Skip.NOT_SCORED),
    ({"event_type": "_custom.recommender"}, Skip.NOT_SCORED),
    ({"user_id": None}, Skip.NO_USER),
    ({"item_id": None}, Skip.NO_ITEM),
    ({"item_id": "i" * 257}, Skip.TOO_LONG),
    ({"user_id": "u" * 257}, Skip.TOO_LONG),
])
def test_events_that_are_not_sent_say_why(changes, reason):
    assert to_tracked("r1", event(**changes), SCORING) is reason


def test_session_falls_back_to_the_user_and_long_event_ids_are_hashed():
    tracked = to_tracked("r1", event(endpoint_id=None, event_id="x" * 300), SCORING)
    assert tracked.session_id == "u1"
    assert tracked.event["eventId"].startswith("h-") and len(tracked.event["eventId"]) <= 256
    assert to_tracked("r1", event(endpoint_id=None, event_id="x" * 300), SCORING).event == tracked.event


users = st.sampled_from(["u1", "u2", "u3"])


@given(st.lists(st.tuples(users, st.sampled_from(["s1", "s2"])), max_size=60))
def test_planned_calls_cover_every_event_once_within_limits_in_stream_order(keys):
    tracked = [TrackedEvent(f"r{n}", user, session, {"eventId": f"e{n}"}) for n, (user, session) in enumerate(keys)]

    calls = plan_calls(tracked)

    sent = [record_id for call in calls for record_id in call.record_ids]
    assert sorted(sent) == sorted(t.record_id for t in tracked)
    assert all(1 <= len(call.events) <= 10 for call in calls)
    for call in calls:
        members = [t for t in tracked if t.record_id in call.record_ids]
        assert {(t.user_id, t.session_id) for t in members} == {(call.user_id, call.session_id)}
    for key in set(keys):  # per user and session, stream order is kept across calls
        in_calls = [r for call in calls if (call.user_id, call.session_id) == key for r in call.record_ids]
        assert in_calls == [t.record_id for t in tracked if (t.user_id, t.session_id) == key]
    firsts = [int(call.record_ids[0][1:]) for call in calls]
    assert firsts == sorted(firsts)


class FakeTracker:
    def __init__(self, *outcomes: Exception | None):
        self.outcomes = list(outcomes)
        self.calls: list[PutEventsCall] = []

    def put_events(self, call: PutEventsCall) -> None:
        self.calls.append(call)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome:
            raise outcome


def raw(n: int, user: str, item: str | None = "sku", event_type: str = "purchase") -> RawRecord:
    record = {"schema": "engagement-loop/v1", "event_type": event_type, "user_id": user,
              "event_time_ms": 1_763_990_000_000, "event_id": f"evt-{n}"}
    if item:
        record["item_id"] = item
    return RawRecord(f"seq-{n}", json.dumps(record).encode(), 1_764_000_000_000 + n)


def test_forward_counts_every_skip_and_sends_the_rest():
    # A producer's duplicate arrives as another record (its own sequence number) with the same event id.
    duplicate = dataclasses.replace(raw(0, "u1"), record_id="seq-0-again")
    records = [raw(0, "u1"), raw(1, "u1", item=None), raw(2, "u2", event_type="page_view"), duplicate,
               RawRecord("seq-x", b"[]", 1_764_000_000_000), raw(3, "u2")]
    tracker = FakeTracker()

    outcome = forward(records, SETTINGS, tracker)

    assert outcome.sent == 2 and outcome.failed == frozenset()
    assert outcome.skipped == Counter({Skip.NO_ITEM: 1, Skip.NOT_SCORED: 1, Skip.DUPLICATE: 1, Skip.UNPARSEABLE: 1})
    assert [call.record_ids for call in tracker.calls] == [("seq-0",), ("seq-3",)]


def test_forward_stops_at_the_first_failed_call():
    records = [raw(0, "u1"), raw(1, "u2"), raw(2, "u3"), raw(3, "u1")]
    tracker = FakeTracker(None, RuntimeError("throttled"))

    outcome = forward(records, SETTINGS, tracker)

    assert outcome.sent == 2
    assert outcome.failed == frozenset({"seq-1", "seq-2"})
    assert len(tracker.calls) == 2  # u3's call is not attempted


def test_forward_skips_calls_personalize_refuses():
    tracker = FakeTracker(EventsRefused("bad item"), None)
    outcome = forward([raw(0, "u1"), raw(1, "u2")], SETTINGS, tracker)
    assert outcome.sent == 1 and outcome.failed == frozenset()
    assert outcome.skipped[Skip.REFUSED] == 1
    assert outcome.outcomes == {"seq-0": Skip.REFUSED.value, "seq-1": "sent"}


class RefusingTracker:
    """Refuses, as Personalize does, every call holding one of `bad` record ids."""

    def __init__(self, *bad: str):
        self.bad, self.calls = set(bad), []

    def put_events(self, call):
        self.calls.append(call.record_ids)
        if self.bad & set(call.record_ids):
            raise EventsRefused("InvalidInputException")


def test_one_refused_event_costs_only_itself_not_its_whole_call():
    records = [raw(n, "u1") for n in range(10)]
    tracker = RefusingTracker("seq-4")

    outcome = forward(records, SETTINGS, tracker)

    assert outcome.sent == 9 and outcome.skipped == Counter({Skip.REFUSED: 1})
    assert outcome.outcomes["seq-4"] == Skip.REFUSED.value
    assert tracker.calls[0] == tuple(f"seq-{n}" for n in range(10)) and len(tracker.calls) == 1 + 10


def test_a_failure_while_resending_singly_stops_the_batch_keeping_what_was_sent():
    class RefuseThenFail(RefusingTracker):
        def put_events(self, call):
            if call.record_ids == ("seq-2",):
                raise RuntimeError("throttled")
            super().put_events(call)

    outcome = forward([raw(n, "u1") for n in range(4)], SETTINGS, RefuseThenFail("seq-0"))

    assert outcome.outcomes == {"seq-0": Skip.REFUSED.value, "seq-1": "sent", "seq-2": "failed", "seq-3": "failed"}


def test_events_sent_after_the_first_failed_record_are_counted_as_resent_on_retry():
    """Calls go in order of their first record: u1 (seq-0, seq-3) is sent, then u2 (seq-1, seq-2) fails, so
    Lambda redelivers from seq-1 and seq-3, already sent, is sent again (and not trained on twice)."""
    records = [raw(0, "u1"), raw(1, "u2"), raw(2, "u2"), raw(3, "u1")]
    outcome = forward(records, SETTINGS, FakeTracker(None, RuntimeError("throttled")))

    assert outcome.failed == frozenset({"seq-1", "seq-2"})
    assert outcome.sent_after_failure == 1  # seq-3


def test_settings_from_env():
    settings = TrackerSettings.from_env({"TRACKING_ID": "t-1", "SCORING": '{"purchase": 200, "_email.open": 50}',
                                         "IDENTITY_MODE": "user", "POWERTOOLS_METRICS_NAMESPACE": "Ns"})
    assert settings == TrackerSettings(tracking_id="t-1", scoring=ScoringModel({"purchase": 200.0,
                                                                                "_email.open": 50.0}),
                                       identity_mode=IdentityMode.USER, metrics_namespace="Ns")


@pytest.mark.parametrize("environ, messages", [
    ({}, ["TRACKING_ID is missing", "SCORING is missing"]),
    ({"TRACKING_ID": "t", "SCORING": "{not json"}, ["environment variable SCORING: not valid JSON"]),
    ({"TRACKING_ID": "t", "SCORING": '{"_custom.recommender": 1}'}, ["records exposures"]),
    ({"TRACKING_ID": "t", "SCORING": '{"a": 1}', "IDENTITY_MODE": "nobody"}, ["IDENTITY_MODE='nobody'"]),
])
def test_settings_from_env_names_what_is_wrong(environ, messages):
    with pytest.raises(ValueError) as raised:
        TrackerSettings.from_env(environ)
    for message in messages:
        assert message in str(raised.value)
