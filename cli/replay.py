"""`python -m cli rules replay`: raw stream records through the RuleEngine, locally, on one of two engines.

- `memory` (the default, `cli/memory_engine.py`): the aggregator's own code — normaliser, matching, coalescing,
  rule evaluation, exactly-once marks, outbox — on the in-memory counter store, one process per core.
- `aws` (`cli/aws_engine.py`): the real handlers (aggregator and dispatcher) on moto's embedded AWS — Kinesis,
  DynamoDB, SQS, EventBridge — with faults injected on request (`duplicate_rate`, `fail_rate`).

Both plan the stream the same way (`cli/stream_plan.py`: partition keys, arrival times, batches, the processing
clock), so they give the same qualifications and counters; the tests hold them to it. The fault options change
what the aws engine goes through, never what comes out, and are refused by the memory engine, which has no
Kinesis or DynamoDB to fail.
"""

from __future__ import annotations

import enum
import json
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TextIO


class ReplayError(Exception):
    """The replay could not run, or a handler failed without an injected fault (a bug)."""


class Engine(str, enum.Enum):
    """Where the replay counts."""

    MEMORY = "memory"
    AWS = "aws"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayOptions:
    """How to replay. Rates are probabilities in [0, 1)."""

    engine: Engine = Engine.MEMORY
    batch_size: int = 100
    duplicate_rate: float = 0.0
    fail_rate: float = 0.0
    seed: int = 0
    identity_mode: str = "user_or_endpoint"
    workers: int = 1
    """Processes of the memory engine (the aws engine runs in one)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", Engine(self.engine))
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch_size {self.batch_size} is not in 1..10000 (Kinesis event source mapping)")
        for name in ("duplicate_rate", "fail_rate"):
            rate = getattr(self, name)
            if not 0 <= rate < 1:
                raise ValueError(f"{name} {rate} is not in [0, 1)")
        if self.engine is Engine.MEMORY and (self.duplicate_rate or self.fail_rate):
            raise ValueError("duplicate and failure injection need the AWS path (Kinesis, DynamoDB, the dispatcher) "
                             "to act on: add --engine aws")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers {self.workers} is not in 1..64")
        if self.engine is Engine.AWS and self.workers != 1:
            raise ValueError("--workers splits the memory engine's users between processes; the aws engine runs "
                             "in one (leave --workers out)")


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The replay's outcome: `document()` is the `--json` output."""

    qualifications: list[dict[str, Any]]
    counters: list[dict[str, Any]]
    stats: dict[str, Any]
    rules: Any
    """The `RuleSet` replayed."""

    def document(self) -> dict[str, Any]:
        return {"qualifications": self.qualifications, "counters": self.counters, "stats": self.stats}

    def table(self) -> str:
        """One line per rule: users counted, qualifications, events emitted, attributes set."""
        import pandas as pd

        users: Counter[str] = Counter(counter["rule_id"] for counter in self.counters)
        fired: Counter[tuple[str, str]] = Counter((q["rule_id"], q["action"]) for q in self.qualifications)
        rows = [{
            "rule": rule.rule_id, "type": rule.rule_type.value, "action": rule.action_name,
            "users counted": users[rule.rule_id],
            "qualifications": fired[(rule.rule_id, "event")] + fired[(rule.rule_id, "attribute")],
            "events emitted": fired[(rule.rule_id, "event")],
            "attributes set": fired[(rule.rule_id, "attribute")],
        } for rule in self.rules]
        return pd.DataFrame(rows).to_string(index=False)


def replay(rules_text: str, lines: Sequence[str], options: ReplayOptions = ReplayOptions(), *,
           rules_name: str = "rules.csv", on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Replay `lines` (raw records, blank lines ignored) under the rules sheet `rules_text`; `on_progress` is
    called with the number of records done now and then.

    Raises `RulesSheetError` for a bad sheet and `ReplayError` when the engine fails without an injected fault.
    """
    from functions.rules.sheet import parse_rules_sheet

    rule_set = parse_rules_sheet(rules_text, source_name=rules_name)
    return replay_rules(rule_set, lines, options, on_progress=on_progress)


def replay_rules(rule_set: Any, lines: Sequence[str] | Any, options: ReplayOptions = ReplayOptions(), *,
                 on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    """`replay` for a parsed `RuleSet`; for the memory engine `lines` may be a `stream_plan.PlannedStream` (its
    workers then share it instead of parsing the records again)."""
    if options.engine is Engine.AWS:
        from cli.aws_engine import AwsEngineError, run_aws_engine

        try:
            outcome = run_aws_engine(rule_set, lines, options, on_progress=on_progress)
        except AwsEngineError as error:
            raise ReplayError(str(error)) from error
    else:
        from cli.memory_engine import MemoryEngineError, run_memory_engine

        try:
            outcome = run_memory_engine(rule_set, lines, batch_size=options.batch_size,
                                        identity_mode=options.identity_mode, workers=options.workers,
                                        on_progress=on_progress)
        except MemoryEngineError as error:
            raise ReplayError(str(error)) from error
    return ReplayResult(outcome["qualifications"], outcome["counters"], outcome["stats"], rule_set)


def write_json(result: ReplayResult, out: TextIO) -> None:
    json.dump(result.document(), out, indent=2, ensure_ascii=False)
    out.write("\n")


def print_summary(result: ReplayResult, out: TextIO = sys.stdout) -> None:
    """Who qualified, for which rule, when, and what the action did; then the engine's figures."""
    from cli.report import engine_figures, rejections_line, who_qualified

    stats = result.stats
    if stats["rejected"]["count"]:
        print(rejections_line(stats["rejected"]["reasons"]), file=out)
        print(file=out)
    for line in who_qualified(result.rules, result.qualifications, result.counters,
                              full_list="every one in the --json output"):
        print(line, file=out)
    rejected = stats["rejected"]
    print("\nENGINE FIGURES\n", file=out)
    print(result.table(), file=out)
    print(f"\n  {stats['records']:,} records, {rejected['count']:,} rejected, {stats['without_user']:,} without a "
          f"user; {len(result.qualifications):,} qualifications, {len(result.counters):,} counters", file=out)
    for line in engine_figures(stats):
        print(line, file=out)
    for reason, count in rejected["reasons"].items():
        print(f"  rejected {count:,}×: {reason}", file=out)


def _normaliser_rejections(lines: Sequence[str], options: ReplayOptions) -> Counter[str]:
    """Why the normaliser rejects records, grouped by reason (what the aggregator would send to its failures
    queue)."""
    from functions.events.canonical import IdentityMode, Rejected
    from functions.events.normalise import normalise

    mode = IdentityMode(options.identity_mode)
    return Counter(result.reason for line in lines
                   if isinstance(result := normalise(line, identity_mode=mode), Rejected))


def replay_command(args: Any, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """`python -m cli rules replay --rules SHEET.csv EVENTS`: exit 0 done, 2 bad input (a bad sheet, bad options,
    no usable record), 1 the replay itself failed."""
    from pathlib import Path

    from cli.event_files import nothing_usable, read_events
    from cli.memory_engine import default_workers
    from cli.progress import Progress
    from cli.report import rejections_line
    from functions.rules.sheet import RulesSheetError, parse_rules_sheet

    out, err = out or sys.stdout, err or sys.stderr
    engine = Engine(args.engine)
    try:
        options = ReplayOptions(engine=engine, batch_size=args.batch_size, duplicate_rate=args.duplicate_rate,
                                fail_rate=args.fail_rate, seed=args.seed,
                                workers=(default_workers() if engine is Engine.MEMORY else 1) if args.workers is None
                                else args.workers)
    except ValueError as error:
        print(f"error: {error}", file=err)
        return 2
    if args.json and not Path(args.json).parent.is_dir():
        print(f"error: --json {args.json}: the folder {Path(args.json).parent} does not exist", file=err)
        return 2
    try:
        sheet = Path(args.rules).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        print(f"error: cannot read the rules sheet: {error}", file=err)
        return 2
    try:
        rule_set = parse_rules_sheet(sheet, source_name=str(args.rules))
    except RulesSheetError as error:
        for line in error.lines():
            print(line, file=err)
        print(f"{args.rules}: {len(error.problems):,} problem(s); the sheet was not accepted", file=err)
        return 2
    records, reader = read_events([args.events], err)
    if not records:
        print(nothing_usable(reader), file=err)
        return 2
    lines = [record.text for record in records]
    del records
    if engine is Engine.AWS:  # before the slow path starts; the memory engine says so from its own pass
        rejected = _normaliser_rejections(lines, options)
        if sum(rejected.values()) == len(lines):
            print(f"error: no record could be normalised — {rejections_line(rejected)}", file=err)
            return 2
    progress = Progress(f"replay ({engine.value})", len(lines), "records", err)
    try:
        result = replay_rules(rule_set, lines, options, on_progress=progress.update_to)
    except ReplayError as error:
        progress.close()
        print(f"replay failed: {error}", file=err)
        return 1
    progress.close(f"{len(result.qualifications):,} qualifications")
    if result.stats["rejected"]["count"] == len(lines):
        print(f"error: no record could be normalised — {rejections_line(result.stats['rejected']['reasons'])}",
              file=err)
        return 2
    print_summary(result, out)
    if reader.rejected_total:
        print(f"  skipped by the reader: {reader.rejected_total:,} (listed on stderr)", file=out)
    if args.json:
        try:
            with Path(args.json).open("w", encoding="utf-8") as handle:
                write_json(result, handle)
        except OSError as error:
            print(f"error: cannot write --json {args.json}: {error.strerror or error}", file=err)
            return 1
        print(f"wrote {args.json}", file=out)
    return 0
