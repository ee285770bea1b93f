"""The canonical event itself: frozen all the way down, yet hashable, picklable and JSON round-trippable."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest

from functions.events.canonical import LAKE_COLUMN_TYPES, CanonicalEvent, EventSource

EVENT = CanonicalEvent(
    event_id="app-1",
    source=EventSource.APP,
    event_type="purchase",
    event_time_ms=1_795_165_200_000,
    arrival_time_ms=1_795_219_200_100,
    user_id="user-7",
    attributes={"city": "Zürich"},
    metrics={"amount": 19.99},
)


def test_attributes_and_metrics_are_read_only():
    with pytest.raises(TypeError):
        EVENT.attributes["city"] = "Bern"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        EVENT.user_id = "someone-else"  # type: ignore[misc]


def test_the_caller_s_dicts_are_copied_not_shared():
    attributes = {"city": "Zürich"}
    event = dataclasses.replace(EVENT, attributes=attributes)
    attributes["city"] = "Bern"

    assert event.attributes == {"city": "Zürich"}


def test_events_are_hashable_so_duplicates_collapse_in_a_set():
    assert len({EVENT, dataclasses.replace(EVENT), dataclasses.replace(EVENT, event_id="app-2")}) == 2


def test_events_survive_pickle_and_deepcopy():
    assert pickle.loads(pickle.dumps(EVENT)) == EVENT
    assert copy.deepcopy(EVENT) == EVENT


def test_json_round_trip_and_arrival_date():
    assert CanonicalEvent.from_json_dict(json.loads(EVENT.to_json())) == EVENT
    assert EVENT.arrival_date == "2026-11-21"
    assert '"city":"Zürich"' in EVENT.to_json()


def test_lake_columns_cover_exactly_the_fields():
    assert list(LAKE_COLUMN_TYPES) == [field.name for field in dataclasses.fields(CanonicalEvent)]
