"""An independent expectation of the rules engine's results, straight from the rule semantics (docs/rules.md).

Time: each record arrives at the time it names (Pinpoint's `arrival_timestamp`, an app record's event time),
made monotonic in file order as Kinesis' arrivals are, and is processed at its arrival. An event counts on
its event time, or its arrival when that is earlier (a clock ahead); a window rule counts the events whose
day lies in the last N days as of the record's arrival day (never the processing clock, which differs with
batching), and an event already older than that counts for nothing.

Written for the e2e tests without the engine's code (no `functions.rules`, no normaliser): the raw JSONL is
read with plain `json`, rules are hand-written `Spec`s, and each rule is a plain loop over the records in
file order. It covers what the replay fixture uses: app records and Pinpoint records whose user is
`endpoint.User.UserId` or the `User.UserId` inside `client_context.custom.endpoint` (else the endpoint id,
as in identity mode `user_or_endpoint`; the SMS record's "client" is the sending account, so it has none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Spec:
    rule_id: str
    kind: str  # aggregator | date | window
    event: str
    name: str
    reset: bool = False
    filter: tuple[str, str] | None = None
    count: tuple[str, int] | None = None  # (operator, target)
    total: tuple[str, Decimal] | None = None
    metric: str | None = None  # None: the record's first metric
    dates: tuple[date, date] | None = None
    window_days: int | None = None


@dataclass(frozen=True)
class Record:
    line: str
    user: str | None
    event_type: str
    time_ms: int
    arrival_ms: int
    attributes: dict[str, str]
    metrics: dict[str, float]


def read_records(lines: list[str]) -> list[Record]:
    """Each distinct record once, in file order (a line seen before is a producer duplicate)."""
    records, seen, clock = [], set(), 0
    for line in lines:
        if not line.strip() or line in seen:
            continue
        seen.add(line)
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            continue
        if raw.get("schema") == "engagement-loop/v1":
            clock = max(clock, raw["event_time_ms"])
            records.append(Record(line, raw["user_id"], raw["event_type"], raw["event_time_ms"], clock,
                                  raw.get("attributes", {}), raw.get("metrics", {})))
        elif "event_timestamp" in raw:
            user = (raw.get("endpoint") or {}).get("User", {}).get("UserId")
            context = (raw.get("client_context") or {}).get("custom", {}).get("endpoint")
            if user is None and context:
                user = json.loads(context).get("User", {}).get("UserId")
            client = raw.get("client", {}).get("client_id")
            endpoint = (raw.get("endpoint") or {}).get("Id") or (client if client != raw.get("awsAccountId") else None)
            # An email event's event_timestamp is the send time; the open or click is its arrival (docs/events.md).
            email = raw["event_type"].startswith("_email.")
            time_ms = raw["arrival_timestamp"] if email else raw["event_timestamp"]
            clock = max(clock, raw.get("arrival_timestamp", time_ms))
            records.append(Record(line, user or endpoint, raw["event_type"], time_ms, clock,
                                  raw.get("attributes", {}), raw.get("metrics", {})))
    return records


def holds(condition: tuple[str, Any] | None, value: Any) -> bool:
    if condition is None:
        return True
    operator, target = condition
    return {"equal": value == target, "greater": value > target, "at_least": value >= target}[operator]


def day_of(time_ms: int) -> date:
    return datetime.fromtimestamp(time_ms // 1000, tz=timezone.utc).date()


def expect(spec: Spec, records: list[Record]) -> tuple[list[dict[str, Any]], dict[str, tuple[int, Decimal]]]:
    """(qualifications, {user: (count, sum)}) for one rule."""
    qualifications: list[dict[str, Any]] = []
    state: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.user is None or record.event_type.startswith("trk_") or record.event_type != spec.event:
            continue
        if spec.filter and record.attributes.get(spec.filter[0]) != spec.filter[1]:
            continue
        happened = day_of(min(record.time_ms, record.arrival_ms))
        if spec.dates and not spec.dates[0] <= happened <= spec.dates[1]:
            continue
        if spec.window_days:
            first = day_of(record.arrival_ms) - timedelta(days=spec.window_days - 1)
            if happened < first:
                state.setdefault(record.user, {"count": 0, "sum": Decimal(0), "qualified": False, "days": {}})
                continue  # older than the window when processed: counts for nothing
        user = state.setdefault(record.user, {"count": 0, "sum": Decimal(0), "qualified": False, "days": {}})
        metric = record.metrics.get(spec.metric) if spec.metric else next(iter(record.metrics.values()), None)
        value = Decimal(str(metric)) if metric is not None else Decimal(0)
        user["count"] += 1
        user["sum"] += value
        if spec.window_days:
            days = user["days"]
            days[happened] = (days.get(happened, (0, Decimal(0)))[0] + 1, days.get(happened, (0, Decimal(0)))[1] + value)
            count = sum(c for d, (c, _) in days.items() if d >= first)
            total = sum((s for d, (_, s) in days.items() if d >= first), Decimal(0))
        else:
            count, total = user["count"], user["sum"]
        if user["qualified"] or not (holds(spec.count, count) and holds(spec.total, total)):
            continue
        qualifications.append({"rule_id": spec.rule_id, "user_id": record.user,
                               "action": "event" if spec.reset else "attribute", "name": spec.name,
                               "value": None if spec.reset else "ready", "event_time_ms": record.time_ms})
        if spec.reset:
            user["count"], user["sum"] = 0, Decimal(0)
        else:
            user["qualified"] = True
    return qualifications, {name: (user["count"], user["sum"]) for name, user in state.items()}


FIXTURE_SPECS = (
    Spec("buyer", "aggregator", "purchase", "purchase", count=("at_least", 3)),
    Spec("big-spender", "aggregator", "purchase", "trk_big_spender", reset=True,
         total=("at_least", Decimal(100)), metric="amount"),
    Spec("spend-50", "aggregator", "purchase", "trk_purchase", reset=True, total=("at_least", Decimal(50))),
    Spec("shoe-cart-pair", "aggregator", "add_to_cart", "trk_add_to_cart_shoes", reset=True,
         filter=("category", "shoes"), count=("equal", 2)),
    Spec("summer-opener", "aggregator", "_email.open", "email_open_summer_sale",
         filter=("campaign_id", "summer_sale"), count=("at_least", 2)),
    Spec("engaged-viewer", "aggregator", "view_item", "view_item", count=("at_least", 2),
         total=("greater", Decimal(30)), metric="duration"),
    Spec("nov-buyer", "date", "purchase", "trk_date_purchase", count=("at_least", 2),
         dates=(date(2026, 11, 5), date(2026, 11, 15))),
    Spec("active-week", "window", "_session.start", "session_start", count=("at_least", 3), window_days=7),
)
"""The rules of tests/fixtures/replay/rules.csv, written out by hand."""
