"""The generated Athena text: valid Athena, stable, driven by config only, and pruned by partition."""

from __future__ import annotations

import difflib
from datetime import date, datetime

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from functions.events.canonical import CanonicalEvent, EventSource
from functions.retraining.lake import Interaction, duckdb_sql, run_interactions, write_lake
from functions.retraining.scoring import ScoringModel
from functions.retraining.sql import InteractionsQuery, build_interactions_sql

D = date(2026, 11, 8)
SCORING = {"_email.open": 1, "_email.click": 5}


def query(scoring=SCORING, **options) -> InteractionsQuery:
    return InteractionsQuery(scoring=ScoringModel.from_mapping(scoring, source="test"), as_of=D, **options)


def test_sql_parses_as_athena_and_transpiles_to_one_duckdb_statement():
    sql = build_interactions_sql(query(history_days=30))
    tree = sqlglot.parse_one(sql, read="athena")
    assert [e.alias_or_name for e in tree.expressions] == ["USER_ID", "ITEM_ID", "EVENT_TYPE", "EVENT_VALUE",
                                                           "TIMESTAMP"]
    assert tree.args.get("distinct") is not None
    assert len(sqlglot.transpile(sql, read="athena", write="duckdb")) == 1


def test_map_lookup_is_null_safe_on_both_engines():
    # Trino's `map[key]` fails on a missing key; `element_at` returns NULL, and sqlglot maps it to DuckDB's
    # `map[key]`, which returns NULL too.
    sql = build_interactions_sql(query())
    assert "element_at(x.attributes, 'personalize_user_id')" in sql
    assert "x.attributes['personalize_user_id']" in duckdb_sql(sql)
    assert duckdb.sql(duckdb_sql("SELECT element_at(MAP(ARRAY['a'], ARRAY['1']), 'b')")).fetchall() == [(None,)]


def test_same_spec_same_text_and_config_order_does_not_matter():
    assert build_interactions_sql(query()) == build_interactions_sql(query())
    reordered = dict(reversed(list(SCORING.items())))
    assert build_interactions_sql(query(reordered)) == build_interactions_sql(query())


def test_changing_a_weight_changes_only_its_value_literal():
    before = build_interactions_sql(query())
    after = build_interactions_sql(query({**SCORING, "_email.click": 7.25}))
    changed = [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:1] in "+-"]
    assert changed == ["-         ('_email.click', 5.0),", "+         ('_email.click', 7.25),"]


def test_history_and_window_appear_only_as_partition_bounds_and_window_millis():
    sql = build_interactions_sql(query(history_days=3, attribution_days=2))
    assert "e.\"dt\" >= '2026-11-05' AND e.\"dt\" < '2026-11-08'" in sql
    assert "x.\"dt\" >= '2026-11-03' AND x.\"dt\" < '2026-11-08'" in sql
    assert "g.arrival_time_ms - 172800000" in sql
    everything = build_interactions_sql(query())
    assert ">= '" not in everything and "e.\"dt\" < '2026-11-08'" in everything


def test_event_types_are_quoted_as_literals():
    sql = build_interactions_sql(query({"x'); DROP TABLE t; --": 1}))
    literals = {s.this for s in sqlglot.parse_one(sql, read="athena").find_all(exp.Literal) if s.is_string}
    assert "x'); DROP TABLE t; --" in literals
    assert len(sqlglot.parse(sql, read="athena")) == 1


def test_event_type_filter_is_a_join_on_the_scoring_values():
    # The seed's filter lost its parentheses (`a OR b AND c`); here the types are rows joined on, and the
    # only OR is parenthesised on its own.
    tree = sqlglot.parse_one(build_interactions_sql(query()), read="athena")
    (or_,) = list(tree.find_all(exp.Or))
    assert isinstance(or_.parent, exp.Paren)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"history_days": 0}, "history_days: expected -1 (all history) or a number of days ≥ 1, got 0"),
        ({"history_days": -2}, "history_days"),
        ({"attribution_days": 0}, "attribution_days: expected a whole number of days ≥ 1, got 0"),
        ({"attribution_days": True}, "attribution_days"),
        ({"database": 'x"; --'}, "database: expected a Glue name"),
        ({"table": ""}, "table: expected a Glue name"),
    ],
)
def test_invalid_specs_are_rejected(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        query(**options)


# --- partition pruning -----------------------------------------------------------------------------------

def _event(event_type: str, day: str, **fields) -> CanonicalEvent:
    ms = int(datetime.fromisoformat(f"{day}T12:00:00+00:00").timestamp() * 1000)
    return CanonicalEvent(event_id=f"{event_type}-{day}", source=EventSource.APP, event_type=event_type,
                          event_time_ms=ms, arrival_time_ms=ms, endpoint_id="ep-1", campaign_id="c-1", **fields)


def _lake_with_corrupt_days(root, corrupt_days: list[str]) -> None:
    write_lake([
        # A valid file sorting first, so DuckDB takes the schema from it; outside every range queried here.
        _event("_email.open", "2001-01-01", user_id="u-0", item_id="old"),
        _event("_custom.recommender", "2026-10-30", item_id="i-1", attributes={"personalize_user_id": "pu-1"}),
        _event("_email.open", "2026-11-06", user_id="u-1"),
    ], root)
    for day in corrupt_days:
        folder = root / "events" / f"dt={day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-0.parquet").write_bytes(b"not parquet: reading this file fails the query")


def test_only_partitions_in_range_are_read(tmp_path):
    # History 3 days → engagements 11-05 … 11-07, exposures from 11-05 minus 7 days = 10-29.
    _lake_with_corrupt_days(tmp_path, ["2026-10-28", "2026-11-08", "2026-11-09"])
    rows = run_interactions(query(history_days=3), tmp_path)
    assert rows == [Interaction("pu-1", "i-1", "_email.open", 1.0, _event("x", "2026-11-06").arrival_time_ms // 1000)]


@pytest.mark.parametrize(("options", "corrupt_day"),
                         [({"history_days": 3}, "2026-10-29"), ({"history_days": 3}, "2026-11-07"),
                          ({"history_days": -1}, "2026-10-28")])
def test_a_corrupt_partition_in_range_does_fail(tmp_path, options, corrupt_day):
    # The control for the test above: the corrupt files are noticed whenever their day is in range.
    _lake_with_corrupt_days(tmp_path, [corrupt_day])
    with pytest.raises(duckdb.Error):
        run_interactions(query(**options), tmp_path)
