"""`python -m cli interactions preview`: build the Personalize interactions dataset locally.

Raw stream records (exactly as on the stream; JSON Lines, a JSON array or pretty-printed records, read by
the tools' one reader, `cli/event_files.py`) are normalised by the same code
the Firehose Lambda runs, laid out like the lake (Parquet, `dt=` partitions) in a temporary folder, and
the generated Athena SQL runs over them on DuckDB. The CSV holds the rows Athena would return for the same
run date, written by the writer of every file the retraining run imports (`interactions_csv.py`), and the
summary says whether Personalize would accept it — and, when scored engagement yields no row, why and what to
send (`cli/report.py`). `--exclude-streamed` leaves out the rows the real-time
event tracker already sent (as the stack's steps do with `realTimeEvents` on); by default it follows the
stack file's `realTimeEvents` when `--scoring` is one, else it is off.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from functions.retraining.minimums import MIN_INTERACTIONS_PER_ACTIVE_USER, shortfalls


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("interactions", help="the Personalize interactions dataset")
    commands = group.add_subparsers(dest="command", required=True, metavar="{preview}")
    preview = commands.add_parser(
        "preview",
        help="normalise raw records, run the interactions SQL on DuckDB, write the CSV and a summary",
        description="Normalise raw stream records, lay them out like the lake and run the interactions SQL "
                    "on DuckDB: writes the CSV Athena would produce and says whether Personalize would accept it.",
    )
    preview.add_argument("--scoring", required=True, type=Path, metavar="FILE",
                         help="a stack file (Pulumi.<stack>.yaml) or a CSV EVENT_TYPE,EVENT_VALUE")
    preview.add_argument("events", nargs="+", type=Path, metavar="EVENTS.jsonl",
                         help="raw stream records: JSON Lines, a JSON array, or pretty-printed records")
    preview.add_argument("--out", required=True, type=Path, metavar="FILE", help="the interactions CSV to write")
    preview.add_argument("--as-of", type=date.fromisoformat, metavar="YYYY-MM-DD",
                         help="run date D (default: the day after the latest arrival, so every event counts)")
    preview.add_argument("--history-days", type=int, default=-1, metavar="N",
                         help="engagement days before D to read; -1 for all (default)")
    preview.add_argument("--attribution-days", type=int, default=7, metavar="N",
                         help="how far back an exposure is credited (default 7)")
    preview.add_argument("--exclude-streamed", action=argparse.BooleanOptionalAction, default=None,
                         help="leave out the rows the event tracker streams with PutEvents (default: the stack "
                              "file's realTimeEvents, off for a CSV)")
    preview.set_defaults(func=preview_command)


def preview_command(args: argparse.Namespace) -> int:
    from cli.event_files import nothing_usable, read_events
    from cli.report import why_no_interactions
    from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
    from functions.events.normalise import normalise
    from functions.retraining.interactions_csv import InteractionsWriter
    from functions.retraining.lake import run_interactions, write_lake
    from components.config import load_scoring_file
    from functions.retraining.scoring import ScoringError
    from functions.retraining.sql import INTERACTIONS_COLUMNS, InteractionsQuery

    try:
        scoring = load_scoring_file(args.scoring)  # a secret `secure:` scoring is never echoed
    except ScoringError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    records, reader = read_events(args.events, sys.stderr)
    if not records:
        print(nothing_usable(reader), file=sys.stderr)
        return 2
    events: list[CanonicalEvent] = []
    rejected = 0
    for record in records:
        result = normalise(record.text, identity_mode=IdentityMode.USER_OR_ENDPOINT)
        if isinstance(result, Rejected):
            rejected += 1
            print(f"{record.where}: {result.reason}", file=sys.stderr)
        else:
            events.append(result)

    as_of = args.as_of or _day_after_latest_arrival(events)
    exclude_streamed = args.exclude_streamed
    if exclude_streamed is None:
        exclude_streamed = _stack_streams_events(args.scoring)
    try:
        query = InteractionsQuery(scoring=scoring, as_of=as_of, history_days=args.history_days,
                                  attribution_days=args.attribution_days, exclude_streamed=exclude_streamed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="interactions-lake-") as lake:
        write_lake(events, lake)
        rows = run_interactions(query, lake)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as out:
        InteractionsWriter(out).write_all(rows)  # the writer of every file Personalize imports

    first = query.engagements_from
    days = f"{first} … {as_of - timedelta(days=1)}" if first else f"all history up to {as_of - timedelta(days=1)}"
    skipped = f", {reader.rejected_total:,} skipped by the reader" if reader.rejected_total else ""
    # The reader's summary (stderr) already says how many records were read from which files.
    print(f"{len(events):,} records normalised, {rejected:,} rejected by the normaliser{skipped}.")
    print(f"{len(rows):,} interactions written to {args.out} (engagements arrived {days}; exposures credited "
          f"up to {query.attribution_days} days back).")
    if query.exclude_streamed:
        print("Rows the event tracker streams (an engagement's own user and item) are left out (realTimeEvents).")
    print(_summary(rows, INTERACTIONS_COLUMNS))
    if not rows:
        for line in why_no_interactions(events, scoring, attribution_days=query.attribution_days,
                                        exclude_streamed=query.exclude_streamed):
            print(line.strip(), file=sys.stdout)
    return 0


def _stack_streams_events(path: Path) -> bool:
    """The stack file's `engagement-loop:realTimeEvents` (Pulumi may hand it over as text); False for a CSV."""
    if path.suffix.lower() not in (".yaml", ".yml"):
        return False
    import yaml

    config = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("config") or {}
    return str(config.get("engagement-loop:realTimeEvents", False)).strip().lower() == "true"


def _day_after_latest_arrival(events) -> date:
    if not events:
        return datetime.now(timezone.utc).date() + timedelta(days=1)
    latest = max(event.arrival_time_ms for event in events)
    return datetime.fromtimestamp(latest / 1000, tz=timezone.utc).date() + timedelta(days=1)


def _summary(rows, columns: tuple[str, ...]) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=list(columns))
    per_type = frame.groupby("EVENT_TYPE").size()
    active_users = int((frame.groupby("USER_ID").size() >= MIN_INTERACTIONS_PER_ACTIVE_USER).sum())
    width = max([len("EVENT_TYPE"), *map(len, per_type.index)])
    lines = ["", f"{'EVENT_TYPE':<{width}}  {'rows':>8}"]
    lines += [f"{event_type:<{width}}  {count:>8,}" for event_type, count in per_type.items()]
    lines += [f"{'(total)':<{width}}  {len(frame):>8,}", "",
              f"users: {frame['USER_ID'].nunique():,}  items: {frame['ITEM_ID'].nunique():,}"]
    failing = shortfalls(len(frame), active_users)
    if failing:
        lines.append("Personalize minimums: NOT MET")
        lines += [f"  - {reason}" for reason in failing]
    else:
        lines.append(f"Personalize minimums: met ({len(frame):,} interactions; "
                     f"{active_users:,} users with ≥ {MIN_INTERACTIONS_PER_ACTIVE_USER} interactions)")
    return "\n".join(lines)
