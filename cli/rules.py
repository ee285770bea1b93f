"""`python -m cli rules …`: work with rules sheets locally.

`rules check SHEET.csv` validates a sheet exactly as a deployment would: every problem is printed to stderr
as `SHEET.csv: row N, column X: …` and the exit status is 2; a good sheet prints a summary (what each rule
counts and, in plain words, what its action does) and exits 0, its warnings (a row without a RuleId, a
sheet without rules) on stderr. The columns, operators and sentinels: docs/rules.md, "Writing rules".

`rules replay --rules SHEET.csv EVENTS.jsonl` runs the aggregator's code over raw stream records (one per line,
exactly as on the stream): by default in memory, one process per core (`cli/memory_engine.py`); with
`--engine aws` the real aggregator and dispatcher handlers on moto's embedded AWS, optionally with injected
duplicates and failures (`cli/aws_engine.py` says how). Both give the same qualifications and counters, and so
does any fault rate. It prints who qualified and a table per rule and, with `--json OUT.json`, writes
`{"qualifications": [...], "counters": [...], "stats": {...}}`. Exit status 2 for a bad sheet, bad options or
unreadable input, 1 when the replay itself fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from functions.rules.model import Rule, RuleSet

from functions.rules.sheet import RulesSheetError, check_rules_sheet

EXIT_OK, EXIT_FAILED, EXIT_PROBLEMS = 0, 1, 2
RULES_REFERENCE = "docs/rules.md (\"Writing rules\")"


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("rules", help="rules sheet tools", description=__doc__.splitlines()[0])
    commands = group.add_subparsers(dest="command", required=True, metavar="{check,replay}")
    check = commands.add_parser(
        "check", help="validate a rules sheet and summarise its rules",
        description="Validate a rules sheet as a deployment would: every problem as `row N, column X: …` "
                    "(exit 2), or a summary of the rules and what each action does (exit 0; warnings on stderr).",
        epilog=f"How to write a rules sheet (every column, operator and sentinel, with worked examples): "
               f"{RULES_REFERENCE}")
    check.add_argument("sheet", type=Path, metavar="SHEET.csv", help="the rules sheet (CSV)")
    check.set_defaults(func=check_command)

    replay = commands.add_parser(
        "replay", help="run the rules engine over raw records locally: in memory (fast) or on moto with faults",
        description="Run the aggregator's code over raw stream records in file order and Kinesis-shaped batches, "
                    "and print who qualified and a table per rule. --engine memory (default) counts in memory, one "
                    "process per core; --engine aws runs the real aggregator and dispatcher handlers on moto's "
                    "embedded AWS, where --duplicate-rate and --fail-rate inject faults.")
    replay.add_argument("--rules", required=True, type=Path, metavar="SHEET.csv", help="the rules sheet (CSV)")
    replay.add_argument("events", type=Path, metavar="EVENTS.jsonl",
                        help="raw stream records: JSON Lines, a JSON array, or pretty-printed records")
    replay.add_argument("--json", type=Path, metavar="OUT.json", help="write qualifications, counters and stats")
    replay.add_argument("--engine", choices=("memory", "aws"), default="memory",
                        help="memory (default: the aggregator's code on an in-memory store) or aws (the real "
                             "handlers on moto, slower, with fault injection)")
    replay.add_argument("--workers", type=int, metavar="N",
                        help="memory engine: processes, users split between them (default: one per core)")
    replay.add_argument("--batch-size", type=int, default=100, metavar="N", help="records per batch (default 100)")
    replay.add_argument("--duplicate-rate", type=float, default=0.0, metavar="R",
                        help="aws engine: share of records the producer sends twice (default 0)")
    replay.add_argument("--fail-rate", type=float, default=0.0, metavar="R",
                        help="aws engine: share of batches failed part-way and redelivered (default 0)")
    replay.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the faults (default 0)")
    replay.set_defaults(func=replay_command)


def check_command(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    path: Path = args.sheet
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        print(f"{path}: no such file", file=err)
        return EXIT_PROBLEMS
    except UnicodeDecodeError as error:
        print(f"{path}: not UTF-8 text (byte {error.start}); save the sheet as CSV UTF-8", file=err)
        return EXIT_PROBLEMS
    except OSError as error:
        print(f"{path}: cannot read: {error.strerror or error}", file=err)
        return EXIT_PROBLEMS
    try:
        checked = check_rules_sheet(text, source_name=str(path))
    except RulesSheetError as error:
        for line in error.lines():
            print(line, file=err)
        print(f"{path}: {len(error.problems):,} problem(s); the sheet was not accepted", file=err)
        return EXIT_PROBLEMS
    for warning in checked.warnings:
        print(f"{path}: warning: {warning}", file=err)
    print(summary(checked.rules, str(path)), file=out)
    return EXIT_OK


def replay_command(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from cli.replay import replay_command as run  # reads the events file with the tools' one reader

    return run(args, out=out, err=err)


SUMMARY_COLUMNS = ("rule id", "type", "event", "filter", "conditions", "window/dates", "action")


def summary(rule_set: RuleSet, source_name: str) -> str:
    """A plain-text table of the rules, one line each, under a count and the content version; the action
    column says in plain words what the action does (`Rule.action_description`)."""
    rows = [SUMMARY_COLUMNS, *(_summary_row(rule) for rule in rule_set)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    plural = "" if len(rule_set) == 1 else "s"
    return "\n".join([f"{source_name}: {len(rule_set):,} rule{plural}, version {rule_set.version}", *lines])


def _summary_row(rule: Rule) -> tuple[str, ...]:
    conditions = []
    if rule.count_condition:
        conditions.append(f"count {rule.count_condition.operator.symbol} {rule.count_condition.target:,}")
    if rule.sum_condition:
        metric = rule.sum_condition.metric_name or "first metric"
        conditions.append(f"sum({metric}) {rule.sum_condition.operator.symbol} {rule.sum_condition.target:,f}")
    if rule.window_days is not None:
        scope = f"last {rule.window_days}d"
    elif rule.start_date and rule.finish_date:
        scope = f"{rule.start_date.isoformat()}..{rule.finish_date.isoformat()}"
    else:
        scope = "all time"
    flt = rule.attribute_filter
    return (
        rule.rule_id,
        rule.rule_type.value,
        rule.event_name,
        f"{flt.name} = {flt.value}" if flt else "-",
        " and ".join(conditions),
        scope,
        rule.action_description,
    )
