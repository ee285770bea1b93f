"""StreamConsumer: a PythonFunction subscribed to a Kinesis or DynamoDB stream (or several streams of one kind,
each with a mapping of the same settings), the way every consumer here is.

Partial-batch responses, bisect on error, bounded retries, an on-failure queue (also handed to the function
as `FAILURES_QUEUE_URL`, for records it rejects itself), per-key ordering with parallelisation, and alarms on
iterator age and on anything reaching the failure queue.

Another stream (`other_sources`, the app stream) gets a mapping of its own with ParallelizationFactor 1 and a
failure queue and alarm of its own (docs/security.md, "What a hostile producer can cost"): what its writers send
cannot take more than one concurrent batch per shard of the function, nor keep the trusted failures alarm firing.
Failure queues are encrypted with `failure_key_arn` (they hold rejected records' raw bytes, addresses included).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.iam import Statement, deny_insecure_transport, resource_policy_json
from components.notifications import notify
from components.python_function import PythonFunction, PythonFunctionArgs


OTHER_SOURCE_PARALLELIZATION = 1
"""ParallelizationFactor of every other source's mapping: one concurrent batch per shard of that stream."""
_ROLE = re.compile(r"^[a-z]+$")


class SourceKind(str, enum.Enum):
    KINESIS = "kinesis"
    DYNAMODB = "dynamodb"


@dataclass(frozen=True, kw_only=True)
class StreamConsumerArgs:
    """The function, the stream it reads and how."""

    source_kind: SourceKind
    """Kinesis data stream or DynamoDB stream."""
    source_arn: pulumi.Input[str]
    """The stream's ARN (for DynamoDB, the table's stream ARN)."""
    failure_key_arn: pulumi.Input[str]
    """KMS key the failure queues are encrypted with (the stack's data key); the function may use it to send and
    read. Required."""
    other_sources: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """More streams of the same kind and key, by role (lower-case letters, e.g. `{"app": <app stream ARN>}`): each
    gets a mapping `{name}-{role}-mapping` with the same settings except ParallelizationFactor 1
    (`OTHER_SOURCE_PARALLELIZATION`), a failure queue `{name}-{role}-failures` (to the function as
    `<ROLE>_FAILURES_QUEUE_URL`) and its alarm; the read grants cover it. Default none."""
    other_failures_alarm_per_hour: int = 100
    """The other sources' failure-queue alarms fire when this many messages reached the queue within an hour.
    Default 100: rejected records are expected noise there (anyone with the producer policy can send them)."""
    function: PythonFunctionArgs
    """The consuming function; read permissions and the failure queue URLs are added here."""
    source_key_arn: pulumi.Input[str] | None = None
    """KMS key the stream is encrypted with, if any. Default: none."""
    batch_size: int = 100
    """Records per invocation. Default 100."""
    batching_window_seconds: int = 1
    """How long Lambda gathers records before invoking. Default 1."""
    parallelization_factor: int = 10
    """Concurrent batches per shard; records of one partition key stay in order. Default 10."""
    maximum_retry_attempts: int = 5
    """Retries of a failing batch before its records go to the failure queue. Default 5."""
    filter_patterns: Sequence[str] = ()
    """Event-source filter patterns (JSON). Default: every record."""
    iterator_age_alarm_ms: int = 60_000
    """Alarm when the oldest unprocessed record is older than this. Default one minute."""
    extra_environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"StreamConsumerArgs.batch_size: expected 1–10000, got {self.batch_size}")
        if not 1 <= self.parallelization_factor <= 10:
            raise ValueError("StreamConsumerArgs.parallelization_factor: expected 1–10, "
                             f"got {self.parallelization_factor}")
        bad_roles = sorted(role for role in self.other_sources if not _ROLE.match(role))
        if bad_roles:
            raise ValueError(f"StreamConsumerArgs.other_sources: expected roles of lower-case letters, got {bad_roles}")
        if self.other_failures_alarm_per_hour < 1:
            raise ValueError("StreamConsumerArgs.other_failures_alarm_per_hour: expected at least 1, "
                             f"got {self.other_failures_alarm_per_hour}")
        if not 0 <= self.maximum_retry_attempts <= 10_000:
            raise ValueError("StreamConsumerArgs.maximum_retry_attempts: expected 0–10000, "
                             f"got {self.maximum_retry_attempts}")


class StreamConsumer(pulumi.ComponentResource):
    """A stream-triggered function with its event source mapping, failure queue and alarms."""

    def __init__(self, name: str, args: StreamConsumerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:stream_consumer:StreamConsumer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.failure_queue = self._failure_queue(f"{name}-failures", args.failure_key_arn)
        self.other_failure_queues = {role: self._failure_queue(f"{name}-{role}-failures", args.failure_key_arn)
                                     for role in args.other_sources}
        queues = [self.failure_queue, *self.other_failure_queues.values()]
        statements = [*args.function.statements, *_read_statements(args),
                      # The function sends its own rejects, and the event source mappings send their on-failure
                      # records as the function's execution role too: SendMessage, and for a queue under a
                      # customer managed key kms:Decrypt and kms:GenerateDataKey (Lambda developer guide, "Retain
                      # discarded batch records for a Kinesis Data Streams event source",
                      # https://docs.aws.amazon.com/lambda/latest/dg/kinesis-on-failure-destination.html; SQS
                      # developer guide, "Amazon SQS key management", producers need both,
                      # https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html).
                      Statement(actions=["sqs:SendMessage"], resources=[q.arn for q in queues]),
                      Statement(actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[args.failure_key_arn])]
        function_args = dataclasses.replace(
            args.function, statements=statements,
            environment={**args.function.environment, **args.extra_environment,
                         "FAILURES_QUEUE_URL": self.failure_queue.url,
                         **{f"{role.upper()}_FAILURES_QUEUE_URL": queue.url
                            for role, queue in self.other_failure_queues.items()}})
        self.function = PythonFunction(f"{name}-handler", function_args, opts=child)

        self.mapping = self._mapping(f"{name}-mapping", args.source_arn, self.failure_queue,
                                     args.parallelization_factor, args)
        self.other_mappings = {role: self._mapping(f"{name}-{role}-mapping", arn, self.other_failure_queues[role],
                                                   OTHER_SOURCE_PARALLELIZATION, args)
                               for role, arn in args.other_sources.items()}

        self.iterator_age_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-iterator-age",
            alarm_description=f"{name} is falling behind its stream",
            namespace="AWS/Lambda", metric_name="IteratorAge", statistic="Maximum",
            dimensions={"FunctionName": self.function.function.name},
            period=300, evaluation_periods=1, threshold=args.iterator_age_alarm_ms,
            comparison_operator="GreaterThanThreshold", treat_missing_data="notBreaching",
            **notify(args.function.alarm_topic_arn), opts=child)
        self.failures_alarm = queue_depth_alarm(f"{name}-failures-depth", self.failure_queue,
                                                f"{name}: records reached the failure queue",
                                                args.function.alarm_topic_arn, child)
        self.other_failures_alarms = {
            role: queue_rate_alarm(
                f"{name}-{role}-failures-rate", queue, args.other_failures_alarm_per_hour,
                f"{name}: at least {args.other_failures_alarm_per_hour} records of the {role} stream reached its "
                "failure queue within an hour (a producer sending records the consumers reject, or a fault)",
                args.function.alarm_topic_arn, child)
            for role, queue in self.other_failure_queues.items()}

        self.register_outputs({"function_arn": self.function.function.arn,
                               "failure_queue_url": self.failure_queue.url,
                               "other_failure_queue_urls": {role: queue.url
                                                            for role, queue in self.other_failure_queues.items()}})

    def _failure_queue(self, child_name: str, key_arn: pulumi.Input[str]) -> aws.sqs.Queue:
        child = pulumi.ResourceOptions(parent=self)
        queue = aws.sqs.Queue(child_name, kms_master_key_id=key_arn, message_retention_seconds=14 * 24 * 3600,
                              opts=child)
        tls_only_queue_policy(f"{child_name}-policy", queue, child)
        return queue

    def _mapping(self, child_name: str, source_arn: pulumi.Input[str], failure_queue: aws.sqs.Queue,
                 parallelization_factor: int, args: StreamConsumerArgs) -> aws.lambda_.EventSourceMapping:
        return aws.lambda_.EventSourceMapping(
            child_name,
            event_source_arn=source_arn,
            function_name=self.function.function.arn,
            starting_position="LATEST",
            batch_size=args.batch_size,
            maximum_batching_window_in_seconds=args.batching_window_seconds,
            parallelization_factor=parallelization_factor,
            bisect_batch_on_function_error=True,
            maximum_retry_attempts=args.maximum_retry_attempts,
            function_response_types=["ReportBatchItemFailures"],
            destination_config={"on_failure": {"destination_arn": failure_queue.arn}},
            filter_criteria={"filters": [{"pattern": p} for p in args.filter_patterns]}
            if args.filter_patterns else None,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.function]))


def queue_depth_alarm(name: str, queue: aws.sqs.Queue, description: str, topic_arn: pulumi.Input[str],
                      opts: pulumi.ResourceOptions) -> aws.cloudwatch.MetricAlarm:
    """Alarm `topic_arn` as soon as any message waits in `queue` (failure and dead-letter queues)."""
    return aws.cloudwatch.MetricAlarm(
        name, alarm_description=description,
        namespace="AWS/SQS", metric_name="ApproximateNumberOfMessagesVisible", statistic="Maximum",
        dimensions={"QueueName": queue.name}, period=300, evaluation_periods=1, threshold=1,
        comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="notBreaching",
        **notify(topic_arn), opts=opts)


def queue_rate_alarm(name: str, queue: aws.sqs.Queue, per_hour: int, description: str,
                     topic_arn: pulumi.Input[str], opts: pulumi.ResourceOptions) -> aws.cloudwatch.MetricAlarm:
    """Alarm `topic_arn` when `per_hour` messages were sent to `queue` within an hour (NumberOfMessagesSent, Sum;
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html).
    A rate, not the depth: a queue that fills with expected noise would otherwise stay in alarm until drained."""
    return aws.cloudwatch.MetricAlarm(
        name, alarm_description=description,
        namespace="AWS/SQS", metric_name="NumberOfMessagesSent", statistic="Sum",
        dimensions={"QueueName": queue.name}, period=3600, evaluation_periods=1, threshold=per_hour,
        comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="notBreaching",
        **notify(topic_arn), opts=opts)


def tls_only_queue_policy(name: str, queue: aws.sqs.Queue, opts: pulumi.ResourceOptions,
                          statements: Sequence[dict] = ()) -> aws.sqs.QueuePolicy:
    """`queue`'s policy: `statements`, and no access without TLS (the example of the SQS developer guide,
    "Enforce encryption of data in transit",
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-security-best-practices.html).
    Senders in this account are allowed by their IAM roles; only other principals need an Allow here."""
    return aws.sqs.QueuePolicy(name, queue_url=queue.url, policy=resource_policy_json([
        *statements, deny_insecure_transport("sqs:*", [queue.arn])]), opts=opts)


def app_stream_environment(app_stream_arn: pulumi.Input[str] | None,
                           app_may_report: frozenset[str]) -> dict[str, pulumi.Input[str]]:
    """What every consumer of the streams reads to tell the app stream's records (`ConsumerSettings.from_env`):
    `APP_STREAM_ARN` and `APP_MAY_REPORT` (the `appMayReport` types, comma-separated), both empty without an app
    stream."""
    if app_stream_arn is None:
        return {"APP_STREAM_ARN": "", "APP_MAY_REPORT": ""}
    return {"APP_STREAM_ARN": app_stream_arn, "APP_MAY_REPORT": ",".join(sorted(app_may_report))}


def _read_statements(args: StreamConsumerArgs) -> list[Statement]:
    sources = [args.source_arn, *args.other_sources.values()]
    if args.source_kind is SourceKind.KINESIS:
        statements = [Statement(actions=["kinesis:DescribeStream", "kinesis:DescribeStreamSummary",
                                         "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"],
                                resources=sources)]
    else:
        # dynamodb:ListStreams supports no resource type, so only "*" grants it (Service Authorization Reference,
        # Amazon DynamoDB, actions defined); the stream ARN alone would leave it denied.
        statements = [Statement(actions=["dynamodb:DescribeStream", "dynamodb:GetRecords",
                                         "dynamodb:GetShardIterator"], resources=sources),
                      Statement(actions=["dynamodb:ListStreams"], resources=["*"])]
    if args.source_key_arn is not None:
        statements.append(Statement(actions=["kms:Decrypt"], resources=[args.source_key_arn]))
    return statements
