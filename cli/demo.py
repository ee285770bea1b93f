"""`python -m cli demo`: the whole engagement loop on moto's embedded AWS, with the real handlers, ending in a
report and a chart. No AWS account is needed.

    python -m cli demo                                     # a synthetic month (cli/synthetic.py)
    python -m cli demo --users 100 --days 14 --seed 3      # another synthetic stream
    python -m cli demo --events FILE.jsonl --rules SHEET.csv --scoring Pulumi.<stack>.yaml|FILE.csv

Before anything runs, the rules sheet is parsed as a deployment would parse it and the scoring model loaded
as the stack loads it; a bad sheet, scoring model, events file or option stops the demo with every problem
listed (exit status 2). Then four steps, each with a progress bar (plain progress lines when stderr is not a
terminal):

1. stream — generate the synthetic stream (written to OUT/events.jsonl), or read `--events` (raw stream
   records, one per line, in stream order), and normalise every record to check it can be read;
2. rules — the records go through the real RuleEngine handlers: Kinesis → aggregator → DynamoDB counters and
   outbox → dispatcher → EventBridge (`cli/replay.py`); the run is written to OUT/replay.json;
3. lake — the records go through the Firehose transformation Lambda's code, with the arrival times the
   stream gave them, into a Parquet lake on disk (OUT/lake/events/dt=…), and the generated Athena SQL builds
   the Personalize interactions dataset on DuckDB (OUT/interactions.csv) for a run date the day after the
   last arrival, all history, the default 7-day attribution window;
4. report — printed and written to OUT/report.txt (no timings in it: the same input gives the same report),
   with OUT/chart.png: qualifications over time per rule, interactions per day by event type.

Exit status: 0 done; 2 bad input (sheet, scoring model, events file or options); 1 the replay itself failed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import re
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
STREAM_TYPES_SHOWN = 14


def register(subparsers: argparse._SubParsersAction) -> None:
    from cli.synthetic import DEFAULT_DAYS, DEFAULT_SEED, DEFAULT_USERS

    parser = subparsers.add_parser(
        "demo", help="run the whole loop locally (moto) on a synthetic stream or your own, with a report",
        description="Run the whole loop on moto's embedded AWS with the real handlers — stream → normaliser → "
                    "RuleEngine → dispatcher → lake → interactions — and end with a report and a chart. "
                    "Without --events it generates a synthetic stream.")
    parser.add_argument("--events", type=Path, metavar="FILE.jsonl",
                        help="your raw stream records, one JSON record per line, in stream order "
                             "(default: a synthetic stream, written to OUT/events.jsonl)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="SHEET.csv",
                        help="the rules sheet (default rules/demo.csv)")
    parser.add_argument("--scoring", type=Path, default=DEFAULT_SCORING, metavar="FILE",
                        help="the scoring model: a stack file (Pulumi.<stack>.yaml) or a CSV EVENT_TYPE,EVENT_VALUE "
                             "(default Pulumi.dev.yaml)")
    parser.add_argument("--users", type=int, metavar="N", help=f"synthetic stream: users (default {DEFAULT_USERS})")
    parser.add_argument("--days", type=int, metavar="N", help=f"synthetic stream: days (default {DEFAULT_DAYS})")
    parser.add_argument("--seed", type=int, metavar="S",
                        help=f"synthetic stream: seed of everything, its dates too (default {DEFAULT_SEED})")
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
    from cli.replay import ReplayError, ReplayOptions, replay, write_json
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
    rule_set, rules_text = _load_rules(args.rules)
    scoring = _load_scoring(args.scoring)
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
        progress.close(f"{len(stream.lines):,} records → {_shown(outputs.events)}")
        lines = stream.lines
    else:
        lines = _read_events(args.events)
        outputs.events = args.events
        print(f"1/4 stream: {len(lines):,} lines read from {args.events}", file=err)
    facts = _normalise(lines, args.events)
    print(f"    check: {_shown(args.rules)}: {len(rule_set)} rules, version {rule_set.version}; scoring "
          f"{_shown(args.scoring)}: "
          f"{len(scoring.values)} event types; {len(facts.events):,} records normalised, "
          f"{sum(facts.rejected.values()):,} rejected", file=err)

    # 3. the RuleEngine.
    progress = Progress("2/4 rules ", facts.records, "records", err)
    try:
        result = replay(rules_text, lines, ReplayOptions(batch_size=BATCH_SIZE, progress_every=1),
                        rules_name=str(args.rules), progress=_ReplayProgress(progress))
    except ReplayError as error:
        progress.close()
        print(f"replay failed: {error}", file=err)
        return EXIT_FAILED
    progress.close(f"{len(result.qualifications):,} qualifications")
    with outputs.replay.open("w", encoding="utf-8") as handle:
        write_json(result, handle)

    # 4. the lake and the interactions dataset.
    progress = Progress("3/4 lake  ", facts.records, "records", err)
    lake_events, partitions = _build_lake(lines, outputs.lake, progress)
    progress.close(f"{len(lake_events):,} events in {partitions} dt= partitions")
    interactions, query = _interactions(lake_events, scoring, outputs.lake)
    _write_interactions(interactions, outputs.interactions)
    print(f"    interactions: {len(interactions):,} rows (generated Athena SQL on DuckDB)", file=err)

    # 5. the report and the chart.
    report = build_report(
        spec=spec, rules_path=args.rules, rules_summary=summary(rule_set, _shown(args.rules)), rule_set=rule_set,
        scoring_path=args.scoring, scoring=scoring, facts=facts, result=result, interactions=interactions,
        query=query, outputs=outputs, partitions=partitions)
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
        return parse_rules_sheet(text, source_name=str(path)), text
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


def _read_events(path: Path) -> list[str]:
    lines = [line for line in _read_text(path, "the events file").splitlines() if line.strip()]
    if not lines:
        raise DemoInputError([f"{path}: no records; expected raw stream records, one JSON record per line"])
    return lines


def _normalise(lines: Sequence[str], path: Path | None) -> StreamFacts:
    """Normalise every line as the stream's consumers would, with the arrival time the stream gives it.

    Arrival times follow the replay (`cli/replay.py`): a record's own arrival time (Pinpoint and SES records
    carry one; an app record's is its event time), never earlier than the record before it.
    """
    from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode
    from functions.events.normalise import normalise

    facts, clock, seen = StreamFacts(), 0, set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        facts.records += 1
        event = normalise(line, identity_mode=IdentityMode.USER_OR_ENDPOINT)
        if not isinstance(event, CanonicalEvent):
            facts.rejected[event.reason] += 1
            if len(facts.first_rejections) < 5:
                facts.first_rejections.append(f"{path or 'stream'}:{number}: {event.reason}")
            continue
        clock = max(clock, event.arrival_time_ms)
        if event.event_id in seen:
            facts.duplicates += 1
        seen.add(event.event_id)
        # An app record arrives when the stream says; other sources name their own arrival time. Pinpoint
        # stamps email events with the send time of the message, so their lateness means nothing.
        arrival = clock if event.source is EventSource.APP else event.arrival_time_ms
        if not event.event_type.startswith("_email.") and arrival - event.event_time_ms > LATE_AFTER_MS:
            facts.late += 1
        facts.events.append((clock, event))
    if not facts.events:
        raise DemoInputError([*facts.first_rejections,
                              f"{path}: none of the {facts.records:,} records could be read; expected raw stream "
                              "records (app JSON with \"schema\": \"engagement-loop/v1\", Pinpoint event-stream "
                              "records or SES events in their EventBridge envelope), one per line"])
    return facts


# --- progress ------------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on a terminal; elsewhere (CI, a log) a plain line at every quarter."""

    def __init__(self, label: str, total: int, unit: str, stream: TextIO) -> None:
        self.label, self.total, self.unit, self.stream = label, max(total, 1), unit, stream
        self.done, self.next_line = 0, 0.25
        isatty = getattr(stream, "isatty", None)
        self.bar = None
        if isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=label, unit=f" {unit}", file=stream,
                            dynamic_ncols=True, leave=True)
        else:
            self.label = label.rstrip()
            print(f"{self.label}: 0/{total:,} {unit}", file=stream)

    def update_to(self, done: int) -> None:
        done = min(done, self.total)
        if self.bar is not None:
            self.bar.update(done - self.done)
        else:
            if done / self.total >= self.next_line and done < self.total:
                print(f"{self.label}: {done / self.total:.0%} ({done:,}/{self.total:,} {self.unit})", file=self.stream)
                while self.next_line <= done / self.total:
                    self.next_line += 0.25
        self.done = done

    def close(self, note: str = "") -> None:
        if self.bar is not None:
            if note:  # finished: fill the bar and say what came out
                self.update_to(self.total)
                self.bar.set_postfix_str(note, refresh=True)
            self.bar.close()
        elif note:
            print(f"{self.label}: done — {note}", file=self.stream)


class _ReplayProgress(io.TextIOBase):
    """The replay's progress stream (`replay: <done>/<total> records, …` lines) → a progress bar."""

    _LINE = re.compile(r"replay: (\d+)/(\d+) records")

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        match = self._LINE.search(text)
        if match:
            self.progress.update_to(int(match[1]))
        return len(text)


# --- the lake and the interactions ----------------------------------------------------------------------


def _build_lake(lines: Sequence[str], root: Path, progress: Progress) -> tuple[list[Any], int]:
    """The records through the Firehose transformation's code, as Firehose hands them over (base64, with the
    Kinesis arrival time), into Parquet `dt=` partitions under `root`. Returns the events and partitions."""
    import shutil

    from aws_lambda_powertools.utilities.data_classes import KinesisFirehoseEvent

    from functions.events import firehose_transform
    from functions.events.canonical import CanonicalEvent, IdentityMode
    from functions.events.consumer_settings import ConsumerSettings
    from functions.events.firehose_transform import transform_records
    from functions.events.normalise import normalise
    from functions.retraining.lake import EVENTS_FOLDER, write_lake

    settings = ConsumerSettings()
    records, clock = [], 0
    for number, line in enumerate((line for line in lines if line.strip()), start=1):
        event = normalise(line, identity_mode=IdentityMode.USER_OR_ENDPOINT)
        if isinstance(event, CanonicalEvent):
            # Recorded events reached the stream at their own arrival stamp: the Kinesis time is every
            # source's arrival clock (docs/events.md), so a running maximum would move them to later days.
            clock = event.arrival_time_ms
        records.append({
            "recordId": f"{number:056d}", "approximateArrivalTimestamp": clock,
            "data": base64.b64encode(line.encode("utf-8")).decode("ascii"),
            "kinesisRecordMetadata": {"shardId": "shardId-000000000000", "partitionKey": "demo",
                                      "approximateArrivalTimestamp": clock, "sequenceNumber": str(number),
                                      "subsequenceNumber": ""},
        })
    events = []
    # Rejected records are logged as warnings by design (the report counts them): quiet while the demo runs.
    transform_log = logging.getLogger(firehose_transform.logger.service)
    saved_level = transform_log.level
    transform_log.setLevel(logging.CRITICAL)
    try:
        for start in range(0, len(records), FIREHOSE_BATCH):
            batch = records[start:start + FIREHOSE_BATCH]
            response = transform_records(KinesisFirehoseEvent({
                "invocationId": f"demo-{start}", "deliveryStreamArn":
                    "arn:aws:firehose:us-east-1:123456789012:deliverystream/engagement-events-lake",
                "sourceKinesisStreamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/engagement-events",
                "region": "us-east-1", "records": batch}), settings)
            for record in response.records:
                if record.result == "Ok":
                    events.append(CanonicalEvent.from_json_dict(json.loads(base64.b64decode(record.data))))
            progress.update_to(start + len(batch))
    finally:
        transform_log.setLevel(saved_level)
    # A previous run's partitions would mix with this run's.
    shutil.rmtree(root / EVENTS_FOLDER, ignore_errors=True)
    return events, len(write_lake(events, root))


def _interactions(events: Sequence[Any], scoring: Any, lake: Path):
    from functions.retraining.lake import run_interactions
    from functions.retraining.sql import InteractionsQuery

    latest = max(event.arrival_time_ms for event in events)
    as_of = datetime.fromtimestamp(latest / 1000, tz=timezone.utc).date() + timedelta(days=1)
    query = InteractionsQuery(scoring=scoring, as_of=as_of)
    return run_interactions(query, lake), query


def _write_interactions(rows: Sequence[Any], path: Path) -> None:
    from functions.retraining.interactions_csv import Interaction, InteractionsWriter

    with path.open("w", encoding="utf-8", newline="") as handle:  # the one writer Personalize imports go through
        InteractionsWriter(handle).write_all(Interaction(*row) for row in rows)


# --- the report ----------------------------------------------------------------------------------------


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _table(frame, *, right: Sequence[str] = ()) -> str:
    """`frame` as an indented plain-text table: text left-aligned, the `right` columns right-aligned."""
    columns = [str(column) for column in frame.columns]
    cells = [[str(value) for value in row] for row in frame.itertuples(index=False)]
    widths = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  " + "  ".join(value.rjust(width) if column in right else value.ljust(width)
                                for value, width, column in zip(values, widths, columns)).rstrip()

    return "\n".join([line(columns), line(["-" * width for width in widths]), *map(line, cells)])


def _shown(path: Path | None) -> str:
    """A path as the user would type it: relative to the working folder when it is inside it."""
    if path is None:
        return "-"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def build_report(*, spec: Any, rules_path: Path, rules_summary: str, rule_set: Any, scoring_path: Path,
                 scoring: Any, facts: StreamFacts, result: Any, interactions: Sequence[Any], query: Any,
                 outputs: Outputs, partitions: int) -> str:
    """The report: stream, rules, actions, interactions, outputs (no timings: same input, same report)."""
    import pandas as pd

    from functions.retraining.minimums import (
        MIN_ACTIVE_USERS, MIN_INTERACTIONS, MIN_INTERACTIONS_PER_ACTIVE_USER, shortfalls,
    )
    from functions.retraining.sql import INTERACTIONS_COLUMNS

    stats = result.stats
    lines: list[str] = ["engagement-loop demo — the whole loop on moto's embedded AWS, with the real handlers"]

    # Stream
    events = [event for _, event in facts.events]
    if spec is not None:
        source = (f"synthetic, {spec.users:,} users over {spec.days} days, {spec.first_day} … {spec.last_day} UTC "
                  f"(seed {spec.seed}) → {_shown(outputs.events)}")
    else:
        source = _shown(outputs.events)
    rejected = sum(facts.rejected.values())
    lines += [
        "", f"STREAM  {source}",
        f"  {facts.records:,} records: event times {_day(min(e.event_time_ms for e in events))} … "
        f"{_day(max(e.event_time_ms for e in events))}, last arrival {_day(max(a for a, _ in facts.events))}",
        f"  {_count(facts.duplicates, 'producer duplicate')} (an event id again), "
        f"{_count(facts.late, 'late arrival')} (> 1 h after the event), {rejected:,} rejected, "
        f"{stats['without_user']:,} without a user",
    ]
    lines += [f"  rejected {count:,}×: {reason}" for reason, count in facts.rejected.most_common(5)]
    frame = pd.DataFrame({"event type": [e.event_type for e in events], "user": [e.user_id for e in events],
                          "source": [e.source.value for e in events]})
    per_type = (frame.groupby("event type")
                .agg(source=("source", lambda s: "/".join(sorted(set(s)))), records=("user", "size"),
                     users=("user", "nunique"))
                .reset_index().sort_values(["records", "event type"], ascending=[False, True]))
    shown = per_type.head(STREAM_TYPES_SHOWN)
    lines += ["", _table(shown.assign(records=shown["records"].map("{:,}".format),
                                      users=shown["users"].map("{:,}".format)), right=("records", "users"))]
    if len(per_type) > STREAM_TYPES_SHOWN:
        lines.append(f"  … and {len(per_type) - STREAM_TYPES_SHOWN} more event types")

    # Rules
    lines += ["", f"RULES  {_shown(rules_path)} → Kinesis → aggregator (DynamoDB counters, outbox) → dispatcher", ""]
    lines += ["  " + line for line in rules_summary.splitlines()[1:]]
    rows = []
    for rule in rule_set:
        fired = [q for q in result.qualifications if q["rule_id"] == rule.rule_id]
        times = [q["event_time_ms"] for q in fired]
        rows.append({
            "rule id": rule.rule_id,
            "users counted": f"{sum(1 for c in result.counters if c['rule_id'] == rule.rule_id):,}",
            "qualifications": f"{len(fired):,}",
            "users qualified": f"{len({q['user_id'] for q in fired}):,}",
            "first … last qualification": f"{_day(min(times))} … {_day(max(times))}" if times else "-",
            "what it did": f"fired {rule.action_name}" if rule.reset else f"set {rule.action_name} = ready",
        })
    lines += ["", _table(pd.DataFrame(rows), right=("users counted", "qualifications", "users qualified")),
              f"  {len(result.qualifications):,} qualifications; {stats['aggregator_invocations']:,} aggregator calls "
              f"(batches of {BATCH_SIZE:,}), {stats['dynamodb_requests']['total']:,} DynamoDB requests, "
              f"{stats['dispatcher_invocations']:,} dispatcher calls"]

    # Actions
    dispatched, engine = stats["dispatched"], stats["engine_events"]
    sinks = pd.DataFrame([
        {"sink": "EventBridge", "delivered": f"{dispatched.get('eventbridge', 0):,}",
         "detail": f"bus engagement-rules: {engine['RuleQualified']:,} RuleQualified, "
                   f"{engine['RuleExited']:,} RuleExited events"},
        {"sink": "Amazon Pinpoint", "delivered": "-",
         "detail": "not configured in the demo (legacy projects; stack config engagement-loop:pinpointProjectId)"},
        {"sink": "Amazon Connect Customer Profiles", "delivered": "-",
         "detail": "not configured in the demo (stack config engagement-loop:connectDomainName)"},
    ])
    lines += ["", f"ACTIONS  {stats['outbox_entries']:,} outbox entries, {stats['dead_lettered']:,} dead-lettered", "",
              _table(sinks, right=("delivered",))]

    # Interactions
    inter = pd.DataFrame([tuple(row) for row in interactions], columns=list(INTERACTIONS_COLUMNS))
    per_event = []
    for event_type, value in sorted(scoring.values.items(), key=lambda pair: (-pair[1], pair[0])):
        part = inter[inter["EVENT_TYPE"] == event_type]
        per_event.append({"EVENT_TYPE": event_type, "EVENT_VALUE": f"{value:g}", "rows": len(part),
                          "users": part["USER_ID"].nunique(), "items": part["ITEM_ID"].nunique()})
    per_event.append({"EVENT_TYPE": "(all)", "EVENT_VALUE": "", "rows": len(inter),
                      "users": inter["USER_ID"].nunique(), "items": inter["ITEM_ID"].nunique()})
    per_event_frame = pd.DataFrame(per_event)
    for column in ("rows", "users", "items"):
        per_event_frame[column] = per_event_frame[column].map("{:,}".format)
    active = int((inter.groupby("USER_ID").size() >= MIN_INTERACTIONS_PER_ACTIVE_USER).sum()) if len(inter) else 0
    failing = shortfalls(len(inter), active)
    readiness = (f"NOT READY — fails the minimum {' and '.join(failing)}" if failing else
                 f"ready — {len(inter):,} interactions ≥ {MIN_INTERACTIONS:,}; {active:,} users with "
                 f"≥ {MIN_INTERACTIONS_PER_ACTIVE_USER} interactions ≥ {MIN_ACTIVE_USERS:,}")
    lines += ["", f"INTERACTIONS  scoring {_shown(scoring_path)}; run date {query.as_of}, all history, exposures "
                  f"credited up to {query.attribution_days} days back", "",
              _table(per_event_frame, right=("EVENT_VALUE", "rows", "users", "items")),
              f"  users: {inter['USER_ID'].nunique():,} ({active:,} with ≥ {MIN_INTERACTIONS_PER_ACTIVE_USER} "
              f"interactions)   items: {inter['ITEM_ID'].nunique():,}",
              f"  Personalize readiness: {readiness}"]

    # Outputs
    where = [("events", outputs.events, "raw stream records, one per line"),
             ("replay", outputs.replay, "the RuleEngine run: qualifications, counters, stats"),
             ("lake", outputs.lake / "events", f"Parquet, {partitions} dt= partitions by arrival day"),
             ("interactions", outputs.interactions, "the Personalize interactions dataset"),
             ("chart", outputs.chart, "qualifications over time per rule, interactions per day"),
             ("report", outputs.report, "this report")]
    paths = [_shown(path) for _, path, _ in where]
    name_width, path_width = max(len(name) for name, _, _ in where), max(map(len, paths))
    lines += ["", "OUTPUTS"] + [f"  {name:<{name_width}}  {path:<{path_width}}  {what}"
                                for (name, _, what), path in zip(where, paths)]
    return "\n".join(lines)


# --- the chart -----------------------------------------------------------------------------------------


def _chart_title(spec: Any, events: Path | None) -> str:
    if spec is not None:
        return (f"engagement-loop demo — synthetic stream, {spec.users:,} users, {spec.days} days "
                f"(seed {spec.seed})")
    return f"engagement-loop demo — {events.name if events else 'stream'}"


def draw_chart(path: Path, qualifications: Sequence[dict[str, Any]], rule_ids: Sequence[str],
               interactions: Sequence[Any], *, title: str) -> None:
    """Two panels: cumulative qualifications per rule by the qualifying event's day; interactions per arrival
    day, stacked by event type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import pandas as pd
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 8.5), dpi=110, layout="constrained")
    top, bottom = figure.subplots(2, 1)
    figure.suptitle(title, fontsize=13, fontweight="bold")

    quals = pd.DataFrame(list(qualifications), columns=["rule_id", "user_id", "action", "name", "value",
                                                        "event_time_ms"])
    days = pd.to_datetime(quals["event_time_ms"], unit="ms", utc=True).dt.tz_localize(None).dt.normalize()
    quals = quals.assign(day=days)
    if len(quals):
        # One day past the last, so the last day's step shows as a step.
        full = pd.date_range(quals["day"].min(), quals["day"].max() + pd.Timedelta(days=1), freq="D")
        handles, labels = [], []
        for rule_id in rule_ids:
            per_day = quals[quals["rule_id"] == rule_id].groupby("day").size().reindex(full, fill_value=0)
            (line,) = top.step(full, per_day.cumsum(), where="post", linewidth=2)
            handles.append(line)
            labels.append(f"{rule_id} ({int(per_day.sum()):,})")
        top.legend(handles, labels, title="rule (qualifications)", loc="upper left", fontsize=9, title_fontsize=9)
    else:
        top.text(0.5, 0.5, "no rule qualified", ha="center", va="center", transform=top.transAxes)
    top.set_title("Rule qualifications over time (cumulative, by the qualifying event's day, UTC)")
    top.set_ylabel("qualifications")
    top.grid(True, alpha=0.3)

    inter = pd.DataFrame([tuple(row) for row in interactions],
                         columns=["USER_ID", "ITEM_ID", "EVENT_TYPE", "EVENT_VALUE", "TIMESTAMP"])
    if len(inter):
        inter["day"] = pd.to_datetime(inter["TIMESTAMP"], unit="s", utc=True).dt.tz_localize(None).dt.normalize()
        table = inter.groupby(["day", "EVENT_TYPE"]).size().unstack(fill_value=0)
        table = table.reindex(pd.date_range(table.index.min(), table.index.max(), freq="D"), fill_value=0)
        table = table[table.sum().sort_values(ascending=False).index]
        base, handles, labels = None, [], []
        for event_type in table.columns:
            # Each bar spans its own day, as the steps above do.
            handles.append(bottom.bar(table.index, table[event_type], width=0.85, align="edge", bottom=base))
            labels.append(f"{event_type} ({int(table[event_type].sum()):,})")
            base = table[event_type] if base is None else base + table[event_type]
        # Explicit labels: matplotlib leaves out labels starting with "_" (as Pinpoint's event types do).
        bottom.legend(handles, labels, title="event type (rows)", loc="upper left", fontsize=9, title_fontsize=9)
    else:
        bottom.text(0.5, 0.5, "no interactions", ha="center", va="center", transform=bottom.transAxes)
    bottom.set_title("Personalize interactions per day (arrival day of the engagement, UTC)")
    bottom.set_ylabel("interactions")
    bottom.grid(True, axis="y", alpha=0.3)
    if len(quals) and len(inter):  # one time axis for both panels
        limits = top.get_xlim() + bottom.get_xlim()
        for axes in (top, bottom):
            axes.set_xlim(min(limits), max(limits))
    for axes in (top, bottom):
        low, high = axes.get_xlim()
        axes.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, round((high - low) / 10))))
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
        axes.set_xlabel("day (UTC)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)

