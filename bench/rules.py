"""Benchmark: DynamoDB requests of the rule engine's counters — one write per event vs coalesced batches —
beside the seed design.

    python -m bench.rules [--events 100000] [--users 10000] [--rules 20] [--batch-size 100] [--seed 7]
                          [--json OUT]

A bursty stream (users send bursts of several events seconds apart, bursts interleaved, ~1% producer
duplicates, one shard as one event source mapping batch sees it; partition keys as the producers set them:
the user id for app events, a second key per user for the SES email events beside them) goes through the
real aggregator and store on moto's DynamoDB twice, in batches, on a processing clock that follows the
stream (each batch a second after its newest arrival): each event written separately, then each batch coalesced per (rule,
user). Requests are counted by operation with a botocore hook; both runs must end with identical counters and
outbox. Then the scheduled work is measured: the sweeper's requests, and how many of the items it reads
belong to date rules (none: date rules need no scheduled job).

Besides requests, each run adds up the capacity units DynamoDB would bill for them (on demand: a write unit per
started KB of the item written, two inside a transaction; a strongly consistent read unit per started 4 KB read,
at least one), sizing items with `functions/rules/limits.item_size_bytes`, and, at the end, the sizes of the
counter items and outbox entries left in the tables. `--json OUT` writes all of it (`bench.cost` reads
`bench/results/rules.json`).

Targets (exit status 1 if one is missed): ≤ 1 write per matched (event, rule) pair one by one; ≤ 0.3 coalesced
with batches of 100; zero scheduled reads for date rules. The two runs go in parallel processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import random
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.result_file import command_line, write_result
from functions.events.canonical import CanonicalEvent, EventSource
from functions.rules.evaluate import DAY_MS, event_day, matches
from functions.rules.model import AttributeFilter, CountCondition, Operator, Rule, RuleSet, RuleType, SumCondition

REGION = "us-east-1"
START_DAY = date(2026, 11, 18)
DAYS = 3
EVENT_TYPES = {  # type → share of events; a session mostly repeats its main type
    "view": 0.30, "click": 0.14, "search": 0.08, "scroll": 0.08, "add_to_cart": 0.06, "purchase": 0.03,
    "login": 0.04, "share": 0.03, "review": 0.02, "wishlist": 0.03, "_email.delivered": 0.06,
    "_email.open": 0.06, "_email.click": 0.03, "_session.start": 0.04,
}
RULE_EVENTS = [  # what a sheet's 20 rules count: conversions more often than page views
    "purchase", "add_to_cart", "view", "_email.open", "purchase", "click", "login", "_email.click", "wishlist",
    "review", "add_to_cart", "share", "purchase", "view", "_email.open", "click", "login", "wishlist",
    "_email.click", "review",
]
SEED_OPERATIONS_PER_EVENT = (5, 7)
TARGET_ONE_BY_ONE, TARGET_COALESCED = 1.0, 0.3
ONE_BY_ONE, COALESCED = "one-by-one", "coalesced"
WRITES = ("PutItem", "TransactWriteItems", "UpdateItem", "DeleteItem", "BatchWriteItem")
READS = ("GetItem", "Query", "Scan", "BatchGetItem")


# --- workload ----------------------------------------------------------------------------------------


def build_rules(rng: random.Random, count: int) -> RuleSet:
    """A mix like a real sheet: 40% aggregator (some resetting, some sums), 30% date, 30% window; a third
    with an attribute filter."""
    rules = []
    kinds = [RuleType.AGGREGATOR] * 4 + [RuleType.DATE] * 3 + [RuleType.WINDOW] * 3
    for index in range(count):
        kind = kinds[index % len(kinds)]
        event_name = RULE_EVENTS[index % len(RULE_EVENTS)]
        use_sum = index % 3 == 1
        rules.append(Rule(
            rule_id=f"rule{index:02d}", rule_type=kind, event_name=event_name,
            attribute_filter=AttributeFilter("channel", rng.choice(["web", "app"])) if index % 3 == 2 else None,
            count_condition=None if use_sum else CountCondition(Operator.AT_LEAST, rng.randint(2, 6)),
            sum_condition=SumCondition(Operator.AT_LEAST, Decimal(rng.choice(["5", "20", "50"])))  # first metric
            if use_sum else None,
            reset=kind is RuleType.AGGREGATOR and index % 2 == 0,
            start_date=START_DAY if kind is RuleType.DATE else None,
            finish_date=START_DAY + timedelta(days=DAYS + 5) if kind is RuleType.DATE else None,
            window_days=rng.choice([1, 2, 7]) if kind is RuleType.WINDOW else None,
        ))
    return RuleSet(tuple(rules))


def build_stream(rng: random.Random, events: int, users: int, *, focus: float = 0.85,
                 concurrent: int = 10) -> list[CanonicalEvent]:
    """Bursts of 3–15 events, a share `focus` of them of the burst's own type (a user browsing views, opening
    a campaign's emails, filling a cart), `concurrent` users bursting at once, over `DAYS` days. Every user
    bursts once (in random order), and then the more active ones again."""
    start_ms = (START_DAY - date(1970, 1, 1)).days * DAY_MS
    step_ms = DAYS * DAY_MS // events
    types, shares = list(EVENT_TYPES), list(EVENT_TYPES.values())
    sessions: list[list[Any]] = []  # [user, main type, events left, channel]
    first_bursts = [f"user{number:05d}" for number in range(users)]
    rng.shuffle(first_bursts)
    stream: list[CanonicalEvent] = []
    while len(stream) < events:
        while len(sessions) < concurrent:
            # Some users are much more active than others (squared uniform: a skew towards low ids).
            user = first_bursts.pop() if first_bursts else f"user{int(users * rng.random() ** 2):05d}"
            sessions.append([user, rng.choices(types, shares)[0], rng.randint(3, 15), rng.choice(["web", "app"])])
        session = rng.choice(sessions)
        user, main, _, channel = session
        event_type = main if rng.random() < focus else rng.choices(types, shares)[0]
        at = start_ms + len(stream) * step_ms
        stream.append(CanonicalEvent(
            event_id=f"e{len(stream)}", source=EventSource.APP, event_type=event_type, event_time_ms=at,
            arrival_time_ms=at + 500, user_id=user, attributes={"channel": channel},
            metrics=_metrics(rng, event_type),
        ))
        if rng.random() < 0.01:
            stream.append(stream[-1])  # the producer sent it twice
        session[2] -= 1
        if session[2] == 0:
            sessions.remove(session)
    return stream[:events]


def _metrics(rng: random.Random, event_type: str) -> dict[str, float]:
    if event_type in ("purchase", "add_to_cart", "wishlist"):
        return {"amount": round(rng.uniform(1, 30), 2), "items": float(rng.randint(1, 3))}
    if event_type in ("view", "scroll", "_session.start"):
        return {"seconds": round(rng.uniform(0.5, 20), 1)}
    return {}


# --- one run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What one mode did for one partition of the users."""

    mode: str
    requests: Counter[str]
    setup_requests: int
    matched_pairs: int
    sweep_requests: Counter[str]
    swept: Counter[str]
    """Counters the sweep read, by rule type."""
    digest: str
    seconds: float
    units: Counter[str] = None  # type: ignore[assignment]
    """Billed capacity units of `requests`: `write`, `read`, and `transactional_write` (part of `write`)."""
    item_sizes: dict[str, list[int]] = None  # type: ignore[assignment]
    """Sizes in bytes of the counter items and outbox entries left in the tables (`counter`, `outbox`)."""


def partition_key(event: CanonicalEvent) -> str:
    """The Kinesis partition key its producer would give: apps key by user; SES (through EventBridge) keys its
    email events by the message's recipient, a second key for the same user."""
    return f"ses-{event.user_id}" if event.event_type.startswith("_email.") else str(event.user_id)


def partition_of(user_id: str, partitions: int) -> int:
    return zlib.crc32(user_id.encode()) % partitions


def run(mode: str, rules: RuleSet, stream: list[CanonicalEvent], batch_size: int, partition: int,
        partitions: int, progress: bool) -> RunResult:
    """One mode over the events of one partition of the users, in a fresh moto. The batches are the whole
    stream's (one shard), each reduced to the partition's events: a (rule, user) group only ever holds its own
    user's events, so the partitions' requests add up to exactly those of one process doing everything."""
    import boto3
    from botocore.config import Config
    from moto import mock_aws

    from functions.rules.aggregator import Aggregator, Count
    from functions.rules.store import CounterStore, StoreSettings
    from functions.rules.dedupe import Delivery
    from functions.rules.outbox import create_local_tables
    from functions.rules.sweeper import sweep

    began = time.monotonic()
    _speed_up_moto()
    with mock_aws():
        config = Config(region_name=REGION, retries={"total_max_attempts": 1}, parameter_validation=False)
        client = boto3.client("dynamodb", config=config, aws_access_key_id="x", aws_secret_access_key="x")
        inspect = boto3.client("dynamodb", config=config, aws_access_key_id="x", aws_secret_access_key="x")
        settings = StoreSettings(counters_table="counters", outbox_table="outbox")
        create_local_tables(inspect, settings)
        calls: Counter[str] = Counter()
        client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
        units: Counter[str] = Counter()
        _count_capacity_units(client, units)
        last_ms = stream[-1].arrival_time_ms
        now = [stream[0].arrival_time_ms]  # the processing clock: a second after each batch's newest arrival
        store = CounterStore(client, settings, clock=lambda: now[0] / 1000)
        # Activations on a clock of their own, fixed: their heartbeats (one request per date or window rule per
        # few minutes of processing and container, docs/backfill.md) are not the counters' requests per event.
        aggregator = Aggregator(store, activation_delay_ms=0, one_by_one=mode == ONE_BY_ONE,
                                activation_clock=lambda: stream[0].arrival_time_ms)
        # Activate the rules before the stream starts, so that every matching event is counted here; then
        # count what a function container asks once, to learn the activations.
        for rule in rules:
            if rule.rule_type is not RuleType.AGGREGATOR:
                CounterStore(inspect, settings).activations.ensure(rule, 0)
        aggregator.activations(rules)
        setup = sum(calls.values())
        calls.clear()

        units.clear()
        counts: Counter[Count] = Counter()
        deliveries = [Delivery(event, "shardId-000000000000", str(10**20 + position), partition_key(event))
                      for position, event in enumerate(stream)]
        starts = range(0, len(deliveries), batch_size)
        for number, start in enumerate(starts, 1):
            whole = deliveries[start:start + batch_size]
            now[0] = max(now[0], max(d.event.arrival_time_ms for d in whole) + 1000)
            batch = [d for d in whole if partition_of(d.event.user_id or "", partitions) == partition]
            aggregator.process(rules, batch, counts)
            if progress and number % max(1, len(starts) // 5) == 0:
                print(f"  {mode} [{partition + 1}/{partitions}]: {number}/{len(starts)} batches, "
                      f"{sum(calls.values())} requests, {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        requests = Counter(calls)
        stream_units = Counter(units)

        calls.clear()
        swept: Counter[str] = Counter()
        if mode == COALESCED:  # both modes leave the same tables; sweep one of them
            due_for_sweep = store.due_for_sweep

            def due(day: date, **options: Any):
                for item in due_for_sweep(day, **options):
                    swept[rules.by_id(item.rule_id).rule_type.value] += 1
                    yield item

            store.due_for_sweep = due  # type: ignore[method-assign]
            digest = _digest(inspect, settings)  # before the sweep changes anything
            now[0] = last_ms + DAY_MS
            sweep(store, rules, today=event_day(last_ms) + timedelta(days=1))
        else:
            digest = _digest(inspect, settings)
        sizes = _item_sizes(inspect, settings)
    return RunResult(mode, requests, setup, counts[Count.MATCHED], Counter(calls), swept, digest,
                     time.monotonic() - began, stream_units, sizes)


TRANSACTION_FACTOR = 2
"""DynamoDB bills each item of a transaction twice (prepare and commit)."""


def _size(attributes: dict[str, Any]) -> int:
    from functions.rules.dynamo import from_attributes
    from functions.rules.limits import item_size_bytes

    return item_size_bytes(from_attributes(attributes))


def write_units(operation: str, params: dict[str, Any]) -> tuple[int, int]:
    """(write units, of which transactional) billed on demand for one write request, from what it sends: a unit
    per started KB of each item put. An update or delete is billed on the larger of the item before and after;
    the aggregator sends neither, and they count 1 here."""
    if operation == "PutItem":
        return max(1, math.ceil(_size(params["Item"]) / 1024)), 0
    if operation == "TransactWriteItems":
        units = 0
        for action in params["TransactItems"]:
            put = action.get("Put")
            units += TRANSACTION_FACTOR * (max(1, math.ceil(_size(put["Item"]) / 1024)) if put else 1)
        return units, units
    if operation == "BatchWriteItem":
        return sum(max(1, math.ceil(_size(request["PutRequest"]["Item"]) / 1024)) if "PutRequest" in request
                   else 1 for requests in params["RequestItems"].values() for request in requests), 0
    return 1, 0


def read_units(operation: str, params: dict[str, Any], response: dict[str, Any]) -> float:
    """Read units billed on demand for one read request, from what it answered: a strongly consistent read is a
    unit per started 4 KB (an eventually consistent one half), at least one per request; a Query or Scan adds up
    its items' sizes before rounding, a GetItem or BatchGetItem rounds each item."""
    factor = 1.0 if params.get("ConsistentRead") else 0.5
    if operation == "GetItem":
        return factor * max(1, math.ceil(_size(response.get("Item", {})) / 4096))
    if operation in ("Query", "Scan"):
        return factor * max(1, math.ceil(sum(_size(item) for item in response.get("Items", [])) / 4096))
    if operation == "BatchGetItem":
        consistent = all(request.get("ConsistentRead") for request in params["RequestItems"].values())
        return (1.0 if consistent else 0.5) * sum(
            max(1, math.ceil(_size(item) / 4096)) for items in response.get("Responses", {}).values() for item in items)
    return 0.0


def _count_capacity_units(client: Any, units: Counter[str]) -> None:
    """Add each answered request's billed capacity units to `units`."""
    pending: list[dict[str, Any]] = []

    def remember(params: dict[str, Any], **_: Any) -> None:
        pending.append(dict(params))

    def account(model: Any, parsed: dict[str, Any], http_response: Any, **_: Any) -> None:
        params = pending.pop() if pending else {}
        if http_response.status_code >= 300:
            return  # a refused conditional write is billed too, but the counts here are of successful requests
        if model.name in WRITES:
            total, transactional = write_units(model.name, params)
            units["write"] += total
            units["transactional_write"] += transactional
        elif model.name in READS:
            units["read"] += read_units(model.name, params, parsed)

    client.meta.events.register("before-parameter-build.dynamodb", remember)
    client.meta.events.register("after-call.dynamodb", account)


def _item_sizes(client: Any, settings: Any) -> dict[str, list[int]]:
    """The sizes of the counter items (not the rules' activation records) and of the outbox entries."""
    from functions.rules.keys import META_PREFIX

    sizes: dict[str, list[int]] = {"counter": [], "outbox": []}
    for table, kind in ((settings.counters_table, "counter"), (settings.outbox_table, "outbox")):
        for page in client.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                if not item["pk"]["S"].startswith(META_PREFIX):
                    sizes[kind].append(_size(item))
    return sizes


def _speed_up_moto() -> None:
    """Two shortcuts in moto's DynamoDB, without which a 100k-event run takes an hour; what the store sends and
    what the tables answer are unchanged.

    - TransactWriteItems deep-copies every table it writes to, for a rollback: O(table) per call, so a long
      run is quadratic. The store's transactions only Put, and a Put replaces an item object, never changes
      one, so a copy of the table's item index is as good a snapshot.
    - Successful answers go through moto's generic, model-driven serializer; DynamoDB's JSON protocol is the
      result itself as JSON, which is what the replacement sends.
    """
    import copy

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table
    from moto.dynamodb.responses import DynamoResult

    generic = DynamoResult.execute_result

    def as_json(self: DynamoResult, context: Any) -> Any:
        if context.operation_model.name not in ("GetItem", "PutItem", "TransactWriteItems", "Query", "Scan"):
            return generic(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(self.result)

    DynamoResult.execute_result = as_json  # type: ignore[method-assign]

    class SnapshotCopy:
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if isinstance(value, Table):
                snapshot = copy.copy(value)
                snapshot.items = copy.copy(value.items)
                return snapshot
            return copy.deepcopy(value, memo)

    models.copy = SnapshotCopy  # type: ignore[attr-defined]


def _digest(client: Any, settings: Any) -> str:
    """A fingerprint of every counter's state and every outbox entry's action (not their timestamps)."""
    lines = []
    for table, fields in ((settings.counters_table, ("state",)), (settings.outbox_table, ("event_id", "name"))):
        for page in client.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                lines.append(json.dumps([item["pk"], *(item.get(f) for f in fields)], sort_keys=True))
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def _run_in_child(args: tuple) -> RunResult:
    return run(*args)


def combine(results: list[RunResult]) -> RunResult:
    """The partitions of one mode as one run."""
    total = results[0]
    for part in results[1:]:
        total = replace(total, requests=total.requests + part.requests,
                        matched_pairs=total.matched_pairs + part.matched_pairs,
                        sweep_requests=total.sweep_requests + part.sweep_requests, swept=total.swept + part.swept,
                        seconds=total.seconds + part.seconds, units=total.units + part.units,
                        item_sizes={kind: total.item_sizes[kind] + part.item_sizes[kind]
                                    for kind in total.item_sizes})
    digest = hashlib.sha256("".join(part.digest for part in results).encode()).hexdigest()
    return replace(total, digest=digest)


# --- report ------------------------------------------------------------------------------------------


def seed_estimate(rules: RuleSet, stream: list[CanonicalEvent]) -> tuple[int, int, int]:
    """The seed design's figures: operations for the stream (low, high) and date-rule item reads per day from
    re-querying every date rule's window each hour (each query re-reads the rule's matching events)."""
    low, high = (n * len(stream) for n in SEED_OPERATIONS_PER_EVENT)
    date_rules = [rule for rule in rules if rule.rule_type is RuleType.DATE]
    unique = {event.event_id: event for event in stream}.values()
    in_windows = sum(1 for rule in date_rules for event in unique if matches(rule, event))
    return low, high, 24 * in_windows


def report(args: argparse.Namespace, rules: RuleSet, stream: list[CanonicalEvent], one: RunResult,
           many: RunResult) -> int:
    events, pairs = len(stream), one.matched_pairs
    kinds = Counter(rule.rule_type.value for rule in rules)
    seed_low, seed_high, seed_daily_reads = seed_estimate(rules, stream)

    def writes(result: RunResult) -> int:
        return sum(result.requests[op] for op in WRITES)

    def reads(result: RunResult) -> int:
        return sum(result.requests[op] for op in READS)

    print(f"\nworkload: {events} events from {len({e.user_id for e in stream})} users over {DAYS} days; "
          f"{len(rules)} rules "
          f"({', '.join(f'{n} {kind}' for kind, n in sorted(kinds.items()))}); batches of {args.batch_size} from one "
          f"shard; bursts of 3–15 events, {args.focus:.0%} of one type, {args.concurrent} users at once; "
          f"seed {args.seed}")
    print(f"matched (event, rule) pairs: {pairs} ({pairs / events:.2f} per event)\n")
    header = f"{'DynamoDB requests':28}{'per event':>11}{'writes/pair':>13}{'reads/pair':>12}   by operation"
    print(header)
    print("-" * (len(header) + 50))
    print(f"{'seed design (estimate)':28}{f'{SEED_OPERATIONS_PER_EVENT[0]}–{SEED_OPERATIONS_PER_EVENT[1]}':>11}"
          f"{'':>13}{'':>12}   {SEED_OPERATIONS_PER_EVENT[0]}–{SEED_OPERATIONS_PER_EVENT[1]} operations per event "
          f"= {seed_low / pairs:.1f}–{seed_high / pairs:.1f} per matched pair")
    for label, result in ((ONE_BY_ONE, one), (f"{COALESCED} (batches of {args.batch_size})", many)):
        ops = ", ".join(f"{op} {n}" for op, n in sorted(result.requests.items()))
        print(f"{label:28}{sum(result.requests.values()) / events:>11.3f}{writes(result) / pairs:>13.3f}"
              f"{reads(result) / pairs:>12.3f}   {ops}")
    print(f"{'coalesced ÷ one-by-one':28}{sum(many.requests.values()) / sum(one.requests.values()):>11.3f}"
          f"{writes(many) / writes(one):>13.3f}{reads(many) / reads(one):>12.3f}")
    print(f"\nonce per function container: {one.setup_requests} requests "
          "(the activation records of the date and window rules)")
    print("scheduled work:")
    print(f"  seed design: an hourly re-query of the {kinds['date']} date rules' windows ≈ {seed_daily_reads} "
          "item reads "
          f"a day at this stream's size ({seed_daily_reads / events:.1f} per event)")
    sweep_ops = ", ".join(f"{op} {n}" for op, n in sorted(many.sweep_requests.items())) or "none"
    print(f"  this design: no scheduled job reads date rules (0 reads); a sweeper run read "
          f"{many.swept['window']} window-rule counters from the sweep index and {many.swept['date']} of date rules "
          f"({sweep_ops}; a first sweep: 31 days back and today, × {args.partitions} bench partitions)")
    same = one.digest == many.digest
    print(f"\nsame counters and outbox both ways: {'yes' if same else 'NO'}   (moto time: one-by-one "
          f"{one.seconds:.0f} s, coalesced {many.seconds:.0f} s, summed over partitions)")

    checks = [
        (f"≤ {TARGET_ONE_BY_ONE:g} write per matched pair one by one", writes(one) / pairs <= TARGET_ONE_BY_ONE),
        (f"≤ {TARGET_COALESCED:g} writes per matched pair coalesced in batches of {args.batch_size}",
         writes(many) / pairs <= TARGET_COALESCED),
        ("zero scheduled reads for date rules", many.swept["date"] == 0 and "Scan" not in many.sweep_requests),
        ("the same outcome both ways", same),
    ]
    for label, result in ((ONE_BY_ONE, one), (COALESCED, many)):
        print(f"{label}: {result.units['write'] / events:.3f} write units per event "
              f"({result.units['transactional_write'] / events:.3f} of them in transactions), "
              f"{result.units['read'] / events:.3f} read units per event")
    for kind, stats in size_stats(many.item_sizes).items():
        print(f"{kind} items: {stats['count']}, mean {stats['mean']:.0f} B, p50 {stats['p50']} B, "
              f"p95 {stats['p95']} B, max {stats['max']} B")
    print()
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {label}")
    if args.json:
        write_json(args, rules, stream, one, many, checks)
    return 0 if all(ok for _, ok in checks) else 1


def size_stats(sizes: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    stats = {}
    for kind, values in sizes.items():
        ordered = sorted(values) or [0]
        stats[kind] = {"count": len(values), "mean": sum(ordered) / len(ordered),
                       "p50": ordered[len(ordered) // 2], "p95": ordered[min(len(ordered) - 1, len(ordered) * 95 // 100)],
                       "max": ordered[-1]}
    return stats


def write_json(args: argparse.Namespace, rules: RuleSet, stream: list[CanonicalEvent], one: RunResult,
               many: RunResult, checks: list[tuple[str, bool]]) -> None:
    events = len(stream)

    def mode(result: RunResult) -> dict[str, Any]:
        return {
            "requests": dict(sorted(result.requests.items())),
            "requests_per_event": sum(result.requests.values()) / events,
            "write_units_per_event": result.units["write"] / events,
            "transactional_write_units_per_event": result.units["transactional_write"] / events,
            "read_units_per_event": result.units["read"] / events,
            "outbox_entries_per_event": len(result.item_sizes["outbox"]) / events,
        }

    write_result(args.json, benchmark="rules", command=command_line("bench.rules", args.argv), figures={
        "events": events, "users": len({e.user_id for e in stream}), "rules": len(rules),
        "batch_size": args.batch_size, "seed": args.seed, "matched_pairs_per_event": one.matched_pairs / events,
        "modes": {ONE_BY_ONE: mode(one), COALESCED: mode(many)},
        "item_sizes": size_stats(many.item_sizes),
        "setup_requests_per_container": one.setup_requests,
        "checks": {label: ok for label, ok in checks},
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--focus", type=float, default=0.9, help="share of a burst's events of its own type")
    parser.add_argument("--concurrent", type=int, default=10, help="users bursting at the same time")
    parser.add_argument("--partitions", type=int, default=4, help="the users split over this many moto processes")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the figures here (bench/results/rules.json is what bench.cost reads)")
    args = parser.parse_args(argv)
    args.argv = argv

    began = time.monotonic()
    rng = random.Random(args.seed)
    rules = build_rules(rng, args.rules)
    stream = build_stream(rng, args.events, args.users, focus=args.focus, concurrent=args.concurrent)
    print(f"generated {len(stream)} events and {len(rules)} rules; counting them both ways on moto "
          f"({args.partitions} partitions, {args.processes} processes) …", file=sys.stderr)
    jobs = [(mode, rules, stream, args.batch_size, partition, args.partitions, not args.quiet)
            for mode in (ONE_BY_ONE, COALESCED) for partition in range(args.partitions)]
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        results = pool.map(_run_in_child, jobs, chunksize=1)
    one = combine([r for r in results if r.mode == ONE_BY_ONE])
    many = combine([r for r in results if r.mode == COALESCED])
    status = report(args, rules, stream, one, many)
    print(f"\n(bench took {time.monotonic() - began:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
