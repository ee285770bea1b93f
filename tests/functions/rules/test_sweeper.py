"""The window-rule sweeper on moto: users who drop below a window rule exit on the day they do, through the
sparse sweep index (Query, never Scan), with an outbox entry clearing their attribute."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

import pytest

from functions.rules import sweeper
from functions.rules.outbox import Change
from functions.rules.model import ActionKind, CountCondition, Operator, Rule, RuleSet, RuleType
from functions.rules.sweeper import SweepCount, SweeperSettings, lambda_handler, sweep
from tests.functions.rules.conftest import make_deliveries, make_event, ms


def window(rule_id: str = "active", operator: Operator = Operator.AT_LEAST, target: int = 2) -> Rule:
    return Rule(rule_id=rule_id, rule_type=RuleType.WINDOW, event_name="visit", window_days=3,
                count_condition=CountCondition(operator, target))


def visits(user: str, *times: str, first: int = 1) -> list:
    return make_deliveries([make_event(f"{user}-{first}-{i}", "visit", user=user, at=at) for i, at in enumerate(times)],
                           first=first * 1_000_000)


def test_a_user_who_drops_below_exits_on_that_day_with_an_outbox_entry_and_no_scan(aws, clock):
    rule = window()
    store = aws.store(clock)
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    assert aws.counter("active", "u1").sweep_day == date(2026, 11, 23)
    aws.calls.clear()

    clock.set("2026-11-22T23:30:00")
    assert sweep(store, RuleSet((rule,)), today=date(2026, 11, 22))[SweepCount.CHECKED] == 0
    clock.set("2026-11-23T00:20:00")
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 23))
    assert counts == Counter({SweepCount.CHECKED: 1, SweepCount.EXITED: 1})

    item = aws.counter("active", "u1")
    assert not item.state.qualified and item.sweep_day is None and item.state.window_end == date(2026, 11, 23)
    entry = aws.outbox()["active#u1#exit#1"]
    assert (entry.change, entry.action, entry.name, entry.value) == (Change.EXITED, ActionKind.ATTRIBUTE, "visit", None)
    assert entry.created_ms == ms("2026-11-23T00:20:00")
    assert set(aws.calls) == {"Query", "TransactWriteItems"} and aws.calls["Query"] == 6  # 3 days × (1 + 1) runs


def test_a_user_who_still_qualifies_is_rescheduled_and_can_exit_and_qualify_again(aws, clock):
    rule = window(operator=Operator.EQUAL, target=1)
    store = aws.store(clock)
    clock.set("2026-11-21T12:00:00")
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-21T09:00:00"))
    assert aws.counter("active", "u1").sweep_day == date(2026, 11, 21)  # 2 ≠ 1 already

    clock.set("2026-11-23T01:00:00")  # missed two days of runs; over Nov 21–23 the count is 1 again
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 23))
    assert counts == Counter({SweepCount.CHECKED: 1, SweepCount.RESCHEDULED: 1})
    item = aws.counter("active", "u1")
    assert item.state.qualified and item.sweep_day == date(2026, 11, 24)

    clock.set("2026-11-24T01:00:00")
    assert sweep(store, RuleSet((rule,)), today=date(2026, 11, 24))[SweepCount.EXITED] == 1
    store.apply(rule, "u1", visits("u1", "2026-11-24T08:00:00", first=2))
    item = aws.counter("active", "u1")
    assert item.state.qualified and item.state.fired == 2
    assert {"active#u1#1", "active#u1#exit#1", "active#u1#2"} == set(aws.outbox())


def test_counters_of_a_rule_removed_from_the_sheet_are_left_alone(aws, clock):
    store = aws.store(clock)
    store.apply(window("gone"), "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    before = aws.counter("gone", "u1")
    counts = sweep(store, RuleSet((window(),)), today=date(2026, 11, 23))
    assert counts == Counter({SweepCount.CHECKED: 1, SweepCount.RULE_REMOVED: 1})
    assert aws.counter("gone", "u1") == before


def test_an_index_entry_older_than_the_item_is_re_read_and_left_to_the_newer_state(aws, clock, monkeypatch):
    rule = window()
    store = aws.store(clock)
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    (stale,) = store.due_for_sweep(date(2026, 11, 23))
    clock.set("2026-11-22T12:00:00")
    store.apply(rule, "u1", visits("u1", "2026-11-22T09:00:00", "2026-11-22T10:00:00", first=2))  # → Nov 25
    monkeypatch.setattr(store, "due_for_sweep", lambda day: iter([stale] if day == date(2026, 11, 23) else []))
    clock.set("2026-11-23T00:20:00")
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 23))
    assert counts == Counter({SweepCount.CHECKED: 1})
    item = aws.counter("active", "u1")
    assert item.state.qualified and item.sweep_day == date(2026, 11, 25)
    assert not any(":exit" in key or "#exit#" in key for key in aws.outbox())


def test_the_handler_sweeps_today_with_the_published_rules(aws, clock, monkeypatch, context, capsys):
    rule = window()
    aws.publish(RuleSet((rule,)))
    store = aws.store(clock)
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    store.apply(rule, "u2", visits("u2", "2026-11-21T09:00:00", "2026-11-21T10:00:00", first=2))
    clock.set("2026-11-23T00:05:00")
    monkeypatch.setattr(sweeper, "_store", lambda: store)
    result = lambda_handler({"source": "aws.scheduler"}, context)
    assert result == {"SweepChecked": 1, "SweepExited": 1, "SweepRescheduled": 0, "SweepRuleRemoved": 0,
                      "SweepFailed": 0}
    assert '"SweepExited"' in capsys.readouterr().out
    assert "Scan" not in aws.calls


def test_a_sweep_write_that_keeps_failing_fails_the_run_after_the_rest(aws, clock, monkeypatch, context):
    rule = window()
    aws.publish(RuleSet((rule,)))
    store = aws.store(clock)
    for user in ("u1", "u2"):
        store.apply(rule, user, visits(user, "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    clock.set("2026-11-23T00:05:00")
    real_update = store.update

    def update(rule: Rule, user_id: str, step: Any, **kwargs: Any):
        if user_id == "u1":
            raise RuntimeError("throttled")
        return real_update(rule, user_id, step, **kwargs)

    monkeypatch.setattr(store, "update", update)
    monkeypatch.setattr(sweeper, "_store", lambda: store)
    with pytest.raises(RuntimeError, match="1 swept items"):
        lambda_handler({}, context)
    assert not aws.counter("active", "u2").state.qualified


def test_settings_name_every_missing_variable():
    with pytest.raises(ValueError) as error:
        SweeperSettings.from_env({"COUNTER_TTL_DAYS": "0"})
    for name in ("COUNTERS_TABLE", "OUTBOX_TABLE", "RULES_BUCKET", "RULES_KEY", "COUNTER_TTL_DAYS"):
        assert name in str(error.value)
