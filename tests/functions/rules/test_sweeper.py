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
from functions.rules.sweeper import SWEEP_STATE_KEY, SweepCount, SweeperSettings, SweepState, lambda_handler, sweep
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
    assert counts == Counter({SweepCount.CHECKED: 1, SweepCount.EXITED: 1, SweepCount.DAYS: 3})

    item = aws.counter("active", "u1")
    assert not item.state.qualified and item.sweep_day is None and item.state.window_end == date(2026, 11, 23)
    entry = aws.outbox()["active#u1#exit#1"]
    assert (entry.change, entry.action, entry.name, entry.value) == (Change.EXITED, ActionKind.ATTRIBUTE, "visit", None)
    assert entry.created_ms == ms("2026-11-23T00:20:00")
    # Run 1 (no progress recorded): 31 days back and today; run 2: from its last completed day (Nov 21) on.
    assert aws.calls == Counter({"Query": 32 + 3, "GetItem": 2, "PutItem": 2, "TransactWriteItems": 1})
    assert "Scan" not in aws.calls


def test_a_user_who_still_qualifies_is_rescheduled_and_can_exit_and_qualify_again(aws, clock):
    rule = window(operator=Operator.EQUAL, target=1)
    store = aws.store(clock)
    clock.set("2026-11-21T12:00:00")
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-21T09:00:00"))
    assert aws.counter("active", "u1").sweep_day == date(2026, 11, 21)  # 2 ≠ 1 already

    clock.set("2026-11-23T01:00:00")  # missed two days of runs; over Nov 21–23 the count is 1 again
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 23))
    assert counts == Counter({SweepCount.CHECKED: 1, SweepCount.RESCHEDULED: 1, SweepCount.DAYS: 32})
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
    assert counts == Counter({SweepCount.CHECKED: 1, SweepCount.RULE_REMOVED: 1, SweepCount.DAYS: 32})
    assert aws.counter("gone", "u1") == before  # never seen by the sweeper: its definition is unknown


def test_an_index_entry_older_than_the_item_is_re_read_and_left_to_the_newer_state(aws, clock, monkeypatch):
    rule = window()
    store = aws.store(clock)
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    (stale,) = store.due_for_sweep(date(2026, 11, 23))
    clock.set("2026-11-22T12:00:00")
    store.apply(rule, "u1", visits("u1", "2026-11-22T09:00:00", "2026-11-22T10:00:00", first=2))  # → Nov 25
    monkeypatch.setattr(store, "due_for_sweep", lambda day, **_: iter([stale] if day == date(2026, 11, 23) else []))
    clock.set("2026-11-23T00:20:00")
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 23))
    assert counts == Counter({SweepCount.CHECKED: 1, SweepCount.DAYS: 32})
    item = aws.counter("active", "u1")
    assert item.state.qualified and item.sweep_day == date(2026, 11, 25)
    assert not any(":exit" in key or "#exit#" in key for key in aws.outbox())


def test_the_handler_sweeps_today_with_the_published_rules(aws, clock, monkeypatch, context, capsys):
    rule = window()
    aws.publish(RuleSet((rule,)))
    store = aws.store(clock)
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    clock.set("2026-11-21T12:00:00")
    store.apply(rule, "u2", visits("u2", "2026-11-21T09:00:00", "2026-11-21T10:00:00", first=2))
    clock.set("2026-11-23T00:05:00")
    monkeypatch.setattr(sweeper, "_store", lambda: store)
    result = lambda_handler({"source": "aws.scheduler"}, context)
    assert result == {"SweepChecked": 1, "SweepExited": 1, "SweepRescheduled": 0, "SweepRuleRemoved": 0,
                      "SweepRemovedRuleExited": 0, "SweepDaysQueried": 32, "SweepFailed": 0, "SweepRetryDays": 0,
                      "SweepRetryDaysDropped": 0}
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


def test_a_stuck_item_does_not_hold_back_later_days_and_its_day_is_retried_until_it_is_written(
        aws, clock, monkeypatch):
    # Review finding A: a write that kept failing stopped the catch-up at its day, and the index is queried by
    # exact day, so the users due on every later day stayed in while it failed.
    rule = window()
    store = aws.store(clock)
    SweepState(last_completed=date(2026, 11, 21)).save(store)
    clock.set("2026-11-20T12:00:00")
    store.apply(rule, "stuck", visits("stuck", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))     # due Nov 23
    clock.set("2026-11-21T12:00:00")
    store.apply(rule, "u2", visits("u2", "2026-11-21T09:00:00", "2026-11-21T10:00:00", first=2))  # due Nov 24
    real_update = store.update

    def update(rule: Rule, user_id: str, step: Any, **kwargs: Any):
        if user_id == "stuck":
            raise RuntimeError("this item cannot be written")
        return real_update(rule, user_id, step, **kwargs)

    monkeypatch.setattr(store, "update", update)
    clock.set("2026-11-27T01:00:00")  # the sweeper was down Nov 22-26
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 27))
    assert counts[SweepCount.EXITED] == 1 and counts[SweepCount.FAILED] == 1 and counts[SweepCount.RETRY_DAYS] == 1
    assert not aws.counter("active", "u2").state.qualified  # exited on time, past the stuck day
    progress = SweepState.load(store)
    assert progress.last_completed == date(2026, 11, 26) and progress.retry_days == {date(2026, 11, 23)}

    for day in (28, 29):  # still failing: retried, and still recorded
        clock.set(f"2026-11-{day}T01:00:00")
        counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, day))
        assert counts[SweepCount.FAILED] == 1 and SweepState.load(store).retry_days == {date(2026, 11, 23)}
    assert counts[SweepCount.DAYS] == 1 + 2 + 1  # the retry day, Nov 27-28, today

    monkeypatch.setattr(store, "update", real_update)  # it can be written again
    clock.set("2026-11-30T01:00:00")
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 30))
    assert counts[SweepCount.EXITED] == 1 and counts[SweepCount.FAILED] == 0 and counts[SweepCount.RETRY_DAYS] == 0
    assert not aws.counter("active", "stuck").state.qualified and "active#stuck#exit#1" in aws.outbox()
    assert SweepState.load(store).retry_days == frozenset()


def test_retry_days_are_bounded_and_the_oldest_are_given_up(aws, clock, monkeypatch):
    rule = window()
    store = aws.store(clock)
    monkeypatch.setattr(sweeper, "MAX_RETRY_DAYS", 2)
    SweepState(last_completed=date(2026, 11, 19)).save(store)
    for day in (20, 21, 22):  # one user due on each of Nov 23, 24, 25
        clock.set(f"2026-11-{day}T12:00:00")
        store.apply(rule, f"u{day}", visits(f"u{day}", f"2026-11-{day}T09:00:00", f"2026-11-{day}T10:00:00",
                                           first=day))

    def update(*_: Any, **__: Any):
        raise RuntimeError("throttled")

    monkeypatch.setattr(store, "update", update)
    clock.set("2026-11-27T01:00:00")
    counts = sweep(store, RuleSet((rule,)), today=date(2026, 11, 27))
    assert counts[SweepCount.FAILED] == 3 and counts[SweepCount.RETRY_DAYS_DROPPED] == 1
    assert SweepState.load(store).retry_days == {date(2026, 11, 24), date(2026, 11, 25)}


def test_a_removed_rule_whose_user_failed_on_a_retry_day_is_not_forgotten(aws, clock, monkeypatch):
    gone, kept = window("gone"), window("kept")
    store = aws.store(clock)
    store.apply(gone, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))  # due Nov 23
    sweep(store, RuleSet((gone, kept)), today=date(2026, 11, 20))
    real_update = store.update

    def update(rule: Rule, user_id: str, step: Any, **kwargs: Any):
        if rule.rule_id == "gone":
            raise RuntimeError("throttled")
        return real_update(rule, user_id, step, **kwargs)

    monkeypatch.setattr(store, "update", update)
    clock.set("2026-11-21T08:00:00")
    assert sweep(store, RuleSet((kept,)), today=date(2026, 11, 21))[SweepCount.FAILED] >= 1
    assert "gone" in SweepState.load(store).window_rules
    monkeypatch.setattr(store, "update", real_update)
    assert sweep(store, RuleSet((kept,)), today=date(2026, 11, 21))[SweepCount.REMOVED_RULE_EXITED] == 1
    assert set(SweepState.load(store).window_rules) == {"kept"}


def test_after_an_outage_longer_than_two_days_the_sweeper_catches_up_from_its_last_completed_day(
        aws, clock, monkeypatch, context):
    rule = window()
    aws.publish(RuleSet((rule,)))
    store = aws.store(clock)
    monkeypatch.setattr(sweeper, "_store", lambda: store)
    clock.set("2026-11-19T12:00:00")
    lambda_handler({}, context)  # the last run before the outage
    assert SweepState.load(store).last_completed == date(2026, 11, 18)

    clock.set("2026-11-20T12:00:00")
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))  # due Nov 23
    clock.set("2026-11-28T12:00:00")  # the sweeper was down from Nov 19 to Nov 28
    result = lambda_handler({}, context)
    assert result["SweepExited"] == 1 and result["SweepDaysQueried"] == 10 + 1  # Nov 18 … 27, and today
    assert not aws.counter("active", "u1").state.qualified
    assert "active#u1#exit#1" in aws.outbox()
    assert SweepState.load(store).last_completed == date(2026, 11, 27)


def test_a_long_catch_up_is_spread_over_runs_and_resumes_where_it_stopped(aws, clock):
    rule = window()
    store = aws.store(clock)
    SweepState(last_completed=date(2026, 10, 1)).save(store)
    store.apply(rule, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))
    clock.set("2026-11-28T12:00:00")
    first = sweep(store, RuleSet((rule,)), today=date(2026, 11, 28), max_days=30)
    assert first[SweepCount.DAYS] == 31 and first[SweepCount.EXITED] == 0
    assert SweepState.load(store).last_completed == date(2026, 10, 30)
    second = sweep(store, RuleSet((rule,)), today=date(2026, 11, 28), max_days=30)
    assert second[SweepCount.EXITED] == 1  # Nov 23 was in this run's 30 days
    assert SweepState.load(store).last_completed == date(2026, 11, 27)

    # An item budget cuts a day short; the day is not completed, so the next run queries it again.
    for user in ("u2", "u3"):
        clock.set("2026-11-29T12:00:00")
        store.apply(rule, user, visits(user, "2026-11-29T09:00:00", "2026-11-29T10:00:00", first=3))
    clock.set("2026-12-02T12:00:00")
    assert sweep(store, RuleSet((rule,)), today=date(2026, 12, 5), max_items=1)[SweepCount.EXITED] == 1
    assert SweepState.load(store).last_completed == date(2026, 12, 1)
    assert sweep(store, RuleSet((rule,)), today=date(2026, 12, 5))[SweepCount.EXITED] == 1


def test_the_users_of_a_window_rule_removed_from_the_sheet_are_exited_with_the_usual_entry(aws, clock):
    gone, kept = window("gone"), window("kept")
    store = aws.store(clock)
    store.apply(gone, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00"))  # due Nov 23
    store.apply(kept, "u1", visits("u1", "2026-11-20T09:00:00", "2026-11-20T10:00:00", first=2))
    sweep(store, RuleSet((gone, kept)), today=date(2026, 11, 20))  # the sweeper has seen both
    clock.set("2026-11-21T08:00:00")
    counts = sweep(store, RuleSet((kept,)), today=date(2026, 11, 21))  # "gone" left the sheet
    assert counts[SweepCount.REMOVED_RULE_EXITED] == 1 and counts[SweepCount.FAILED] == 0
    entry = aws.outbox()["gone#u1#exit#1"]
    assert (entry.change, entry.name, entry.value) == (Change.EXITED, "visit", None)
    assert not aws.counter("gone", "u1").state.qualified and aws.counter("gone", "u1").sweep_day is None
    assert aws.counter("kept", "u1").state.qualified  # the rule still in the sheet is untouched
    assert set(SweepState.load(store).window_rules) == {"kept"}  # done: forgotten
    assert sweep(store, RuleSet((kept,)), today=date(2026, 11, 21))[SweepCount.REMOVED_RULE_EXITED] == 0
    assert store.read_record(SWEEP_STATE_KEY)["last_completed"] == "2026-11-20"


def test_settings_name_every_missing_variable():
    with pytest.raises(ValueError) as error:
        SweeperSettings.from_env({"COUNTER_TTL_DAYS": "0"})
    for name in ("COUNTERS_TABLE", "OUTBOX_TABLE", "RULES_BUCKET", "RULES_KEY", "COUNTER_TTL_DAYS"):
        assert name in str(error.value)
