"""What DynamoDB refuses whatever the retry — an item over 400 KB, a key too long
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html) — checked before any
request, so that such a change is set aside (`Unwritable`) instead of failing its group on every retry.
"""

from __future__ import annotations

from typing import Any, Mapping

from functions.rules.keys import counter_key, exit_key

MAX_ITEM_BYTES = 400 * 1024
"""DynamoDB's item size limit (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html)."""
MAX_COUNTER_KEY_BYTES = 1024
"""A counter key is also the sort key of the sweep index (at most 1,024 bytes)."""
MAX_OUTBOX_KEY_BYTES = 2048
"""An outbox key is the table's partition key (at most 2,048 bytes); its user part is escaped
(`keys.user_key_part`), so it can be up to three times the user id's bytes."""
_LONGEST_SEQUENCE = 10 ** 20
"""A sequence number longer than any `fired` will reach, for the longest outbox key of a (rule, user)."""


class Unwritable(Exception):
    """The change cannot be written, whatever the retry: an item over DynamoDB's 400 KB, a key too long, or
    (`OutboxKeyTaken`) an outbox key another change holds. Nothing was written; `reason` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OutboxKeyTaken(Unwritable):
    """An outbox entry's key is held by a different change (another rule, user or change kind): writing the
    change would need that key, and treating the stored entry as this one would lose it. Never retried."""


def item_size_bytes(item: Mapping[str, Any]) -> int:
    """The size DynamoDB gives a plain item (as `to_item` builds it), after
    https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html:
    names and strings in UTF-8 bytes, numbers 1 byte per two significant digits + 1, booleans and nulls 1,
    lists and maps 3 + 1 per element. Numbers are counted from their text, so this errs a byte high."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def _value_size(value: Any) -> int:
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, Mapping):
        return 3 + sum(1 + len(str(k).encode("utf-8")) + _value_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 3 + sum(1 + _value_size(v) for v in value)
    digits = str(value).lstrip("-").replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def check_key(rule_id: str, user_id: str) -> None:
    """Raise `Unwritable` for a (rule, user) whose counter key DynamoDB would refuse."""
    if 4 * (len(rule_id) + len(user_id)) + 64 <= MAX_COUNTER_KEY_BYTES:
        return  # no character takes more than 4 bytes, escaped or not: short ids fit both keys
    size = len(counter_key(rule_id, user_id).encode("utf-8"))
    if size > MAX_COUNTER_KEY_BYTES:
        raise Unwritable(f"the counter key of rule {rule_id!r} and this user is {size} bytes, more than the "
                         f"{MAX_COUNTER_KEY_BYTES} a key may have here (DynamoDB: 1,024 for an index sort key)")
    size = len(exit_key(rule_id, user_id, _LONGEST_SEQUENCE).encode("utf-8"))
    if size > MAX_OUTBOX_KEY_BYTES:
        raise Unwritable(f"an outbox key of rule {rule_id!r} and this user would be {size} bytes, more than the "
                         f"{MAX_OUTBOX_KEY_BYTES} DynamoDB allows a partition key")
