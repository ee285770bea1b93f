"""Who may write what (docs/security.md): the trusted stream is written only by the trusted routes, the app
producer policy writes only the app stream, and every consumer reads both, with the app stream's ARN in its
environment to tell them apart. Without appProducerPolicy there is no app stream."""

from __future__ import annotations

import copy
import json

import pytest

from tests.infra.conftest import Graph

STREAM = "aws:kinesis/stream:Stream"
FIREHOSE = "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
FUNCTION = "aws:lambda/function:Function"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
CONSUMERS = {"rules-aggregator": "rules-aggregator-handler-function",
             "tracking-event-tracker": "tracking-event-tracker-handler-function"}


def arn(graph: Graph, type_token: str, name: str) -> str:
    return graph.arn_of(graph.one(type_token, name))


def kinesis_resources(document) -> set[str]:
    return {resource for statement in document["Statement"] for resource in statement["Resource"]
            if resource.startswith("arn:aws:kinesis:")}


def test_the_trusted_routes_write_only_the_trusted_stream(dev_graph):
    trusted, app = arn(dev_graph, STREAM, "events-stream"), arn(dev_graph, STREAM, "events-app-stream")
    assert dev_graph.one("aws:pinpoint/eventStream:EventStream").inputs["destinationStreamArn"] == trusted
    targets = dev_graph.of_type("aws:cloudwatch/eventTarget:EventTarget")
    ses_targets = [t for t in targets if t.name.startswith("events-ses")]
    assert len(ses_targets) == 3 and {t.inputs["arn"] for t in ses_targets} == {trusted}
    for name in ("events-pinpoint-policy", "events-ses-policy", "tracking-exposures-policy"):
        document = dev_graph.one(ROLE_POLICY, name).input_json("policy")
        assert kinesis_resources(document) == {trusted}, name
        assert app not in json.dumps(document)
    exposures = dev_graph.one(FUNCTION, "tracking-exposures-function")
    assert exposures.inputs["environment"]["variables"]["STREAM_ARN"] == trusted


def test_the_app_producer_policy_writes_only_the_app_stream(dev_graph):
    document = dev_graph.one("aws:iam/policy:Policy", "events-producer-policy").input_json("policy")
    assert kinesis_resources(document) == {arn(dev_graph, STREAM, "events-app-stream")}
    writes = {a for s in document["Statement"] for a in s["Action"] if a.startswith("kinesis:")}
    assert writes == {"kinesis:PutRecord", "kinesis:PutRecords", "kinesis:DescribeStreamSummary"}


def test_a_second_delivery_stream_reads_the_app_stream_into_the_same_lake_with_the_same_settings(dev_graph):
    trusted, app = dev_graph.one(FIREHOSE, "events-firehose"), dev_graph.one(FIREHOSE, "events-app-firehose")
    assert trusted.inputs["kinesisSourceConfiguration"]["kinesisStreamArn"] == arn(dev_graph, STREAM, "events-stream")
    assert app.inputs["kinesisSourceConfiguration"]["kinesisStreamArn"] == arn(dev_graph, STREAM, "events-app-stream")

    def settings(firehose) -> dict:
        s3 = copy.deepcopy(firehose.inputs["extendedS3Configuration"])
        own = (s3.pop("roleArn"), s3.pop("cloudwatchLoggingOptions"),
               s3["dataFormatConversionConfiguration"]["schemaConfiguration"].pop("roleArn"))
        assert all(own)
        return s3

    # Same processor, prefixes, table, buffering and conversion; only the role and logs are its own.
    assert settings(app) == settings(trusted)
    assert app.inputs["extendedS3Configuration"]["roleArn"] == arn(dev_graph, "aws:iam/role:Role",
                                                                   "events-app-firehose-role")
    # Each delivery stream's role reads only its own stream.
    for name, stream in (("events-firehose-policy", "events-stream"), ("events-app-firehose-policy",
                                                                        "events-app-stream")):
        document = dev_graph.one(ROLE_POLICY, name).input_json("policy")
        assert kinesis_resources(document) == {arn(dev_graph, STREAM, stream)}, name


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_each_consumer_has_a_second_mapping_on_the_app_stream_with_the_same_settings(dev_graph, consumer):
    trusted, app = dev_graph.one(MAPPING, f"{consumer}-mapping"), dev_graph.one(MAPPING, f"{consumer}-app-mapping")
    assert trusted.inputs["eventSourceArn"] == arn(dev_graph, STREAM, "events-stream")
    assert app.inputs["eventSourceArn"] == arn(dev_graph, STREAM, "events-app-stream")

    def settings(mapping) -> dict:
        return {key: value for key, value in mapping.inputs.items()
                if key not in ("eventSourceArn", "parallelizationFactor", "destinationConfig")}

    # Same function, batching, retries, bisect and partial batch responses; one batch per app shard and a
    # failure queue of its own (tests/infra/test_hostile_producer.py).
    assert settings(app) == settings(trusted)
    assert app.inputs["parallelizationFactor"] == 1
    assert app.inputs["destinationConfig"]["onFailure"]["destinationArn"] == arn(
        dev_graph, "aws:sqs/queue:Queue", f"{consumer}-app-failures")
    assert app.inputs["bisectBatchOnFunctionError"] is True
    assert app.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]
    document = dev_graph.one(ROLE_POLICY, f"{CONSUMERS[consumer].removesuffix('-function')}-policy").input_json(
        "policy")
    assert kinesis_resources(document) == {arn(dev_graph, STREAM, "events-stream"),
                                           arn(dev_graph, STREAM, "events-app-stream")}
    assert not any(a in json.dumps(document) for a in ("kinesis:PutRecord\"", "kinesis:PutRecords"))


@pytest.mark.parametrize("function", ["events-normalise-function", *CONSUMERS.values()])
def test_every_consumer_gets_the_app_stream_arn(dev_graph, function):
    env = dev_graph.one(FUNCTION, function).inputs["environment"]["variables"]
    assert env["APP_STREAM_ARN"] == arn(dev_graph, STREAM, "events-app-stream")


def test_without_the_app_producer_policy_there_is_no_app_stream(monitor, dev_stack_config, run_stack):
    before = len(monitor.registered)
    outputs = run_stack({**dev_stack_config, "engagement-loop:appProducerPolicy": "false"})
    graph = Graph(monitor.registered[before:], outputs)
    assert [s.name for s in graph.of_type(STREAM)] == ["events-stream"]
    assert [f.name for f in graph.of_type(FIREHOSE)] == ["events-firehose"]
    assert not [m.name for m in graph.of_type(MAPPING) if "-app-" in m.name]
    assert not graph.of_type("aws:iam/policy:Policy")
    assert not {"appStreamArn", "appStreamName", "producerPolicyArn"} & set(outputs)
    for function in ("events-normalise-function", *CONSUMERS.values()):
        assert graph.one(FUNCTION, function).inputs["environment"]["variables"]["APP_STREAM_ARN"] == ""
