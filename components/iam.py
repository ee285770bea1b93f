"""IAM policy documents built from typed statements, so every component writes least privilege the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import pulumi


@dataclass(frozen=True, kw_only=True)
class Statement:
    """One Allow statement: explicit actions on explicit resources (ARNs may be Pulumi outputs)."""

    actions: Sequence[str]
    resources: Sequence[pulumi.Input[str]]
    conditions: dict[str, Any] = field(default_factory=dict)
    effect: str = "Allow"

    def __post_init__(self) -> None:
        if not self.actions or any("*" == action.split(":")[-1] for action in self.actions):
            raise ValueError(f"Statement.actions: name each action, got {list(self.actions)!r}")
        if not self.resources:
            raise ValueError("Statement.resources: name the resources the actions apply to")

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"Effect": self.effect, "Action": list(self.actions),
                                    "Resource": list(self.resources)}
        if self.conditions:
            document["Condition"] = self.conditions
        return document


def policy_json(statements: Sequence[Statement]) -> pulumi.Output[str]:
    """A policy document (JSON) from statements whose resources may still be unresolved outputs."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [s.to_json() for s in statements]})


def assume_role_json(service: str, *, source_account: pulumi.Input[str] | None = None,
                     source_arn: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
    """A trust policy for one AWS service principal, pinned to this account/resource where given
    (the confused-deputy guard AWS recommends for service roles)."""
    condition: dict[str, Any] = {}
    if source_account is not None:
        condition.setdefault("StringEquals", {})["aws:SourceAccount"] = source_account
    if source_arn is not None:
        condition.setdefault("ArnLike", {})["aws:SourceArn"] = source_arn
    statement: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if condition:
        statement["Condition"] = condition
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [statement]})


def deny_insecure_transport(actions: str | Sequence[str], resources: Sequence[pulumi.Input[str]]) -> dict[str, Any]:
    """The resource-policy statement AWS documents for TLS-only access (S3, SQS and SNS security best practices):
    deny everyone any of `actions` on `resources` over a request without TLS (`aws:SecureTransport` false)."""
    return {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
            "Action": actions if isinstance(actions, str) else list(actions), "Resource": list(resources),
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def resource_policy_json(statements: Sequence[dict[str, Any]]) -> pulumi.Output[str]:
    """A resource policy (bucket, queue, topic) from statements whose values may still be unresolved outputs."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})
