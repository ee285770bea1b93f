"""The sheet model: operations, CSV round trips, and checking with `rules check`'s own messages."""

from __future__ import annotations

import argparse
import io

import pytest

from cli.rules import check_command
from cli.studio.sheet_model import EditRefused, SheetModel
from functions.rules.model import content_rule_id
from functions.rules.sheet import cell_limit, check_rules_sheet

from .conftest import DEMO, FIXTURES, SHEETS, read


@pytest.mark.parametrize("path", SHEETS, ids=lambda p: p.name)
def test_repository_sheets_are_byte_stable(path):
    assert SheetModel.from_csv(read(path)).to_csv().encode("utf-8") == path.read_bytes()


@pytest.mark.parametrize("variant", [
    lambda t: t.replace(",", ";"),
    lambda t: t.replace(",", "\t"),
    lambda t: t.replace(",", "|"),
    lambda t: t.replace("\n", "\r\n"),
    lambda t: "\ufeff" + t,
    lambda t: t.rstrip("\n"),
    lambda t: t + "\n\n",  # blank rows at the end
    lambda t: t.replace("\n", "\n\n", 1),  # a blank row after the header
], ids=["semicolon", "tab", "bar", "crlf", "bom", "no-final-newline", "trailing-blank", "blank-row"])
def test_formats_round_trip(variant):
    text = variant(read(DEMO))
    model = SheetModel.from_csv(text)
    assert model.to_csv() == text
    assert model.check().rules == check_rules_sheet(text, source_name="x").rules


def test_quoted_cells_round_trip_and_edits_are_quoted():
    text = 'RuleId,RuleType,EventName,AttributeName,AttributeValue,Operator-C,Target-C,Operator-V,Target-V,' \
           'ResetWhenReachTarget,ActionName\na,aggregator,purchase,campaign_id,"x, y",at_least,3,na,999,no,said\n'
    model = SheetModel.from_csv(text)
    assert model.to_csv() == text
    edited = model.set_cell(0, "AttributeValue", 'say "hi", now')
    assert '"say ""hi"", now"' in edited.to_csv()
    assert edited.check().rules.by_id("a").attribute_filter.value == 'say "hi", now'


def test_columns_kept_as_read_and_cells_by_any_case():
    model = SheetModel.from_csv(read(FIXTURES / "seed_guide.csv").replace("RuleType", "ruletype"))
    assert model.header[1] == "ruletype"
    assert model.columns[1] == "RuleType"
    assert model.cell(0, "RULETYPE") == "aggregator"
    assert "RuleId" in model.addable_columns() and "Key" not in model.addable_columns()


def test_operations_return_new_models():
    model = SheetModel.from_csv(read(DEMO))
    edited = model.set_cell(1, "Target-C", "4")
    assert model.cell(1, "Target-C") == "2" and edited.cell(1, "Target-C") == "4"
    added = model.add_row(values={"RuleId": "new", "RuleType": "aggregator"})
    assert len(added.rows) == 5 and added.cell(4, "RuleId") == "new" and len(added.rows[4]) == len(model.header)
    inserted = model.add_row(at=0)
    assert inserted.rows[0] == ("",) * len(model.header) and inserted.rows[1] == model.rows[0]
    deleted = model.delete_row(0)
    assert deleted.rows == model.rows[1:]
    moved = model.move_row(0, 3)
    assert moved.rows == (*model.rows[1:], model.rows[0])
    assert moved.move_row(3, 0) == model
    assert [r.rule_id for r in moved.check().rules] == ["welcome-second-send", "mid-october-spender", "active-week",
                                                         "push-regular"]


def test_copy_gets_a_fresh_rule_id_and_keeps_the_original():
    model = SheetModel.from_csv(read(DEMO))
    copied = model.copy_row(0).copy_row(0)
    assert copied.rule_ids()[:3] == ("push-regular", "push-regular-copy2", "push-regular-copy")
    check = copied.check()
    assert check.accepted, check.problems
    assert [r.rule_id for r in check.rules][:3] == ["push-regular", "push-regular-copy2", "push-regular-copy"]
    long_id = "x" * 64
    long = model.set_cell(0, "RuleId", long_id).copy_row(0)
    assert long.rule_ids()[1] == "x" * 59 + "-copy" and long.check().accepted


def test_copy_without_rule_id_is_the_same_rule_until_edited():
    model = SheetModel.from_csv(read(FIXTURES / "seed_guide.csv"))
    copied = model.copy_row(0)
    check = copied.check()
    assert not check.accepted
    assert [str(p) for p in check.problems] == ["row 3, column RuleId: same rule as row 2 (remove the duplicate row, "
                                                "or give it its own RuleId)"]
    assert check.rows[0].rule is not None and check.rows[1].rule is None  # the first stays valid
    assert copied.set_cell(1, "Target-C", "4").check().accepted


def test_add_column_and_set_it():
    model = SheetModel.from_csv(read(FIXTURES / "seed_guide.csv"))
    with pytest.raises(EditRefused, match="add it first"):
        model.set_cell(0, "RuleId", "opener")
    with_id = model.add_column("ruleid")
    assert with_id.header[-1] == "RuleId"
    assert with_id.set_cell(0, "RuleId", "opener").check().rules.rules[0].rule_id == "opener"
    with pytest.raises(EditRefused):
        with_id.add_column("RuleId")
    with pytest.raises(EditRefused):
        model.add_column("Secret")


def test_hostile_cells_are_refused_with_a_short_excerpt():
    model = SheetModel.from_csv(read(DEMO))
    limit = cell_limit("EventName")
    assert model.set_cell(0, "EventName", "e" * limit).cell(0, "EventName") == "e" * limit
    with pytest.raises(EditRefused) as refused:
        model.set_cell(0, "EventName", "AWS_SECRET=" + "s" * 5000)
    assert len(str(refused.value)) < 250 and "5,011 characters" in str(refused.value)
    with pytest.raises(EditRefused):
        model.set_cell(0, "Target-C", "1" * 101)  # every other column: 100
    with pytest.raises(EditRefused):
        model.set_cell(0, "EventName", "a\x00b")
    with pytest.raises(EditRefused):
        model.set_cell(9, "EventName", "x")
    with pytest.raises(EditRefused):
        model.move_row(0, 9)


def test_row_limit():
    text = read(DEMO)
    header, row = text.splitlines()[0], text.splitlines()[1]
    rows = [row.replace("push-regular", f"r{i}") for i in range(500)]
    model = SheetModel.from_csv("\n".join([header, *rows]) + "\n")
    with pytest.raises(EditRefused, match="500"):
        model.add_row()
    with pytest.raises(EditRefused, match="500"):
        model.copy_row(0)
    assert len(model.delete_row(0).add_row().rows) == 500


def test_too_large_text_is_refused_with_the_parsers_message():
    with pytest.raises(EditRefused, match="more than the 1,000,000"):
        SheetModel.from_csv("RuleType\n" + "a\n" * 600_000)


def _rules_check_stderr(path) -> list[str]:
    err = io.StringIO()
    check_command(argparse.Namespace(sheet=path), out=io.StringIO(), err=err)
    return err.getvalue().splitlines()


@pytest.mark.parametrize("path", SHEETS, ids=lambda p: p.name)
def test_messages_are_rules_checks(path):
    assert SheetModel.from_csv(read(path)).check().lines(str(path)) == _rules_check_stderr(path)


def test_edited_sheet_messages_are_rules_checks_for_the_saved_file(tmp_path):
    text = read(DEMO) + "x,aggregator," + "x" * 300 + ",na,na,at_least,1,na,999,,no,,,\n"  # a hostile cell
    model = SheetModel.from_csv(text).set_cell(0, "Operator-C", "more").set_cell(2, "StartDate", "2026-13-01")
    path = tmp_path / "edited.csv"
    path.write_text(model.to_csv(), encoding="utf-8")
    lines = model.check().lines(str(path))
    assert lines == _rules_check_stderr(path)
    assert len(lines) == 4 and "row 6, column EventName: 'xxxx" in lines[2] and "(300 characters)" in lines[2]


def test_valid_rows_keep_their_rules_when_others_are_bad():
    model = SheetModel.from_csv(read(DEMO)).set_cell(1, "Operator-C", "more")
    check = model.check()
    assert not check.accepted
    assert [r.rule_id for r in check.rules] == ["push-regular", "mid-october-spender", "active-week"]
    assert [row.rule is None for row in check.rows] == [False, True, False, False]
    (problem,) = check.rows[1].problems
    assert model.problem_column(problem) == model.column_index("Operator-C")
    expected = check_rules_sheet(read(DEMO), source_name="x").rules
    assert check.rows[3].rule == expected.by_id("active-week")


def test_unknown_column_rejects_the_sheet_but_rows_keep_their_rules():
    text = read(DEMO).replace("Window\n", "Window,Secret\n", 1)
    check = SheetModel.from_csv(text).check()
    assert not check.accepted and [str(p).split(":")[0] for p in check.problems] == ["row 1, column Secret"]
    assert len(check.rules) == 4 and check.header_problems == check.problems


def test_fatal_header_leaves_no_rule():
    text = read(DEMO).replace("RuleType", "Kind", 1)
    check = SheetModel.from_csv(text).check()
    assert not check.accepted and len(check.rules) == 0
    assert any("RuleType: required column is missing" in str(p) for p in check.problems)


def test_warnings_keep_row_numbers_when_the_sheet_is_rejected():
    model = SheetModel.from_csv(read(FIXTURES / "seed_guide.csv")).set_cell(0, "RuleType", "monthly")
    check = model.check()
    assert [w.row for w in check.warnings] == [3, 4, 5]
    assert [r.rule_id for r in check.rules] == [row.rule.rule_id for row in check.rows[1:]]
    assert check.rows[0].rule is None and len(check.rules) == 3
    assert check.rows[1].rule.rule_id == content_rule_id(check.rows[1].rule)
    assert check.rows[1].warnings and "no RuleId" in check.rows[1].warnings[0].message


def test_blank_rows_keep_numbering():
    text = read(DEMO).replace("\nwelcome", "\n\nwelcome", 1)
    model = SheetModel.from_csv(text).set_cell(2, "Operator-C", "more")
    check = model.check()
    assert check.rows[1].blank and [str(p).split(":")[0] for p in check.problems] == ["row 4, column Operator-C"]
    assert check.lines("s.csv")[0] == check_lines(model.to_csv())[0]


def check_lines(text):
    from functions.rules.sheet import RulesSheetError

    try:
        check_rules_sheet(text, source_name="s.csv")
    except RulesSheetError as error:
        return error.lines()
    return []


def test_empty_text_is_a_sheet_without_header():
    model = SheetModel.from_csv("")
    assert model.to_csv() == "" and model.rows == ()
    assert [str(p) for p in model.check().problems][0].startswith("row 1: the sheet has no header row")
    assert SheetModel.new().add_row(values={"RuleId": "a"}).to_csv().startswith("RuleId,RuleType")


def test_pin_rule_ids_keeps_every_id():
    model = SheetModel.from_csv(read(FIXTURES / "seed_guide.csv")).set_cell(1, "RuleType", "monthly")
    before = model.check()
    pinned = model.pin_rule_ids()
    after = pinned.check()
    assert pinned.header[-1] == "RuleId"
    assert [r.rule_id for r in after.rules] == [r.rule_id for r in before.rules]
    assert pinned.rule_ids()[1] == "" and pinned.rule_ids()[0] == before.rules.rules[0].rule_id
    assert not after.warnings  # the valid rows have RuleIds now
    # Editing a pinned rule keeps its id.
    assert pinned.set_cell(0, "Target-C", "7").check().rows[0].rule.rule_id == before.rules.rules[0].rule_id


@pytest.mark.parametrize("column", ["Operator-C", "ResetWhenReachTarget", "RuleType"])
def test_dropdown_choices_are_what_the_parser_accepts(column):
    from cli.studio.sheet_model import CHOICES

    model = SheetModel.from_csv(read(DEMO))
    for choice in CHOICES[column]:
        edited = model.set_cell(0, column, choice)
        if column == "RuleType" and choice == "date":
            edited = edited.set_cell(0, "StartDate", "2026-01-01").set_cell(0, "FinishDate", "2026-01-02")
        if column == "RuleType" and choice == "window":
            edited = edited.set_cell(0, "Window", "7d")
        if column == "Operator-C" and choice == "na":
            edited = edited.set_cell(0, "Target-C", "na").set_cell(0, "Operator-V", "at_least").set_cell(
                0, "Target-V", "10")
        problems = edited.check().rows[0].problems
        assert not problems, (choice, [str(p) for p in problems])


def test_unreadable_csv_is_refused_with_the_parsers_message():
    with pytest.raises(EditRefused, match="not a readable CSV file"):
        SheetModel.from_csv("RuleType,EventName\naggregator," + "x" * 200_000 + "\n")
