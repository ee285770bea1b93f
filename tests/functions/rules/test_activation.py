"""Activation records on moto's DynamoDB: heartbeats and backfill progress never overwrite each other, a stale
heartbeat starts one new generation however many functions see it, and records from before the passes read
back as one pending (or finished) backfill."""

from __future__ import annotations

from dataclasses import replace
from datetime import date


from functions.rules.activation import (
    CLOCK_MARGIN_MS,
    GAP_LEAD_MS,
    HEARTBEAT_MS,
    MetaChanged,
    ActivationCache,
    BackfillStatus,
    PassKind,
    RuleMeta,
    stale_after_ms,
)
from functions.rules.dynamo import to_attributes
from functions.rules.model import CountCondition, Operator, Rule, RuleSet, RuleType
from tests.functions.rules.conftest import SETTINGS, ms

DELAY_MS = 70_000
NOV = Rule(rule_id="nov", rule_type=RuleType.DATE, event_name="purchase", start_date=date(2026, 11, 1),
           finish_date=date(2026, 11, 30), count_condition=CountCondition(Operator.AT_LEAST, 3))
T0 = ms("2026-11-20T12:00:00")


def cache(aws, now: list[int]) -> ActivationCache:
    return ActivationCache(aws.store(lambda: now[0] / 1000).activations, lambda: now[0], DELAY_MS)


def test_a_heartbeat_and_the_backfills_progress_never_overwrite_each_other(aws):
    activations = aws.store(lambda: T0 / 1000).activations
    created = activations.ensure(NOV, T0 + DELAY_MS, seen_until_ms=T0)
    read_by_backfill = activations.read("nov")
    beaten = activations.beat(created, NOV, now_ms=T0 + HEARTBEAT_MS, activation_delay_ms=DELAY_MS)
    assert beaten.seen_until_ms == T0 + HEARTBEAT_MS and beaten.version == created.version  # no version move
    first = read_by_backfill.passes[0]
    saved = activations.save(read_by_backfill.with_pass(replace(first, query_id="q-1")))
    assert saved is not None and saved.seen_until_ms == T0 + HEARTBEAT_MS  # the heartbeat is kept
    # A function still holding the record as it read it: its heartbeat must not roll the progress back.
    again = activations.beat(beaten, NOV, now_ms=T0 + 2 * HEARTBEAT_MS, activation_delay_ms=DELAY_MS)
    stored = activations.read("nov")
    assert stored.passes[0].query_id == "q-1" and stored.seen_until_ms == T0 + 2 * HEARTBEAT_MS
    assert again == stored


def test_a_save_from_a_previous_version_or_generation_is_refused(aws):
    activations = aws.store(lambda: T0 / 1000).activations
    meta = activations.ensure(NOV, T0 + DELAY_MS, seen_until_ms=T0)
    assert activations.save(meta) is not None
    assert activations.save(meta) is None  # stale version


def test_a_stale_heartbeat_starts_one_new_generation_whoever_sees_it(aws):
    now = [T0]
    one, two = cache(aws, now), cache(aws, now)
    assert one.current(RuleSet((NOV,))) == {"nov": T0 + DELAY_MS}
    assert two.current(RuleSet((NOV,))) == {"nov": T0 + DELAY_MS}
    back = T0 + stale_after_ms(DELAY_MS) + 1
    now[0] = back
    assert one.current(RuleSet((NOV,))) == {"nov": back + DELAY_MS}
    assert two.current(RuleSet((NOV,))) == {"nov": back + DELAY_MS}  # adopts it, no third generation
    meta = aws.store(lambda: back / 1000).activations.read("nov")
    assert meta.generation == 2
    gap_first, gap_late = meta.passes[2:]
    assert (gap_first.kind, gap_late.kind) == (PassKind.FIRST, PassKind.LATE)
    assert gap_first.from_ms == T0 + DELAY_MS == max(T0 + DELAY_MS, T0 - GAP_LEAD_MS)
    assert gap_first.ambiguous_until_ms == T0 + HEARTBEAT_MS + CLOCK_MARGIN_MS
    assert gap_first.to_ms == back + DELAY_MS and gap_first.last_beat_ms == T0
    assert [p.status for p in meta.passes] == [BackfillStatus.PENDING] * 4  # generation 1's passes stay


def test_a_rule_that_leaves_a_containers_rule_set_is_looked_up_again_when_it_returns(aws):
    now = [T0]
    container = cache(aws, now)
    container.current(RuleSet((NOV,)))
    other = Rule(rule_id="other", rule_type=RuleType.AGGREGATOR, event_name="x",
                 count_condition=CountCondition(Operator.AT_LEAST, 1))
    assert container.current(RuleSet((other,))) == {}
    meta = aws.store(lambda: T0 / 1000).activations.read("nov")
    assert meta.left_at_ms == T0 and meta.generation == 1  # seen leaving: recorded, one request
    now[0] = T0 + 60_000
    aws.calls.clear()
    # Back a minute later: a new generation (its gap backfill covers the minute nobody counted), although the
    # heartbeat is recent. The failed create reads the record back; the new generation is one more request.
    assert container.current(RuleSet((NOV,))) == {"nov": T0 + 60_000 + DELAY_MS}
    assert aws.calls == {"PutItem": 2}
    meta = aws.store(lambda: T0 / 1000).activations.read("nov")
    assert meta.generation == 2 and meta.left_at_ms is None
    gap = meta.pass_of("g2.first")
    assert gap.from_ms == T0 + DELAY_MS and gap.ambiguous_until_ms == T0 + 60_000 + DELAY_MS


def test_a_leaving_that_could_not_be_recorded_is_recorded_by_the_next_call(aws, monkeypatch):
    """Regression (review 3): the rule was forgotten before `leave()`, so a failed write (throttled, or the
    record still changing after every attempt) was never retried. Now the rule stays known and the next call
    records the leaving; the call itself does not fail (review 4: failing it stopped every rule's counting)."""
    now = [T0]
    container = cache(aws, now)
    container.current(RuleSet((NOV,)))
    other = Rule(rule_id="other", rule_type=RuleType.AGGREGATOR, event_name="x",
                 count_condition=CountCondition(Operator.AT_LEAST, 1))
    table = container.activations._table
    real_put = table.put_if

    def changing(meta, **conditions):  # another writer moves the record every time: the attempts run out
        raise MetaChanged(table.get(meta.rule_id))

    monkeypatch.setattr(table, "put_if", changing)
    assert set(container.current(RuleSet((other,)))) == {"nov"}  # not recorded: still known, no exception
    assert aws.store(lambda: T0 / 1000).activations.read("nov").left_at_ms is None
    monkeypatch.setattr(table, "put_if", real_put)
    now[0] = T0 + 1_000
    assert container.current(RuleSet((other,))) == {}
    assert aws.store(lambda: T0 / 1000).activations.read("nov").left_at_ms == T0 + 1_000
    assert container.current(RuleSet((other,))) == {}  # forgotten once recorded: no further request


def test_the_stale_limit_is_the_cache_age_plus_two_heartbeats_and_the_margin():
    """Regression (review 3): the fallback was 2 h, which lost the gap events of any shorter absence no warm
    container saw (a deploy or recycle in between)."""
    assert stale_after_ms(DELAY_MS) == DELAY_MS + 2 * HEARTBEAT_MS + CLOCK_MARGIN_MS == 700_000  # 11 min 40 s


def test_a_container_that_still_has_the_rule_when_another_saw_it_leave_starts_no_generation(aws):
    now = [T0]
    one, two = cache(aws, now), cache(aws, now)
    one.current(RuleSet((NOV,)))
    two.current(RuleSet((NOV,)))
    other = Rule(rule_id="other", rule_type=RuleType.AGGREGATOR, event_name="x",
                 count_condition=CountCondition(Operator.AT_LEAST, 1))
    now[0] = T0 + HEARTBEAT_MS - 30_000
    one.current(RuleSet((other,)))                       # `one` reloaded the sheet: NOV left
    now[0] = T0 + HEARTBEAT_MS + 10_000                  # `two` has not reloaded yet (within the cache age)
    assert two.current(RuleSet((NOV,))) == {"nov": T0 + DELAY_MS}
    assert aws.store(lambda: T0 / 1000).activations.read("nov").generation == 1


def test_a_record_from_before_the_passes_reads_as_one_backfill(aws):
    legacy = {"pk": "meta#nov", "rule_id": "nov", "activation_ms": T0, "fingerprint": "f", "backfill": "pending",
              "query_id": "q-7", "resume_after": "u5", "users": 5, "events": 9, "qualified": 1, "error": None,
              "version": 4}
    aws.inspect.put_item(TableName=SETTINGS.counters_table, Item=to_attributes(legacy))
    meta = aws.store(lambda: T0 / 1000).activations.read("nov")
    assert (meta.generation, meta.seen_until_ms, meta.users, meta.version) == (1, None, 5, 4)
    first, late = meta.passes
    assert (first.query_id, first.resume_after, first.status) == ("q-7", "u5", BackfillStatus.PENDING)
    assert late.kind is PassKind.LATE and late.status is BackfillStatus.PENDING
    done = RuleMeta.from_item({**legacy, "backfill": "done"})
    assert done.status is BackfillStatus.DONE


def test_a_returning_rule_keeps_its_pending_passes_and_drops_finished_generations(aws):
    meta = RuleMeta.first(NOV, T0, seen_until_ms=T0)
    for generation in range(2, 7):
        meta = replace(meta, passes=tuple(replace(p, status=BackfillStatus.DONE) for p in meta.passes))
        meta = meta.returned(now_ms=T0 + generation * 3_600_000, activation_ms=T0 + generation * 3_600_000)
    assert meta.generation == 6
    assert [p.key for p in meta.passes] == ["g6.first", "g6.late"]
    # A finished first pass stays while its late pass is pending: the late pass re-reads its results.
    meta = meta.with_pass(replace(meta.pass_of("g6.first"), status=BackfillStatus.DONE, query_id="q-first"))
    meta = meta.returned(now_ms=T0 + 8 * 3_600_000, activation_ms=T0 + 8 * 3_600_000)
    assert [p.key for p in meta.passes] == ["g6.first", "g6.late", "g7.first", "g7.late"]
    assert meta.pass_of("g6.first").query_id == "q-first"