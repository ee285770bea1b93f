"""ScheduledFunction: a PythonFunction that EventBridge invokes on a schedule."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.python_function import PythonFunction, PythonFunctionArgs


@dataclass(frozen=True, kw_only=True)
class ScheduledFunctionArgs:
    """The function and when it runs."""

    function: PythonFunctionArgs
    """The function to invoke."""
    schedule_expression: str
    """EventBridge schedule, e.g. `rate(15 minutes)`."""

    def __post_init__(self) -> None:
        if not self.schedule_expression.startswith(("rate(", "cron(")):
            raise ValueError("ScheduledFunctionArgs.schedule_expression: expected rate(...) or cron(...), "
                             f"got {self.schedule_expression!r}")


class ScheduledFunction(pulumi.ComponentResource):
    """A function, its schedule rule and the permission that lets only that rule invoke it."""

    def __init__(self, name: str, args: ScheduledFunctionArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:scheduled_function:ScheduledFunction", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.function = PythonFunction(f"{name}-handler", args.function, opts=child)
        self.rule = aws.cloudwatch.EventRule(
            f"{name}-schedule", description=args.function.description,
            schedule_expression=args.schedule_expression, opts=child)
        permission = aws.lambda_.Permission(
            f"{name}-invoke", action="lambda:InvokeFunction", function=self.function.function.name,
            principal="events.amazonaws.com", source_arn=self.rule.arn, opts=child)
        aws.cloudwatch.EventTarget(
            f"{name}-target", rule=self.rule.name, arn=self.function.function.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]))
        self.register_outputs({"function_arn": self.function.function.arn})
