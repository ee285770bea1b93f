"""The rules sheet parser: seed columns verbatim, sentinels, header handling, every validation message."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.rules.model import ActionKind, AttributeFilter, CountCondition, Operator, Rule, RuleSet, RuleType, SumCondition

from functions.rules.sheet import Problem, RulesSheetError, parse_rules_sheet


def parse(text: str) -> RuleSet:
    return parse_rules_sheet(text, source_name="sheet.csv")


def problems(text: str) -> list[str]:
    with pytest.raises(RulesSheetError) as caught:
        parse(text)
    return [str(problem) for problem in caught.value.problems]


# --- the sample sheet -----------------------------------------------------------------------------


def test_seed_guide_sheet_parses_into_the_four_documented_rules(fixtures_dir):
    rules = parse((fixtures_dir / "seed_guide.csv").read_text(encoding="utf-8")).rules

    opened, journey, purchases, active = rules
    assert opened.rule_type is RuleType.AGGREGATOR
    assert opened.event_name == "_campaign.opened_notification"
    assert opened.attribute_filter == AttributeFilter("campaign_id", "summer_sale")
    assert opened.count_condition == CountCondition(Operator.AT_LEAST, 3)
    assert opened.sum_condition is None
    assert (opened.reset, opened.action_kind) == (False, ActionKind.ATTRIBUTE)
    assert opened.action_name == "campaign_opened_notification_summer_sale"

    assert journey.count_condition == CountCondition(Operator.EQUAL, 2)
    assert (journey.reset, journey.action_kind) == (True, ActionKind.EVENT)
    assert journey.action_name == "trk__journey.send_welcome"

    assert purchases.rule_type is RuleType.DATE
    assert purchases.count_condition is None
    assert purchases.sum_condition == SumCondition(Operator.AT_LEAST, Decimal(100), None)
    assert (purchases.start_date, purchases.finish_date) == (date(2026, 11, 1), date(2026, 11, 30))
    assert purchases.action_name == "trk_date_purchase"
    assert purchases.action_kind is ActionKind.ATTRIBUTE

    assert active.rule_type is RuleType.WINDOW
    assert active.window_days == 7
    assert (active.start_date, active.finish_date) == (None, None)
    assert active.action_name == "session_start"


def test_bad_sheet_lists_every_problem_in_sheet_order(fixtures_dir):
    assert problems((fixtures_dir / "bad.csv").read_text(encoding="utf-8")) == [
        "row 2, column RuleType: 'monthly' is not a rule type (use aggregator, date or window)",
        "row 3, column Operator-C: 'more_than' is not an operator (use equal, greater, at_least or na)",
        "row 3, column Target-C: 'three' is not a whole number (write a count, e.g. 3)",
        "row 4, column Operator-C: both conditions are na, so the rule can never be met "
        "(set Operator-C/Target-C or Operator-V/Target-V)",
        "row 5, column FinishDate: 2026-11-01 is before StartDate 2026-12-01 (swap the dates)",
        "row 6, column Target-C: count target -2 is negative (use 0 or more)",
        "row 6, column Window: a window rule needs a window (write a number of days from 1d to 366d, e.g. 7d)",
        "row 7, column EventName: 'trk_purchase' is an event the engine emits itself, which is never counted "
        "(count the event that leads to it instead)",
        "row 7, column ResetWhenReachTarget: 'maybe' is not yes or no (write yes or no)",
        "row 7, column Window: a window only applies to window rules, not aggregator "
        "(set RuleType to window, or clear Window)",
        "row 7, column RuleId: rule id 'opens' is already used on row 2 (give each rule its own id)",
    ]


# --- columns and sentinels ------------------------------------------------------------------------


def test_seed_columns_alone_are_enough(sheet):
    from_seed_columns = parse(sheet({"Key": "7", "Target-C": "4"}, columns=[
        "Key", "RuleType", "EventName", "AttributeName", "AttributeValue", "Operator-C", "Target-C",
        "Operator-V", "Target-V", "ResetWhenReachTarget", "StartDate", "FinishDate",
    ]))  # fmt: skip
    (rule,) = from_seed_columns.rules
    assert rule.count_condition == CountCondition(Operator.AT_LEAST, 4)
    assert rule.rule_id.startswith("r-")


def test_optional_columns_may_be_left_out(sheet):
    minimal = ["RuleType", "EventName", "Operator-C", "Target-C", "Operator-V", "Target-V", "ResetWhenReachTarget"]
    (rule,) = parse(sheet({}, columns=minimal)).rules
    assert rule.attribute_filter is None and rule.start_date is None


@pytest.mark.parametrize("none", ["na", "NA", "999", ""])
def test_sentinels_mean_no_filter_and_no_condition(sheet, none):
    row = {"AttributeName": none, "AttributeValue": none, "Operator-V": none, "Target-V": none,
           "ResetWhenReachTarget": none if none != "999" else "no", "MetricName": none, "RuleId": none,
           "ActionName": none, "Window": none}  # fmt: skip
    (rule,) = parse(sheet(row)).rules
    assert rule.attribute_filter is None
    assert rule.sum_condition is None
    assert rule.reset is False
    assert rule.action_name == "purchase"


@pytest.mark.parametrize("none", ["9999-99-99", "na", ""])
def test_date_sentinel_means_no_date(sheet, none):
    (rule,) = parse(sheet({"StartDate": none, "FinishDate": none})).rules
    assert (rule.start_date, rule.finish_date) == (None, None)


def test_999_after_a_real_operator_is_a_real_target(sheet):
    (rule,) = parse(sheet({"Operator-C": "na", "Target-C": "na", "Operator-V": "greater", "Target-V": "999"})).rules
    assert rule.sum_condition == SumCondition(Operator.GREATER, Decimal(999))


def test_headers_match_case_insensitively_in_any_order(sheet):
    canonical = parse(sheet({"AttributeName": "campaign_id", "AttributeValue": "x", "RuleId": "opens"}))
    shuffled_columns = ["ruleid", "TARGET-C", " eventname ", "key", "operator-c", "attributevalue", "RULETYPE",
                        "attributename", "Operator-V", "target-v", "resetwhenreachtarget", "finishdate", "startdate"]
    shuffled = sheet({"ruleid": "opens", "TARGET-C": "3", " eventname ": "purchase", "operator-c": "at_least",
                      "attributevalue": "x", "RULETYPE": "aggregator", "attributename": "campaign_id",
                      "target-v": "999", "resetwhenreachtarget": "no", "finishdate": "na", "startdate": "na"},
                     columns=shuffled_columns)  # fmt: skip
    assert parse(shuffled).version == canonical.version


def test_problems_name_the_column_as_the_sheet_spells_it(sheet):
    columns = ["ruletype", "EVENTNAME", "operator-c", "target-c", "operator-v", "target-v", "resetwhenreachtarget"]
    text = sheet({"ruletype": "weekly", "EVENTNAME": "purchase", "operator-c": "at_least", "target-c": "1",
                  "operator-v": "na", "target-v": "na", "resetwhenreachtarget": "no"}, columns=columns)
    assert problems(text) == ["row 2, column ruletype: 'weekly' is not a rule type (use aggregator, date or window)"]


def test_bom_and_crlf_are_accepted(sheet):
    text = sheet({"RuleId": "a"}, {"RuleId": "b", "EventName": "_email.open"})
    assert parse("\ufeff" + text.replace("\n", "\r\n")).version == parse(text).version


def test_blank_rows_are_skipped_but_rows_keep_their_spreadsheet_numbers(sheet):
    text = sheet({"RuleId": "a"}) + ",,,,,,,,,,,,,,,\n\n" + sheet({"RuleType": "weekly"}).split("\n", 1)[1]
    assert problems(text) == ["row 5, column RuleType: 'weekly' is not a rule type (use aggregator, date or window)"]


def test_a_quoted_cell_spanning_lines_is_one_row(sheet):
    text = sheet({"AttributeName": "note", "AttributeValue": "two\nlines", "ActionName": "noted"},
                 {"RuleType": "weekly"})
    assert problems(text) == ["row 3, column RuleType: 'weekly' is not a rule type (use aggregator, date or window)"]


def test_header_problems():
    text = "RuleType,EventName,Operator-C,Colour,Target-C,eventname,StartDate\naggregator,a,at_least,red,1,a,na\n"
    assert problems(text) == [
        "row 1, column Colour: unknown column (remove it, or rename it to one of Key, RuleType, EventName, "
        "AttributeName, AttributeValue, Operator-C, Target-C, Operator-V, Target-V, ResetWhenReachTarget, "
        "StartDate, FinishDate, RuleId, MetricName, Window, ActionName)",
        "row 1, column eventname: appears twice, in columns B and F (keep one of them)",
        "row 1, column Operator-V: required column is missing (add an Operator-V column)",
        "row 1, column Target-V: required column is missing (add a Target-V column)",
        "row 1, column ResetWhenReachTarget: required column is missing (add a ResetWhenReachTarget column)",
        "row 1, column FinishDate: column is missing while StartDate is there (add a FinishDate column, or remove "
        "StartDate)",
    ]


def test_an_unknown_column_alone_still_lets_rows_be_checked(sheet):
    text = sheet({"RuleType": "weekly", "Colour": "red"}, columns=[*DEFAULT_COLUMNS, "Colour"])
    assert problems(text) == [
        "row 1, column Colour: unknown column (remove it, or rename it to one of Key, RuleType, EventName, "
        "AttributeName, AttributeValue, Operator-C, Target-C, Operator-V, Target-V, ResetWhenReachTarget, "
        "StartDate, FinishDate, RuleId, MetricName, Window, ActionName)",
        "row 2, column RuleType: 'weekly' is not a rule type (use aggregator, date or window)",
    ]


DEFAULT_COLUMNS = ["Key", "RuleType", "EventName", "Operator-C", "Target-C", "Operator-V", "Target-V",
                   "ResetWhenReachTarget"]  # fmt: skip


def test_a_value_under_no_header_is_a_problem_but_an_empty_one_is_not(sheet):
    assert len(parse(sheet({}, columns=DEFAULT_COLUMNS).replace("\n", ",\n")).rules) == 1
    text = sheet({}, columns=DEFAULT_COLUMNS).rstrip("\n") + ",oops\n"
    assert problems(text) == ["row 2, column I: value 'oops' in a column without a header "
                              "(name the column in row 1 or clear the cell)"]


@pytest.mark.parametrize("text", ["", "\n", ",,,\n"])
def test_an_empty_sheet_is_rejected(text):
    assert problems(text) == ["row 1: the sheet has no header row (the first row names the columns, e.g. "
                              "RuleType, EventName, Operator-C, Target-C, Operator-V, Target-V, ResetWhenReachTarget)"]


def test_a_header_only_sheet_has_no_rules(sheet):
    assert parse(sheet()).rules == ()


# --- validation, one problem at a time ------------------------------------------------------------

DATE_RULE = {"RuleType": "date", "StartDate": "2026-11-01", "FinishDate": "2026-11-30"}
WINDOW_RULE = {"RuleType": "window", "Window": "7d"}


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"RuleType": ""}, ["row 2, column RuleType: rule type is missing (use aggregator, date or window)"]),
        ({"RuleType": "weekly"}, ["row 2, column RuleType: 'weekly' is not a rule type (use aggregator, date or window)"]),
        ({"EventName": "na"}, ["row 2, column EventName: event name is missing (name the event to count, e.g. _email.open)"]),
        ({"EventName": "trk_purchase"}, ["row 2, column EventName: 'trk_purchase' is an event the engine emits itself, "
                                         "which is never counted (count the event that leads to it instead)"]),
        ({"AttributeName": "campaign_id"}, ["row 2, column AttributeValue: is missing while AttributeName is "
                                            "'campaign_id' (give both, or na in both)"]),
        ({"AttributeValue": "summer"}, ["row 2, column AttributeName: is missing while AttributeValue is 'summer' "
                                        "(give both, or na in both)"]),
        ({"Operator-C": "more"}, ["row 2, column Operator-C: 'more' is not an operator (use equal, greater, at_least or na)"]),
        ({"Target-C": "three"}, ["row 2, column Target-C: 'three' is not a whole number (write a count, e.g. 3)"]),
        ({"Target-C": "2.5"}, ["row 2, column Target-C: '2.5' is not a whole number (write a count, e.g. 3)"]),
        ({"Target-C": "-1"}, ["row 2, column Target-C: count target -1 is negative (use 0 or more)"]),
        ({"Target-C": ""}, ["row 2, column Target-C: target is missing for operator at_least "
                            "(write a number, or na in Operator-C)"]),
        ({"Operator-C": "equal", "Target-C": "0"}, ["row 2, column Target-C: count equal 0 can never be met, as a "
                                                   "counted event makes the count 1 (use a target of 1 or more)"]),
        ({"Operator-C": "na", "Target-C": "5", "Operator-V": "greater", "Target-V": "1"},
         ["row 2, column Target-C: target 5 has no operator (set Operator-C to equal, greater or at_least, or "
          "write na here)"]),
        ({"Operator-V": "greater", "Target-V": "lots"}, ["row 2, column Target-V: 'lots' is not a number "
                                                         "(write a number, e.g. 25.50)"]),
        ({"Operator-V": "greater", "Target-V": "NaN"}, ["row 2, column Target-V: 'NaN' is not a number "
                                                        "(write a number, e.g. 25.50)"]),
        ({"Operator-C": "na", "Target-C": "999"}, ["row 2, column Operator-C: both conditions are na, so the rule "
                                                   "can never be met (set Operator-C/Target-C or Operator-V/Target-V)"]),
        ({"MetricName": "price"}, ["row 2, column MetricName: 'price' is set but the rule has no sum condition "
                                   "(set Operator-V/Target-V, or clear MetricName)"]),
        ({"ResetWhenReachTarget": "maybe"}, ["row 2, column ResetWhenReachTarget: 'maybe' is not yes or no "
                                             "(write yes or no)"]),
        ({"RuleType": "date"}, ["row 2, column StartDate: a date rule needs a StartDate (write the day as YYYY-MM-DD)",
                                "row 2, column FinishDate: a date rule needs a FinishDate (write the day as YYYY-MM-DD)"]),
        ({**DATE_RULE, "StartDate": "2026-11-31"}, ["row 2, column StartDate: '2026-11-31' is not a date "
                                                    "(write YYYY-MM-DD, or 9999-99-99 for none)"]),
        ({**DATE_RULE, "FinishDate": "11/30/2026"}, ["row 2, column FinishDate: '11/30/2026' is not a date "
                                                     "(write YYYY-MM-DD, or 9999-99-99 for none)"]),
        ({**DATE_RULE, "FinishDate": "2026-10-31"}, ["row 2, column FinishDate: 2026-10-31 is before StartDate "
                                                     "2026-11-01 (swap the dates)"]),
        ({"StartDate": "2026-11-01"}, ["row 2, column StartDate: a date only applies to date rules, not aggregator "
                                       "(set RuleType to date, or write 9999-99-99)"]),
        ({"RuleType": "window"}, ["row 2, column Window: a window rule needs a window "
                                  "(write a number of days from 1d to 366d, e.g. 7d)"]),
        ({**WINDOW_RULE, "Window": "0d"}, ["row 2, column Window: '0d' is not a window "
                                           "(write a number of days from 1d to 366d, e.g. 7d)"]),
        ({**WINDOW_RULE, "Window": "367d"}, ["row 2, column Window: '367d' is not a window "
                                             "(write a number of days from 1d to 366d, e.g. 7d)"]),
        ({**WINDOW_RULE, "Window": "week"}, ["row 2, column Window: 'week' is not a window "
                                             "(write a number of days from 1d to 366d, e.g. 7d)"]),
        ({"Window": "7d"}, ["row 2, column Window: a window only applies to window rules, not aggregator "
                            "(set RuleType to window, or clear Window)"]),
        ({**WINDOW_RULE, "ResetWhenReachTarget": "yes"}, ["row 2, column ResetWhenReachTarget: a window rule keeps a "
                                                          "user while the rule holds and cannot reset (write no, or use "
                                                          "an aggregator rule)"]),
        ({"RuleId": "opens #1"}, ["row 2, column RuleId: 'opens #1' is not a usable rule id (use up to 64 letters, "
                                  "digits, _ . or -, starting with a letter or digit)"]),
        ({"RuleId": "meta"}, ["row 2, column RuleId: 'meta' is reserved for the engine's own records "
                              "(choose another rule id)"]),
        ({"ActionName": "buyer!"}, ["row 2, column ActionName: 'buyer!' is not a safe name "
                                    "(use up to 128 letters, digits, _ . : or -)"]),
        ({"AttributeName": "campaign", "AttributeValue": "summer sale"},
         ["row 2, column ActionName: the derived action name 'purchase_summer sale' is not a safe name "
          "(use up to 128 letters, digits, _ . : or - in ActionName)"]),
        ({"ResetWhenReachTarget": "yes", "ActionName": "start_journey"},
         ["row 2, column ActionName: 'start_journey' is an event this resetting rule emits, so it must start with "
          "trk_ (rename it to trk_start_journey)"]),
    ],
)  # fmt: skip
def test_each_validation_problem_names_row_column_and_fix(sheet, row, expected):
    assert problems(sheet(row)) == expected


def test_every_problem_in_a_row_is_reported_at_once(sheet):
    assert problems(sheet({"RuleType": "weekly", "EventName": "", "Target-C": "x", "ResetWhenReachTarget": "?"})) == [
        "row 2, column RuleType: 'weekly' is not a rule type (use aggregator, date or window)",
        "row 2, column EventName: event name is missing (name the event to count, e.g. _email.open)",
        "row 2, column Target-C: 'x' is not a whole number (write a count, e.g. 3)",
        "row 2, column ResetWhenReachTarget: '?' is not yes or no (write yes or no)",
    ]


def test_duplicate_rule_ids_and_duplicate_rules(sheet):
    assert problems(sheet({"RuleId": "a"}, {"RuleId": "a", "Target-C": "5"})) == [
        "row 3, column RuleId: rule id 'a' is already used on row 2 (give each rule its own id)"
    ]
    assert problems(sheet({}, {"Key": "2"})) == [
        "row 3, column RuleId: same rule as row 2 (remove the duplicate row, or give it its own RuleId)"
    ]
    assert len(parse(sheet({"RuleId": "a"}, {"RuleId": "b"})).rules) == 2


def test_problem_lines_carry_the_source_name(sheet):
    with pytest.raises(RulesSheetError) as caught:
        parse_rules_sheet(sheet({"RuleType": "weekly"}), source_name="rules/prod.csv")
    assert caught.value.lines() == [
        "rules/prod.csv: row 2, column RuleType: 'weekly' is not a rule type (use aggregator, date or window)"
    ]
    assert str(caught.value) == caught.value.lines()[0]
    assert str(Problem(1, None, "empty", "fill it")) == "row 1: empty (fill it)"


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, name, kind",
    [
        ({}, "purchase", ActionKind.ATTRIBUTE),
        ({"AttributeName": "sku", "AttributeValue": "A1"}, "purchase_A1", ActionKind.ATTRIBUTE),
        ({"ResetWhenReachTarget": "yes"}, "trk_purchase", ActionKind.EVENT),
        ({"ResetWhenReachTarget": "YES", "AttributeName": "sku", "AttributeValue": "A1"}, "trk_purchase_A1",
         ActionKind.EVENT),
        ({**DATE_RULE}, "trk_date_purchase", ActionKind.ATTRIBUTE),
        ({**DATE_RULE, "AttributeName": "sku", "AttributeValue": "A1"}, "trk_date_purchase_A1", ActionKind.ATTRIBUTE),
        ({**WINDOW_RULE}, "purchase", ActionKind.ATTRIBUTE),
        ({"ActionName": "big_spender"}, "big_spender", ActionKind.ATTRIBUTE),
        ({"ResetWhenReachTarget": "yes", "ActionName": "trk_journey_start"}, "trk_journey_start", ActionKind.EVENT),
    ],
)  # fmt: skip
def test_action_names(sheet, row, name, kind):
    (rule,) = parse(sheet(row)).rules
    assert (rule.action_name, rule.action_kind) == (name, kind)


def test_a_date_rule_never_resets_whatever_the_sheet_says(sheet):
    (rule,) = parse(sheet({**DATE_RULE, "ResetWhenReachTarget": "yes"})).rules
    assert rule.reset is False and rule.action_kind is ActionKind.ATTRIBUTE


def test_operators_and_numbers_are_read_leniently(sheet):
    row = {"Operator-C": "At Least", "Target-C": "3.0", "Operator-V": "GREATER", "Target-V": "12.50",
           "MetricName": "price", "Window": "30D", "RuleType": "Window"}  # fmt: skip
    (rule,) = parse(sheet(row)).rules
    assert rule.count_condition == CountCondition(Operator.AT_LEAST, 3)
    assert rule.sum_condition == SumCondition(Operator.GREATER, Decimal("12.50"), "price")
    assert (rule.rule_type, rule.window_days) == (RuleType.WINDOW, 30)


# --- ids and versions -----------------------------------------------------------------------------

ROWS = [{"EventName": "purchase"}, {"EventName": "_email.open", "Target-C": "5"}, {**DATE_RULE, "Key": "3"}]


def test_derived_ids_do_not_depend_on_row_order(sheet):
    forward = parse(sheet(*ROWS))
    backward = parse(sheet(*reversed(ROWS)))
    assert {r.action_name: r.rule_id for r in forward} == {r.action_name: r.rule_id for r in backward}
    assert len({r.rule_id for r in forward}) == 3
    assert forward.version == backward.version
    assert [r.action_name for r in backward] == ["trk_date_purchase", "email_open", "purchase"]


def test_a_changed_target_changes_the_version_and_the_derived_id(sheet):
    before = parse(sheet(*ROWS))
    after = parse(sheet(ROWS[0], {**ROWS[1], "Target-C": "6"}, ROWS[2]))
    assert after.version != before.version
    assert after.rules[0].rule_id == before.rules[0].rule_id
    assert after.rules[1].rule_id != before.rules[1].rule_id


def test_a_given_rule_id_survives_a_changed_target_but_the_version_moves(sheet):
    before = parse(sheet({"RuleId": "buyers", "Target-C": "3"}))
    after = parse(sheet({"RuleId": "buyers", "Target-C": "4"}))
    assert before.rules[0].rule_id == after.rules[0].rule_id == "buyers"
    assert before.version != after.version


def test_the_key_column_is_ignored(sheet):
    assert parse(sheet({"Key": "1"})).version == parse(sheet({"Key": "99"})).version


def test_json_round_trip(fixtures_dir):
    rule_set = parse((fixtures_dir / "seed_guide.csv").read_text(encoding="utf-8"))
    again = RuleSet.from_json(rule_set.to_json())
    assert again == rule_set
    assert again.version == rule_set.version


def test_json_with_a_wrong_version_is_refused(fixtures_dir):
    text = parse((fixtures_dir / "seed_guide.csv").read_text(encoding="utf-8")).to_json()
    tampered = text.replace('"target":"100"', '"target":"10"')
    assert tampered != text
    with pytest.raises(ValueError, match="does not match its rules"):
        RuleSet.from_json(tampered)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"count_condition": None}, "needs a count or a sum condition"),
        ({"reset": True, "rule_type": RuleType.WINDOW, "window_days": 7}, "reset only applies to aggregator"),
        ({"rule_type": RuleType.DATE}, "start_date and finish_date are required"),
        ({"rule_type": RuleType.WINDOW}, "window_days is required"),
        ({"event_name": "trk_x"}, "engine event"),
    ],
)
def test_rules_built_in_code_are_checked_too(changes, message):
    fields = {"rule_id": "r", "rule_type": RuleType.AGGREGATOR, "event_name": "x",
              "count_condition": CountCondition(Operator.AT_LEAST, 1), **changes}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        Rule(**fields)


# --- fuzz -----------------------------------------------------------------------------------------

CELL_VALUES = {
    "RuleType": ["aggregator", "date", "window", "Date", "weekly", ""],
    "EventName": ["purchase", "_email.open", "trk_x", "na", ""],
    "AttributeName": ["na", "sku", "999", ""],
    "AttributeValue": ["na", "A1", "two words", ""],
    "Operator-C": ["na", "equal", "greater", "at_least", "at least", "more"],
    "Target-C": ["999", "na", "0", "1", "3", "-1", "2.5", "x", ""],
    "Operator-V": ["na", "equal", "greater", "at_least", "nope"],
    "Target-V": ["999", "na", "0", "10.5", "-3", "NaN", "y", ""],
    "ResetWhenReachTarget": ["yes", "no", "na", "maybe", ""],
    "StartDate": ["9999-99-99", "2026-11-01", "2026-11-31", "na"],
    "FinishDate": ["9999-99-99", "2026-11-30", "2026-10-01", ""],
    "RuleId": ["", "a", "b", "bad id"],
    "MetricName": ["", "price", "na"],
    "Window": ["", "7d", "0d", "400d", "week"],
    "ActionName": ["", "big_spender", "trk_go", "bad!"],
}


def fuzz_sheet(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CELL_VALUES)
    writer.writerows([row[column] for column in CELL_VALUES] for row in rows)
    return out.getvalue()


@st.composite
def fuzz_rows(draw: st.DrawFn) -> dict[str, str]:
    """A coherent row of a random type, then maybe one cell replaced by anything from the vocabulary."""
    rule_type = draw(st.sampled_from(["aggregator", "date", "window"]))
    count = draw(st.sampled_from([("at_least", "3"), ("equal", "1"), ("na", "999")]))
    total = draw(st.sampled_from([("greater", "10.5"), ("na", "999")] if count[0] != "na" else [("greater", "10.5")]))
    reset = draw(st.sampled_from(["yes", "no"] if rule_type != "window" else ["no"]))
    filtered = draw(st.booleans())
    row = {
        "RuleType": rule_type,
        "EventName": draw(st.sampled_from(["purchase", "_email.open"])),
        "AttributeName": "sku" if filtered else "na",
        "AttributeValue": "A1" if filtered else "na",
        "Operator-C": count[0],
        "Target-C": count[1],
        "Operator-V": total[0],
        "Target-V": total[1],
        "ResetWhenReachTarget": reset,
        "StartDate": "2026-11-01" if rule_type == "date" else "9999-99-99",
        "FinishDate": "2026-11-30" if rule_type == "date" else "9999-99-99",
        "RuleId": draw(st.sampled_from(["", "a", "b"])),
        "MetricName": draw(st.sampled_from(["", "price"])) if total[0] != "na" else "",
        "Window": "7d" if rule_type == "window" else "",
        "ActionName": draw(st.sampled_from(["", "trk_go" if reset == "yes" and rule_type == "aggregator" else "vip"])),
    }
    column = draw(st.none() | st.sampled_from(list(CELL_VALUES)))
    if column is not None:
        row[column] = draw(st.sampled_from(CELL_VALUES[column]))
    return row


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(fuzz_rows(), max_size=4))
def test_any_sheet_is_either_accepted_whole_or_rejected_with_located_problems(rows):
    try:
        rule_set = parse(fuzz_sheet(rows))
    except RulesSheetError as error:
        assert error.problems
        assert all(2 <= problem.row <= len(rows) + 1 and problem.column for problem in error.problems)
    else:
        assert len(rule_set) == len(rows)
        assert RuleSet.from_json(rule_set.to_json()) == rule_set
