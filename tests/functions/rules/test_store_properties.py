"""Properties of the counter store: on moto's DynamoDB, writing every event separately and writing coalesced
batches (cut anywhere, with a batch redelivered whole, as Kinesis does after a failure) leave the same counters
and the same outbox, for random rules and streams with producer duplicates; the in-memory store leaves what
DynamoDB leaves; and the cheap size bound the store checks first never undercounts an item."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.rules.aggregator import Aggregator
from functions.rules.counter_item import CounterItem
from functions.rules.dedupe import Mark
from functions.rules.evaluate import DayBucket, RuleState
from functions.rules.limits import item_size_bytes
from functions.rules.memory_store import MemoryCounterStore
from functions.rules.store import CounterStore, StoreSettings
from functions.rules.outbox import create_local_tables
from tests.functions.rules.conftest import make_deliveries
from tests.unit.rules.test_rules_properties import rule_sets, streams

_tables = itertools.count()


def fresh_store(aws, rules, now_ms: int) -> CounterStore:
    """A store whose processing clock is `now_ms` (just after the stream), remembering ids for the stream's
    whole span (a producer duplicate is one whatever the batching)."""
    number = next(_tables)
    settings = StoreSettings(counters_table=f"counters-{number}", outbox_table=f"outbox-{number}",
                             dedupe_horizon_hours=24 * 30)
    create_local_tables(aws.inspect, settings)
    store = CounterStore(aws.inspect, settings, clock=lambda: now_ms / 1000)
    for rule in rules:
        store.activations.ensure(rule, 0)  # the streams' events arrive at 0: active from the start
    return store


def snapshot(aws, store: CounterStore) -> tuple[dict, dict]:
    settings = store._settings
    states, entries = {}, {}
    for page in aws.inspect.get_paginator("scan").paginate(TableName=settings.counters_table):
        for raw in page["Items"]:
            if not raw["pk"]["S"].startswith("meta#"):
                states[raw["pk"]["S"]] = store.read(raw["rule_id"]["S"], raw["user_id"]["S"]).state
    for page in aws.inspect.get_paginator("scan").paginate(TableName=settings.outbox_table):
        for raw in page["Items"]:
            entries[raw["pk"]["S"]] = (raw["event_id"]["S"], raw["name"]["S"], raw["change"]["S"])
    return states, entries


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule_set=rule_sets, stream=streams(), data=st.data())
def test_one_by_one_and_coalesced_batches_with_a_redelivery_agree(aws, rule_set, stream, data):
    deliveries = [d for d in make_deliveries(stream) if d.event.user_id is not None]
    now_ms = max((d.event.arrival_time_ms for d in deliveries), default=0) + 1000
    one_by_one = fresh_store(aws, rule_set, now_ms)
    Aggregator(one_by_one, activation_delay_ms=0, one_by_one=True).process(rule_set, deliveries, Counter())

    coalesced = fresh_store(aws, rule_set, now_ms)
    aggregator = Aggregator(coalesced, activation_delay_ms=0)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=4)))
    bounds = [0, *cuts, len(deliveries)]
    batches = [deliveries[a:b] for a, b in zip(bounds, bounds[1:])]
    redelivered = data.draw(st.integers(0, len(batches) - 1))
    for index, batch in enumerate(batches):
        aggregator.process(rule_set, batch, Counter())
        if index == redelivered:
            aggregator.process(rule_set, batch, Counter())

    assert snapshot(aws, coalesced) == snapshot(aws, one_by_one)


def memory_snapshot(store: MemoryCounterStore) -> tuple[dict, dict]:
    states = {item.key: item.state for item in store.counters()}
    entries = {entry.key: (entry.event_id, entry.name, entry.change.value) for entry in store.outbox_entries()}
    return states, entries


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule_set=rule_sets, stream=streams(), data=st.data())
def test_the_memory_store_and_dynamodb_leave_the_same_counters_and_outbox(aws, rule_set, stream, data):
    """The local engine's store is a backend of the same interface: the same batches, redelivery included,
    give the same states and outbox entries as DynamoDB (moto)."""
    deliveries = [d for d in make_deliveries(stream) if d.event.user_id is not None]
    now_ms = max((d.event.arrival_time_ms for d in deliveries), default=0) + 1000
    dynamo = fresh_store(aws, rule_set, now_ms)
    memory = MemoryCounterStore(dynamo._settings, clock=lambda: now_ms / 1000)
    for rule in rule_set:
        memory.activations.ensure(rule, 0)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=4)))
    bounds = [0, *cuts, len(deliveries)]
    batches = [deliveries[a:b] for a, b in zip(bounds, bounds[1:])]
    redelivered = data.draw(st.integers(0, len(batches) - 1))
    for store in (dynamo, memory):
        aggregator = Aggregator(store, activation_delay_ms=0)
        for index, batch in enumerate(batches):
            aggregator.process(rule_set, batch, Counter())
            if index == redelivered:
                aggregator.process(rule_set, batch, Counter())
    assert memory_snapshot(memory) == snapshot(aws, dynamo)
    for item in memory.counters():  # what DynamoDB stored, item for item
        assert dynamo.read(item.rule_id, item.user_id) == item


@settings(max_examples=200, deadline=None)
@given(rule_id=st.text(min_size=1, max_size=40), user_id=st.text(min_size=1, max_size=300),
       count=st.integers(0, 10 ** 38 - 1), total=st.decimals(allow_nan=False, allow_infinity=False, places=6),
       days=st.lists(st.tuples(st.dates(), st.integers(0, 10 ** 38 - 1), st.decimals(allow_nan=False,
                                                                                   allow_infinity=False)),
                     max_size=30),
       marks=st.dictionaries(st.text(max_size=300), st.tuples(st.integers(0, 10 ** 56).map(str),
                                                              st.integers(0, 10 ** 14 - 1)), max_size=40),
       seen=st.dictionaries(st.text(min_size=12, max_size=12, alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_"),
                            st.integers(0, 10 ** 14 - 1), max_size=200),
       version=st.integers(0, 10 ** 38 - 1), expires_at=st.integers(0, 10 ** 38 - 1), swept=st.none() | st.dates(),
       backfilled=st.booleans(), qualified=st.booleans(), window_end=st.none() | st.dates())
def test_the_size_bound_is_never_below_the_items_dynamodb_size(rule_id, user_id, count, total, days, marks, seen,
                                                               version, expires_at, swept, backfilled, qualified,
                                                               window_end):
    """The store sizes an item exactly only when `size_at_most` passes the limit: the bound must hold for any
    item, or an item over 400 KB would reach DynamoDB and fail its group on every retry."""
    state = RuleState(count=count, sum=total, qualified=qualified, fired=count, window_end=window_end,
                      buckets=tuple(DayBucket(day, c, s) for day, c, s in days))
    item = CounterItem(rule_id=rule_id, user_id=user_id, state=state, version=version, expires_at=expires_at,
                       hwm={k: Mark(seq, ms) for k, (seq, ms) in marks.items()}, seen=seen, sweep_day=swept,
                       backfilled=backfilled)
    assert item.size_at_most() >= item_size_bytes(item.to_item())


def test_the_size_bound_holds_for_the_largest_numbers_and_every_optional_field():
    """The worst case the random items rarely reach: 38-digit numbers everywhere, every optional field set."""
    largest = 10 ** 38 - 1
    state = RuleState(count=largest, sum=Decimal(largest), qualified=True, fired=largest,
                      window_end=date(2026, 12, 1),
                      buckets=tuple(DayBucket(date(2026, 1, 1) + timedelta(days=n), largest, Decimal(-largest))
                                    for n in range(365)))
    item = CounterItem(rule_id="r" * 40, user_id="ü" * 300, state=state, version=largest, expires_at=largest,
                       hwm={f"shardId-{n:012d} {'x' * 12}": Mark(str(10 ** 56 + n), 99_999_999_999_999) for n in range(32)},
                       seen={f"{n:012d}": 99_999_999_999_999 for n in range(5000)}, sweep_day=date(2026, 12, 2),
                       backfilled=True)
    exact = item_size_bytes(item.to_item())
    assert exact <= item.size_at_most() <= exact * 1.25  # an upper bound, and not so loose that it is useless
