"""`bench/cost.py` and `bench/prices.py`: the model's arithmetic on fixed inputs (no timing, no program run), the
price table's completeness, and the command's refusal of missing inputs."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bench import cost
from bench.cost import Deployment, Function, InputError, Measured, Scale, athena_bytes, load_measured, model
from bench.prices import PRICES, Price, table_problems
from bench.rules import read_units, write_units

MEASURED = Measured(write_units_per_event=0.88, transactional_write_units_per_event=0.69, read_units_per_event=0.33,
                    requests_per_event=0.66, outbox_entries_per_event=0.21, counter_item_bytes=330.0,
                    lake_bytes_per_event=106.0, scan_bytes_per_event_all_history=58.6,
                    interactions_rows_per_event=0.13, aggregator_billed_ms_per_event=None)
DEPLOYMENT = Deployment(kms_keys=1, alarms=23, log_groups=12,
                        functions=(Function("aggregator", 512), Function("dispatcher", 256)), firehoses=2,
                        consumers_per_stream={"trusted": 3, "app": 3}, app_stream_shards=2, batch_size=100,
                        batching_window_s=1.0, dispatcher_batch_size=25,
                        scheduled_runs_per_month={"sweeper": 2920.0}, retraining_runs_per_month=30.4,
                        custom_metrics=8)


def usd(lines, service, contains=""):
    return sum(line.usd() for line in lines if line.service == service and contains in line.item)


def test_doubling_events_doubles_per_event_lines_not_fixed_ones():
    one = model(Scale(), MEASURED, DEPLOYMENT)
    two = model(Scale(events_per_user_day=20), MEASURED, DEPLOYMENT)
    assert usd(two, "DynamoDB", "write request units, counters") == pytest.approx(
        2 * usd(one, "DynamoDB", "write request units, counters"))
    assert usd(two, "Firehose", "ingestion") == pytest.approx(2 * usd(one, "Firehose", "ingestion"))
    assert usd(two, "EventBridge") == pytest.approx(2 * usd(one, "EventBridge"))
    for service, item in (("Kinesis", "stream-hours"), ("Kinesis", "app stream, 2 provisioned"), ("KMS", "key"),
                          ("CloudWatch", "alarms")):
        assert usd(two, service, item) == usd(one, service, item) > 0, item


def test_on_demand_and_provisioned_stream_lines():
    on_demand = {line.price_key for line in model(Scale(), MEASURED, DEPLOYMENT) if "trusted" in line.item}
    assert on_demand == {"kinesis.on_demand_stream_hour", "kinesis.on_demand_gb_in", "kinesis.on_demand_gb_out"}
    provisioned = [line for line in model(Scale(stream_mode="provisioned", shards=3), MEASURED, DEPLOYMENT)
                   if "trusted" in line.item]
    assert {line.price_key for line in provisioned} == {"kinesis.shard_hour", "kinesis.put_payload_units"}
    shard_hours = next(line for line in provisioned if line.price_key == "kinesis.shard_hour")
    assert shard_hours.quantity == 3 * cost.HOURS_PER_MONTH
    # At the seed's scale one provisioned shard costs less than the on-demand stream's hours alone.
    assert usd(model(Scale(stream_mode="provisioned"), MEASURED, DEPLOYMENT), "Kinesis", "trusted") < \
        usd(model(Scale(), MEASURED, DEPLOYMENT), "Kinesis", "stream-hours")


def test_records_are_rounded_up_to_1_kb_for_kinesis_and_5_kb_for_firehose():
    lines = model(Scale(record_bytes=1100), MEASURED, DEPLOYMENT)
    events = Scale().events_per_month / 2  # half on the trusted stream
    gb_in = next(line for line in lines if line.price_key == "kinesis.on_demand_gb_in")
    assert gb_in.quantity == pytest.approx(events * 2 * 1024 / 1024 ** 3)
    ingestion = next(line for line in lines if line.price_key == "firehose.ingestion_gb")
    assert ingestion.quantity == pytest.approx(2 * events * 5 * 1024 / 1024 ** 3)


def test_athena_bills_at_least_10_mb_a_query_rounded_up_to_the_mb():
    assert athena_bytes(1) == 10 * 1024 ** 2
    assert athena_bytes(10 * 1024 ** 2 + 1) == 11 * 1024 ** 2
    tiny = model(Scale(endpoints=10, events_per_user_day=1), MEASURED, DEPLOYMENT)
    athena = next(line for line in tiny if line.service == "Athena")
    assert athena.quantity == pytest.approx(30.4 * 10 * 1024 ** 2 / 1024 ** 4)


def test_transactional_writes_are_two_units_per_started_kb_and_reads_one_per_4_kb():
    small = {"pk": {"S": "r#u"}, "state": {"S": "x" * 500}}
    large = {"pk": {"S": "r#u"}, "state": {"S": "x" * 1500}}
    assert write_units("PutItem", {"Item": small}) == (1, 0)
    assert write_units("PutItem", {"Item": large}) == (2, 0)
    assert write_units("TransactWriteItems", {"TransactItems": [{"Put": {"Item": small}},
                                                                {"Put": {"Item": large}}]}) == (6, 6)
    assert read_units("GetItem", {"ConsistentRead": True}, {"Item": large}) == 1
    assert read_units("GetItem", {"ConsistentRead": True}, {}) == 1  # a miss still costs a unit
    assert read_units("GetItem", {}, {"Item": large}) == 0.5
    assert read_units("Query", {"ConsistentRead": True}, {"Items": [large] * 3}) == 2  # 4.5 KB → 2 units


def test_rules_scale_the_per_event_dynamodb_figures():
    base = usd(model(Scale(), MEASURED, DEPLOYMENT), "DynamoDB", "counters")
    assert usd(model(Scale(rules=40), MEASURED, DEPLOYMENT), "DynamoDB", "counters") == pytest.approx(2 * base)


def test_personalize_is_apart_and_the_totals_add_up():
    lines = model(Scale(), MEASURED, DEPLOYMENT)
    result = cost.totals(lines)
    assert result.personalize == pytest.approx(sum(line.usd() for line in lines if line.service == "Personalize"))
    assert result.without_personalize == pytest.approx(
        sum(line.usd() for line in lines if line.service != "Personalize"))
    assert len(result.largest) == 3 and all("Personalize" not in name for name, _ in result.largest)
    campaign = next(line for line in lines if line.price_key == "personalize.tps_hour")
    assert campaign.quantity == cost.HOURS_PER_MONTH


def test_every_price_line_has_a_source_a_date_and_a_unit():
    assert table_problems() == []
    for key, price in PRICES.items():
        assert price.source.startswith("https://aws.amazon.com/") or price.source.startswith(
            "https://docs.aws.amazon.com/"), key


def test_a_price_line_without_a_source_or_an_unexplained_unverified_line_fails():
    good = PRICES["lambda.requests"]
    assert table_problems({"x": replace(good, source="")}) == [
        "price x: no source (expected the https:// URL of the AWS pricing page)"]
    assert table_problems({"x": replace(good, verified=False, note="")}) == [
        "price x: unverified but no note saying where the figure comes from"]
    assert table_problems({"x": Price("S", "u", 1.0, "https://aws.amazon.com/x", "2026", True)})


def test_schedules_are_counted_from_their_expressions():
    assert cost.runs_per_month("rate(15 minutes)") == pytest.approx(730 * 4)
    assert cost.runs_per_month("rate(1 day)") == pytest.approx(730 / 24)
    assert cost.runs_per_month("cron(0 2 * * ? *)") == pytest.approx(730 / 24)
    with pytest.raises(ValueError):
        cost.runs_per_month("cron(0 2 ? * MON *)")


def _result(path, benchmark, figures):
    path.write_text(json.dumps({"benchmark": benchmark, "command": f"python -m bench.{benchmark}",
                                "date": "2026-12-01", "figures": figures}))


RULES_FIGURES = {"modes": {"coalesced": {"write_units_per_event": 0.9, "transactional_write_units_per_event": 0.7,
                                         "read_units_per_event": 0.3, "requests_per_event": 0.66,
                                         "outbox_entries_per_event": 0.2}},
                 "item_sizes": {"counter": {"mean": 330}}}
LAKE_FIGURES = {"events": 1000, "lake_bytes_per_event": 100.0,
                "histories": {"-1": {"column_bytes": 58_000, "interactions_rows": 130}}}


def test_measured_inputs_come_from_the_result_files_and_the_aggregator_falls_back_to_modelled(tmp_path):
    _result(tmp_path / "rules.json", "rules", RULES_FIGURES)
    _result(tmp_path / "lake.json", "lake", LAKE_FIGURES)
    measured = load_measured(tmp_path)
    assert measured.write_units_per_event == 0.9 and measured.scan_bytes_per_event_all_history == 58.0
    assert measured.aggregator_billed_ms_per_event is None
    _result(tmp_path / "aggregator.json", "aggregator",
            {"billed_ms_per_million_events": {"latency_10_ms": 9e6, "latency_5_ms": 5e6}})
    assert load_measured(tmp_path).aggregator_billed_ms_per_event == 5.0
    assert "aggregator" in load_measured(tmp_path).sources


def test_a_missing_or_incomplete_result_file_is_an_error_and_the_command_exits_1(tmp_path, capsys):
    _result(tmp_path / "lake.json", "lake", LAKE_FIGURES)
    with pytest.raises(InputError, match="rules.json: missing"):
        load_measured(tmp_path)
    _result(tmp_path / "rules.json", "rules", {"modes": {}})
    with pytest.raises(InputError, match="no figures.modes.coalesced.write_units_per_event"):
        load_measured(tmp_path)
    assert cost.main(["--results", str(tmp_path)]) == 1
    assert "rules.json" in capsys.readouterr().err


def test_a_price_line_without_a_source_makes_the_command_exit_1(tmp_path, monkeypatch):
    _result(tmp_path / "rules.json", "rules", RULES_FIGURES)
    _result(tmp_path / "lake.json", "lake", LAKE_FIGURES)
    broken = {**PRICES, "lambda.requests": replace(PRICES["lambda.requests"], source="")}
    monkeypatch.setattr(cost, "table_problems", lambda: table_problems(broken))
    assert cost.main(["--results", str(tmp_path)]) == 1


def test_the_deployment_is_read_from_the_resource_graph():
    registered = [
        ("aws:kms/key:Key", "events-key", {}),
        ("aws:cloudwatch/metricAlarm:MetricAlarm", "a", {}), ("aws:cloudwatch/metricAlarm:MetricAlarm", "b", {}),
        ("aws:kinesis/stream:Stream", "events-stream", {"streamModeDetails": {"streamMode": "ON_DEMAND"}}),
        ("aws:kinesis/stream:Stream", "events-app-stream", {"shardCount": 4}),
        ("aws:lambda/function:Function", "rules-aggregator-handler-function", {"memorySize": 512}),
        ("aws:lambda/eventSourceMapping:EventSourceMapping", "rules-aggregator-mapping",
         {"eventSourceArn": "arn:aws:kinesis:us-east-1:1:stream/events-stream", "batchSize": 100,
          "maximumBatchingWindowInSeconds": 1}),
        ("aws:cloudwatch/eventRule:EventRule", "rules-sweeper-schedule", {"scheduleExpression": "rate(15 minutes)"}),
        ("aws:cloudwatch/eventRule:EventRule", "retraining-schedule", {"scheduleExpression": "cron(0 2 * * ? *)"}),
    ]
    deployment = cost.deployment_from(registered)
    assert (deployment.kms_keys, deployment.alarms, deployment.app_stream_shards) == (1, 2, 4)
    assert deployment.memory("aggregator") == 512 and deployment.consumers_per_stream == {"trusted": 1, "app": 0}
    assert deployment.scheduled_runs_per_month == {"sweeper": pytest.approx(2920)}
    assert math.isclose(deployment.retraining_runs_per_month, 730 / 24)


def test_a_provisioned_stream_too_small_for_the_scale_is_refused(capsys):
    """Kinesis takes 1,000 records/s or 1 MB/s a shard: a cost for a stream that would throttle all month is no
    cost at all."""
    from bench.cost import Scale, main

    scale = Scale(endpoints=100_000_000, stream_mode="provisioned")
    assert scale.trusted_shards_needed() == 6  # 5,787 records/s of 1 KB on the trusted stream
    with pytest.raises(SystemExit):
        main(["--endpoints", "100000000", "--stream-mode", "provisioned", "--shards", "5"])
    assert "need at least 6 provisioned shards" in capsys.readouterr().err
