"""Window-rule sweeper: a scheduled Lambda that takes out the users who no longer meet a window rule.

A qualified window-rule user's counter carries `sweep_day`, the first day on which, without new events, the
rule stops holding (the store keeps it current on every write). Each run Queries the sparse sweep index —
never a Scan — for every day from the last completed sweep to today, and for each user:

- if the rule no longer holds over the window ending today: the user exits (`apply_exit`) and an outbox
  entry clears the attribute (change `exited`, value None), in one conditional transaction;
- otherwise (new events arrived, or an `equal` rule holds again) `sweep_day` moves to the next exit day.

Catch-up: the sweeper records its progress in the counters table (`SWEEP_STATE_KEY`: how far the catch-up got,
the days to retry, and the window rules it has seen). After an outage of any length the next runs query every
day since, `MAX_DAYS_PER_RUN` days and `MAX_ITEMS_PER_RUN` items a run, resuming where the item budget stopped
them; the day before today is always queried again (a write racing midnight on a slower clock lands there). A
day with a failed write does not hold the others back — the index is queried by exact day, so stopping there
would leave every later day's users in — it is recorded among the retry days (at most `MAX_RETRY_DAYS`) and
queried again by each run until all its items are written.

A window rule removed from the sheet: its users' attributes are cleared. The state keeps every window rule's
definition, so when one leaves the sheet the sweeper queries the index from the catch-up start to the furthest
day an exit of that rule can be due (today + its window), exits each of that rule's qualified users with the
usual exit entry, and forgets the rule once that pass completes. Counters of rules the sweeper never saw
(removed before this state existed) are left alone (`SweepRuleRemoved`); docs/rules.md says how to clear them.

Run every 15 minutes (`SWEEP_SCHEDULE`), a user leaves within the hour of dropping below the condition (days turn
at 00:00 UTC). Exits are the one place window time is the processing clock: there is no event to take an arrival
from (docs/rules.md, "Time").

Environment (read once, by `SweeperSettings.from_env`): COUNTERS_TABLE, OUTBOX_TABLE, RULES_BUCKET, RULES_KEY
(required); RULES_MAX_AGE_SECONDS (60), COUNTER_TTL_DAYS (400), POWERTOOLS_METRICS_NAMESPACE (`EngagementLoop`).
Semantics: docs/rules.md.
"""

from __future__ import annotations

import enum
import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Callable, Iterable, Mapping

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.rules.aggregator import publish_counts
from functions.rules.evaluate import apply_exit, event_day, exit_check
from functions.rules.outbox import Change, OutboxEntry, exit_key
from functions.rules.rules_source import Env, RulesSettings, RulesSource, S3RulesSource
from functions.rules.model import ActionKind, Rule, RuleSet, RuleType
from functions.rules.counter_item import CounterItem, Write
from functions.rules.store import CounterStore, StoreSettings

logger = Logger()

SWEEP_STATE_KEY = "_sweep#state"
"""The sweeper's progress item in the counters table. A rule id starts with a letter or digit (sheet.py), so no
counter key (`<rule_id>#<user_id>`) can be this one."""
FIRST_RUN_LOOKBACK_DAYS = 31
"""Without a recorded sweep (the first run), how many days before today are queried."""
MAX_DAYS_PER_RUN = 62
"""Catch-up days queried per run at most (today is always queried too); the rest waits for the next run."""
MAX_ITEMS_PER_RUN = 20_000
"""Swept items per run at most; a day cut short is queried again by the next run."""
OVERLAP_DAYS = 1
MAX_RETRY_DAYS = 62
"""Days with a failed write kept for retrying at most; past it the oldest are given up (logged, counted)."""


class SweepCount(str, enum.Enum):
    """What a sweep counts; each is a CloudWatch metric."""

    CHECKED = "SweepChecked"
    EXITED = "SweepExited"
    RESCHEDULED = "SweepRescheduled"
    RULE_REMOVED = "SweepRuleRemoved"
    REMOVED_RULE_EXITED = "SweepRemovedRuleExited"
    DAYS = "SweepDaysQueried"
    FAILED = "SweepFailed"
    """Items whose write failed this run (their day is retried by the next runs)."""
    RETRY_DAYS = "SweepRetryDays"
    """Days left to retry after this run (a day whose item keeps failing stays here)."""
    RETRY_DAYS_DROPPED = "SweepRetryDaysDropped"
    """Retry days given up this run (more than `MAX_RETRY_DAYS` pending): their failing users stay in."""


class _DayOutcome(enum.Enum):
    COMPLETE = "complete"
    FAILED = "failed"
    """Every item was looked at, and at least one write failed."""
    CUT = "cut"
    """The run's item budget ran out in this day."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SweeperSettings:
    """The function's configuration, parsed once from its environment."""

    store: StoreSettings
    """COUNTERS_TABLE, OUTBOX_TABLE (required), COUNTER_TTL_DAYS (default 400)."""
    rules: RulesSettings
    """RULES_BUCKET, RULES_KEY (required), RULES_MAX_AGE_SECONDS (default 60)."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """POWERTOOLS_METRICS_NAMESPACE, default `EngagementLoop`."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SweeperSettings:
        env = Env(environ)
        settings = cls(store=StoreSettings.read(env), rules=RulesSettings.read(env),
                       metrics_namespace=env.text("POWERTOOLS_METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE))
        env.check("rules sweeper")
        return settings


def exit_entry(rule: Rule, item: CounterItem, *, now_ms: int) -> OutboxEntry:
    """The action clearing the user's attribute; keyed by the qualification it ends, so a retry rewrites it."""
    return OutboxEntry(key=exit_key(rule.rule_id, item.user_id, item.state.fired), change=Change.EXITED,
                       rule_id=rule.rule_id, user_id=item.user_id, action=ActionKind.ATTRIBUTE, name=rule.action_name,
                       value=None, event_id="", event_time_ms=now_ms, created_ms=now_ms)


def sweep_step(rule: Rule, today: date, now_ms: int) -> Callable[[CounterItem], Write | None]:
    """The store step for one swept item: exit the user, or move `sweep_day` on."""

    def step(item: CounterItem) -> Write | None:
        if item.sweep_day is None or item.sweep_day > today:
            return None  # re-read after a conflict: the aggregator has rescheduled it meanwhile
        if exit_check(rule, item.state, today):
            return Write(state=apply_exit(rule, item.state, today), outbox=(exit_entry(rule, item, now_ms=now_ms),))
        return Write(state=item.state, sweep_from=today + timedelta(days=1))

    return step


def removal_step(rule: Rule, today: date, now_ms: int) -> Callable[[CounterItem], Write | None]:
    """The store step for a user of a window rule that left the sheet: exit them if they hold its attribute."""

    def step(item: CounterItem) -> Write | None:
        if not item.state.qualified:
            return None
        return Write(state=apply_exit(rule, item.state, today), outbox=(exit_entry(rule, item, now_ms=now_ms),))

    return step


@dataclass(kw_only=True)
class SweepState:
    """The sweeper's progress (`SWEEP_STATE_KEY`): how far the catch-up got (`last_completed`: every day up to it
    was swept, save the `retry_days`, whose failed items are queried again), and the window rules seen."""

    last_completed: date | None = None
    retry_days: frozenset[date] = frozenset()
    window_rules: dict[str, Rule] = field(default_factory=dict)
    version: int = 0

    @classmethod
    def load(cls, store: CounterStore) -> SweepState:
        record = store.read_record(SWEEP_STATE_KEY)
        if record is None:
            return cls()
        last = record.get("last_completed")
        rules = {rule_id: Rule.from_dict(json.loads(definition))
                 for rule_id, definition in record.get("window_rules", {}).items()}
        return cls(last_completed=date.fromisoformat(last) if last else None, window_rules=rules,
                   retry_days=frozenset(date.fromisoformat(day) for day in record.get("retry_days", ())),
                   version=int(record["version"]))

    def save(self, store: CounterStore) -> bool:
        record = {"last_completed": self.last_completed.isoformat() if self.last_completed else None,
                  "retry_days": sorted(day.isoformat() for day in self.retry_days),
                  # JSON text: DynamoDB would hand numbers back as Decimals
                  "window_rules": {rule_id: json.dumps(rule.to_dict(), sort_keys=True)
                                   for rule_id, rule in self.window_rules.items()}}
        return store.write_record(SWEEP_STATE_KEY, record, version=self.version)


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


class _Run:
    """One sweep: counts, the item budget, and which days were swept completely."""

    def __init__(self, store: CounterStore, today: date, max_items: int) -> None:
        self.store, self.today, self.now_ms = store, today, store.now_ms()
        self.counts: Counter[SweepCount] = Counter()
        self.budget = max_items
        self.failed_rules: set[str] = set()

    def day(self, day: date, current: Mapping[str, Rule], removed: Mapping[str, Rule], *,
            rule_id: str | None = None) -> _DayOutcome:
        """Sweep one day's index entries (only `rule_id`'s when given)."""
        self.counts[SweepCount.DAYS] += 1
        outcome = _DayOutcome.COMPLETE
        for item in self.store.due_for_sweep(day, rule_id=rule_id):
            if self.budget <= 0:
                return _DayOutcome.CUT
            self.budget -= 1
            self.counts[SweepCount.CHECKED] += 1
            if item.rule_id in current:
                rule, step, done = current[item.rule_id], sweep_step, None
            elif item.rule_id in removed:
                rule, step, done = removed[item.rule_id], removal_step, SweepCount.REMOVED_RULE_EXITED
            else:
                self.counts[SweepCount.RULE_REMOVED] += 1
                continue
            try:
                write = self.store.update(rule, item.user_id, step(rule, self.today, self.now_ms), item=item)
            except Exception:  # noqa: BLE001 - one stuck item must not stop the sweep; the next run retries it
                logger.exception("sweep write failed", extra={"rule_id": rule.rule_id})
                self.counts[SweepCount.FAILED] += 1
                self.failed_rules.add(rule.rule_id)
                outcome = _DayOutcome.FAILED
                continue
            if write is not None:
                self.counts[done or (SweepCount.EXITED if write.outbox else SweepCount.RESCHEDULED)] += 1
        return outcome


def sweep(store: CounterStore, rules: RuleSet | Iterable[Rule], *, today: date, max_days: int = MAX_DAYS_PER_RUN,
          max_items: int = MAX_ITEMS_PER_RUN) -> Counter[SweepCount]:
    """Sweep the retry days, then every day from the last completed sweep (or `FIRST_RUN_LOOKBACK_DAYS` back) to
    `today`, at most `max_days` of them besides today, and clear the users of window rules that left the sheet;
    record how far it got and which days to retry."""
    state = SweepState.load(store)
    current = {rule.rule_id: rule for rule in rules}
    windows = {rule_id: rule for rule_id, rule in current.items() if rule.rule_type is RuleType.WINDOW}
    removed = {rule_id: rule for rule_id, rule in state.window_rules.items() if rule_id not in current}
    if state.last_completed is None:
        start = today - timedelta(days=FIRST_RUN_LOOKBACK_DAYS)
    else:
        start = min(state.last_completed + timedelta(days=1 - OVERLAP_DAYS), today)
    catch_up = _days(start, min(today - timedelta(days=1), start + timedelta(days=max_days - 1)))
    run = _Run(store, today, max_items)

    # A retry day from `start` on is in this run's catch-up anyway (or, if the budget stops it, in a later one's).
    retry = {day for day in state.retry_days if day < start
             and run.day(day, current, removed) is not _DayOutcome.COMPLETE}
    completed = state.last_completed
    for day in catch_up:
        outcome = run.day(day, current, removed)
        if outcome is _DayOutcome.CUT:
            break  # the next run resumes here
        if outcome is _DayOutcome.FAILED:
            retry.add(day)  # and go on: later days' users must not wait for this day's stuck item
        completed = day if completed is None else max(completed, day)
    run.day(today, current, removed)  # today's failures: today is in the next runs' catch-up

    finished: set[str] = set()
    for rule_id, rule in removed.items():
        assert rule.window_days is not None
        # An exit of this rule is due at most its window after today; earlier days were the catch-up's.
        outcomes = [run.day(day, {}, {rule_id: rule}, rule_id=rule_id)
                    for day in _days(start, today + timedelta(days=rule.window_days + 1))]
        # Forgotten only when none of its users is left: not in this pass, nor on a retry day.
        if rule_id not in run.failed_rules and all(outcome is _DayOutcome.COMPLETE for outcome in outcomes):
            finished.add(rule_id)
            logger.info("window rule left the sheet: its users are cleared", extra={"rule_id": rule_id})

    if len(retry) > MAX_RETRY_DAYS:
        dropped = sorted(retry)[:len(retry) - MAX_RETRY_DAYS]
        logger.error("sweep retry days given up: their failing users stay qualified",
                     extra={"days": [day.isoformat() for day in dropped]})
        run.counts[SweepCount.RETRY_DAYS_DROPPED] += len(dropped)
        retry.difference_update(dropped)
    if retry:
        run.counts[SweepCount.RETRY_DAYS] = len(retry)
    state.last_completed, state.retry_days = completed, frozenset(retry)
    state.window_rules = {**{k: v for k, v in removed.items() if k not in finished}, **windows}
    if not state.save(store):
        logger.warning("another sweep saved its progress first; this run's is dropped (the next run redoes it)")
    return run.counts


_CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


@functools.cache
def _settings() -> SweeperSettings:
    return SweeperSettings.from_env()


@functools.cache
def _rules_source() -> RulesSource:
    return S3RulesSource(boto3.client("s3", config=_CLIENT_CONFIG), _settings().rules)


@functools.cache
def _store() -> CounterStore:
    return CounterStore(boto3.client("dynamodb", config=_CLIENT_CONFIG), _settings().store)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    """Lambda entry point (`functions.rules.sweeper.lambda_handler`), on an EventBridge schedule."""
    store = _store()
    counts = sweep(store, _rules_source().current(), today=event_day(store.now_ms()))
    publish_counts(counts, SweepCount, _settings().metrics_namespace)
    if counts[SweepCount.FAILED]:
        # Fail the invocation so the errors alarm sees it; everything else was written.
        raise RuntimeError(f"{counts[SweepCount.FAILED]} swept items could not be written; the next run retries")
    return {count.value: counts[count] for count in SweepCount}
