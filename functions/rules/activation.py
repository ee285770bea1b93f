"""A date or window rule's activation record (`meta#<rule_id>` in the counters table): from when the
aggregator counts the rule's events, and how far the backfill of the earlier ones has got.

Semantics: `docs/rules.md`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Mapping

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from functions.rules.dynamo import error_code, from_attributes, to_attributes
from functions.rules.model import Rule
from functions.rules.outbox import PARTITION_KEY, meta_key

logger = Logger()


def rule_fingerprint(rule: Rule) -> str:
    """A hash of what the rule does, to notice a rule whose content changed under the same RuleId."""
    text = json.dumps(rule.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]



class BackfillStatus(str, enum.Enum):
    """Whether a rule's backfill still has to run (or finish)."""

    PENDING = "pending"
    DONE = "done"


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleMeta:
    """A date or window rule's activation and backfill progress (item `meta#<rule_id>`).

    The aggregator counts the rule's events that arrived at or after `activation_ms`; the backfill counts
    those that arrived before it, from the lake, once.
    """

    rule_id: str
    activation_ms: int
    fingerprint: str
    status: BackfillStatus = BackfillStatus.PENDING
    query_id: str | None = None
    """The backfill's running Athena query, so a later run picks it up instead of starting another."""
    resume_after: str | None = None
    """Users up to this id (in the query's order) are merged already."""
    users: int = 0
    events: int = 0
    qualified: int = 0
    error: str | None = None
    version: int = 1

    def to_item(self) -> dict[str, Any]:
        return {PARTITION_KEY: meta_key(self.rule_id), "rule_id": self.rule_id, "activation_ms": self.activation_ms,
                "fingerprint": self.fingerprint, "backfill": self.status.value, "query_id": self.query_id,
                "resume_after": self.resume_after, "users": self.users, "events": self.events,
                "qualified": self.qualified, "error": self.error, "version": self.version}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> RuleMeta:
        return cls(rule_id=str(item["rule_id"]), activation_ms=int(item["activation_ms"]),
                   fingerprint=str(item.get("fingerprint") or ""), status=BackfillStatus(item["backfill"]),
                   query_id=item.get("query_id"), resume_after=item.get("resume_after"),
                   users=int(item.get("users", 0)), events=int(item.get("events", 0)),
                   qualified=int(item.get("qualified", 0)), error=item.get("error"), version=int(item["version"]))


class RuleActivations:
    """The activation records, through a boto3 `dynamodb` client, in the counters table."""

    def __init__(self, client: Any, counters_table: str) -> None:
        self._client, self._table = client, counters_table

    def ensure(self, rule: Rule, activation_ms: int) -> RuleMeta:
        """The rule's activation record, created with `activation_ms` if it has none (first writer wins)."""
        meta = RuleMeta(rule_id=rule.rule_id, activation_ms=activation_ms, fingerprint=rule_fingerprint(rule))
        try:
            self._client.put_item(TableName=self._table, Item=to_attributes(meta.to_item()),
                                  ConditionExpression="attribute_not_exists(#pk)",
                                  ExpressionAttributeNames={"#pk": PARTITION_KEY},
                                  ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return meta
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            old = error.response.get("Item")
        existing = RuleMeta.from_item(from_attributes(old)) if old else self.read(rule.rule_id)
        assert existing is not None
        if existing.fingerprint != meta.fingerprint:
            logger.warning("rule changed under the same RuleId: its counters, activation and backfill are kept; "
                           "give the changed rule a new RuleId to start it afresh", extra={"rule_id": rule.rule_id})
        return existing

    def read(self, rule_id: str) -> RuleMeta | None:
        response = self._client.get_item(TableName=self._table,
                                         Key={PARTITION_KEY: {"S": meta_key(rule_id)}}, ConsistentRead=True)
        item = response.get("Item")
        return RuleMeta.from_item(from_attributes(item)) if item else None

    def save(self, meta: RuleMeta) -> RuleMeta | None:
        """Store `meta` (read at `meta.version`); None if it changed meanwhile."""
        stored = replace(meta, version=meta.version + 1)
        try:
            self._client.put_item(TableName=self._table, Item=to_attributes(stored.to_item()),
                                  ConditionExpression="#version = :version",
                                  ExpressionAttributeNames={"#version": "version"},
                                  ExpressionAttributeValues={":version": {"N": str(meta.version)}})
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return None
            raise
        return stored
