"""`python -m cli interactions preview` end to end on the fixture stream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli.__main__ import build_parser, main

FIXTURES = Path("tests/fixtures/interactions")


def preview(*argv: str) -> int:
    args = build_parser(groups={"interactions": "cli.interactions"}).parse_args(["interactions", "preview", *argv])
    return args.func(args)


@pytest.mark.parametrize("scoring", ["scoring.csv", "Pulumi.preview.yaml"])
def test_preview_writes_the_expected_csv_and_summary(tmp_path, capsys, scoring):
    out = tmp_path / "interactions.csv"
    assert preview("--scoring", str(FIXTURES / scoring), str(FIXTURES / "events.jsonl"), "--out", str(out)) == 0
    assert out.read_text() == (FIXTURES / "expected.csv").read_text()
    printed = capsys.readouterr()
    assert printed.err.splitlines() == [
        f"{FIXTURES / 'events.jsonl'}:9: truncated record (line 10 starts a new record before it closes)",
        f"14 records read from {FIXTURES / 'events.jsonl'} (JSON Lines); 1 skipped",
        "  skipped 1×: truncated record",
        f"{FIXTURES / 'events.jsonl'}:15: unrecognised record: not a Pinpoint, SES or app event "
        '(app events need "schema": "engagement-loop/v1"; SES events come in their EventBridge envelope)',
    ]
    lines = printed.out.splitlines()
    assert lines[0] == "13 records normalised, 1 rejected by the normaliser, 1 skipped by the reader."
    assert "engagements arrived all history up to 2019-11-05" in lines[1]
    assert lines[3:8] == ["EVENT_TYPE          rows",
                          "_campaign.send         1",
                          "_journey.send          1",
                          "purchase               1",
                          "(total)                3"]
    assert "users: 3  items: 3" in lines
    assert lines[-3:] == ["Personalize minimums: NOT MET", "  - 3 interactions < 1,000",
                          "  - 0 users with ≥ 2 interactions < 25"]


def test_history_and_as_of_options(tmp_path, capsys):
    out = tmp_path / "interactions.csv"
    # Only 2019-11-05 is read: the July campaign send falls outside.
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(FIXTURES / "events.jsonl"), "--out", str(out),
                   "--as-of", "2019-11-06", "--history-days", "1") == 0
    assert out.read_text().splitlines() == ["USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP",
                                            "pu-journey,item-j,_journey.send,2.0,1572989078",
                                            "u-42,sku-1,purchase,10.0,1572990000"]
    # An attribution window shorter than the day between exposure and journey send drops that row.
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(FIXTURES / "events.jsonl"), "--out", str(out),
                   "--attribution-days", "1") == 0
    assert [line.split(",")[0] for line in out.read_text().splitlines()] == ["USER_ID", "pu-campaign",
                                                                             "pu-journey", "u-42"]
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(FIXTURES / "events.jsonl"), "--out", str(out),
                   "--as-of", "2019-11-05") == 0
    assert [line.split(",")[0] for line in out.read_text().splitlines()] == ["USER_ID", "pu-campaign"]


def test_exclude_streamed_option_and_the_stack_files_real_time_events(tmp_path, capsys):
    out = tmp_path / "interactions.csv"
    args = ("--scoring", str(FIXTURES / "scoring.csv"), str(FIXTURES / "events.jsonl"), "--out", str(out),
            "--as-of", "2019-11-06", "--history-days", "1")
    assert preview(*args, "--exclude-streamed") == 0
    # u-42's purchase of its own sku-1 is what the event tracker sends: left out; the exposure row stays.
    assert out.read_text().splitlines() == ["USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP",
                                            "pu-journey,item-j,_journey.send,2.0,1572989078"]
    stack = tmp_path / "Pulumi.rt.yaml"
    stack.write_text((FIXTURES / "Pulumi.preview.yaml").read_text() + '  engagement-loop:realTimeEvents: "true"\n')
    assert preview("--scoring", str(stack), *args[2:]) == 0
    assert "u-42" not in out.read_text()
    assert preview("--scoring", str(stack), *args[2:], "--no-exclude-streamed") == 0
    assert "u-42,sku-1,purchase" in out.read_text()


def test_minimums_met(tmp_path, capsys):
    # 25 users × 40 items: 1,000 direct purchases, every user with 40.
    events = tmp_path / "events.jsonl"
    events.write_text("".join(
        json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "user_id": f"u-{u}",
                    "item_id": f"sku-{i}", "event_time_ms": 1_762_000_000_000 + 1000 * (40 * u + i)}) + "\n"
        for u in range(25) for i in range(40)))
    out = tmp_path / "interactions.csv"
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(events), "--out", str(out)) == 0
    assert len(out.read_text().splitlines()) == 1_001
    printed = capsys.readouterr().out
    assert f"1,000 interactions written to {out}" in printed
    assert printed.splitlines()[-1] == (
        "Personalize minimums: met (1,000 interactions; 25 users with ≥ 2 interactions)")


def test_several_event_files_and_an_empty_result(tmp_path, capsys):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    lines = (FIXTURES / "events.jsonl").read_text().splitlines()
    first.write_text("\n".join(lines[:4]) + "\n")  # exposures and the session sample
    second.write_text(lines[4] + "\n")  # the campaign send
    out = tmp_path / "interactions.csv"
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(first), str(second), "--out", str(out)) == 0
    assert out.read_text().splitlines()[1:] == ["pu-campaign,item-c,_campaign.send,1.0,1562109497"]
    capsys.readouterr()
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(first), "--out", str(out)) == 0
    assert out.read_text() == "USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP\n"
    printed = capsys.readouterr().out.splitlines()
    assert printed[3:10] == ["EVENT_TYPE      rows", "(total)            0", "", "users: 0  items: 0",
                             "Personalize minimums: NOT MET", "  - 0 interactions < 1,000",
                             "  - 0 users with ≥ 2 interactions < 25"]
    assert printed[10].startswith("No interaction can be built: no event has a type the scoring model values")


def test_bad_scoring_file_is_an_error_naming_the_problem(tmp_path, capsys):
    scoring = tmp_path / "scoring.csv"
    shutil.copy(FIXTURES / "scoring.csv", scoring)
    scoring.write_text(scoring.read_text() + "_custom.recommender,1\n")
    assert preview("--scoring", str(scoring), str(FIXTURES / "events.jsonl"), "--out",
                   str(tmp_path / "out.csv")) == 2
    assert f"{scoring}, row 8: _custom.recommender records exposures" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()


def test_invalid_history_days_is_an_error(tmp_path, capsys):
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(FIXTURES / "events.jsonl"), "--out",
                   str(tmp_path / "out.csv"), "--history-days", "0") == 2
    assert "history_days: expected -1 (all history) or a number of days ≥ 1, got 0" in capsys.readouterr().err


def test_registered_with_the_cli_dispatcher(tmp_path, capsys):
    out = tmp_path / "interactions.csv"
    assert main(["interactions", "preview", "--scoring", str(FIXTURES / "scoring.csv"),
                 str(FIXTURES / "events.jsonl"), "--out", str(out)]) == 0
    assert out.read_text() == (FIXTURES / "expected.csv").read_text()


def test_no_interaction_because_every_engagement_was_left_out_as_streamed(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "user_id": f"u-{u}",
                                          "item_id": f"sku-{u}", "event_time_ms": 1_762_000_000_000 + u}) + "\n"
                              for u in range(3)))
    out = tmp_path / "interactions.csv"
    assert preview("--scoring", str(FIXTURES / "scoring.csv"), str(events), "--out", str(out),
                   "--exclude-streamed") == 0
    printed = capsys.readouterr().out
    assert "3 engagements with an item_id, all left out as streamed" in printed
    assert "--no-exclude-streamed" in printed and "realTimeEvents" in printed
    assert "no exposure is of the same endpoint" not in printed
