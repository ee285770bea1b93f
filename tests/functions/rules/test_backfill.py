"""The backfill on a local lake (DuckDB runs the generated Athena SQL) and moto's DynamoDB: only the partitions a
rule needs are read, events are split at the activation between the backfill and the aggregator so the sum
of the two equals counting everything at once, the first pass waits for the lake to settle and the late pass
for its lateness, runs resume, and the Athena adapter makes valid requests. Across the activation
(duplicates, late records, returning rules): test_backfill_across_activation.py."""

from __future__ import annotations

from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from functions.retraining.lake import write_lake
from functions.rules import backfill as backfill_module
from functions.rules.aggregator import Aggregator
from functions.rules.backfill import Backfill, BackfillCount, BackfillSettings, lambda_handler
from functions.rules.backfill_query import backfill_days, build_backfill_sql
from functions.rules.lake_queries import AthenaLakeQueries
from functions.rules.evaluate import window_totals
from functions.rules.model import AttributeFilter, CountCondition, Operator, Rule, RuleSet, RuleType, SumCondition
from functions.rules.activation import BackfillStatus
from functions.rules.store import CounterStore, StoreSettings
from functions.rules.outbox import create_local_tables
from tests.functions.rules.conftest import NO_RETRIES, Clock, DuckDbLake, make_deliveries, make_event, ms

AT_LEAST = Operator.AT_LEAST
ACTIVATION_DELAY_MS = 70_000
FIRST_SEEN = "2026-11-20T12:00:00"
ACTIVATION_MS = ms(FIRST_SEEN) + ACTIVATION_DELAY_MS
LATE_PASS_DUE = "2026-11-21T13:01:10"  # the activation + 25 h

NOV = Rule(rule_id="nov", rule_type=RuleType.DATE, event_name="purchase", start_date=date(2026, 11, 1),
           finish_date=date(2026, 11, 30), count_condition=CountCondition(AT_LEAST, 3),
           sum_condition=SumCondition(AT_LEAST, Decimal("1")))  # the records' first metric
WEEK = Rule(rule_id="week", rule_type=RuleType.WINDOW, event_name="purchase", window_days=7,
            attribute_filter=AttributeFilter("channel", "web"), count_condition=CountCondition(AT_LEAST, 2),
            sum_condition=SumCondition(AT_LEAST, Decimal("1.0"), "amount"))
RULES = RuleSet((NOV, WEEK))


def purchase(event_id: str, user: str | None, at: str, *, arrival: str | None = None, channel: str = "web",
             amount: float = 0.4, first: float = 0.5, event_type: str = "purchase"):
    # `first` is listed first: a sum rule without MetricName adds it, not `amount`.
    return make_event(event_id, event_type, user=user, at=at, arrival=arrival or at,
                      attributes={"channel": channel}, metrics={"first": first, "amount": amount})


def history() -> list:
    """Events in arrival order: most arrived before the rules' activation (in the lake only), the rest after."""
    return [
        purchase("h1", "u1", "2026-10-30T10:00:00"),                                 # before the date range
        purchase("h2", "u1", "2026-11-05T10:00:00", channel="app"),
        purchase("h3", "u1", "2026-11-14T09:00:00", amount=0.7),
        purchase("h4", "u2", "2026-11-16T09:00:00", first=0.1),
        purchase("h4", "u2", "2026-11-16T09:00:00", arrival="2026-11-16T09:05:00", first=0.1),  # producer's copy
        purchase("h5", "u1", "2026-11-18T23:59:59", arrival="2026-11-19T00:00:02", amount=0.3),
        purchase("h6", "u3", "2026-11-19T08:00:00", channel="app", first=2.0),
        purchase("h7", None, "2026-11-19T09:00:00"),                                 # no user
        purchase("h8", "u2", "2026-11-20T07:00:00", event_type="trk_purchase"),      # the engine's own
        purchase("h9", "u2", "2026-11-20T11:00:00", amount=0.35, first=0.2),
        purchase("h10", "u3", "2026-11-20T12:00:30", first=0.25),                    # before activation
        # activation: 12:01:10
        purchase("s1", "u2", "2026-11-20T12:01:10", amount=0.5, first=0.3),
        purchase("s2", "u1", "2026-11-20T13:00:00", first=0.1),
        purchase("s3", "u3", "2026-11-21T09:00:00", channel="app", first=0.3),
        purchase("s4", "u4", "2026-11-21T10:00:00", amount=1.1),
        purchase("s5", "u4", "2026-11-21T11:00:00", amount=0.1),
    ]


@pytest.fixture
def lake(tmp_path: Path) -> DuckDbLake:
    return DuckDbLake(tmp_path)


def corrupt(lake: DuckDbLake, day: str) -> None:
    folder = lake.root / "events" / f"dt={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-9.parquet").write_bytes(b"not a parquet file")


def make_backfill(store: CounterStore, lake: DuckDbLake) -> Backfill:
    return Backfill(store, lake, database="engagement_loop", table="events", settle_ms=15 * 60_000,
                    activation_delay_ms=ACTIVATION_DELAY_MS)


def stream_and_backfill(aws, lake, events, clock: Clock, **run: Any) -> tuple[Backfill, Counter]:
    """The rules are first seen at FIRST_SEEN; the stream goes through the aggregator in batches of 4, the
    lake holds everything; 20 minutes later the backfill runs."""
    write_lake(events, lake.root)
    clock.set(FIRST_SEEN)
    aggregator = Aggregator(aws.store(clock), activation_delay_ms=ACTIVATION_DELAY_MS)
    deliveries = make_deliveries(events)
    for start in range(0, len(deliveries), 4):
        aggregator.process(RULES, [d for d in deliveries[start:start + 4] if d.event.user_id], Counter())
    clock.set("2026-11-20T12:21:10")
    job = make_backfill(aws.store(clock), lake)
    return job, job.run(RULES, time_left_ms=run.get("time_left_ms", lambda: 900_000))


def test_backfill_plus_stream_equals_counting_everything_at_once(aws, lake, clock):
    events = history()
    job, counts = stream_and_backfill(aws, lake, events, clock)
    assert counts[BackfillCount.PASSES_DONE] == 2 and counts[BackfillCount.RULES_DONE] == 0
    assert job._store.activations.read("nov").status is BackfillStatus.PENDING  # the late pass is still to come
    clock.set(LATE_PASS_DUE)
    late = job.run(RULES, time_left_ms=lambda: 900_000)
    assert late[BackfillCount.RULES_DONE] == 2 and late[BackfillCount.EVENTS] == 0  # nothing reached the lake late

    reference = StoreSettings(counters_table="all-at-once-counters", outbox_table="all-at-once-outbox")
    create_local_tables(aws.inspect, reference)
    all_at_once = CounterStore(aws.inspect, reference, clock=Clock(FIRST_SEEN))  # the stream's processing clock
    for rule in RULES:
        all_at_once.activations.ensure(rule, 0)  # active before every event
    Aggregator(all_at_once, activation_delay_ms=0).process(
        RULES, [d for d in make_deliveries(events) if d.event.user_id], Counter())
    expected = CounterStore(aws.inspect, reference)

    for rule in RULES:
        for user in ("u1", "u2", "u3", "u4"):
            got, want = aws.counter(rule.rule_id, user), expected.read(rule.rule_id, user)
            assert bool(got) == bool(want.version), (rule.rule_id, user)
            if not want.version:
                continue
            assert (got.state.qualified, got.state.fired) == (want.state.qualified, want.state.fired)
            if rule.rule_type is RuleType.WINDOW:  # its lifetime count has events older than any window
                day = date(2026, 11, 21)
                assert window_totals(rule, got.state, day) == window_totals(rule, want.state, day)
            else:
                assert (got.state.count, got.state.sum) == (want.state.count, want.state.sum)
    assert set(aws.outbox()) == {key for key in _outbox_keys(aws, reference)}
    assert set(aws.outbox()) == {"nov#u1#1", "nov#u3#1", "week#u1#1", "week#u2#1", "week#u4#1"}
    by_backfill = {entry.key: entry for entry in aws.outbox().values() if entry.event_id == ""}
    assert set(by_backfill) == {"nov#u1#1", "nov#u3#1", "week#u1#1", "week#u2#1"}
    assert all(entry.event_time_ms == ACTIVATION_MS for entry in by_backfill.values())

    nov, week = job._store.activations.read("nov"), job._store.activations.read("week")
    assert (nov.status, nov.users, nov.events, nov.qualified) == (BackfillStatus.DONE, 3, 7, 2)
    assert (week.status, week.users, week.events, week.qualified) == (BackfillStatus.DONE, 3, 5, 2)
    # The producer's copy (h4) counted once, the late day (h5 arrived on Nov 19) in its own event day:
    assert aws.counter("nov", "u2").state.count == 3 and aws.counter("nov", "u1").state.count == 4


def _outbox_keys(aws, settings: StoreSettings) -> set[str]:
    pages = aws.inspect.get_paginator("scan").paginate(TableName=settings.outbox_table)
    return {item["pk"]["S"] for page in pages for item in page["Items"]}


def test_only_the_partitions_a_rule_needs_are_read(aws, lake, clock):
    for day in ("2026-10-01", "2026-10-30", "2026-11-21", "2026-12-01"):  # outside both rules' ranges
        corrupt(lake, day)
    job, counts = stream_and_backfill(aws, lake, history(), clock)
    assert counts[BackfillCount.QUERIES_FAILED] == 0 and counts[BackfillCount.PASSES_DONE] == 2
    # One clock: `dt` is the Kinesis arrival day and an event arrives on or after the day it happened, so a
    # date rule reads from its start date, and every rule up to the activation's day.
    assert backfill_days(NOV, ACTIVATION_MS) == (date(2026, 11, 1), date(2026, 11, 20))
    assert backfill_days(WEEK, ACTIVATION_MS) == (date(2026, 11, 13), date(2026, 11, 20))
    nov_sql, week_sql = lake.sql
    assert "\"dt\" >= '2026-11-01'" in nov_sql and "\"dt\" <= '2026-11-20'" in nov_sql
    assert f"e.arrival_time_ms < {ACTIVATION_MS}" in nov_sql
    assert "\"dt\" >= '2026-11-13'" in week_sql and "\"dt\" <= '2026-11-20'" in week_sql
    with pytest.raises(Exception, match="parquet|magic"):  # reading every partition would have failed
        lake._run('SELECT count(*) FROM "engagement_loop"."events"')


def test_the_backfill_waits_for_the_lake_to_settle_and_runs_once(aws, lake, clock):
    write_lake(history(), lake.root)
    clock.set(FIRST_SEEN)
    job = make_backfill(aws.store(clock), lake)
    assert job.run(RULES, time_left_ms=lambda: 900_000) == Counter({BackfillCount.RULES_WAITING: 2})
    clock.set("2026-11-20T12:16:09")
    assert job.run(RULES, time_left_ms=lambda: 900_000)[BackfillCount.RULES_WAITING] == 2
    clock.set("2026-11-20T12:16:10")
    assert job.run(RULES, time_left_ms=lambda: 900_000)[BackfillCount.PASSES_DONE] == 2
    assert job.run(RULES, time_left_ms=lambda: 900_000) == Counter({BackfillCount.RULES_WAITING: 2})
    clock.set("2026-11-21T13:01:09")
    assert job.run(RULES, time_left_ms=lambda: 900_000) == Counter({BackfillCount.RULES_WAITING: 2})
    clock.set(LATE_PASS_DUE)
    assert job.run(RULES, time_left_ms=lambda: 900_000)[BackfillCount.RULES_DONE] == 2
    assert len(lake.sql) == 4
    aws.calls.clear()
    fresh_container = make_backfill(aws.store(clock), lake)
    assert fresh_container.run(RULES, time_left_ms=lambda: 900_000) == Counter()
    # One read of each activation record per run: a rule that returns adds passes to a finished record.
    assert len(lake.sql) == 4 and aws.calls == Counter({"GetItem": 2})


def test_a_run_out_of_time_saves_its_place_and_the_next_carries_on(aws, lake, clock):
    many = [purchase(f"m{i}", f"user{i:02d}", "2026-11-19T10:00:00", amount=0.6) for i in range(30)]
    events = [*many, *(purchase(f"n{i}", f"user{i:02d}", "2026-11-19T11:00:00", amount=0.6) for i in range(30))]
    budget = iter([900_000] * 14 + [1_000] * 1_000)
    job, counts = stream_and_backfill(aws, lake, events, clock, time_left_ms=lambda: next(budget))
    assert counts[BackfillCount.RULES_DONE] == 0 and 0 < counts[BackfillCount.USERS] < 30
    first_part = counts[BackfillCount.USERS]
    saved = job._store.activations.read("nov").passes[0]
    assert saved.status is BackfillStatus.PENDING and saved.resume_after == f"user{first_part - 1:02d}"

    counts = job.run(RULES, time_left_ms=lambda: 900_000)
    assert counts[BackfillCount.USERS] == 30 - first_part + 30
    assert len(lake.sql) == 2  # the first rule's query was reused, not run again
    assert all(aws.counter("nov", f"user{i:02d}").state.count == 2 for i in range(30))
    assert all(aws.counter("week", f"user{i:02d}").state.qualified for i in range(30))
    assert len(aws.outbox()) == 30  # the window rule's; two events are too few for the date rule


def test_a_failed_query_is_started_again_by_the_next_run(aws, lake, clock):
    corrupt(lake, "2026-11-15")  # inside both ranges
    job, counts = stream_and_backfill(aws, lake, history(), clock)
    assert counts[BackfillCount.QUERIES_FAILED] == 2
    first = job._store.activations.read("week").passes[0]
    assert first.status is BackfillStatus.PENDING and first.query_id is None and "FAILED" in first.error
    (lake.root / "events" / "dt=2026-11-15" / "part-9.parquet").unlink()
    assert job.run(RULES, time_left_ms=lambda: 900_000)[BackfillCount.PASSES_DONE] == 2
    assert len(lake.sql) == 4


def test_a_query_athena_refuses_to_start_waits_without_starving_the_other_rules(aws, lake, clock, monkeypatch):
    """One rule whose query cannot start (refused as too long, throttled) used to abort the whole run."""
    from botocore.exceptions import ClientError

    started = lake.start
    calls = []

    def refuse_the_first_rules_query(sql: str, *, token: str) -> str:
        calls.append(token)
        if len(calls) == 1:  # the date rule's, the first of the sheet
            raise ClientError({"Error": {"Code": "InvalidRequestException", "Message": "query string too long"}},
                              "StartQueryExecution")
        return started(sql, token=token)

    monkeypatch.setattr(lake, "start", refuse_the_first_rules_query)
    job, counts = stream_and_backfill(aws, lake, history(), clock)

    assert counts[BackfillCount.QUERIES_FAILED] == 1
    week = job._store.activations.read("week")
    assert week.passes[0].status is BackfillStatus.DONE and week.events > 0  # the next rule went on
    nov = job._store.activations.read("nov").passes[0]
    assert nov.status is BackfillStatus.PENDING and nov.query_id is None and "too long" in nov.error

    monkeypatch.setattr(lake, "start", started)
    job.run(RULES, time_left_ms=lambda: 900_000)
    assert job._store.activations.read("nov").passes[0].status is BackfillStatus.DONE


def test_a_date_rule_activated_before_it_starts_has_nothing_to_backfill(aws, lake, clock):
    december = Rule(rule_id="dec", rule_type=RuleType.DATE, event_name="purchase", start_date=date(2026, 12, 5),
                    finish_date=date(2026, 12, 24), count_condition=CountCondition(AT_LEAST, 1))
    assert backfill_days(december, ACTIVATION_MS) is None
    clock.set(LATE_PASS_DUE)
    store = aws.store(clock)
    store.activations.ensure(december, ACTIVATION_MS)
    counts = make_backfill(store, lake).run(RuleSet((december,)), time_left_ms=lambda: 900_000)
    assert counts[BackfillCount.RULES_DONE] == 1 and counts[BackfillCount.PASSES_DONE] == 2 and lake.sql == []


def test_the_sql_reads_the_first_metric_in_the_records_order(lake):
    rows = [make_event("a", at="2026-11-19T10:00:00", metrics={"zeta": 0.1, "alpha": 5.0}),
            make_event("b", at="2026-11-19T11:00:00", metrics={"alpha": 0.2, "zeta": 7.0}),
            make_event("c", at="2026-11-19T12:00:00")]
    write_lake(rows, lake.root)
    lake.start(build_backfill_sql(NOV, ACTIVATION_MS, database="engagement_loop", table="events"), token="t")
    assert list(lake.rows("q-1")) == [("u1", str((ms("2026-11-19T00:00:00")) // 86_400_000), None, None, "3",
                                       "0.30000000000000000")]


def test_the_handler_runs_with_the_published_rules(aws, lake, clock, monkeypatch, context):
    aws.publish(RULES)
    write_lake(history(), lake.root)
    clock.set("2026-11-20T12:30:00")
    store = aws.store(clock)
    store.activations.ensure(NOV, ACTIVATION_MS)
    store.activations.ensure(WEEK, ACTIVATION_MS)
    monkeypatch.setattr(backfill_module, "_backfill", lambda: make_backfill(store, lake))
    result = lambda_handler({}, context)
    assert result["BackfillPassesDone"] == 2 and result["BackfillUsers"] == 6


def test_settings_name_every_missing_variable():
    with pytest.raises(ValueError) as error:
        BackfillSettings.from_env({"BACKFILL_SETTLE_MINUTES": "soon"})
    for name in ("COUNTERS_TABLE", "OUTBOX_TABLE", "RULES_BUCKET", "RULES_KEY", "ATHENA_WORKGROUP",
                 "BACKFILL_SETTLE_MINUTES"):
        assert name in str(error.value)
    with pytest.raises(ValueError, match="BACKFILL_LATENESS_MINUTES=10 is invalid"):
        BackfillSettings.from_env({"COUNTERS_TABLE": "c", "OUTBOX_TABLE": "o", "RULES_BUCKET": "b", "RULES_KEY": "k",
                                   "ATHENA_WORKGROUP": "w", "BACKFILL_LATENESS_MINUTES": "10"})


# --- the Athena adapter, against the API model ---------------------------------------------------------


def test_athena_requests_are_valid_and_results_skip_the_header():
    client = boto3.client("athena", region_name="us-east-1", config=NO_RETRIES)
    sleeps: list[float] = []
    lake = AthenaLakeQueries(client, database="engagement_loop", workgroup="engagement",
                             output_location="s3://results/backfill/", sleep=sleeps.append, clock=lambda: 0.0)
    query_id = "0f0e0d0c-0b0a-0908-0706-050403020100"
    with Stubber(client) as stub:
        stub.add_response("start_query_execution", {"QueryExecutionId": query_id}, {
            "QueryString": "SELECT 1", "ClientRequestToken": "t" * 64, "WorkGroup": "engagement",
            "QueryExecutionContext": {"Database": "engagement_loop"},
            "ResultConfiguration": {"OutputLocation": "s3://results/backfill/"}})
        for state in ("RUNNING", "SUCCEEDED"):
            stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": state}}},
                              {"QueryExecutionId": query_id})
        stub.add_response("get_query_results", {"ResultSet": {"Rows": [
            {"Data": [{"VarCharValue": name} for name in ("user_id", "event_day", "events", "metric_sum")]},
            {"Data": [{"VarCharValue": "u1"}, {"VarCharValue": "20411"}, {"VarCharValue": "2"}, {}]}]},
            "NextToken": "page-2"}, {"QueryExecutionId": query_id})
        stub.add_response("get_query_results", {"ResultSet": {"Rows": [
            {"Data": [{"VarCharValue": "u2"}, {"VarCharValue": "20412"}, {"VarCharValue": "1"},
                      {"VarCharValue": "0.5"}]}]}}, {"QueryExecutionId": query_id, "NextToken": "page-2"})
        assert lake.start("SELECT 1", token="t" * 64) == query_id
        assert lake.wait(query_id, timeout_seconds=60).state == "SUCCEEDED"
        assert list(lake.rows(query_id)) == [("u1", "20411", "2", None), ("u2", "20412", "1", "0.5")]
        stub.assert_no_pending_responses()
    assert sleeps == [2.0]


def test_a_wait_that_runs_out_returns_the_running_state():
    client = boto3.client("athena", region_name="us-east-1", config=NO_RETRIES)
    now = iter([0.0, 0.0, 5.0])
    lake = AthenaLakeQueries(client, database="d", workgroup="w", sleep=lambda s: None, clock=lambda: next(now))
    with Stubber(client) as stub:
        for _ in range(2):
            stub.add_response("get_query_execution", {"QueryExecution": {"Status": {"State": "QUEUED"}}},
                              {"QueryExecutionId": "q"})
        state = lake.wait("q", timeout_seconds=3)
    assert (state.state, state.finished) == ("QUEUED", False)
