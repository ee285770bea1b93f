"""Bytes the interactions query reads: the partitioned Parquet lake against the seed's unpartitioned JSON.

    python -m bench.lake [--events 1000000] [--days 90] [--users N] [--seed S] [--workdir DIR] [--json OUT]

A seeded synthetic stream (exposures, email/push engagement, app noise) is written two ways: the lake
(Snappy Parquet with the Glue schema, one file per `events/dt=YYYY-MM-DD/` arrival day, as `write_lake`
lays it out) and the seed's layout (newline-delimited canonical JSON, one file per day in one folder, no
partitions). For history 7, 30 and all days, with the run date the day after the last day, it reports
what Athena would scan for the interactions query, scan by scan (the query reads the events table twice:
engagements and exposures, each with its own `dt` range):

- lake, partitions: every byte of the Parquet files in the partitions the scan's `dt` predicates select,
  as parsed from the SQL text — an upper bound, since Athena reads only the columns it needs;
- lake, columns: the compressed column chunks (Parquet metadata) of the columns the scan references,
  close to what Athena bills (it also reads footers, and may skip row groups by statistics);
- JSON: every byte of every file, for each scan — JSON has neither partitions to prune nor columns.

Both layouts must give the same interactions rows (DuckDB runs the generated SQL on each); the run
fails if they differ, or if the 7-day history does not read at least 10× less from the lake (by the
conservative whole-partition measure).
"""

from __future__ import annotations

import argparse
import binascii
import contextlib
import operator
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.result_file import command_line, write_result
from functions.events.canonical import LAKE_COLUMN_TYPES, LAKE_PARTITION_KEY
from functions.retraining.lake import (
    EVENTS_FOLDER, Interaction, arrow_schema, run_interactions, run_interactions_over,
)
from functions.retraining.scoring import EXPOSURE_EVENT_TYPE, ScoringModel
from functions.retraining.sql import InteractionsQuery, build_interactions_sql

START = date(2026, 8, 1)
HISTORIES = (7, 30, -1)
TARGET_RATIO = 10.0
SCORING = ScoringModel({"_campaign.opened_notification": 100, "_email.open": 50, "_email.click": 100,
                        "_email.unsubscribe": -200, "purchase": 300})
"""The dev stack's model, plus an app event carrying its own item."""

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TYPES = (EXPOSURE_EVENT_TYPE, "_email.send", "_email.delivered", "_email.open", "_email.click",
         "_email.unsubscribe", "_campaign.send", "_journey.send", "_campaign.opened_notification",
         "_session.start", "_session.stop", "view_item", "purchase")
_T = {name: code for code, name in enumerate(TYPES)}
_APP_TYPES = {EXPOSURE_EVENT_TYPE, "view_item", "purchase"}  # the rest come through Pinpoint
MESSAGE_SHARE = 0.8  # of events that belong to messages (exposures and their engagement); app noise fills the rest
EVENTS_PER_MESSAGE = 4.2  # measured mean of what one message yields below


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """What to generate: `events` events arriving over `days` UTC days from `START`."""

    events: int = 1_000_000
    """Exact number of events. Default 1,000,000."""
    days: int = 90
    """Arrival days. Default 90."""
    users: int | None = None
    """Distinct users. Default events / 40."""
    seed: int = 2026
    """Random seed: the same spec generates the same events. Default 2026."""

    def __post_init__(self) -> None:
        for name in ("events", "days", "users"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: expected a whole number ≥ 1, got {value!r}")

    @property
    def n_users(self) -> int:
        return self.users or max(1, self.events // 40)

    @property
    def as_of(self) -> date:
        """The run date: the day after the last arrival day."""
        return date.fromordinal(START.toordinal() + self.days)

    @property
    def start_ms(self) -> int:
        return int(datetime(START.year, START.month, START.day, tzinfo=timezone.utc).timestamp() * 1000)


# --- the stream ----------------------------------------------------------------------------------------

def generate(spec: StreamSpec) -> pa.Table:
    """`spec.events` canonical events in the lake's Arrow schema, sorted by arrival time."""
    rng = np.random.default_rng(spec.seed)
    days, users = spec.days, spec.n_users
    n_endpoints = users + users * 3 // 10  # some users have a second device or address
    endpoint_user = np.concatenate([np.arange(users), rng.integers(0, users, n_endpoints - users)])
    open_rate = rng.beta(1.5, 4.0, n_endpoints)  # how readily each endpoint's owner engages
    n_campaigns, n_journeys, n_items = max(3, days // 3), max(2, days // 10), max(50, users // 10)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    start_ms, end_ms = spec.start_ms, spec.start_ms + days * DAY_MS

    def rows(event_type, *, endpoint, arrival, event_ms=None, campaign=None, journey=None, item=None,
             link=None, price=None) -> dict[str, np.ndarray]:
        """Columns of events of `event_type` (a name, or a code per row); -1 / NaN where a field is absent."""
        size = len(arrival)
        none = np.full(size, -1)
        return {
            "type": np.broadcast_to(event_type if isinstance(event_type, np.ndarray) else _T[event_type], size),
            "endpoint": endpoint, "arrival": arrival,
            # Events reach the stream a moment after they happen, except email events (below).
            "event_ms": arrival - rng.integers(50, 2_000, size) if event_ms is None else event_ms,
            "campaign": none if campaign is None else campaign, "journey": none if journey is None else journey,
            "item": none if item is None else item, "link": none if link is None else link,
            "price": np.full(size, np.nan) if price is None else price,
        }

    # Messages: each is sent to one endpoint by a campaign (a few days long) or a journey, by email or push.
    m = max(1, round(spec.events * MESSAGE_SHARE / EVENTS_PER_MESSAGE))
    to = rng.integers(0, n_endpoints, m)
    day = rng.integers(0, days, m)
    sent = start_ms + day * DAY_MS + rng.integers(8 * HOUR_MS, 20 * HOUR_MS, m)
    push = rng.random(m) < 0.3
    by_journey = ~push & (rng.random(m) < 0.35)
    campaign_of_day = np.minimum(day * n_campaigns // days + rng.integers(0, 3, m), n_campaigns - 1)
    campaign = np.where(by_journey, -1, campaign_of_day)
    journey = np.where(by_journey, rng.integers(0, n_journeys, m), -1)

    parts: list[dict[str, np.ndarray]] = []

    def emit_for(event_type, msgs, arrival, **fields) -> None:
        parts.append(rows(event_type, endpoint=to[msgs], campaign=campaign[msgs], journey=journey[msgs],
                          arrival=arrival, **fields))

    # The recommender is called just before the send, with 1–3 items per message.
    shown = rng.integers(1, 4, m)
    x = np.repeat(np.arange(m), shown)
    x_items = rng.choice(n_items, x.size, p=popularity)
    emit_for(EXPOSURE_EVENT_TYPE, x, sent[x] - rng.integers(1_000, 15_000, x.size), item=x_items)
    first_item = x_items[np.cumsum(shown) - shown]

    # Pinpoint stamps every email event with the send time; only arrival says when it happened.
    mail = np.flatnonzero(~push)
    emit_for("_email.send", mail, sent[mail] + rng.integers(100, 3_000, mail.size), event_ms=sent[mail])
    mail_j = mail[journey[mail] >= 0]
    emit_for("_journey.send", mail_j, sent[mail_j] + rng.integers(100, 3_000, mail_j.size))
    delivered = mail[rng.random(mail.size) < 0.95]
    emit_for("_email.delivered", delivered, sent[delivered] + rng.integers(1_000, 60_000, delivered.size),
             event_ms=sent[delivered])
    opened = delivered[rng.random(delivered.size) < open_rate[to[delivered]]]
    open_at = sent[opened] + _delay(rng, opened.size, 3 * HOUR_MS)  # a few land past the attribution window
    emit_for("_email.open", opened, open_at, event_ms=sent[opened])
    again = rng.random(opened.size) < 0.2
    emit_for("_email.open", opened[again], open_at[again] + _delay(rng, again.sum(), DAY_MS),
             event_ms=sent[opened[again]])
    clicked = rng.random(opened.size) < 0.35
    emit_for("_email.click", opened[clicked], open_at[clicked] + _delay(rng, clicked.sum(), 30_000),
             event_ms=sent[opened[clicked]], link=first_item[opened[clicked]])
    left = delivered[rng.random(delivered.size) < 0.004]
    emit_for("_email.unsubscribe", left, sent[left] + _delay(rng, left.size, HOUR_MS), event_ms=sent[left])

    pushed = np.flatnonzero(push)
    emit_for("_campaign.send", pushed, sent[pushed] + rng.integers(100, 3_000, pushed.size))
    tapped = pushed[rng.random(pushed.size) < open_rate[to[pushed]] / 2]
    emit_for("_campaign.opened_notification", tapped, sent[tapped] + _delay(rng, tapped.size, 20 * 60_000))

    columns = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    keep = np.flatnonzero(columns["arrival"] < end_ms)  # engagement after the last day has not arrived yet
    if keep.size > spec.events:
        keep = np.sort(rng.choice(keep, spec.events, replace=False))
    columns = {key: values[keep] for key, values in columns.items()}

    # App noise (sessions, item views) and purchases, which carry their own item, fill up to the count.
    k = spec.events - keep.size
    kind = rng.choice([_T["_session.start"], _T["_session.stop"], _T["view_item"], _T["purchase"]], k,
                      p=[0.4, 0.4, 0.17, 0.03])
    has_item = np.isin(kind, [_T["view_item"], _T["purchase"]])
    noise = rows(kind, endpoint=rng.integers(0, n_endpoints, k), arrival=rng.integers(start_ms, end_ms, k),
                 item=np.where(has_item, rng.choice(n_items, k, p=popularity), -1),
                 price=np.where(kind == _T["purchase"], np.round(rng.lognormal(3.5, 0.8, k), 2), np.nan))
    columns = {key: np.concatenate([columns[key], noise[key]]) for key in columns}

    order = np.argsort(columns["arrival"], kind="stable")
    columns = {key: values[order] for key, values in columns.items()}
    return _to_arrow(columns, endpoint_user, rng, n_campaigns=n_campaigns, n_journeys=n_journeys,
                     n_items=n_items)


def _delay(rng: np.random.Generator, size: int, median_ms: int) -> np.ndarray:
    return (median_ms * rng.lognormal(0.0, 1.5, size)).astype(np.int64)


def _to_arrow(c: dict[str, np.ndarray], endpoint_user: np.ndarray, rng: np.random.Generator, *,
              n_campaigns: int, n_journeys: int, n_items: int) -> pa.Table:
    n = c["arrival"].size
    endpoints = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in endpoint_user]
    campaigns = [rng.bytes(16).hex() for _ in range(n_campaigns)]
    journeys = [rng.bytes(16).hex() for _ in range(n_journeys)]
    items = [f"item-{i:06d}" for i in range(n_items)]
    users = [f"user-{i:07d}" for i in range(endpoint_user.max() + 1)]
    type_code = c["type"].astype(np.int32)
    exposure = type_code == _T[EXPOSURE_EVENT_TYPE]
    is_app = np.isin(type_code, [_T[t] for t in _APP_TYPES])
    message_event = ~exposure & ((c["campaign"] >= 0) | (c["journey"] >= 0))
    user = endpoint_user[c["endpoint"]]

    user_ids = _strings(users, user)
    item_ids = _strings(items, c["item"])
    campaign_ids = _strings(campaigns, c["campaign"])
    journey_ids = _strings(journeys, c["journey"])
    # Event ids are hashes in the lake (Pinpoint's content hash, `exp-`/`app-` ids): incompressible hex.
    digest = binascii.hexlify(rng.bytes(32 * n)).decode("ascii")
    prefix = np.where(exposure, "exp-", np.where(is_app, "app-", "pp-")).tolist()
    event_ids = pa.array([p + digest[64 * i:64 * i + 64] for i, p in enumerate(prefix)], pa.string())

    feedback = np.select([type_code == _T["_email.open"], type_code == _T["_email.unsubscribe"]], [0, 1], -1)
    attributes = _map(n, [
        ("personalize_user_id", exposure, user_ids),
        ("item_id", c["item"] >= 0, item_ids),
        ("campaign_id", c["campaign"] >= 0, campaign_ids),
        ("campaign_activity_id", message_event & (c["campaign"] >= 0),
         _strings([f"{i:032x}" for i in range(n_campaigns)], c["campaign"])),
        ("treatment_id", message_event & (c["campaign"] >= 0), _strings(["0"], np.zeros(n, np.int32))),
        ("journey_id", c["journey"] >= 0, journey_ids),
        ("journey_activity_id", message_event & (c["journey"] >= 0),
         _strings([f"act{i:06d}" for i in range(n_journeys)], c["journey"])),
        ("feedback", (feedback >= 0) | (c["link"] >= 0),
         _strings(["opened", "unsubscribed"] + [f"https://shop.example.com/p/{i}" for i in items],
                  np.where(c["link"] >= 0, c["link"] + 2, feedback))),
    ])
    metrics = _map(n, [("price", ~np.isnan(c["price"]), pa.array(c["price"], pa.float64()))])
    arrays = {
        "event_id": event_ids,
        "source": _strings(["pinpoint", "app"], is_app.astype(np.int32)),
        "event_type": _strings(TYPES, type_code),
        "event_time_ms": pa.array(c["event_ms"], pa.int64()),
        "arrival_time_ms": pa.array(c["arrival"], pa.int64()),
        "user_id": user_ids,
        "endpoint_id": _strings(endpoints, c["endpoint"]),
        "campaign_id": campaign_ids,
        "journey_id": journey_ids,
        "item_id": item_ids,
        "attributes": attributes,
        "metrics": metrics,
    }
    schema = arrow_schema()
    return pa.Table.from_arrays([arrays[f.name].cast(f.type) for f in schema], schema=schema)


def _strings(names: Sequence[str], codes: np.ndarray) -> pa.Array:
    """`names[code]` per row, null where the code is negative."""
    codes = np.asarray(codes, np.int32)
    indices = pa.array(codes, pa.int32(), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(names), pa.string())).dictionary_decode()


def _map(n: int, entries: list[tuple[str, np.ndarray, pa.Array]]) -> pa.MapArray:
    """A map column from `(key, rows that have it, value per row)`, keys in the order given."""
    present = np.stack([np.broadcast_to(mask, n) for _, mask, _ in entries], axis=1)
    rows, which = np.nonzero(present)  # row-major: each row's entries together, in key order
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    keys = _strings([key for key, _, _ in entries], which)
    values = pa.concat_arrays([values for _, _, values in entries]).take(pa.array(which * n + rows))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, values)


# --- the two layouts -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Layouts:
    """Where the same events were written."""

    lake: Path
    """Lake root: `<lake>/events/dt=YYYY-MM-DD/part-0.parquet`, as `write_lake` writes it."""
    json: Path
    """The seed's layout: a folder of newline-delimited JSON files, one per arrival day, no partitions."""


def write_layouts(events: pa.Table, spec: StreamSpec, workdir: Path) -> Layouts:
    """Write `events` (sorted by arrival) both ways under `workdir`."""
    import duckdb

    layouts = Layouts(lake=workdir / "lake", json=workdir / "json")
    for folder in (layouts.lake, layouts.json):
        if folder.exists():
            raise FileExistsError(f"{folder} exists; pass an empty or new --workdir")
    layouts.json.mkdir(parents=True)
    arrival = events.column("arrival_time_ms").to_numpy()
    bounds = np.searchsorted(arrival, spec.start_ms + np.arange(spec.days + 1) * DAY_MS)
    with duckdb.connect() as con:
        for offset, (first, last) in enumerate(zip(bounds[:-1], bounds[1:])):
            if first == last:
                continue
            day = events.slice(first, last - first)
            dt = date.fromordinal(START.toordinal() + offset).isoformat()
            folder = layouts.lake / EVENTS_FOLDER / f"{LAKE_PARTITION_KEY}={dt}"
            folder.mkdir(parents=True)
            pq.write_table(day, folder / "part-0.parquet", compression="snappy")
            # DuckDB writes one compact JSON object per line, maps as objects: the canonical JSON shape.
            con.register("day", day)
            con.execute(f"COPY day TO '{_quoted(layouts.json / f'part-{offset:05d}.json')}' (FORMAT json)")
            con.unregister("day")
    return layouts


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


# --- what each scan reads ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Scan:
    """One read of the events table in the query: the columns it references and its `dt` predicates."""

    name: str
    """The CTE it feeds (e.g. `engagements`), else the table's alias."""
    columns: frozenset[str]
    dt_bounds: tuple[tuple[Callable[[str, str], bool], str], ...]

    def selects(self, dt: str) -> bool:
        """Whether Athena reads partition `dt` for this scan (no `dt` predicate: every partition)."""
        return all(compare(dt, literal) for compare, literal in self.dt_bounds)


def table_scans(athena_sql: str, query: InteractionsQuery) -> list[Scan]:
    """The scans of `query`'s table in `athena_sql`, in the order they appear."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.optimizer.scope import traverse_scope

    comparisons = {exp.GTE: operator.ge, exp.GT: operator.gt, exp.LTE: operator.le, exp.LT: operator.lt,
                   exp.EQ: operator.eq}

    def conjuncts(node):
        node = node.unnest()
        return conjuncts(node.left) + conjuncts(node.right) if isinstance(node, exp.And) else [node]

    scans = []
    for scope in traverse_scope(sqlglot.parse_one(athena_sql, read="athena")):
        for alias, (_, source) in scope.selected_sources.items():
            if not (isinstance(source, exp.Table) and source.name == query.table and source.db == query.database):
                continue
            where = scope.expression.args.get("where")
            bounds = []
            for node in conjuncts(where.this) if where else []:
                column, literal = node.args.get("this"), node.args.get("expression")
                if type(node) in comparisons and isinstance(column, exp.Column) and column.table == alias \
                        and column.name == LAKE_PARTITION_KEY and isinstance(literal, exp.Literal) \
                        and literal.is_string:
                    bounds.append((comparisons[type(node)], literal.this))
            mentions = [c for c in (where.find_all(exp.Column) if where else ())
                        if c.table == alias and c.name == LAKE_PARTITION_KEY]
            if len(mentions) != len(bounds):
                # Pruning only follows `dt <op> 'literal'` conjuncts; anything else must not be guessed at.
                raise ValueError(f"scan {alias!r}: a {LAKE_PARTITION_KEY} predicate this bench cannot read: "
                                 f"{where.sql(dialect='athena')}")
            columns = frozenset(c.name for c in scope.columns if c.table == alias) - {LAKE_PARTITION_KEY}
            cte = scope.expression.parent
            scans.append(Scan(cte.alias if isinstance(cte, exp.CTE) else alias, columns, tuple(bounds)))
    return scans


@dataclass(frozen=True, slots=True)
class ScanReads:
    """What one scan reads from each layout."""

    scan: str
    partitions: tuple[str, ...]
    """The `dt` values selected."""
    lake_files: int
    lake_bytes: int
    """Whole Parquet files of the selected partitions."""
    column_bytes: int
    """Compressed column chunks of the referenced columns in those files."""
    json_files: int
    json_bytes: int
    """Every JSON file, whole."""


def measure(query: InteractionsQuery, layouts: Layouts) -> list[ScanReads]:
    """What each scan of the generated SQL for `query` reads from each layout."""
    lake_files = sorted((layouts.lake / EVENTS_FOLDER).glob("*/*.parquet"))
    json_files = sorted(layouts.json.glob("*.json"))
    json_bytes = sum(path.stat().st_size for path in json_files)
    reads = []
    for scan in table_scans(build_interactions_sql(query), query):
        files = [path for path in lake_files if scan.selects(_dt(path))]
        reads.append(ScanReads(
            scan=scan.name,
            partitions=tuple(sorted({_dt(path) for path in files})),
            lake_files=len(files),
            lake_bytes=sum(path.stat().st_size for path in files),
            column_bytes=sum(_column_bytes(path, scan.columns) for path in files),
            json_files=len(json_files),
            json_bytes=json_bytes,
        ))
    return reads


def _dt(path: Path) -> str:
    key, _, value = path.parent.name.partition("=")
    if key != LAKE_PARTITION_KEY:
        raise ValueError(f"{path}: not under a {LAKE_PARTITION_KEY}= partition folder")
    return value


def _column_bytes(path: Path, columns: frozenset[str]) -> int:
    metadata = pq.read_metadata(path)
    return sum(
        chunk.total_compressed_size
        for group in range(metadata.num_row_groups)
        for chunk in (metadata.row_group(group).column(i) for i in range(metadata.num_columns))
        # Nested columns are stored as leaves (`attributes.key_value.key`); they count for their top column.
        if chunk.path_in_schema.split(".")[0] in columns
    )


# --- the same rows from both layouts -------------------------------------------------------------------

def run_on_json(query: InteractionsQuery, json_folder: Path) -> list[Interaction]:
    """The generated SQL for `query` on DuckDB over the seed's JSON files; rows sorted like `run_interactions`."""
    duckdb_types = {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE"}

    def duckdb_type(glue_type: str) -> str:
        if glue_type.startswith("map<"):
            key, value = glue_type[4:-1].split(",")
            return f"MAP({duckdb_types[key]}, {duckdb_types[value]})"
        return duckdb_types[glue_type]

    columns = ", ".join(f"'{name}': '{duckdb_type(t)}'" for name, t in LAKE_COLUMN_TYPES.items())
    # The seed's files have no dt; it is derived from arrival time so the same SQL text runs unchanged.
    return run_interactions_over(
        query, f"SELECT *, strftime(epoch_ms(arrival_time_ms), '%Y-%m-%d') AS {LAKE_PARTITION_KEY} "
               f"FROM read_json('{_quoted(json_folder / '*.json')}', format = 'newline_delimited', "
               f"columns = {{{columns}}})")


# --- the command ---------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lake", description=__doc__.split("\n")[0])
    defaults = StreamSpec()
    parser.add_argument("--events", type=int, default=defaults.events)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--users", type=int, default=None, help="default: events / 40")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the files here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the figures here (bench/results/lake.json is what bench.cost reads)")
    args = parser.parse_args(argv)
    spec = StreamSpec(events=args.events, days=args.days, users=args.users, seed=args.seed)
    began = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {message}", flush=True)

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-lake-")))
        progress(f"generating {spec.events:,} events over {spec.days} days, {spec.n_users:,} users, "
                 f"seed {spec.seed}")
        events = generate(spec)
        kinds = events.column("event_type").to_numpy(zero_copy_only=False)
        exposures = int((kinds == EXPOSURE_EVENT_TYPE).sum())
        scored = int(np.isin(kinds, list(SCORING.values)).sum())
        progress(f"generated: {exposures:,} exposures, {scored:,} scored engagements, "
                 f"{len(kinds) - exposures - scored:,} other events")
        try:
            layouts = write_layouts(events, spec, workdir)
        except FileExistsError as error:
            parser.error(str(error))
        lake_size = sum(p.stat().st_size for p in (layouts.lake / EVENTS_FOLDER).glob("*/*.parquet"))
        json_size = sum(p.stat().st_size for p in layouts.json.glob("*.json"))
        progress(f"wrote {layouts.lake} ({lake_size / 1e6:,.1f} MB Parquet) and {layouts.json} "
                 f"({json_size / 1e6:,.1f} MB JSON)")

        results = []
        for history in HISTORIES:
            query = InteractionsQuery(scoring=SCORING, as_of=spec.as_of, history_days=history)
            reads = measure(query, layouts)
            lake_rows, json_rows = run_interactions(query, layouts.lake), run_on_json(query, layouts.json)
            if lake_rows != json_rows:
                print(f"history {history}: the lake gives {len(lake_rows):,} interactions rows, the JSON "
                      f"{len(json_rows):,}, and they differ", file=sys.stderr)
                return 2
            progress(f"history {history}: {len(lake_rows):,} interactions rows, identical from both layouts")
            results.append((history, reads, len(lake_rows)))

    scans = " + ".join(r.scan for r in results[0][1])
    print(f"\nrun date {spec.as_of}; the query scans the events table {len(results[0][1])} times ({scans}): "
          "files and bytes are per scan, summed\n")
    print(f"| history | lake files ({scans}) | lake MB (partitions) | lake MB (columns) | JSON files | JSON MB "
          "| JSON/lake (partitions) | JSON/lake (columns) | interactions rows |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = {}
    for history, reads, rows in results:
        lake, columns, json = (sum(getattr(r, field) for r in reads)
                               for field in ("lake_bytes", "column_bytes", "json_bytes"))
        ratios[history] = json / lake
        print(f"| {'all' if history == -1 else history} | {' + '.join(str(r.lake_files) for r in reads)} "
              f"| {lake / 1e6:,.2f} | {columns / 1e6:,.2f} | {' + '.join(str(r.json_files) for r in reads)} "
              f"| {json / 1e6:,.2f} | {json / lake:,.1f}× | {json / columns:,.1f}× | {rows:,} |")
    met = ratios[7] >= TARGET_RATIO
    if args.json:
        write_result(args.json, benchmark="lake", command=command_line("bench.lake", argv), figures={
            "events": spec.events, "days": spec.days, "users": spec.n_users, "seed": spec.seed,
            "lake_bytes": lake_size, "json_bytes": json_size,
            "lake_bytes_per_event": lake_size / spec.events,
            "histories": {
                str(history): {
                    "partition_bytes": sum(r.lake_bytes for r in reads),
                    "column_bytes": sum(r.column_bytes for r in reads),
                    "json_bytes": sum(r.json_bytes for r in reads),
                    "scans": len(reads), "interactions_rows": rows,
                } for history, reads, rows in results
            },
            "target_ratio": TARGET_RATIO, "ratio_7_days": ratios[7], "met": met,
        })
    print(f"\n7-day history: the lake reads {ratios[7]:.1f}× less than the JSON by whole partitions "
          f"(target ≥ {TARGET_RATIO:g}×): {'met' if met else 'MISSED'}")
    progress("done")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
