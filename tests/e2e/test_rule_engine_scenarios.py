"""The production scenarios the RuleEngine must get right, as a user meets them: one raw file through
`python -m cli rules replay` (the real normaliser, aggregator and dispatcher on moto), fault-free and with
producer duplicates and failed batches injected — the results are the semantics of `docs/rules.md` and
`docs/events.md`, and the same with faults as without.

Scenarios (each user is one of them):
- `reader`: opens one email twice (Pinpoint gives both opens the message's send time as `event_timestamp`) —
  two opens, so `opened-twice` qualifies;
- `redelivered`: one open record delivered twice byte for byte — one open, so no qualification;
- `offline`: a purchase stamped 11 days before it reached the stream — too old for the 7-day window;
- `fast-clock`: a purchase stamped 20 days ahead — counts on its arrival day, not in the future date range;
- `retry-next-day`: an app event resent by its producer 20 hours later — counts once;
- a record with a 5,000-character user id — reported, and the run goes on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from cli.replay import ReplayOptions, ReplayResult, replay

PINPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "pinpoint"
HOUR_MS, DAY_MS = 3_600_000, 86_400_000
T0 = int(datetime(2026, 11, 20, 9, tzinfo=timezone.utc).timestamp() * 1000)

RULES = """RuleId,RuleType,EventName,AttributeName,AttributeValue,Operator-C,Target-C,Operator-V,Target-V,ResetWhenReachTarget,StartDate,FinishDate,Window
opened-twice,aggregator,_email.open,na,na,at_least,2,na,999,no,9999-99-99,9999-99-99,
weekly-buyer,window,purchase,na,na,at_least,1,na,999,no,9999-99-99,9999-99-99,7d
december-buyer,date,purchase,na,na,at_least,1,na,999,no,2026-12-01,2026-12-31,
november-buyer,date,purchase,na,na,at_least,1,na,999,no,2026-11-01,2026-11-30,
logins,aggregator,login,na,na,at_least,1,na,999,no,9999-99-99,9999-99-99,
"""


def _email_open(endpoint: str, arrival_ms: int) -> str:
    record = json.loads((PINPOINT / "email_open.json").read_text(encoding="utf-8"))
    record["client"]["client_id"] = endpoint
    record["event_timestamp"] = T0 - HOUR_MS  # the send time, the same for every event of the message
    record["arrival_timestamp"] = arrival_ms
    return json.dumps(record)


def _pinpoint_purchase(endpoint: str, event_ms: int, arrival_ms: int) -> str:
    record = json.loads((PINPOINT / "app_session_stop.json").read_text(encoding="utf-8"))
    record |= {"event_type": "purchase", "event_timestamp": event_ms, "arrival_timestamp": arrival_ms}
    record["client"]["client_id"] = endpoint
    record.pop("endpoint", None)
    return json.dumps(record)


def _app(event_type: str, user_id: str, event_ms: int, event_id: str) -> str:
    return json.dumps({"schema": "engagement-loop/v1", "event_type": event_type, "event_time_ms": event_ms,
                       "user_id": user_id, "event_id": event_id})


def _lines() -> list[str]:
    redelivered = _email_open("redelivered", T0 + 10 * 60_000)
    return [
        _email_open("reader", T0),
        _email_open("reader", T0 + 5 * 60_000),  # opened again five minutes later
        redelivered,
        redelivered,  # the same bytes again: a redelivery, not a second open
        _app("login", "retry-next-day", T0 + HOUR_MS, "login-1"),
        _pinpoint_purchase("offline", T0 + 2 * HOUR_MS - 11 * DAY_MS, T0 + 2 * HOUR_MS),
        _pinpoint_purchase("fast-clock", T0 + 3 * HOUR_MS + 20 * DAY_MS, T0 + 3 * HOUR_MS),
        _app("login", "x" * 5_000, T0 + 4 * HOUR_MS, "poison-1"),
        _app("login", "after-poison", T0 + 5 * HOUR_MS, "login-2"),
        _app("login", "retry-next-day", T0 + HOUR_MS, "login-1"),  # the producer's retry, 20 h later:
        _app("purchase", "late-buyer", T0 + 21 * HOUR_MS, "p-9"),  # (arrival is monotonic: it lands at 21 h)
    ]


def _run(**options) -> ReplayResult:
    return replay(RULES, _lines(), ReplayOptions(batch_size=3, **options))


@pytest.fixture(scope="module", params=["memory", "aws"])
def fault_free(request) -> ReplayResult:
    """Every scenario on both engines: the in-memory store and the real handlers on moto."""
    return _run(engine=request.param)


def test_both_engines_give_the_same_outcome():
    memory, aws = _run(engine="memory"), _run(engine="aws")
    assert memory.qualifications == aws.qualifications and memory.counters == aws.counters
    assert memory.stats["rejected"] == aws.stats["rejected"]
    assert memory.stats["without_user"] == aws.stats["without_user"]


def _qualified(result: ReplayResult, rule_id: str) -> set[str]:
    return {q["user_id"] for q in result.qualifications if q["rule_id"] == rule_id}


def _count(result: ReplayResult, rule_id: str, user_id: str) -> int | None:
    return next((c["count"] for c in result.counters if c["rule_id"] == rule_id and c["user_id"] == user_id), None)


def test_two_opens_of_one_email_are_two_events_and_a_redelivery_is_one(fault_free):
    assert _qualified(fault_free, "opened-twice") == {"reader"}
    assert _count(fault_free, "opened-twice", "reader") == 2
    assert _count(fault_free, "opened-twice", "redelivered") == 1


def test_an_event_older_than_the_window_when_it_arrives_counts_for_nothing(fault_free):
    assert "offline" not in _qualified(fault_free, "weekly-buyer")
    assert _count(fault_free, "weekly-buyer", "offline") in (None, 0)


def test_a_time_ahead_of_arrival_counts_as_the_arrival(fault_free):
    assert "fast-clock" not in _qualified(fault_free, "december-buyer")
    assert "fast-clock" in _qualified(fault_free, "november-buyer")
    assert "fast-clock" in _qualified(fault_free, "weekly-buyer")


def test_a_producer_retry_the_next_day_counts_once(fault_free):
    assert _count(fault_free, "logins", "retry-next-day") == 1


def test_a_poison_record_is_reported_and_everyone_else_is_counted(fault_free):
    assert fault_free.stats["rejected"]["count"] == 1
    assert any("user_id" in reason for reason in fault_free.stats["rejected"]["reasons"])
    assert _qualified(fault_free, "logins") == {"retry-next-day", "after-poison"}
    assert "late-buyer" in _qualified(fault_free, "weekly-buyer")


@pytest.mark.parametrize(("seed", "duplicate_rate", "fail_rate"), [(1, 0.3, 0.3), (2, 0.5, 0.5), (3, 0.2, 0.6)])
def test_faults_change_nothing(fault_free, seed, duplicate_rate, fail_rate):
    faulty = _run(engine="aws", duplicate_rate=duplicate_rate, fail_rate=fail_rate, seed=seed)
    assert faulty.qualifications == fault_free.qualifications
    assert faulty.counters == fault_free.counters
