"""The value checks the stack config parsers share (`components.config` and `components.connect_config`).

A check takes the raw value and returns the parsed one, or raises `InvalidValue` with what was expected; the
config reader adds the key and the value (never a secret's) to the message.
"""

from __future__ import annotations

import enum
import re
from typing import Callable, TypeVar

_E = TypeVar("_E", bound=enum.Enum)


class InvalidValue(ValueError):
    """One key's problem: `withheld` is what to say instead when the key is secret and the message would show
    (part of) its value."""

    def __init__(self, message: str, *, withheld: str | None = None):
        super().__init__(message)
        self.withheld = withheld


def optional(pattern: re.Pattern[str], expected: str, *, max_chars: int | None = None) -> Callable[[str], str | None]:
    """Empty → None; else a value matching `pattern` (at most `max_chars`, checked before the pattern runs)."""
    def check(value: str) -> str | None:
        if not value:
            return None
        if (max_chars is not None and len(value) > max_chars) or not pattern.match(value):
            raise InvalidValue(f"expected {expected}")
        return value
    return check


def member(enum_type: type[_E]) -> Callable[[str], _E]:
    """One of `enum_type`'s values, as its member."""
    def check(value: str) -> _E:
        try:
            return enum_type(value)
        except ValueError:
            raise InvalidValue("expected one of " + ", ".join(m.value for m in enum_type)) from None
    return check
