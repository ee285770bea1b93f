"""The whole program with the sample stack: outputs, the shared data key, and the retraining and tracking
components wired to the pipeline."""

from __future__ import annotations

import json

import pytest

from components.config import LakeConfig, SourcesConfig
from components.event_stream_pipeline import EventStreamPipelineArgs
from functions.events.canonical import IdentityMode
from functions.lake_names import derived_lake_names
from functions.retraining.workflow import build_definition, WorkflowSpec
from functions.rules.sheet import parse_rules_sheet
from tests.infra.conftest import ROOT, Graph

ACCOUNT = "123456789012"
SOLUTION = "arn:aws:personalize:eu-west-1:123456789012:solution/engagement-solution"
CAMPAIGN = "arn:aws:personalize:eu-west-1:123456789012:campaign/engagement-campaign"
DATASET = "arn:aws:personalize:eu-west-1:123456789012:dataset/engagement/INTERACTIONS"


def statements_by_action(document):
    return {action: statement for statement in document["Statement"] for action in statement["Action"]}


def test_stack_outputs(dev_graph):
    arn = lambda type_token, name=None: dev_graph.arn_of(dev_graph.one(type_token, name))  # noqa: E731
    assert dev_graph.outputs == {
        "streamArn": arn("aws:kinesis/stream:Stream", "events-stream"),
        "streamName": "events-stream",
        "lakeBucket": "events-lake",
        "glueDatabase": "engagement_loop_dev",
        "eventsTable": "events",
        "athenaWorkgroup": "engagement-loop-dev",
        "dataKeyArn": arn("aws:kms/key:Key"),
        "producerPolicyArn": arn("aws:iam/policy:Policy"),
        "appStreamArn": arn("aws:kinesis/stream:Stream", "events-app-stream"),
        "appStreamName": "events-app-stream",
        "retrainingStateMachineArn": arn("aws:sfn/stateMachine:StateMachine"),
        "retrainingTopicArn": arn("aws:sns/topic:Topic", "retraining-notifications"),
        "alarmTopicArn": arn("aws:sns/topic:Topic", "alarms-topic"),
        "exposuresFunctionArn": arn("aws:lambda/function:Function", "tracking-exposures-function"),
        # The version of the sample sheet's rules, as the program parses them (a hash of their content).
        "rulesVersion": parse_rules_sheet((ROOT / "rules" / "sample.csv").read_text(encoding="utf-8"),
                                          source_name="rules/sample.csv").version,
        "countersTable": "rules-counters",
        "outboxTable": "rules-outbox",
        "actionDeadLetterQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/rules-action-dead-letters",
        "sesDeadLetterQueueUrl": "https://sqs.eu-west-1.amazonaws.com/123456789012/events-ses-dlq",
    }


def test_data_key_lets_only_named_services_use_it_each_with_its_documented_condition(dev_graph):
    policy = dev_graph.one("aws:kms/key:Key").input_json("policy")
    admin, *services = policy["Statement"]
    assert admin["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    by_service = {s["Principal"]["Service"]: s for s in services}
    assert set(by_service) == {"cloudwatch.amazonaws.com", "events.amazonaws.com", "personalize.amazonaws.com"}
    personalize = by_service["personalize.amazonaws.com"]
    assert personalize["Action"] == ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    assert personalize["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    # CloudWatch alarms publish to the SSE-KMS alarm topic (SNS docs, encryption at rest).
    alarms = by_service["cloudwatch.amazonaws.com"]
    assert alarms["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert alarms["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    # EventBridge's delivery to an SSE-KMS topic carries no aws:Source* keys: a condition on them drops every event.
    eventbridge = by_service["events.amazonaws.com"]
    assert eventbridge["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert "Condition" not in eventbridge
    for topic in dev_graph.of_type("aws:sns/topic:Topic"):
        assert topic.inputs["kmsMasterKeyId"] == dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))


def test_data_key_rejects_a_service_without_a_documented_grant():
    with pytest.raises(ValueError, match="key_service_principals"):
        EventStreamPipelineArgs(
            region="eu-west-1", identity_mode=IdentityMode.USER,
            sources=SourcesConfig(pinpoint_project_id=None, ses_configuration_set=None, app_producer_policy=False),
            lake=LakeConfig(athena_scan_limit_gb=10, query_results_retention_days=7, errors_retention_days=90,
                            names=derived_lake_names("engagement-loop", "dev")),
            log_retention_days=30, alarm_topic_arn="arn:aws:sns:eu-west-1:123456789012:alarms",
            key_service_principals=("sqs.amazonaws.com",))


def test_state_machine_runs_the_generated_definition_on_the_steps_function(dev_graph):
    machine = dev_graph.one("aws:sfn/stateMachine:StateMachine")
    steps = dev_graph.one("aws:lambda/function:Function", "retraining-steps-function")
    expected = build_definition(WorkflowSpec(function_arn=dev_graph.arn_of(steps)))
    assert json.loads(machine.inputs["definition"]) == expected
    role_policy = dev_graph.one("aws:iam/rolePolicy:RolePolicy", "retraining-workflow-policy").input_json("policy")
    assert role_policy["Statement"] == [{"Effect": "Allow", "Action": ["lambda:InvokeFunction"],
                                         "Resource": [dev_graph.arn_of(steps), dev_graph.arn_of(steps) + ":*"]}]


def test_schedule_starts_the_state_machine_from_config(dev_graph):
    rule = dev_graph.one("aws:cloudwatch/eventRule:EventRule", "retraining-schedule")
    assert rule.inputs["scheduleExpression"] == "cron(0 2 * * ? *)"
    target = dev_graph.one("aws:cloudwatch/eventTarget:EventTarget", "retraining-schedule-target")
    machine_arn = dev_graph.arn_of(dev_graph.one("aws:sfn/stateMachine:StateMachine"))
    assert target.inputs["arn"] == machine_arn
    policy = dev_graph.one("aws:iam/rolePolicy:RolePolicy", "retraining-schedule-policy").input_json("policy")
    assert policy["Statement"][0]["Resource"] == [machine_arn]


def test_steps_function_gets_the_config_and_personalize_iam_scoped_to_configured_arns(dev_graph):
    steps = dev_graph.one("aws:lambda/function:Function", "retraining-steps-function")
    env = steps.inputs["environment"]["variables"]
    assert env["PERSONALIZE_SOLUTION_ARN"] == SOLUTION and env["PERSONALIZE_CAMPAIGN_ARN"] == CAMPAIGN
    assert env["PERSONALIZE_DATASET_ARN"] == DATASET
    assert json.loads(env["SCORING"]) == {"_campaign.opened_notification": 100.0, "_email.open": 50.0,
                                          "_email.click": 100.0, "_email.unsubscribe": -200.0}
    assert env["TRAINING_MODE"] == "UPDATE" and env["IMPORT_MODE"] == "FULL" and env["HISTORY_DAYS"] == "-1"
    assert env["GATE_METRIC"] == "normalized_discounted_cumulative_gain_at_10" and env["GATE_MARGIN"] == "0.05"
    assert env["MIN_PROVISIONED_TPS"] == ""
    # realTimeEvents is on in dev: the interactions leave out what the event tracker streamed.
    assert env["EXCLUDE_STREAMED"] == "true"
    assert steps.inputs["timeout"] == 900

    by_action = statements_by_action(
        dev_graph.one("aws:iam/rolePolicy:RolePolicy", "retraining-steps-policy").input_json("policy"))
    assert by_action["personalize:CreateSolutionVersion"]["Resource"] == [SOLUTION]
    # One resource type each in the Service Authorization Reference: campaign; datasetImportJob.
    assert by_action["personalize:UpdateCampaign"]["Resource"] == [CAMPAIGN]
    assert by_action["personalize:CreateDatasetImportJob"]["Resource"] == [
        "arn:aws:personalize:eu-west-1:123456789012:dataset-import-job/retrain-*"]
    assert by_action["iam:PassRole"]["Resource"] == [
        dev_graph.arn_of(dev_graph.one("aws:iam/role:Role", "retraining-import-role"))]
    assert by_action["iam:PassRole"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "personalize.amazonaws.com"}}
    assert by_action["athena:StartQueryExecution"]["Resource"] == [
        "arn:aws:athena:eu-west-1:123456789012:workgroup/engagement-loop-dev"]
    # UPDATE training in dev: no action of AUTO training, and none of solution events config (off in dev).
    personalize_resources = [r for a, s in by_action.items() if a.startswith("personalize:") for r in s["Resource"]]
    assert all(r.startswith("arn:aws:personalize:eu-west-1:123456789012:") for r in personalize_resources)
    assert "personalize:ListSolutionVersions" not in by_action and "personalize:UpdateSolution" not in by_action
    assert by_action["personalize:DescribeDatasetImportJob"]["Resource"] == [
        "arn:aws:personalize:eu-west-1:123456789012:dataset-import-job/retrain-*"]
    assert by_action["personalize:DescribeSolutionVersion"]["Resource"] == [SOLUTION + "/*"]
    assert by_action["personalize:GetSolutionMetrics"]["Resource"] == [SOLUTION + "/*"]  # the gate


def test_auto_training_deploys_what_auto_training_made_and_never_trains(monitor, dev_stack_config, run_stack):
    before = len(monitor.registered)
    run_stack({**dev_stack_config, "engagement-loop:trainingMode": "AUTO",
               "engagement-loop:solutionEventsConfig": "true"})
    graph = Graph(monitor.registered[before:], {})
    steps = graph.one("aws:lambda/function:Function", "retraining-steps-function")
    spec = WorkflowSpec(function_arn=graph.arn_of(steps), auto_training=True)
    assert json.loads(graph.one("aws:sfn/stateMachine:StateMachine").inputs["definition"]) == build_definition(spec)
    env = steps.inputs["environment"]["variables"]
    assert env["TRAINING_MODE"] == "AUTO" and env["LOCK_TTL_SECONDS"] == str(spec.max_run_seconds)
    by_action = statements_by_action(
        graph.one("aws:iam/rolePolicy:RolePolicy", "retraining-steps-policy").input_json("policy"))
    # ListSolutionVersions supports no resource type (Service Authorization Reference): only "*" grants it,
    # and it is the only Personalize action of the role on "*".
    assert by_action["personalize:ListSolutionVersions"]["Resource"] == ["*"]
    assert [a for a, s in by_action.items() if a.startswith("personalize:") and "*" in s["Resource"]] == [
        "personalize:ListSolutionVersions"]
    assert by_action["personalize:UpdateSolution"]["Resource"] == [SOLUTION]
    assert by_action["personalize:DescribeSolution"]["Resource"] == [SOLUTION]
    assert "personalize:CreateSolutionVersion" not in by_action
    assert "personalize:DescribeSolutionVersion" not in by_action


def test_import_role_reads_only_interactions(dev_graph):
    trust = dev_graph.one("aws:iam/role:Role", "retraining-import-role").input_json("assumeRolePolicy")
    assert trust["Statement"][0]["Principal"] == {"Service": "personalize.amazonaws.com"}
    by_action = statements_by_action(
        dev_graph.one("aws:iam/rolePolicy:RolePolicy", "retraining-import-policy").input_json("policy"))
    assert by_action["s3:GetObject"]["Resource"] == ["arn:aws:s3:::events-lake/interactions/*"]
    assert set(by_action) == {"s3:GetObject", "s3:ListBucket", "kms:Decrypt"}


def test_run_lock_table_and_topic_are_encrypted_with_the_data_key(dev_graph):
    key_arn = dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))
    table = dev_graph.one("aws:dynamodb/table:Table", "retraining-runs")
    assert table.inputs["serverSideEncryption"] == {"enabled": True, "kmsKeyArn": key_arn}
    assert table.inputs["pointInTimeRecovery"] == {"enabled": True}
    assert table.inputs["ttl"] == {"attributeName": "expires_at", "enabled": True}
    assert dev_graph.one("aws:sns/topic:Topic", "retraining-notifications").inputs["kmsMasterKeyId"] == key_arn


def test_failed_stale_and_badly_ended_runs_are_reported(dev_graph):
    topic_arn = dev_graph.arn_of(dev_graph.one("aws:sns/topic:Topic", "retraining-notifications"))
    alarm_topic_arn = dev_graph.arn_of(dev_graph.one("aws:sns/topic:Topic", "alarms-topic"))
    failed = dev_graph.one("aws:cloudwatch/metricAlarm:MetricAlarm", "retraining-failed")
    stale = dev_graph.one("aws:cloudwatch/metricAlarm:MetricAlarm", "retraining-stale")
    # Alarms go to the stack's alarm topic; the loop's own topic carries run notifications.
    assert failed.inputs["metricName"] == "ExecutionsFailed" and failed.inputs["alarmActions"] == [alarm_topic_arn]
    assert stale.inputs["alarmActions"] == [alarm_topic_arn]
    assert stale.inputs["metricName"] == "ExecutionsSucceeded"
    assert stale.inputs["comparisonOperator"] == "LessThanThreshold"
    assert stale.inputs["treatMissingData"] == "breaching"
    assert stale.inputs["period"] * stale.inputs["evaluationPeriods"] == 2 * 86400
    rule = dev_graph.one("aws:cloudwatch/eventRule:EventRule", "retraining-run-ended-badly")
    assert rule.input_json("eventPattern")["detail"]["status"] == ["FAILED", "TIMED_OUT", "ABORTED"]
    target = dev_graph.one("aws:cloudwatch/eventTarget:EventTarget", "retraining-run-ended-badly-target")
    assert target.inputs["arn"] == topic_arn


def test_exposures_function_writes_to_the_stream_and_pinpoint_may_invoke_it(dev_graph):
    stream_arn = dev_graph.arn_of(dev_graph.one("aws:kinesis/stream:Stream", "events-stream"))
    exposures = dev_graph.one("aws:lambda/function:Function", "tracking-exposures-function")
    assert exposures.inputs["environment"]["variables"]["STREAM_ARN"] == stream_arn
    assert exposures.inputs["timeout"] <= 15
    by_action = statements_by_action(
        dev_graph.one("aws:iam/rolePolicy:RolePolicy", "tracking-exposures-policy").input_json("policy"))
    assert by_action["kinesis:PutRecords"]["Resource"] == [stream_arn]
    permission = dev_graph.one("aws:lambda/permission:Permission", "tracking-exposures-pinpoint")
    assert permission.inputs["principal"] == "pinpoint.eu-west-1.amazonaws.com"
    assert permission.inputs["sourceArn"] == "arn:aws:mobiletargeting:eu-west-1:123456789012:recommenders/*"


def test_real_time_path_consumes_the_stream_with_partial_batches_and_a_failure_queue(dev_graph):
    mapping = dev_graph.one("aws:lambda/eventSourceMapping:EventSourceMapping", "tracking-event-tracker-mapping")
    function = dev_graph.one("aws:lambda/function:Function", "tracking-event-tracker-handler-function")
    queue = dev_graph.one("aws:sqs/queue:Queue", "tracking-event-tracker-failures")
    assert mapping.inputs["eventSourceArn"] == dev_graph.arn_of(dev_graph.one("aws:kinesis/stream:Stream", "events-stream"))
    assert mapping.inputs["functionName"] == dev_graph.arn_of(function)
    assert mapping.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping.inputs["bisectBatchOnFunctionError"] is True
    assert 0 < mapping.inputs["maximumRetryAttempts"] <= 10
    assert mapping.inputs["destinationConfig"]["onFailure"]["destinationArn"] == dev_graph.arn_of(queue)
    env = function.inputs["environment"]["variables"]
    assert env["TRACKING_ID"] == "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
    assert env["FAILURES_QUEUE_URL"].endswith("/tracking-event-tracker-failures")
    by_action = statements_by_action(dev_graph.one(
        "aws:iam/rolePolicy:RolePolicy", "tracking-event-tracker-handler-policy").input_json("policy"))
    # PutEvents supports no resource type (Service Authorization Reference): only "*" grants it.
    assert by_action["personalize:PutEvents"]["Resource"] == ["*"]
    app_queue = dev_graph.one("aws:sqs/queue:Queue", "tracking-event-tracker-app-failures")
    assert by_action["sqs:SendMessage"]["Resource"] == [dev_graph.arn_of(queue), dev_graph.arn_of(app_queue)]
    app_mapping = dev_graph.one("aws:lambda/eventSourceMapping:EventSourceMapping",
                                "tracking-event-tracker-app-mapping")
    assert by_action["kinesis:GetRecords"]["Resource"] == [mapping.inputs["eventSourceArn"],
                                                           app_mapping.inputs["eventSourceArn"]]
    for alarm in ("tracking-event-tracker-iterator-age", "tracking-event-tracker-failures-depth"):
        dev_graph.one("aws:cloudwatch/metricAlarm:MetricAlarm", alarm)
