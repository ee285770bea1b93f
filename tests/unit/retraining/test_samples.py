"""The documented Pinpoint samples go through normalise, the lake and the interactions SQL."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from functions.events.canonical import CanonicalEvent, IdentityMode
from functions.events.normalise import normalise
from functions.retraining.lake import Interaction, run_interactions, write_lake
from functions.retraining.scoring import ScoringModel
from functions.retraining.sql import InteractionsQuery

SAMPLES = sorted(Path("tests/fixtures/pinpoint").glob("*.json"))
SCORING = ScoringModel.from_mapping({"_campaign.send": 1, "_journey.send": 2, "_email.open": 3,
                                     "_email.click": 4, "_SMS.SUCCESS": 5, "_session.stop": 6}, source="test")
ENDPOINT = "d8dcf7c5-e81a-48ae-8313-f540cexample"  # campaign_send.json and journey_send.json


def parse(record: dict) -> CanonicalEvent:
    event = normalise(json.dumps(record), identity_mode=IdentityMode.USER_OR_ENDPOINT)
    assert isinstance(event, CanonicalEvent), event
    return event


def recommender(arrival_ms: int, client_id: str, **attributes: str) -> dict:
    """A `_custom.recommender` record as the Pinpoint events API streams it."""
    return {"event_type": "_custom.recommender", "event_timestamp": arrival_ms, "arrival_timestamp": arrival_ms,
            "event_version": "3.1", "application": {"app_id": "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6", "sdk": {}},
            "client": {"client_id": client_id}, "device": {"platform": {}}, "session": {},
            "attributes": attributes}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_normalises(path):
    parse(json.loads(path.read_text()))


def test_samples_yield_exactly_the_attributed_interactions(tmp_path):
    samples = {p.stem: parse(json.loads(p.read_text())) for p in SAMPLES}
    assert len(samples) == 8
    sent, journey = samples["campaign_send"], samples["journey_send"]
    exposures = [
        parse(recommender(sent.arrival_time_ms - 3_600_000, ENDPOINT, personalize_user_id="pu-1",
                          item_id="item-c", campaign_id=sent.campaign_id)),
        parse(recommender(journey.arrival_time_ms - 86_400_000, ENDPOINT, personalize_user_id="pu-2",
                          item_id="item-j", journey_id=journey.journey_id)),
        # The SMS sample's client is the sending account, so it names no endpoint: nothing to match.
        parse(recommender(samples["sms_success"].arrival_time_ms - 1, "123456789012", personalize_user_id="pu-3",
                          item_id="item-s", campaign_id=samples["sms_success"].campaign_id)),
    ]
    write_lake([*exposures, *samples.values()], tmp_path)
    rows = run_interactions(InteractionsQuery(scoring=SCORING, as_of=date(2019, 11, 6)), tmp_path)
    assert rows == [Interaction("pu-1", "item-c", "_campaign.send", 1.0, 1562109497),
                    Interaction("pu-2", "item-j", "_journey.send", 2.0, 1572989078)]
