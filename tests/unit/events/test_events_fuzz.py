"""Property: whatever the input, normalise returns an event or a reason — it never raises.

Besides arbitrary bytes and JSON, records are built around each source's marker and mutated from the
documented samples, so the fuzzing reaches deep into the adapters rather than stopping at detection.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.normalise import normalise

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SAMPLES = [
    json.loads(path.read_text())
    for source in ("pinpoint", "ses")
    for path in sorted((FIXTURES / source).glob("*.json"))
]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from([1_500_000_000_000, "2026-11-20T09:00:00Z", "Permanent", "Click", "+14155550123", "a@b.co"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
modes = st.sampled_from(list(IdentityMode))
arrivals = st.none() | st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000)


def check(result: Any) -> None:
    assert isinstance(result, (CanonicalEvent, Rejected))
    if isinstance(result, Rejected):
        assert isinstance(result.reason, str) and result.reason
        return
    # An accepted event must survive everything downstream does with it.
    line = result.to_json().encode("utf-8")
    assert CanonicalEvent.from_json_dict(json.loads(line)) == result
    datetime.strptime(result.arrival_date, "%Y-%m-%d").replace(tzinfo=timezone.utc)


def mutate(record: Any, path: list[int], value: Any) -> Any:
    """Replace (or delete, for a None value at a dict key) the node picked by walking `path` indices."""
    if not path or not isinstance(record, (dict, list)) or not record:
        return value
    keys = list(record) if isinstance(record, dict) else list(range(len(record)))
    key = keys[path[0] % len(keys)]
    copy = dict(record) if isinstance(record, dict) else list(record)
    copy[key] = mutate(record[key], path[1:], value)
    return copy


@settings(max_examples=300, deadline=None, database=None)
@given(raw=st.binary(max_size=512), mode=modes)
def test_arbitrary_bytes(raw, mode):
    check(normalise(raw, identity_mode=mode))


@settings(max_examples=300, deadline=None, database=None)
@given(value=json_values, mode=modes, arrival=arrivals)
def test_arbitrary_json(value, mode, arrival):
    check(normalise(json.dumps(value), identity_mode=mode, arrival_time_ms=arrival))


@settings(max_examples=300, deadline=None, database=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
                "event_type", "event_time_ms", "event_time", "user_id", "event_id", "endpoint_id", "campaign_id",
                "item_id", "attributes", "metrics",
            ]
        ),
        json_values,
    ),
    mode=modes,
    arrival=arrivals,
)
def test_app_shaped_json(fields, mode, arrival):
    raw = json.dumps({"schema": "engagement-loop/v1", **fields})
    check(normalise(raw, identity_mode=mode, arrival_time_ms=arrival))


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sample=st.sampled_from(SAMPLES),
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=6),
    value=json_values,
    mode=modes,
)
def test_mutated_samples(sample, path, value, mode):
    check(normalise(json.dumps(mutate(sample, path, value)), identity_mode=mode))
