"""Benchmark: the aggregator at shard speed — (rule, user) groups written one after another vs concurrently,
with a per-request DynamoDB latency injected.

    python -m bench.aggregator [--latency-ms 5 10] [--json OUT] [--events 10000] [--users 2000]
                               [--batch-size 100] [--concurrency 16] [--memory-mb 512] [--seed 7]

The stream is bench/rules.py's (its rules and generator: 20 rules, many users in interleaved bursts, ~1%
producer duplicates, partition keys as producers set them), as raw Lambda Kinesis records (base64 app JSON,
sequence numbers, partition keys, arrival timestamps), in batches of the stack's aggregator batch size
(components/stream_consumer.py: 100). Each batch goes through the real handler path — `KinesisBatch`,
`CoalescingBatchProcessor`, `process_partial_response`, `Aggregator`, `CounterStore`, the metrics flush — on a
processing clock that follows the stream, once with GROUP_CONCURRENCY 1 (today: one request after another)
and once with the pool, at each latency.

DynamoDB is `bench.dynamodb_standin.DynamoDbStandIn`, below botocore: botocore's own CPU (serialise, sign,
parse) is measured as in Lambda, the stand-in's CPU is measured separately and subtracted, and each request
waits `latency` outside any lock, so moto's CPU is never mistaken for DynamoDB latency (moto is far slower:
bench/rules.py). tests/bench/test_dynamodb_standin.py shows the stand-in leaves the same counters, outbox and
responses as moto on the same batches.

What is measured and what is modelled:

- measured (this machine, wall clock, injected latency): events/s, billed ms per million events (Lambda bills
  each invocation's duration rounded up to 1 ms: https://aws.amazon.com/lambda/pricing/), requests per event,
  the aggregator's CPU ms per event (process CPU of all threads). The stand-in's own CPU (decoding, executing,
  encoding: DynamoDB's work, inside the latency in AWS) is taken out of both wall and CPU time; the JSON keeps
  the events/s with it left in (`events_per_s_with_standin_cpu`);
- modelled for Lambda at a memory size M: Lambda gives CPU in proportion to memory, one vCPU at 1,769 MB
  (https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html), and the aggregator is one Python
  process whose threads share one GIL, so it uses at most one vCPU. Each batch's CPU time is scaled by
  max(1, 1769 / M) and its waiting time (wall − CPU, measured) is kept: an upper bound, since with slower CPU
  more of the waiting overlaps the work. One vCPU is taken to be as fast as one core of this machine, and the
  HTTPS connection's own CPU (TLS on kept-alive connections) is not in the measurement.

Targets (exit status 1 if one is missed), at 5 ms and ParallelizationFactor 1: concurrent ≥ 2,000 events/s
(twice a shard's 1,000 records/s write limit), measured and modelled at the aggregator's memory size
(`--memory-mb`, the deployed one by default); billed ms per million events ≥ 5× lower than sequential
("today": GROUP_CONCURRENCY 1 at 512 MB), measured and modelled.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from bench.rules import REGION, build_rules, build_stream, partition_key
from functions.events.canonical import CanonicalEvent

STREAM_ARN = f"arn:aws:kinesis:{REGION}:123456789012:stream/engagement-events"
SHARD_ID = "shardId-000000000000"
COUNTERS, OUTBOX = "rule-counters", "rule-outbox"
LAMBDA_VCPU_MB = 1769
"""Memory at which a function has the equivalent of one full vCPU (Lambda docs, configuration-memory)."""
TODAY_MEMORY_MB = 512
"""The aggregator's memory before this benchmark (components/rule_engine.py)."""
TARGET_EVENTS_PER_S = 2_000
TARGET_BILLED_FACTOR = 5.0
SEQUENTIAL = 1


def deployed_memory_mb() -> int:
    """The aggregator's memory size in the stack (components/rule_engine.py)."""
    from components.rule_engine import AGGREGATOR_MEMORY_MB

    return AGGREGATOR_MEMORY_MB


def kinesis_records(stream: Sequence[CanonicalEvent]) -> list[dict[str, Any]]:
    """The events as the records of Lambda's Kinesis event (https://docs.aws.amazon.com/lambda/latest/dg/with-kinesis.html)."""
    records = []
    for position, event in enumerate(stream):
        document: dict[str, Any] = {"schema": "engagement-loop/v1", "event_type": event.event_type,
                                    "event_time_ms": event.event_time_ms, "user_id": event.user_id,
                                    "event_id": event.event_id}
        if event.attributes:
            document["attributes"] = dict(event.attributes)
        if event.metrics:
            document["metrics"] = dict(event.metrics)
        sequence = f"4959{position:052d}"
        records.append({
            "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": partition_key(event),
                        "sequenceNumber": sequence,
                        "data": base64.b64encode(json.dumps(document).encode()).decode("ascii"),
                        "approximateArrivalTimestamp": event.arrival_time_ms / 1000},
            "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": f"{SHARD_ID}:{sequence}",
            "eventName": "aws:kinesis:record", "invokeIdentityArn": "arn:aws:iam::123456789012:role/aggregator",
            "awsRegion": REGION, "eventSourceARN": STREAM_ARN,
        })
    return records


def workload(events: int, users: int, rules: int, seed: int) -> tuple[Any, list[CanonicalEvent]]:
    rng = random.Random(seed)
    rule_set = build_rules(rng, rules)
    return rule_set, build_stream(rng, events, users)


class _NoFailures:
    """The failures queue: the bench's records all parse; a reject would be a bench bug."""

    def send(self, record: Any) -> None:
        raise AssertionError(f"the bench stream had a rejected record: {record.reason}")


@dataclass
class Run:
    """One (latency, concurrency) pass over the stream."""

    latency_ms: float
    concurrency: int
    events: int
    invocations: int
    wall_s: float
    cpu_s: float
    """The aggregator's CPU (all its threads), the stand-in's excluded."""
    requests: dict[str, int]
    failed_records: int
    batch_wall_ms: list[float] = field(repr=False)
    """Each invocation's wall time, less the stand-in's own CPU (DynamoDB's work, inside the latency in AWS)."""
    batch_cpu_ms: list[float] = field(repr=False)
    standin_cpu_s: float = 0.0
    digest: str = ""

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s

    @property
    def raw_events_per_s(self) -> float:
        """With the stand-in's CPU left in the wall time."""
        return self.events / (self.wall_s + self.standin_cpu_s)

    @property
    def billed_ms_per_million(self) -> float:
        return sum(math.ceil(ms) for ms in self.batch_wall_ms) * 1e6 / self.events

    def modelled_batch_ms(self, memory_mb: int) -> list[float]:
        factor = max(1.0, LAMBDA_VCPU_MB / memory_mb)
        return [max(0.0, wall - cpu) + cpu * factor for wall, cpu in zip(self.batch_wall_ms, self.batch_cpu_ms)]

    def modelled_events_per_s(self, memory_mb: int) -> float:
        return self.events / (sum(self.modelled_batch_ms(memory_mb)) / 1000)

    def modelled_billed_ms_per_million(self, memory_mb: int) -> float:
        return sum(math.ceil(ms) for ms in self.modelled_batch_ms(memory_mb)) * 1e6 / self.events


def run(rules: Any, stream: Sequence[CanonicalEvent], records: Sequence[dict[str, Any]], *, batch_size: int,
        latency_ms: float, concurrency: int) -> Run:
    """The stream through the real handler path, on the stand-in, with `concurrency` groups at once."""
    import boto3

    from bench.dynamodb_standin import DynamoDbStandIn
    from cli.lambda_context import LocalLambdaContext
    from functions.rules.aggregator import Aggregator, dynamodb_client_config
    from functions.rules.model import RuleType
    from functions.rules.store import CounterStore, StoreSettings

    standin = DynamoDbStandIn((COUNTERS, OUTBOX), latency_s=latency_ms / 1000)
    # The function's own client configuration (retries, connection pool), credentials of no account.
    client = boto3.client("dynamodb", region_name=REGION, config=dynamodb_client_config(concurrency),
                          aws_access_key_id="bench", aws_secret_access_key="bench")
    standin.register(client)
    settings = StoreSettings(counters_table=COUNTERS, outbox_table=OUTBOX)
    now = [stream[0].arrival_time_ms]  # the processing clock: a second after each batch's newest arrival
    store = CounterStore(client, settings, clock=lambda: now[0] / 1000)
    # Activations before the stream starts and on a fixed clock of their own (as bench/rules.py): their
    # heartbeats are a request per rule per few minutes of processing, not the counters' requests per event.
    for rule in rules:
        if rule.rule_type is not RuleType.AGGREGATOR:
            store.activations.ensure(rule, 0)
    aggregator = Aggregator(store, activation_delay_ms=0, activation_clock=lambda: stream[0].arrival_time_ms,
                            concurrency=concurrency)
    aggregator.activations(rules)
    standin.requests.clear()
    context = LocalLambdaContext(function_name="bench-aggregator", region=REGION, account_id="123456789012")

    wall, cpu, failed = [], [], 0
    sink = io.StringIO()
    for start in range(0, len(records), batch_size):
        batch = records[start:start + batch_size]
        now[0] = max(now[0], round(max(r["kinesis"]["approximateArrivalTimestamp"] for r in batch) * 1000) + 1000)
        standin_cpu, began_cpu, began = standin.cpu_s, time.process_time(), time.perf_counter()
        with contextlib.redirect_stdout(sink):  # the metrics' embedded-metric-format line, as Lambda prints it
            response, _ = invoke(aggregator, rules, batch, context)
        standin_ms = (standin.cpu_s - standin_cpu) * 1000
        wall.append((time.perf_counter() - began) * 1000 - standin_ms)
        cpu.append((time.process_time() - began_cpu) * 1000 - standin_ms)
        failed += len(response.get("batchItemFailures", []))
        sink.seek(0)
        sink.truncate()
    return Run(latency_ms=latency_ms, concurrency=concurrency, events=len(records), invocations=len(wall),
               wall_s=sum(wall) / 1000, cpu_s=sum(cpu) / 1000, requests=dict(sorted(standin.requests.items())),
               failed_records=failed, batch_wall_ms=wall, batch_cpu_ms=cpu, standin_cpu_s=standin.cpu_s,
               digest=tables_digest(standin.tables))


def invoke(aggregator: Any, rules: Any, batch: Sequence[dict[str, Any]], context: Any,
           failures: Any = None) -> tuple[dict[str, Any], Any]:
    """One invocation as `lambda_handler` makes it, with the given aggregator (its store, its clock): the
    partial-batch response and the counts."""
    from aws_lambda_powertools.utilities.batch import process_partial_response

    from functions.events.canonical import IdentityMode
    from functions.rules.aggregator import CoalescingBatchProcessor, Count, KinesisBatch, publish_counts

    invocation = KinesisBatch(aggregator, rules, IdentityMode.USER_OR_ENDPOINT, failures or _NoFailures())
    try:
        response = process_partial_response(event={"Records": list(batch)}, record_handler=invocation.read,
                                            processor=CoalescingBatchProcessor(invocation.flush), context=context)
    finally:
        publish_counts(invocation.counts, Count, "EngagementLoop")
    return response, invocation.counts


def tables_digest(tables: dict[str, dict[str, Any]]) -> str:
    """A fingerprint of both tables' items (every attribute)."""
    import hashlib

    text = json.dumps({name: sorted(items.items()) for name, items in tables.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def memory_meeting(run: Run, events_per_s: float) -> int | None:
    """The smallest memory size (MB, in Lambda's 1 MB steps) at which the modelled rate reaches `events_per_s`;
    None if even a full vCPU does not."""
    if run.modelled_events_per_s(LAMBDA_VCPU_MB) < events_per_s:
        return None
    low, high = 128, LAMBDA_VCPU_MB
    while low < high:
        middle = (low + high) // 2
        if run.modelled_events_per_s(middle) >= events_per_s:
            high = middle
        else:
            low = middle + 1
    return low


def gb_s_per_million(run: Run, memory_mb: int) -> float:
    return run.modelled_billed_ms_per_million(memory_mb) / 1000 * memory_mb / 1024


def figures(runs: dict[tuple[float, int], Run], latencies: Sequence[float], concurrency: int,
            memory_mb: int) -> dict[str, Any]:
    """The JSON document: the issue's three figures per latency, then the details."""
    # The concurrent figure first in `billed_ms_per_million_events`: bench.cost reads the first 5 ms figure.
    document: dict[str, Any] = {
        "billed_ms_per_million_events": {}, "sequential_events_per_s": {}, "concurrent_events_per_s": {},
        "modelled_lambda": {}, "details": {},
    }
    for latency in latencies:
        seq, conc = runs[(latency, SEQUENTIAL)], runs[(latency, concurrency)]
        key = f"{latency:g}ms"
        document["sequential_events_per_s"][key] = round(seq.events_per_s)
        document["concurrent_events_per_s"][key] = round(conc.events_per_s)
        document["billed_ms_per_million_events"][key] = {"concurrent": round(conc.billed_ms_per_million),
                                                         "sequential": round(seq.billed_ms_per_million)}
        needed = memory_meeting(conc, TARGET_EVENTS_PER_S)
        document["modelled_lambda"][key] = {
            f"{mb}MB": {"sequential_events_per_s": round(seq.modelled_events_per_s(mb)),
                        "concurrent_events_per_s": round(conc.modelled_events_per_s(mb)),
                        "billed_ms_per_million_events": {
                            "sequential": round(seq.modelled_billed_ms_per_million(mb)),
                            "concurrent": round(conc.modelled_billed_ms_per_million(mb))},
                        "gb_s_per_million_events": {"sequential": round(gb_s_per_million(seq, mb), 1),
                                                    "concurrent": round(gb_s_per_million(conc, mb), 1)}}
            for mb in sorted({TODAY_MEMORY_MB, memory_mb, 1024, LAMBDA_VCPU_MB})
        } | {"memory_mb_for_target": needed,
             "gb_s_per_million_events_at_that_memory": None if needed is None else round(gb_s_per_million(conc, needed), 1)}
        for label, one in (("sequential", seq), ("concurrent", conc)):
            requests = sum(one.requests.values())
            document["details"].setdefault(key, {})[label] = {
                "group_concurrency": one.concurrency, "events": one.events, "invocations": one.invocations,
                "wall_s": round(one.wall_s, 3), "standin_cpu_s": round(one.standin_cpu_s, 3),
                "events_per_s_with_standin_cpu": round(one.raw_events_per_s), "cpu_ms_per_event": round(one.cpu_s * 1000 / one.events, 4),
                "wait_ms_per_event": round((one.wall_s - one.cpu_s) * 1000 / one.events, 4),
                "requests_per_event": round(requests / one.events, 4), "requests": one.requests,
                "requests_per_invocation": round(requests / one.invocations, 1),
                "failed_records": one.failed_records, "tables_digest": one.digest,
            }
    return document


def report(args: argparse.Namespace, document: dict[str, Any], runs: dict[tuple[float, int], Run]) -> int:
    memory = args.memory_mb
    print(f"\n{'latency':>8} {'mode':>16} {'events/s':>10} {'billed ms/1M ev':>16} {'req/event':>10} "
          f"{'CPU ms/ev':>10} {'wait ms/ev':>11}   modelled at {memory} MB: events/s, billed ms/1M ev")
    for latency in args.latency_ms:
        key = f"{latency:g}ms"
        for label, concurrency in (("sequential", SEQUENTIAL), (f"concurrent ({args.concurrency})", args.concurrency)):
            one = runs[(latency, concurrency)]
            detail = document["details"][key][label.split()[0]]
            print(f"{key:>8} {label:>16} {one.events_per_s:>10,.0f} {one.billed_ms_per_million:>16,.0f} "
                  f"{detail['requests_per_event']:>10.3f} {detail['cpu_ms_per_event']:>10.3f} "
                  f"{detail['wait_ms_per_event']:>11.3f}   {one.modelled_events_per_s(memory):>8,.0f}, "
                  f"{one.modelled_billed_ms_per_million(memory):,.0f}")
    print("\nmeasured: events/s, billed ms (each invocation's wall time rounded up to 1 ms), requests, CPU and "
          "wait per event, on this machine with the latency injected per request; wall times less the stand-in's "
          "own CPU (DynamoDB's work: inside the latency in AWS)")
    print(f"modelled: Lambda at a memory size M — CPU time × max(1, {LAMBDA_VCPU_MB}/M), waiting kept (one "
          "Python process uses at most one vCPU).")
    for latency in args.latency_ms:
        key = f"{latency:g}ms"
        model = document["modelled_lambda"][key]
        needed = model["memory_mb_for_target"]
        sizes = ", ".join(f"{mb}: {v['concurrent_events_per_s']:,} ev/s, {v['gb_s_per_million_events']['concurrent']} "
                          "GB-s/1M" for mb, v in model.items() if mb.endswith("MB"))
        print(f"  {key}: concurrent at {sizes}; {TARGET_EVENTS_PER_S:,} events/s needs "
              + (f"{needed} MB ({model['gb_s_per_million_events_at_that_memory']} GB-s per million events)"
                 if needed else "more than one vCPU gives (not reachable by memory alone)"))

    five = 5.0 if 5.0 in args.latency_ms else args.latency_ms[0]
    seq, conc = runs[(five, SEQUENTIAL)], runs[(five, args.concurrency)]
    today = seq.modelled_billed_ms_per_million(TODAY_MEMORY_MB)
    same = all(runs[(latency, SEQUENTIAL)].digest == runs[(latency, args.concurrency)].digest
               for latency in args.latency_ms)
    checks = [
        (f"concurrent ≥ {TARGET_EVENTS_PER_S:,} events/s at {five:g} ms, measured ({conc.events_per_s:,.0f})",
         conc.events_per_s >= TARGET_EVENTS_PER_S),
        (f"concurrent ≥ {TARGET_EVENTS_PER_S:,} events/s at {five:g} ms, modelled at {memory} MB "
         f"({conc.modelled_events_per_s(memory):,.0f})", conc.modelled_events_per_s(memory) >= TARGET_EVENTS_PER_S),
        (f"billed ms per million events ≥ {TARGET_BILLED_FACTOR:g}× lower, measured "
         f"({seq.billed_ms_per_million / conc.billed_ms_per_million:.1f}×)",
         seq.billed_ms_per_million >= TARGET_BILLED_FACTOR * conc.billed_ms_per_million),
        (f"billed ms per million events ≥ {TARGET_BILLED_FACTOR:g}× lower than today (sequential at "
         f"{TODAY_MEMORY_MB} MB), modelled at {memory} MB "
         f"({today / conc.modelled_billed_ms_per_million(memory):.1f}×)",
         today >= TARGET_BILLED_FACTOR * conc.modelled_billed_ms_per_million(memory)),
        ("sequential and concurrent leave the same tables, no record failed",
         same and all(one.failed_records == 0 for one in runs.values())),
    ]
    document["targets"] = [{"target": label, "met": ok} for label, ok in checks]
    print()
    for label, ok in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {label}")
    return 0 if all(ok for _, ok in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aggregator", description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[5.0, 10.0],
                        help="per-request DynamoDB latency(ies) to inject (default 5 10)")
    parser.add_argument("--json", metavar="OUT", help="write the figures to this file")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=100, help="default 100, the stack's")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="GROUP_CONCURRENCY of the concurrent runs (default: the function's default)")
    parser.add_argument("--memory-mb", type=int, default=None,
                        help="memory size for the modelled figures (default: the deployed aggregator's)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    from functions.rules.aggregator import DEFAULT_GROUP_CONCURRENCY

    args.concurrency = args.concurrency or DEFAULT_GROUP_CONCURRENCY
    args.memory_mb = args.memory_mb or deployed_memory_mb()
    began = time.monotonic()
    rules, stream = workload(args.events, args.users, args.rules, args.seed)
    records = kinesis_records(stream)
    print(f"{len(records)} records of {len({e.user_id for e in stream})} users, {len(rules)} rules, batches of "
          f"{args.batch_size}; latencies {args.latency_ms} ms; GROUP_CONCURRENCY 1 and {args.concurrency}",
          file=sys.stderr)
    runs: dict[tuple[float, int], Run] = {}
    for latency in args.latency_ms:
        for concurrency in (SEQUENTIAL, args.concurrency):
            runs[(latency, concurrency)] = one = run(rules, stream, records, batch_size=args.batch_size,
                                                     latency_ms=latency, concurrency=concurrency)
            print(f"  {latency:g} ms, concurrency {concurrency}: {one.events_per_s:,.0f} events/s "
                  f"({one.wall_s:.1f} s)", file=sys.stderr)
    document = figures(runs, args.latency_ms, args.concurrency, args.memory_mb)
    status = report(args, document, runs)
    result = {
        **document,
        "workload": {"events": len(records), "users": len({e.user_id for e in stream}), "rules": len(rules),
                     "batch_size": args.batch_size, "group_concurrency": args.concurrency, "seed": args.seed,
                     "parallelization_factor": 1, "memory_mb": args.memory_mb},
        "measured": "sequential_events_per_s, concurrent_events_per_s, billed_ms_per_million_events, details: "
                    "wall and CPU time on the measuring machine (2 cores, one used: one GIL) with the latency "
                    "injected per request, the stand-in's own CPU taken out; a core of it is taken to be one "
                    f"Lambda vCPU, i.e. these are the figures at {LAMBDA_VCPU_MB} MB and above",
        "modelled": f"modelled_lambda: per invocation, CPU ms × max(1, {LAMBDA_VCPU_MB}/memory MB) + the measured "
                    "wait (an upper bound); GB-s = billed ms × memory",
        "machine_datetime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "exit_status": status,
    }
    if args.json:
        from bench.result_file import command_line, write_result

        write_result(Path(args.json), benchmark="aggregator", command=command_line("bench.aggregator", argv),
                     figures=result)
    print(f"\n(bench took {time.monotonic() - began:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
