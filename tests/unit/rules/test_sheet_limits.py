"""Issue 10 findings 4 and 10: every sheet cell, the number of rules and the sheet's size are bounded, a message
quotes at most a short excerpt of a cell, and the longest rule the sheet accepts gives a backfill query far
below Athena's query string limit."""

from __future__ import annotations

import sqlglot
import pytest

from functions.events.parsing import MAX_NAME_CHARS, MAX_VALUE_CHARS
from functions.lake_names import MAX_QUERY_BYTES, InvalidName, check_query_size
from functions.rules.backfill import build_backfill_sql
from functions.rules.sheet import (
    ACTION_NAME, ATTRIBUTE_NAME, ATTRIBUTE_VALUE, CELL_LIMITS, EVENT_NAME, EXCERPT_CHARS, MAX_OTHER_CELL_CHARS,
    MAX_RULES, MAX_SHEET_BYTES, METRIC_NAME, RULE_ID, RulesSheetError, parse_rules_sheet,
)  # fmt: skip
from tests.unit.rules.conftest import make_sheet

SHOWN_MAX = 400  # no problem line is longer than this, whatever the cell


def problems(text: str) -> list[str]:
    with pytest.raises(RulesSheetError) as caught:
        parse_rules_sheet(text, source_name="sheet.csv")
    return [str(problem) for problem in caught.value.problems]


def test_the_caps_follow_the_normalisers_limits():
    assert CELL_LIMITS[EVENT_NAME] == CELL_LIMITS[ATTRIBUTE_NAME] == CELL_LIMITS[METRIC_NAME] == MAX_NAME_CHARS == 256
    assert CELL_LIMITS[ATTRIBUTE_VALUE] == MAX_VALUE_CHARS == 1000
    assert (CELL_LIMITS[RULE_ID], CELL_LIMITS[ACTION_NAME]) == (64, 128)


def test_a_100000_character_cell_is_rejected_with_a_short_message():
    huge = "x" * 100_000
    found = problems(make_sheet({"AttributeName": "channel", "AttributeValue": huge}))
    assert found == [f"row 2, column AttributeValue: {'x' * EXCERPT_CHARS!r}… (100,000 characters) is longer than "
                     "the 1,000 characters this column's cells may have (shorten it to at most 1,000 characters)"]


@pytest.mark.parametrize(("column", "limit", "fill"), [
    ("EventName", MAX_NAME_CHARS, "e"), ("AttributeName", MAX_NAME_CHARS, "a"),
    ("AttributeValue", MAX_VALUE_CHARS, "v"), ("MetricName", MAX_NAME_CHARS, "m"),
    ("RuleId", 64, "r"), ("Operator-C", MAX_OTHER_CELL_CHARS, "o"), ("Target-V", MAX_OTHER_CELL_CHARS, "9"),
    ("Key", MAX_OTHER_CELL_CHARS, "k"), ("Window", MAX_OTHER_CELL_CHARS, "w"),
])
def test_every_cell_has_a_cap(column, limit, fill):
    row = {"AttributeName": "channel", "AttributeValue": "web", "Operator-V": "at_least", "Target-V": "1",
           "MetricName": "amount", "ActionName": "done"}
    [problem] = problems(make_sheet({**row, column: fill * (limit + 1)}))
    assert problem.startswith(f"row 2, column {column}: ") and f"at most {limit:,} characters" in problem
    assert len(problem) < SHOWN_MAX


def test_names_and_values_at_their_caps_are_accepted():
    rules = parse_rules_sheet(make_sheet({
        "EventName": "e" * MAX_NAME_CHARS, "AttributeName": "a" * MAX_NAME_CHARS,
        "AttributeValue": "v" * MAX_VALUE_CHARS, "Operator-V": "at_least", "Target-V": "1",
        "MetricName": "m" * MAX_NAME_CHARS, "ActionName": "done", "RuleId": "r" * 64,
    }), source_name="sheet.csv")
    assert len(rules) == 1


def test_the_longest_rule_the_sheet_accepts_gives_a_backfill_query_far_below_athenas_limit():
    # Worst case per byte: 4-byte characters, and `'` (doubled in a SQL string) where a name may hold it.
    wide, quote = "\U0001F600", "'"
    rules = parse_rules_sheet(make_sheet({
        "RuleType": "window", "Window": "366d", "EventName": quote * MAX_NAME_CHARS,
        "AttributeName": wide * MAX_NAME_CHARS, "AttributeValue": quote * MAX_VALUE_CHARS,
        "Operator-C": "na", "Target-C": "na", "Operator-V": "at_least", "Target-V": "1",
        "MetricName": wide * MAX_NAME_CHARS, "ActionName": "done", "RuleId": "r" * 64,
    }), source_name="sheet.csv")
    sql = build_backfill_sql(rules.rules[0], 1_790_000_000_000, database="d" * 255, table="t" * 255)
    size = len(sql.encode("utf-8"))
    assert size < MAX_QUERY_BYTES // 10, size  # one rule per query: about 9 KB against 256 KB
    assert len(sqlglot.parse(sql, read="athena")) == 1


def test_a_query_past_athenas_limit_is_refused_without_echoing_it():
    with pytest.raises(InvalidName) as caught:
        check_query_size("SELECT '" + "s" * MAX_QUERY_BYTES + "'", "the backfill query")
    assert "s" * 20 not in str(caught.value) and "262,144" in str(caught.value)


def test_the_number_of_rules_is_capped():
    rows = [{"RuleId": f"r{number}"} for number in range(MAX_RULES + 1)]
    assert problems(make_sheet(*rows)) == [
        f"row 1: the sheet has {MAX_RULES + 1:,} rules, more than the {MAX_RULES:,} one sheet may hold "
        "(remove rules that are no longer needed)"]
    assert len(parse_rules_sheet(make_sheet(*rows[:MAX_RULES]), source_name="s")) == MAX_RULES


def test_the_sheet_size_is_capped():
    text = make_sheet({}) + "\n" * (MAX_SHEET_BYTES + 1)
    [problem] = problems(text)
    assert problem.startswith("row 1: the sheet is ") and f"{MAX_SHEET_BYTES:,}" in problem


# --- finding 4: no contents echoed ------------------------------------------------------------------------


ENV_DUMP = ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
            "DATABASE_URL=postgres://admin:hunter2@db.internal:5432/prod\nHOME=/root\n")


def test_a_file_that_is_not_a_rules_sheet_is_reported_without_its_contents():
    found = problems(ENV_DUMP)
    assert found == ["row 1: none of the 1 header cells names a rules sheet column, so this does not look like a "
                     "rules sheet; it reads 'AWS_SECRET_ACCESS_KEY…' (1 cell, separated by commas) (point at the rules CSV; its first row names columns such as RuleType, "
                     "EventName, Operator-C, Target-C, Operator-V, Target-V, ResetWhenReachTarget)"]
    assert not any("wJalr" in line or "hunter2" in line for line in found)


def test_a_long_bad_header_cell_is_quoted_as_a_short_excerpt():
    long_label = "Colour" + "z" * 5_000
    text = make_sheet({}).replace("Key,", f"{long_label},", 1)
    [problem] = problems(text)
    assert problem.startswith("row 1, column A ('Colour") and "(5,006 characters)" in problem
    assert len(problem) < SHOWN_MAX


def test_a_bad_cell_is_quoted_as_a_short_excerpt():
    [problem] = problems(make_sheet({"RuleType": "aggregator-" + "q" * 80}))
    assert "… (91 characters) is not a rule type" in problem and "q" * 40 not in problem
