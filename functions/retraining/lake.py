"""A local copy of the lake, and the interactions SQL run over it on DuckDB.

Local tools and tests only (no Lambda imports this; pyarrow and DuckDB are not in the Lambda archive).
Canonical events are written the way the lake holds them — Parquet with the Glue column types, one Hive
`dt=YYYY-MM-DD` folder per arrival day — and the Athena text from `sql.py` is transpiled by sqlglot and
run by DuckDB against a view named like the Athena table, so the text under test is the text Athena runs.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from functions.events.canonical import LAKE_COLUMN_TYPES, LAKE_PARTITION_KEY, CanonicalEvent, arrival_day
from functions.retraining.interactions_csv import Interaction
from functions.retraining.sql import INTERACTIONS_COLUMNS, InteractionsQuery, build_interactions_sql

__all__ = ["EVENTS_FOLDER", "Interaction", "arrow_schema", "duckdb_sql", "run_interactions",
           "run_interactions_over", "write_lake", "write_lake_rows"]

EVENTS_FOLDER = "events"


def arrow_schema():
    """The lake's Parquet schema, from the Glue column types (the partition column lives in the path)."""
    import pyarrow as pa

    scalars = {"string": pa.string(), "bigint": pa.int64(), "double": pa.float64()}

    def arrow_type(glue_type: str):
        if glue_type in scalars:
            return scalars[glue_type]
        match = re.fullmatch(r"map<(\w+),(\w+)>", glue_type)
        if match and match[1] in scalars and match[2] in scalars:
            return pa.map_(scalars[match[1]], scalars[match[2]])
        raise ValueError(f"no Arrow type for Glue type {glue_type!r}; extend lake.arrow_schema")

    return pa.schema([pa.field(name, arrow_type(t)) for name, t in LAKE_COLUMN_TYPES.items()])


def write_lake(events: Iterable[CanonicalEvent], root: str | Path, *, part: int = 0) -> list[Path]:
    """Write `events` under `<root>/events/dt=<arrival day>/part-<part>.parquet`; returns the files written."""
    return write_lake_rows((event.to_json_dict() for event in events), root, part=part)


def write_lake_rows(rows: Iterable[dict], root: str | Path, *, part: int = 0) -> list[Path]:
    """`write_lake` for rows as the Firehose transformation emits them (`CanonicalEvent.to_json_dict`, the JSON
    Firehose converts to Parquet by the Glue schema); several writers of one lake give each its own `part`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema()
    by_day: dict[str, list[dict]] = defaultdict(list)
    for source in rows:
        # Arrow builds map columns from lists of (key, value) pairs.
        row = {**source, "attributes": list(source["attributes"].items()),
               "metrics": list(source["metrics"].items())}
        by_day[arrival_day(int(source["arrival_time_ms"]))].append(row)
    written = []
    for day, day_rows in sorted(by_day.items()):
        folder = Path(root) / EVENTS_FOLDER / f"{LAKE_PARTITION_KEY}={day}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"part-{part}.parquet"
        pq.write_table(pa.Table.from_pylist(day_rows, schema=schema), path)
        written.append(path)
    return written


def duckdb_sql(athena_sql: str) -> str:
    """The Athena text as DuckDB runs it (sqlglot, Athena → DuckDB)."""
    import sqlglot

    (statement,) = sqlglot.transpile(athena_sql, read="athena", write="duckdb")
    return statement


def run_interactions(query: InteractionsQuery, root: str | Path) -> list[Interaction]:
    """Run the generated SQL for `query` over the lake at `root`; rows sorted for stable output."""
    folder = Path(root).resolve() / EVENTS_FOLDER
    if not any(folder.glob("*/*.parquet")):
        return []  # DuckDB refuses a glob that matches nothing; an empty lake has no interactions.
    pattern = str(folder / "*" / "*.parquet").replace("'", "''")
    # dt stays a string as in Glue: DuckDB would otherwise infer DATE and compare dates, not strings.
    return run_interactions_over(
        query, f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
               f"hive_types = {{'{LAKE_PARTITION_KEY}': 'VARCHAR'}})")


def run_interactions_over(query: InteractionsQuery, source_sql: str) -> list[Interaction]:
    """Run the generated SQL for `query` on DuckDB with its table defined as `source_sql` (a SELECT of the
    lake's columns and `dt`); rows sorted for stable output."""
    import duckdb

    with duckdb.connect() as con:
        con.execute(f'CREATE SCHEMA "{query.database}"')
        con.execute(f'CREATE VIEW "{query.database}"."{query.table}" AS {source_sql}')
        result = con.execute(duckdb_sql(build_interactions_sql(query)))
        columns = tuple(d[0] for d in result.description)
        if columns != INTERACTIONS_COLUMNS:
            raise AssertionError(f"interactions SQL returned columns {columns}, expected {INTERACTIONS_COLUMNS}")
        return sorted(Interaction(*row) for row in result.fetchall())
