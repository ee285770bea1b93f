"""PythonFunction: the one way this program deploys a Lambda function.

Every function ships the same archive of `functions/`, runs with Powertools from AWS's public layer, and
gets its own role (a policy with exactly the statements it is given, plus writing its own logs), a log
group with retention and an errors alarm.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pulumi
import pulumi_aws as aws

from components.iam import Statement, assume_role_json, policy_json
from components.notifications import notify

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
RUNTIME = "python3.12"
ARCHITECTURE = "x86_64"
# AWS publishes Powertools as a layer in every commercial region; pinned so a deploy is repeatable.
POWERTOOLS_LAYER_VERSION = 27


def powertools_layer_arn(region: str) -> str:
    return (f"arn:aws:lambda:{region}:017000801446:layer:AWSLambdaPowertoolsPythonV3-"
            f"{RUNTIME.replace('.', '')}-{ARCHITECTURE}:{POWERTOOLS_LAYER_VERSION}")


@functools.cache
def functions_archive() -> pulumi.AssetArchive:
    """One archive of the `functions` package (sources only), shared by every function."""
    assets = {
        str(path.relative_to(FUNCTIONS_DIR.parent)): pulumi.FileAsset(str(path))
        for path in sorted(FUNCTIONS_DIR.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }
    return pulumi.AssetArchive(assets)


@dataclass(frozen=True, kw_only=True)
class PythonFunctionArgs:
    """What one function runs and what it may touch."""

    handler: str
    """Dotted path of the handler inside the archive, e.g. `functions.events.firehose_transform.handler`."""
    description: str
    """Shown in the Lambda console."""
    region: str
    """The stack's region (selects the Powertools layer)."""
    log_retention_days: int
    """Retention of the function's log group."""
    alarm_topic_arn: pulumi.Input[str]
    """The stack's alarm topic (Notifications.topic_arn): the errors alarm, and a consumer's alarms, notify it.
    Required."""
    statements: Sequence[Statement] = ()
    """What the function may do besides writing its own logs. Default: nothing."""
    environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Environment variables; each function parses them once with a `from_env()`. Default: none."""
    timeout_seconds: int = 60
    """Default 60."""
    memory_mb: int = 256
    """Default 256."""
    reserved_concurrency: int | None = None
    """Cap on concurrent executions (1 = never overlapping runs). Default: no cap."""
    secret_environment: bool = False
    """Keep the environment a Pulumi secret: its values may come from secret stack config, which must not land
    in the state or a preview's diff as plain text. Default False."""

    def __post_init__(self) -> None:
        if self.handler.count(".") < 2 or not self.handler.startswith("functions."):
            raise ValueError(f"PythonFunctionArgs.handler: expected functions.<module>.<function>, "
                             f"got {self.handler!r}")
        if not 1 <= self.timeout_seconds <= 900:
            raise ValueError(f"PythonFunctionArgs.timeout_seconds: expected 1–900, got {self.timeout_seconds}")
        if not 128 <= self.memory_mb <= 10240:
            raise ValueError(f"PythonFunctionArgs.memory_mb: expected 128–10240, got {self.memory_mb}")


class PythonFunction(pulumi.ComponentResource):
    """A Lambda function with its role, policy, log group and errors alarm."""

    @staticmethod
    def _variables(name: str, args: PythonFunctionArgs) -> pulumi.Input[Mapping[str, pulumi.Input[str]]]:
        variables = {"POWERTOOLS_SERVICE_NAME": name, **args.environment}
        # A plain value passed to a resource is stored in the state as it is; a secret Output is encrypted
        # (Pulumi, "Secrets": https://www.pulumi.com/docs/iac/concepts/secrets/).
        return pulumi.Output.secret(variables) if args.secret_environment else variables

    function: aws.lambda_.Function
    role: aws.iam.Role
    log_group: aws.cloudwatch.LogGroup
    errors_alarm: aws.cloudwatch.MetricAlarm

    def __init__(self, name: str, args: PythonFunctionArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:python_function:PythonFunction", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", retention_in_days=args.log_retention_days, opts=child)
        self.role = aws.iam.Role(
            f"{name}-role", assume_role_policy=assume_role_json("lambda.amazonaws.com"),
            description=f"{args.description} (Lambda execution role)", opts=child)
        own_logs = Statement(actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                             resources=[self.log_group.arn.apply(lambda arn: f"{arn}:*")])
        self.policy = aws.iam.RolePolicy(
            f"{name}-policy", role=self.role.id, policy=policy_json([own_logs, *args.statements]), opts=child)

        self.function = aws.lambda_.Function(
            f"{name}-function",
            description=args.description,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=args.handler,
            code=functions_archive(),
            role=self.role.arn,
            timeout=args.timeout_seconds,
            memory_size=args.memory_mb,
            reserved_concurrent_executions=args.reserved_concurrency,
            layers=[powertools_layer_arn(args.region)],
            environment={"variables": self._variables(name, args)},
            logging_config={"log_format": "JSON", "log_group": self.log_group.name},
            # The policy must exist before the first invocation can log or touch anything.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.policy]),
        )
        self.errors_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-errors",
            alarm_description=f"{name}: the function raised errors",
            namespace="AWS/Lambda", metric_name="Errors", statistic="Sum",
            dimensions={"FunctionName": self.function.name},
            period=300, evaluation_periods=1, threshold=1, comparison_operator="GreaterThanOrEqualToThreshold",
            treat_missing_data="notBreaching", **notify(args.alarm_topic_arn), opts=child)

        self.register_outputs({"function_arn": self.function.arn, "role_arn": self.role.arn})
