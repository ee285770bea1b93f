"""Suggestions from the sample: what was seen, with counts, bounded."""

from __future__ import annotations

from collections import Counter

from cli.studio.suggestions import suggest
from functions.events.canonical import CanonicalEvent, EventSource


def event(event_type: str, attributes: dict[str, str] | None = None, metrics: dict[str, float] | None = None,
          number: int = 0) -> CanonicalEvent:
    return CanonicalEvent(event_id=f"e{number}", source=EventSource("app"), event_type=event_type,
                          event_time_ms=number, arrival_time_ms=number, user_id="u", endpoint_id=None,
                          campaign_id=None, journey_id=None, item_id=None, attributes=attributes or {},
                          metrics=metrics or {})


def test_counts_of_what_the_sample_holds(sample):
    events = list(sample.events())
    seen = suggest(events)
    types = Counter(e.event_type for e in events if not e.event_type.startswith("trk_"))
    assert [(t.event_type, t.count) for t in seen.event_types] == sorted(types.items(), key=lambda i: (-i[1], i[0]))
    opened = seen.for_event("_campaign.opened_notification")
    campaign = next(a for a in opened.attributes if a.name == "campaign_id")
    expected = Counter(e.attributes["campaign_id"] for e in events
                       if e.event_type == "_campaign.opened_notification" and "campaign_id" in e.attributes)
    assert {v.value: v.count for v in campaign.values} == dict(expected)
    purchase = seen.for_event("purchase")
    assert purchase.metrics[0][0] == "amount"
    assert seen.to_dict()["event_types"][0]["event_type"] == seen.event_types[0].event_type


def test_bounded():
    events = [event("view", {"item": f"item-{i % 50}", "long": "v" * 500, "color": "red" if i % 3 else "blue"},
                    number=i) for i in range(300)]
    events += [event(f"type-{i}", number=i) for i in range(10)] + [event("trk_purchase")]
    seen = suggest(events, max_event_types=5, max_values=3, max_value_chars=10, distinct_tracked=20)
    assert len(seen.event_types) == 5 and seen.more_event_types
    assert all(not t.event_type.startswith("trk_") for t in seen.event_types)
    view = seen.for_event("view")
    attributes = {a.name: a for a in view.attributes}
    assert len(attributes["item"].values) == 3 and attributes["item"].more_values
    assert sum(v.count for v in attributes["item"].values) == 18  # 6 each of the first 20 tracked: top 3
    (long,) = attributes["long"].values
    assert long.value == "v" * 10 and long.truncated and long.count == 300
    color = attributes["color"]
    assert [(v.value, v.count) for v in color.values] == [("red", 200), ("blue", 100)] and not color.more_values
