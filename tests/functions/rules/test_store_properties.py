"""Property: on moto's DynamoDB, writing every event separately and writing coalesced batches (cut anywhere,
with a batch redelivered whole, as Kinesis does after a failure) leave the same counters and the same outbox,
for random rules and streams with producer duplicates."""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.rules.aggregator import Aggregator
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
