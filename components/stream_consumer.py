"""StreamConsumer: a PythonFunction subscribed to a Kinesis or DynamoDB stream (or several streams of one kind,
each with a mapping of the same settings), the way every consumer here is.

Partial-batch responses, bisect on error, bounded retries, an on-failure queue (also handed to the function
as `FAILURES_QUEUE_URL`, for records it rejects itself), per-key ordering with parallelisation, and alarms on
iterator age and on anything reaching the failure queue.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.iam import Statement, deny_insecure_transport, resource_policy_json
from components.notifications import notify
from components.python_function import PythonFunction, PythonFunctionArgs


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
    other_sources: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """More streams of the same kind and key, by role (e.g. `{"app": <app stream ARN>}`): each gets a mapping
    `{name}-{role}-mapping` with the same settings and failure queue, and the read grants cover it. Default none."""
    function: PythonFunctionArgs
    """The consuming function; read permissions and FAILURES_QUEUE_URL are added here."""
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
        if not 0 <= self.maximum_retry_attempts <= 10_000:
            raise ValueError("StreamConsumerArgs.maximum_retry_attempts: expected 0–10000, "
                             f"got {self.maximum_retry_attempts}")


class StreamConsumer(pulumi.ComponentResource):
    """A stream-triggered function with its event source mapping, failure queue and alarms."""

    def __init__(self, name: str, args: StreamConsumerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:stream_consumer:StreamConsumer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.failure_queue = aws.sqs.Queue(
            f"{name}-failures", sqs_managed_sse_enabled=True, message_retention_seconds=14 * 24 * 3600, opts=child)
        tls_only_queue_policy(f"{name}-failures-policy", self.failure_queue, child)
        statements = [*args.function.statements, *_read_statements(args),
                      Statement(actions=["sqs:SendMessage"], resources=[self.failure_queue.arn])]
        function_args = dataclasses.replace(
            args.function, statements=statements,
            environment={**args.function.environment, **args.extra_environment,
                         "FAILURES_QUEUE_URL": self.failure_queue.url})
        self.function = PythonFunction(f"{name}-handler", function_args, opts=child)

        self.mapping = self._mapping(f"{name}-mapping", args.source_arn, args)
        self.other_mappings = {role: self._mapping(f"{name}-{role}-mapping", arn, args)
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

        self.register_outputs({"function_arn": self.function.function.arn,
                               "failure_queue_url": self.failure_queue.url})

    def _mapping(self, child_name: str, source_arn: pulumi.Input[str],
                 args: StreamConsumerArgs) -> aws.lambda_.EventSourceMapping:
        return aws.lambda_.EventSourceMapping(
            child_name,
            event_source_arn=source_arn,
            function_name=self.function.function.arn,
            starting_position="LATEST",
            batch_size=args.batch_size,
            maximum_batching_window_in_seconds=args.batching_window_seconds,
            parallelization_factor=args.parallelization_factor,
            bisect_batch_on_function_error=True,
            maximum_retry_attempts=args.maximum_retry_attempts,
            function_response_types=["ReportBatchItemFailures"],
            destination_config={"on_failure": {"destination_arn": self.failure_queue.arn}},
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


def tls_only_queue_policy(name: str, queue: aws.sqs.Queue, opts: pulumi.ResourceOptions,
                          statements: Sequence[dict] = ()) -> aws.sqs.QueuePolicy:
    """`queue`'s policy: `statements`, and no access without TLS (the example of the SQS developer guide,
    "Enforce encryption of data in transit",
    https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-security-best-practices.html).
    Senders in this account are allowed by their IAM roles; only other principals need an Allow here."""
    return aws.sqs.QueuePolicy(name, queue_url=queue.url, policy=resource_policy_json([
        *statements, deny_insecure_transport("sqs:*", [queue.arn])]), opts=opts)


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
