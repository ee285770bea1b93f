"""The counter store on moto's DynamoDB: one conditional write per group, dedupe marks, conflicts retried,
TTL and sweep day, the outbox written exactly once, and a crash between groups followed by a redelivery."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functions.rules.aggregator import Aggregator, Count
from functions.rules.evaluate import RuleState
from functions.rules.outbox import Change
from functions.rules.model import CountCondition, Operator, Rule, RuleSet, RuleType, SumCondition
from functions.rules.dedupe import SEEN_MAX_ENTRIES, Delivery, Mark, mark_key, remember, seen_key
from functions.rules.counter_item import Write
from functions.rules.counting import WINDOW_TTL_SLACK_DAYS
from functions.rules.store import CounterStore, StoreConflict, StoreSettings
from functions.rules.limits import OutboxKeyTaken, Unwritable
from functions.rules.activation import BackfillStatus
from functions.rules.outbox import create_local_tables
from tests.functions.rules.conftest import SETTINGS, Clock, _plain, make_deliveries, make_event, ms

DAY = 86_400
AT_LEAST = Operator.AT_LEAST


def rule(rule_id: str = "r1", **fields: Any) -> Rule:
    base: dict[str, Any] = {"rule_id": rule_id, "rule_type": RuleType.AGGREGATOR, "event_name": "purchase",
                            "count_condition": CountCondition(AT_LEAST, 3)}
    return Rule(**{**base, **fields})


def events(n: int, *, user: str = "u1", prefix: str = "e", at: str = "2026-11-20T12:00:00", **kwargs: Any):
    start = ms(at)
    return [make_event(f"{prefix}{i}", user=user, at=start + i * 1000, **kwargs) for i in range(1, n + 1)]


def test_a_group_is_one_read_and_one_conditional_write(aws, clock):
    store = aws.store(clock)
    result = store.apply(rule(), "u1", make_deliveries(events(2)))
    assert (result.applied, result.writes, result.qualifications) == (2, 1, ())
    assert aws.calls == Counter({"GetItem": 1, "PutItem": 1})
    item = aws.counter("r1", "u1")
    assert (item.state.count, item.version) == (2, 1)
    assert item.seen == {seen_key(e.event_id): e.arrival_time_ms for e in events(2)}
    assert all(item.has_seen(e.event_id) for e in events(2)) and not item.has_seen("e3")
    assert item.hwm == {mark_key("shardId-000000000000", "u1"): Mark(str(49_000_000_000_000_000_000 + 7),
                                                                     events(2)[1].arrival_time_ms)}


def test_a_qualification_is_written_to_the_outbox_in_the_same_transaction(aws, clock):
    store = aws.store(clock)
    result = store.apply(rule(), "u1", make_deliveries(events(4)))
    assert [q.key for q in result.qualifications] == ["r1#u1#1"]
    assert aws.calls == Counter({"GetItem": 1, "TransactWriteItems": 1})
    entry = aws.outbox()["r1#u1#1"]
    assert (entry.change, entry.name, entry.value, entry.event_id) == (Change.QUALIFIED, "purchase", "ready", "e3")
    assert aws.counter("r1", "u1").state.qualified


def test_a_redelivered_batch_is_skipped_by_the_sequence_mark_without_writing(aws, clock):
    store, batch = aws.store(clock), make_deliveries(events(4))
    store.apply(rule(), "u1", batch)
    aws.calls.clear()
    again = store.apply(rule(), "u1", batch)
    assert (again.applied, again.duplicates, again.writes) == (0, 4, 0)
    assert aws.calls == Counter({"GetItem": 1})
    assert aws.counter("r1", "u1").state.count == 4
    assert len(aws.outbox()) == 1


def test_sequence_numbers_compare_as_numbers_not_text(aws, clock):
    store, (first, second) = aws.store(clock), events(2)
    store.apply(rule(), "u1", [Delivery(first, "shard-1", "9", "u1")])
    result = store.apply(rule(), "u1", [Delivery(second, "shard-1", "10", "u1")])  # "10" < "9" as text
    assert result.applied == 1
    assert aws.counter("r1", "u1").hwm[mark_key("shard-1", "u1")].sequence_number == "10"


def test_a_producer_duplicate_on_a_new_sequence_number_is_skipped_by_event_id(aws, clock):
    store, (first,) = aws.store(clock), events(1)
    store.apply(rule(), "u1", [Delivery(first, "shard-1", "100", "u1")])
    result = store.apply(rule(), "u1", [Delivery(first, "shard-1", "200", "u1"), Delivery(first, "shard-2", "5", "u1")])
    assert (result.applied, result.duplicates, result.writes) == (0, 2, 0)
    assert aws.counter("r1", "u1").state.count == 1


def test_seen_keeps_the_horizon_of_arrival_time_against_the_processing_clock_and_at_most_the_cap():
    now, day = ms("2026-11-20T12:00:00"), 86_400_000
    kept = remember({}, [("old", ms("2026-11-18T12:00:00"))], now_ms=ms("2026-11-18T12:00:01"), horizon_ms=day)
    assert set(kept) == {seen_key("old")}
    burst = [(f"b{i}", now + i * 1000) for i in range(SEEN_MAX_ENTRIES + 50)]
    seen = remember(kept, burst, now_ms=now + 10**7, horizon_ms=day)
    assert len(seen) == SEEN_MAX_ENTRIES and seen_key("old") not in seen  # older than the horizon
    assert set(seen) == {seen_key(f"b{i}") for i in range(50, SEEN_MAX_ENTRIES + 50)}  # the newest
    # Pruned against the processing clock, not against the newest arrival.
    edge = remember({}, [("a", now - day)], now_ms=now, horizon_ms=day)
    assert set(edge) == {seen_key("a")}
    assert remember(edge, [], now_ms=now + 1000, horizon_ms=day) == {}


class RacingClient:
    """A client whose first write loses: just before it, another writer updates the same item."""

    def __init__(self, client: Any, race: Any) -> None:
        self._client, self._race, self.raced = client, race, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_item(self, **request: Any) -> Any:
        if not self.raced:
            self.raced = True
            self._race()
        return self._client.put_item(**request)

    def transact_write_items(self, **request: Any) -> Any:
        if not self.raced:
            self.raced = True
            self._race()
        return self._client.transact_write_items(**request)


@pytest.mark.parametrize("existing", [False, True], ids=["new item", "existing item"])
def test_a_version_conflict_is_re_read_and_retried(aws, clock, existing):
    other = aws.store(clock)
    if existing:
        other.apply(rule(), "u1", make_deliveries(events(1, prefix="x"), shard="shard-b"))
    racing = RacingClient(aws.dynamodb, lambda: other.apply(rule(), "u1", make_deliveries(events(1, prefix="y"),
                                                                                          shard="shard-c")))
    result = aws.store(clock, client=racing).apply(rule(), "u1", make_deliveries(events(2)))
    assert racing.raced and result.applied == 2
    item = aws.counter("r1", "u1")
    assert item.state.count == 3 + existing
    assert item.version == 2 + existing
    assert [q.key for q in result.qualifications] == ["r1#u1#1"]  # the third event, counted after the re-read
    assert list(aws.outbox()) == ["r1#u1#1"]


def test_conflicts_past_the_bound_raise(aws, clock):
    class AlwaysLosing(RacingClient):
        def put_item(self, **request: Any) -> Any:
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "no"}}, "PutItem")

    store = aws.store(clock, client=AlwaysLosing(aws.dynamodb, None), max_attempts=3)
    with pytest.raises(StoreConflict, match="r1#u1"):
        store.apply(rule(), "u1", make_deliveries(events(1)))
    assert aws.calls["GetItem"] == 3


def test_an_outbox_entry_that_already_exists_is_kept_and_the_counter_written(aws, clock):
    aws.inspect.put_item(TableName=SETTINGS.outbox_table, Item={
        "pk": {"S": "r1#u1#1"}, "rule_id": {"S": "r1"}, "user_id": {"S": "u1"}, "change": {"S": "qualified"},
        "marker": {"S": "earlier"}})
    aws.store(clock).apply(rule(), "u1", make_deliveries(events(3)))
    assert aws.counter("r1", "u1").state.qualified
    raw = aws.inspect.get_item(TableName=SETTINGS.outbox_table, Key={"pk": {"S": "r1#u1#1"}})["Item"]
    assert raw["marker"] == {"S": "earlier"}


@pytest.mark.parametrize("stored", [
    {"rule_id": "r1", "user_id": "u1#exit", "change": "qualified"},  # another user (a key from before escaping)
    {"rule_id": "r1", "user_id": "u1", "change": "exited"},
    {},  # no change recorded at all
])
def test_an_outbox_key_held_by_another_change_is_never_taken_for_a_retry(aws, clock, stored):
    aws.inspect.put_item(TableName=SETTINGS.outbox_table, Item={
        "pk": {"S": "r1#u1#1"}, **{name: {"S": value} for name, value in stored.items()}})
    with pytest.raises(OutboxKeyTaken, match="r1#u1#1"):
        aws.store(clock).apply(rule(), "u1", make_deliveries(events(3)))
    assert aws.counter("r1", "u1") is None  # nothing written: the aggregator sets the group aside


def test_a_user_id_too_long_for_an_escaped_outbox_key_is_unwritable_before_any_request(aws, clock):
    with pytest.raises(Unwritable, match="outbox key"):
        aws.store(clock).apply(rule(), "#" * 700, make_deliveries(events(3)))  # counter key 703 B, outbox key >2 KB
    assert aws.calls.get("TransactWriteItems", 0) == 0


def test_a_reset_rule_firing_more_than_a_transaction_holds_is_split(aws, clock):
    every = rule(count_condition=CountCondition(Operator.EQUAL, 1), reset=True)
    result = aws.store(clock).apply(every, "u1", make_deliveries(events(250)))
    assert (result.applied, result.writes, len(result.qualifications)) == (250, 3, 250)
    assert aws.calls["TransactWriteItems"] == 3
    assert set(aws.outbox()) == {f"r1#u1#{n}" for n in range(1, 251)}
    item = aws.counter("r1", "u1")
    assert (item.state.count, item.state.fired) == (0, 250)


def test_one_by_one_makes_one_write_per_event_and_the_same_outcome(aws, clock):
    reset = rule(count_condition=CountCondition(Operator.EQUAL, 2), reset=True)
    store = aws.store(clock)
    one = store.apply_one_by_one(reset, "u1", make_deliveries(events(5)))
    assert (one.writes, aws.calls["GetItem"]) == (5, 5)
    many = store.apply(reset, "u2", make_deliveries(events(5, user="u2")))
    assert many.writes == 1
    assert aws.counter("r1", "u1").state == aws.counter("r1", "u2").state
    assert [q.sequence for q in one.qualifications] == [q.sequence for q in many.qualifications] == [1, 2]


# --- TTL and the sweep day ---------------------------------------------------------------------------


def test_an_aggregator_counter_expires_counter_ttl_days_after_its_last_write(aws, clock):
    store = CounterStore(aws.dynamodb, StoreSettings(counters_table=SETTINGS.counters_table,
                                                     outbox_table=SETTINGS.outbox_table, counter_ttl_days=10),
                         clock=clock)
    store.apply(rule(), "u1", make_deliveries(events(1)))
    assert aws.counter("r1", "u1").expires_at == int(clock()) + 10 * DAY


def test_a_date_counter_expires_30_days_after_the_finish_date(aws, clock):
    dated = rule(rule_type=RuleType.DATE, start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30))
    aws.store(clock).apply(dated, "u1", make_deliveries(events(1)))
    assert aws.counter("r1", "u1").expires_at == ms("2026-12-31T00:00:00") // 1000


def test_a_window_counter_expires_two_days_after_its_window_and_a_qualified_one_gets_a_sweep_day(aws, clock):
    window = rule(rule_type=RuleType.WINDOW, window_days=3, count_condition=CountCondition(AT_LEAST, 2))
    store = aws.store(clock)
    store.apply(window, "u1", make_deliveries(events(1)))
    item = aws.counter("r1", "u1")
    assert item.expires_at == ms("2026-11-25T00:00:00") // 1000  # Nov 20 + 3-day window + 2
    assert item.sweep_day is None

    store.apply(window, "u1", make_deliveries(events(1, prefix="f"), first=60_000_000_000_000_000_000))
    item = aws.counter("r1", "u1")
    assert item.state.qualified
    assert item.sweep_day == date(2026, 11, 23)  # both events leave the window that day
    assert item.expires_at >= int(clock()) + 31 * DAY  # outlives its outbox entry
    raw = aws.inspect.query(TableName=SETTINGS.counters_table, IndexName="sweep",
                            KeyConditionExpression="sweep_day = :d",
                            ExpressionAttributeValues={":d": {"S": "2026-11-23"}})["Items"]
    assert [r["pk"]["S"] for r in raw] == ["r1#u1"]


def test_a_sweep_day_already_past_is_today_and_one_not_qualified_is_removed(aws, clock):
    window = rule(rule_type=RuleType.WINDOW, window_days=2, count_condition=CountCondition(AT_LEAST, 1))
    store = aws.store(clock)
    store.apply(window, "u1", make_deliveries(events(1)))  # qualified on Nov 20, due to leave on Nov 22
    clock.set("2026-11-25T08:00:00")  # the sweeper never came: the next write puts it on today
    store.update(window, "u1", lambda item: Write(state=item.state))
    assert aws.counter("r1", "u1").sweep_day == date(2026, 11, 25)

    store.update(window, "u1", lambda item: Write(state=replace(item.state, qualified=False)))
    item = aws.counter("r1", "u1")
    assert item.sweep_day is None and "sweep_day" not in item.to_item()


def test_an_event_older_than_the_window_as_of_its_arrival_counts_for_nothing(aws, clock):
    window = rule(rule_type=RuleType.WINDOW, window_days=2, count_condition=CountCondition(AT_LEAST, 1))
    store = aws.store(clock)
    clock.set("2026-11-25T08:00:00")
    stale = [make_event("old", at="2026-11-20T12:00:00", arrival="2026-11-25T07:00:00")]  # an offline queue
    store.apply(window, "u1", make_deliveries(stale))
    item = aws.counter("r1", "u1")
    assert not item.state.qualified and item.state.count == 0 and item.sweep_day is None
    assert item.state.window_end == date(2026, 11, 25) and aws.outbox() == {}


def test_a_backlog_counts_as_of_arrival_and_the_sweeper_is_due_on_the_processing_day(aws, clock):
    window = rule(rule_type=RuleType.WINDOW, window_days=2, count_condition=CountCondition(AT_LEAST, 1))
    store = aws.store(clock)
    clock.set("2026-11-22T08:00:00")  # processed two days after it arrived (Nov 20): counted as of Nov 20
    store.apply(window, "u1", make_deliveries(events(1)))
    item = aws.counter("r1", "u1")
    assert item.state.qualified and item.state.count == 1 and item.state.window_end == date(2026, 11, 20)
    assert item.sweep_day == date(2026, 11, 22)  # no longer met today: the next sweep takes it out

    # A counter's TTL runs from the processing day, not the (earlier) arrival day its window ends on.
    pair = rule("r2", rule_type=RuleType.WINDOW, window_days=2, count_condition=CountCondition(AT_LEAST, 2))
    clock.set("2026-11-25T08:00:00")  # five days after the event arrived
    store.apply(pair, "u1", make_deliveries(events(1)))
    item = aws.counter("r2", "u1")
    assert item.state.count == 1 and item.state.window_end == date(2026, 11, 20) and not item.state.qualified
    assert item.expires_at == ms("2026-11-25T00:00:00") // 1000 + (2 + WINDOW_TTL_SLACK_DAYS) * 86_400


# --- activation records ------------------------------------------------------------------------------


def test_the_first_activation_wins_and_a_changed_rule_under_the_same_id_keeps_it(aws, clock):
    dated = rule(rule_type=RuleType.DATE, start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30))
    store = aws.store(clock)
    first = store.activations.ensure(dated, 1_000)
    assert (first.activation_ms, first.status) == (1_000, BackfillStatus.PENDING)
    changed = rule(rule_type=RuleType.DATE, start_date=date(2026, 11, 2), finish_date=date(2026, 11, 30))
    again = store.activations.ensure(changed, 2_000)
    assert again.activation_ms == 1_000 and again.fingerprint == first.fingerprint
    assert aws.calls == Counter({"PutItem": 2})  # the existing record comes back with the refusal

    saved = store.activations.save(first)
    assert saved is not None and saved.version == 2
    assert store.activations.save(first) is None  # stale
    assert store.activations.read("r1") == saved


# --- the function dies between two groups' writes, and Lambda redelivers the batch ------------------


class Died(BaseException):
    """The process stopping mid-batch (not an error the aggregator catches)."""


class DyingClient(RacingClient):
    def __init__(self, client: Any, writes_before_death: int) -> None:
        super().__init__(client, None)
        self.left = writes_before_death

    def _write(self, call, **request):
        if self.left == 0:
            raise Died()
        self.left -= 1
        return call(**request)

    def put_item(self, **request: Any) -> Any:
        if request["Item"]["pk"]["S"].startswith("meta#"):
            return self._client.put_item(**request)  # activation records: not what this test is about
        return self._write(self._client.put_item, **request)

    def transact_write_items(self, **request: Any) -> Any:
        return self._write(self._client.transact_write_items, **request)


CRASH_RULES = RuleSet((
    rule("every2", count_condition=CountCondition(Operator.EQUAL, 2), reset=True),
    rule("spend", count_condition=None, sum_condition=SumCondition(AT_LEAST, Decimal("2.5"), "amount")),
    rule("nov", rule_type=RuleType.DATE, start_date=date(2026, 11, 1), finish_date=date(2026, 11, 30)),
    rule("week", rule_type=RuleType.WINDOW, window_days=7, count_condition=CountCondition(AT_LEAST, 2)),
))


def crash_stream() -> list[Delivery]:
    stream = []
    for i in range(24):
        user = f"u{i % 4}"
        stream.append(make_event(f"ev{i}", user=user, at=ms("2026-11-20T12:00:00") + i * 60_000,
                                 metrics={"amount": 0.7}))
    stream.insert(9, stream[3])  # a producer's duplicate, later in the stream
    return make_deliveries(stream)


def outcome(aws, settings: StoreSettings) -> tuple[dict, dict]:
    states = {}
    for page in aws.inspect.get_paginator("scan").paginate(TableName=settings.counters_table):
        for raw in page["Items"]:
            if not raw["pk"]["S"].startswith("meta#"):
                item = {k: _plain(v) for k, v in raw.items()}
                states[raw["pk"]["S"]] = RuleState.from_record(item["state"])
    entries = {}
    for page in aws.inspect.get_paginator("scan").paginate(TableName=settings.outbox_table):
        for raw in page["Items"]:
            entries[raw["pk"]["S"]] = (raw["event_id"]["S"], raw["name"]["S"])
    return states, entries


@pytest.mark.parametrize("writes_before_death", [0, 1, 5, 11])
def test_a_crash_between_groups_then_redelivery_equals_a_fault_free_run(aws, writes_before_death):
    clock = Clock("2026-11-20T11:00:00")  # rules activated before the events arrive
    fault_free = StoreSettings(counters_table="fault-free-counters", outbox_table="fault-free-outbox")
    create_local_tables(aws.inspect, fault_free)
    batch = crash_stream()
    Aggregator(CounterStore(aws.dynamodb, fault_free, clock=clock), activation_delay_ms=70_000).process(
        CRASH_RULES, batch, Counter())

    dying = Aggregator(aws.store(clock, client=DyingClient(aws.dynamodb, writes_before_death)),
                       activation_delay_ms=70_000)
    with pytest.raises(Died):
        dying.process(CRASH_RULES, batch, Counter())
    counts: Counter[Count] = Counter()
    redelivered = Aggregator(aws.store(clock), activation_delay_ms=70_000).process(CRASH_RULES, batch, counts)
    assert not redelivered.failures
    assert counts[Count.DUPLICATES] >= writes_before_death  # the groups written before the crash are skipped

    expected_states, expected_entries = outcome(aws, fault_free)
    assert outcome(aws, SETTINGS) == (expected_states, expected_entries)
    assert len(expected_entries) > 4 and any(key.startswith("every2#") for key in expected_entries)
    # and the stream's duplicate counted once:
    assert expected_states["nov#u3"].count == 6
