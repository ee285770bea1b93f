"""EventStreamPipeline under mocks with the sample stack (Pulumi.dev.yaml): present, wired, locked down."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pulumi
import pytest

from components.config import LakeConfig, SourcesConfig
from components.event_stream_pipeline import EventStreamPipeline, EventStreamPipelineArgs
from components.retraining_loop import LOG_DELIVERY_ACTIONS
from functions.events.canonical import CanonicalEvent, IdentityMode
from functions.lake_names import derived_lake_names

STREAM = "aws:kinesis/stream:Stream"
FIREHOSE = "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream"
FUNCTION = "aws:lambda/function:Function"
NORMALISER = "events-normalise-function"
TABLE = "aws:glue/catalogTable:CatalogTable"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name, mode", [("events-stream", {"streamMode": "ON_DEMAND"}),
                                        ("events-app-stream", {"streamMode": "PROVISIONED"})])
def test_streams_are_kms_encrypted_and_only_the_trusted_one_is_on_demand(dev_graph, name, mode):
    stream = dev_graph.one(STREAM, name)
    key = dev_graph.one("aws:kms/key:Key")
    assert stream.inputs["streamModeDetails"] == mode
    assert stream.inputs["encryptionType"] == "KMS"
    assert stream.inputs["kmsKeyId"] == dev_graph.arn_of(key)
    assert stream.inputs["retentionPeriod"] == 24
    assert key.inputs["enableKeyRotation"] is True


def test_firehose_reads_the_stream_through_the_normaliser_into_partitioned_parquet(dev_graph):
    firehose = dev_graph.one(FIREHOSE, "events-firehose")
    normaliser = dev_graph.one(FUNCTION, NORMALISER)
    s3 = firehose.inputs["extendedS3Configuration"]
    assert firehose.inputs["kinesisSourceConfiguration"]["kinesisStreamArn"] == dev_graph.arn_of(dev_graph.one(STREAM, "events-stream"))
    assert normaliser.inputs["handler"] == "functions.events.firehose_transform.handler"
    assert normaliser.inputs["environment"]["variables"]["IDENTITY_MODE"] == "user_or_endpoint"
    [processor] = s3["processingConfiguration"]["processors"]
    parameters = {p["parameterName"]: p["parameterValue"] for p in processor["parameters"]}
    assert processor["type"] == "Lambda"
    assert parameters["LambdaArn"] == dev_graph.arn_of(normaliser) + ":$LATEST"
    assert s3["prefix"] == "events/dt=!{partitionKeyFromLambda:dt}/"
    assert s3["errorOutputPrefix"].startswith("errors/!{firehose:error-output-type}/")
    assert s3["dynamicPartitioningConfiguration"]["enabled"] is True
    conversion = s3["dataFormatConversionConfiguration"]
    assert conversion["enabled"] is True
    assert "parquetSerDe" in conversion["outputFormatConfiguration"]["serializer"]
    assert conversion["schemaConfiguration"]["databaseName"] == "engagement_loop_dev"
    assert conversion["schemaConfiguration"]["tableName"] == "events"
    assert s3["bucketArn"] == dev_graph.arn_of(dev_graph.one("aws:s3/bucket:Bucket"))


def test_glue_columns_are_the_canonical_event_and_dt_is_projected(dev_graph):
    table = dev_graph.one(TABLE)
    columns = [c["name"] for c in table.inputs["storageDescriptor"]["columns"]]
    assert columns == [f.name for f in dataclasses.fields(CanonicalEvent)]
    types = {c["name"]: c["type"] for c in table.inputs["storageDescriptor"]["columns"]}
    assert types["event_time_ms"] == "bigint" and types["attributes"] == "map<string,string>"
    assert types["metrics"] == "map<string,double>"
    assert table.inputs["partitionKeys"] == [{"name": "dt", "type": "string"}]
    parameters = table.inputs["parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.dt.type"] == "date"
    assert parameters["projection.dt.format"] == "yyyy-MM-dd"
    assert parameters["projection.dt.range"].endswith(",NOW")
    assert parameters["storage.location.template"] == "s3://events-lake/events/dt=${dt}/"
    assert not dev_graph.of_type("aws:glue/crawler:Crawler")


def test_athena_workgroup_has_encrypted_results_and_a_scan_cutoff(dev_graph):
    configuration = dev_graph.one("aws:athena/workgroup:Workgroup").inputs["configuration"]
    assert configuration["enforceWorkgroupConfiguration"] is True
    assert configuration["bytesScannedCutoffPerQuery"] == 10 * 1024 ** 3
    results = configuration["resultConfiguration"]
    assert results["outputLocation"] == "s3://events-lake/athena-results/"
    assert results["encryptionConfiguration"]["encryptionOption"] == "SSE_KMS"


def test_every_store_is_encrypted(dev_graph):
    key_arn = dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))
    [rule] = dev_graph.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
                           ).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": key_arn}
    assert dev_graph.one(FIREHOSE, "events-firehose").inputs["extendedS3Configuration"]["kmsKeyArn"] == key_arn
    for queue in dev_graph.of_type("aws:sqs/queue:Queue"):
        # Whole SES events (addresses, headers), and the consumers' rejects (raw records, SES envelopes
        # included): under the stack's key.
        if queue.name == "events-ses-dlq" or queue.name.endswith("-failures"):
            assert queue.inputs["kmsMasterKeyId"] == key_arn and "sqsManagedSseEnabled" not in queue.inputs
        else:
            assert queue.inputs["sqsManagedSseEnabled"] is True, queue.name


def test_lake_bucket_is_private_tls_only_and_expires_results_and_errors(dev_graph):
    block = dev_graph.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    deny, *personalize = dev_graph.one("aws:s3/bucketPolicy:BucketPolicy").input_json("policy")["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {s["Action"] for s in personalize} == {"s3:ListBucket", "s3:GetObject"}
    for statement in personalize:
        assert statement["Principal"] == {"Service": "personalize.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "123456789012"}
    [read] = [s for s in personalize if s["Action"] == "s3:GetObject"]
    assert read["Resource"] == "arn:aws:s3:::events-lake/interactions/*"
    rules = {r["filter"]["prefix"]: r for r in
             dev_graph.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]}
    assert rules["athena-results/"]["expiration"]["days"] == 7
    assert rules["errors/"]["expiration"]["days"] == 90
    assert rules["interactions/run="]["expiration"]["days"] == 30
    assert "events/" not in rules and "interactions/" not in rules  # the lake and values.csv are kept


# Actions for which the Service Authorization Reference lists no resource type: "*" is the only grant.
ACTIONS_WITHOUT_RESOURCE_TYPES = {"personalize:PutEvents", "personalize:ListSolutionVersions",
                                  "dynamodb:ListStreams"}
# The state machine's log delivery set-up, which the Step Functions guide grants on "*" (cw-logs.html).
ACTIONS_WITHOUT_RESOURCE_TYPES |= set(LOG_DELIVERY_ACTIONS)


def test_no_wildcard_actions_and_wildcard_resources_only_for_actions_without_resource_types(dev_graph):
    documents = dev_graph.policy_documents()
    assert len(documents) >= 5
    for resource, document in documents:
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not any(a == "*" or a.endswith(":*") for a in actions), (resource.name, actions)
            if "*" in statement["Resource"]:
                assert set(actions) <= ACTIONS_WITHOUT_RESOURCE_TYPES, (resource.name, statement)
                assert statement["Resource"] == ["*"], (resource.name, statement)


def test_firehose_role_is_scoped_to_its_stream_bucket_function_and_table(dev_graph):
    document = dev_graph.one("aws:iam/rolePolicy:RolePolicy", "events-firehose-policy").input_json("policy")
    by_action = {a: s["Resource"] for s in document["Statement"] for a in s["Action"]}
    assert by_action["kinesis:GetRecords"] == [dev_graph.arn_of(dev_graph.one(STREAM, "events-stream"))]
    # The role grants the very ARN Firehose invokes (the processor's LambdaArn, qualified with $LATEST).
    processor = dev_graph.one("aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream", "events-firehose").inputs[
        "extendedS3Configuration"]["processingConfiguration"]["processors"][0]["parameters"]
    [lambda_arn] = [p["parameterValue"] for p in processor if p["parameterName"] == "LambdaArn"]
    assert lambda_arn == dev_graph.arn_of(dev_graph.one(FUNCTION, NORMALISER)) + ":$LATEST"
    assert by_action["lambda:InvokeFunction"] == [lambda_arn]
    assert by_action["lambda:GetFunctionConfiguration"] == [lambda_arn]
    # Objects only under the prefixes the delivery stream writes; the bucket's own actions on the bucket.
    for action in ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"):
        assert by_action[action] == ["arn:aws:s3:::events-lake/events/*", "arn:aws:s3:::events-lake/errors/*"]
    for action in ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"):
        assert by_action[action] == ["arn:aws:s3:::events-lake"]
    assert "arn:aws:glue:eu-west-1:123456789012:table/engagement_loop_dev/events" in by_action["glue:GetTable"]
    trust = dev_graph.one("aws:iam/role:Role", "events-firehose-role").input_json("assumeRolePolicy")
    assert trust["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"


def test_lambda_helper_gives_logs_with_retention_an_alarm_and_only_its_own_log_group(dev_graph):
    function = dev_graph.one(FUNCTION, NORMALISER)
    log_group = dev_graph.one("aws:cloudwatch/logGroup:LogGroup", "events-normalise-logs")
    assert log_group.inputs["retentionInDays"] == 30
    assert function.inputs["loggingConfig"]["logGroup"] == "events-normalise-logs"
    assert any("AWSLambdaPowertoolsPythonV3" in layer for layer in function.inputs["layers"])
    assert function.inputs["code"].assets, "the functions archive is empty"
    assert "functions/events/canonical.py" in function.inputs["code"].assets
    assert not any("__pycache__" in path for path in function.inputs["code"].assets)
    policy = dev_graph.one("aws:iam/rolePolicy:RolePolicy", "events-normalise-policy").input_json("policy")
    assert policy["Statement"] == [{"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                    "Resource": [dev_graph.arn_of(log_group) + ":*"]}]
    alarm = dev_graph.one("aws:cloudwatch/metricAlarm:MetricAlarm", "events-normalise-errors")
    assert alarm.inputs["metricName"] == "Errors" and alarm.inputs["dimensions"] == {
        "FunctionName": "events-normalise-function"}
    for group in dev_graph.of_type("aws:cloudwatch/logGroup:LogGroup"):
        assert group.inputs["retentionInDays"] == 30, group.name


def test_pinpoint_event_stream_writes_into_the_stream_with_a_scoped_role(dev_graph):
    stream_arn = dev_graph.arn_of(dev_graph.one(STREAM, "events-stream"))
    event_stream = dev_graph.one("aws:pinpoint/eventStream:EventStream")
    assert event_stream.inputs["applicationId"] == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert event_stream.inputs["destinationStreamArn"] == stream_arn
    trust = dev_graph.one("aws:iam/role:Role", "events-pinpoint-role").input_json("assumeRolePolicy")
    assert trust["Statement"][0]["Principal"] == {"Service": "pinpoint.amazonaws.com"}
    assert trust["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"] == (
        "arn:aws:mobiletargeting:eu-west-1:123456789012:apps/a1b2c3d4e5f60718293a4b5c6d7e8f90")
    # Exactly the role policy Pinpoint documents (permissions-streams), plus the key of the SSE-KMS stream.
    policy = dev_graph.one("aws:iam/rolePolicy:RolePolicy", "events-pinpoint-policy").input_json("policy")
    assert [(s["Action"], s["Resource"]) for s in policy["Statement"]] == [
        (["kinesis:PutRecords", "kinesis:DescribeStream"], [stream_arn]),
        (["kms:GenerateDataKey"], [dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))])]


def test_ses_events_reach_the_stream_through_the_default_bus_with_a_dead_letter_queue(dev_graph):
    destination = dev_graph.one("aws:sesv2/configurationSetEventDestination:ConfigurationSetEventDestination")
    assert destination.inputs["configurationSetName"] == "engagement-events"
    bridge = destination.inputs["eventDestination"]["eventBridgeDestination"]
    assert bridge["eventBusArn"] == "arn:aws:events:eu-west-1:123456789012:event-bus/default"
    assert {"OPEN", "CLICK", "SEND", "BOUNCE"} <= set(destination.inputs["eventDestination"]["matchingEventTypes"])

# rule/target name → (extra conditions on detail.mail.tags, partition key path)
SES_ROUTES = {
    "events-ses": ({"user_id": [{"exists": True}]}, "$.detail.mail.tags.user_id[0]"),
    "events-ses-endpoint": ({"user_id": [{"exists": False}], "endpoint_id": [{"exists": True}]},
                            "$.detail.mail.tags.endpoint_id[0]"),
    "events-ses-message": ({"user_id": [{"exists": False}], "endpoint_id": [{"exists": False}]},
                           "$.detail.mail.messageId"),
}


@pytest.mark.parametrize("name", sorted(SES_ROUTES))
def test_each_ses_rule_sends_only_events_that_have_its_partition_key(dev_graph, name):
    tag_conditions, key_path = SES_ROUTES[name]
    rule = dev_graph.one("aws:cloudwatch/eventRule:EventRule", f"{name}-rule")
    assert rule.input_json("eventPattern") == {
        "source": ["aws.ses"],
        "detail": {"mail": {"tags": {"ses:configuration-set": ["engagement-events"], **tag_conditions}}}}
    target = dev_graph.one("aws:cloudwatch/eventTarget:EventTarget", f"{name}-target")
    assert target.inputs["rule"] == f"{name}-rule"  # the mocks name a resource by its logical name
    assert target.inputs["arn"] == dev_graph.arn_of(dev_graph.one(STREAM, "events-stream"))
    assert target.inputs["kinesisTarget"] == {"partitionKeyPath": key_path}
    assert target.inputs["deadLetterConfig"]["arn"] == dev_graph.arn_of(
        dev_graph.one("aws:sqs/queue:Queue", "events-ses-dlq"))


@pytest.mark.parametrize(
    "tags, route",
    [
        ({"user_id": ["user-42"], "endpoint_id": ["ep-42"]}, "events-ses"),
        ({"user_id": ["user-42"]}, "events-ses"),
        ({"endpoint_id": ["ep-42"]}, "events-ses-endpoint"),
        ({}, "events-ses-message"),
    ],
    ids=["user-and-endpoint", "user", "endpoint-only", "untagged"],
)
def test_every_ses_event_matches_exactly_the_rule_whose_key_it_has(dev_graph, tags, route):
    from moto.events.models import EventPattern  # moto's implementation of EventBridge's pattern matching

    event = json.loads((FIXTURES / "ses" / "open.json").read_text())
    kept = {k: v for k, v in event["detail"]["mail"]["tags"].items() if k not in ("user_id", "endpoint_id")}
    event["detail"]["mail"]["tags"] = {**kept, "ses:configuration-set": ["engagement-events"], **tags}
    matched = [name for name in SES_ROUTES
               if EventPattern.load(dev_graph.one("aws:cloudwatch/eventRule:EventRule", f"{name}-rule")
                                    .inputs["eventPattern"]).matches_event(event)]
    assert matched == [route]


def test_only_the_ses_rules_may_use_the_ses_role_and_dead_letter_queue(dev_graph):
    arns = sorted(dev_graph.arn_of(dev_graph.one("aws:cloudwatch/eventRule:EventRule", f"{n}-rule"))
                  for n in SES_ROUTES)
    trust = dev_graph.one("aws:iam/role:Role", "events-ses-role").input_json("assumeRolePolicy")
    assert sorted(trust["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"]) == arns
    queue_policy = dev_graph.one("aws:sqs/queuePolicy:QueuePolicy", "events-ses-dlq-policy").input_json("policy")
    assert sorted(queue_policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"]) == arns


def test_producer_policy_allows_writing_to_the_app_stream_only(dev_graph):
    document = dev_graph.one("aws:iam/policy:Policy").input_json("policy")
    app_stream = dev_graph.arn_of(dev_graph.one(STREAM, "events-app-stream"))
    key = dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))
    assert [(s["Action"], s["Resource"], s.get("Condition")) for s in document["Statement"]] == [
        (["kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"], [app_stream], None),
        # The data key only through Kinesis, and only for the app stream (its ARN is the encryption context).
        (["kms:GenerateDataKey"], [key], {"StringEquals": {"kms:ViaService": "kinesis.eu-west-1.amazonaws.com",
                                                           "kms:EncryptionContext:aws:kinesis:arn": app_stream}}),
    ]
    trusted = dev_graph.arn_of(dev_graph.one(STREAM, "events-stream"))
    assert trusted not in json.dumps(document)


def test_every_resource_hangs_under_a_component(dev_graph):
    components = {r.urn for r in dev_graph.resources if r.type.startswith("engagement-loop:")}
    for resource in dev_graph.resources:
        if not resource.type.startswith("engagement-loop:"):
            assert resource.parent in components, resource.name
            assert resource.name.startswith(dev_graph.by_urn(resource.parent).name + "-"), resource.name


def test_optional_sources_are_absent_when_not_configured(monitor):
    before = len(monitor.registered)

    @pulumi.runtime.test
    def build():
        EventStreamPipeline("bare", EventStreamPipelineArgs(
            region="eu-west-1", identity_mode=IdentityMode.USER, log_retention_days=7,
            sources=SourcesConfig(pinpoint_project_id=None, ses_configuration_set=None, app_producer_policy=False),
            lake=LakeConfig(athena_scan_limit_gb=1, query_results_retention_days=1, errors_retention_days=1,
                            names=derived_lake_names("engagement-loop", "bare")),
            alarm_topic_arn="arn:aws:sns:eu-west-1:123456789012:alarms"))

    build()
    types = {r.type for r in monitor.registered[before:]}
    assert STREAM in types and FIREHOSE in types
    assert not types & {"aws:pinpoint/eventStream:EventStream", "aws:cloudwatch/eventRule:EventRule",
                        "aws:iam/policy:Policy",
                        "aws:sesv2/configurationSetEventDestination:ConfigurationSetEventDestination"}


def test_args_reject_an_empty_region():
    with pytest.raises(ValueError, match="EventStreamPipelineArgs.region"):
        EventStreamPipelineArgs(region="", identity_mode=IdentityMode.USER, log_retention_days=7,
                                sources=SourcesConfig(None, None, False),
                                lake=LakeConfig(1, 1, 1, names=derived_lake_names("engagement-loop", "dev")),
                                alarm_topic_arn="arn:aws:sns:eu-west-1:123456789012:alarms")


def test_args_reject_a_lake_without_names():
    with pytest.raises(ValueError, match="EventStreamPipelineArgs.lake.names"):
        EventStreamPipelineArgs(region="eu-west-1", identity_mode=IdentityMode.USER, log_retention_days=7,
                                sources=SourcesConfig(None, None, False), lake=LakeConfig(1, 1, 1),
                                alarm_topic_arn="arn:aws:sns:eu-west-1:123456789012:alarms")
