"""The backfill's Athena query and the rows it returns: the SELECT of one pass of one rule over the lake, and
the result rows grouped per user (events listed in a pass, day totals) for the merge (`functions/rules/backfill.py`).
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Iterable, Iterator, Sequence


from functions.events.canonical import LAKE_PARTITION_KEY
from functions.lake_names import check_glue_name, check_query_size
from functions.retraining.sql import sql_identifier, sql_string  # one quoting rule for every generated query
from functions.rules.evaluate import DAY_MS, DayBucket, event_day
from functions.rules.model import Rule, RuleType
from functions.rules.activation import BackfillPass, PassKind
from functions.rules.counting import counting_closes_ms


BACKFILL_COLUMNS = ("user_id", "event_day", "event_id", "arrival_time_ms", "events", "metric_sum")
_EPOCH = date(1970, 1, 1)
_SUMS = decimal.Context(prec=38)  # as the counters add (DynamoDB numbers carry 38 digits)


@dataclass(frozen=True, slots=True, kw_only=True)
class PassQuery:
    """What one pass reads: the rule's events that arrived in [`from_ms`, `to_ms`) (`from_ms` None: as far
    back as the rule's days reach), one row per event for those that arrived at or after `listed_from_ms`
    or before `ambiguous_until_ms`, day totals for the others. A copy counts once when its original arrived
    up to `lookback_ms` earlier, even before `from_ms` (the dedupe horizon)."""

    rule: Rule
    to_ms: int
    from_ms: int | None = None
    listed_from_ms: int | None = None
    ambiguous_until_ms: int | None = None
    lookback_ms: int = 0

    @property
    def before_ms(self) -> int:
        """Arrivals before this are read: the activation, or earlier when a date rule's counting closed."""
        closes = counting_closes_ms(self.rule)
        return self.to_ms if closes is None else min(self.to_ms, closes)

    @property
    def read_from_ms(self) -> int | None:
        return None if self.from_ms is None else self.from_ms - self.lookback_ms

    def days(self) -> tuple[date, date] | None:
        """The first and last `dt` partition (arrival day) to read; None if none can hold an event it counts.
        The one clock makes this exact: an event arrives on or after the day it happened (event time is
        clamped to arrival), and before the activation's day ends."""
        rule = self.rule
        if rule.rule_type is RuleType.WINDOW:
            assert rule.window_days is not None
            first = event_day(self.to_ms) - timedelta(days=rule.window_days)
        elif rule.rule_type is RuleType.DATE:
            assert rule.start_date is not None
            first = rule.start_date
        else:
            raise ValueError(f"rule {rule.rule_id!r}: only date and window rules are backfilled")
        if self.from_ms is not None:
            if self.from_ms >= self.before_ms:
                return None
            first = max(first, event_day(self.read_from_ms))  # type: ignore[arg-type]
        last = event_day(self.before_ms - 1)
        return (first, last) if first <= last else None


def pass_query(rule: Rule, backfill_pass: BackfillPass, *, horizon_ms: int, lateness_ms: int) -> PassQuery:
    """The query of a pass. The first lists events one by one from max(horizon, lateness) before the
    activation: within the horizon a producer's copy may arrive live later (and must find the id), within the
    lateness the late pass must know what the first merged. The late pass reads only the lateness before the
    activation, all one by one."""
    to_ms = backfill_pass.to_ms
    # A gap pass (a returning rule's) looks back one horizon only when its gap is longer than a horizon: for a
    # shorter one the originals before the gap were counted live or merged within the horizon before the
    # merge, and the counter's `seen` still has their ids — the look-back would add a day's partitions to the
    # scan of every returning generation (docs/backfill.md, "Cost").
    gap = backfill_pass.from_ms is not None
    lookback_ms = horizon_ms if not gap or to_ms - backfill_pass.from_ms > horizon_ms else 0  # type: ignore[operator]
    if backfill_pass.kind is PassKind.FIRST:
        return PassQuery(rule=rule, to_ms=to_ms, from_ms=backfill_pass.from_ms,
                         listed_from_ms=to_ms - max(horizon_ms, lateness_ms),
                         ambiguous_until_ms=backfill_pass.ambiguous_until_ms, lookback_ms=lookback_ms)
    late_from = to_ms - lateness_ms
    from_ms = late_from if backfill_pass.from_ms is None else max(backfill_pass.from_ms, late_from)
    return PassQuery(rule=rule, to_ms=to_ms, from_ms=from_ms, listed_from_ms=from_ms,
                     ambiguous_until_ms=backfill_pass.ambiguous_until_ms, lookback_ms=lookback_ms)


def backfill_days(rule: Rule, activation_ms: int) -> tuple[date, date] | None:
    """The first and last `dt` partition (arrival day) a new rule's first pass reads; None if none can hold
    an event it counts."""
    return PassQuery(rule=rule, to_ms=activation_ms).days()


def build_backfill_sql(rule: Rule, activation_ms: int, *, database: str, table: str,
                       query: PassQuery | None = None) -> str:
    """The Athena (Trino) SELECT of `BACKFILL_COLUMNS` for `query` (default: a new rule's whole history as
    day totals): the rule's events that arrived before `activation_ms`, per user and event day (days since
    1970-01-01, UTC) or one by one, ordered by user."""
    query = query or PassQuery(rule=rule, to_ms=activation_ms)
    # The one name check of every SQL builder (functions/lake_names.py).
    table_name = (f"{sql_identifier(check_glue_name(database, 'database'))}."
                  f"{sql_identifier(check_glue_name(table, 'table'))}")
    days = query.days()
    if days is None:
        raise ValueError(f"rule {rule.rule_id!r}: nothing to backfill before {activation_ms}")
    dt = sql_identifier(LAKE_PARTITION_KEY)
    # The engine's time of an event: its event time, never after its arrival (the normaliser clamps it too).
    moment = "least(e.event_time_ms, e.arrival_time_ms)"
    conditions = [
        # Plain string comparisons on the partition column (the arrival day), so Athena reads only these days.
        f"e.{dt} >= {sql_string(days[0].isoformat())}",
        f"e.{dt} <= {sql_string(days[1].isoformat())}",
        # A rule never names a `trk_` event, so this also leaves the engine's own events out.
        f"e.event_type = {sql_string(rule.event_name)}",
        "e.user_id IS NOT NULL",
        # The split with the aggregator, on the one clock: Kinesis arrival.
        f"e.arrival_time_ms < {query.before_ms}",
    ]
    if query.read_from_ms is not None:
        conditions.append(f"e.arrival_time_ms >= {query.read_from_ms}")
    if rule.attribute_filter is not None:
        name, value = rule.attribute_filter.name, rule.attribute_filter.value
        conditions.append(f"element_at(e.attributes, {sql_string(name)}) = {sql_string(value)}")
    if rule.rule_type is RuleType.DATE:
        assert rule.start_date is not None and rule.finish_date is not None
        first_ms = (rule.start_date - _EPOCH).days * DAY_MS
        last_ms = ((rule.finish_date - _EPOCH).days + 1) * DAY_MS - 1
        conditions.append(f"{moment} BETWEEN {first_ms} AND {last_ms}")
    metric_name = rule.sum_condition.metric_name if rule.sum_condition else None
    # The rule's metric, else the record's first one: map_values keeps the order the record gave them in.
    metric = (f"element_at(e.metrics, {sql_string(metric_name)})" if metric_name
              else "element_at(map_values(e.metrics), 1)")
    # Through the double's shortest text, as the aggregator adds a metric (Decimal(str(value))), so the sums
    # are exact decimals that match the stream's to the last digit.
    value = f"CAST(CAST({metric} AS VARCHAR) AS DECIMAL(38, 17))"
    listed_parts = []
    if query.listed_from_ms is not None:
        listed_parts.append(f"m.arrival_time_ms >= {query.listed_from_ms}")
    if query.ambiguous_until_ms is not None:
        listed_parts.append(f"m.arrival_time_ms < {query.ambiguous_until_ms}")
    listed = " OR ".join(listed_parts) or "FALSE"
    kept = "m.delivery = 1" + (f" AND m.arrival_time_ms >= {query.from_ms}" if query.from_ms is not None else "")
    where = "\n        AND ".join(conditions)
    # One rule per query; the sheet's cell limits keep the longest rule's query far below Athena's limit
    # (docs/rules.md, "Sheet limits"), and this says so if a rule built in code does not.
    return check_query_size(f"""\
WITH matching AS (
    SELECT e.user_id, e.event_id, e.arrival_time_ms,
        CAST(floor({moment} / {DAY_MS}.0) AS BIGINT) AS event_day,
        coalesce({value}, CAST(0 AS DECIMAL(38, 17))) AS metric_value,
        row_number() OVER (PARTITION BY e.user_id, e.event_id ORDER BY e.arrival_time_ms) AS delivery
    FROM {table_name} AS e
    WHERE {where}
), counted AS (
    SELECT m.user_id, m.event_day, m.metric_value,
        CASE WHEN {listed} THEN m.event_id END AS event_id,
        CASE WHEN {listed} THEN m.arrival_time_ms END AS arrival_time_ms
    FROM matching AS m
    WHERE {kept}
)
SELECT c.user_id, c.event_day, c.event_id, max(c.arrival_time_ms) AS arrival_time_ms,
    count(*) AS events,
    sum(c.metric_value) AS metric_sum
FROM counted AS c
GROUP BY c.user_id, c.event_day, c.event_id
ORDER BY 1, 2, 3
""", f"rule {rule.rule_id!r}: the backfill query")


@dataclass(frozen=True, slots=True)
class ListedEvent:
    """One event of a pass's result."""

    event_id: str
    day: date
    arrival_ms: int
    value: Decimal


@dataclass(frozen=True, slots=True)
class UserRows:
    """One user's rows of a pass's result: day totals and events listed one by one."""

    user_id: str
    totals: list[DayBucket] = field(default_factory=list)
    listed: list[ListedEvent] = field(default_factory=list)


def user_rows(rows: Iterable[Sequence[str | None]]) -> Iterator[UserRows]:
    """Result rows (strings, as Athena returns them, ordered by user) → each user's totals and events."""
    for user_id, rows_of_user in groupby(rows, key=lambda row: row[0]):
        assert user_id is not None
        user = UserRows(user_id)
        for _, day_text, event_id, arrival, count, total in rows_of_user:
            day = _EPOCH + timedelta(days=int(day_text or 0))
            if event_id is None:
                user.totals.append(DayBucket(day, int(count or 0), decimal_of(total)))
            else:
                user.listed.append(ListedEvent(event_id, day, int(arrival or 0), decimal_of(total)))
        yield user


def each_user(users: Iterable[UserRows]) -> Iterator[tuple[UserRows, frozenset[str]]]:
    for user in users:
        yield user, frozenset()


def anti_join(late: Iterable[UserRows], first: Iterable[UserRows]) -> Iterator[tuple[UserRows, frozenset[str]]]:
    """Each user of the late pass with the event ids its first pass listed for that user: a merge-join of two
    results both ordered by user (Athena's ORDER BY on varchar compares code points, as Python's `<` does),
    holding one user of each in memory."""
    first_users = iter(first)
    current: UserRows | None = next(first_users, None)
    previous: str | None = None
    for user in late:
        while current is not None and current.user_id < user.user_id:
            previous = current.user_id
            current = next(first_users, None)
            if current is not None and previous is not None and current.user_id <= previous:
                raise ValueError(f"first pass results out of order: {current.user_id!r} after {previous!r}")
        listed = (frozenset(event.event_id for event in current.listed)
                  if current is not None and current.user_id == user.user_id else frozenset())
        yield user, listed


def user_days(rows: Iterable[Sequence[str | None]]) -> Iterator[tuple[str, list[DayBucket]]]:
    """Result rows → (user, that user's day totals, events listed one by one folded in)."""
    for user in user_rows(rows):
        yield user.user_id, merged_buckets(user.totals, user.listed)


def merged_buckets(totals: Iterable[DayBucket], events: Iterable[ListedEvent]) -> list[DayBucket]:
    days: dict[date, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for bucket in totals:
        count, total = days[bucket.day]
        days[bucket.day] = (count + bucket.count, _SUMS.add(total, bucket.sum))
    for event in events:
        count, total = days[event.day]
        days[event.day] = (count + 1, _SUMS.add(total, event.value))
    return [DayBucket(day, count, total) for day, (count, total) in sorted(days.items())]


def decimal_of(text: str | None) -> Decimal:
    if not text:
        return Decimal(0)
    if "." in text and "e" not in text.lower():
        text = text.rstrip("0").rstrip(".")  # DECIMAL(38, 17) pads; keep the stored sums readable
    return Decimal(text)
