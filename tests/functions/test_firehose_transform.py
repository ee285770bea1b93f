"""The Firehose data-transformation handler, called as Firehose calls it: a batch read from Kinesis mixing
documented Pinpoint records, an SES event, an app record and garbage."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from functions.events import firehose_transform
from functions.events.canonical import IdentityMode
from functions.events.consumer_settings import ConsumerSettings
from functions.events.firehose_transform import handler, transform_records
from aws_lambda_powertools.utilities.data_classes import KinesisFirehoseEvent
from cli.lambda_context import LocalLambdaContext

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/engagement-loop-dev-events"

# An app event at 23:59:59.900 that reached Kinesis just after midnight: it belongs to the next day's partition.
APP_EVENT_TIME = 1_795_219_199_900  # 2026-11-20T23:59:59.900Z
KINESIS_ARRIVAL = 1_795_219_200_100  # 2026-11-21T00:00:00.100Z
APP_RECORD = {
    "schema": "engagement-loop/v1",
    "event_type": "add_to_cart",
    "event_time_ms": APP_EVENT_TIME,
    "user_id": "user-7",
    "item_id": "sku-1",
    "attributes": {"city": "Zürich"},
}
GARBAGE = b"\x00\xffnot a record"


def LambdaContextStub() -> LocalLambdaContext:  # noqa: N802 (used like the class it replaces)
    return LocalLambdaContext(function_name="engagement-loop-dev-events-transform", remaining_ms=60_000)


def fixture_bytes(source: str, name: str) -> bytes:
    return (FIXTURES / source / f"{name}.json").read_bytes()


def firehose_record(n: int, data: bytes, kinesis_arrival_ms: int) -> dict[str, Any]:
    return {
        "recordId": f"4961{n:04d}9034711111111111111111111111111111111111111111111111111{n:04d}",
        "approximateArrivalTimestamp": kinesis_arrival_ms + 2_000,
        "data": base64.b64encode(data).decode("ascii"),
        "kinesisRecordMetadata": {
            "shardId": "shardId-000000000000",
            "partitionKey": f"user-{n}",
            "approximateArrivalTimestamp": kinesis_arrival_ms,
            "sequenceNumber": f"4959045757138958768934799998806318302400{n:04d}",
            "subsequenceNumber": "",
        },
    }


BATCH = [
    fixture_bytes("pinpoint", "campaign_send"),
    fixture_bytes("pinpoint", "sms_success"),
    GARBAGE,
    fixture_bytes("pinpoint", "email_click"),
    fixture_bytes("ses", "open"),
    json.dumps(APP_RECORD, ensure_ascii=False).encode("utf-8"),
    b"[1, 2, 3]",
]


@pytest.fixture
def event() -> dict[str, Any]:
    return {
        "invocationId": "8e0f4cb2-7c1a-4b55-9a6e-2b1f3d0c9e11",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/engagement-loop-dev-lake",
        "sourceKinesisStreamArn": STREAM_ARN,
        "region": "us-east-1",
        "records": [firehose_record(n, data, KINESIS_ARRIVAL) for n, data in enumerate(BATCH)],
    }


@pytest.fixture
def output(event, monkeypatch) -> dict[str, Any]:
    monkeypatch.delenv("IDENTITY_MODE", raising=False)
    firehose_transform._settings.cache_clear()
    yield handler(event, LambdaContextStub())
    firehose_transform._settings.cache_clear()


def decoded(record: dict[str, Any]) -> str:
    return base64.b64decode(record["data"]).decode("utf-8")


def test_every_record_comes_back_once_in_order(event, output):
    assert [r["recordId"] for r in output["records"]] == [r["recordId"] for r in event["records"]]
    assert [r["result"] for r in output["records"]] == [
        "Ok", "Ok", "ProcessingFailed", "Ok", "Ok", "Ok", "ProcessingFailed"
    ]


@pytest.mark.parametrize(
    "index, event_type, arrival_time_ms, dt",
    [
        # Every source arrives when Kinesis says, not at its own stamp (arrival_timestamp, envelope time).
        (0, "_campaign.send", KINESIS_ARRIVAL, "2026-11-21"),
        (1, "_SMS.SUCCESS", KINESIS_ARRIVAL, "2026-11-21"),
        (3, "_email.click", KINESIS_ARRIVAL, "2026-11-21"),
        (4, "_email.open", KINESIS_ARRIVAL, "2026-11-21"),
        # The app event time is the day before.
        (5, "add_to_cart", KINESIS_ARRIVAL, "2026-11-21"),
    ],
)
def test_good_records_become_canonical_json_lines_partitioned_by_arrival_date(
    output, index, event_type, arrival_time_ms, dt
):
    record = output["records"][index]
    line = decoded(record)

    assert line.endswith("\n") and line.count("\n") == 1
    row = json.loads(line)
    assert row["event_type"] == event_type
    assert row["arrival_time_ms"] == arrival_time_ms
    assert record["metadata"] == {"partitionKeys": {"dt": dt}}


def test_an_app_record_keeps_its_fields_and_non_ascii_text(output):
    row = json.loads(decoded(output["records"][5]))

    assert row["event_time_ms"] == APP_EVENT_TIME
    assert (row["source"], row["user_id"], row["item_id"]) == ("app", "user-7", "sku-1")
    assert row["attributes"] == {"city": "Zürich"}
    assert row["event_id"].startswith("app-")


def test_the_default_identity_mode_attributes_pinpoint_events_to_their_endpoint(output):
    row = json.loads(decoded(output["records"][0]))

    assert row["user_id"] == row["endpoint_id"] == "d8dcf7c5-e81a-48ae-8313-f540cexample"


def test_lines_carry_no_addresses(output):
    lines = "".join(decoded(r) for r in output["records"] if r["result"] == "Ok")

    for address in ("@example.com", "+12065550142", "+14255550199", "72.21.198.67", "192.0.2.1", "Mozilla"):
        assert address not in lines


def test_bad_records_fail_with_their_reason_and_the_original_data(event, output):
    garbage, not_an_object = output["records"][2], output["records"][6]

    assert json.loads(decoded(garbage)) == {
        "reason": "not valid UTF-8 (bad byte at offset 1)",
        "raw_base64": event["records"][2]["data"],
    }
    assert json.loads(decoded(not_an_object)) == {
        "reason": "unrecognised record: expected a JSON object, got a list",
        "raw_base64": event["records"][6]["data"],
    }
    assert base64.b64decode(json.loads(decoded(garbage))["raw_base64"]) == GARBAGE
    assert "metadata" not in garbage


def test_rejections_are_logged_with_the_record_id_and_reason(event, caplog):
    firehose_transform._settings.cache_clear()
    handler(event, LambdaContextStub())

    rejected = [log for log in caplog.records if log.getMessage() == "record rejected"]
    assert [(log.levelname, log.record_id, log.reason) for log in rejected] == [
        ("WARNING", event["records"][2]["recordId"], "not valid UTF-8 (bad byte at offset 1)"),
        ("WARNING", event["records"][6]["recordId"], "unrecognised record: expected a JSON object, got a list"),
    ]


def test_record_counts_are_published_as_metrics(event, capsys):
    firehose_transform._settings.cache_clear()
    handler(event, LambdaContextStub())

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    assert (emf[0]["RecordsTransformed"], emf[0]["RecordsRejected"]) == ([5.0], [2.0])
    assert emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "EngagementLoop"


def test_identity_mode_user_comes_from_the_environment(event, monkeypatch):
    monkeypatch.setenv("IDENTITY_MODE", "user")
    firehose_transform._settings.cache_clear()
    try:
        output = handler(event, LambdaContextStub())
    finally:
        firehose_transform._settings.cache_clear()

    row = json.loads(decoded(output["records"][0]))
    assert row["user_id"] is None
    assert row["endpoint_id"] == "d8dcf7c5-e81a-48ae-8313-f540cexample"


def test_direct_put_records_use_firehose_arrival_time(event):
    record = event["records"][5]
    del record["kinesisRecordMetadata"]
    record["approximateArrivalTimestamp"] = KINESIS_ARRIVAL + 86_400_000

    response = transform_records(KinesisFirehoseEvent({**event, "records": [record]}), ConsumerSettings())

    assert response.records[0].metadata.partition_keys == {"dt": "2026-11-22"}


def test_a_kinesis_arrival_given_as_an_iso_string_is_read_too(event):
    record = event["records"][0]
    record["kinesisRecordMetadata"]["approximateArrivalTimestamp"] = "2026-11-21T00:00:00.100Z"

    response = transform_records(KinesisFirehoseEvent({**event, "records": [record]}), ConsumerSettings())

    assert json.loads(response.records[0].data_as_text)["arrival_time_ms"] == KINESIS_ARRIVAL


def test_a_bug_in_normalise_fails_only_that_record(event, monkeypatch, caplog):
    real_normalise = firehose_transform.normalise

    def flaky(raw, **kwargs):
        if b"_SMS.SUCCESS" in raw:
            raise KeyError("bug")
        return real_normalise(raw, **kwargs)

    monkeypatch.setattr(firehose_transform, "normalise", flaky)
    response = transform_records(KinesisFirehoseEvent(event), ConsumerSettings())

    assert [r.result for r in response.records][:2] == ["Ok", "ProcessingFailed"]
    assert json.loads(response.records[1].data_as_text)["reason"].startswith("internal error while normalising")
    assert any(log.exc_info and log.record_id == event["records"][1]["recordId"] for log in caplog.records)


def test_transform_records_is_usable_without_the_handler(event):
    response = transform_records(KinesisFirehoseEvent(event), ConsumerSettings(identity_mode=IdentityMode.USER))

    assert [r.result for r in response.records].count("Ok") == 5


class TestSettingsFromEnv:
    def test_defaults(self):
        assert ConsumerSettings.from_env({}) == ConsumerSettings(
            identity_mode=IdentityMode.USER_OR_ENDPOINT, metrics_namespace="EngagementLoop"
        )

    def test_values(self):
        settings = ConsumerSettings.from_env({"IDENTITY_MODE": "user", "POWERTOOLS_METRICS_NAMESPACE": "Loop/dev"})

        assert settings == ConsumerSettings(identity_mode=IdentityMode.USER, metrics_namespace="Loop/dev")

    def test_an_invalid_identity_mode_is_named_with_its_choices(self):
        with pytest.raises(ValueError) as error:
            ConsumerSettings.from_env({"IDENTITY_MODE": "endpoint"})

        assert str(error.value) == (
            "environment variable IDENTITY_MODE='endpoint' is invalid: expected one of user, user_or_endpoint"
        )


# --- trust: decided by the delivery stream's source stream, never by the record ---------------------------

APP_STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/engagement-loop-dev-app-events"
EXPOSURE = json.loads((FIXTURES / "interactions" / "events.jsonl").read_text().splitlines()[0])
FORGED = [
    fixture_bytes("ses", "click"),
    json.dumps(EXPOSURE).encode(),
    json.dumps({**APP_RECORD, "event_type": "trk_x"}).encode(),
    json.dumps({**APP_RECORD, "event_type": "_EMAIL.open"}).encode(),
    fixture_bytes("pinpoint", "email_click"),
    fixture_bytes("pinpoint", "sms_success"),
]


def batch_from(source_stream_arn: str, payloads: list[bytes]) -> KinesisFirehoseEvent:
    return KinesisFirehoseEvent({
        "invocationId": "0b7c1f5e-3a2d-4e6f-8a9b-1c2d3e4f5a6b",
        "deliveryStreamArn": "arn:aws:firehose:us-east-1:123456789012:deliverystream/engagement-loop-dev-app-lake",
        "sourceKinesisStreamArn": source_stream_arn, "region": "us-east-1",
        "records": [firehose_record(n, data, KINESIS_ARRIVAL) for n, data in enumerate(payloads)],
    })


def test_forged_trusted_events_from_the_app_stream_are_processing_failed_with_the_reason():
    settings = ConsumerSettings(app_stream_arn=APP_STREAM_ARN)
    response = transform_records(batch_from(APP_STREAM_ARN, FORGED), settings)

    assert [r.result for r in response.records] == ["ProcessingFailed"] * len(FORGED)
    failed = [json.loads(r.data_as_text) for r in response.records]
    assert failed[0]["reason"].startswith("SES event on the app stream: only the SES/Pinpoint routes may send")
    assert "'_custom.recommender' is reserved" in failed[1]["reason"]
    assert "'trk_x' is reserved" in failed[2]["reason"]
    assert "'_EMAIL.open' is reserved (_email.*)" in failed[3]["reason"]
    assert "'_email.click' is reserved" in failed[4]["reason"]
    assert "'_SMS.SUCCESS' is reserved (_sms.*)" in failed[5]["reason"]
    assert all("apps write to the app stream" in f["reason"] for f in failed)
    # The original bytes stay with the reason, under errors/, for inspection.
    assert base64.b64decode(failed[1]["raw_base64"]) == FORGED[1]


def test_the_same_records_from_the_trusted_stream_reach_the_lake():
    settings = ConsumerSettings(app_stream_arn=APP_STREAM_ARN)
    response = transform_records(batch_from(STREAM_ARN, FORGED), settings)

    assert [r.result for r in response.records] == ["Ok"] * len(FORGED)


def test_app_events_and_pinpoint_app_events_from_the_app_stream_reach_the_lake():
    settings = ConsumerSettings(app_stream_arn=APP_STREAM_ARN)
    payloads = [json.dumps(APP_RECORD).encode(), fixture_bytes("pinpoint", "app_session_stop")]
    response = transform_records(batch_from(APP_STREAM_ARN, payloads), settings)

    assert [r.result for r in response.records] == ["Ok", "Ok"]


def test_with_an_app_stream_a_batch_that_names_no_source_stream_is_untrusted():
    settings = ConsumerSettings(app_stream_arn=APP_STREAM_ARN)
    event = batch_from(STREAM_ARN, [fixture_bytes("ses", "click")])
    del event._data["sourceKinesisStreamArn"]
    response = transform_records(event, settings)

    assert [r.result for r in response.records] == ["ProcessingFailed"]


def test_the_handler_reads_the_app_stream_arn_from_its_environment(monkeypatch):
    monkeypatch.setenv("APP_STREAM_ARN", APP_STREAM_ARN)
    firehose_transform._settings.cache_clear()
    try:
        output = handler(dict(batch_from(APP_STREAM_ARN, FORGED[:1])._data), LambdaContextStub())
    finally:
        firehose_transform._settings.cache_clear()

    assert [r["result"] for r in output["records"]] == ["ProcessingFailed"]


def test_an_app_stream_arn_that_is_no_arn_is_named():
    with pytest.raises(ValueError, match="APP_STREAM_ARN='my-stream' is invalid"):
        ConsumerSettings.from_env({"APP_STREAM_ARN": "my-stream"})
