"""The few DynamoDB helpers the rules functions share: typed attribute values both ways, error codes."""

from __future__ import annotations

from typing import Any, Mapping

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

_serializer, _deserializer = TypeSerializer(), TypeDeserializer()


def to_attributes(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain item as DynamoDB attribute values (`{"S": …}`, `{"N": …}`, …)."""
    return {name: _serializer.serialize(value) for name, value in item.items()}


def from_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """DynamoDB attribute values as a plain item (numbers as `Decimal`)."""
    return {name: _deserializer.deserialize(value) for name, value in attributes.items()}


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")
