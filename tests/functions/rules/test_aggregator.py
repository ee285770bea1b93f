"""The aggregator Lambda end to end: Kinesis-shaped batches of app and Pinpoint records in, counters and outbox
entries in moto's DynamoDB, rejects in SQS, a Powertools partial batch response and EMF metrics out."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from functions.rules import aggregator
from functions.rules.aggregator import (
    MAX_MESSAGE_BYTES,
    Aggregator,
    AggregatorSettings,
    RejectedRecord,
    lambda_handler,
)
from functions.rules.rules_source import S3RulesSource
from functions.rules.model import CountCondition, Operator, Rule, RuleSet, RuleType
from tests.functions.rules.conftest import RULES_BUCKET, RULES_KEY, STREAM_ARN, Clock

FIRST_SEQUENCE = 49_000_000_000_000_000_000


def rule(rule_id: str, event_name: str = "purchase", target: int = 2, **fields: Any) -> Rule:
    return Rule(rule_id=rule_id, rule_type=fields.pop("rule_type", RuleType.AGGREGATOR), event_name=event_name,
                count_condition=CountCondition(Operator.AT_LEAST, target), **fields)


RULES = RuleSet((
    rule("buyers"),
    rule("clickers", "_email.click", target=1),
    rule("nov", rule_type=RuleType.DATE, start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30)),
))


class Function:
    """The handler wired to the test's clock and tables; `invoke` returns the response and the metrics."""

    def __init__(self, aws, monkeypatch, capsys, clock: Clock) -> None:
        self.aws, self.capsys, self.clock = aws, capsys, clock
        self.rules_clock = Clock()
        self.store = aws.store(clock)
        self.aggregator = Aggregator(self.store, activation_delay_ms=70_000)
        source = S3RulesSource(aws.s3, AggregatorSettings.from_env().rules, clock=self.rules_clock)
        monkeypatch.setattr(aggregator, "_aggregator", lambda: self.aggregator)
        monkeypatch.setattr(aggregator, "_rules_source", lambda: source)

    def invoke(self, event: dict[str, Any], context) -> tuple[dict[str, Any], dict[str, float]]:
        self.capsys.readouterr()
        response = lambda_handler(event, context)
        return response, self.metrics()

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for line in self.capsys.readouterr().out.splitlines():
            if line.startswith("{") and '"_aws"' in line:
                document = json.loads(line)
                for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                    value = document[definition["Name"]]
                    values[definition["Name"]] = sum(value) if isinstance(value, list) else value
        return values


@pytest.fixture
def function(aws, monkeypatch, capsys) -> Function:
    aws.publish(RULES)
    # Rules activated at 11:00 (+70 s); the test batches arrive at 12:00.
    return Function(aws, monkeypatch, capsys, Clock("2026-11-20T11:00:00"))


def test_a_batch_is_counted_with_one_write_per_rule_and_user(function, aws, app, make_kinesis_event, context):
    payloads = [app("a1"), app("a2", user="u2"), app("a3"), app("a4", "view"), app("a5")]
    response, metrics = function.invoke(make_kinesis_event(payloads), context)
    assert response == {"batchItemFailures": []}
    counters = aws.counters()
    assert {key: item.state.count for key, item in counters.items()} == {
        ("buyers", "u1"): 3, ("buyers", "u2"): 1, ("nov", "u1"): 3, ("nov", "u2"): 1}
    assert set(aws.outbox()) == {"buyers#u1#1", "nov#u1#1"}
    assert aws.calls["GetItem"] == 4 and aws.calls["PutItem"] + aws.calls["TransactWriteItems"] == 4 + 1  # + meta
    assert metrics["RecordsReceived"] == 5 and metrics["MatchedPairs"] == 8 and metrics["CounterWrites"] == 4
    assert metrics["Qualifications"] == 2


def test_a_record_that_cannot_be_parsed_goes_to_the_failures_queue_and_not_to_the_retries(
        function, aws, app, make_kinesis_event, context):
    broken = b'{"schema": "engagement-loop/v1", "event_type": "purchase"'
    response, metrics = function.invoke(make_kinesis_event([app("a1"), broken, app("a2")]), context)
    assert response == {"batchItemFailures": []}
    (message,) = aws.failures()
    assert message["reason"].startswith("not JSON")
    assert base64.b64decode(message["data"]) == broken
    assert (message["shard_id"], message["sequence_number"], message["stream_arn"]) == (
        "shardId-000000000000", str(FIRST_SEQUENCE + 10), STREAM_ARN)
    assert metrics["RecordsRejected"] == 1
    assert aws.counter("buyers", "u1").state.count == 2


def test_events_without_a_user_are_counted_in_a_metric_and_skipped(function, aws, load_json, make_kinesis_event,
                                                                   context):
    click = json.dumps(load_json("pinpoint", "email_click")).encode()  # IDENTITY_MODE=user: the endpoint is no user
    response, metrics = function.invoke(make_kinesis_event([click]), context)
    assert response == {"batchItemFailures": []}
    assert metrics["EventsWithoutUser"] == 1
    assert aws.counters() == {} and aws.calls["GetItem"] == 0


def test_a_pinpoint_record_counts_for_its_user(function, aws, load_json, make_kinesis_event, context):
    click = load_json("pinpoint", "email_click")
    click["endpoint"] = {"User": {"UserId": "customer-7"}}
    response, _ = function.invoke(make_kinesis_event([json.dumps(click).encode()]), context)
    assert response == {"batchItemFailures": []}
    assert aws.counter("clickers", "customer-7").state.qualified
    # A non-resetting rule on _email.click sets the readable attribute email_click (docs/rules.md, "Action names").
    assert aws.outbox()["clickers#customer-7#1"].name == "email_click"


def test_the_engines_own_events_are_never_counted(function, aws, app, make_kinesis_event, context):
    response, metrics = function.invoke(make_kinesis_event([app("t1", "trk_purchase"), app("t2", "trk_purchase")]),
                                        context)
    assert response == {"batchItemFailures": []}
    assert metrics["EngineEventsSkipped"] == 2 and aws.counters() == {}


def test_a_redelivered_batch_changes_nothing(function, aws, app, make_kinesis_event, context):
    batch = make_kinesis_event([app("a1"), app("a2"), app("a3", user="u2")])
    function.invoke(batch, context)
    before = (aws.counters(), aws.outbox())
    aws.calls.clear()
    response, metrics = function.invoke(batch, context)
    assert response == {"batchItemFailures": []}
    assert (aws.counters(), aws.outbox()) == before
    assert metrics["DuplicatesSkipped"] == 6 and metrics["CounterWrites"] == 0
    assert set(aws.calls) == {"GetItem"}


def test_a_failed_group_reports_its_lowest_sequence_number_and_a_redelivery_from_there_converges(
        function, aws, app, make_kinesis_event, context, monkeypatch):
    payloads = [app("a1"), app("b1", user="u2"), app("a2"), app("b2", user="u2"), app("a3")]
    real_apply = function.store.apply

    def failing(rule, user_id, deliveries):
        if user_id == "u2" and rule.rule_id == "nov":
            raise RuntimeError("throttled for good")
        return real_apply(rule, user_id, deliveries)

    monkeypatch.setattr(function.store, "apply", failing)
    response, metrics = function.invoke(make_kinesis_event(payloads), context)
    assert response == {"batchItemFailures": [{"itemIdentifier": str(FIRST_SEQUENCE + 10)}]}
    assert metrics["GroupWritesFailed"] == 1
    assert aws.counter("nov", "u2") is None and aws.counter("buyers", "u2").state.count == 2

    monkeypatch.setattr(function.store, "apply", real_apply)
    # Lambda redelivers from the reported record on: the same records, the same sequence numbers.
    redelivery = make_kinesis_event(payloads)
    redelivery["Records"] = redelivery["Records"][1:]
    response, _ = function.invoke(redelivery, context)
    assert response == {"batchItemFailures": []}
    assert {key: item.state.count for key, item in aws.counters().items()} == {
        ("buyers", "u1"): 3, ("buyers", "u2"): 2, ("nov", "u1"): 3, ("nov", "u2"): 2}
    assert set(aws.outbox()) == {"buyers#u1#1", "buyers#u2#1", "nov#u1#1", "nov#u2#1"}


def test_when_every_record_fails_the_whole_batch_is_retried(function, app, make_kinesis_event, context, monkeypatch):
    monkeypatch.setattr(function.store, "apply", lambda *args: (_ for _ in ()).throw(RuntimeError("down")))
    with pytest.raises(BatchProcessingError):
        function.invoke(make_kinesis_event([app("a1")]), context)


def test_date_and_window_rules_count_only_events_arriving_after_their_activation(
        function, aws, app, make_kinesis_event, context):
    function.clock.set("2026-11-20T12:00:00")  # the rules are first seen now: activation 12:01:10
    response, metrics = function.invoke(make_kinesis_event([app("a1"), app("a2")], arrival="2026-11-20T12:00:30"),
                                        context)
    assert response == {"batchItemFailures": []}
    assert metrics["PairsBeforeActivation"] == 2
    assert aws.counter("nov", "u1") is None and aws.counter("buyers", "u1").state.count == 2
    function.invoke(make_kinesis_event([app("a3")], arrival="2026-11-20T12:01:10", first=FIRST_SEQUENCE + 100),
                    context)
    assert aws.counter("nov", "u1").state.count == 1
    meta = aws.inspect.get_item(TableName="rule-counters", Key={"pk": {"S": "meta#nov"}})["Item"]
    assert meta["activation_ms"]["N"] == str(int(function.clock() * 1000) + 70_000)


def test_the_activation_is_asked_for_once_per_container(function, aws, app, make_kinesis_event, context):
    function.invoke(make_kinesis_event([app("a1")]), context)
    function.invoke(make_kinesis_event([app("a2")], first=FIRST_SEQUENCE + 100), context)
    # one activation (the date rule), then per batch two counter writes (buyers and nov for u1)
    assert aws.calls["PutItem"] + aws.calls["TransactWriteItems"] == 1 + 2 + 2


def test_a_new_rules_version_is_used_within_the_cache_age_and_a_removed_rule_stops_counting(
        function, aws, app, make_kinesis_event, context):
    function.invoke(make_kinesis_event([app("a1")]), context)
    aws.publish(RuleSet((rule("buyers"),)))  # "nov" removed
    function.rules_clock.advance(30)
    function.invoke(make_kinesis_event([app("a2")], first=FIRST_SEQUENCE + 100), context)
    assert aws.counter("nov", "u1").state.count == 2  # still the cached version
    function.rules_clock.advance(31)
    function.invoke(make_kinesis_event([app("a3")], first=FIRST_SEQUENCE + 200), context)
    assert aws.counter("nov", "u1").state.count == 2
    assert aws.counter("buyers", "u1").state.count == 3


def test_no_rules_at_all_fails_the_invocation(aws, monkeypatch, capsys, app, make_kinesis_event, context):
    Function(aws, monkeypatch, capsys, Clock())  # nothing published
    with pytest.raises(Exception, match="cannot read the rules"):
        lambda_handler(make_kinesis_event([app("a1")]), context)


def test_a_huge_rejected_record_is_cut_to_fit_an_sqs_message():
    record = RejectedRecord("not JSON", b"x" * 900_000, STREAM_ARN, "shardId-000000000001", "42", 0)
    message = json.loads(text := record.to_message())
    assert len(text) <= MAX_MESSAGE_BYTES
    assert message["data_truncated"] and message["data_bytes"] == 900_000


def test_settings_name_every_missing_variable():
    with pytest.raises(ValueError) as error:
        AggregatorSettings.from_env({"IDENTITY_MODE": "nobody"})
    for name in ("COUNTERS_TABLE", "OUTBOX_TABLE", "RULES_BUCKET", "RULES_KEY", "FAILURES_QUEUE_URL", "IDENTITY_MODE"):
        assert name in str(error.value)
    settings = AggregatorSettings.from_env({"COUNTERS_TABLE": "c", "OUTBOX_TABLE": "o", "RULES_BUCKET": RULES_BUCKET,
                                            "RULES_KEY": RULES_KEY, "FAILURES_QUEUE_URL": "https://q"})
    assert (settings.rules.max_age_seconds, settings.store.counter_ttl_days) == (60, 400)


def test_a_record_whose_data_is_not_base64_is_rejected_not_retried(function, aws, app, make_kinesis_event, context):
    batch = make_kinesis_event([app("a1"), app("a2")])
    batch["Records"][0]["kinesis"]["data"] = "%%% not base64 %%%"
    response, metrics = function.invoke(batch, context)
    assert response == {"batchItemFailures": []}
    (message,) = aws.failures()
    assert message["reason"] == "record data is not base64"
    assert metrics["RecordsRejected"] == 1 and aws.counter("buyers", "u1").state.count == 1


def test_a_bug_in_normalising_costs_one_record(function, aws, app, make_kinesis_event, context, monkeypatch):
    real = aggregator.normalise

    def buggy(data: bytes, **options: Any):
        if b'"a1"' in data:
            raise KeyError("bug")
        return real(data, **options)

    monkeypatch.setattr(aggregator, "normalise", buggy)
    response, _ = function.invoke(make_kinesis_event([app("a1"), app("a2")]), context)
    assert response == {"batchItemFailures": []}
    assert aws.failures()[0]["reason"].startswith("internal error while normalising")


# --- issue 8: processing-time windows, marks per partition key, poison groups, far-apart duplicates ------


WEEK = rule("week", "visit", target=1, rule_type=RuleType.WINDOW, window_days=7)


def test_a_stale_event_does_not_qualify_a_user_for_a_window_it_is_older_than(
        function, aws, app, make_kinesis_event, context):
    aws.publish(RuleSet((WEEK,)))
    function.clock.set("2026-11-20T11:59:00")  # activated at 12:00:10
    function.invoke(make_kinesis_event([app("warm-up", "view")], arrival="2026-11-20T11:59:00"), context)
    function.clock.set("2026-11-20T12:00:35")
    # It happened on Nov 9 and arrived (an offline device's queue) on Nov 20: 11 days old when processed.
    stale = app("v1", "visit", at="2026-11-09T12:00:00")
    response, metrics = function.invoke(make_kinesis_event([stale], arrival="2026-11-20T12:00:30",
                                                           first=FIRST_SEQUENCE + 100), context)
    assert response == {"batchItemFailures": []} and metrics["Qualifications"] == 0
    item = aws.counter("week", "u1")
    assert not item.state.qualified and item.state.count == 0 and item.sweep_day is None
    assert aws.outbox() == {}


def test_two_concurrent_batches_of_one_shard_with_two_partition_keys_committed_out_of_order_lose_nothing(
        function, aws, app, make_kinesis_event, context):
    # ParallelizationFactor 10: Lambda keeps order per partition key only. The user's app keys by endpoint,
    # so the records of one user carry two keys; the later batch (higher sequence numbers) commits first.
    earlier = make_kinesis_event([app("a1"), app("a2")], partition_keys=["endpoint-1", "endpoint-1"])
    later = make_kinesis_event([app("b1"), app("b2")], partition_keys=["endpoint-2", "endpoint-2"],
                               first=FIRST_SEQUENCE + 100)
    assert function.invoke(later, context)[0] == {"batchItemFailures": []}
    response, metrics = function.invoke(earlier, context)
    assert response == {"batchItemFailures": []}
    assert metrics["DuplicatesSkipped"] == 0
    assert aws.counter("buyers", "u1").state.count == 4 and aws.counter("nov", "u1").state.count == 4
    # …and each batch redelivered is still a no-op.
    for batch in (earlier, later):
        assert function.invoke(batch, context)[1]["CounterWrites"] == 0
    assert aws.counter("buyers", "u1").state.count == 4


def test_a_producer_with_random_partition_keys_keeps_the_marks_bounded_and_still_counts_once(
        function, aws, app, make_kinesis_event, context):
    from functions.rules.dedupe import MARK_MAX_ENTRIES

    payloads = [app(f"r{i}", "view") for i in range(MARK_MAX_ENTRIES + 8)] + [app("p1")]
    batch = make_kinesis_event(payloads, partition_keys=[f"random-{i}" for i in range(len(payloads))])
    function.invoke(batch, context)
    aws.publish(RuleSet((rule("viewers", "view", target=1000),)))
    function.rules_clock.advance(61)
    function.invoke(batch, context)  # a redelivery, with every mark of the batch
    function.invoke(make_kinesis_event(payloads, partition_keys=[f"random-{i}" for i in range(len(payloads))],
                                       first=FIRST_SEQUENCE + 10_000), context)  # a producer's resend
    item = aws.counter("viewers", "u1")
    assert len(item.hwm) <= MARK_MAX_ENTRIES and item.state.count == MARK_MAX_ENTRIES + 8


def test_a_group_whose_counter_cannot_be_written_goes_to_the_failures_queue_and_the_rest_is_counted(
        function, aws, app, make_kinesis_event, context, monkeypatch):
    real = aggregator.normalise

    def unbounded(data: bytes, **options: Any):  # as if the normaliser let a 5,000-character user id through
        result = real(data, **options)
        if b'"long"' in data:
            from dataclasses import replace
            return replace(result, user_id="x" * 5_000)
        return result

    monkeypatch.setattr(aggregator, "normalise", unbounded)
    batch = make_kinesis_event([app("a1"), app("long"), app("a2", user="u2")])
    response, metrics = function.invoke(batch, context)
    assert response == {"batchItemFailures": []}  # not retried: it would fail the same way every time
    assert metrics["GroupsUnwritable"] == 2  # buyers and nov
    reasons = sorted(message["reason"] for message in aws.failures())
    assert len(reasons) == 2 and all("counter key" in reason and "bytes" in reason for reason in reasons)
    assert aws.counter("buyers", "u1").state.count == 1 and aws.counter("buyers", "u2").state.count == 1


def test_an_outbox_entry_over_400_kb_is_set_aside_not_retried(function, aws, app, make_kinesis_event, context,
                                                               monkeypatch):
    real = aggregator.normalise

    def huge_id(data: bytes, **options: Any):
        result = real(data, **options)
        if b'"a2"' in data:
            from dataclasses import replace
            return replace(result, event_id="e" * 450_000)
        return result

    monkeypatch.setattr(aggregator, "normalise", huge_id)
    response, metrics = function.invoke(make_kinesis_event([app("a1"), app("a2")]), context)
    assert response == {"batchItemFailures": []}
    assert metrics["GroupsUnwritable"] == 2  # the qualification of buyers and of nov would carry the id
    assert all("more than DynamoDB's 409,600" in m["reason"] for m in aws.failures())


def test_a_producer_duplicate_a_day_later_counts_once_within_the_configured_horizon(
        aws, monkeypatch, capsys, app, make_kinesis_event, context):
    monkeypatch.setenv("DEDUPE_HORIZON_HOURS", "72")
    aws.publish(RuleSet((rule("buyers"),)))
    function = Function(aws, monkeypatch, capsys, Clock("2026-11-20T11:00:00"))
    settings = AggregatorSettings.from_env()
    assert settings.store.dedupe_horizon_hours == 72
    function.store._settings = settings.store
    function.invoke(make_kinesis_event([app("order-1")]), context)
    function.clock.set("2026-11-21T17:00:00")
    function.invoke(make_kinesis_event([app("order-2", at="2026-11-21T17:00:00")], arrival="2026-11-21T17:00:00",
                                       first=FIRST_SEQUENCE + 300), context)
    function.clock.set("2026-11-21T18:00:00")  # the offline device resends order-1 30 hours later
    response, metrics = function.invoke(make_kinesis_event([app("order-1")], arrival="2026-11-21T18:00:00",
                                                           first=FIRST_SEQUENCE + 500), context)
    assert metrics["DuplicatesSkipped"] == 1 and aws.counter("buyers", "u1").state.count == 2


def test_two_users_records_with_the_same_producer_id_in_one_batch_are_two_events(aws):
    """Review (issue 12): the in-batch repeat check was batch-wide, so a second user's record with a producer id
    the first user had used was dropped when both were in one batch and counted when the batch was cut between
    them; the counters' own marks are per (rule, user). Now the batch drops only a user's own repeat."""
    from collections import Counter

    from functions.rules.aggregator import Aggregator, Count
    from tests.functions.rules.conftest import make_deliveries, make_event

    store = aws.store(lambda: 1_793_500_000.0)
    buyers = rule("buyers", target=1)
    batch = make_deliveries([make_event("ord-1", user="u-1"), make_event("ord-1", user="u-4"),
                             make_event("ord-1", user="u-1", at="2026-11-20T12:00:01")])
    counts: Counter = Counter()
    outcome = Aggregator(store, activation_delay_ms=0).process(RuleSet((buyers,)), batch, counts)
    assert sorted(outcome.groups) == [("buyers", "u-1"), ("buyers", "u-4")]
    assert [len(group) for _, group in sorted(outcome.groups.items())] == [1, 1]
    assert counts[Count.REPEATED_IN_BATCH] == 1  # u-1's own repeat only
    assert store.read("buyers", "u-4").state.count == store.read("buyers", "u-1").state.count == 1
