"""Helpers for the rules tests: sheets built from rows, canonical events built from a few fields."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from functions.events.canonical import CanonicalEvent, EventSource

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "rules"

SEED_COLUMNS = [
    "Key", "RuleType", "EventName", "AttributeName", "AttributeValue", "Operator-C", "Target-C",
    "Operator-V", "Target-V", "ResetWhenReachTarget", "StartDate", "FinishDate",
]  # fmt: skip
EXTENSION_COLUMNS = ["RuleId", "MetricName", "Window", "ActionName"]

DEFAULT_ROW = {
    "Key": "1",
    "RuleType": "aggregator",
    "EventName": "purchase",
    "AttributeName": "na",
    "AttributeValue": "na",
    "Operator-C": "at_least",
    "Target-C": "3",
    "Operator-V": "na",
    "Target-V": "999",
    "ResetWhenReachTarget": "no",
    "StartDate": "9999-99-99",
    "FinishDate": "9999-99-99",
}


def make_sheet(*rows: dict[str, str], columns: list[str] | None = None) -> str:
    """CSV text with `columns` (default: seed + extensions); each row overrides the default row."""
    columns = columns or SEED_COLUMNS + EXTENSION_COLUMNS
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = {**DEFAULT_ROW, **row}
        writer.writerow([cells.get(column, "") for column in columns])
    return out.getvalue()


def ms(text: str) -> int:
    """Unix ms of an ISO UTC time like `2026-11-01T00:00:00.000`."""
    moment = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


def make_event(
    event_id: str,
    event_type: str = "purchase",
    *,
    user: str | None = "u1",
    at: str | int = "2026-11-10T12:00:00",
    attributes: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
) -> CanonicalEvent:
    time_ms = at if isinstance(at, int) else ms(at)
    return CanonicalEvent(
        event_id=event_id,
        source=EventSource.APP,
        event_type=event_type,
        event_time_ms=time_ms,
        arrival_time_ms=time_ms,
        user_id=user,
        attributes=attributes or {},
        metrics=metrics or {},
    )


# Session scope: these are stateless factories, and hypothesis tests may take them too.
@pytest.fixture(scope="session")
def sheet() -> Callable[..., str]:
    return make_sheet


@pytest.fixture(scope="session")
def event() -> Callable[..., CanonicalEvent]:
    return make_event


@pytest.fixture(scope="session")
def to_ms() -> Callable[[str], int]:
    return ms


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
