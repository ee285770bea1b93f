"""Fixtures for the event adapter tests: the documented sample records under tests/fixtures."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

# What an address looks like anywhere in a serialised event: emails, E.164 numbers, IPv4 addresses, and
# the browser user agents the email samples carry.
_ADDRESS_PATTERNS = [
    re.compile(r"[^\s\"@<>]+@[^\s\"@<>]+\.[a-z]{2,}"),
    re.compile(r"\+[1-9][0-9]{6,14}"),
    re.compile(r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b"),
    re.compile(r"Mozilla/"),
]


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def load() -> Callable[[str, str], dict[str, Any]]:
    """load("pinpoint", "sms_success") → the record as a fresh dict (safe to mutate)."""

    def _load(source: str, name: str) -> dict[str, Any]:
        return json.loads((FIXTURES / source / f"{name}.json").read_text(encoding="utf-8"))

    return _load


@pytest.fixture
def addresses_in() -> Callable[[str], list[str]]:
    """addresses_in(text) → every email, phone number, IP or user agent found in it."""

    def _addresses_in(text: str) -> list[str]:
        return [match for pattern in _ADDRESS_PATTERNS for match in pattern.findall(text)]

    return _addresses_in
