"""Firehose data-transformation Lambda: raw Kinesis records → canonical JSON lines for the S3 lake.

Firehose reads the Kinesis stream and hands each record's bytes (base64) to this function. A record that
normalises becomes one canonical JSON line with partition key `dt` = its arrival date, which Firehose's
dynamic partitioning turns into `events/dt=YYYY-MM-DD/`. A record that does not is returned as
`ProcessingFailed` with data `{"reason": …, "raw_base64": <original data>}`, and the reason is logged
with the record id.

Environment (read once, by `TransformSettings.from_env`):
- `IDENTITY_MODE`: `user` or `user_or_endpoint` (default `user_or_endpoint`);
- `POWERTOOLS_METRICS_NAMESPACE`: CloudWatch namespace of the record counts (default `EngagementLoop`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from dataclasses import dataclass
from typing import Any, Mapping

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

from functions.events.canonical import LAKE_PARTITION_KEY, CanonicalEvent, IdentityMode, Rejected
from functions.events.normalise import normalise

logger = Logger()

DEFAULT_METRICS_NAMESPACE = "EngagementLoop"


@dataclass(frozen=True, slots=True, kw_only=True)
class TransformSettings:
    """The function's configuration, parsed once from its environment."""

    identity_mode: IdentityMode = IdentityMode.USER_OR_ENDPOINT
    """How records without a user are attributed. Default `user_or_endpoint`."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """CloudWatch namespace for the RecordsTransformed / RecordsRejected counts. Default `EngagementLoop`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TransformSettings:
        """Read the settings; a bad value raises ValueError naming the variable, the value and the choices."""
        environ = os.environ if environ is None else environ
        raw_mode = environ.get("IDENTITY_MODE") or IdentityMode.USER_OR_ENDPOINT.value
        try:
            identity_mode = IdentityMode(raw_mode)
        except ValueError:
            choices = ", ".join(mode.value for mode in IdentityMode)
            raise ValueError(
                f"environment variable IDENTITY_MODE={raw_mode!r} is invalid: expected one of {choices}"
            ) from None
        namespace = environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_METRICS_NAMESPACE
        return cls(identity_mode=identity_mode, metrics_namespace=namespace)


@functools.cache
def _settings() -> TransformSettings:
    return TransformSettings.from_env()


def transform_records(
    event: KinesisFirehoseEvent, settings: TransformSettings
) -> KinesisFirehoseDataTransformationResponse:
    """Transform every record of one Firehose invocation (pure apart from logging)."""
    response = KinesisFirehoseDataTransformationResponse()
    for record in event.records:
        result = _normalise_record(record, settings)
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


def _normalise_record(record: KinesisFirehoseRecord, settings: TransformSettings) -> CanonicalEvent | Rejected:
    try:
        raw = base64.b64decode(record.data, validate=True)
    except (binascii.Error, ValueError):
        return Rejected("record data is not base64")
    # The Kinesis arrival time, as the stream's other consumers see it; Firehose's own is a fallback.
    kinesis = record.metadata
    arrival_time_ms = kinesis.approximate_arrival_timestamp if kinesis else record.approximate_arrival_timestamp
    try:
        return normalise(raw, identity_mode=settings.identity_mode, arrival_time_ms=arrival_time_ms)
    except Exception:  # a bug must cost one record, not the whole batch; the record keeps its data for replay
        logger.exception("normalise raised", extra={"record_id": record.record_id})
        return Rejected("internal error while normalising (a bug: see the function's log)")


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
