"""The aggregator decides trust by the stream a record came from (`eventSourceARN`), never by its content:
forged SES clicks, exposures and reserved event types put on the app stream never reach the counters, the same
records on the trusted stream count, and the redelivery marks of the two streams never collide."""

from __future__ import annotations

import json
from typing import Any

import pytest

from functions.rules.aggregator import APP_SHARD_PREFIX
from functions.rules.dedupe import mark_key
from functions.rules.model import RuleSet
from tests.functions.rules.conftest import APP_STREAM_ARN, FIXTURES, STREAM_ARN, Clock
from tests.functions.rules.test_aggregator import FIRST_SEQUENCE, Function, rule

TRUST_RULES = RuleSet((
    rule("buyers"),
    rule("clickers", "_email.click", target=1),
    rule("exposed", "_custom.recommender", target=1),
    rule("openers", "_EMAIL.open", target=1),
))


@pytest.fixture
def function(aws, monkeypatch, capsys) -> Function:
    aws.publish(TRUST_RULES)
    return Function(aws, monkeypatch, capsys, Clock("2026-11-20T11:00:00"))


def ses_click() -> bytes:
    return (FIXTURES / "ses" / "click.json").read_bytes()  # tagged user_id user-42


def exposure() -> bytes:
    """A `_custom.recommender` record in the shape the exposures function writes (Pinpoint's), for user-42."""
    line = (FIXTURES / "interactions" / "events.jsonl").read_text().splitlines()[0]
    record: dict[str, Any] = json.loads(line)
    record["endpoint"] = {"User": {"UserId": "user-42"}}
    return json.dumps(record).encode()


def test_a_forged_ses_click_and_a_forged_exposure_on_the_app_stream_never_reach_the_counters(
        function, aws, app, make_kinesis_event, context):
    forged = [ses_click(), exposure(), app("t1", "trk_x", user="user-42"), app("e1", "_EMAIL.open", user="user-42")]
    response, metrics = function.invoke(make_kinesis_event(forged, stream_arn=APP_STREAM_ARN), context)
    assert response == {"batchItemFailures": []}  # rejected, never retried: they would fail the same way
    assert metrics["RecordsRejected"] == 4 and metrics["MatchedPairs"] == 0
    assert aws.counters() == {} and aws.outbox() == {}
    messages = aws.app_failures()
    assert len(messages) == 4
    assert {m["stream_arn"] for m in messages} == {APP_STREAM_ARN}
    # The real Kinesis shard id, as the failures queue's replay needs it (the `app/` namespace is the marks').
    assert {m["shard_id"] for m in messages} == {"shardId-000000000000"}
    reasons = sorted(m["reason"] for m in messages)
    assert all("app stream" in reason for reason in reasons)
    assert any(r.startswith("SES event on the app stream: only the SES/Pinpoint routes may send") for r in reasons)
    assert any("'_custom.recommender' is reserved" in r and "only the exposures function" in r for r in reasons)
    assert any("'trk_x' is reserved (trk_*)" in r for r in reasons)
    assert any("'_EMAIL.open' is reserved (_email.*)" in r for r in reasons)


def test_the_same_records_on_the_trusted_stream_count(function, aws, app, make_kinesis_event, context):
    records = [ses_click(), exposure(), app("a1", user="user-42")]
    response, metrics = function.invoke(make_kinesis_event(records, stream_arn=STREAM_ARN), context)
    assert response == {"batchItemFailures": []}
    assert metrics["RecordsRejected"] == 0
    assert aws.counter("clickers", "user-42").state.qualified
    assert aws.counter("exposed", "user-42").state.qualified
    assert aws.counter("buyers", "user-42").state.count == 1


def test_app_events_of_ordinary_types_count_from_the_app_stream(function, aws, app, make_kinesis_event, context):
    response, metrics = function.invoke(make_kinesis_event([app("a1"), app("a2")], stream_arn=APP_STREAM_ARN),
                                        context)
    assert response == {"batchItemFailures": []}
    assert metrics["RecordsRejected"] == 0 and aws.counter("buyers", "u1").state.count == 2


def test_marks_of_the_two_streams_never_collide(function, aws, app, make_kinesis_event, context):
    # Both streams have shardId-000000000000; the same partition key and even the same sequence number.
    trusted = make_kinesis_event([app("t1")], stream_arn=STREAM_ARN)
    from_apps = make_kinesis_event([app("x1")], stream_arn=APP_STREAM_ARN)
    assert function.invoke(trusted, context)[0] == {"batchItemFailures": []}
    response, metrics = function.invoke(from_apps, context)
    assert response == {"batchItemFailures": []} and metrics["DuplicatesSkipped"] == 0
    counter = aws.counter("buyers", "u1")
    assert counter.state.count == 2
    # The trusted stream's mark is keyed exactly as before (existing marks keep working); the app one apart.
    assert set(counter.hwm) == {mark_key("shardId-000000000000", "u1"),
                                mark_key(APP_SHARD_PREFIX + "shardId-000000000000", "u1")}
    # A redelivery of either stream is still a no-op.
    for batch in (trusted, from_apps):
        assert function.invoke(batch, context)[1]["CounterWrites"] == 0
    assert aws.counter("buyers", "u1").state.count == 2


def test_a_failed_group_on_the_app_stream_is_redelivered_from_its_lowest_record_and_converges(
        function, aws, app, make_kinesis_event, context, monkeypatch):
    payloads = [app("a1"), app("b1", user="u2"), app("a2"), app("b2", user="u2")]
    real_apply = function.store.apply

    def failing(rule, user_id, deliveries):
        if user_id == "u2":
            raise RuntimeError("throttled")
        return real_apply(rule, user_id, deliveries)

    monkeypatch.setattr(function.store, "apply", failing)
    response, _ = function.invoke(make_kinesis_event(payloads, stream_arn=APP_STREAM_ARN), context)
    assert response == {"batchItemFailures": [{"itemIdentifier": str(FIRST_SEQUENCE + 10)}]}
    monkeypatch.setattr(function.store, "apply", real_apply)
    redelivery = make_kinesis_event(payloads, stream_arn=APP_STREAM_ARN)
    redelivery["Records"] = redelivery["Records"][1:]
    assert function.invoke(redelivery, context)[0] == {"batchItemFailures": []}
    assert aws.counter("buyers", "u1").state.count == 2 and aws.counter("buyers", "u2").state.count == 2


def test_without_an_app_stream_every_record_is_trusted(function, aws, monkeypatch, make_kinesis_event, context):
    from functions.rules import aggregator

    monkeypatch.setenv("APP_STREAM_ARN", "")
    aggregator._settings.cache_clear()
    response, _ = function.invoke(make_kinesis_event([ses_click()], stream_arn=APP_STREAM_ARN), context)
    assert response == {"batchItemFailures": []}
    assert aws.counter("clickers", "user-42").state.qualified


def test_a_forged_record_from_the_app_stream_lands_in_the_app_failures_queue_and_the_trusted_one_stays_empty(
        function, aws, app, make_kinesis_event, context):
    response, _ = function.invoke(make_kinesis_event([ses_click(), app("a1")], stream_arn=APP_STREAM_ARN), context)
    assert response == {"batchItemFailures": []}
    (message,) = aws.app_failures()
    assert message["stream_arn"] == APP_STREAM_ARN and message["reason"].startswith("SES event on the app stream")
    assert aws.failures() == []  # the trusted failures queue (and its ≥ 1 message alarm) sees nothing


def test_a_record_the_trusted_stream_rejects_still_goes_to_the_trusted_failures_queue(
        function, aws, make_kinesis_event, context):
    broken = b'{"schema": "engagement-loop/v1"'
    function.invoke(make_kinesis_event([broken], stream_arn=STREAM_ARN), context)
    (message,) = aws.failures()
    assert message["stream_arn"] == STREAM_ARN
    assert aws.app_failures() == []


def test_a_poison_group_of_the_app_stream_goes_to_the_app_failures_queue(
        function, aws, app, make_kinesis_event, context, monkeypatch):
    from functions.rules.limits import Unwritable

    def unwritable(rule, user_id, deliveries):
        raise Unwritable("item over 400 KB")

    monkeypatch.setattr(function.store, "apply", unwritable)
    response, _ = function.invoke(make_kinesis_event([app("a1")], stream_arn=APP_STREAM_ARN), context)
    assert response == {"batchItemFailures": []}
    (message,) = aws.app_failures()
    assert message["reason"] == "rule buyers: item over 400 KB" and aws.failures() == []


def test_with_an_app_stream_the_app_failures_queue_is_required(aws, monkeypatch):
    from functions.rules.aggregator import AggregatorSettings

    monkeypatch.delenv("APP_FAILURES_QUEUE_URL")
    with pytest.raises(ValueError, match="APP_FAILURES_QUEUE_URL is missing"):
        AggregatorSettings.from_env()
    monkeypatch.setenv("APP_STREAM_ARN", "")
    assert AggregatorSettings.from_env().app_failures_queue_url == ""
