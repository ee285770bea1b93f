"""The one interactions writer: what the retraining run imports and what the preview writes."""

from __future__ import annotations

import csv
import io
import json

import pytest

from functions.retraining.interactions_csv import Interaction, InteractionsWriter, parse_row
from tests.unit.retraining.test_cli_preview import FIXTURES, preview


def written(rows) -> str:
    out = io.StringIO()
    InteractionsWriter(out).write_all(rows)
    return out.getvalue()


def test_plain_header_unquoted_numbers_and_rfc4180_quoting_of_awkward_ids():
    assert written([Interaction("u-1", "sku-1", "purchase", 20, 1763000000),
                    Interaction("doe, jane", 'sku "7", blue', "purchase", 0.5, 1763000001)]) == (
        "USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP\n"
        "u-1,sku-1,purchase,20.0,1763000000\n"
        '"doe, jane","sku ""7"", blue",purchase,0.5,1763000001\n')


def test_athena_rows_parse_and_round_trip():
    athena = '"USER_ID","ITEM_ID","EVENT_TYPE","EVENT_VALUE","TIMESTAMP"\n"a,b","i""1","purchase","20.0","1763000000"\n'
    reader = csv.reader(io.StringIO(athena))
    next(reader)
    (row,) = [parse_row(r) for r in reader]
    assert row == Interaction("a,b", 'i"1', "purchase", 20.0, 1763000000)
    assert written([row]).splitlines()[1] == '"a,b","i""1",purchase,20.0,1763000000'


@pytest.mark.parametrize("row, message", [
    (["u", "i", "t", "1.0"], "4 columns, expected 5"),
    (["u", "i", "t", "1.0", "1.5"], "TIMESTAMP '1.5' is not whole epoch seconds"),
    (["u", "i", "t", "x", "1"], "EVENT_VALUE 'x' is not a finite number"),
    (["u", "i", "t", "nan", "1"], "EVENT_VALUE 'nan' is not a finite number"),
])
def test_bad_rows_are_refused(row, message):
    with pytest.raises(ValueError, match=message):
        parse_row(row)


def test_the_preview_writes_through_the_same_writer(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "user_id": "doe, jane",
                                  "item_id": 'sku "7", blue', "event_time_ms": 1_762_000_000_000}) + "\n")
    out = tmp_path / "interactions.csv"
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(events), "--out", str(out)) == 0
    assert out.read_bytes() == (b"USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP\n"
                                b'"doe, jane","sku ""7"", blue",purchase,10.0,1762000000\n')


def test_the_writer_refuses_a_row_that_would_span_two_lines():
    import io

    import pytest

    from functions.retraining.interactions_csv import Interaction, InteractionsWriter
    out = io.StringIO()
    with pytest.raises(ValueError, match="USER_ID .* line break"):
        InteractionsWriter(out).write(Interaction("u\n1", "i", "purchase", 1.0, 1))
    assert out.getvalue() == "USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP\n"
