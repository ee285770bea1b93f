"""What the stack costs a month, per service, from the benchmarks' measured request counts and a dated price table.

    python -m bench.cost [--endpoints 100000] [--events-per-user-day 10] [--rules 20] [--record-bytes 1024]
                         [--stream-mode on-demand|provisioned] [--shards 1] [--app-share 0.5]
                         [--lake-days 365] [--training-hours 4] [--results bench/results] [--json OUT]

Inputs, and where each comes from (the table's last column says which, line by line):

- **measured**: per-event DynamoDB write/read units (transactional writes at 2 units per started KB), outbox
  entries per event and item sizes from `bench/results/rules.json` (`python -m bench.rules --json`); lake bytes per
  event and the bytes the interactions query reads per event of history from `bench/results/lake.json`
  (`python -m bench.lake --json`); the aggregator's billed Lambda time per million events from
  `bench/results/aggregator.json` (`python -m bench.aggregator --json`) when that file exists;
- **deployed**: what the program creates — KMS keys, alarms, log groups, functions and their memory, the event
  source mappings' batch sizes and windows, the schedules — read by running the real program under Pulumi's mocks
  with `Pulumi.dev.yaml` (as `tests/infra` does);
- **modelled**: what no benchmark measures (Lambda durations of the other functions, log bytes per invocation,
  Personalize training hours); the numbers are constants in this file, named and explained.

The measured per-event figures come from the benchmark's 20 rules; `--rules N` scales the per-event DynamoDB and
outbox figures by N/20 (a modelled scaling: the counters' writes grow with the matched (event, rule) pairs).

There is no cost target in the issue: the command exits 1 when an input is missing or invalid — a price line without
a source, date or unit; `rules.json` or `lake.json` missing or without a figure the model needs (they have no
fallback; the aggregator's duration falls back to a modelled figure, said in the output) — and 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench.prices import PRICES, Price, table_problems, unverified
from bench.result_file import RESULTS

HOURS_PER_MONTH = 730
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
GB = 1024 ** 3
KB = 1024
SEED_MONTHLY_USD = 140.0
"""The seed's own estimate at 100,000 endpoints, without Personalize (the issue: "~$140/month")."""
SEED_ENDPOINTS = 100_000
BENCH_RULES = 20
"""The rule count `bench/rules.py` measures with (its default)."""
MEASURED, MODELLED, DEPLOYED, INPUT = "measured", "modelled", "deployed", "input"

# --- modelled constants: nothing measures these; each says why it is what it is -----------------------------
AGGREGATOR_DYNAMODB_LATENCY_MS = 5.0
"""Fallback for the aggregator's duration without `aggregator.json`: each DynamoDB request it sends (measured per
event) taken as 5 ms of billed time, plus `AGGREGATOR_CPU_MS_PER_EVENT`."""
AGGREGATOR_CPU_MS_PER_EVENT = 0.3
INVOCATION_OVERHEAD_MS = 10.0
"""Billed time of an invocation beyond its records (handler entry, Powertools, the response)."""
NORMALISE_MS_PER_RECORD = 0.1
"""The normaliser on an ordinary record (bench/normalise.py times hostile records at 1–4 µs per KB; 0.1 ms is
generous for a 1 KB record with JSON parsing and re-serialising)."""
DISPATCH_MS_PER_ENTRY = 30.0
"""A rule action: an outbox read, an EventBridge PutEvents and an outbox update, ~10 ms each."""
SCHEDULED_RUN_MS = 500.0
"""A reconciler, sweeper or backfill run with nothing unusual to do (a few queries, no backfill)."""
RETRAINING_LAMBDA_INVOCATIONS_PER_RUN = 30
RETRAINING_LAMBDA_MS = 1000.0
RETRAINING_STATE_TRANSITIONS_PER_RUN = 120
"""The state machine's steps and its polling loops (import and training take hours: a Wait + a check every few
minutes)."""
LOG_BYTES_PER_INVOCATION = 600
"""Lambda's START/END/REPORT lines plus one structured log line; errors log more, but are rare."""
FIREHOSE_LOG_BYTES_PER_MONTH = 0
"""Firehose logs only delivery errors."""
KMS_REQUESTS_PER_STREAM_SHARD_HOUR = 12
"""Kinesis re-uses a data key for a while per shard (SSE-KMS); ~12 GenerateDataKey/Decrypt an hour per shard and
consumer is the order of magnitude AWS's Kinesis SSE page describes; with S3 bucket keys the lake adds little."""
ACTIVE_SHARDS_ON_DEMAND = 4
"""An on-demand stream starts with 4 shards' capacity (for the KMS requests above)."""
INTERACTIONS_BYTES_PER_ROW = 60
"""A CSV row USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP."""
INTERACTIONS_ROWS_PER_EVENT = 0.13
"""`bench/results/lake.json`'s all-history rows per event (133,043 of 1,000,000) when the file lacks it."""
SCORED_EVENT_SHARE = 0.067
"""Events the real-time tracker sends to Personalize (scored engagements; lake.json's 67,016 of 1,000,000)."""
DEFAULT_TRAINING_HOURS = 4.0
"""Training hours a FULL training bills at this size (Personalize picks the instances; no benchmark here)."""


class InputError(Exception):
    """A measured input is missing or unusable, or a price line is incomplete; `problems` lists each."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


# --- inputs ------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scale:
    """What the stack is sized for."""

    endpoints: int = SEED_ENDPOINTS
    events_per_user_day: float = 10.0
    rules: int = BENCH_RULES
    record_bytes: int = 1024
    stream_mode: str = "on-demand"
    shards: int = 1
    """Provisioned shards of the trusted stream (`--stream-mode provisioned`)."""
    app_share: float = 0.5
    """Share of the events apps write to the app stream (the rest: Pinpoint, SES, exposures on the trusted one)."""
    lake_days: int = 365
    """How much history the lake holds (S3 storage, and what `historyDays: -1`, the default, reads)."""
    training_hours: float = DEFAULT_TRAINING_HOURS

    def __post_init__(self) -> None:
        if self.endpoints < 1 or self.events_per_user_day <= 0 or self.rules < 0 or self.record_bytes < 1:
            raise ValueError("Scale: expected endpoints ≥ 1, events per user-day > 0, rules ≥ 0, record bytes ≥ 1")
        if self.stream_mode not in ("on-demand", "provisioned"):
            raise ValueError(f"Scale.stream_mode: expected on-demand or provisioned, got {self.stream_mode!r}")
        if not 1 <= self.shards <= 500:
            raise ValueError(f"Scale.shards: expected 1–500, got {self.shards}")
        if not 0 <= self.app_share <= 1:
            raise ValueError(f"Scale.app_share: expected 0–1, got {self.app_share}")

    @property
    def events_per_month(self) -> float:
        return self.endpoints * self.events_per_user_day * DAYS_PER_MONTH

    def trusted_shards_needed(self) -> int:
        """The fewest provisioned shards that take the trusted stream's average writes: a shard takes 1 MB/s
        or 1,000 records/s (https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html).
        Peaks need more; this is the floor below which the stack would throttle its producers all month."""
        records_per_s = self.events_per_month * (1 - self.app_share) / (DAYS_PER_MONTH * 86_400)
        return max(1, math.ceil(records_per_s / 1_000), math.ceil(records_per_s * self.record_bytes / 1_048_576))


@dataclass(frozen=True, slots=True)
class Measured:
    """Per-event figures from the committed benchmark results, each with where it came from."""

    write_units_per_event: float
    transactional_write_units_per_event: float
    read_units_per_event: float
    requests_per_event: float
    outbox_entries_per_event: float
    counter_item_bytes: float
    lake_bytes_per_event: float
    scan_bytes_per_event_all_history: float
    interactions_rows_per_event: float
    aggregator_billed_ms_per_event: float | None
    """None: no aggregator.json; the duration is modelled."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Input → `<file>: <command> (<date>)`."""


def _read_result(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError([f"{path}: missing; write it with the benchmark's --json"]) from None
    except (OSError, ValueError) as error:
        raise InputError([f"{path}: unreadable ({error})"]) from None
    for key in ("command", "date", "figures"):
        if key not in document:
            raise InputError([f"{path}: no {key!r} (expected a benchmark --json file)"])
    return document


def _number(document: Mapping[str, Any], path: Path, *keys: str) -> float:
    value: Any = document["figures"]
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise InputError([f"{path}: no figures.{'.'.join(keys)}"])
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError([f"{path}: figures.{'.'.join(keys)} is {value!r}, expected a number ≥ 0"])
    return float(value)


def _billed_ms_per_million(figures: Any) -> float | None:
    """`billed_ms_per_million_events` wherever the aggregator bench put it: a number, or figures per DynamoDB
    latency (the 5 ms one preferred, as the modelled fallback assumes 5 ms)."""
    found: list[tuple[str, float]] = []

    def walk(value: Any, trail: str) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(inner, f"{trail}.{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and "billed_ms_per_million" in trail:
            found.append((trail, float(value)))

    walk(figures, "figures")
    if not found:
        return None
    preferred = [v for trail, v in found if re.search(r"(^|[^0-9.])5(\.0)?(_?ms)?($|[^0-9])", trail)]
    return (preferred or [v for _, v in found])[0]


def load_measured(results: Path = RESULTS) -> Measured:
    """Read `rules.json`, `lake.json` and (if present) `aggregator.json` from `results`."""
    problems: list[str] = []
    sources: dict[str, str] = {}
    rules_path, lake_path, aggregator_path = (results / f"{n}.json" for n in ("rules", "lake", "aggregator"))
    values: dict[str, float] = {}
    try:
        rules = _read_result(rules_path)
        mode = ("modes", "coalesced")
        values.update(
            write_units_per_event=_number(rules, rules_path, *mode, "write_units_per_event"),
            transactional_write_units_per_event=_number(rules, rules_path, *mode,
                                                        "transactional_write_units_per_event"),
            read_units_per_event=_number(rules, rules_path, *mode, "read_units_per_event"),
            requests_per_event=_number(rules, rules_path, *mode, "requests_per_event"),
            outbox_entries_per_event=_number(rules, rules_path, *mode, "outbox_entries_per_event"),
            counter_item_bytes=_number(rules, rules_path, "item_sizes", "counter", "mean"),
        )
        sources["rules"] = f"{rules_path.name}: {rules['command']} ({rules['date']})"
    except InputError as error:
        problems.extend(error.problems)
    try:
        lake = _read_result(lake_path)
        events = _number(lake, lake_path, "events")
        values.update(
            lake_bytes_per_event=_number(lake, lake_path, "lake_bytes_per_event"),
            scan_bytes_per_event_all_history=_number(lake, lake_path, "histories", "-1", "column_bytes") / events,
            interactions_rows_per_event=_number(lake, lake_path, "histories", "-1", "interactions_rows") / events,
        )
        sources["lake"] = f"{lake_path.name}: {lake['command']} ({lake['date']})"
    except InputError as error:
        problems.extend(error.problems)
    if problems:
        raise InputError(problems)
    billed = None
    if aggregator_path.exists():
        aggregator = _read_result(aggregator_path)
        per_million = _billed_ms_per_million(aggregator["figures"])
        if per_million is None:
            raise InputError([f"{aggregator_path}: no billed_ms_per_million_events figure"])
        billed = per_million / 1e6
        sources["aggregator"] = f"{aggregator_path.name}: {aggregator['command']} ({aggregator['date']})"
    return Measured(**values, aggregator_billed_ms_per_event=billed, sources=sources)


@dataclass(frozen=True, slots=True)
class Function:
    role: str
    memory_mb: int


@dataclass(frozen=True, slots=True)
class Deployment:
    """What the program deploys that the bill counts, from its resource graph."""

    kms_keys: int
    alarms: int
    log_groups: int
    functions: tuple[Function, ...]
    firehoses: int
    consumers_per_stream: Mapping[str, int]
    """`trusted`/`app` → event source mappings plus delivery streams reading it."""
    app_stream_shards: int
    batch_size: int
    batching_window_s: float
    dispatcher_batch_size: int
    scheduled_runs_per_month: Mapping[str, float]
    """Function role → runs a month, from the schedule expressions (EventBridge rules: scheduled rules are free)."""
    retraining_runs_per_month: float
    custom_metrics: int

    def memory(self, role: str) -> int:
        return next((f.memory_mb for f in self.functions if f.role == role), 256)


def runs_per_month(expression: str) -> float:
    """Runs a month of an EventBridge schedule: `rate(N unit)`, or a cron whose day fields are `*`/`?` (daily at the
    listed hours and minutes)."""
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if rate:
        minutes = int(rate[1]) * {"m": 1, "h": 60, "d": 1440}[rate[2][0]]
        return HOURS_PER_MONTH * 60 / minutes
    cron = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)", expression)
    if cron and cron[3] in ("*", "?") and cron[5] in ("*", "?"):
        per_day = len(cron[1].split(",")) * len(cron[2].split(","))
        if "*" not in (cron[1], cron[2]) and "/" not in cron[1] + cron[2]:
            return per_day * DAYS_PER_MONTH
    raise ValueError(f"cannot count the runs of schedule {expression!r}")


ROLES = ("aggregator", "dispatcher", "normalise", "reconciler", "sweeper", "backfill", "steps", "event-tracker",
         "exposures")


def _role(name: str) -> str:
    return next((role for role in ROLES if role in name), name)


def inventory(stack_file: Path | None = None) -> Deployment:
    """Run the program under Pulumi's mocks with `stack_file` (default `Pulumi.dev.yaml`), as `python -m cli stack
    check` does (`cli.stack.run_stack_file`), and read the deployment. Raises `ConfigError` (a `StackFileError`
    for a file that is not a stack file) listing what stops the program."""
    from cli.stack import run_stack_file
    from components.config import PROJECT_DIR, ConfigError
    from components.stack_file import read_stack_file

    read = read_stack_file(stack_file or PROJECT_DIR / "Pulumi.dev.yaml")
    run = run_stack_file(read, read.parse(project_dir=PROJECT_DIR))
    if run.problems:
        raise ConfigError(run.problems)
    return deployment_from(run.inputs)


def deployment_from(registered: Sequence[tuple[str, str, Mapping[str, Any]]]) -> Deployment:
    def of(type_token: str) -> list[tuple[str, Mapping[str, Any]]]:
        return [(name, inputs) for typ, name, inputs in registered if typ == type_token]

    streams = of("aws:kinesis/stream:Stream")
    app = [inputs for name, inputs in streams if "app" in name]
    trusted_arns = {name for name, _ in streams if "app" not in name}
    consumers = {"trusted": 0, "app": 0}
    mappings = of("aws:lambda/eventSourceMapping:EventSourceMapping")
    for name, inputs in [*mappings, *((n, {"eventSourceArn": i.get("kinesisSourceConfiguration", {})
                                                .get("kinesisStreamArn", "")})
                                       for n, i in of("aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream"))]:
        source = str(inputs.get("eventSourceArn", ""))
        if source.endswith("app-stream"):
            consumers["app"] += 1
        elif any(source.endswith(arn) for arn in trusted_arns):
            consumers["trusted"] += 1
    kinesis_mappings = [i for n, i in mappings if "dispatcher" not in n]
    dispatcher = [i for n, i in mappings if "dispatcher" in n]
    schedules = {_role(name): runs_per_month(str(inputs["scheduleExpression"]))
                 for name, inputs in of("aws:cloudwatch/eventRule:EventRule") if inputs.get("scheduleExpression")}
    retraining = schedules.pop("retraining-schedule", None)
    if retraining is None:
        retraining = next((runs for role, runs in schedules.items() if "retrain" in role), 0.0)
        schedules = {role: runs for role, runs in schedules.items() if "retrain" not in role}
    return Deployment(
        kms_keys=len(of("aws:kms/key:Key")),
        alarms=len(of("aws:cloudwatch/metricAlarm:MetricAlarm")),
        log_groups=len(of("aws:cloudwatch/logGroup:LogGroup")),
        functions=tuple(Function(_role(name), int(inputs.get("memorySize", 128)))
                        for name, inputs in of("aws:lambda/function:Function")),
        firehoses=len(of("aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream")),
        consumers_per_stream=consumers,
        app_stream_shards=int(app[0].get("shardCount", 0)) if app else 0,
        batch_size=int(kinesis_mappings[0].get("batchSize", 100)) if kinesis_mappings else 100,
        batching_window_s=float(kinesis_mappings[0].get("maximumBatchingWindowInSeconds", 0) or 0)
        if kinesis_mappings else 0.0,
        dispatcher_batch_size=int(dispatcher[0].get("batchSize", 25)) if dispatcher else 25,
        scheduled_runs_per_month=schedules,
        retraining_runs_per_month=retraining,
        custom_metrics=8,  # Powertools metric names in functions/ (add_metric), one dimension set each
    )


# --- the model ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Line:
    service: str
    item: str
    quantity: float
    price_key: str
    per_units: float
    """How many of `quantity`'s units one price unit is (1,000 requests, 1e6 units…)."""
    basis: str
    personalize: bool = False

    def usd(self, prices: Mapping[str, Price] = PRICES) -> float:
        return self.quantity / self.per_units * prices[self.price_key].usd


def _records_per_invocation(rate_per_s: float, window_s: float, batch: int) -> float:
    """A stream mapping invokes when the batch is full or the window ends: at low rates, what one window holds."""
    return max(1.0, min(batch, rate_per_s * max(window_s, 0.1)))


def model(scale: Scale, measured: Measured, deployment: Deployment) -> list[Line]:
    """Monthly quantities per billed dimension."""
    events = scale.events_per_month
    rule_factor = scale.rules / BENCH_RULES
    app_events, trusted_events = events * scale.app_share, events * (1 - scale.app_share)
    kinesis_kb = math.ceil(scale.record_bytes / KB)
    firehose_kb = 5 * math.ceil(scale.record_bytes / (5 * KB))
    lines: list[Line] = []
    add = lines.append

    # Kinesis: the trusted stream in the chosen mode; the app stream is always provisioned (appStreamShards).
    if scale.stream_mode == "on-demand":
        add(Line("Kinesis", "trusted stream, on-demand stream-hours", HOURS_PER_MONTH,
                 "kinesis.on_demand_stream_hour", 1, DEPLOYED))
        add(Line("Kinesis", "trusted stream, GB in (1 KB rounding)", trusted_events * kinesis_kb * KB / GB,
                 "kinesis.on_demand_gb_in", 1, INPUT))
        add(Line("Kinesis", f"trusted stream, GB out ({deployment.consumers_per_stream['trusted']} consumers)",
                 trusted_events * scale.record_bytes / GB * deployment.consumers_per_stream["trusted"],
                 "kinesis.on_demand_gb_out", 1, DEPLOYED))
    else:
        add(Line("Kinesis", f"trusted stream, {scale.shards} provisioned shard(s)", HOURS_PER_MONTH * scale.shards,
                 "kinesis.shard_hour", 1, INPUT))
        add(Line("Kinesis", "trusted stream, PUT payload units (25 KB)",
                 trusted_events * math.ceil(scale.record_bytes / (25 * KB)), "kinesis.put_payload_units", 1e6,
                 INPUT))
    if deployment.app_stream_shards:
        add(Line("Kinesis", f"app stream, {deployment.app_stream_shards} provisioned shards",
                 HOURS_PER_MONTH * deployment.app_stream_shards, "kinesis.shard_hour", 1, DEPLOYED))
        add(Line("Kinesis", "app stream, PUT payload units (25 KB)",
                 app_events * math.ceil(scale.record_bytes / (25 * KB)), "kinesis.put_payload_units", 1e6, INPUT))

    # Firehose: both delivery streams, Lambda processor, Parquet, dynamic partitioning by day.
    firehose_gb = events * firehose_kb * KB / GB
    add(Line("Firehose", "ingestion, GB (5 KB rounding)", firehose_gb, "firehose.ingestion_gb", 1, INPUT))
    add(Line("Firehose", "format conversion to Parquet, GB", firehose_gb, "firehose.format_conversion_gb", 1, INPUT))
    add(Line("Firehose", "dynamic partitioning, GB delivered", events * measured.lake_bytes_per_event / GB,
             "firehose.dynamic_partitioning_gb", 1, MEASURED))
    # A partition's buffer flushes at 64 MiB or 300 s; one day partition is written at a time.
    per_stream_bytes_per_s = events * measured.lake_bytes_per_event / SECONDS_PER_MONTH / max(deployment.firehoses, 1)
    objects = deployment.firehoses * SECONDS_PER_MONTH / min(300.0, 64 * 1024 ** 2 / max(per_stream_bytes_per_s, 1e-9))
    add(Line("Firehose", "dynamic partitioning, S3 objects", objects, "firehose.dynamic_partitioning_objects", 1e3,
             DEPLOYED))

    # Lambda.
    rate = events / SECONDS_PER_MONTH
    window = deployment.batching_window_s
    aggregator_invocations = (trusted_events / _records_per_invocation(rate * (1 - scale.app_share), window,
                                                                       deployment.batch_size)
                              + app_events / _records_per_invocation(rate * scale.app_share, window,
                                                                     deployment.batch_size))
    if measured.aggregator_billed_ms_per_event is not None:
        aggregator_ms, aggregator_basis = events * measured.aggregator_billed_ms_per_event * max(rule_factor, 0.05), \
            MEASURED
    else:
        per_event = (measured.requests_per_event * rule_factor * AGGREGATOR_DYNAMODB_LATENCY_MS
                     + AGGREGATOR_CPU_MS_PER_EVENT)
        aggregator_ms, aggregator_basis = events * per_event + aggregator_invocations * INVOCATION_OVERHEAD_MS, \
            MODELLED
    # The normaliser: Firehose's processor buffer is 1 MB or 60 s, per delivery stream.
    normalise_invocations = max(events * scale.record_bytes / 1024 ** 2, deployment.firehoses * HOURS_PER_MONTH * 60)
    normalise_ms = events * NORMALISE_MS_PER_RECORD + normalise_invocations * INVOCATION_OVERHEAD_MS
    outbox = events * measured.outbox_entries_per_event * rule_factor
    dispatcher_invocations = outbox / _records_per_invocation(outbox / SECONDS_PER_MONTH, 1.0,
                                                              deployment.dispatcher_batch_size)
    dispatcher_ms = outbox * DISPATCH_MS_PER_ENTRY + dispatcher_invocations * INVOCATION_OVERHEAD_MS
    tracker = deployment.consumers_per_stream["trusted"] > 2
    tracker_invocations = aggregator_invocations if tracker else 0.0
    tracker_ms = events * SCORED_EVENT_SHARE * DISPATCH_MS_PER_ENTRY + tracker_invocations * INVOCATION_OVERHEAD_MS
    scheduled = deployment.scheduled_runs_per_month
    retraining_invocations = deployment.retraining_runs_per_month * RETRAINING_LAMBDA_INVOCATIONS_PER_RUN
    work = [("aggregator", aggregator_invocations, aggregator_ms, aggregator_basis),
            ("normalise", normalise_invocations, normalise_ms, MODELLED),
            ("dispatcher", dispatcher_invocations, dispatcher_ms, MODELLED),
            ("event-tracker", tracker_invocations, tracker_ms, MODELLED),
            *((role, runs, runs * SCHEDULED_RUN_MS, MODELLED) for role, runs in sorted(scheduled.items())),
            ("steps", retraining_invocations, retraining_invocations * RETRAINING_LAMBDA_MS, MODELLED)]
    invocations = sum(n for _, n, _, _ in work)
    add(Line("Lambda", "requests, all functions", invocations, "lambda.requests", 1e6, MODELLED))
    for role, _, billed_ms, basis in work:
        if billed_ms:
            add(Line("Lambda", f"{role} GB-seconds ({deployment.memory(role)} MB)",
                     billed_ms / 1000 * deployment.memory(role) / 1024, "lambda.gb_second", 1, basis))

    # DynamoDB (on demand): the aggregator's measured units; the dispatcher reads and updates each entry once.
    add(Line("DynamoDB", "write request units, counters + outbox (transactions at 2 per KB)",
             events * measured.write_units_per_event * rule_factor, "dynamodb.write_request_units", 1e6, MEASURED))
    add(Line("DynamoDB", "read request units, counters (strongly consistent)",
             events * measured.read_units_per_event * rule_factor, "dynamodb.read_request_units", 1e6, MEASURED))
    add(Line("DynamoDB", "dispatcher writes (one UpdateItem per outbox entry)", outbox,
             "dynamodb.write_request_units", 1e6, MODELLED))
    add(Line("DynamoDB", "dispatcher reads (one GetItem per outbox entry)", outbox, "dynamodb.read_request_units", 1e6, MODELLED))
    counters = scale.endpoints * scale.rules  # an upper bound: a counter for every (user, rule)
    add(Line("DynamoDB", "storage, a counter per (user, rule), mean measured size + index",
             counters * (measured.counter_item_bytes + 100) / GB, "dynamodb.storage_gb_month", 1, MEASURED))

    # S3: the lake (Parquet), Firehose's PUTs, Athena's GETs.
    add(Line("S3", f"lake storage, {scale.lake_days} days of Parquet",
             events / DAYS_PER_MONTH * scale.lake_days * measured.lake_bytes_per_event / GB, "s3.storage_gb_month",
             1, MEASURED))
    add(Line("S3", "PUT requests (Firehose objects)", objects, "s3.put_requests", 1e3, DEPLOYED))
    lake_objects = objects / DAYS_PER_MONTH * scale.lake_days  # every object of the lake's history
    add(Line("S3", "GET requests (Athena reads every object twice a run)",
             2 * lake_objects * deployment.retraining_runs_per_month, "s3.get_requests", 1e3, MODELLED))

    # Glue: Firehose's format conversion reads the table schema; Athena reads the catalog each query.
    add(Line("Glue", "Data Catalog requests", normalise_invocations + 10 * deployment.retraining_runs_per_month,
             "glue.catalog_requests", 1e6, MODELLED))

    # Athena: the interactions query (historyDays -1: all the lake's history), at least 10 MB a query.
    scanned = athena_bytes(measured.scan_bytes_per_event_all_history * events / DAYS_PER_MONTH * scale.lake_days)
    add(Line("Athena", "interactions query, TB scanned (10 MB minimum)",
             scanned * deployment.retraining_runs_per_month / 1024 ** 4, "athena.tb_scanned", 1, MEASURED))

    add(Line("Step Functions", "state transitions (retraining runs)",
             deployment.retraining_runs_per_month * RETRAINING_STATE_TRANSITIONS_PER_RUN,
             "stepfunctions.state_transitions", 1e3, MODELLED))
    add(Line("SNS", "run reports published", deployment.retraining_runs_per_month, "sns.publishes", 1e6, DEPLOYED))
    add(Line("EventBridge", "rule actions put on the bus (one per outbox entry)", outbox,
             "eventbridge.custom_events", 1e6, MEASURED))
    add(Line("SQS", "failure and dead-letter queues (idle: alarms poll metrics, not queues)", 0, "sqs.requests",
             1e6, DEPLOYED))
    add(Line("KMS", f"{deployment.kms_keys} customer managed key(s)", deployment.kms_keys, "kms.key_month", 1,
             DEPLOYED))
    shards = (scale.shards if scale.stream_mode == "provisioned" else ACTIVE_SHARDS_ON_DEMAND) \
        + deployment.app_stream_shards
    consumers = 1 + max(deployment.consumers_per_stream.values())
    add(Line("KMS", "requests (Kinesis SSE data keys per shard and reader)",
             shards * consumers * KMS_REQUESTS_PER_STREAM_SHARD_HOUR * HOURS_PER_MONTH, "kms.requests", 1e4,
             MODELLED))
    add(Line("CloudWatch", f"{deployment.alarms} alarms", deployment.alarms, "cloudwatch.alarm_month", 1, DEPLOYED))
    log_gb = invocations * LOG_BYTES_PER_INVOCATION / GB
    add(Line("CloudWatch", f"logs ingested ({deployment.log_groups} log groups)", log_gb,
             "cloudwatch.logs_ingested_gb", 1, MODELLED))
    add(Line("CloudWatch", "logs stored (retention 30 days: one month's)", log_gb,
             "cloudwatch.logs_stored_gb_month", 1, MODELLED))
    add(Line("CloudWatch", f"{deployment.custom_metrics} custom metrics (Powertools)", deployment.custom_metrics,
             "cloudwatch.metric_month", 1, DEPLOYED))

    # Personalize, apart: the seed's figure excluded it.
    runs = deployment.retraining_runs_per_month
    add(Line("Personalize", f"training, {scale.training_hours:g} h a run × {runs:.0f} runs",
             runs * scale.training_hours, "personalize.training_hour", 1, MODELLED, personalize=True))
    add(Line("Personalize", "campaign, minimum 1 TPS all month", HOURS_PER_MONTH, "personalize.tps_hour", 1,
             DEPLOYED, personalize=True))
    rows = measured.interactions_rows_per_event * events / DAYS_PER_MONTH * scale.lake_days
    add(Line("Personalize", "dataset imports (FULL: the whole interactions file each run)",
             runs * rows * INTERACTIONS_BYTES_PER_ROW / GB, "personalize.ingestion_gb", 1, MEASURED,
             personalize=True))
    if tracker:
        add(Line("Personalize", "real-time events (event tracker)", events * SCORED_EVENT_SHARE * 300 / GB,
                 "personalize.ingestion_gb", 1, MODELLED, personalize=True))
    return lines


ATHENA_MINIMUM_BYTES = 10 * 1024 ** 2


def athena_bytes(scanned: float) -> float:
    """What Athena bills for one query: the bytes scanned rounded up to the MB, at least 10 MB."""
    return max(ATHENA_MINIMUM_BYTES, math.ceil(scanned / 1024 ** 2) * 1024 ** 2)


@dataclass(frozen=True, slots=True)
class Totals:
    without_personalize: float
    personalize: float
    largest: tuple[tuple[str, float], ...]

    @property
    def with_personalize(self) -> float:
        return self.without_personalize + self.personalize


def totals(lines: Sequence[Line], prices: Mapping[str, Price] = PRICES) -> Totals:
    core = [line for line in lines if not line.personalize]
    ranked = sorted(core, key=lambda line: line.usd(prices), reverse=True)[:3]
    return Totals(sum(line.usd(prices) for line in core),
                  sum(line.usd(prices) for line in lines if line.personalize),
                  tuple((f"{line.service}: {line.item}", line.usd(prices)) for line in ranked))


def by_service(lines: Sequence[Line], prices: Mapping[str, Price] = PRICES) -> dict[str, float]:
    services: dict[str, float] = {}
    for line in lines:
        services[line.service] = services.get(line.service, 0.0) + line.usd(prices)
    return services


# --- the command -------------------------------------------------------------------------------------------

def _quantity(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def report(scale: Scale, measured: Measured, lines: Sequence[Line], out: Any = sys.stdout) -> Totals:
    result = totals(lines)
    print(f"scale: {scale.endpoints:,} endpoints × {scale.events_per_user_day:g} events a user-day = "
          f"{scale.events_per_month:,.0f} events a month ({scale.events_per_month / SECONDS_PER_MONTH:,.1f}/s on "
          f"average), {scale.record_bytes:,} B a record, {scale.rules} rules; trusted stream {scale.stream_mode}"
          f"{f' ({scale.shards} shards)' if scale.stream_mode == 'provisioned' else ''}; {scale.lake_days} days of "
          "lake", file=out)
    for name, source in measured.sources.items():
        print(f"measured ({name}): {source}", file=out)
    if measured.aggregator_billed_ms_per_event is None:
        print("aggregator duration: MODELLED (no bench/results/aggregator.json): "
              f"{AGGREGATOR_DYNAMODB_LATENCY_MS:g} ms per DynamoDB request it sends + "
              f"{AGGREGATOR_CPU_MS_PER_EVENT:g} ms per event", file=out)
    print(file=out)
    header = f"{'service':15} {'line item':66} {'quantity/month':>16} {'unit price':>13}  {'unit':42} " \
             f"{'$/month':>10}  basis"
    print(header, file=out)
    print("-" * len(header), file=out)
    for line in sorted(lines, key=lambda line: (line.personalize, line.service)):
        price = PRICES[line.price_key]
        flag = "" if price.verified else " *"
        print(f"{line.service:15} {line.item[:66]:66} {_quantity(line.quantity):>16} {price.usd:>13.7g}  "
              f"{price.unit[:42]:42} {line.usd():>10,.2f}  {line.basis}{flag}", file=out)
    print("-" * len(header), file=out)
    for service, usd in by_service([line for line in lines if not line.personalize]).items():
        print(f"  {service:20} {usd:>10,.2f}", file=out)
    print(f"\ntotal without Personalize: ${result.without_personalize:,.2f} a month", file=out)
    print(f"Personalize (apart):       ${result.personalize:,.2f} a month", file=out)
    print(f"total with Personalize:    ${result.with_personalize:,.2f} a month", file=out)
    seed = SEED_MONTHLY_USD * scale.endpoints / SEED_ENDPOINTS
    print(f"seed's figure ~${SEED_MONTHLY_USD:.0f} a month at {SEED_ENDPOINTS:,} endpoints, without Personalize"
          + (f" (×{scale.endpoints / SEED_ENDPOINTS:g} endpoints: ~${seed:,.0f} if it scaled linearly)"
             if scale.endpoints != SEED_ENDPOINTS else ""), file=out)
    print("largest line items: " + "; ".join(f"{name} ${usd:,.2f}" for name, usd in result.largest), file=out)
    print(f"\n* price not read on its AWS page (bench/prices.py says what was read): "
          f"{len(unverified())} of {len(PRICES)} lines", file=out)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cost", description=__doc__.splitlines()[0])
    defaults = Scale()
    parser.add_argument("--endpoints", type=int, default=defaults.endpoints)
    parser.add_argument("--events-per-user-day", type=float, default=defaults.events_per_user_day)
    parser.add_argument("--rules", type=int, default=defaults.rules)
    parser.add_argument("--record-bytes", type=int, default=defaults.record_bytes)
    parser.add_argument("--stream-mode", choices=("on-demand", "provisioned"), default=defaults.stream_mode)
    parser.add_argument("--shards", type=int, default=defaults.shards, help="with --stream-mode provisioned")
    parser.add_argument("--app-share", type=float, default=defaults.app_share,
                        help="share of events written by apps to the app stream")
    parser.add_argument("--lake-days", type=int, default=defaults.lake_days)
    parser.add_argument("--training-hours", type=float, default=defaults.training_hours,
                        help="Personalize training hours billed per retraining run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the benchmarks' --json files are")
    parser.add_argument("--stack-file", type=Path, default=None, help="default: Pulumi.dev.yaml")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    args = parser.parse_args(argv)
    problems = table_problems()
    try:
        scale = Scale(endpoints=args.endpoints, events_per_user_day=args.events_per_user_day, rules=args.rules,
                      record_bytes=args.record_bytes, stream_mode=args.stream_mode, shards=args.shards,
                      app_share=args.app_share, lake_days=args.lake_days, training_hours=args.training_hours)
    except ValueError as error:
        parser.error(str(error))
    if scale.stream_mode == "provisioned" and scale.shards < (needed := scale.trusted_shards_needed()):
        parser.error(f"--shards {scale.shards}: the trusted stream's average writes at this scale need at least "
                     f"{needed} provisioned shards (1,000 records/s or 1 MB/s each); give --shards {needed} or more")
    try:
        measured = load_measured(args.results)
    except InputError as error:
        problems.extend(error.problems)
    if problems:
        for problem in problems:
            print(f"bench.cost: {problem}", file=sys.stderr)
        return 1
    try:
        deployment = inventory(args.stack_file)
    except Exception as error:  # noqa: BLE001 - a stack file that is not a valid stack: say so, no traceback
        from components.config import ConfigError

        import pulumi

        if not isinstance(error, (ConfigError, pulumi.RunError, OSError)):
            raise
        where = args.stack_file or "Pulumi.dev.yaml"
        print(f"bench.cost: {where}: not a stack this program deploys ({type(error).__name__}); check it with "
              f"python -m cli stack check {where}", file=sys.stderr)
        return 2
    lines = model(scale, measured, deployment)
    result = report(scale, measured, lines)
    if args.json:
        from bench.result_file import command_line, write_result

        write_result(args.json, benchmark="cost", command=command_line("bench.cost", argv), figures={
            "scale": asdict(scale), "deployment": json.loads(json.dumps(asdict(deployment), default=str)),
            "lines": [{**asdict(line), "usd": line.usd(), "unit_price": PRICES[line.price_key].usd,
                       "unit": PRICES[line.price_key].unit} for line in lines],
            "total_without_personalize": result.without_personalize, "personalize": result.personalize,
            "largest": [list(item) for item in result.largest], "measured_sources": dict(measured.sources),
            "aggregator_duration": MEASURED if measured.aggregator_billed_ms_per_event is not None else MODELLED,
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
