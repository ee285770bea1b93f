"""RecommendationTracking: what was recommended to whom, and (optionally) engagement streamed to Personalize.

- The exposures function records `_custom.recommender` events on the trusted stream (the app stream may not
  carry them, docs/security.md). Any sender invokes it directly;
  with a Pinpoint project configured, Pinpoint may also call it as a recommender model's processing function.
- With real-time events on, a stream consumer sends scored engagement to a Personalize event tracker, so
  recommendations react between retrains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.iam import Statement
from components.python_function import PythonFunction, PythonFunctionArgs
from components.stream_consumer import SourceKind, StreamConsumer, StreamConsumerArgs, app_stream_environment
from functions.events.canonical import IdentityMode
from functions.retraining.scoring import ScoringModel


@dataclass(frozen=True, kw_only=True)
class RecommendationTrackingArgs:
    """Where exposures go and where engagement is streamed."""

    region: str
    """The stack's region."""
    account_id: str
    """The stack's account (scopes Pinpoint's permission to invoke)."""
    log_retention_days: int
    stream_arn: pulumi.Input[str]
    """The trusted engagement stream (EventStreamPipeline.stream): exposures go there."""
    stream_key_arn: pulumi.Input[str]
    """Its KMS key (the stack's data key), which also encrypts the event tracker's failure queues."""
    alarm_topic_arn: pulumi.Input[str]
    """The stack's alarm topic (Notifications.topic_arn): the functions' alarms notify it. Required."""
    secret_environment: bool = False
    """True when the stack config holds secret values: every function's environment is kept as a Pulumi
    secret (encrypted in the state, hidden in previews). Default False."""
    identity_mode: IdentityMode
    scoring: ScoringModel
    """Scored event types are the ones streamed to the event tracker."""
    pinpoint_project_id: str | None = None
    """Let this project's recommender models invoke the exposures function. Default: none."""
    tracking_id: str | None = None
    """Personalize event tracker's tracking id; None (default) turns the real-time path off."""
    app_stream_arn: pulumi.Input[str] | None = None
    """The app stream, also streamed to the event tracker, untrusted (docs/security.md). Default: none."""
    app_may_report: frozenset[str] = frozenset()
    """`appMayReport`: reserved push event types the app stream may still carry. Default none."""


class RecommendationTracking(pulumi.ComponentResource):
    """Exposure recording, and the optional real-time path to a Personalize event tracker."""

    def __init__(self, name: str, args: RecommendationTrackingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:recommendation_tracking:RecommendationTracking", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.exposures = PythonFunction(
            f"{name}-exposures",
            PythonFunctionArgs(
                handler="functions.tracking.exposures.lambda_handler",
                description="engagement-loop: record recommendation exposures on the engagement stream",
                region=args.region, log_retention_days=args.log_retention_days,
                alarm_topic_arn=args.alarm_topic_arn,
                secret_environment=args.secret_environment,
                # Pinpoint waits at most 15 seconds for a recommender's processing function.
                timeout_seconds=10,
                environment={"STREAM_ARN": args.stream_arn},
                statements=[Statement(actions=["kinesis:PutRecords"], resources=[args.stream_arn]),
                            Statement(actions=["kms:GenerateDataKey"], resources=[args.stream_key_arn])]),
            opts=child)
        if args.pinpoint_project_id:
            aws.lambda_.Permission(
                f"{name}-exposures-pinpoint", action="lambda:InvokeFunction",
                function=self.exposures.function.name, principal=f"pinpoint.{args.region}.amazonaws.com",
                source_account=args.account_id,
                # The form Pinpoint's developer guide gives for recommender models' processing functions.
                source_arn=f"arn:aws:mobiletargeting:{args.region}:{args.account_id}:recommenders/*",
                opts=child)

        self.event_tracker = None
        if args.tracking_id:
            self.event_tracker = StreamConsumer(
                f"{name}-event-tracker",
                StreamConsumerArgs(
                    source_kind=SourceKind.KINESIS, source_arn=args.stream_arn, source_key_arn=args.stream_key_arn,
                    failure_key_arn=args.stream_key_arn,
                    other_sources={"app": args.app_stream_arn} if args.app_stream_arn is not None else {},
                    function=PythonFunctionArgs(
                        handler="functions.tracking.event_tracker.lambda_handler",
                        description="engagement-loop: stream scored engagement to a Personalize event tracker",
                        region=args.region, log_retention_days=args.log_retention_days,
                        alarm_topic_arn=args.alarm_topic_arn,
                        secret_environment=args.secret_environment,
                        environment={"TRACKING_ID": args.tracking_id,
                                     "SCORING": json.dumps(dict(args.scoring.values)),
                                     "IDENTITY_MODE": args.identity_mode.value,
                                     **app_stream_environment(args.app_stream_arn, args.app_may_report)},
                        # PutEvents supports no resource type in the Service Authorization Reference (Amazon
                        # Personalize), and the PutEvents API reference gives a Lambda caller the action on "*":
                        # scoped to event-tracker ARNs it is denied at run time.
                        statements=[Statement(actions=["personalize:PutEvents"], resources=["*"])]),
                ),
                opts=child)

        self.register_outputs({"exposures_function_arn": self.exposures.function.arn})
