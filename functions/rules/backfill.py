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

import enum
import functools
import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from botocore.exceptions import ClientError

from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.lake_names import InvalidName, check_glue_name, check_workgroup_name
from functions.retraining.sql import DEFAULT_DATABASE, DEFAULT_TABLE
from functions.rules.aggregator import ACTIVATION_MARGIN_MS, publish_counts
from functions.rules.evaluate import apply_backfill
from functions.rules.outbox import OutboxEntry
from functions.rules.rules_source import Env, RulesSettings, RulesSource, S3RulesSource
from functions.rules.model import Rule, RuleSet, RuleType
from functions.rules.activation import BackfillPass, BackfillStatus, PassKind, RuleMeta
from functions.rules.backfill_query import (
    ListedEvent, UserRows, anti_join, build_backfill_sql, each_user, merged_buckets, pass_query, user_rows,
)
from functions.rules.lake_queries import AthenaLakeQueries, LakeQueries, ResultsGone
from functions.rules.dedupe import DEDUPE_HORIZON_HOURS, remember
from functions.rules.counter_item import CounterItem, Write
from functions.rules.store import CounterStore, StoreSettings

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
"""A row is a user's day total (`event_id` and `arrival_time_ms` NULL) or one event."""


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


class _PassResultsGone(Exception):
    """`ResultsGone` while merging a pass, saying whose results: the pass's own query's (`own`: re-run it) or
    its first pass's (a late pass's anti-join: unrecoverable)."""

    def __init__(self, query_id: str | None, *, own: bool, reason: str) -> None:
        super().__init__(f"{'own' if own else 'first pass'} query {query_id}: {reason}")
        self.query_id, self.own, self.reason = query_id, own, reason


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
            users = each_user(user_rows(self._rows(backfill_pass.query_id, own=True)))
            if backfill_pass.kind is PassKind.LATE:
                # What the first pass read, not the counter's `seen` (which forgets past the dedupe horizon and
                # the id cap): the late pass merges only the events its first pass did not list.
                first = self._first_of(meta, backfill_pass)
                if first is None or first.query_id is None:
                    raise _PassResultsGone(None, own=False, reason="the first pass recorded no query")
                users = anti_join(user_rows(self._rows(backfill_pass.query_id, own=True)),
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
            days = merged_buckets(totals, fresh)
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
