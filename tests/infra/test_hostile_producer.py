"""Issue 10 review: what a holder of the app producer policy can cost the trusted path (docs/security.md, "What a
hostile producer can cost"). The app stream has provisioned shards from `appStreamShards`, each consumer reads it
with one batch per shard, its rejects and on-failure records go to failure queues of their own (under the stack's
key, with their own alarms), and `appMayReport` reaches every consumer that tells the app stream apart."""

from __future__ import annotations

import pytest

from tests.infra.conftest import Graph

STREAM = "aws:kinesis/stream:Stream"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
FUNCTION = "aws:lambda/function:Function"
QUEUE = "aws:sqs/queue:Queue"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
CONSUMERS = ("rules-aggregator", "tracking-event-tracker")
STREAM_CONSUMERS = (*CONSUMERS, "rules-dispatcher")


def rerun(monitor, dev_stack_config, run_stack, **config: str) -> Graph:
    before = len(monitor.registered)
    outputs = run_stack({**dev_stack_config, **{f"engagement-loop:{k}": v for k, v in config.items()}})
    return Graph(monitor.registered[before:], outputs)


def env(graph: Graph, function: str) -> dict[str, str]:
    return graph.one(FUNCTION, function).inputs["environment"]["variables"]


def grants(graph: Graph, policy: str) -> dict[str, set[str]]:
    actions: dict[str, set[str]] = {}
    for statement in graph.one(ROLE_POLICY, policy).input_json("policy")["Statement"]:
        for action in statement["Action"]:
            actions.setdefault(action, set()).update(statement["Resource"])
    return actions


def test_the_app_stream_is_provisioned_with_two_shards_by_default(dev_graph):
    app = dev_graph.one(STREAM, "events-app-stream")
    assert app.inputs["streamModeDetails"] == {"streamMode": "PROVISIONED"} and app.inputs["shardCount"] == 2
    trusted = dev_graph.one(STREAM, "events-stream")
    assert trusted.inputs["streamModeDetails"] == {"streamMode": "ON_DEMAND"} and "shardCount" not in trusted.inputs


def test_app_stream_shards_come_from_config(monitor, dev_stack_config, run_stack):
    graph = rerun(monitor, dev_stack_config, run_stack, appStreamShards="7")
    assert graph.one(STREAM, "events-app-stream").inputs["shardCount"] == 7


def test_the_app_stream_mappings_take_one_batch_per_shard_whatever_the_trusted_mapping_takes(
        monitor, dev_stack_config, run_stack):
    # Without Pinpoint the trusted mappings run 10 batches per shard; the app ones stay at 1.
    graph = rerun(monitor, dev_stack_config, run_stack, pinpointProjectId="")
    for consumer in CONSUMERS:
        assert graph.one(MAPPING, f"{consumer}-mapping").inputs["parallelizationFactor"] == 10, consumer
        assert graph.one(MAPPING, f"{consumer}-app-mapping").inputs["parallelizationFactor"] == 1, consumer


@pytest.mark.parametrize("consumer", STREAM_CONSUMERS)
def test_failure_queues_are_under_the_data_key_which_the_consumer_may_use_to_send(dev_graph, consumer):
    key = dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))
    queues = [q for q in dev_graph.of_type(QUEUE) if q.name.startswith(f"{consumer}-") and q.name.endswith("failures")]
    assert queues
    actions = grants(dev_graph, f"{consumer}-handler-policy")
    for queue in queues:
        assert queue.inputs["kmsMasterKeyId"] == key and "sqsManagedSseEnabled" not in queue.inputs, queue.name
        # The consumer's role sends its own rejects and, for the event source mapping, its on-failure records.
        assert dev_graph.arn_of(queue) in actions["sqs:SendMessage"], queue.name
    assert key in actions["kms:GenerateDataKey"] and key in actions["kms:Decrypt"]


@pytest.mark.parametrize("consumer", CONSUMERS)
def test_the_app_stream_has_its_own_failure_queue_and_alarm(dev_graph, consumer):
    trusted, app = dev_graph.one(QUEUE, f"{consumer}-failures"), dev_graph.one(QUEUE, f"{consumer}-app-failures")
    assert dev_graph.one(MAPPING, f"{consumer}-app-mapping").inputs["destinationConfig"] == {
        "onFailure": {"destinationArn": dev_graph.arn_of(app)}}
    assert dev_graph.one(MAPPING, f"{consumer}-mapping").inputs["destinationConfig"] == {
        "onFailure": {"destinationArn": dev_graph.arn_of(trusted)}}
    depth = dev_graph.one(ALARM, f"{consumer}-failures-depth")
    assert depth.inputs["dimensions"] == {"QueueName": trusted.name} and depth.inputs["threshold"] == 1
    rate = dev_graph.one(ALARM, f"{consumer}-app-failures-rate")
    assert rate.inputs["dimensions"] == {"QueueName": app.name}
    assert (rate.inputs["metricName"], rate.inputs["statistic"], rate.inputs["period"], rate.inputs["threshold"]) == (
        "NumberOfMessagesSent", "Sum", 3600, 100)
    assert rate.inputs["alarmActions"] == depth.inputs["alarmActions"] != []
    assert env(dev_graph, f"{consumer}-handler-function")["APP_FAILURES_QUEUE_URL"].endswith(f"/{consumer}-app-failures")


def test_without_an_app_stream_the_aggregator_has_no_app_failures_queue(monitor, dev_stack_config, run_stack):
    graph = rerun(monitor, dev_stack_config, run_stack, appProducerPolicy="false")
    assert not [q.name for q in graph.of_type(QUEUE) if "-app-" in q.name]
    assert env(graph, "rules-aggregator-handler-function")["APP_FAILURES_QUEUE_URL"] == ""


CONSUMER_FUNCTIONS = ("events-normalise-function", "rules-aggregator-handler-function",
                      "tracking-event-tracker-handler-function")


def test_app_may_report_reaches_every_consumer_that_gets_the_app_stream(monitor, dev_stack_config, run_stack):
    graph = rerun(monitor, dev_stack_config, run_stack,
                  appMayReport='["_journey.opened_notification", "_campaign.opened_notification"]')
    for function in CONSUMER_FUNCTIONS:
        variables = env(graph, function)
        assert variables["APP_STREAM_ARN"] == graph.arn_of(graph.one(STREAM, "events-app-stream")), function
        assert variables["APP_MAY_REPORT"] == "_campaign.opened_notification,_journey.opened_notification", function


@pytest.mark.parametrize("function", CONSUMER_FUNCTIONS)
def test_app_may_report_is_empty_by_default(dev_graph, function):
    assert env(dev_graph, function)["APP_MAY_REPORT"] == ""


def test_the_trusted_stream_is_provisioned_with_stream_shards_when_stream_mode_says_so(
        monitor, dev_stack_config, run_stack):
    graph = rerun(monitor, dev_stack_config, run_stack, streamMode="provisioned", streamShards="3")
    trusted = graph.one(STREAM, "events-stream")
    assert trusted.inputs["streamModeDetails"] == {"streamMode": "PROVISIONED"} and trusted.inputs["shardCount"] == 3
    # The app stream keeps its own shards.
    assert graph.one(STREAM, "events-app-stream").inputs["shardCount"] == 2


def test_an_on_demand_stream_has_no_shard_count(monitor, dev_stack_config, run_stack):
    """(`streamShards` without `streamMode: provisioned` is refused by the config: tests/unit/test_config.py.)"""
    graph = rerun(monitor, dev_stack_config, run_stack, streamMode="on-demand")
    trusted = graph.one(STREAM, "events-stream")
    assert trusted.inputs["streamModeDetails"] == {"streamMode": "ON_DEMAND"} and "shardCount" not in trusted.inputs
