"""Firehose data-transformation Lambda: raw Kinesis records → canonical JSON lines for the S3 lake.

Firehose reads the Kinesis stream and hands each record's bytes (base64) to this function, with the time the
record reached Kinesis, which becomes its `arrival_time_ms` whatever the source. A record that
normalises becomes one canonical JSON line with partition key `dt` = its arrival date, which Firehose's
dynamic partitioning turns into `events/dt=YYYY-MM-DD/`. A record that does not is returned as
`ProcessingFailed` with data `{"reason": …, "raw_base64": <original data>}`, and the reason is logged
with the record id.

The same function serves the delivery stream of the trusted stream and that of the app stream. Which one called
is read from the event's `sourceKinesisStreamArn`: records of the app stream are normalised untrusted, so a
forged SES click or exposure is `ProcessingFailed` with its reason and lands under `errors/`, never in the lake
(docs/security.md).

Environment (read once, by `ConsumerSettings.from_env`):
- `IDENTITY_MODE`: `user` or `user_or_endpoint` (default `user_or_endpoint`);
- `APP_STREAM_ARN`: the app stream's ARN (default empty: no app stream, every record trusted);
- `POWERTOOLS_METRICS_NAMESPACE`: CloudWatch namespace of the record counts (default `EngagementLoop`).
"""

from __future__ import annotations

import base64
import binascii
import functools
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import (
    KinesisFirehoseDataTransformationRecordMetadata,
    KinesisFirehoseDataTransformationResponse,
    KinesisFirehoseEvent,
)
from aws_lambda_powertools.utilities.data_classes.kinesis_firehose_event import KinesisFirehoseRecord
from aws_lambda_powertools.utilities.serialization import base64_from_json, base64_from_str
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.events.consumer_settings import ConsumerSettings
from functions.events.canonical import LAKE_PARTITION_KEY, CanonicalEvent, Rejected
from functions.events.normalise import normalise
from functions.events.parsing import FieldError, iso_to_ms

logger = Logger()


@functools.cache
def _settings() -> ConsumerSettings:
    return ConsumerSettings.from_env()


def transform_records(
    event: KinesisFirehoseEvent, settings: ConsumerSettings
) -> KinesisFirehoseDataTransformationResponse:
    """Transform every record of one Firehose invocation (pure apart from logging)."""
    response = KinesisFirehoseDataTransformationResponse()
    trusted = settings.trusts(event.source_kinesis_stream_arn)
    for record in event.records:
        result = _normalise_record(record, settings, trusted=trusted)
        if isinstance(result, CanonicalEvent):
            response.add_record(
                record.build_data_transformation_response(
                    result="Ok",
                    data=base64_from_str(result.to_json() + "\n"),
                    metadata=KinesisFirehoseDataTransformationRecordMetadata(
                        partition_keys={LAKE_PARTITION_KEY: result.arrival_date}
                    ),
                )
            )
        else:
            logger.warning("record rejected", extra={"record_id": record.record_id, "reason": result.reason})
            response.add_record(
                record.build_data_transformation_response(
                    result="ProcessingFailed",
                    data=base64_from_json({"reason": result.reason, "raw_base64": record.data}),
                )
            )
    return response


def _normalise_record(record: KinesisFirehoseRecord, settings: ConsumerSettings, *,
                      trusted: bool) -> CanonicalEvent | Rejected:
    try:
        raw = base64.b64decode(record.data, validate=True)
    except (binascii.Error, ValueError):
        return Rejected("record data is not base64")
    arrival_time_ms = _kinesis_arrival_ms(record)
    try:
        return normalise(raw, identity_mode=settings.identity_mode, arrival_time_ms=arrival_time_ms,
                         trusted=trusted, app_may_report=settings.app_may_report)
    except Exception:  # a bug must cost one record, not the whole batch; the record keeps its data for replay
        logger.exception("normalise raised", extra={"record_id": record.record_id})
        return Rejected("internal error while normalising (a bug: see the function's log)")


def _kinesis_arrival_ms(record: KinesisFirehoseRecord) -> int:
    """When the record reached the Kinesis stream, the one arrival clock of every consumer (docs/events.md).

    With a Kinesis stream as source Firehose passes it as `kinesisRecordMetadata.approximateArrivalTimestamp`;
    the record's own `approximateArrivalTimestamp` is when Firehose got it, the only time for a Direct PUT
    (https://docs.aws.amazon.com/firehose/latest/dev/data-transformation.html). Lambda's sample event shows
    the Kinesis one as an ISO string (https://docs.aws.amazon.com/lambda/latest/dg/services-kinesisfirehose.html)
    while Firehose sends epoch milliseconds: both are read.
    """
    kinesis = record.metadata
    value = kinesis.approximate_arrival_timestamp if kinesis else None
    if isinstance(value, str):
        try:
            return iso_to_ms(value.replace("Z", "+00:00"), "kinesisRecordMetadata.approximateArrivalTimestamp")
        except FieldError:
            value = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return int(record.approximate_arrival_timestamp)


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point (`functions.events.firehose_transform.handler`)."""
    settings = _settings()
    response = transform_records(KinesisFirehoseEvent(event), settings)
    _publish_counts(response, settings.metrics_namespace)
    return response.asdict()


def _publish_counts(response: KinesisFirehoseDataTransformationResponse, namespace: str) -> None:
    rejected = sum(record.result == "ProcessingFailed" for record in response.records)
    metrics = Metrics(namespace=namespace)
    metrics.add_metric(name="RecordsTransformed", unit=MetricUnit.Count, value=len(response.records) - rejected)
    metrics.add_metric(name="RecordsRejected", unit=MetricUnit.Count, value=rejected)
    metrics.flush_metrics()
