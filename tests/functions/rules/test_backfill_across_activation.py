"""The aggregator and backfill handlers together, on one clock, over moto (DynamoDB, S3) and a local lake
(DuckDB runs the generated Athena SQL): what happens to events around a rule's activation.

- a producer's duplicate whose original arrived before the activation and whose copy arrived after counts
  once, whichever of the copy (live) and the backfill comes first;
- a record that reached the stream before the activation but the lake only after the first pass is merged
  by the late pass, once;
- a rule removed from the sheet and added back gets a new generation and its gap backfilled, nothing twice.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functions.retraining.lake import write_lake
from functions.rules import aggregator as aggregator_module
from functions.rules import backfill as backfill_module
from functions.rules.activation import BackfillStatus, PassKind
from functions.rules.aggregator import Aggregator, AggregatorSettings
from functions.rules.backfill import Backfill
from functions.rules.model import CountCondition, Operator, Rule, RuleSet, RuleType
from functions.rules.rules_source import S3RulesSource
from tests.functions.rules.conftest import Clock, DuckDbLake, app_record, kinesis_event, make_event, ms

DELAY_MS = 70_000  # the rules cache age (60 s) + the activation margin
NOV = Rule(rule_id="nov", rule_type=RuleType.DATE, event_name="purchase", start_date=date(2026, 11, 1),
           finish_date=date(2026, 11, 30), count_condition=CountCondition(Operator.AT_LEAST, 3))
OTHER = Rule(rule_id="buyers", rule_type=RuleType.AGGREGATOR, event_name="purchase",
             count_condition=CountCondition(Operator.AT_LEAST, 100))
FIRST_SEEN = "2026-11-20T12:00:00"  # NOV is activated at 12:01:10


class Engine:
    """Both handlers wired to the test's clock, tables, published rules and lake. `stream` sends records (an
    id, the event's time and the Kinesis arrival) through the aggregator handler and, unless told otherwise,
    into the lake; `backfill` runs the backfill handler."""

    def __init__(self, aws, monkeypatch, context, lake: DuckDbLake, clock: Clock) -> None:
        self.aws, self.context, self.lake, self.clock = aws, context, lake, clock
        self.rules_clock = Clock()
        self.lake_events: list = []
        self._sequence = 49_000_000_000_000_000_000
        source = S3RulesSource(aws.s3, AggregatorSettings.from_env().rules, clock=self.rules_clock)
        self.aggregator = Aggregator(aws.store(clock), activation_delay_ms=DELAY_MS)
        self.job = Backfill(aws.store(clock), lake, database="engagement_loop", table="events",
                            settle_ms=15 * 60_000, activation_delay_ms=DELAY_MS, lateness_ms=25 * 3_600_000,
                            horizon_ms=24 * 3_600_000)
        for module, target in ((aggregator_module, self.aggregator), (backfill_module, self.job)):
            monkeypatch.setattr(module, "_rules_source", lambda: source)
        monkeypatch.setattr(aggregator_module, "_aggregator", lambda: self.aggregator)
        monkeypatch.setattr(backfill_module, "_backfill", lambda: self.job)

    def publish(self, rules: RuleSet) -> None:
        """Publish `rules` and let the functions' cached copy expire."""
        self.aws.publish(rules)
        self.rules_clock.advance(61)

    def stream(self, event_id: str, arrival: str, *, at: str | None = None, user: str = "u1",
               to_lake: bool = True) -> dict[str, Any]:
        self.clock.set(arrival)
        payload = app_record(event_id, user=user, at=at or arrival)
        response = aggregator_module.lambda_handler(kinesis_event([payload], arrival=arrival, first=self._sequence),
                                                    self.context)
        self._sequence += 1_000
        if to_lake:
            self.to_lake(event_id, arrival, at=at, user=user)
        return response

    def to_lake(self, event_id: str, arrival: str, *, at: str | None = None, user: str = "u1") -> None:
        self.lake_events.append(make_event(event_id, user=user, at=at or arrival, arrival=arrival))
        write_lake(self.lake_events, self.lake.root)

    def land_late(self, event_id: str, arrival: str, *, user: str = "u1") -> None:
        """A record Firehose delivers to the lake only now: a new object in its arrival day's partition."""
        staging = self.lake.root.parent / "late"
        shutil.rmtree(staging, ignore_errors=True)
        (written,) = write_lake([make_event(event_id, user=user, at=arrival, arrival=arrival)], staging)
        target = self.lake.root / "events" / written.parent.name / f"part-late-{event_id}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(written, target)

    def keep_flowing(self, until: str, *, every_seconds: int = 240) -> None:
        """Other users' views every few minutes until `until`: a stream that never goes quiet for longer than a
        heartbeat's stale limit (a quiet stream gives the rule a new generation, see the quiet-stream test)."""
        moment = self.clock() + every_seconds
        while moment < ms(until) / 1000:
            arrival = datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            self.clock.set(arrival)
            payload = app_record(f"view-{moment}", "view", user="someone-else", at=arrival)
            aggregator_module.lambda_handler(kinesis_event([payload], arrival=arrival, first=self._sequence),
                                             self.context)
            self._sequence += 1_000
            moment += every_seconds

    def backfill(self, at: str) -> dict[str, int]:
        self.clock.set(at)
        return backfill_module.lambda_handler({}, self.context)

    def count(self, rule_id: str = "nov", user: str = "u1") -> int:
        counter = self.aws.counter(rule_id, user)
        return counter.state.count if counter else 0


@pytest.fixture
def engine(aws, monkeypatch, context, tmp_path: Path, clock) -> Engine:
    """NOV is published at FIRST_SEEN: the events before arrived while no function had it (lake only)."""
    aws.publish(RuleSet((NOV, OTHER)))
    return Engine(aws, monkeypatch, context, DuckDbLake(tmp_path / "lake"), clock)


def meta_writes(aws) -> list[str]:
    """The keys of the activation records the functions' client writes from now on."""
    keys: list[str] = []
    aws.dynamodb.meta.events.register(
        "provide-client-params.dynamodb.PutItem",
        lambda params, **_: keys.append(params["Item"]["pk"]["S"]) if params["Item"]["pk"]["S"].startswith("meta#")
        else None)
    return keys


# --- a producer's duplicate across the activation ----------------------------------------------------------


def test_an_original_before_the_activation_and_its_copy_counted_live_first_count_once(engine):
    engine.to_lake("p0", "2026-11-20T10:00:00")
    engine.to_lake("p1", "2026-11-20T11:00:00")           # the original: before the activation, lake only
    engine.stream("a1", FIRST_SEEN)                         # the rule is seen: activation 12:01:10
    engine.stream("p1", "2026-11-20T12:05:00", at="2026-11-20T11:00:00", to_lake=False)  # the copy, live
    assert engine.count() == 1
    result = engine.backfill("2026-11-20T12:20:00")
    assert result["BackfillPassesDone"] == 1 and result["BackfillEventsAlreadyCounted"] == 1
    # p0 and a1 from the lake (a1 arrived before the activation too), p1 once.
    assert engine.count() == 3
    assert engine.aws.counter("nov", "u1").state.qualified


def test_an_original_backfilled_first_and_its_copy_arriving_live_later_count_once(engine):
    engine.to_lake("p1", "2026-11-20T11:00:00")
    engine.stream("a1", FIRST_SEEN)
    engine.backfill("2026-11-20T12:20:00")
    assert engine.count() == 2
    engine.keep_flowing("2026-11-20T12:30:00")
    engine.stream("p1", "2026-11-20T12:30:00", at="2026-11-20T11:00:00", to_lake=False)  # the copy, live
    engine.stream("p2", "2026-11-20T12:31:00")
    assert engine.count() == 3
    engine.backfill("2026-11-21T13:01:10")  # the late pass: nothing new
    assert engine.count() == 3


def test_a_copy_beyond_the_dedupe_horizon_counts_again(engine):
    """Producer duplicates are one event only within the horizon of stream arrival (docs/backfill.md)."""
    engine.to_lake("p1", "2026-11-19T11:00:00")
    engine.stream("a1", FIRST_SEEN)
    engine.backfill("2026-11-20T12:20:00")
    engine.keep_flowing("2026-11-20T12:30:00")
    engine.stream("p1", "2026-11-20T12:30:00", at="2026-11-19T11:00:00", to_lake=False)  # 25.5 h later
    assert engine.count() == 3


# --- records that reach the lake after the first pass ------------------------------------------------------


def test_a_record_that_lands_in_the_lake_after_the_first_pass_is_merged_by_the_late_pass_once(engine):
    engine.to_lake("p1", "2026-11-20T10:00:00")
    engine.stream("a1", FIRST_SEEN)
    # Reached the stream before the activation, but Firehose delivers it to S3 only after the first pass.
    engine.stream("late", "2026-11-20T12:00:30", to_lake=False)
    assert engine.backfill("2026-11-20T12:20:00")["BackfillEvents"] == 2
    engine.land_late("late", "2026-11-20T12:00:30")
    early = engine.backfill("2026-11-21T13:00:00")
    assert early["BackfillRulesWaiting"] == 1 and engine.count() == 2  # the lateness bound is not over yet
    result = engine.backfill("2026-11-21T13:01:10")
    assert (result["BackfillLateEvents"], result["BackfillRulesDone"]) == (1, 1)
    assert result["BackfillEventsAlreadyCounted"] == 0  # what the first pass read is left out by the anti-join
    assert engine.count() == 3 and engine.aws.counter("nov", "u1").state.qualified
    meta = engine.job._store.activations.read("nov")
    assert [(p.kind, p.status) for p in meta.passes] == [(PassKind.FIRST, BackfillStatus.DONE),
                                                        (PassKind.LATE, BackfillStatus.DONE)]
    engine.backfill("2026-11-21T14:00:00")
    assert engine.count() == 3


def test_the_late_pass_reads_only_the_lateness_before_the_activation(engine):
    engine.stream("a1", FIRST_SEEN)
    engine.backfill("2026-11-20T12:20:00")
    engine.backfill("2026-11-21T13:01:10")
    first_sql, late_sql = engine.lake.sql
    assert "\"dt\" >= '2026-11-01'" in first_sql
    late_from = ms(FIRST_SEEN) + DELAY_MS - 25 * 3_600_000
    assert f"m.arrival_time_ms >= {late_from}" in late_sql
    assert "\"dt\" >= '2026-11-18'" in late_sql  # the lateness + the dedupe horizon before the activation
    assert f"e.arrival_time_ms < {ms(FIRST_SEEN) + DELAY_MS}" in late_sql


def test_an_event_stamped_before_the_activation_that_reached_the_stream_after_it_counts_live_only(engine):
    """One clock: Kinesis arrival splits live from backfill, whatever the record's own time says."""
    engine.stream("a1", FIRST_SEEN)
    engine.keep_flowing("2026-11-20T12:10:00")
    engine.stream("slow", "2026-11-20T12:10:00", at="2026-11-20T11:30:00")  # e.g. an SES event retried
    assert engine.count() == 1
    engine.backfill("2026-11-20T12:20:00")
    engine.backfill("2026-11-21T13:01:10")
    assert engine.count() == 2  # a1 from the lake, `slow` live


# --- a rule removed and added back -------------------------------------------------------------------------


def test_a_rule_removed_and_added_back_is_reactivated_and_its_gap_backfilled_once(engine):
    engine.to_lake("h1", "2026-11-20T09:00:00")              # history: the first generation's backfill
    engine.stream("a1", FIRST_SEEN)                            # generation 1, activated 12:01:10
    engine.stream("l1", "2026-11-20T12:05:00")               # live (and a heartbeat)
    engine.stream("l2", "2026-11-20T12:09:00")               # live
    engine.publish(RuleSet((OTHER,)))                          # NOV leaves the sheet
    engine.stream("gap1", "2026-11-20T12:30:00")             # counted by nobody live
    engine.stream("gap2", "2026-11-20T12:59:00")
    engine.publish(RuleSet((NOV, OTHER)))                      # ... and comes back
    engine.stream("back", "2026-11-20T13:00:00")             # seen again: generation 2, activated 13:01:10
    engine.stream("l3", "2026-11-20T13:05:00")               # live again
    engine.keep_flowing("2026-11-20T13:20:00")
    assert engine.count() == 3  # l1, l2, l3
    meta = engine.job._store.activations.read("nov")
    assert meta.generation == 2 and meta.activation_ms == ms("2026-11-20T13:00:00") + DELAY_MS
    gap = meta.pass_of("g2.first")
    # The function saw NOV leave at 12:30 (its first batch after the sheet changed) and recorded it; the last
    # heartbeat was 12:05. The gap starts an hour before the earlier of the two, but not before the previous
    # activation; arrivals until a cache age + margins after the leaving may have been counted live.
    assert gap.last_beat_ms == ms("2026-11-20T12:05:00")
    assert gap.from_ms == ms(FIRST_SEEN) + DELAY_MS
    assert gap.ambiguous_until_ms == ms("2026-11-20T12:30:00") + DELAY_MS + 30_000

    result = engine.backfill("2026-11-20T13:20:00")
    assert result["BackfillPassesDone"] == 2  # generation 1's first pass and the gap's
    # l1 and l2 lie in the ambiguous span (to the last heartbeat + 5.5 min): the counter has seen them.
    assert result["BackfillEventsAlreadyCounted"] == 2
    # h1 and a1 (generation 1), gap1, gap2 and back (the gap), l1, l2, l3 (live): each once.
    assert engine.count() == 8
    engine.backfill("2026-11-21T14:05:00")  # both late passes
    assert engine.count() == 8
    assert engine.job._store.activations.read("nov").status is BackfillStatus.DONE


def test_a_rule_whose_id_returns_after_its_backfill_finished_gets_its_gap_backfilled(engine):
    engine.stream("a1", FIRST_SEEN)
    engine.backfill("2026-11-20T12:20:00")
    engine.backfill("2026-11-21T13:01:10")
    assert engine.job._store.activations.read("nov").status is BackfillStatus.DONE
    engine.publish(RuleSet((OTHER,)))
    engine.stream("gap", "2026-11-21T14:00:00")
    engine.publish(RuleSet((NOV, OTHER)))
    engine.stream("back", "2026-11-22T09:00:00")
    result = engine.backfill("2026-11-22T09:20:00")
    assert result["BackfillPassesDone"] == 1
    assert engine.count() == 3  # a1, gap, back


def test_a_sparse_stream_keeps_the_generation(engine):
    engine.stream("a1", FIRST_SEEN)
    for minute in range(6, 60, 6):  # a record every 6 minutes: heartbeats 11 to 12 minutes apart
        engine.stream(f"l{minute}", f"2026-11-20T12:{minute:02d}:00")
    assert engine.job._store.activations.read("nov").generation == 1
    assert engine.count() == 9


def test_a_stream_quiet_for_minutes_starts_a_cheap_generation_and_nothing_is_lost(engine):
    """A stream quiet for longer than the short fallback (11 min 40 s) looks like an absence: a spurious
    generation, whose gap passes read only the gap's day (no look-back) and which is pruned once done."""
    engine.stream("a1", FIRST_SEEN)
    engine.stream("l1", "2026-11-20T12:05:00")
    engine.stream("after", "2026-11-20T12:30:00")  # quiet for 25 minutes: no container saw the rule leave
    meta = engine.job._store.activations.read("nov")
    assert meta.generation == 2 and meta.activation_ms == ms("2026-11-20T12:30:00") + DELAY_MS
    assert engine.count() == 1  # l1 live; `after` arrived before the new activation: the gap backfill's
    engine.keep_flowing("2026-11-20T12:50:00")
    engine.backfill("2026-11-20T12:50:00")
    assert engine.count() == 3  # a1 (generation 1's first pass), l1 (live), `after` (the gap's first pass)
    gap_sql = engine.lake.sql[-1]
    assert "e.arrival_time_ms >= " + str(meta.pass_of("g2.first").from_ms) in gap_sql  # no look-back
    assert "e.dt >= '2026-11-20'" in gap_sql.replace('"', "")  # the gap's one day of partitions
    engine.keep_flowing("2026-11-21T13:40:00", every_seconds=240)
    engine.backfill("2026-11-21T13:40:00")  # both late passes
    assert engine.count() == 3
    meta = engine.job._store.activations.read("nov")
    assert meta.status is BackfillStatus.DONE and [p.key for p in meta.passes] == ["g2.first", "g2.late"]


def test_absence_seen_by_no_warm_container_is_lost(engine, monkeypatch):
    """Regression (review 3): the fallback had gone to 2 h, but `left_at_ms` is only written by a warm
    container that held the rule when it left; after a deploy/recycle no such container exists, so an absence
    shorter than 2 h lost its gap events. The fallback is the cache age + 2 heartbeats + margin again."""
    engine.stream("a1", FIRST_SEEN)
    engine.stream("l1", "2026-11-20T12:03:00")
    engine.publish(RuleSet((OTHER,)))                 # NOV leaves; a deploy/recycle: a fresh container
    fresh = Aggregator(engine.aggregator._store, activation_delay_ms=DELAY_MS)
    monkeypatch.setattr(aggregator_module, "_aggregator", lambda: fresh)
    engine.stream("gap", "2026-11-20T12:20:00")       # nobody counts it live; nobody records left_at
    engine.publish(RuleSet((NOV, OTHER)))
    engine.stream("back", "2026-11-20T12:40:00")      # back after 37 min
    meta = engine.job._store.activations.read("nov")
    assert meta.generation == 2 and meta.left_at_ms is None
    engine.keep_flowing("2026-11-20T13:00:00")
    engine.backfill("2026-11-20T13:00:00")
    engine.keep_flowing("2026-11-21T14:00:00", every_seconds=240)
    engine.backfill("2026-11-21T14:00:00")
    assert engine.count() == 4                        # a1, l1, gap, back: each once


def test_leave_write_failure_is_retried_and_blocks_no_counting(engine, monkeypatch):
    """Regression (review 3): the rule was forgotten before `leave()` ran, so a throttled write was never
    retried and the rule's return within the fallback kept its generation. Regression (review 4): the retry
    then failed the whole batch, stopping every other rule's counting while the write failed."""
    engine.stream("a1", FIRST_SEEN)
    engine.stream("l1", "2026-11-20T12:03:00")
    engine.publish(RuleSet((OTHER,)))
    acts = engine.aggregator._activations.activations
    real = acts.leave
    calls = []

    def throttled(meta, *, now_ms):
        calls.append(now_ms)
        if len(calls) == 1:
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"}}, "PutItem")
        return real(meta, now_ms=now_ms)

    monkeypatch.setattr(acts, "leave", throttled)
    buyers = engine.count(OTHER.rule_id)
    engine.stream("gap", "2026-11-20T12:05:00")       # the leaving cannot be recorded: the batch goes on
    assert engine.count(OTHER.rule_id) == buyers + 1  # and the rules still in force count it
    assert engine.job._store.activations.read("nov").left_at_ms is None
    engine.stream("gap2", "2026-11-20T12:06:00")      # the next batch records the leaving
    assert len(calls) == 2
    assert engine.job._store.activations.read("nov").left_at_ms == ms("2026-11-20T12:06:00")
    engine.publish(RuleSet((NOV, OTHER)))
    engine.stream("back", "2026-11-20T12:09:00")
    assert engine.job._store.activations.read("nov").generation == 2


def test_a_stream_quiet_past_the_fallback_limit_starts_a_generation_and_nothing_is_lost(engine):
    engine.stream("a1", FIRST_SEEN)
    engine.stream("l1", "2026-11-20T12:05:00")
    engine.stream("after", "2026-11-20T14:30:00")  # quiet for 2 h 25 min: the heartbeat's fallback
    meta = engine.job._store.activations.read("nov")
    assert meta.generation == 2 and meta.activation_ms == ms("2026-11-20T14:30:00") + DELAY_MS
    assert engine.count() == 1  # `after` arrived before the new activation: the gap backfill's
    engine.keep_flowing("2026-11-20T14:50:00")
    engine.backfill("2026-11-20T14:50:00")
    assert engine.count() == 3  # a1 (the first generation's backfill), l1 (live), `after` (the gap's)
    assert "e.arrival_time_ms >= " + str(meta.pass_of("g2.first").from_ms) in engine.lake.sql[-1]  # no look-back


def test_heartbeats_cost_one_request_per_rule_every_five_minutes_of_processing(engine):
    writes = meta_writes(engine.aws)
    engine.stream("a1", FIRST_SEEN)  # first sight: the record is created, heartbeat included
    assert writes == ["meta#nov"]
    for second in range(30, 300, 30):  # nine batches in the next five minutes: no activation request
        engine.stream(f"b{second}", f"2026-11-20T12:0{second // 60}:{second % 60:02d}", to_lake=False)
    assert writes == ["meta#nov"]
    engine.stream("c1", "2026-11-20T12:05:00", to_lake=False)
    assert writes == ["meta#nov"] * 2  # one heartbeat per date or window rule every five minutes
    assert engine.job._store.activations.read("nov").seen_until_ms == ms("2026-11-20T12:05:00")


def test_a_rule_removed_and_added_back_within_minutes_loses_nothing(engine):
    """Regression (review): only a stale heartbeat revealed an absence, so a rule back within ~11.5 minutes
    kept its generation and the events in between were counted by nobody. Now the container that sees it
    leave records `left_at_ms`, and the rule's return starts a generation."""
    engine.stream("a1", FIRST_SEEN)
    engine.stream("l1", "2026-11-20T12:03:00")
    engine.publish(RuleSet((OTHER,)))                          # NOV leaves the sheet
    engine.stream("gap", "2026-11-20T12:05:00")               # nobody counts it live
    engine.publish(RuleSet((NOV, OTHER)))                      # back 2 minutes later
    engine.stream("back", "2026-11-20T12:07:00")
    assert engine.job._store.activations.read("nov").generation == 2
    engine.keep_flowing("2026-11-20T12:30:00")
    engine.backfill("2026-11-20T12:30:00")
    engine.keep_flowing("2026-11-21T13:10:00", every_seconds=240)
    engine.backfill("2026-11-21T13:10:00")                     # the late passes (g2's due at 13:08:10)
    assert engine.count() == 4                                 # a1, l1, gap, back: each once
    meta = engine.job._store.activations.read("nov")
    assert meta.status is BackfillStatus.DONE and [p.key for p in meta.passes] == ["g2.first", "g2.late"]
