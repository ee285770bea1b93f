"""Random streams: the SQL on DuckDB agrees with a plain-Python reading of `docs/interactions.md`."""

from __future__ import annotations

import tempfile
from datetime import date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.events.canonical import CanonicalEvent, EventSource
from functions.retraining.lake import Interaction, run_interactions, write_lake
from functions.retraining.scoring import EXPOSURE_EVENT_TYPE, ScoringModel
from functions.retraining.sql import InteractionsQuery

D = date(2026, 11, 8)
DAY_MS = 86_400_000
D_MS = int(datetime(2026, 11, 8, tzinfo=timezone.utc).timestamp() * 1000)
SCORING = {"_email.open": 1.0, "_email.click": 4.5}


def expected(events: list[CanonicalEvent], query: InteractionsQuery) -> list[Interaction]:
    """§6, read literally, one engagement at a time."""
    first = None if query.history_days == -1 else query.as_of - timedelta(days=query.history_days)
    window = query.attribution_days * DAY_MS
    rows = set()
    for g in events:
        day = date.fromisoformat(g.arrival_date)
        if g.event_type not in SCORING or day >= query.as_of or (first is not None and day < first):
            continue
        value, seconds = SCORING[g.event_type], g.arrival_time_ms // 1000
        if g.user_id and g.item_id:
            rows.add(Interaction(g.user_id, g.item_id, g.event_type, value, seconds))
        for x in events:
            same_message = (x.campaign_id is not None and x.campaign_id == g.campaign_id) or (
                x.journey_id is not None and x.journey_id == g.journey_id)
            if (x.event_type == EXPOSURE_EVENT_TYPE and x.endpoint_id is not None
                    and x.endpoint_id == g.endpoint_id and same_message
                    and g.arrival_time_ms - window <= x.arrival_time_ms <= g.arrival_time_ms
                    and x.attributes.get("personalize_user_id") and x.item_id):
                rows.add(Interaction(x.attributes["personalize_user_id"], x.item_id, g.event_type, value, seconds))
    return sorted(rows)


# Times on a coarse grid around D (whole days plus a few offsets), so that exact window edges, day
# boundaries and identical arrivals come up often; `None` is rarer than a value, so matches are common.
arrivals = st.builds(lambda days, offset: D_MS - days * DAY_MS + offset,
                     st.integers(0, 8), st.sampled_from([0, 1, DAY_MS - 1]))


def often(*values):
    return st.sampled_from([*values, *values, None])


@st.composite
def events(draw, index=st.integers(0, 10**9)):
    event_type = draw(st.sampled_from([EXPOSURE_EVENT_TYPE, EXPOSURE_EVENT_TYPE, "_email.open", "_email.click",
                                       "_email.send"]))
    exposed = draw(often("pu-1", "pu-2")) if event_type == EXPOSURE_EVENT_TYPE else None
    return CanonicalEvent(
        event_id=f"e-{draw(index)}", source=EventSource.PINPOINT, event_type=event_type,
        event_time_ms=D_MS, arrival_time_ms=draw(arrivals),
        user_id=draw(often("u-1", "u-2")), endpoint_id=draw(often("ep-1", "ep-1", "ep-2")),
        campaign_id=draw(often("c-1", "c-1", "c-2")),
        journey_id=draw(st.sampled_from([None, "c-1", "j-1"])),  # "c-1": ids of the other kind never match
        item_id=draw(st.sampled_from([None, "i-1", "i-2"])),
        attributes={"personalize_user_id": exposed} if exposed else {},
    )


@settings(max_examples=100, deadline=None)
@given(stream=st.lists(events(), max_size=25).flatmap(lambda s: st.permutations(s + s[: len(s) // 3])),
       history_days=st.sampled_from([-1, 1, 2, 5]), attribution_days=st.sampled_from([1, 3, 7]))
def test_sql_matches_the_reference(stream, history_days, attribution_days):
    query = InteractionsQuery(scoring=ScoringModel.from_mapping(SCORING, source="test"), as_of=D,
                              history_days=history_days, attribution_days=attribution_days)
    with tempfile.TemporaryDirectory() as lake:
        write_lake(stream, lake)
        assert run_interactions(query, lake) == expected(stream, query)
