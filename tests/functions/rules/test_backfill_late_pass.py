"""The late pass against what its first pass read (docs/backfill.md, "The passes"): regression tests of an
adversarial review. The late pass used to compare with the counter's `seen`, which forgets: an id pruned by a
later live write (older than the dedupe horizon), or dropped by the 5,000-id cap, was merged a second time."""

from __future__ import annotations

from datetime import datetime, timezone

from functions.retraining.lake import write_lake
from functions.rules.activation import BackfillStatus
from functions.rules.backfill import ResultsGone
from functions.rules.dedupe import SEEN_MAX_ENTRIES
from tests.functions.rules.conftest import make_event, ms
from tests.functions.rules import test_backfill_across_activation as across

FIRST_SEEN = across.FIRST_SEEN
engine = across.engine  # the fixture: both handlers on one clock over moto and a DuckDB lake


def _iso(moment_ms: int) -> str:
    return datetime.fromtimestamp(moment_ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def test_an_original_skipped_as_counted_live_is_not_merged_by_the_late_pass_once_seen_forgot_it(engine):
    engine.to_lake("p1", "2026-11-20T11:00:00")            # original, before activation (lake only)
    engine.stream("a1", FIRST_SEEN)                          # activation 12:01:10
    engine.stream("p1", "2026-11-20T12:05:00", at="2026-11-20T11:00:00", to_lake=False)  # the copy, live
    engine.keep_flowing("2026-11-20T12:20:00")
    engine.backfill("2026-11-20T12:20:00")                   # first pass: p1 seen -> skipped, a1 merged
    assert engine.count() == 2
    engine.keep_flowing("2026-11-21T12:10:00", every_seconds=280)
    engine.stream("l2", "2026-11-21T12:10:00")               # a live write > 24 h after the copy: prunes p1
    assert engine.count() == 3
    engine.backfill("2026-11-21T13:01:10")                   # late pass
    assert engine.count() == 3                               # a1, p1 once, l2


def test_a_returning_rules_ambiguous_live_event_is_not_merged_by_the_late_pass_once_seen_forgot_it(engine):
    engine.stream("a1", FIRST_SEEN)
    engine.stream("l1", "2026-11-20T12:03:00")               # live
    engine.stream("after", "2026-11-20T15:00:00")            # quiet 3 h: beyond the fallback, generation 2
    assert engine.job._store.activations.read("nov").generation == 2
    engine.keep_flowing("2026-11-20T15:20:00", every_seconds=280)
    engine.backfill("2026-11-20T15:20:00")
    assert engine.count() == 3                               # a1 (g1), l1 (live), after (gap)
    engine.keep_flowing("2026-11-21T16:10:00", every_seconds=280)
    engine.stream("l2", "2026-11-21T16:10:00")               # live; prunes l1 from seen
    assert engine.count() == 4
    engine.backfill("2026-11-21T16:20:00")                   # both late passes
    meta = engine.job._store.activations.read("nov")
    assert meta.status is BackfillStatus.DONE
    assert engine.count() == 4


def _heavy_user(engine, events: int) -> None:
    base = ms("2026-11-20T00:00:00")
    for i in range(events):  # one purchase every 8 s in the 12 h before the activation
        iso = _iso(base + i * 8_000)
        engine.lake_events.append(make_event(f"h{i}", user="u1", at=iso, arrival=iso))
    write_lake(engine.lake_events, engine.lake.root)


def test_a_heavy_user_over_the_seen_cap_is_not_merged_again_by_the_late_pass(engine):
    _heavy_user(engine, SEEN_MAX_ENTRIES + 100)
    engine.stream("a1", FIRST_SEEN)
    engine.keep_flowing("2026-11-20T12:20:00")
    engine.backfill("2026-11-20T12:20:00")
    first = engine.count()
    assert first == SEEN_MAX_ENTRIES + 101
    engine.keep_flowing("2026-11-21T13:01:00", every_seconds=290)
    result = engine.backfill("2026-11-21T13:01:10")          # late pass; nothing landed late
    assert result["BackfillLateEvents"] == 0 and engine.count() == first


def test_a_heavy_users_record_landing_late_is_merged_once(engine):
    _heavy_user(engine, SEEN_MAX_ENTRIES + 100)
    engine.stream("a1", FIRST_SEEN)
    engine.stream("late", "2026-11-20T12:00:30", to_lake=False)  # reaches the lake after the first pass
    engine.keep_flowing("2026-11-20T12:20:00")
    engine.backfill("2026-11-20T12:20:00")
    first = engine.count()
    engine.land_late("late", "2026-11-20T12:00:30")
    engine.keep_flowing("2026-11-21T13:01:00", every_seconds=290)
    result = engine.backfill("2026-11-21T13:01:10")
    assert result["BackfillLateEvents"] == 1 and engine.count() == first + 1
    engine.backfill("2026-11-21T14:00:00")
    assert engine.count() == first + 1


def test_backfill_ids_are_remembered_with_their_true_arrival(engine):
    engine.to_lake("p1", "2026-11-20T11:00:00")
    engine.stream("a1", FIRST_SEEN)
    engine.backfill("2026-11-20T12:20:00")
    seen = engine.aws.counter("nov", "u1").seen
    assert max(seen.values()) <= ms("2026-11-20T12:20:00")   # nothing stored with a future arrival
    assert ms("2026-11-20T11:00:00") in seen.values()


def test_a_late_pass_whose_first_results_are_gone_fails_loudly_and_merges_nothing(engine):
    engine.stream("a1", FIRST_SEEN)
    engine.stream("late", "2026-11-20T12:00:30", to_lake=False)
    engine.backfill("2026-11-20T12:20:00")
    engine.land_late("late", "2026-11-20T12:00:30")
    first_query = engine.job._store.activations.read("nov").passes[0].query_id
    rows = engine.lake.rows

    def expired(query_id):
        if query_id == first_query:
            raise ResultsGone(f"query {query_id}: results expired")
        return rows(query_id)

    engine.lake.rows = expired
    result = engine.backfill("2026-11-21T13:01:10")
    assert result["BackfillFirstResultsMissing"] == 1 and result["BackfillLateEvents"] == 0
    assert engine.count() == 1
    late = engine.job._store.activations.read("nov").passes[1]
    assert late.status is BackfillStatus.PENDING and "results expired" in late.error
