"""`python -m cli rules check` on sheets as people save them (issue 11, items 4, 5 and 7): separators,
BOM and CRLF, header-only sheets, rows without a RuleId, plain-words actions, the reference link."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cli.__main__ import build_parser

REPO = Path(__file__).resolve().parents[3]
HEADER = ["RuleId", "RuleType", "EventName", "AttributeName", "AttributeValue", "Operator-C", "Target-C",
          "Operator-V", "Target-V", "ResetWhenReachTarget", "StartDate", "FinishDate", "Window"]
ROWS = [
    ["openers", "aggregator", "_email.open", "campaign_id", "summer_sale", "at_least", "3", "na", "999", "no",
     "9999-99-99", "9999-99-99", ""],
    ["welcome", "aggregator", "_journey.send", "journey_id", "welcome", "equal", "2", "na", "999", "yes",
     "9999-99-99", "9999-99-99", ""],
]


def check(path: Path, capsys) -> tuple[int, str, str]:
    args = build_parser(groups={"rules": "cli.rules"}).parse_args(["rules", "check", str(path)])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "sheet.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def joined(rows: list[list[str]], delimiter: str, newline: str = "\n") -> str:
    return newline.join(delimiter.join(row) for row in rows) + newline


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "bar"])
def test_a_sheet_saved_with_any_separator_is_read_the_same(tmp_path, capsys, delimiter):
    code, out, err = check(write(tmp_path, joined([HEADER, *ROWS], delimiter)), capsys)
    assert (code, err) == (0, "")
    assert ": 2 rules, version " in out.splitlines()[0]
    assert "sets attribute email_open_summer_sale to ready, once per user" in out
    assert "fires event trk__journey.send_welcome each time the rule is met" in out


def test_bom_and_crlf_from_excel_with_semicolons(tmp_path, capsys):
    path = write(tmp_path, "\ufeff" + joined([HEADER, *ROWS], ";", "\r\n"))
    code, out, err = check(path, capsys)
    assert (code, err) == (0, "") and out.startswith(f"{path}: 2 rules")
    comma = check(write(tmp_path, joined([HEADER, *ROWS], ","), "comma.csv"), capsys)[1]
    assert out.splitlines()[0].split("version ")[1] == comma.splitlines()[0].split("version ")[1]


def test_a_quoted_cell_holding_the_other_separator_stays_one_cell(tmp_path, capsys):
    for delimiter, value in ((",", "summer;sale"), (";", "summer,sale"), ("\t", "summer;sale")):
        rows = [[*HEADER, "ActionName"], [*ROWS[0][:4], f'"{value}"', *ROWS[0][5:], "summer_openers"]]
        code, out, err = check(write(tmp_path, joined(rows, delimiter)), capsys)
        assert (code, err) == (0, ""), err
        assert f"campaign_id = {value}" in out


def test_a_header_only_sheet_is_accepted_with_a_warning(tmp_path, capsys):
    path = write(tmp_path, joined([HEADER], ";"))
    code, out, err = check(path, capsys)
    assert code == 0
    assert err == f"{path}: warning: row 1: 0 rules: nothing will be counted (add a row per rule below the header)\n"
    assert out.startswith(f"{path}: 0 rules, version ")


def test_a_header_that_cannot_be_read_says_what_was_seen_and_what_was_expected(tmp_path, capsys):
    path = write(tmp_path, "Regeltyp:Ereignis:Operator:" + "x" * 300 + "\nbla\n")
    code, out, err = check(path, capsys)
    assert (code, out) == (2, "")
    first = err.splitlines()[0]
    assert "it reads 'Regeltyp:Ereignis:Operator:" not in first  # cut at the first non-name character
    assert "it reads 'Regeltyp…' (1 cell, separated by commas)" in first
    assert "its first row names columns such as RuleType, EventName, Operator-C" in first
    assert "x" * 41 not in err


def test_a_missing_column_names_the_column_to_add(tmp_path, capsys):
    header = [c for c in HEADER if c != "Operator-C"]
    rows = [[cell for column, cell in zip(HEADER, row) if column != "Operator-C"] for row in ROWS]
    code, _, err = check(write(tmp_path, joined([header, *rows], ";")), capsys)
    assert code == 2
    assert "row 1, column Operator-C: required column is missing (add an Operator-C column)" in err


def test_each_row_without_a_rule_id_gets_a_warning_and_the_sheet_is_accepted(tmp_path, capsys):
    rows = [HEADER, ["", *ROWS[0][1:]], ROWS[1], ["na", "window", "_session.start", "na", "na", "at_least", "5",
                                                  "na", "999", "no", "9999-99-99", "9999-99-99", "7d"]]
    path = write(tmp_path, joined(rows, ","))
    code, out, err = check(path, capsys)
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{path}: warning: row 2, column RuleId: no RuleId: the rule is known by r-")
    assert "editing it makes a new rule whose counts start from 0 (give it a RuleId, e.g. email-open-summer_sale)" \
        in lines[0]
    assert lines[1].startswith(f"{path}: warning: row 4, column RuleId:") and "e.g. session-start" in lines[1]
    assert "sets attribute session_start to ready while the rule holds, and clears it when the user drops below" in out


@pytest.mark.parametrize("sheet", sorted((REPO / "rules").glob("*.csv")), ids=lambda p: p.name)
def test_every_sample_sheet_has_rule_ids(sheet, capsys):
    code, out, err = check(sheet, capsys)
    assert (code, err) == (0, "")


def test_help_points_at_the_reference():
    result = subprocess.run([sys.executable, "-m", "cli", "rules", "check", "--help"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert "docs/rules.md" in " ".join(result.stdout.split())
    assert "## Writing rules" in (REPO / "docs" / "rules.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("first_line, secret", [
    ("AWS_SECRET_ACCESS_KEY;abcdef;ghi", "abcdef"),
    ("aws_secret_access_key,wJalrXUtnFEMI/K7MDENG", "wJalr"),
    ('"AWS_SECRET_ACCESS_KEY abc",x', "abc"),
    ("TOKEN\tsk-12345", "12345"),
])
def test_an_unreadable_header_never_shows_a_value(tmp_path, capsys, first_line, secret):
    """Only the first cell's name-like start is quoted: the other cells of a dump are its values."""
    path = write(tmp_path, first_line + "\nmore\n")
    code, out, err = check(path, capsys)
    assert code == 2 and secret not in err and "not shown" in err


def test_two_rules_that_would_set_the_same_attribute_are_warned_about(tmp_path, capsys):
    """`_session.start` and `session_start` both become attribute session_start: one rule's exit clears what the
    other set. Seed sheets share attributes on purpose, so it is a warning."""
    path = write(tmp_path, "RuleId;RuleType;EventName;Operator-C;Target-C;Operator-V;Target-V;"
                           "ResetWhenReachTarget;Window\r\n"
                           "a;aggregator;_session.start;at_least;3;na;na;no;\r\n"
                           "b;window;session_start;at_least;2;na;na;no;7d\r\n")
    code, out, err = check(path, capsys)
    assert code == 0
    assert "warning: row 3, column ActionName: this rule sets attribute session_start, as the rule in row 2 does" \
        in err
