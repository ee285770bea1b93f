"""What the sample events hold, for the sheet's dropdowns and autocomplete: the event types seen, with counts,
and per event type its attribute names and most frequent values, and its metric names, with counts.

Everything is bounded, as the sample is input nobody checked: at most `max_event_types` types,
`max_attributes` attribute (and metric) names per type, `max_values` values per attribute, each value cut at
`max_value_chars` characters (a cut value is marked `truncated`: it cannot be matched as shown), and at most
`DISTINCT_TRACKED` distinct values are counted per attribute (an id-like attribute with a value per event stops
being tracked there; `more_values` says so). The engine's own `trk_` events are left out: a rule never counts
them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable

from functions.events.canonical import CanonicalEvent
from functions.rules.model import ENGINE_EVENT_PREFIX

MAX_EVENT_TYPES = 200
MAX_ATTRIBUTES = 50
MAX_VALUES = 20
MAX_VALUE_CHARS = 80
DISTINCT_TRACKED = 10_000


@dataclass(frozen=True, slots=True)
class ValueSeen:
    value: str
    count: int
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class AttributeSeen:
    name: str
    count: int
    """Events of the type carrying the attribute."""
    values: tuple[ValueSeen, ...]
    """Most frequent first (ties: alphabetical)."""
    more_values: bool
    """There are values beyond those listed."""


@dataclass(frozen=True, slots=True)
class EventTypeSeen:
    event_type: str
    count: int
    attributes: tuple[AttributeSeen, ...]
    metrics: tuple[tuple[str, int], ...]
    """(metric name, events carrying it), most frequent first."""


@dataclass(frozen=True, slots=True)
class Suggestions:
    event_types: tuple[EventTypeSeen, ...]
    """Most frequent first."""
    more_event_types: bool

    def for_event(self, event_type: str) -> EventTypeSeen | None:
        return next((seen for seen in self.event_types if seen.event_type == event_type), None)

    def to_dict(self) -> dict[str, Any]:
        return {"more_event_types": self.more_event_types, "event_types": [{
            "event_type": e.event_type, "count": e.count, "metrics": [list(m) for m in e.metrics],
            "attributes": [{"name": a.name, "count": a.count, "more_values": a.more_values,
                            "values": [{"value": v.value, "count": v.count, "truncated": v.truncated}
                                       for v in a.values]} for a in e.attributes]} for e in self.event_types]}


class _Bounded(Counter):
    """A Counter that stops taking new keys after `limit` distinct ones (counting the rest as overflow)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.overflow = limit, 0

    def add(self, key: str) -> None:
        if key in self or len(self) < self.limit:
            self[key] += 1
        else:
            self.overflow += 1


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""Values a spreadsheet would run as a formula when the saved sheet is opened in it (attribute values come from
end users' devices): never offered, so one click cannot put a device's `=HYPERLINK(…)` into the sheet. A user
may still type such a value; it must match the events exactly, so it is not escaped."""


def suggest(events: Iterable[CanonicalEvent], *, max_event_types: int = MAX_EVENT_TYPES,
            max_attributes: int = MAX_ATTRIBUTES, max_values: int = MAX_VALUES,
            max_value_chars: int = MAX_VALUE_CHARS, distinct_tracked: int = DISTINCT_TRACKED) -> Suggestions:
    """Count what `events` hold (e.g. `EventSample.events()`), bounded as the module docstring says."""
    types = _Bounded(distinct_tracked)
    attribute_names: dict[str, _Bounded] = {}
    values: dict[tuple[str, str], _Bounded] = {}
    metrics: dict[str, _Bounded] = {}
    for event in events:
        if event.event_type.startswith(ENGINE_EVENT_PREFIX):
            continue
        types.add(event.event_type)
        if event.event_type not in types:
            continue
        names = attribute_names.setdefault(event.event_type, _Bounded(distinct_tracked))
        for name, value in event.attributes.items():
            names.add(name)
            if name in names and not value.startswith(FORMULA_STARTS):
                values.setdefault((event.event_type, name), _Bounded(distinct_tracked)).add(value)
        seen_metrics = metrics.setdefault(event.event_type, _Bounded(distinct_tracked))
        for name in event.metrics:
            seen_metrics.add(name)
    ranked_types = _ranked(types)
    result = []
    for event_type, count in ranked_types[:max_event_types]:
        attributes = []
        for name, name_count in _ranked(attribute_names[event_type])[:max_attributes]:
            counted = values[(event_type, name)]
            ranked_values = _ranked(counted)
            shown = tuple(ValueSeen(value[:max_value_chars], n, len(value) > max_value_chars)
                          for value, n in ranked_values[:max_values])
            attributes.append(AttributeSeen(name, name_count, shown,
                                            len(ranked_values) > max_values or counted.overflow > 0))
        result.append(EventTypeSeen(event_type, count, tuple(attributes),
                                    tuple(_ranked(metrics[event_type])[:max_attributes])))
    return Suggestions(tuple(result), len(ranked_types) > max_event_types or types.overflow > 0)


def _ranked(counter: Counter) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))
