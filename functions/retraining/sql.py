"""The interactions query: the one SELECT that turns the lake into Personalize's interactions dataset.

The text is Athena (Trino) SQL, generated from an `InteractionsQuery` and nothing else; the same text is
parsed as Athena and run on DuckDB in tests and `python -m cli interactions preview` (see `lake.py`).
Semantics (`docs/interactions.md`):

- an engagement is an event whose type the scoring model scores, arrived on days D-N … D-1 (UTC, by the
  `dt` partition, so Athena reads only those days; history -1 reads every day before D);
- it yields a row for each exposure (`_custom.recommender`) of the same endpoint and the same campaign or
  journey that arrived at or before it and at most the attribution window earlier: the exposure's
  `personalize_user_id` and item;
- an engagement carrying its own `item_id` also yields a row for its own user and that item;
- EVENT_VALUE is the model's value, TIMESTAMP the engagement's arrival (epoch seconds); rows without a
  user or item are dropped, identical rows appear once;
- with `exclude_streamed` (stack config `realTimeEvents`), the rows the event tracker already sent with
  PutEvents are left out: an engagement's own user and own item, whichever path yields that row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from functions.events.canonical import LAKE_PARTITION_KEY
from functions.lake_names import EVENTS_TABLE, check_glue_name, check_query_size
from functions.retraining.scoring import EXPOSURE_EVENT_TYPE, ScoringModel

INTERACTIONS_COLUMNS = ("USER_ID", "ITEM_ID", "EVENT_TYPE", "EVENT_VALUE", "TIMESTAMP")
DEFAULT_DATABASE = "engagement_loop"
DEFAULT_TABLE = EVENTS_TABLE
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True, slots=True, kw_only=True)
class InteractionsQuery:
    """Everything the interactions SQL depends on."""

    scoring: ScoringModel
    """Event type → EVENT_VALUE; only these types are engagements. Required."""
    as_of: date
    """Run date D: engagements arrived before this UTC day are read. Required."""
    attribution_days: int = 7
    """How many days before an engagement an exposure may have arrived. Default 7; at least 1."""
    history_days: int = -1
    """Engagement days read before D: -1 for all history (default), else N ≥ 1 (days D-N … D-1)."""
    database: str = field(default=DEFAULT_DATABASE)
    """Glue database of the lake table. Default `engagement_loop`."""
    table: str = field(default=DEFAULT_TABLE)
    """Glue table of canonical events, partitioned by `dt`. Default `events`."""
    exclude_streamed: bool = False
    """Leave out the rows the real-time event tracker sends with PutEvents (an engagement's own user and own
    item), because a FULL import does not replace streamed events. Default False; on with `realTimeEvents`."""

    def __post_init__(self) -> None:
        if not isinstance(self.scoring, ScoringModel):
            raise TypeError(f"scoring: expected a ScoringModel, got {type(self.scoring).__name__}")
        if not isinstance(self.as_of, date):
            raise TypeError(f"as_of: expected a date, got {self.as_of!r}")
        if isinstance(self.attribution_days, bool) or not isinstance(self.attribution_days, int) \
                or self.attribution_days < 1:
            raise ValueError(f"attribution_days: expected a whole number of days ≥ 1, got {self.attribution_days!r}")
        if isinstance(self.history_days, bool) or not isinstance(self.history_days, int) \
                or not (self.history_days == -1 or self.history_days >= 1):
            raise ValueError(f"history_days: expected -1 (all history) or a number of days ≥ 1, "
                             f"got {self.history_days!r}")
        if not isinstance(self.exclude_streamed, bool):
            raise TypeError(f"exclude_streamed: expected a bool, got {self.exclude_streamed!r}")
        # The one name check of every SQL builder and of the stack config (functions/lake_names.py).
        check_glue_name(self.database, "database")
        check_glue_name(self.table, "table")

    @property
    def engagements_from(self) -> date | None:
        """First arrival day of engagements read (D-N), or None for all history."""
        return None if self.history_days == -1 else self.as_of - timedelta(days=self.history_days)

    @property
    def exposures_from(self) -> date | None:
        """First arrival day of exposures read (D-N-attribution), or None for all history."""
        first = self.engagements_from
        return None if first is None else first - timedelta(days=self.attribution_days)


def build_interactions_sql(query: InteractionsQuery) -> str:
    """The Athena SELECT returning USER_ID, ITEM_ID, EVENT_TYPE, EVENT_VALUE, TIMESTAMP for `query`."""
    table = f"{sql_identifier(query.database)}.{sql_identifier(query.table)}"
    # Sorted, so the text depends on the model's content and not on the order the config lists it in.
    scoring_rows = ",\n        ".join(
        f"({sql_string(event_type)}, {_number(value)})" for event_type, value in sorted(query.scoring.values.items())
    )
    dt = sql_identifier(LAKE_PARTITION_KEY)
    until = sql_string(query.as_of.isoformat())

    if query.exclude_streamed:
        # The tracker sent the engagement's own (user, item) already, and a FULL import does not replace
        # streamed events: drop that row, also where an exposure of the same user and item yields it.
        own_item_rows = """
        AND (x.user_id IS DISTINCT FROM g.user_id OR x.item_id IS DISTINCT FROM g.item_id)"""
    else:
        own_item_rows = """
    UNION ALL
    SELECT g.user_id, g.item_id, g.event_type, g.event_value, g.arrival_time_ms
    FROM engagements AS g"""

    def days(alias: str, first: date | None) -> str:
        # Plain string comparisons on the partition column, so Athena prunes partitions before reading.
        upper = f"{alias}.{dt} < {until}"
        return upper if first is None else f"{alias}.{dt} >= {sql_string(first.isoformat())} AND {upper}"

    return check_query_size(f"""\
WITH scoring (event_type, event_value) AS (
    VALUES
        {scoring_rows}
),
engagements AS (
    SELECT e.user_id, e.endpoint_id, e.campaign_id, e.journey_id, e.item_id, e.event_type, s.event_value,
        e.arrival_time_ms
    FROM {table} AS e
    JOIN scoring AS s ON s.event_type = e.event_type
    WHERE {days("e", query.engagements_from)}
),
exposures AS (
    SELECT element_at(x.attributes, 'personalize_user_id') AS user_id, x.item_id, x.endpoint_id,
        x.campaign_id, x.journey_id, x.arrival_time_ms
    FROM {table} AS x
    WHERE x.event_type = {sql_string(EXPOSURE_EVENT_TYPE)} AND {days("x", query.exposures_from)}
),
interactions AS (
    SELECT x.user_id, x.item_id, g.event_type, g.event_value, g.arrival_time_ms
    FROM engagements AS g
    JOIN exposures AS x
        ON x.endpoint_id = g.endpoint_id
        AND (x.campaign_id = g.campaign_id OR x.journey_id = g.journey_id)
        AND x.arrival_time_ms <= g.arrival_time_ms
        AND x.arrival_time_ms >= g.arrival_time_ms - {query.attribution_days * _MS_PER_DAY}{own_item_rows}
)
SELECT DISTINCT
    i.user_id AS "USER_ID",
    i.item_id AS "ITEM_ID",
    i.event_type AS "EVENT_TYPE",
    CAST(i.event_value AS DOUBLE) AS "EVENT_VALUE",
    CAST(floor(i.arrival_time_ms / 1000.0) AS BIGINT) AS "TIMESTAMP"
FROM interactions AS i
-- `<> ''` also drops NULLs: Personalize rejects rows without a user or an item.
WHERE i.user_id <> '' AND i.item_id <> ''
""", "the interactions query")


def sql_string(value: str) -> str:
    """A Trino string literal."""
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """A Trino quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def _number(value: float) -> str:
    # repr() is the shortest text that reads back as the same float, so one weight maps to one literal.
    return repr(float(value))
