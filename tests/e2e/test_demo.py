"""`python -m cli demo` end to end: a small synthetic run checked against its own outputs and an independent
recount of the interactions from the raw lines; the repository's fixtures run as a user's own data and
checked against their worked-out results; bad input refused with exit status 2."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import struct
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from cli.__main__ import main
from cli.synthetic import StreamSpec, generate
from functions.retraining.scoring import ScoringModel

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
DEMO_RULES = ROOT / "rules" / "demo.csv"
DEV_SCORING = ROOT / "Pulumi.dev.yaml"
HEADER = "USER_ID,ITEM_ID,EVENT_TYPE,EVENT_VALUE,TIMESTAMP"
ATTRIBUTION_MS = 7 * 86_400_000
SMALL = ["--users", "40", "--days", "10", "--seed", "7"]


def run_demo(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["demo", *args])
    return code, out.getvalue(), err.getvalue()


def rule_rows(report: str) -> dict[str, tuple[int, int, int]]:
    """The report's results table: rule id → (users counted, qualifications, users qualified)."""
    lines = report.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("  rule id") and "users counted" in line)
    rows = {}
    for line in lines[start + 2:]:
        match = re.match(r"^  (\S+) +([\d,]+) +([\d,]+) +([\d,]+)  ", line)
        if not match:
            break
        rows[match[1]] = tuple(int(match[i].replace(",", "")) for i in (2, 3, 4))
    return rows


def read_interactions(path: Path) -> tuple[str, set[tuple[str, str, str, float, int]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [(u, i, t, float(v), int(ts)) for u, i, t, v, ts in csv.reader(lines[1:])]
    assert len(rows) == len(set(rows)), "identical rows must appear once"
    return lines[0], set(rows)


def recount_interactions(lines: list[str], scoring: dict[str, float]) -> set[tuple[str, str, str, float, int]]:
    """The interactions rules (docs/interactions.md) straight from the raw lines, without the normaliser, the lake or the SQL.

    Arrival: a Pinpoint record names its own; an app record arrives when the stream gets it — its event time,
    but never before the record ahead of it in the stream.
    """
    clock = 0
    exposures: dict[str, list[dict[str, Any]]] = defaultdict(list)
    engagements = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("schema") == "engagement-loop/v1":
            clock = max(clock, record["event_time_ms"])
            arrival = clock
            attributes = record.get("attributes", {})
            event = {"type": record["event_type"], "endpoint": record.get("endpoint_id"),
                     "campaign": record.get("campaign_id"), "journey": record.get("journey_id"),
                     "item": record.get("item_id"), "user": record["user_id"], "arrival": arrival,
                     "personalize_user": attributes.get("personalize_user_id")}
        elif "event_timestamp" in record:
            clock = max(clock, record["arrival_timestamp"])
            attributes = record.get("attributes", {})
            context = json.loads(record.get("client_context", {}).get("custom", {}).get("endpoint", "{}"))
            endpoint = record.get("endpoint", {}).get("Id") or record["client"]["client_id"]
            user = record.get("endpoint", {}).get("User", {}).get("UserId") or context.get("User", {}).get("UserId")
            event = {"type": record["event_type"], "endpoint": endpoint, "campaign": attributes.get("campaign_id"),
                     "journey": attributes.get("journey_id"), "item": attributes.get("item_id"),
                     "user": user or endpoint, "arrival": record["arrival_timestamp"],
                     "personalize_user": attributes.get("personalize_user_id")}
        else:
            continue
        if event["type"] == "_custom.recommender":
            exposures[event["endpoint"]].append(event)
        elif event["type"] in scoring:
            engagements.append(event)
    expected = set()
    for g in engagements:
        value, timestamp = scoring[g["type"]], g["arrival"] // 1000
        for x in exposures.get(g["endpoint"], []):
            same_message = ((x["campaign"] is not None and x["campaign"] == g["campaign"])
                            or (x["journey"] is not None and x["journey"] == g["journey"]))
            if same_message and g["arrival"] - ATTRIBUTION_MS <= x["arrival"] <= g["arrival"]:
                expected.add((x["personalize_user"], x["item"], g["type"], value, timestamp))
        if g["user"] and g["item"]:
            expected.add((g["user"], g["item"], g["type"], value, timestamp))
    return expected


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("demo")
    code, stdout, stderr = run_demo([*SMALL, "--out", str(out)])
    assert code == 0, stderr
    return {"out": out, "stdout": stdout, "stderr": stderr}


def test_the_run_writes_every_output(small):
    out = small["out"]
    for name in ("events.jsonl", "replay.json", "interactions.csv", "report.txt", "chart.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert list((out / "lake" / "events").glob("dt=*/part-*.parquet"))
    report = (out / "report.txt").read_text(encoding="utf-8")
    assert small["stdout"] == report, "the printed report is the report written"
    for name in ("events.jsonl", "replay.json", "interactions.csv", "report.txt", "chart.png"):
        assert name in report
    for step in ("1/4 stream", "2/4 rules", "3/4 lake", "4/4 report"):
        assert step in small["stderr"]


def test_the_synthetic_stream_is_reproducible(small):
    lines = (small["out"] / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines == generate(StreamSpec(users=40, days=10, seed=7)).lines
    kinds = {json.loads(line)["event_type"] for line in lines}
    assert {"_session.start", "view_item", "add_to_cart", "purchase", "_campaign.send", "_journey.send",
            "_custom.recommender", "_email.open", "_email.click", "_campaign.opened_notification"} <= kinds
    assert len(lines) > len(set(lines)), "producer duplicates: some lines repeat"
    other = generate(StreamSpec(users=40, days=10, seed=8))
    assert other.spec.last_day != StreamSpec(seed=7).last_day and other.lines != lines


def test_the_report_gives_each_rules_qualifications_as_replayed(small):
    report = (small["out"] / "report.txt").read_text(encoding="utf-8")
    document = json.loads((small["out"] / "replay.json").read_text(encoding="utf-8"))
    rows = rule_rows(report)
    rule_ids = [row["RuleId"] for row in csv.DictReader(DEMO_RULES.open(encoding="utf-8"))]
    assert sorted(rows) == sorted(rule_ids)
    for rule_id in rule_ids:
        fired = [q for q in document["qualifications"] if q["rule_id"] == rule_id]
        counted = [c for c in document["counters"] if c["rule_id"] == rule_id]
        assert rows[rule_id] == (len(counted), len(fired), len({q["user_id"] for q in fired})), rule_id
        assert fired, f"the sample sheet's rule {rule_id} should qualify someone in the synthetic stream"
    assert "EventBridge  " in report and "not run by the memory engine" in report
    assert "not configured in the demo" in report


def test_the_aws_engine_gives_the_demo_what_the_memory_engine_gives(small, tmp_path):
    """The demo stream on the real handlers (moto): the same qualifications and counters as the default engine,
    and the bus's deliveries in the report."""
    code, stdout, stderr = run_demo([*SMALL, "--engine", "aws", "--out", str(tmp_path)])
    assert code == 0, stderr
    memory = json.loads((small["out"] / "replay.json").read_text(encoding="utf-8"))
    aws = json.loads((tmp_path / "replay.json").read_text(encoding="utf-8"))
    assert aws["qualifications"] == memory["qualifications"] and aws["counters"] == memory["counters"]
    assert aws["stats"]["rejected"] == memory["stats"]["rejected"]
    assert f"{aws['stats']['dispatched']['eventbridge']:,}" in stdout and "real handlers on moto" in stdout
    assert rule_rows(stdout) == rule_rows(small["stdout"])


def test_interactions_equal_an_independent_recount_from_the_raw_lines(small):
    header, rows = read_interactions(small["out"] / "interactions.csv")
    assert header == HEADER
    scoring = dict(ScoringModel.load(DEV_SCORING).values)
    lines = (small["out"] / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert rows == recount_interactions(lines, scoring)
    assert rows and all(scoring[event_type] == value for _, _, event_type, value, _ in rows)
    report = (small["out"] / "report.txt").read_text(encoding="utf-8")
    assert re.search(rf"^  \(all\) +{len(rows):,} ", report, re.MULTILINE)
    assert re.search(r"^  Personalize readiness: (ready|NOT READY — fails the minimum .+)$", report, re.MULTILINE)


def test_the_chart_is_a_png(small):
    data = (small["out"] / "chart.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 600


def test_a_users_own_data_runs_the_same_way(tmp_path):
    """The replay fixture's worked-out qualifications, and the interactions fixture's worked-out dataset."""
    code, stdout, stderr = run_demo([
        "--events", str(FIXTURES / "replay" / "events.jsonl"), "--rules", str(FIXTURES / "replay" / "rules.csv"),
        "--scoring", str(FIXTURES / "interactions" / "scoring.csv"), "--out", str(tmp_path / "replay")])
    assert code == 0, stderr
    counts = {rule_id: row[1] for rule_id, row in rule_rows(stdout).items()}
    assert counts == {"buyer": 7, "big-spender": 5, "spend-50": 13, "shoe-cart-pair": 5, "summer-opener": 5,
                      "engaged-viewer": 3, "nov-buyer": 5, "active-week": 7}
    assert "2 rejected" in stdout and not (tmp_path / "replay" / "events.jsonl").exists()

    code, stdout, stderr = run_demo([
        "--events", str(FIXTURES / "interactions" / "events.jsonl"), "--rules", str(FIXTURES / "replay" / "rules.csv"),
        "--scoring", str(FIXTURES / "interactions" / "Pulumi.preview.yaml"), "--out", str(tmp_path / "inter")])
    assert code == 0, stderr
    assert read_interactions(tmp_path / "inter" / "interactions.csv") == \
        read_interactions(FIXTURES / "interactions" / "expected.csv")
    assert "Personalize readiness: NOT READY — fails the minimum 3 interactions < 1,000" in stdout


@pytest.mark.parametrize("args, message", [
    (["--rules", str(FIXTURES / "rules" / "bad.csv")], "the sheet was not accepted"),
    (["--scoring", "no-such-scoring.yaml"], "no such file"),
    (["--events", "no-such-events.jsonl"], "no such file"),
    (["--users", "0"], "users"),
    (["--events", str(FIXTURES / "replay" / "events.jsonl"), "--users", "5"], "leave them out with --events"),
])
def test_bad_input_is_refused_with_status_2(tmp_path, args, message):
    code, stdout, stderr = run_demo([*args, "--out", str(tmp_path / "out")])
    assert code == 2 and message in stderr and stdout == ""


def test_events_nobody_can_read_are_refused(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"hello": "world"}\nnot json\n', encoding="utf-8")
    code, _, stderr = run_demo(["--events", str(events), "--out", str(tmp_path / "out")])
    assert code == 2
    assert f"{events}:1: unrecognised record" in stderr and f"{events}:2: not JSON" in stderr
    assert "none of the 1 record(s) could be read" in stderr
