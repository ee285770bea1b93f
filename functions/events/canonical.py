"""The canonical engagement event: the one shape every source adapter produces.

Everything downstream (the lake, the rules engine, the interactions query) reads this shape and nothing
else. Addresses (email, phone, IP, user agent) are never copied into it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Iterator, Mapping, TypeVar

_V = TypeVar("_V")


class EventSource(str, enum.Enum):
    """Where a record came from."""

    PINPOINT = "pinpoint"
    SES = "ses"
    APP = "app"


class IdentityMode(str, enum.Enum):
    """How a user identity is found for a record.

    `user`: only an explicit user id counts; records without one have no user.
    `user_or_endpoint`: fall back to the endpoint id when the record names no user.
    """

    USER = "user"
    USER_OR_ENDPOINT = "user_or_endpoint"


class FrozenMap(Mapping[str, _V]):
    """A read-only, hashable, picklable mapping: what a frozen event holds its attributes and metrics in.

    (`MappingProxyType` is read-only too, but neither hashable nor picklable, which made every event
    unhashable and impossible to pickle or deep-copy.)
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, _V] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> _V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


def arrival_day(arrival_time_ms: int) -> str:
    """The lake partition (`dt=`) of an arrival time: its day, UTC."""
    return datetime.fromtimestamp(arrival_time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True, kw_only=True)
class CanonicalEvent:
    """One engagement event, source-independent. Times are Unix milliseconds (UTC)."""

    event_id: str
    source: EventSource
    event_type: str
    event_time_ms: int
    arrival_time_ms: int
    user_id: str | None = None
    endpoint_id: str | None = None
    campaign_id: str | None = None
    journey_id: str | None = None
    item_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views keep a frozen event frozen all the way down (a FrozenMap is already one: a copy of an
        # event, `dataclasses.replace`, shares it instead of copying it again).
        if not isinstance(self.attributes, FrozenMap):
            object.__setattr__(self, "attributes", FrozenMap(self.attributes))
        if not isinstance(self.metrics, FrozenMap):
            object.__setattr__(self, "metrics", FrozenMap(self.metrics))

    @property
    def arrival_date(self) -> str:
        """The lake partition (`dt=`) this event belongs to: its arrival day, UTC."""
        return arrival_day(self.arrival_time_ms)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON object written to the lake and the stream (field names are the lake's columns)."""
        row = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        row["source"] = self.source.value
        row["attributes"] = dict(self.attributes)
        row["metrics"] = dict(self.metrics)
        return row

    def to_json(self) -> str:
        # Key order is kept: a sum rule without MetricName uses the record's *first* metric (docs/events.md, "Metrics").
        return json.dumps(self.to_json_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json_dict(cls, row: Mapping[str, Any]) -> "CanonicalEvent":
        """Inverse of `to_json_dict` for rows that are already canonical (e.g. read back from the lake)."""
        values = {f.name: row.get(f.name) for f in dataclasses.fields(cls)}
        values["source"] = EventSource(values["source"])
        values["attributes"] = dict(values["attributes"] or {})
        values["metrics"] = {k: float(v) for k, v in (values["metrics"] or {}).items()}
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that could not become a canonical event, and why (said so a person can act on it)."""

    reason: str


ParseResult = CanonicalEvent | Rejected


# The lake's column types, in Glue/Athena (Hive DDL) terms, one per canonical field. The Glue table is
# generated from this, and a test checks it covers exactly the dataclass fields.
LAKE_COLUMN_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "event_id": "string",
        "source": "string",
        "event_type": "string",
        "event_time_ms": "bigint",
        "arrival_time_ms": "bigint",
        "user_id": "string",
        "endpoint_id": "string",
        "campaign_id": "string",
        "journey_id": "string",
        "item_id": "string",
        "attributes": "map<string,string>",
        "metrics": "map<string,double>",
    }
)

LAKE_PARTITION_KEY = "dt"
"""The lake's only partition column: arrival date, `YYYY-MM-DD`, UTC."""
