"""`python -m cli rules check`: exit codes and what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cli.__main__ import build_parser

REPO = Path(__file__).resolve().parents[3]


def check(path: Path | str) -> int:
    args = build_parser(groups={"rules": "cli.rules"}).parse_args(["rules", "check", str(path)])
    return args.func(args)


def test_a_good_sheet_prints_a_summary_and_exits_0(fixtures_dir, capsys):
    path = fixtures_dir / "seed_guide.csv"
    assert check(path) == 0
    out, err = capsys.readouterr()
    # The seed's sheet has no RuleId column: one warning per rule, and the sheet is still accepted.
    warnings = err.splitlines()
    assert len(warnings) == 4 and all(line.startswith(f"{path}: warning: row ") for line in warnings)
    header, table_header, rule_line, *rows = out.splitlines()
    assert header.startswith(f"{path}: 4 rules, version ")
    assert table_header.split() == ["rule", "id", "type", "event", "filter", "conditions", "window/dates", "action"]
    assert set(rule_line) == {"-", " "}
    assert len(rows) == 4
    opened, journey, purchases, active = rows
    assert "_campaign.opened_notification  campaign_id = summer_sale  count >= 3" in opened
    assert opened.endswith("sets attribute campaign_opened_notification_summer_sale to ready, once per user")
    assert "count = 2" in journey and journey.endswith(
        "fires event trk__journey.send_welcome each time the rule is met, then counts again from 0")
    assert "sum(first metric) >= 100" in purchases and "2026-11-01..2026-11-30" in purchases
    assert purchases.endswith("sets attribute trk_date_purchase to ready, once per user")
    assert active.split()[1:3] == ["window", "_session.start"] and "last 7d" in active
    assert active.endswith("sets attribute session_start to ready while the rule holds, and clears it when the "
                           "user drops below")


def test_a_bad_sheet_prints_every_problem_to_stderr_and_exits_2(fixtures_dir, capsys):
    path = fixtures_dir / "bad.csv"
    assert check(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 12
    assert lines[0] == f"{path}: row 2, column RuleType: 'monthly' is not a rule type (use aggregator, date or window)"
    assert lines[10] == f"{path}: row 7, column RuleId: rule id 'opens' is already used on row 2 (give each rule its own id)"
    assert all(line.startswith(f"{path}: row ") for line in lines[:11])
    assert lines[11] == f"{path}: 11 problem(s); the sheet was not accepted"


def test_a_missing_file_exits_2(tmp_path, capsys):
    assert check(tmp_path / "nope.csv") == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nope.csv'}: no such file\n"


def test_a_file_that_is_not_utf8_exits_2(tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("RuleType,EventName\naggregator,caf\u00e9\n".encode("latin-1"))
    assert check(path) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_a_directory_exits_2(tmp_path, capsys):
    assert check(tmp_path) == 2
    assert capsys.readouterr().err.startswith(f"{tmp_path}: cannot read")


def test_python_dash_m_cli(fixtures_dir):
    good = subprocess.run([sys.executable, "-m", "cli", "rules", "check", "rules/sample.csv"],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert (good.returncode, good.stderr) == (0, ""), good.stderr
    bad = subprocess.run([sys.executable, "-m", "cli", "rules", "check", "tests/fixtures/rules/bad.csv"],
                         cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.splitlines()[0].startswith("tests/fixtures/rules/bad.csv: row 2, column RuleType:")
