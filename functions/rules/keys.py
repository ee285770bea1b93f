"""The partition keys of the rule engine's tables, built and parsed in one place.

Rule ids cannot contain `#` (sheet.py's RuleId pattern) but user ids can. So the counter key
`<rule_id>#<user_id>` is unambiguous (the rule id ends at the first `#`), while an outbox key, which puts
more after the user id, would not be: user `alice#exit`'s qualification 1 and user `alice`'s exit 1 would
both be `r#alice#exit#1`. The user part of every outbox key is therefore escaped (`user_key_part`): `%` →
`%25`, `#` → `%23`, so it holds no `#` and the parts after it are read without guessing. An id with neither
character (the usual case) is unchanged, and so are the keys already written for it.

The counters table also holds the engine's own records: `meta#<rule_id>` (a rule's activation) and
`_sweep#state` (the sweeper's progress). `_` cannot start a RuleId; `meta` is a reserved RuleId (the sheet
rejects it), so no counter key `meta#<user>` exists.
"""

from __future__ import annotations

META_PREFIX = "meta#"
RESERVED_RULE_IDS = frozenset({META_PREFIX.rstrip("#")})
"""Rule ids the sheet refuses because their counter keys would be the engine's own records."""
EXIT_MARK = "exit"


def counter_key(rule_id: str, user_id: str) -> str:
    return f"{rule_id}#{user_id}"


def meta_key(rule_id: str) -> str:
    return f"{META_PREFIX}{rule_id}"


def user_key_part(user_id: str) -> str:
    """The user id as an outbox key holds it: `%` and `#` escaped, so the part contains no `#`."""
    return user_id.replace("%", "%25").replace("#", "%23")


def change_prefix(rule_id: str, user_id: str) -> str:
    """What every outbox key of this (rule, user) starts with, and no other (rule, user)'s does."""
    return f"{rule_id}#{user_key_part(user_id)}#"


def qualification_key(rule_id: str, user_id: str, sequence: int) -> str:
    """Qualification `sequence` (the counter's `fired` after it) of this (rule, user)."""
    return f"{change_prefix(rule_id, user_id)}{sequence}"


def exit_key(rule_id: str, user_id: str, sequence: int) -> str:
    """The exit ending qualification `sequence`."""
    return f"{change_prefix(rule_id, user_id)}{EXIT_MARK}#{sequence}"


def legacy_change_prefix(rule_id: str, user_id: str) -> str | None:
    """The prefix keys had before the user part was escaped, when it differs from today's (the user id holds
    `%` or `#`); None otherwise. Entries written then live on for the outbox's retention (and in the
    dead-letter queue), so they are still read as this (rule, user)'s changes — the entry's own `rule_id` and
    `user_id` settle the ambiguity such a key has."""
    legacy = f"{rule_id}#{user_id}#"
    return None if legacy == change_prefix(rule_id, user_id) else legacy


def legacy_change_key(rule_id: str, user_id: str, sequence: int, is_exit: bool) -> str | None:
    """The key the same change had before escaping, when it differs from today's."""
    prefix = legacy_change_prefix(rule_id, user_id)
    if prefix is None:
        return None
    return f"{prefix}{EXIT_MARK}#{sequence}" if is_exit else f"{prefix}{sequence}"


def parse_change_key(key: str, rule_id: str, user_id: str) -> tuple[int, bool] | None:
    """(sequence, is_exit) of one of this (rule, user)'s change keys, today's or the legacy form; None for
    any other key."""
    for prefix in (change_prefix(rule_id, user_id), legacy_change_prefix(rule_id, user_id)):
        if prefix is not None and key.startswith(prefix):
            parsed = _parse_rest(key[len(prefix):])
            if parsed is not None:
                return parsed
    return None


def _parse_rest(rest: str) -> tuple[int, bool] | None:
    exit_prefix = f"{EXIT_MARK}#"
    is_exit = rest.startswith(exit_prefix)
    number = rest[len(exit_prefix):] if is_exit else rest
    return (int(number), is_exit) if number.isascii() and number.isdigit() else None
