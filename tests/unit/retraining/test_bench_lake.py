"""`bench/lake.py` at tiny scale: the measures come from the partitions the SQL selects, and both layouts
hold the same events and give the same interactions rows."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from bench.lake import SCORING, StreamSpec, generate, main, measure, run_on_json, table_scans, write_layouts
from functions.events.canonical import CanonicalEvent
from functions.retraining.lake import EVENTS_FOLDER, run_interactions
from functions.retraining.sql import InteractionsQuery, build_interactions_sql

SPEC = StreamSpec(events=5_000, days=30, users=300, seed=7)


@pytest.fixture(scope="module")
def events():
    return generate(SPEC)


@pytest.fixture(scope="module")
def layouts(events, tmp_path_factory):
    return write_layouts(events, SPEC, tmp_path_factory.mktemp("bench"))


def query(history_days: int) -> InteractionsQuery:
    return InteractionsQuery(scoring=SCORING, as_of=SPEC.as_of, history_days=history_days)


def days_before(as_of: date, count: int) -> tuple[str, ...]:
    return tuple((as_of - timedelta(days=n)).isoformat() for n in range(count, 0, -1))


def test_the_stream_is_seeded_exact_and_sorted_by_arrival(events):
    assert events.equals(generate(SPEC))
    assert events.num_rows == SPEC.events
    arrival = events.column("arrival_time_ms").to_pylist()
    assert arrival == sorted(arrival)
    assert SPEC.start_ms <= arrival[0] and arrival[-1] < SPEC.start_ms + SPEC.days * 86_400_000
    kinds = set(events.column("event_type").to_pylist())
    assert {"_custom.recommender", "_email.open", "_email.click", "purchase", "_session.start"} <= kinds


def test_both_layouts_hold_every_event_and_the_json_is_canonical(layouts):
    partitions = sorted(p.name for p in (layouts.lake / EVENTS_FOLDER).iterdir())
    assert partitions == [f"dt={day}" for day in days_before(SPEC.as_of, SPEC.days)]
    lake_rows = sum(pq.read_metadata(p).num_rows for p in (layouts.lake / EVENTS_FOLDER).glob("*/*.parquet"))
    lines = [line for path in sorted(layouts.json.glob("*.json")) for line in path.read_text().splitlines()]
    assert lake_rows == len(lines) == SPEC.events
    for line in lines[::97]:
        row = json.loads(line)
        assert json.loads(CanonicalEvent.from_json_dict(row).to_json()) == row


def test_seven_days_read_seven_engagement_and_fourteen_exposure_partitions(layouts):
    engagements, exposures = measure(query(7), layouts)
    assert (engagements.scan, exposures.scan) == ("engagements", "exposures")
    assert engagements.partitions == days_before(SPEC.as_of, 7)
    assert exposures.partitions == days_before(SPEC.as_of, 7 + 7)  # history + attribution window
    for reads in (engagements, exposures):
        files = [p for day in reads.partitions for p in (layouts.lake / EVENTS_FOLDER / f"dt={day}").iterdir()]
        assert reads.lake_files == len(files)
        assert reads.lake_bytes == sum(p.stat().st_size for p in files)
        assert 0 < reads.column_bytes < reads.lake_bytes
        assert reads.json_files == SPEC.days
        assert reads.json_bytes == sum(p.stat().st_size for p in layouts.json.glob("*.json"))


def test_all_history_reads_every_partition_in_both_scans(layouts):
    assert [r.partitions for r in measure(query(-1), layouts)] == [days_before(SPEC.as_of, SPEC.days)] * 2


def test_each_scan_counts_only_the_columns_it_references():
    engagements, exposures = table_scans(build_interactions_sql(query(7)), query(7))
    assert engagements.columns == {"user_id", "endpoint_id", "campaign_id", "journey_id", "item_id",
                                   "event_type", "arrival_time_ms"}
    assert exposures.columns == {"attributes", "item_id", "endpoint_id", "campaign_id", "journey_id",
                                 "event_type", "arrival_time_ms"}


def test_a_partition_predicate_it_cannot_read_is_refused():
    sql = "SELECT e.user_id FROM engagement_loop.events AS e WHERE e.dt = '2026-08-01' OR e.dt = '2026-08-02'"
    with pytest.raises(ValueError, match="cannot read"):
        table_scans(sql, query(7))


@pytest.mark.parametrize("history_days", [7, 30, -1])
def test_both_layouts_give_the_same_interactions(layouts, history_days):
    rows = run_interactions(query(history_days), layouts.lake)
    assert rows
    assert run_on_json(query(history_days), layouts.json) == rows


def test_the_command_prints_the_table_and_exits_by_the_seven_day_target(tmp_path, capsys):
    code = main(["--events", "3000", "--days", "20", "--seed", "3", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| 7 | 7 + 14 |" in out and "| all | 20 + 20 |" in out
    assert code == (0 if ": met" in out else 1)
