"""Window-rule sweeper: a scheduled Lambda that takes out the users who no longer meet a window rule.

A qualified window-rule user's counter carries `sweep_day`, the first day on which, without new events, the
rule stops holding (the store keeps it current on every write). Each run Queries the sparse sweep index for
today and the two days before (catch-up after missed runs) — never a Scan — and for each user:

- if the rule no longer holds over the window ending today: the user exits (`apply_exit`) and an outbox
  entry clears the attribute (change `exited`, value None), in one conditional transaction;
- otherwise (new events arrived, or an `equal` rule holds again) `sweep_day` moves to the next exit day.

Run hourly, a user leaves within the hour of dropping below the condition (days turn at 00:00 UTC).
Counters of rules no longer in the sheet are left alone: removing a rule stops all its work at once.

Environment (read once, by `SweeperSettings.from_env`): COUNTERS_TABLE, OUTBOX_TABLE, RULES_BUCKET, RULES_KEY
(required); RULES_MAX_AGE_SECONDS (60), COUNTER_TTL_DAYS (400), POWERTOOLS_METRICS_NAMESPACE (`EngagementLoop`).
"""

from __future__ import annotations

import enum
import functools
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Callable, Mapping

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.rules.aggregator import publish_counts
from functions.rules.evaluate import apply_exit, event_day, exit_check
from functions.rules.outbox import Change, OutboxEntry
from functions.rules.rules_source import Env, RulesSettings, RulesSource, S3RulesSource
from functions.rules.model import ActionKind, Rule, RuleSet
from functions.rules.store import CounterItem, CounterStore, StoreSettings, Write

logger = Logger()

CATCH_UP_DAYS = 2


class SweepCount(str, enum.Enum):
    """What a sweep counts; each is a CloudWatch metric."""

    CHECKED = "SweepChecked"
    EXITED = "SweepExited"
    RESCHEDULED = "SweepRescheduled"
    RULE_REMOVED = "SweepRuleRemoved"
    FAILED = "SweepFailed"


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
    return OutboxEntry(key=f"{rule.rule_id}#{item.user_id}#exit#{item.state.fired}", change=Change.EXITED,
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


def sweep(store: CounterStore, rules: RuleSet, *, today: date,
          catch_up_days: int = CATCH_UP_DAYS) -> Counter[SweepCount]:
    """Sweep the items due on `today` and the `catch_up_days` before it."""
    counts: Counter[SweepCount] = Counter()
    by_id = {rule.rule_id: rule for rule in rules}
    now_ms = store.now_ms()
    for back in range(catch_up_days, -1, -1):
        for item in store.due_for_sweep(today - timedelta(days=back)):
            counts[SweepCount.CHECKED] += 1
            rule = by_id.get(item.rule_id)
            if rule is None:
                counts[SweepCount.RULE_REMOVED] += 1
                continue
            try:
                write = store.update(rule, item.user_id, sweep_step(rule, today, now_ms), item=item)
            except Exception:  # noqa: BLE001 - one stuck item must not stop the sweep; the next run retries it
                logger.exception("sweep write failed", extra={"rule_id": rule.rule_id})
                counts[SweepCount.FAILED] += 1
                continue
            if write is not None:
                counts[SweepCount.EXITED if write.outbox else SweepCount.RESCHEDULED] += 1
    return counts


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
