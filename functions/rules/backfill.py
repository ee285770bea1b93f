"""Backfill: a scheduled Lambda that counts, from the lake, the events a date or window rule did not see
because they arrived before its activation, so that users who already meet a new rule are marked.

The aggregator counts a rule's events that arrived at or after its activation (`meta#<rule_id>`); the
backfill counts those that arrived before it. Each event is on exactly one side of that line, so nothing is
counted twice however long the backfill takes. For each date or window rule in the sheet whose backfill is
pending, once its activation is `BACKFILL_SETTLE_MINUTES` old (Firehose buffers events for up to 5 minutes
before they reach the lake):

1. an Athena query (generated text, `build_backfill_sql`) reads only the `dt` partitions the rule needs — a
   date rule: the day before its start date (device clocks run ahead) to the activation day; a window rule:
   the last `window_days` + 1 days up to the activation day — and returns, per user and event day, the count
   and metric sum of the rule's events (same matching as the aggregator; a producer's duplicate once);
2. each user's days are merged into their counter (`apply_backfill`), qualifying them if the rule is met,
   with the same conditional write + outbox transaction as the aggregator, and a per-counter `backfilled`
   mark so a rerun never merges twice;
3. the rule's record is marked done, with its counts: a rule id is backfilled once.

A run stops a minute before its time is up and saves where it got to (the query id and the last user
merged, results being ordered by user); the next scheduled run carries on. A failed query is logged, and
retried by the next run.

Environment (read once, by `BackfillSettings.from_env`): COUNTERS_TABLE, OUTBOX_TABLE, RULES_BUCKET, RULES_KEY,
ATHENA_WORKGROUP (required); GLUE_DATABASE (`engagement_loop`), EVENTS_TABLE (`events`), ATHENA_OUTPUT_LOCATION
(default: the workgroup's), BACKFILL_SETTLE_MINUTES (15), RULES_MAX_AGE_SECONDS (60), COUNTER_TTL_DAYS (400),
POWERTOOLS_METRICS_NAMESPACE (`EngagementLoop`).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from itertools import groupby
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.events.canonical import LAKE_PARTITION_KEY
from functions.retraining.sql import DEFAULT_DATABASE, DEFAULT_TABLE
from functions.retraining.sql import sql_identifier, sql_string  # one quoting rule for every generated query
from functions.rules.aggregator import ACTIVATION_MARGIN_MS, publish_counts
from functions.rules.evaluate import DAY_MS, DayBucket, apply_backfill, event_day
from functions.rules.outbox import OutboxEntry
from functions.rules.rules_source import Env, RulesSettings, RulesSource, S3RulesSource
from functions.rules.model import Rule, RuleSet, RuleType
from functions.rules.activation import BackfillStatus, RuleMeta
from functions.rules.store import CounterItem, CounterStore, StoreSettings, Write, counting_closes_ms

logger = Logger()

DEFAULT_SETTLE_MINUTES = 15
STOP_MARGIN_MS = 60_000
"""Stop merging this long before the function's time is up."""
SAVE_EVERY_USERS = 200
BACKFILL_COLUMNS = ("user_id", "event_day", "events", "metric_sum")
_EPOCH = date(1970, 1, 1)


class BackfillCount(str, enum.Enum):
    """What a backfill run counts; each is a CloudWatch metric."""

    RULES_DONE = "BackfillRulesDone"
    RULES_WAITING = "BackfillRulesWaiting"
    QUERIES_FAILED = "BackfillQueriesFailed"
    USERS = "BackfillUsers"
    EVENTS = "BackfillEvents"
    QUALIFIED = "BackfillQualified"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillSettings:
    """The function's configuration, parsed once from its environment."""

    store: StoreSettings
    """COUNTERS_TABLE, OUTBOX_TABLE (required), COUNTER_TTL_DAYS (default 400)."""
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
    """BACKFILL_SETTLE_MINUTES, default 15: how old an activation must be before its backfill runs."""
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
            metrics_namespace=env.text("POWERTOOLS_METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE),
        )
        env.check("rules backfill")
        return settings


# --- the query ---------------------------------------------------------------------------------------


def backfill_days(rule: Rule, activation_ms: int) -> tuple[date, date] | None:
    """The first and last `dt` partition (arrival day) the rule's backfill reads; None if none can hold
    an event it counts."""
    activation_day = event_day(activation_ms)
    if rule.rule_type is RuleType.WINDOW:
        assert rule.window_days is not None
        return activation_day - timedelta(days=rule.window_days), activation_day
    if rule.rule_type is RuleType.DATE:
        assert rule.start_date is not None
        closes = counting_closes_ms(rule)
        assert closes is not None
        first, last = rule.start_date - timedelta(days=1), min(activation_day, event_day(closes - 1))
        return (first, last) if first <= last else None
    raise ValueError(f"rule {rule.rule_id!r}: only date and window rules are backfilled")


def build_backfill_sql(rule: Rule, activation_ms: int, *, database: str, table: str) -> str:
    """The Athena (Trino) SELECT of `BACKFILL_COLUMNS`: per user and event day (days since 1970-01-01, UTC),
    the number and metric sum of the rule's events that arrived before `activation_ms`, ordered by user."""
    days = backfill_days(rule, activation_ms)
    if days is None:
        raise ValueError(f"rule {rule.rule_id!r}: nothing to backfill before {activation_ms}")
    dt = sql_identifier(LAKE_PARTITION_KEY)
    closes = counting_closes_ms(rule)
    before_ms = activation_ms if closes is None else min(activation_ms, closes)
    conditions = [
        # Plain string comparisons on the partition column, so Athena reads only these days.
        f"e.{dt} >= {sql_string(days[0].isoformat())}",
        f"e.{dt} <= {sql_string(days[1].isoformat())}",
        # A rule never names a `trk_` event, so this also leaves the engine's own events out.
        f"e.event_type = {sql_string(rule.event_name)}",
        "e.user_id IS NOT NULL",
        f"e.arrival_time_ms < {before_ms}",
    ]
    if rule.attribute_filter is not None:
        name, value = rule.attribute_filter.name, rule.attribute_filter.value
        conditions.append(f"element_at(e.attributes, {sql_string(name)}) = {sql_string(value)}")
    if rule.rule_type is RuleType.DATE:
        assert rule.start_date is not None and rule.finish_date is not None
        first_ms = (rule.start_date - _EPOCH).days * DAY_MS
        last_ms = ((rule.finish_date - _EPOCH).days + 1) * DAY_MS - 1
        conditions.append(f"e.event_time_ms BETWEEN {first_ms} AND {last_ms}")
    metric_name = rule.sum_condition.metric_name if rule.sum_condition else None
    # The rule's metric, else the record's first one: map_values keeps the order the record gave them in.
    metric = (f"element_at(e.metrics, {sql_string(metric_name)})" if metric_name
              else "element_at(map_values(e.metrics), 1)")
    # Through the double's shortest text, as the aggregator adds a metric (Decimal(str(value))), so the sums
    # are exact decimals that match the stream's to the last digit.
    value = f"CAST(CAST({metric} AS VARCHAR) AS DECIMAL(38, 17))"
    where = "\n        AND ".join(conditions)
    return f"""\
WITH matching AS (
    SELECT e.user_id, e.event_time_ms,
        coalesce({value}, CAST(0 AS DECIMAL(38, 17))) AS metric_value,
        row_number() OVER (PARTITION BY e.user_id, e.event_id ORDER BY e.arrival_time_ms) AS delivery
    FROM {sql_identifier(database)}.{sql_identifier(table)} AS e
    WHERE {where}
)
SELECT m.user_id,
    CAST(floor(m.event_time_ms / {DAY_MS}.0) AS BIGINT) AS event_day,
    count(*) AS events,
    sum(m.metric_value) AS metric_sum
FROM matching AS m
WHERE m.delivery = 1
GROUP BY m.user_id, CAST(floor(m.event_time_ms / {DAY_MS}.0) AS BIGINT)
ORDER BY 1, 2
"""


def user_days(rows: Iterable[Sequence[str | None]]) -> Iterator[tuple[str, list[DayBucket]]]:
    """Result rows (strings, as Athena returns them, ordered by user) → (user, that user's day totals)."""
    for user_id, user_rows in groupby(rows, key=lambda row: row[0]):
        assert user_id is not None
        yield user_id, [DayBucket(_EPOCH + timedelta(days=int(day)), int(count), _decimal(total))
                        for _, day, count, total in user_rows]


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


class LakeQueries(Protocol):
    """Running a query over the lake."""

    def start(self, sql: str, *, token: str) -> str:
        """Start `sql`; the same `token` again returns the same query instead of starting another."""

    def wait(self, query_id: str, *, timeout_seconds: float) -> QueryState: ...

    def rows(self, query_id: str) -> Iterator[tuple[str | None, ...]]:
        """The result rows (header excluded), every value as text or None."""


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
        header = True
        for page in self._client.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
            for row in page["ResultSet"]["Rows"]:
                if header:  # the first row of the first page holds the column names
                    header = False
                    continue
                yield tuple(cell.get("VarCharValue") for cell in row["Data"])


# --- the backfill ------------------------------------------------------------------------------------


def _query_token(meta: RuleMeta) -> str:
    # Same record version → same token → Athena returns the query already started (a run that died before
    # saving its id); a failed query is forgotten with a new version, so the retry gets a new token.
    return hashlib.sha256(f"backfill:{meta.rule_id}:{meta.activation_ms}:{meta.version}".encode()).hexdigest()


class Backfill:
    """Backfills the date and window rules of a sheet, a bit at a time (`run`)."""

    def __init__(self, store: CounterStore, lake: LakeQueries, *, database: str, table: str, settle_ms: int,
                 activation_delay_ms: int) -> None:
        self._store, self._lake, self._database, self._table = store, lake, database, table
        self._settle_ms, self._activation_delay_ms = settle_ms, activation_delay_ms
        self._done: set[str] = set()  # rules this container saw finished: no request for them any more

    def run(self, rules: RuleSet, *, time_left_ms: Callable[[], int]) -> Counter[BackfillCount]:
        counts: Counter[BackfillCount] = Counter()
        for rule in rules:
            if rule.rule_type is RuleType.AGGREGATOR or rule.rule_id in self._done:
                continue
            if time_left_ms() < STOP_MARGIN_MS:
                break
            # Creating the record here too means a rule is activated even while no events flow.
            meta = self._store.activations.ensure(rule, self._store.now_ms() + self._activation_delay_ms)
            if meta.status is BackfillStatus.DONE:
                self._done.add(rule.rule_id)
                continue
            if self._store.now_ms() < meta.activation_ms + self._settle_ms:
                counts[BackfillCount.RULES_WAITING] += 1
                continue
            self._backfill(rule, meta, counts, time_left_ms)
        return counts

    def _backfill(self, rule: Rule, meta: RuleMeta, counts: Counter[BackfillCount],
                  time_left_ms: Callable[[], int]) -> None:
        if backfill_days(rule, meta.activation_ms) is None:
            self._finish(meta, counts)
            return
        if meta.query_id is None:
            sql = build_backfill_sql(rule, meta.activation_ms, database=self._database, table=self._table)
            query_id = self._lake.start(sql, token=_query_token(meta))
            saved = self._store.activations.save(replace(meta, query_id=query_id, error=None))
            if saved is None:
                return  # another run took this rule on; it carries on
            meta = saved
            logger.info("backfill query started", extra={"rule_id": rule.rule_id, "query_id": query_id})
        assert meta.query_id is not None
        state = self._lake.wait(meta.query_id, timeout_seconds=max(0, time_left_ms() - STOP_MARGIN_MS) / 1000)
        if not state.finished:
            counts[BackfillCount.RULES_WAITING] += 1
            return
        if state.state != "SUCCEEDED":
            logger.error("backfill query failed; the next run starts it again",
                         extra={"rule_id": rule.rule_id, "query_id": meta.query_id, "reason": state.reason})
            counts[BackfillCount.QUERIES_FAILED] += 1
            self._store.activations.save(replace(meta, query_id=None, error=f"{state.state}: {state.reason}"))
            return

        merged = 0
        for user_id, days in user_days(self._lake.rows(meta.query_id)):
            if meta.resume_after is not None and user_id <= meta.resume_after:
                continue
            if time_left_ms() < STOP_MARGIN_MS:
                self._store.activations.save(meta)
                counts[BackfillCount.RULES_WAITING] += 1
                return
            write = self._store.update(rule, user_id, self._merge_step(rule, user_id, days, meta.activation_ms))
            events = sum(day.count for day in days) if write else 0
            meta = replace(meta, resume_after=user_id, users=meta.users + bool(write), events=meta.events + events,
                           qualified=meta.qualified + len(write.outbox if write else ()))
            counts[BackfillCount.USERS] += bool(write)
            counts[BackfillCount.EVENTS] += events
            counts[BackfillCount.QUALIFIED] += len(write.outbox if write else ())
            merged += 1
            if merged % SAVE_EVERY_USERS == 0:
                saved = self._store.activations.save(meta)
                if saved is None:
                    return  # another run is on it too; the counters' marks keep the merge single
                meta = saved
        self._finish(meta, counts)

    def _merge_step(self, rule: Rule, user_id: str, days: list[DayBucket],
                    activation_ms: int) -> Callable[[CounterItem], Write | None]:
        def step(item: CounterItem) -> Write | None:
            if item.backfilled:
                return None
            state, qualifications = apply_backfill(rule, item.state, days, activation_ms, user_id=user_id)
            now_ms = self._store.now_ms()
            return Write(state=state, backfilled=True,
                         outbox=tuple(OutboxEntry.qualified(q, created_ms=now_ms) for q in qualifications))

        return step

    def _finish(self, meta: RuleMeta, counts: Counter[BackfillCount]) -> None:
        if self._store.activations.save(replace(meta, status=BackfillStatus.DONE, error=None)) is not None:
            self._done.add(meta.rule_id)
            counts[BackfillCount.RULES_DONE] += 1
            logger.info("backfill done", extra={"rule_id": meta.rule_id, "users": meta.users, "events": meta.events,
                                                "qualified": meta.qualified})


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
                    settle_ms=settings.settle_minutes * 60_000,
                    activation_delay_ms=settings.rules.max_age_seconds * 1000 + ACTIVATION_MARGIN_MS)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """Lambda entry point (`functions.rules.backfill.lambda_handler`), on an EventBridge schedule."""
    counts = _backfill().run(_rules_source().current(), time_left_ms=context.get_remaining_time_in_millis)
    publish_counts(counts, BackfillCount, _settings().metrics_namespace)
    return {count.value: counts[count] for count in BackfillCount}
