"""`python -m cli demo`: the whole engagement loop locally — the project's own code for every step, the
RuleEngine in memory (or, with `--engine aws`, the real handlers on moto's embedded AWS) — ending in a report
and a chart. No AWS account is needed.

    python -m cli demo                                     # a synthetic month (cli/synthetic.py)
    python -m cli demo --users 100 --days 14 --seed 3      # another synthetic stream
    python -m cli demo --events FILE.jsonl --rules SHEET.csv --scoring Pulumi.<stack>.yaml|FILE.csv

Before anything runs, the rules sheet is parsed as a deployment would parse it and the scoring model loaded
as the stack loads it; a bad sheet, scoring model, events file or option stops the demo with every problem
listed (exit status 2). Then four steps, each with a progress bar (plain progress lines when stderr is not a
terminal):

1. stream — generate the synthetic stream (written to OUT/events.jsonl), or read `--events` (raw stream
   records in stream order, read by `cli/event_files.py` as every tool reads them: JSON Lines, a JSON array or
   pretty-printed records, UTF-8 with or without a BOM, bad records reported and skipped), and normalise every
   record to check it can be read;
2. rules — the records go through the aggregator's code on the in-memory counter store, users split between
   one process per core (`cli/memory_engine.py`), or with `--engine aws` through the real RuleEngine handlers:
   Kinesis → aggregator → DynamoDB counters and outbox → dispatcher → EventBridge (`cli/aws_engine.py`); both
   give the same qualifications and counters (`cli/replay.py`); the run is written to OUT/replay.json;
3. lake — the records go through the Firehose transformation Lambda's code, with the arrival times the
   stream gave them, into a Parquet lake on disk (OUT/lake/events/dt=…/part-N.parquet, one part per process),
   and the generated Athena SQL builds
   the Personalize interactions dataset on DuckDB (OUT/interactions.csv) for a run date the day after the
   last arrival, all history, the default 7-day attribution window;
4. report — printed and written to OUT/report.txt (`cli/report.py`; no timings in it: the same input gives
   the same report): who qualified, for which rule, when and what the action did first, then the interactions
   dataset, the stream and the engine's figures; OUT/qualifications.csv lists every qualification, and
   OUT/chart.png (`cli/charts.py`) draws qualifications over time per rule and interactions per day.

Exit status: 0 done; 2 bad input (sheet, scoring model, events file or options); 1 the replay itself failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence, TextIO

EXIT_OK, EXIT_FAILED, EXIT_PROBLEMS = 0, 1, 2
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = ROOT / "rules" / "demo.csv"
DEFAULT_SCORING = ROOT / "Pulumi.dev.yaml"
DEFAULT_OUT = Path("demo-output")
# The stack's event source mapping reads batches of 100. The local replay looks for new outbox entries after
# every aggregator call (moto has no DynamoDB Streams), which costs time per call, so the demo reads batches
# of 1,000 — an event source mapping setting; the outcome (exactly-once counters) does not depend on it.
BATCH_SIZE = 1_000
FIREHOSE_BATCH = 500
LATE_AFTER_MS = 3_600_000
"""An event that reached the stream more than this after it happened is reported as a late arrival."""
DAY_MS = 86_400_000


def register(subparsers: argparse._SubParsersAction) -> None:
    from cli.synthetic import DEFAULT_DAYS, DEFAULT_SEED, DEFAULT_USERS

    parser = subparsers.add_parser(
        "demo", help="run the whole loop locally on a synthetic stream or your own, with a report",
        description="Run the whole loop locally with the project's own code — stream → normaliser → RuleEngine "
                    "(in memory, or the real handlers on moto with --engine aws) → lake → interactions — and end "
                    "with a report and a chart. Without --events it generates a synthetic stream.")
    parser.add_argument("--events", type=Path, metavar="FILE.jsonl",
                        help="your raw stream records in stream order: JSON Lines, a JSON array, or records "
                             "pretty-printed one after another (default: a synthetic stream, written to "
                             "OUT/events.jsonl)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="SHEET.csv",
                        help="the rules sheet (default rules/demo.csv)")
    parser.add_argument("--scoring", type=Path, default=DEFAULT_SCORING, metavar="FILE",
                        help="the scoring model: a stack file (Pulumi.<stack>.yaml) or a CSV EVENT_TYPE,EVENT_VALUE "
                             "(default Pulumi.dev.yaml)")
    parser.add_argument("--users", type=int, metavar="N", help=f"synthetic stream: users (default {DEFAULT_USERS})")
    parser.add_argument("--days", type=int, metavar="N", help=f"synthetic stream: days (default {DEFAULT_DAYS})")
    parser.add_argument("--seed", type=int, metavar="S",
                        help=f"synthetic stream: seed of everything, its dates too (default {DEFAULT_SEED})")
    parser.add_argument("--engine", choices=("memory", "aws"), default="memory",
                        help="where the rules step counts: memory (default: the aggregator's code on an in-memory "
                             "store) or aws (the real handlers on moto: Kinesis, DynamoDB, dispatcher, EventBridge; "
                             "much slower)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help="where the outputs go (default demo-output/)")
    parser.set_defaults(func=demo_command)


class DemoInputError(Exception):
    """Bad input: the message lines say what and where."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


@dataclass
class Outputs:
    """Where everything is written."""

    root: Path
    events: Path | None = None

    @property
    def replay(self) -> Path:
        return self.root / "replay.json"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def interactions(self) -> Path:
        return self.root / "interactions.csv"

    @property
    def qualifications(self) -> Path:
        return self.root / "qualifications.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.txt"

    @property
    def chart(self) -> Path:
        return self.root / "chart.png"


@dataclass
class StreamFacts:
    """What the stream holds, from the normaliser's point of view."""

    records: int = 0
    events: list[Any] = field(default_factory=list)
    """Canonical events in stream order, each with the arrival time the stream gave it."""
    rejected: Counter[str] = field(default_factory=Counter)
    first_rejections: list[str] = field(default_factory=list)
    duplicates: int = 0
    late: int = 0


def demo_command(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    started = time.monotonic()
    try:
        return _run(args, out, err, started)
    except DemoInputError as error:
        for line in error.lines:
            print(line, file=err)
        return EXIT_PROBLEMS


def _run(args: argparse.Namespace, out: TextIO, err: TextIO, started: float) -> int:
    from cli.charts import draw_chart
    from cli.memory_engine import default_workers
    from cli.progress import Progress
    from cli.replay import Engine, ReplayError, ReplayOptions, replay_rules, write_json
    from cli.report import demo_report, qualifications_frame, shown
    from cli.rules import summary
    from cli.synthetic import DEFAULT_DAYS, DEFAULT_SEED, DEFAULT_USERS, StreamSpec, generate

    synthetic = args.events is None
    spec = None
    if synthetic:
        try:
            spec = StreamSpec(users=DEFAULT_USERS if args.users is None else args.users,
                              days=DEFAULT_DAYS if args.days is None else args.days,
                              seed=DEFAULT_SEED if args.seed is None else args.seed)
        except ValueError as error:
            raise DemoInputError([f"error: --{error}"]) from None
    elif any(value is not None for value in (args.users, args.days, args.seed)):
        raise DemoInputError(["error: --users, --days and --seed shape the synthetic stream; "
                              "leave them out with --events"])

    # 1. check what is cheap to check before anything runs: the sheet and the scoring model.
    rule_set = _load_rules(args.rules)
    scoring = _load_scoring(args.scoring)
    records, reader = (None, None) if synthetic else _read_events(args.events, err)  # before any output folder is made
    outputs = Outputs(args.out)
    try:
        outputs.root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DemoInputError([f"error: cannot create {outputs.root}: {error.strerror or error}"]) from None

    # 2. the stream.
    if synthetic:
        assert spec is not None
        progress = Progress("1/4 stream", spec.users, "users", err)
        stream = generate(spec, progress=progress.update_to)
        outputs.events = stream.write(outputs.root / "events.jsonl")
        progress.close(f"{len(stream.lines):,} records → {shown(outputs.events)}")
        places = [(outputs.events, number) for number in range(1, len(stream.lines) + 1)]
        lines = stream.lines
    else:
        assert records is not None
        lines, places = [record.text for record in records], [(record.path, record.line) for record in records]
        outputs.events = args.events
        print(f"1/4 stream: {len(lines):,} records read from {args.events}", file=err)
    facts, planned = _plan_stream(lines, places, args.events)
    if reader is not None:  # what the reader skipped is rejected too
        facts.records += reader.rejected_total
        facts.rejected.update({f"skipped by the reader: {reason}": n for reason, n in reader.rejected.items()})
    print(f"    check: {shown(args.rules)}: {len(rule_set)} rules, version {rule_set.version}; scoring "
          f"{shown(args.scoring)}: "
          f"{len(scoring.values)} event types; {len(facts.events):,} records normalised, "
          f"{sum(facts.rejected.values()):,} rejected", file=err)

    # 3. the RuleEngine.
    workers = default_workers()
    progress = Progress("2/4 rules ", facts.records, "records", err)
    try:
        engine = Engine(args.engine)
        options = ReplayOptions(engine=engine, batch_size=BATCH_SIZE, workers=workers if engine is Engine.MEMORY else 1)
        result = replay_rules(rule_set, planned if engine is Engine.MEMORY else lines, options,
                              on_progress=progress.update_to)
    except ReplayError as error:
        progress.close()
        print(f"replay failed: {error}", file=err)
        return EXIT_FAILED
    progress.close(f"{len(result.qualifications):,} qualifications")
    with outputs.replay.open("w", encoding="utf-8") as handle:
        write_json(result, handle)

    # 4. the lake and the interactions dataset.
    progress = Progress("3/4 lake  ", facts.records, "records", err)
    lake_events, partitions, latest = _build_lake(planned, outputs.lake, progress, workers)
    progress.close(f"{lake_events:,} events in {partitions} dt= partitions")
    interactions, query = _interactions(latest, scoring, outputs.lake)
    _write_interactions(interactions, outputs.interactions)
    print(f"    interactions: {len(interactions):,} rows (generated Athena SQL on DuckDB)", file=err)

    # 5. the report and the chart.
    qualifications_frame(rule_set, result.qualifications).to_csv(outputs.qualifications, index=False)
    report = demo_report(
        spec=spec, rules_path=args.rules, rules_summary=summary(rule_set, shown(args.rules)), rule_set=rule_set,
        scoring_path=args.scoring, scoring=scoring, facts=facts, result=result, interactions=interactions,
        query=query, outputs=outputs, partitions=partitions, batch_size=BATCH_SIZE)
    draw_chart(outputs.chart, result.qualifications, [rule.rule_id for rule in rule_set], interactions,
               title=_chart_title(spec, args.events))
    outputs.report.write_text(report + "\n", encoding="utf-8")
    print(f"4/4 report: done in {time.monotonic() - started:.0f} s\n", file=err)
    err.flush()
    print(report, file=out)
    return EXIT_OK


# --- inputs --------------------------------------------------------------------------------------------


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DemoInputError([f"{path}: no such file ({what})"]) from None
    except IsADirectoryError:
        raise DemoInputError([f"{path}: is a folder, not a file ({what})"]) from None
    except UnicodeDecodeError as error:
        raise DemoInputError([f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8 ({what})"]) from None
    except OSError as error:
        raise DemoInputError([f"{path}: cannot read: {error.strerror or error} ({what})"]) from None


def _load_rules(path: Path):
    from functions.rules.sheet import RulesSheetError, parse_rules_sheet

    text = _read_text(path, "the rules sheet")
    try:
        return parse_rules_sheet(text, source_name=str(path))
    except RulesSheetError as error:
        raise DemoInputError([*error.lines(), f"{path}: {len(error.problems)} problem(s); "
                                              "the sheet was not accepted"]) from None


def _load_scoring(path: Path):
    from components.config import load_scoring_file
    from functions.retraining.scoring import ScoringError

    try:
        return load_scoring_file(path)  # a secret `secure:` scoring is never echoed
    except ScoringError as error:
        raise DemoInputError([f"error: {problem}" for problem in error.problems]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DemoInputError([f"{path}: cannot read the scoring model: {error}"]) from None


def _read_events(path: Path, err: TextIO):
    """The events file, read as every tool reads one (`cli/event_files.py`); refused when nothing is usable."""
    from cli.event_files import nothing_usable, read_events

    records, reader = read_events([path], err)
    if not records:
        raise DemoInputError([nothing_usable(reader)])
    return records, reader


def _plan_stream(lines: Sequence[str], places: Sequence[tuple[Path | None, int]], path: Path | None):
    """Every line parsed once, as the stream's consumers would (`cli/stream_plan.py`: partition keys and the
    arrival times the stream gives them); the facts the report shows, and the plan the rules engine and the
    lake reuse. Returns (facts, planned stream).

    Arrival times follow the replay: a record's own arrival time (Pinpoint and SES records carry one; an app
    record's is its event time), never earlier than the record before it.
    """
    from cli.stream_plan import TOO_LARGE, plan_all
    from functions.events.canonical import EventSource, IdentityMode, Rejected

    planned = plan_all(lines, IdentityMode.USER_OR_ENDPOINT)
    facts, seen = StreamFacts(), set()
    facts.records = len(planned.records) + len(planned.too_large)
    if planned.too_large:
        facts.rejected[TOO_LARGE] += len(planned.too_large)
    for record in planned.records:
        if isinstance(record.parsed, Rejected):
            facts.rejected[record.parsed.reason] += 1
            if len(facts.first_rejections) < 5:
                where, number = places[record.position]
                facts.first_rejections.append(f"{where or 'stream'}:{number}: {record.parsed.reason}")
            continue
        event = record.parsed.at(None)
        if event.event_id in seen:
            facts.duplicates += 1
        seen.add(event.event_id)
        # An app record arrives when the stream says; other sources name their own arrival time. Pinpoint
        # stamps email events with the send time of the message, so their lateness means nothing.
        arrival = record.arrival_ms if event.source is EventSource.APP else event.arrival_time_ms
        if not event.event_type.startswith("_email.") and arrival - event.event_time_ms > LATE_AFTER_MS:
            facts.late += 1
        facts.events.append((record.arrival_ms, event))
    if not facts.events:
        raise DemoInputError([*facts.first_rejections,
                              f"{path}: none of the {facts.records:,} record(s) could be read; expected raw stream "
                              "records (app JSON with \"schema\": \"engagement-loop/v1\", Pinpoint event-stream "
                              "records or SES events in their EventBridge envelope)"])
    return facts, planned


# --- the lake and the interactions ----------------------------------------------------------------------


def _build_lake(planned: Any, root: Path, progress: Any, workers: int) -> tuple[int, int, int]:
    """The records through the Firehose transformation's code, as Firehose hands them over (base64, with the
    Kinesis arrival time), into Parquet `dt=` partitions under `root`, from the JSON the transformation emits
    (what Firehose converts by the Glue schema). `workers` forked processes take a share of the Firehose batches
    each and write their own part files. Returns (events written, partitions, latest arrival)."""
    import shutil

    from functions.events.canonical import Rejected
    from functions.retraining.lake import EVENTS_FOLDER

    records, clock = [], 0
    for record in planned.records:
        if not isinstance(record.parsed, Rejected):
            # Recorded events reached the stream at their own arrival stamp: the Kinesis time is every
            # source's arrival clock (docs/events.md), so a running maximum would move them to later days.
            clock = record.parsed.event.arrival_time_ms
        records.append((record.line, clock))
    shutil.rmtree(root / EVENTS_FOLDER, ignore_errors=True)  # a previous run's partitions would mix with these
    batches = [records[start:start + FIREHOSE_BATCH] for start in range(0, len(records), FIREHOSE_BATCH)]
    workers = max(1, min(workers, len(batches)))
    if workers == 1:
        outcome = _lake_part(batches, root, 0, progress.update_to)
        return outcome[0], len(outcome[1]), outcome[2]
    from cli.forked import run_forked

    share = (len(batches) + workers - 1) // workers
    outcomes = run_forked([(lambda report, part=k: _lake_part(batches[part * share:(part + 1) * share], root, part,
                                                               report)) for k in range(workers)],
                          on_progress=progress.update_to)
    days = set().union(*(days for _, days, _ in outcomes))
    return sum(count for count, _, _ in outcomes), len(days), max(latest for _, _, latest in outcomes)


def _lake_part(batches: list[list[tuple[str, int]]], root: Path, part: int,
               report: Any) -> tuple[int, set[str], int]:
    from aws_lambda_powertools.utilities.data_classes import KinesisFirehoseEvent

    from functions.events import firehose_transform
    from functions.events.canonical import arrival_day
    from functions.events.consumer_settings import ConsumerSettings
    from functions.events.firehose_transform import transform_records
    from functions.retraining.lake import write_lake_rows

    settings, rows, number, done = ConsumerSettings(), [], part * 10 ** 9, 0
    # Rejected records are logged as warnings by design (the report counts them): quiet while the demo runs.
    transform_log = logging.getLogger(firehose_transform.logger.service)
    saved_level = transform_log.level
    transform_log.setLevel(logging.CRITICAL)
    try:
        for batch in batches:
            firehose_records = []
            for line, arrival in batch:
                number += 1
                firehose_records.append({
                    "recordId": f"{number:056d}", "approximateArrivalTimestamp": arrival,
                    "data": base64.b64encode(line.encode("utf-8")).decode("ascii"),
                    "kinesisRecordMetadata": {"shardId": "shardId-000000000000", "partitionKey": "demo",
                                              "approximateArrivalTimestamp": arrival, "sequenceNumber": str(number),
                                              "subsequenceNumber": ""}})
            response = transform_records(KinesisFirehoseEvent({
                "invocationId": f"demo-{number}", "deliveryStreamArn":
                    "arn:aws:firehose:us-east-1:123456789012:deliverystream/engagement-events-lake",
                "sourceKinesisStreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/engagement-events",
                "region": "us-east-1", "records": firehose_records}), settings)
            rows.extend(json.loads(base64.b64decode(record.data)) for record in response.records
                        if record.result == "Ok")
            done += len(batch)
            report(done)
    finally:
        transform_log.setLevel(saved_level)
    write_lake_rows(rows, root, part=part)
    latest = max((int(row["arrival_time_ms"]) for row in rows), default=0)
    return len(rows), {arrival_day(int(row["arrival_time_ms"])) for row in rows}, latest


def _interactions(latest: int, scoring: Any, lake: Path):
    from functions.retraining.lake import run_interactions
    from functions.retraining.sql import InteractionsQuery

    as_of = datetime.fromtimestamp(latest / 1000, tz=timezone.utc).date() + timedelta(days=1)
    query = InteractionsQuery(scoring=scoring, as_of=as_of)
    return run_interactions(query, lake), query


def _write_interactions(rows: Sequence[Any], path: Path) -> None:
    from functions.retraining.interactions_csv import Interaction, InteractionsWriter

    with path.open("w", encoding="utf-8", newline="") as handle:  # the one writer Personalize imports go through
        InteractionsWriter(handle).write_all(Interaction(*row) for row in rows)



# --- the chart -----------------------------------------------------------------------------------------


def _chart_title(spec: Any, events: Path | None) -> str:
    if spec is not None:
        return (f"engagement-loop demo — synthetic stream, {spec.users:,} users, {spec.days} days "
                f"(seed {spec.seed})")
    return f"engagement-loop demo — {events.name if events else 'stream'}"
