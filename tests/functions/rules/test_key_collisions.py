"""User ids may contain `#` and `%` (rule ids cannot): every outbox key escapes them, so users whose ids look
like other users' keys (`alice` / `alice#exit`, `a#b` / `a%23b`) qualify, exit, get delivered and are
superseded each on their own — through the store, the sweeper and the dispatcher on moto."""

from __future__ import annotations

from datetime import date

import pytest
from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws

from functions.rules.dispatcher import NO_RETRY_DELAY, Runtime, handle_entry
from functions.rules.outbox_table import DeadLetterQueue, OutboxTable
from functions.rules.keys import exit_key, legacy_change_prefix, parse_change_key, qualification_key, user_key_part
from functions.rules.model import ActionKind, CountCondition, Operator, Rule, RuleSet, RuleType
from functions.rules.outbox import Change, OutboxEntry, create_local_outbox_table
from functions.rules.sweeper import SweepCount, sweep
from tests.functions.rules.conftest import SETTINGS, make_deliveries, make_event

LOOKALIKES = ("alice", "alice#exit", "a#b", "a%23b", "a%b", "#", "%", "x#1")


class RecordingSink:
    name = "eventbridge"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Change]] = []

    def deliver(self, entry: OutboxEntry) -> None:
        self.calls.append((entry.user_id, entry.change))


@pytest.mark.parametrize("user", LOOKALIKES)
def test_every_key_names_its_own_user_and_parses_back(user):
    part = user_key_part(user)
    assert "#" not in part
    assert parse_change_key(qualification_key("r", user, 3), "r", user) == (3, False)
    assert parse_change_key(exit_key("r", user, 3), "r", user) == (3, True)
    legacy = legacy_change_prefix("r", user)
    for other in LOOKALIKES:
        for key in (qualification_key("r", other, 3), exit_key("r", other, 3)):
            # Only a legacy (unescaped) key can look like another user's; the entry's own user_id settles it.
            if other != user and not (legacy and key.startswith(legacy)):
                assert parse_change_key(key, "r", user) is None
    keys = {qualification_key("r", u, n) for u in LOOKALIKES for n in (1, 2)} | {
        exit_key("r", u, n) for u in LOOKALIKES for n in (1, 2)}
    assert len(keys) == 4 * len(LOOKALIKES)


@pytest.mark.parametrize("user", ["a#b", "50%", "alice#exit"])
def test_a_key_written_before_escaping_still_names_its_change(user):
    assert parse_change_key(f"r#{user}#3", "r", user) == (3, False)
    assert parse_change_key(f"r#{user}#exit#3", "r", user) == (3, True)


def test_ids_without_hash_or_percent_keep_the_keys_already_written():
    assert (qualification_key("r-1", "u-1", 2), exit_key("r-1", "u-1", 2)) == ("r-1#u-1#2", "r-1#u-1#exit#2")


def test_lookalike_users_qualify_exit_and_are_delivered_independently(aws, clock):
    rule = Rule(rule_id="active", rule_type=RuleType.WINDOW, event_name="visit", window_days=3,
                count_condition=CountCondition(Operator.AT_LEAST, 2))
    store = aws.store(clock)
    runtime = Runtime(sinks=(sink := RecordingSink(),), outbox=OutboxTable(aws.inspect, SETTINGS.outbox_table),
                      dead_letters=DeadLetterQueue(aws.sqs, aws.queue_url), retry=NO_RETRY_DELAY)
    users = ("alice", "alice#exit", "a#b", "a%23b")
    for n, user in enumerate(users):
        events = [make_event(f"{n}-{i}", "visit", user=user, at=at)
                  for i, at in enumerate(("2026-11-20T09:00:00", "2026-11-20T10:00:00"))]
        assert len(store.apply(rule, user, make_deliveries(events, first=(n + 1) * 1_000_000)).qualifications) == 1
    for entry in aws.outbox().values():  # the live path: each qualification as its stream record arrives
        handle_entry(entry, runtime)

    clock.set("2026-11-23T00:20:00")
    assert sweep(store, RuleSet((rule,)), today=date(2026, 11, 23))[SweepCount.EXITED] == len(users)
    outbox = aws.outbox()
    assert len(outbox) == 2 * len(users)  # no exit was dropped as "already there"
    assert {(e.user_id, e.change) for e in outbox.values()} == {(u, c) for u in users for c in Change}
    for entry in outbox.values():
        assert entry.position is not None
        if entry.change is Change.EXITED:
            assert handle_entry(entry, runtime).superseded_by is None
    assert sorted(sink.calls) == sorted((u, c) for u in users for c in (Change.QUALIFIED, Change.EXITED))


def attribute_entry(key: str, user: str, change: Change, created: int) -> OutboxEntry:
    return OutboxEntry(key=key, change=change, rule_id="r-w", user_id=user, action=ActionKind.ATTRIBUTE,
                       name="active", value="ready" if change is Change.QUALIFIED else None, event_id="e",
                       event_time_ms=created, created_ms=created)


def test_the_supersede_walk_ignores_another_users_entry_under_a_successor_key():
    """/tmp/review1/test_collision.py: an entry written before keys were escaped (`alice#exit`'s
    qualification 1 under `r-w#alice#exit#1`) sits where alice's exit 1 would; the walk checks whose it is."""
    with mock_aws():
        import boto3

        ddb, sqs = boto3.client("dynamodb", region_name="us-east-1"), boto3.client("sqs", region_name="us-east-1")
        create_local_outbox_table(ddb, "outbox")
        sink = RecordingSink()
        runtime = Runtime(sinks=(sink,), outbox=OutboxTable(ddb, "outbox"), retry=NO_RETRY_DELAY,
                          dead_letters=DeadLetterQueue(sqs, sqs.create_queue(QueueName="dlq")["QueueUrl"]))
        other = attribute_entry("r-w#alice#exit#1", "alice#exit", Change.QUALIFIED, 1_764_000_000_000)
        alice = attribute_entry(qualification_key("r-w", "alice", 1), "alice", Change.QUALIFIED, 1_764_000_001_000)
        for entry in (other, alice):
            ddb.put_item(TableName="outbox",
                         Item={k: TypeSerializer().serialize(v) for k, v in entry.to_item().items()})
        result = handle_entry(alice, runtime)
        assert result.superseded_by is None and sink.calls == [("alice", Change.QUALIFIED)]
