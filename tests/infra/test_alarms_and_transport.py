"""Issue 10, findings 5 and 12: every alarm notifies the stack's alarm topic (or the one given in config); queues and
topics refuse requests without TLS; the SES dead letters are under the stack's key; the Firehose role writes only
its prefixes."""

from __future__ import annotations

import pytest

from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.rules.backfill import BackfillCount

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TOPIC = "aws:sns/topic:Topic"
QUEUE = "aws:sqs/queue:Queue"
GIVEN_TOPIC = "arn:aws:sns:eu-west-1:123456789012:ops-alarms"
TLS_ONLY = {"Bool": {"aws:SecureTransport": "false"}}


def alarm_topic_arn(graph) -> str:
    return graph.arn_of(graph.one(TOPIC, "alarms-topic"))


def test_the_stack_has_an_encrypted_alarm_topic_that_only_cloudwatch_alarms_of_this_account_may_publish_to(dev_graph):
    topic = dev_graph.one(TOPIC, "alarms-topic")
    assert topic.inputs["kmsMasterKeyId"] == dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))
    assert dev_graph.by_urn(topic.parent).type == "engagement-loop:notifications:Notifications"
    policy = dev_graph.one("aws:sns/topicPolicy:TopicPolicy", "alarms-topic-policy")
    assert policy.inputs["arn"] == alarm_topic_arn(dev_graph)
    allow, deny = policy.input_json("policy")["Statement"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and allow["Action"] == "sns:Publish"
    assert allow["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Condition"] == TLS_ONLY
    assert dev_graph.outputs["alarmTopicArn"] == alarm_topic_arn(dev_graph)


def test_every_alarm_notifies_the_alarm_topic_when_it_fires_and_when_it_clears(dev_graph):
    alarms = dev_graph.of_type(ALARM)
    names = {a.name for a in alarms}
    assert {"events-normalise-errors", "events-ses-dlq-depth", "rules-aggregator-iterator-age",
            "rules-aggregator-failures-depth", "rules-action-dead-letters-depth", "rules-outbox-pending-age",
            "rules-backfill-queries-failing", "retraining-failed", "retraining-stale",
            "tracking-event-tracker-iterator-age"} <= names
    for alarm in alarms:
        assert alarm.inputs.get("alarmActions") == [alarm_topic_arn(dev_graph)], alarm.name
        assert alarm.inputs.get("okActions") == [alarm_topic_arn(dev_graph)], alarm.name


def test_a_backfill_query_failing_run_after_run_raises_an_alarm_on_the_metric_the_backfill_publishes(dev_graph):
    alarm = dev_graph.one(ALARM, "rules-backfill-queries-failing")
    backfill = dev_graph.one("aws:lambda/function:Function", "rules-backfill-handler-function")
    env = backfill.inputs["environment"]["variables"]
    # Powertools publishes the counts in POWERTOOLS_METRICS_NAMESPACE with dimension service=POWERTOOLS_SERVICE_NAME.
    assert alarm.inputs["namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"] == DEFAULT_METRICS_NAMESPACE
    assert alarm.inputs["metricName"] == BackfillCount.QUERIES_FAILED.value == "BackfillQueriesFailed"
    assert alarm.inputs["dimensions"] == {"service": env["POWERTOOLS_SERVICE_NAME"]}
    assert alarm.inputs["statistic"] == "Sum" and alarm.inputs["threshold"] == 1
    assert alarm.inputs["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    # Failures in two hours in a row (8 runs), not one transient failure the next run retries.
    assert alarm.inputs["period"] == 3600
    assert alarm.inputs["evaluationPeriods"] == alarm.inputs["datapointsToAlarm"] == 2


@pytest.fixture(scope="module")
def with_given_topic(monitor, dev_stack_config, run_stack):
    from tests.infra.conftest import Graph

    before = len(monitor.registered)
    outputs = run_stack({**dev_stack_config, "engagement-loop:alarmTopicArn": GIVEN_TOPIC})
    return Graph(list(monitor.registered[before:]), outputs)


def test_with_alarm_topic_arn_set_every_alarm_notifies_that_topic_and_none_is_created(with_given_topic):
    assert [t.name for t in with_given_topic.of_type(TOPIC)] == ["retraining-notifications"]
    alarms = with_given_topic.of_type(ALARM)
    assert len(alarms) >= 10
    for alarm in alarms:
        assert alarm.inputs["alarmActions"] == [GIVEN_TOPIC] == alarm.inputs["okActions"], alarm.name
    assert with_given_topic.outputs["alarmTopicArn"] == GIVEN_TOPIC


def test_every_queue_and_topic_refuses_requests_without_tls(dev_graph):
    queue_policies = {p.inputs["queueUrl"]: p.input_json("policy")
                      for p in dev_graph.of_type("aws:sqs/queuePolicy:QueuePolicy")}
    queues = dev_graph.of_type(QUEUE)
    assert {"events-ses-dlq", "rules-action-dead-letters", "rules-aggregator-failures"} <= {q.name for q in queues}
    for queue in queues:
        url = f"https://sqs.eu-west-1.amazonaws.com/123456789012/{queue.name}"
        assert url in queue_policies, f"{queue.name} has no queue policy"
        [deny] = [s for s in queue_policies[url]["Statement"] if s["Effect"] == "Deny"]
        assert deny == {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "sqs:*",
                        "Resource": [dev_graph.arn_of(queue)], "Condition": TLS_ONLY}
    topic_policies = {p.inputs["arn"]: p.input_json("policy")
                      for p in dev_graph.of_type("aws:sns/topicPolicy:TopicPolicy")}
    for topic in dev_graph.of_type(TOPIC):
        [deny] = [s for s in topic_policies[dev_graph.arn_of(topic)]["Statement"] if s["Effect"] == "Deny"]
        assert deny["Principal"] == "*" and deny["Action"] == "sns:Publish" and deny["Condition"] == TLS_ONLY
        assert deny["Resource"] == [dev_graph.arn_of(topic)]


def test_the_retraining_topic_takes_run_notifications_only(dev_graph):
    topic = dev_graph.one(TOPIC, "retraining-notifications")
    policy = dev_graph.one("aws:sns/topicPolicy:TopicPolicy", "retraining-notifications-policy")
    allows = [s for s in policy.input_json("policy")["Statement"] if s["Effect"] == "Allow"]
    assert [s["Principal"] for s in allows] == [{"Service": "events.amazonaws.com"}]
    assert policy.inputs["arn"] == dev_graph.arn_of(topic)


def test_the_ses_dead_letters_are_under_the_stack_key_which_lets_eventbridge_send_them(dev_graph):
    key = dev_graph.one("aws:kms/key:Key")
    queue = dev_graph.one(QUEUE, "events-ses-dlq")
    assert queue.inputs["kmsMasterKeyId"] == dev_graph.arn_of(key)
    assert "sqsManagedSseEnabled" not in queue.inputs
    [eventbridge] = [s for s in key.input_json("policy")["Statement"]
                     if s.get("Principal") == {"Service": "events.amazonaws.com"}]
    assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(eventbridge["Action"])
    policy = dev_graph.one("aws:sqs/queuePolicy:QueuePolicy", "events-ses-dlq-policy").input_json("policy")
    [allow] = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"} and allow["Action"] == "sqs:SendMessage"
    dev_graph.one(ALARM, "events-ses-dlq-depth")


def test_an_ses_source_alone_gets_eventbridge_into_the_key_policy(monitor):
    import pulumi

    from components.config import LakeConfig, SourcesConfig
    from components.event_stream_pipeline import EventStreamPipeline, EventStreamPipelineArgs
    from functions.events.canonical import IdentityMode
    from functions.lake_names import derived_lake_names

    before = len(monitor.registered)

    @pulumi.runtime.test
    def build():
        EventStreamPipeline("sesonly", EventStreamPipelineArgs(
            region="eu-west-1", identity_mode=IdentityMode.USER, log_retention_days=7,
            sources=SourcesConfig(pinpoint_project_id=None, ses_configuration_set="cs", app_producer_policy=False),
            lake=LakeConfig(1, 1, 1, names=derived_lake_names("engagement-loop", "sesonly")),
            alarm_topic_arn=GIVEN_TOPIC))

    build()
    [key] = [r for r in monitor.registered[before:] if r.type == "aws:kms/key:Key"]
    principals = [s["Principal"] for s in key.input_json("policy")["Statement"]]
    assert {"Service": "events.amazonaws.com"} in principals
