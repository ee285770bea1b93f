"""Where the activation records (`activation.py`) live: `DynamoMetaTable`, the `meta#<rule_id>` items of the
counters table, and `MemoryMetaTable`, a dict for the local engine. Both honour the same conditions."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from functions.rules.activation import MetaChanged, RuleMeta
from functions.rules.dynamo import error_code, from_attributes, to_attributes
from functions.rules.outbox import PARTITION_KEY, meta_key


class DynamoMetaTable:
    """The records as items of the counters table, through a boto3 `dynamodb` client: conditional `PutItem`s
    that return the item found when the condition fails (`ReturnValuesOnConditionCheckFailure`,
    https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_PutItem.html), saving a read."""

    def __init__(self, client: Any, counters_table: str) -> None:
        self._client, self._table = client, counters_table

    def get(self, rule_id: str) -> RuleMeta | None:
        response = self._client.get_item(TableName=self._table,
                                         Key={PARTITION_KEY: {"S": meta_key(rule_id)}}, ConsistentRead=True)
        item = response.get("Item")
        return RuleMeta.from_item(from_attributes(item)) if item else None

    def put_new(self, meta: RuleMeta) -> None:
        self._put(meta, "attribute_not_exists(#pk)", {"#pk": PARTITION_KEY}, {})

    def put_if(self, meta: RuleMeta, *, version: int, seen_until_ms: int | None = None,
               fresh_after_ms: int | None = None) -> None:
        names = {"#version": "version", "#seen": "seen_until_ms"}
        values: dict[str, Any] = {":version": {"N": str(version)}}
        condition = "#version = :version"
        if fresh_after_ms is not None:
            condition += " AND (attribute_not_exists(#seen) OR #seen >= :fresh)"
            values[":fresh"] = {"N": str(fresh_after_ms)}
        elif seen_until_ms is None:
            condition += " AND attribute_not_exists(#seen)"
        else:
            condition += " AND #seen = :seen"
            values[":seen"] = {"N": str(seen_until_ms)}
        self._put(meta, condition, names, values)

    def _put(self, meta: RuleMeta, condition: str, names: dict[str, str], values: dict[str, Any]) -> None:
        request: dict[str, Any] = {"TableName": self._table, "Item": to_attributes(meta.to_item()),
                                   "ConditionExpression": condition, "ExpressionAttributeNames": names,
                                   "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self._client.put_item(**request)
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise
            old = error.response.get("Item")
            raise MetaChanged(RuleMeta.from_item(from_attributes(old)) if old else self.get(meta.rule_id)) from error


class MemoryMetaTable:
    """The records in a dict, for the local engine: the same conditions, evaluated in Python."""

    def __init__(self) -> None:
        self._records: dict[str, RuleMeta] = {}

    def get(self, rule_id: str) -> RuleMeta | None:
        return self._records.get(rule_id)

    def put_new(self, meta: RuleMeta) -> None:
        current = self._records.get(meta.rule_id)
        if current is not None:
            raise MetaChanged(current)
        self._records[meta.rule_id] = meta

    def put_if(self, meta: RuleMeta, *, version: int, seen_until_ms: int | None = None,
               fresh_after_ms: int | None = None) -> None:
        current = self._records.get(meta.rule_id)
        if current is None or current.version != version:
            raise MetaChanged(current)
        seen = current.seen_until_ms
        if fresh_after_ms is not None:
            holds = seen is None or seen >= fresh_after_ms
        else:
            holds = seen == seen_until_ms
        if not holds:
            raise MetaChanged(current)
        self._records[meta.rule_id] = meta
