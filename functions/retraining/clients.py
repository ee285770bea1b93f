"""Small interfaces over the AWS services the retraining steps call, and their boto3 implementations.

Steps see typed records, never raw responses. The boto3 classes translate botocore errors into the two
exceptions the state machine retries by name (a Lambda error's name is its exception class):
`Throttled` (ThrottlingException, TooManyRequestsException, LimitExceededException, …) and `ResourceInUse`
(ResourceInUseException). Every other error propagates and ends the run through its failure notification.
"""

from __future__ import annotations

import functools
import io
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, ContextManager, Iterator, Mapping, Protocol, TextIO, TypeVar

from botocore.exceptions import ClientError

THROTTLING_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "LimitExceededException",
    "ProvisionedThroughputExceededException", "RequestLimitExceeded", "SlowDown",
})
EVENT_SOURCE = "engagement-loop.retraining"
LOCK_TABLE_KEY = "pk"
"""Partition key (string) of the lock table."""
LOCK_TABLE_TTL_ATTRIBUTE = "expires_at"
"""The lock table's TTL attribute (epoch seconds); acquiring also compares it, since TTL deletion lags by days."""
_LOCK_ITEM = "retraining#lock"
_LAST_IMPORT_ITEM = "retraining#last-import"

_F = TypeVar("_F", bound=Callable[..., Any])


class Throttled(Exception):
    """AWS asked us to slow down; the state machine retries this error by name with backoff."""


class ResourceInUse(Exception):
    """The dataset, solution or campaign is busy with another job; retried by name with a longer backoff."""


def translate_errors(method: _F) -> _F:
    """Raise `Throttled` / `ResourceInUse` for those AWS error codes, chained to the original error."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ClientError as error:
            code = _code(error)
            if code in THROTTLING_CODES:
                raise Throttled(f"{error.operation_name}: {code}: {_message(error)}") from error
            if code == "ResourceInUseException":
                raise ResourceInUse(f"{error.operation_name}: {_message(error)}") from error
            raise

    return wrapper  # type: ignore[return-value]


def _message(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Message", "")


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/key` → (bucket, key)."""
    bucket, sep, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not sep or not key:
        raise ValueError(f"expected s3://<bucket>/<key>, got {uri!r}")
    return bucket, key


# ---------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A Personalize job's status as Describe* reports it."""

    status: str
    failure_reason: str | None = None
    last_updated: datetime | None = None


@dataclass(frozen=True, slots=True)
class SolutionSettings:
    """What DescribeSolution says about the solution's own auto-training."""

    perform_auto_training: bool
    schedule_days: int
    """The auto-training interval: `rate(N days)` of its AutoTrainingConfig, 7 when unset (the default)."""
    created: datetime


@dataclass(frozen=True, slots=True)
class SolutionVersionSummary:
    """One entry of ListSolutionVersions."""

    arn: str
    status: str
    created: datetime
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CampaignUpdate:
    """A campaign's `latestCampaignUpdate`."""

    solution_version_arn: str | None
    status: str
    min_provisioned_tps: int | None = None
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Campaign:
    """What DescribeCampaign says is deployed, and the latest update."""

    solution_version_arn: str | None
    min_provisioned_tps: int | None
    status: str
    latest_update: CampaignUpdate | None = None


@dataclass(frozen=True, slots=True)
class QueryStatus:
    """An Athena query execution's state."""

    state: str
    reason: str | None = None
    output_location: str | None = None
    """The result CSV (`s3://…/<query id>.csv`); where the workgroup put it, which may override ours."""
    scanned_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class LastImport:
    """The newest interactions already in the dataset: rows up to `cutoff` (TIMESTAMP, epoch seconds)."""

    run_id: str
    cutoff: int


@dataclass(frozen=True, slots=True)
class Notification:
    """One run's result: an SNS message and an EventBridge event with the same figures."""

    detail_type: str
    subject: str
    summary: str
    detail: Mapping[str, Any]


# ------------------------------------------------------------------------------------------------- interfaces


class Personalize(Protocol):
    """The Amazon Personalize calls the loop makes."""

    def create_dataset_import_job(self, *, name: str, dataset_arn: str, data_location: str, role_arn: str,
                                  import_mode: str) -> str: ...
    def describe_dataset_import_job(self, arn: str) -> JobStatus: ...
    def create_solution_version(self, *, name: str, solution_arn: str, training_mode: str) -> str: ...
    def set_event_weights(self, *, solution_arn: str, weights: Mapping[str, float],
                          keep_auto_training: bool = False) -> None: ...
    def describe_solution(self, arn: str) -> SolutionSettings: ...
    def describe_solution_version(self, arn: str) -> JobStatus: ...
    def list_solution_versions(self, solution_arn: str) -> list[SolutionVersionSummary]: ...
    def get_solution_metrics(self, solution_version_arn: str) -> dict[str, float]: ...
    def describe_campaign(self, arn: str) -> Campaign: ...
    def update_campaign(self, *, arn: str, solution_version_arn: str, min_provisioned_tps: int | None) -> None: ...


class Athena(Protocol):
    """Running the interactions query."""

    def start_query(self, *, sql: str, database: str, workgroup: str, output_location: str, token: str) -> str: ...
    def get_query(self, query_id: str) -> QueryStatus: ...


class ObjectStore(Protocol):
    """S3 objects by `s3://bucket/key` URI."""

    def put_text(self, uri: str, text: str, content_type: str = "text/csv") -> None: ...
    def open_text(self, uri: str) -> ContextManager[TextIO]: ...
    def upload_file(self, path: str, uri: str) -> None: ...


class RunStore(Protocol):
    """One run at a time, and where the last import ended."""

    def acquire(self, run_id: str, *, now: datetime, ttl_seconds: int) -> str | None:
        """Take the lock for `run_id`; returns None, or the run id holding it."""
    def release(self, run_id: str) -> None: ...
    def last_import(self) -> LastImport | None: ...
    def record_import(self, run_id: str, cutoff: int, *, now: datetime) -> None: ...


class Notifier(Protocol):
    """Telling people and systems how a run ended."""

    def publish(self, notification: Notification) -> None: ...


# -------------------------------------------------------------------------------------------- boto3 versions


class Boto3Personalize:
    """Personalize through a boto3 `personalize` client."""

    def __init__(self, client: Any):
        self._client = client

    @translate_errors
    def create_dataset_import_job(self, *, name: str, dataset_arn: str, data_location: str, role_arn: str,
                                  import_mode: str) -> str:
        return self._client.create_dataset_import_job(
            jobName=name, datasetArn=dataset_arn, dataSource={"dataLocation": data_location}, roleArn=role_arn,
            importMode=import_mode)["datasetImportJobArn"]

    @translate_errors
    def describe_dataset_import_job(self, arn: str) -> JobStatus:
        job = self._client.describe_dataset_import_job(datasetImportJobArn=arn)["datasetImportJob"]
        return JobStatus(job["status"], job.get("failureReason"), job.get("lastUpdatedDateTime"))

    @translate_errors
    def create_solution_version(self, *, name: str, solution_arn: str, training_mode: str) -> str:
        return self._client.create_solution_version(
            name=name, solutionArn=solution_arn, trainingMode=training_mode)["solutionVersionArn"]

    @translate_errors
    def set_event_weights(self, *, solution_arn: str, weights: Mapping[str, float],
                          keep_auto_training: bool = False) -> None:
        request: dict[str, Any] = {"solutionArn": solution_arn, "solutionUpdateConfig": {"eventsConfig": {
            "eventParametersList": [{"eventType": t, "weight": w} for t, w in sorted(weights.items())]}}}
        if keep_auto_training:
            # Said explicitly: the API reference does not say what an update without it does to auto-training.
            request["performAutoTraining"] = True
        self._client.update_solution(**request)

    @translate_errors
    def describe_solution(self, arn: str) -> SolutionSettings:
        solution = self._client.describe_solution(solutionArn=arn)["solution"]
        expression = (solution.get("solutionConfig", {}).get("autoTrainingConfig", {})
                      .get("schedulingExpression") or "")
        found = re.fullmatch(r"rate\((\d+) days?\)", expression)
        return SolutionSettings(bool(solution.get("performAutoTraining")), int(found.group(1)) if found else 7,
                                solution["creationDateTime"])

    @translate_errors
    def describe_solution_version(self, arn: str) -> JobStatus:
        version = self._client.describe_solution_version(solutionVersionArn=arn)["solutionVersion"]
        return JobStatus(version["status"], version.get("failureReason"), version.get("lastUpdatedDateTime"))

    @translate_errors
    def list_solution_versions(self, solution_arn: str) -> list[SolutionVersionSummary]:
        pages = self._client.get_paginator("list_solution_versions").paginate(solutionArn=solution_arn)
        return [SolutionVersionSummary(v["solutionVersionArn"], v["status"], v["creationDateTime"],
                                       v.get("failureReason"))
                for page in pages for v in page.get("solutionVersions", [])]

    @translate_errors
    def get_solution_metrics(self, solution_version_arn: str) -> dict[str, float]:
        metrics = self._client.get_solution_metrics(solutionVersionArn=solution_version_arn).get("metrics", {})
        return {name: float(value) for name, value in metrics.items()}

    @translate_errors
    def describe_campaign(self, arn: str) -> Campaign:
        campaign = self._client.describe_campaign(campaignArn=arn)["campaign"]
        latest = campaign.get("latestCampaignUpdate")
        update = None if latest is None else CampaignUpdate(
            latest.get("solutionVersionArn"), latest["status"], latest.get("minProvisionedTPS"),
            latest.get("failureReason"))
        return Campaign(campaign.get("solutionVersionArn"), campaign.get("minProvisionedTPS"), campaign["status"],
                        update)

    @translate_errors
    def update_campaign(self, *, arn: str, solution_version_arn: str, min_provisioned_tps: int | None) -> None:
        request: dict[str, Any] = {"campaignArn": arn, "solutionVersionArn": solution_version_arn}
        if min_provisioned_tps is not None:
            request["minProvisionedTPS"] = min_provisioned_tps
        self._client.update_campaign(**request)


class Boto3Athena:
    """Athena through a boto3 `athena` client."""

    def __init__(self, client: Any):
        self._client = client

    @translate_errors
    def start_query(self, *, sql: str, database: str, workgroup: str, output_location: str, token: str) -> str:
        # A workgroup that enforces its configuration ignores OutputLocation; get_query reports the real one.
        return self._client.start_query_execution(
            QueryString=sql, ClientRequestToken=token, QueryExecutionContext={"Database": database},
            WorkGroup=workgroup, ResultConfiguration={"OutputLocation": output_location})["QueryExecutionId"]

    @translate_errors
    def get_query(self, query_id: str) -> QueryStatus:
        execution = self._client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        status = execution["Status"]
        reason = status.get("AthenaError", {}).get("ErrorMessage") or status.get("StateChangeReason")
        return QueryStatus(status["State"], reason, execution.get("ResultConfiguration", {}).get("OutputLocation"),
                           execution.get("Statistics", {}).get("DataScannedInBytes"))


class Boto3ObjectStore:
    """S3 objects by `s3://` URI through a boto3 `s3` client."""

    def __init__(self, client: Any):
        self._client = client

    @translate_errors
    def put_text(self, uri: str, text: str, content_type: str = "text/csv") -> None:
        bucket, key = split_s3_uri(uri)
        self._client.put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"), ContentType=content_type)

    @contextmanager
    def open_text(self, uri: str) -> Iterator[TextIO]:
        """The object as a text stream, read as it is consumed (results can exceed the Lambda's memory)."""
        bucket, key = split_s3_uri(uri)
        body = translate_errors(self._client.get_object)(Bucket=bucket, Key=key)["Body"]
        with io.TextIOWrapper(body, encoding="utf-8-sig", newline="") as text:
            yield text

    @translate_errors
    def upload_file(self, path: str, uri: str) -> None:
        bucket, key = split_s3_uri(uri)
        self._client.upload_file(path, bucket, key, ExtraArgs={"ContentType": "text/csv"})


class DynamoRunStore:
    """The run lock and the last import's cutoff: two items of one DynamoDB table (key `pk`, TTL `expires_at`)."""

    def __init__(self, client: Any, table: str):
        self._client = client
        self._table = table

    @translate_errors
    def acquire(self, run_id: str, *, now: datetime, ttl_seconds: int) -> str | None:
        epoch = int(now.timestamp())
        try:
            self._client.put_item(
                TableName=self._table,
                Item={LOCK_TABLE_KEY: {"S": _LOCK_ITEM}, "run_id": {"S": run_id},
                      "acquired_at": {"S": now.isoformat()},
                      LOCK_TABLE_TTL_ATTRIBUTE: {"N": str(epoch + ttl_seconds)}},
                # Ours again (a retried invocation) or expired: DynamoDB's TTL deletes items days late.
                ConditionExpression="attribute_not_exists(#pk) OR #run = :run OR #exp < :now",
                ExpressionAttributeNames={"#pk": LOCK_TABLE_KEY, "#run": "run_id",
                                          "#exp": LOCK_TABLE_TTL_ATTRIBUTE},
                ExpressionAttributeValues={":run": {"S": run_id}, ":now": {"N": str(epoch)}},
            )
            return None
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise
        item = self._client.get_item(TableName=self._table, Key={LOCK_TABLE_KEY: {"S": _LOCK_ITEM}},
                                     ConsistentRead=True).get("Item")
        return item["run_id"]["S"] if item else "(released meanwhile)"

    @translate_errors
    def release(self, run_id: str) -> None:
        try:
            self._client.delete_item(
                TableName=self._table, Key={LOCK_TABLE_KEY: {"S": _LOCK_ITEM}},
                ConditionExpression="#run = :run", ExpressionAttributeNames={"#run": "run_id"},
                ExpressionAttributeValues={":run": {"S": run_id}})
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise
            # Not ours (any more): nothing to release.

    @translate_errors
    def last_import(self) -> LastImport | None:
        item = self._client.get_item(TableName=self._table, Key={LOCK_TABLE_KEY: {"S": _LAST_IMPORT_ITEM}},
                                     ConsistentRead=True).get("Item")
        return LastImport(item["run_id"]["S"], int(item["cutoff"]["N"])) if item else None

    @translate_errors
    def record_import(self, run_id: str, cutoff: int, *, now: datetime) -> None:
        try:
            self._client.put_item(
                TableName=self._table,
                Item={LOCK_TABLE_KEY: {"S": _LAST_IMPORT_ITEM}, "run_id": {"S": run_id},
                      "cutoff": {"N": str(cutoff)}, "recorded_at": {"S": now.isoformat()}},
                # Never move the cutoff back: an older run finishing late must not cause a re-import.
                ConditionExpression="attribute_not_exists(#pk) OR #cutoff <= :cutoff",
                ExpressionAttributeNames={"#pk": LOCK_TABLE_KEY, "#cutoff": "cutoff"},
                ExpressionAttributeValues={":cutoff": {"N": str(cutoff)}})
        except ClientError as error:
            if _code(error) != "ConditionalCheckFailedException":
                raise


class Boto3Notifier:
    """SNS topic message plus EventBridge event (source `engagement-loop.retraining`)."""

    def __init__(self, sns: Any, events: Any, *, topic_arn: str, event_bus_name: str):
        self._sns = sns
        self._events = events
        self._topic_arn = topic_arn
        self._event_bus_name = event_bus_name

    @translate_errors
    def publish(self, notification: Notification) -> None:
        detail = json.dumps(notification.detail, sort_keys=True, default=str)
        self._sns.publish(
            TopicArn=self._topic_arn,
            # SNS subjects: ASCII, no line breaks, under 100 characters.
            Subject=notification.subject.encode("ascii", "replace").decode("ascii")[:99],
            Message=f"{notification.summary}\n\n{json.dumps(notification.detail, indent=2, default=str)}",
            MessageAttributes={"detail_type": {"DataType": "String", "StringValue": notification.detail_type}},
        )
        response = self._events.put_events(Entries=[{
            "Source": EVENT_SOURCE, "DetailType": notification.detail_type, "Detail": detail,
            "EventBusName": self._event_bus_name}])
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            message = f"PutEvents: {entry.get('ErrorCode')}: {entry.get('ErrorMessage')}"
            raise Throttled(message) if entry.get("ErrorCode") in THROTTLING_CODES else RuntimeError(message)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
