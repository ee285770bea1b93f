"""Backfill: a scheduled Lambda that counts, from the lake, the events a date or window rule did not count
live because they arrived before its activation (or while it was out of the sheet), so that users who
already meet the rule are marked.

One clock (docs/backfill.md, "One clock"): an event's `arrival_time_ms` is its Kinesis approximate arrival
time, in the aggregator and in the lake alike, and the lake's `dt` partition is that arrival's UTC day. The
aggregator counts a generation's events that arrived at or after its activation (`meta#<rule_id>`,
functions/rules/activation.py); the backfill counts those that arrived before it (`arrival_time_ms <
activation`, partitions up to the activation's day). Each event is on exactly one side of that line.

Each generation has two passes (`BackfillPass`), each an Athena query (generated text, `build_backfill_sql`)
over only the partitions it needs, merged user by user into the counters with the same conditional write +
outbox transaction as the aggregator (`apply_backfill`):

1. the *first* pass, once the activation is `BACKFILL_SETTLE_MINUTES` old (Firehose buffers up to 5 minutes
   before a record reaches the lake): per user and event day, the count and metric sum of the rule's events —
   except those that arrived within max(dedupe horizon, lake lateness) before the activation, which come one
   row per event (id, day, arrival, value);
2. the *late* pass, once the activation is `BACKFILL_LATENESS_MINUTES` old (the lake's worst-case lateness:
   Firehose retries S3 delivery for as long as the stream keeps the record, 24 h here): the events that
   arrived within that lateness before the activation, one row per event, anti-joined by user with the first
   pass's own results (re-read by its query id): only events the first pass did not list are merged — so a
   record that reached the lake after the first pass counts, and nothing counts twice, whatever `seen` forgot.

Producer duplicates across the activation: an event merged one by one is skipped when the counter has seen
its id (a copy counted live first), and its id is remembered on the counter with its true arrival
(`store.remember`), so a copy arriving live later is a duplicate. A pass's merge of a user leaves a pass mark
in `seen`, so a rerun never merges that user twice. A returning rule's gap pass merges the arrivals where it is unclear whether a
function still counted them live one by one, against `seen` (docs/backfill.md, "Returning rules").

A run stops a minute before its time is up and saves where it got to (per pass: the query id and the last user
merged, results being ordered by user); the next scheduled run carries on. A failed query is logged, and
retried by the next run.

Environment (read once, by `BackfillSettings.from_env`): COUNTERS_TABLE, OUTBOX_TABLE, RULES_BUCKET, RULES_KEY,
ATHENA_WORKGROUP (required); GLUE_DATABASE (`engagement_loop`), EVENTS_TABLE (`events`), ATHENA_OUTPUT_LOCATION
(default: the workgroup's), BACKFILL_SETTLE_MINUTES (15), BACKFILL_LATENESS_MINUTES (1500 = 25 h),
RULES_MAX_AGE_SECONDS (60), COUNTER_TTL_DAYS (400), DEDUPE_HORIZON_HOURS (24), POWERTOOLS_METRICS_NAMESPACE
(`EngagementLoop`).
"""

from __future__ import annotations

import decimal
import enum
import functools
import hashlib
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from botocore.exceptions import ClientError

from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.events.canonical import LAKE_PARTITION_KEY
from functions.lake_names import InvalidName, check_glue_name, check_query_size, check_workgroup_name
from functions.retraining.sql import DEFAULT_DATABASE, DEFAULT_TABLE
from functions.retraining.sql import sql_identifier, sql_string  # one quoting rule for every generated query
from functions.rules.aggregator import ACTIVATION_MARGIN_MS, publish_counts
from functions.rules.evaluate import DAY_MS, DayBucket, apply_backfill, event_day
from functions.rules.outbox import OutboxEntry
from functions.rules.rules_source import Env, RulesSettings, RulesSource, S3RulesSource
from functions.rules.model import Rule, RuleSet, RuleType
from functions.rules.dynamo import error_code
from functions.rules.activation import BackfillPass, BackfillStatus, PassKind, RuleMeta
from functions.rules.dedupe import DEDUPE_HORIZON_HOURS, remember
from functions.rules.store import CounterItem, CounterStore, StoreSettings, Write, counting_closes_ms

logger = Logger()

DEFAULT_SETTLE_MINUTES = 15
DEFAULT_LATENESS_MINUTES = 25 * 60
"""The lake's worst-case lateness after a record's stream arrival (docs/backfill.md, "Lateness bound"): the
stream's 24 h retention, for as long as which Firehose retries S3 delivery with a Kinesis source
(https://docs.aws.amazon.com/firehose/latest/dev/retry.html, "Amazon S3"), + its 300 s buffer
(https://docs.aws.amazon.com/firehose/latest/APIReference/API_BufferingHints.html) and the normaliser's 60 s
one, with the rest of the hour for the transform's retries and a read backlog."""
STOP_MARGIN_MS = 60_000
"""Stop merging this long before the function's time is up."""
SAVE_EVERY_USERS = 200
BACKFILL_COLUMNS = ("user_id", "event_day", "event_id", "arrival_time_ms", "events", "metric_sum")
"""A row is a user's day total (`event_id` and `arrival_time_ms` NULL) or one event."""
_EPOCH = date(1970, 1, 1)
_SUMS = decimal.Context(prec=38)  # as the counters add (DynamoDB numbers carry 38 digits)


class BackfillCount(str, enum.Enum):
    """What a backfill run counts; each is a CloudWatch metric."""

    RULES_DONE = "BackfillRulesDone"
    PASSES_DONE = "BackfillPassesDone"
    RULES_WAITING = "BackfillRulesWaiting"
    QUERIES_FAILED = "BackfillQueriesFailed"
    USERS = "BackfillUsers"
    EVENTS = "BackfillEvents"
    LATE_EVENTS = "BackfillLateEvents"
    """Events the late pass merged: records the lake received after the first pass had read it."""
    SEEN_SKIPPED = "BackfillEventsAlreadyCounted"
    """Events merged one by one that the counter had seen (a copy counted live, or a pass's earlier merge)."""
    ASSUMED_LIVE = "BackfillEventsAssumedLive"
    """A returning rule's ambiguous events older than the dedupe horizon, taken as counted live."""
    QUALIFIED = "BackfillQualified"
    FIRST_RESULTS_MISSING = "BackfillFirstResultsMissing"
    """A late pass could not read its first pass's results (expired, or the query unknown): it fails and stays
    pending with the error on the record instead of guessing what the first pass merged."""
    RESULTS_EXPIRED = "BackfillResultsExpired"
    """A pass's own query results expired before it finished merging (a backfill outage longer than their
    retention): its query id is cleared and the next run queries again, carrying on after `resume_after`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillSettings:
    """The function's configuration, parsed once from its environment."""

    store: StoreSettings
    """COUNTERS_TABLE, OUTBOX_TABLE (required), COUNTER_TTL_DAYS (default 400), DEDUPE_HORIZON_HOURS (24)."""
    rules: RulesSettings
    """RULES_BUCKET, RULES_KEY (required), RULES_MAX_AGE_SECONDS (default 60)."""
    workgroup: str
    """ATHENA_WORKGROUP, required."""
    database: str = DEFAULT_DATABASE
    """GLUE_DATABASE, default `engagement_loop`."""
    table: str = DEFAULT_TABLE
    """EVENTS_TABLE, default `events`."""
    output_location: str | None = None
    """ATHENA_OUTPUT_LOCATION (`s3://…/`), default: the workgroup's result location."""
    settle_minutes: int = DEFAULT_SETTLE_MINUTES
    """BACKFILL_SETTLE_MINUTES, default 15: how old an activation must be before its first pass runs."""
    lateness_minutes: int = DEFAULT_LATENESS_MINUTES
    """BACKFILL_LATENESS_MINUTES, default 1500 (25 h): how old an activation must be before its late pass runs;
    the lake's worst-case lateness after stream arrival."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """POWERTOOLS_METRICS_NAMESPACE, default `EngagementLoop`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackfillSettings:
        env = Env(environ)
        settings = cls(
            store=StoreSettings.read(env), rules=RulesSettings.read(env),
            workgroup=env.text("ATHENA_WORKGROUP", what="the Athena workgroup of the backfill queries"),
            database=env.text("GLUE_DATABASE", DEFAULT_DATABASE), table=env.text("EVENTS_TABLE", DEFAULT_TABLE),
            output_location=env.text("ATHENA_OUTPUT_LOCATION", "") or None,
            settle_minutes=env.positive_int("BACKFILL_SETTLE_MINUTES", DEFAULT_SETTLE_MINUTES),
            lateness_minutes=env.positive_int("BACKFILL_LATENESS_MINUTES", DEFAULT_LATENESS_MINUTES),
            metrics_namespace=env.text("POWERTOOLS_METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE),
        )
        # The one name check of every SQL builder (functions/lake_names.py), here when the function starts.
        for variable, value, check in (("GLUE_DATABASE", settings.database, check_glue_name),
                                       ("EVENTS_TABLE", settings.table, check_glue_name),
                                       ("ATHENA_WORKGROUP", settings.workgroup, check_workgroup_name)):
            try:
                if value:
                    check(value, variable)
            except InvalidName as problem:
                env.problems.append(str(problem))
        if settings.lateness_minutes <= settings.settle_minutes:
            env.problems.append(f"BACKFILL_LATENESS_MINUTES={settings.lateness_minutes} is invalid: expected more "
                                f"than BACKFILL_SETTLE_MINUTES ({settings.settle_minutes})")
        env.check("rules backfill")
        return settings


# --- the query ---------------------------------------------------------------------------------------


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
                user.totals.append(DayBucket(day, int(count or 0), _decimal(total)))
            else:
                user.listed.append(ListedEvent(event_id, day, int(arrival or 0), _decimal(total)))
        yield user


def _each(users: Iterable[UserRows]) -> Iterator[tuple[UserRows, frozenset[str]]]:
    for user in users:
        yield user, frozenset()


def _anti_join(late: Iterable[UserRows], first: Iterable[UserRows]) -> Iterator[tuple[UserRows, frozenset[str]]]:
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
        yield user.user_id, _buckets(user.totals, user.listed)


def _buckets(totals: Iterable[DayBucket], events: Iterable[ListedEvent]) -> list[DayBucket]:
    days: dict[date, tuple[int, Decimal]] = defaultdict(lambda: (0, Decimal(0)))
    for bucket in totals:
        count, total = days[bucket.day]
        days[bucket.day] = (count + bucket.count, _SUMS.add(total, bucket.sum))
    for event in events:
        count, total = days[event.day]
        days[event.day] = (count + 1, _SUMS.add(total, event.value))
    return [DayBucket(day, count, total) for day, (count, total) in sorted(days.items())]


def _decimal(text: str | None) -> Decimal:
    if not text:
        return Decimal(0)
    if "." in text and "e" not in text.lower():
        text = text.rstrip("0").rstrip(".")  # DECIMAL(38, 17) pads; keep the stored sums readable
    return Decimal(text)


# --- running queries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryState:
    """Where a query stands: QUEUED / RUNNING (still going when the wait ended), SUCCEEDED, FAILED, CANCELLED."""

    state: str
    reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED")


class ResultsGone(Exception):
    """A finished query's results can no longer be read (the result objects expired, or Athena forgot it)."""


class _PassResultsGone(Exception):
    """`ResultsGone` while merging a pass, saying whose results: the pass's own query's (`own`: re-run it) or
    its first pass's (a late pass's anti-join: unrecoverable)."""

    def __init__(self, query_id: str | None, *, own: bool, reason: str) -> None:
        super().__init__(f"{'own' if own else 'first pass'} query {query_id}: {reason}")
        self.query_id, self.own, self.reason = query_id, own, reason


class LakeQueries(Protocol):
    """Running a query over the lake."""

    def start(self, sql: str, *, token: str) -> str:
        """Start `sql`; the same `token` again returns the same query instead of starting another."""

    def wait(self, query_id: str, *, timeout_seconds: float) -> QueryState: ...

    def rows(self, query_id: str) -> Iterator[tuple[str | None, ...]]:
        """The result rows (header excluded, in the query's ORDER BY), every value as text or None; raises
        `ResultsGone` when a finished query's results cannot be read any more."""


class AthenaLakeQueries:
    """Amazon Athena, through a boto3 `athena` client."""

    def __init__(self, client: Any, *, database: str, workgroup: str, output_location: str | None = None,
                 poll_seconds: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self._database, self._workgroup = client, database, workgroup
        self._output_location, self._poll_seconds = output_location, poll_seconds
        self._sleep, self._clock = sleep, clock

    def start(self, sql: str, *, token: str) -> str:
        request: dict[str, Any] = {"QueryString": sql, "ClientRequestToken": token, "WorkGroup": self._workgroup,
                                   "QueryExecutionContext": {"Database": self._database}}
        if self._output_location:
            request["ResultConfiguration"] = {"OutputLocation": self._output_location}
        return self._client.start_query_execution(**request)["QueryExecutionId"]

    def wait(self, query_id: str, *, timeout_seconds: float) -> QueryState:
        deadline = self._clock() + timeout_seconds
        while True:
            status = self._client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
            state = QueryState(status["State"], status.get("StateChangeReason"))
            left = deadline - self._clock()
            if state.finished or left <= 0:
                return state
            self._sleep(min(self._poll_seconds, left))

    def rows(self, query_id: str) -> Iterator[tuple[str | None, ...]]:
        # GetQueryResults pages (NextToken, up to 1,000 rows each) through the result file Athena wrote to the
        # workgroup's result location, in the query's ORDER BY; once that object expired (the lake bucket's
        # lifecycle, queryResultsRetentionDays) or the query left Athena's history (45 days), it is refused.
        header = True
        pages = self._client.get_paginator("get_query_results").paginate(QueryExecutionId=query_id)
        try:
            for page in pages:
                for row in page["ResultSet"]["Rows"]:
                    if header:  # the first row of the first page holds the column names
                        header = False
                        continue
                    yield tuple(cell.get("VarCharValue") for cell in row["Data"])
        except ClientError as error:
            if error_code(error) in ("InvalidRequestException", "ResourceNotFoundException"):
                raise ResultsGone(f"query {query_id}: {error}") from error
            raise


# --- the backfill ------------------------------------------------------------------------------------


def _query_token(meta: RuleMeta, backfill_pass: BackfillPass) -> str:
    # Same record version → same token → Athena returns the query already started (a run that died before
    # saving its id); a failed query is forgotten with a new version, so the retry gets a new token.
    text = f"backfill:{meta.rule_id}:{backfill_pass.key}:{backfill_pass.to_ms}:{meta.version}"
    return hashlib.sha256(text.encode()).hexdigest()


def pass_mark(rule_id: str, backfill_pass: BackfillPass) -> str:
    """The `seen` entry a pass leaves on a counter it merged day totals into, so a rerun never merges twice."""
    return f"backfill#{rule_id}#{backfill_pass.key}"


@dataclass
class _Merge:
    """What merging one user did."""

    events: int = 0
    late: int = 0
    seen: int = 0
    assumed_live: int = 0


class Backfill:
    """Backfills the date and window rules of a sheet, a pass at a time (`run`)."""

    def __init__(self, store: CounterStore, lake: LakeQueries, *, database: str, table: str, settle_ms: int,
                 activation_delay_ms: int, lateness_ms: int = DEFAULT_LATENESS_MINUTES * 60_000,
                 horizon_ms: int | None = None) -> None:
        self._store, self._lake, self._database, self._table = store, lake, database, table
        self._settle_ms, self._activation_delay_ms, self._lateness_ms = settle_ms, activation_delay_ms, lateness_ms
        self._horizon_ms = DEDUPE_HORIZON_HOURS * 3_600_000 if horizon_ms is None else horizon_ms

    def due_ms(self, backfill_pass: BackfillPass) -> int:
        """When a pass may run: the first once the lake settled, the late once its worst-case lateness is over."""
        wait = self._settle_ms if backfill_pass.kind is PassKind.FIRST else self._lateness_ms
        return backfill_pass.to_ms + wait

    def run(self, rules: RuleSet, *, time_left_ms: Callable[[], int]) -> Counter[BackfillCount]:
        counts: Counter[BackfillCount] = Counter()
        for rule in rules:
            if rule.rule_type is RuleType.AGGREGATOR:
                continue
            if time_left_ms() < STOP_MARGIN_MS:
                break
            # Read every run (one request per rule): a returning rule adds passes to a finished record. Creating
            # the record here too means a rule is activated even while no events flow; its heartbeat is its
            # activation, as nothing counted it before.
            activation_ms = self._store.now_ms() + self._activation_delay_ms
            meta = self._store.activations.read(rule.rule_id) or self._store.activations.ensure(
                rule, activation_ms, seen_until_ms=activation_ms)
            if meta.status is BackfillStatus.DONE:
                continue
            waiting = False
            for backfill_pass in meta.passes:
                if backfill_pass.status is BackfillStatus.DONE:
                    continue
                if time_left_ms() < STOP_MARGIN_MS or self._store.now_ms() < self.due_ms(backfill_pass):
                    waiting = True
                    continue
                result = self._run_pass(rule, meta, backfill_pass, counts, time_left_ms)
                if result is None:  # not finished (time, a running query, a failure, another writer)
                    waiting = True
                    break
                meta = result
            if meta.status is BackfillStatus.DONE:
                counts[BackfillCount.RULES_DONE] += 1
                logger.info("backfill done", extra={"rule_id": meta.rule_id, "users": meta.users,
                                                    "events": meta.events, "qualified": meta.qualified})
            elif waiting:
                counts[BackfillCount.RULES_WAITING] += 1
        return counts

    def _run_pass(self, rule: Rule, meta: RuleMeta, backfill_pass: BackfillPass, counts: Counter[BackfillCount],
                  time_left_ms: Callable[[], int]) -> RuleMeta | None:
        """Run (or carry on) one pass; the record after it finished, or None."""
        query = pass_query(rule, backfill_pass, horizon_ms=self._horizon_ms, lateness_ms=self._lateness_ms)
        if query.days() is None:
            return self._finish(meta, backfill_pass, counts)
        if backfill_pass.query_id is None:
            try:
                sql = build_backfill_sql(rule, backfill_pass.to_ms, database=self._database, table=self._table,
                                         query=query)
                query_id = self._lake.start(sql, token=_query_token(meta, backfill_pass))
            except (ValueError, ClientError) as error:
                # This rule's query cannot start (too long, refused, throttled): the rule waits and is tried
                # again by the next run; the other rules of this run go on (the alarm watches the count).
                logger.error("backfill query could not start; the next run tries again",
                             extra={"rule_id": rule.rule_id, "pass": backfill_pass.key, "reason": str(error)[:500]})
                counts[BackfillCount.QUERIES_FAILED] += 1
                self._store.activations.save(meta.with_pass(replace(backfill_pass, error=f"not started: "
                                                                                         f"{str(error)[:300]}")))
                return None
            backfill_pass = replace(backfill_pass, query_id=query_id, error=None)
            saved = self._store.activations.save(meta.with_pass(backfill_pass))
            if saved is None:
                return None  # another run took this rule on, or it got a new generation; the next run carries on
            meta = saved
            logger.info("backfill query started", extra={"rule_id": rule.rule_id, "pass": backfill_pass.key,
                                                        "query_id": query_id})
        assert backfill_pass.query_id is not None
        state = self._lake.wait(backfill_pass.query_id,
                                timeout_seconds=max(0, time_left_ms() - STOP_MARGIN_MS) / 1000)
        if not state.finished:
            return None
        if state.state != "SUCCEEDED":
            logger.error("backfill query failed; the next run starts it again",
                         extra={"rule_id": rule.rule_id, "pass": backfill_pass.key,
                                "query_id": backfill_pass.query_id, "reason": state.reason})
            counts[BackfillCount.QUERIES_FAILED] += 1
            self._store.activations.save(meta.with_pass(
                replace(backfill_pass, query_id=None, error=f"{state.state}: {state.reason}")))
            return None

        merged = 0
        try:
            users = _each(user_rows(self._rows(backfill_pass.query_id, own=True)))
            if backfill_pass.kind is PassKind.LATE:
                # What the first pass read, not the counter's `seen` (which forgets past the dedupe horizon and
                # the id cap): the late pass merges only the events its first pass did not list.
                first = self._first_of(meta, backfill_pass)
                if first is None or first.query_id is None:
                    raise _PassResultsGone(None, own=False, reason="the first pass recorded no query")
                users = _anti_join(user_rows(self._rows(backfill_pass.query_id, own=True)),
                                   user_rows(self._rows(first.query_id, own=False)))
            for user, first_listed in users:
                if backfill_pass.resume_after is not None and user.user_id <= backfill_pass.resume_after:
                    continue
                if time_left_ms() < STOP_MARGIN_MS:
                    self._store.activations.save(meta.with_pass(backfill_pass))
                    return None
                outcome = _Merge()
                write = self._store.update(rule, user.user_id,
                                           self._merge_step(rule, backfill_pass, user, first_listed, outcome))
                qualified = len(write.outbox) if write else 0
                backfill_pass = replace(backfill_pass, resume_after=user.user_id)
                meta = replace(meta, users=meta.users + bool(write), events=meta.events + outcome.events,
                               qualified=meta.qualified + qualified).with_pass(backfill_pass)
                counts[BackfillCount.USERS] += bool(write)
                counts[BackfillCount.EVENTS] += outcome.events
                counts[BackfillCount.LATE_EVENTS] += outcome.late
                counts[BackfillCount.SEEN_SKIPPED] += outcome.seen
                counts[BackfillCount.ASSUMED_LIVE] += outcome.assumed_live
                counts[BackfillCount.QUALIFIED] += qualified
                merged += 1
                if merged % SAVE_EVERY_USERS == 0:
                    saved = self._store.activations.save(meta)
                    if saved is None:
                        return None  # another run is on it too; the counters' marks keep the merge single
                    meta = saved
        except _PassResultsGone as gone:
            if gone.own:
                return self._own_gone(meta, backfill_pass, counts, gone)
            return self._first_gone(meta, backfill_pass, counts, gone)
        return self._finish(meta, backfill_pass, counts)

    def _rows(self, query_id: str, *, own: bool) -> Iterator[tuple[str | None, ...]]:
        try:
            yield from self._lake.rows(query_id)
        except ResultsGone as gone:
            raise _PassResultsGone(query_id, own=own, reason=str(gone)) from gone

    @staticmethod
    def _first_of(meta: RuleMeta, late: BackfillPass) -> BackfillPass | None:
        return next((p for p in meta.passes if p.generation == late.generation and p.kind is PassKind.FIRST), None)

    def _own_gone(self, meta: RuleMeta, backfill_pass: BackfillPass, counts: Counter[BackfillCount],
                  gone: _PassResultsGone) -> None:
        """The pass's own results expired before it finished merging (a backfill outage longer than their
        retention): forget the query so the next run queries again (a new record version, so a new token).
        The users merged so far are skipped by `resume_after` (saved with each stop and every
        `SAVE_EVERY_USERS`) and by their pass marks (docs/backfill.md, "First pass results gone")."""
        logger.error("backfill pass's own query results are gone; the next run queries again",
                     extra={"rule_id": meta.rule_id, "pass": backfill_pass.key, "query_id": gone.query_id,
                            "resume_after": backfill_pass.resume_after, "reason": gone.reason})
        counts[BackfillCount.RESULTS_EXPIRED] += 1
        self._store.activations.save(meta.with_pass(replace(
            backfill_pass, query_id=None, error=f"own query {gone.query_id} results gone: {gone.reason}")))
        return None

    def _first_gone(self, meta: RuleMeta, backfill_pass: BackfillPass, counts: Counter[BackfillCount],
                    gone: _PassResultsGone) -> None:
        """The late pass cannot know what its first pass read: fail loudly, merge nothing, stay pending (its
        own query id kept)."""
        logger.error("backfill late pass cannot read its first pass's results; nothing merged, the pass stays "
                     "pending (docs/backfill.md, \"First pass results gone\")",
                     extra={"rule_id": meta.rule_id, "pass": backfill_pass.key, "query_id": gone.query_id,
                            "reason": gone.reason})
        counts[BackfillCount.FIRST_RESULTS_MISSING] += 1
        self._store.activations.save(meta.with_pass(replace(
            backfill_pass, error=f"first pass query {gone.query_id} results gone: {gone.reason}")))
        return None

    def _merge_step(self, rule: Rule, backfill_pass: BackfillPass, user: UserRows, first_listed: frozenset[str],
                    outcome: _Merge) -> Callable[[CounterItem], Write | None]:
        """The counter write merging one user's rows. An event listed one by one is merged unless a copy was
        counted live (`has_seen`), it is a returning rule's ambiguous event taken as counted live, or — late
        pass — the first pass listed it (`first_listed`: merged or skipped then, never again). Merged ids are
        remembered with their true arrival, so they age out of `seen` with the live ones."""
        mark = pass_mark(rule.rule_id, backfill_pass)
        # The legacy mark: a counter merged by the single backfill of before the passes.
        legacy = backfill_pass.generation == 1 and backfill_pass.kind is PassKind.FIRST

        def step(item: CounterItem) -> Write | None:
            now_ms = self._store.now_ms()
            outcome.events = outcome.late = outcome.seen = outcome.assumed_live = 0  # a retried step starts over
            if item.has_seen(mark):
                return None  # this pass merged this user already (a run that stopped before saving its place)
            totals = [] if legacy and item.backfilled else user.totals
            fresh: list[ListedEvent] = []
            for event in user.listed:
                if event.event_id in first_listed:
                    continue  # the first pass read it: merged then, or skipped as counted live
                if item.has_seen(event.event_id):
                    outcome.seen += 1  # counted live (a copy, or a returning rule's last minutes)
                elif self._assumed_live(backfill_pass, event, now_ms):
                    outcome.assumed_live += 1
                else:
                    fresh.append(event)
            if not totals and not fresh:
                return None
            days = _buckets(totals, fresh)
            state, qualifications = apply_backfill(rule, item.state, days, backfill_pass.to_ms, user_id=user.user_id)
            # The mark carries the merge's clock: it must outlive the pass (a resume is minutes away), not more.
            entries = [*((event.event_id, event.arrival_ms) for event in fresh), (mark, now_ms)]
            outcome.events = sum(day.count for day in days)
            outcome.late = len(fresh) if backfill_pass.kind is PassKind.LATE else 0
            return Write(state=state, backfilled=legacy or item.backfilled,
                         seen=remember(item.seen, entries, now_ms=now_ms, horizon_ms=self._horizon_ms),
                         outbox=tuple(OutboxEntry.qualified(q, created_ms=now_ms) for q in qualifications))

        return step

    def _assumed_live(self, backfill_pass: BackfillPass, event: ListedEvent, now_ms: int) -> bool:
        """A returning rule's ambiguous event the counter has not seen, but which arrived so long ago that its
        id may have been dropped from `seen` since: counted live if it arrived by the last heartbeat (some
        function had the rule then), else not."""
        if backfill_pass.ambiguous_until_ms is None or event.arrival_ms >= backfill_pass.ambiguous_until_ms:
            return False
        if event.arrival_ms >= now_ms - self._horizon_ms:
            return False  # `seen` still vouches for it
        return backfill_pass.last_beat_ms is not None and event.arrival_ms <= backfill_pass.last_beat_ms

    def _finish(self, meta: RuleMeta, backfill_pass: BackfillPass, counts: Counter[BackfillCount]) -> RuleMeta | None:
        # A finished earlier generation leaves the record (`pruned`), so a rule's record stays a few passes.
        saved = self._store.activations.save(meta.with_pass(replace(backfill_pass, status=BackfillStatus.DONE,
                                                                    error=None)).pruned())
        if saved is not None:
            counts[BackfillCount.PASSES_DONE] += 1
            logger.info("backfill pass done", extra={"rule_id": meta.rule_id, "pass": backfill_pass.key})
        return saved


_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


@functools.cache
def _settings() -> BackfillSettings:
    return BackfillSettings.from_env()


@functools.cache
def _rules_source() -> RulesSource:
    return S3RulesSource(boto3.client("s3", config=_CLIENT_CONFIG), _settings().rules)


@functools.cache
def _backfill() -> Backfill:
    settings = _settings()
    store = CounterStore(boto3.client("dynamodb", config=_CLIENT_CONFIG), settings.store)
    lake = AthenaLakeQueries(boto3.client("athena", config=_CLIENT_CONFIG), database=settings.database,
                             workgroup=settings.workgroup, output_location=settings.output_location)
    return Backfill(store, lake, database=settings.database, table=settings.table,
                    settle_ms=settings.settle_minutes * 60_000, lateness_ms=settings.lateness_minutes * 60_000,
                    horizon_ms=settings.store.dedupe_horizon_ms,
                    activation_delay_ms=settings.rules.max_age_seconds * 1000 + ACTIVATION_MARGIN_MS)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """Lambda entry point (`functions.rules.backfill.lambda_handler`), on an EventBridge schedule."""
    counts = _backfill().run(_rules_source().current(), time_left_ms=context.get_remaining_time_in_millis)
    publish_counts(counts, BackfillCount, _settings().metrics_namespace)
    return {count.value: counts[count] for count in BackfillCount}
