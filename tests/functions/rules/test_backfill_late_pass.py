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


def test_a_late_pass_whose_own_results_expired_queries_again_and_merges_once(engine):
    """Regression (review 3): a pass whose own results expired (a backfill outage longer than their retention)
    was recorded as "first pass results gone", kept its query id and was stuck forever."""
    engine.stream("a1", FIRST_SEEN)
    engine.stream("late", "2026-11-20T12:00:30", to_lake=False)
    engine.backfill("2026-11-20T12:20:00")
    engine.land_late("late", "2026-11-20T12:00:30")
    first_query = engine.job._store.activations.read("nov").passes[0].query_id
    rows, started = engine.lake.rows, engine.lake.start
    late_queries: list[str] = []
    engine.lake.start = lambda sql, *, token: (late_queries.append(started(sql, token=token)) or late_queries[-1])

    def expired_once(query_id):
        if query_id == late_queries[0] and len(late_queries) == 1:
            raise ResultsGone(f"query {query_id}: results expired")
        return rows(query_id)

    engine.lake.rows = expired_once
    result = engine.backfill("2026-11-21T13:01:10")
    assert result["BackfillResultsExpired"] == 1 and result["BackfillFirstResultsMissing"] == 0
    late = engine.job._store.activations.read("nov").passes[1]
    assert late.status is BackfillStatus.PENDING and late.query_id is None
    assert late_queries[0] in late.error and first_query not in late.error  # says whose results are gone
    assert engine.count() == 1
    result = engine.backfill("2026-11-21T13:16:10")  # the next run queries again
    assert len(late_queries) == 2 and late_queries[1] != late_queries[0]
    assert result["BackfillLateEvents"] == 1 and engine.count() == 2  # a1, late: each once
    meta = engine.job._store.activations.read("nov")
    assert meta.status is BackfillStatus.DONE


def test_a_first_pass_whose_results_expired_mid_merge_carries_on_after_its_last_user(engine):
    """The re-run query lists every user again; `resume_after` (saved when the results went) skips the ones
    merged, so each user is merged once even after its pass marks aged out of `seen` (an outage of days)."""
    for user in ("u1", "u2", "u3"):
        engine.to_lake(f"x-{user}", "2026-11-20T11:00:00", user=user)
    engine.stream("a1", FIRST_SEEN)
    rows = engine.lake.rows
    gone: list[str] = []

    def expire_at_u3(query_id):
        for row in rows(query_id):
            if row[0] == "u3" and not gone:  # u1 merged (u2 is read whole only with u3's first row)
                gone.append(query_id)
                raise ResultsGone(f"query {query_id}: results expired")
            yield row

    engine.lake.rows = expire_at_u3
    result = engine.backfill("2026-11-20T12:20:00")
    first = engine.job._store.activations.read("nov").passes[0]
    assert result["BackfillResultsExpired"] == 1
    assert first.query_id is None and first.resume_after == "u1" and gone[0] in first.error
    assert [engine.count(user=u) for u in ("u1", "u2", "u3")] == [2, 0, 0]
    result = engine.backfill("2026-11-28T12:20:00")  # a week later: the first pass again, then the late one
    assert [engine.count(user=u) for u in ("u1", "u2", "u3")] == [2, 1, 1]
    meta = engine.job._store.activations.read("nov")
    assert meta.status is BackfillStatus.DONE and all(p.error is None for p in meta.passes)
