"""The retraining tests' world: moto S3/DynamoDB/SNS/EventBridge, stubbed Personalize and Athena clients
(botocore's Stubber checks every request against the API model), recorded responses scripted per run, and
runs of the generated definition on moto's Step Functions interpreter with the real Lambda entry behind its
Tasks (step_functions.py)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import functools

import boto3
import pytest
from botocore.stub import ANY, Stubber

from functions.retraining import handler
from functions.retraining.clients import (
    LOCK_TABLE_KEY, LOCK_TABLE_TTL_ATTRIBUTE, Boto3Athena, Boto3Personalize, EVENT_SOURCE,
)
from functions.retraining.settings import RetrainingSettings
from functions.retraining.steps import Services
from functions.retraining.workflow import LoopBound, WorkflowSpec, build_definition
from tests.functions.retraining.step_functions import Execution, LambdaService, execute
from cli.lambda_context import LocalLambdaContext

REGION = "eu-west-1"
ACCOUNT = "123456789012"
BUCKET = "engagement-lake"
LOCK_TABLE = "retraining-runs"
PERSONALIZE = f"arn:aws:personalize:{REGION}:{ACCOUNT}"
DATASET_ARN = f"{PERSONALIZE}:dataset/shop/INTERACTIONS"
SOLUTION_ARN = f"{PERSONALIZE}:solution/shop-recs"
CAMPAIGN_ARN = f"{PERSONALIZE}:campaign/shop-recs"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/personalize-import"
NEW_VERSION = f"{SOLUTION_ARN}/0a1b2c3d"
OLD_VERSION = f"{SOLUTION_ARN}/99887766"
RUN_ID = "run-1"
IMPORT_JOB_ARN = f"{PERSONALIZE}:dataset-import-job/retrain-{RUN_ID}"
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
QUERY_ID = "7f1c2a9e-0000-4000-8000-000000000001"
# Where the enforced workgroup puts results, overriding the run's own OutputLocation.
RESULT_URI = f"s3://{BUCKET}/athena-results/{QUERY_ID}.csv"
SCORING = {"_email.open": 1, "_email.click": 5, "purchase": 20}
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:retraining"
FAST_SPEC = WorkflowSpec(function_arn=FUNCTION_ARN, query=LoopBound(1, 5), import_job=LoopBound(1, 5),
                         training=LoopBound(1, 5), campaign=LoopBound(1, 5))

ENV = {
    "LAKE_BUCKET": BUCKET, "ATHENA_WORKGROUP": "engagement-loop", "LOCK_TABLE": LOCK_TABLE,
    "PERSONALIZE_DATASET_ARN": DATASET_ARN, "PERSONALIZE_SOLUTION_ARN": SOLUTION_ARN,
    "PERSONALIZE_CAMPAIGN_ARN": CAMPAIGN_ARN, "PERSONALIZE_IMPORT_ROLE_ARN": ROLE_ARN,
    "SCORING": json.dumps(SCORING), "TOPIC_ARN": f"arn:aws:sns:{REGION}:{ACCOUNT}:retraining",
}


def FakeLambdaContext() -> LocalLambdaContext:  # noqa: N802 (used like the class it replaces)
    return LocalLambdaContext(function_name="retraining")


def interactions(users: int = 30, per_user: int = 40, *, start: int = 1_763_000_000, step: int = 60,
                 ) -> list[tuple[str, str, str, float, int]]:
    """`users × per_user` rows, TIMESTAMPs rising by `step` seconds from `start`."""
    rows = []
    for n in range(users * per_user):
        event_type = sorted(SCORING)[n % len(SCORING)]
        rows.append((f"user-{n % users}", f"item-{n % 17}", event_type, float(SCORING[event_type]), start + n * step))
    return rows


def athena_csv(rows: list[tuple[Any, ...]]) -> str:
    """The CSV Athena writes for a SELECT: a header, every value quoted (inner quotes doubled)."""
    header = ("USER_ID", "ITEM_ID", "EVENT_TYPE", "EVENT_VALUE", "TIMESTAMP")
    return "".join(",".join('"' + str(value).replace('"', '""') + '"' for value in row) + "\n"
                   for row in [header, *rows])


@functools.cache
def _session() -> boto3.Session:
    """One session for every test: it caches the service models, which are slow to load."""
    return boto3.Session(region_name=REGION)


class World:
    """One account: the lake bucket, lock table, topic and bus in moto; Personalize and Athena stubbed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        session = _session()
        self.s3 = session.client("s3")
        self.dynamodb = session.client("dynamodb")
        self.sqs = session.client("sqs")
        self.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.dynamodb.create_table(
            TableName=LOCK_TABLE, BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": LOCK_TABLE_KEY, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": LOCK_TABLE_KEY, "AttributeType": "S"}])
        self.dynamodb.update_time_to_live(TableName=LOCK_TABLE, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": LOCK_TABLE_TTL_ATTRIBUTE})
        sns, events = session.client("sns"), session.client("events")
        topic_arn = sns.create_topic(Name="retraining")["TopicArn"]
        self.topic_queue = self._queue("topic")
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=self._queue_arn(self.topic_queue))
        self.events_queue = self._queue("events")
        events.put_rule(Name="retraining", EventPattern=json.dumps({"source": [EVENT_SOURCE]}))
        events.put_targets(Rule="retraining", Targets=[{"Id": "q", "Arn": self._queue_arn(self.events_queue)}])
        self.env = {**ENV, "TOPIC_ARN": topic_arn}
        self.personalize_client = session.client("personalize")
        self.athena_client = session.client("athena")
        self.personalize = Stubber(self.personalize_client)
        self.athena = Stubber(self.athena_client)
        self.personalize.activate()
        self.athena.activate()
        self.session = session

    def _queue(self, name: str) -> str:
        return self.sqs.create_queue(QueueName=name)["QueueUrl"]

    def _queue_arn(self, url: str) -> str:
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    # ------------------------------------------------------------------------------------------- running

    def settings(self, **env: str) -> RetrainingSettings:
        return RetrainingSettings.from_env({**self.env, **env})

    def services(self, settings: RetrainingSettings) -> Services:
        return dataclasses.replace(handler.boto3_services(settings, self.session),
                                   personalize=Boto3Personalize(self.personalize_client),
                                   athena=Boto3Athena(self.athena_client), clock=lambda: NOW)

    def run(self, spec: WorkflowSpec = FAST_SPEC, *, name: str = RUN_ID, auto_training: bool = False,
            throttle_invocations: int = 0, **env: str) -> Execution:
        """Execute the generated definition on moto's interpreter, each Task invoking the handler Lambda's entry
        (`lambda_handler`, Powertools and all) with these settings; every scripted response must have been used."""
        spec = dataclasses.replace(spec, auto_training=auto_training)
        settings = self.settings(**env)
        services = self.services(settings)
        with self.monkeypatch.context() as patch:
            patch.setattr(handler, "_runtime", lambda: (settings, services))
            service = LambdaService(FUNCTION_ARN, lambda payload: handler.lambda_handler(payload, FakeLambdaContext()),
                                    throttle_next=throttle_invocations)
            execution = execute(build_definition(spec), service, name=name, region=REGION,
                                monkeypatch=self.monkeypatch)
        self.personalize.assert_no_pending_responses()
        self.athena.assert_no_pending_responses()
        return execution

    # -------------------------------------------------------------------------------------- recorded AWS

    def query(self, *states: str, reason: str | None = None, rows: list[tuple[Any, ...]] | None = None) -> None:
        """Athena: StartQueryExecution, then one GetQueryExecution per state; `rows` become the result CSV."""
        self.athena.add_response("start_query_execution", {"QueryExecutionId": QUERY_ID}, {
            "QueryString": ANY, "ClientRequestToken": ANY, "QueryExecutionContext": {"Database": "engagement_loop"},
            "WorkGroup": "engagement-loop",
            "ResultConfiguration": {"OutputLocation": f"s3://{BUCKET}/interactions/run={RUN_ID}/"}})
        for state in states or ("RUNNING", "SUCCEEDED"):
            status: dict[str, Any] = {"State": state}
            if reason:
                status["StateChangeReason"] = reason
            self.athena.add_response("get_query_execution", {"QueryExecution": {
                "QueryExecutionId": QUERY_ID, "Status": status, "ResultConfiguration": {"OutputLocation": RESULT_URI},
                "Statistics": {"DataScannedInBytes": 123_456}}}, {"QueryExecutionId": QUERY_ID})
        if rows is not None:
            self.s3.put_object(Bucket=BUCKET, Key=RESULT_URI.split("/", 3)[3], Body=athena_csv(rows).encode())

    def import_job(self, *statuses: str, mode: str = "FULL", failure_reason: str | None = None,
                   finished: datetime = NOW + timedelta(minutes=20)) -> None:
        self.personalize.add_response("create_dataset_import_job", {"datasetImportJobArn": IMPORT_JOB_ARN}, {
            "jobName": f"retrain-{RUN_ID}", "datasetArn": DATASET_ARN, "roleArn": ROLE_ARN, "importMode": mode,
            "dataSource": {"dataLocation": f"s3://{BUCKET}/interactions/run={RUN_ID}/interactions.csv"}})
        for status in statuses or ("CREATE PENDING", "CREATE IN_PROGRESS", "ACTIVE"):
            job: dict[str, Any] = {"datasetImportJobArn": IMPORT_JOB_ARN, "status": status, "importMode": mode,
                                   "lastUpdatedDateTime": finished}
            if failure_reason:
                job["failureReason"] = failure_reason
            self.personalize.add_response("describe_dataset_import_job", {"datasetImportJob": job},
                                          {"datasetImportJobArn": IMPORT_JOB_ARN})

    def training(self, *statuses: str, mode: str = "FULL", failure_reason: str | None = None) -> None:
        self.personalize.add_response("create_solution_version", {"solutionVersionArn": NEW_VERSION}, {
            "name": f"retrain-{RUN_ID}", "solutionArn": SOLUTION_ARN, "trainingMode": mode})
        for status in statuses or ("CREATE IN_PROGRESS", "ACTIVE"):
            version: dict[str, Any] = {"solutionVersionArn": NEW_VERSION, "status": status, "trainingMode": mode}
            if failure_reason:
                version["failureReason"] = failure_reason
            self.personalize.add_response("describe_solution_version", {"solutionVersion": version},
                                          {"solutionVersionArn": NEW_VERSION})

    def describe_campaign(self, *, deployed: str | None = OLD_VERSION, tps: int = 5,
                          update: dict[str, Any] | None = None) -> None:
        campaign: dict[str, Any] = {"campaignArn": CAMPAIGN_ARN, "status": "ACTIVE", "minProvisionedTPS": tps}
        if deployed:
            campaign["solutionVersionArn"] = deployed
        if update:
            campaign["latestCampaignUpdate"] = update
        self.personalize.add_response("describe_campaign", {"campaign": campaign}, {"campaignArn": CAMPAIGN_ARN})

    def campaign_update(self, *statuses: str, current_tps: int = 5, expected_tps: int = 5,
                        failure_reason: str | None = None) -> None:
        """UpdateCampaign (after reading the current TPS), then one DescribeCampaign per status."""
        self.describe_campaign(tps=current_tps)
        self.personalize.add_response("update_campaign", {"campaignArn": CAMPAIGN_ARN}, {
            "campaignArn": CAMPAIGN_ARN, "solutionVersionArn": NEW_VERSION, "minProvisionedTPS": expected_tps})
        for status in statuses or ("CREATE IN_PROGRESS", "ACTIVE"):
            update: dict[str, Any] = {"solutionVersionArn": NEW_VERSION, "status": status,
                                      "minProvisionedTPS": expected_tps}
            if failure_reason:
                update["failureReason"] = failure_reason
            # The campaign itself stays ACTIVE on the old version until the update is done.
            self.describe_campaign(tps=current_tps, update=update)

    def metrics(self, arn: str, **values: float) -> None:
        self.personalize.add_response("get_solution_metrics", {"solutionVersionArn": arn, "metrics": values},
                                      {"solutionVersionArn": arn})

    # -------------------------------------------------------------------------------------------- reading

    def events(self) -> list[dict[str, Any]]:
        """EventBridge events the run put (via the rule's SQS target)."""
        return [json.loads(m["Body"]) for m in self._drain(self.events_queue)]

    def messages(self) -> list[dict[str, Any]]:
        """SNS notifications (their SQS envelopes)."""
        return [json.loads(m["Body"]) for m in self._drain(self.topic_queue)]

    def _drain(self, url: str) -> list[dict[str, Any]]:
        return self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])

    def read(self, key: str) -> str:
        return self.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()

    def item(self, key: str) -> dict[str, Any] | None:
        return self.dynamodb.get_item(TableName=LOCK_TABLE, Key={LOCK_TABLE_KEY: {"S": key}}).get("Item")
