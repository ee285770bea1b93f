"""Notifications: the stack's alarm topic, where every CloudWatch alarm of the program sends its state changes.

Subscribe to the `alarmTopicArn` stack output (README, "Alarms"). With `alarmTopicArn` set in config, that topic is
used instead and nothing is created here; its policy and key must then let CloudWatch publish (README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.iam import deny_insecure_transport, resource_policy_json


@dataclass(frozen=True, kw_only=True)
class NotificationsArgs:
    """Where alarms go."""

    key_arn: pulumi.Input[str]
    """The stack's data key, which encrypts the topic (its key policy lets cloudwatch.amazonaws.com use it,
    KEY_SERVICE_GRANTS in components/event_stream_pipeline.py). Required."""
    existing_topic_arn: str | None = None
    """`alarmTopicArn`: an SNS topic to send alarms to instead of creating one. Default: none (create the stack's
    topic)."""


class Notifications(pulumi.ComponentResource):
    """The stack's alarm topic (or the one given in config): `topic_arn` goes into every component's Args."""

    topic_arn: pulumi.Output[str]
    topic: aws.sns.Topic | None

    def __init__(self, name: str, args: NotificationsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:notifications:Notifications", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = None
        if args.existing_topic_arn:
            self.topic_arn = pulumi.Output.from_input(args.existing_topic_arn)
        else:
            account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
            self.topic = aws.sns.Topic(f"{name}-topic", kms_master_key_id=args.key_arn, opts=child)
            # CloudWatch alarms publish as cloudwatch.amazonaws.com; aws:SourceAccount keeps other accounts' alarms
            # out (SNS developer guide, "Example cases for Amazon SNS access control",
            # https://docs.aws.amazon.com/sns/latest/dg/sns-access-policy-use-cases.html). TLS only: SNS security
            # best practices, https://docs.aws.amazon.com/sns/latest/dg/sns-security-best-practices.html.
            aws.sns.TopicPolicy(f"{name}-topic-policy", arn=self.topic.arn, policy=resource_policy_json([
                {"Sid": "CloudWatchAlarmsPublish", "Effect": "Allow",
                 "Principal": {"Service": "cloudwatch.amazonaws.com"}, "Action": "sns:Publish",
                 "Resource": self.topic.arn, "Condition": {"StringEquals": {"aws:SourceAccount": account}}},
                deny_insecure_transport("sns:Publish", [self.topic.arn]),
            ]), opts=child)
            self.topic_arn = self.topic.arn
        self.register_outputs({"topic_arn": self.topic_arn})


def notify(topic_arn: pulumi.Input[str]) -> dict[str, Any]:
    """A MetricAlarm's actions: `topic_arn` hears both when the alarm fires and when it clears."""
    return {"alarm_actions": [topic_arn], "ok_actions": [topic_arn]}
