"""End to end through the local replay: raw records (app JSON lines and Pinpoint records) through the real
aggregator and dispatcher handlers on moto, fault-free and with duplicates, failed batches and redeliveries
injected; compared with each other and with an independent expectation (`expectation.py`)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cli.__main__ import main
from cli.replay import ReplayOptions, ReplayResult, replay
from tests.e2e.expectation import FIXTURE_SPECS, expect, read_records

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "replay"
RULES = FIXTURES / "rules.csv"
EVENTS = FIXTURES / "events.jsonl"


def run(**options: Any) -> ReplayResult:
    return replay(RULES.read_text(encoding="utf-8"), EVENTS.read_text(encoding="utf-8").splitlines(),
                  ReplayOptions(**options))


def by_time(qualification: dict[str, Any]) -> tuple[int, str]:
    return qualification["event_time_ms"], qualification["user_id"]


@pytest.fixture(scope="module")
def fault_free() -> ReplayResult:
    return run(batch_size=10)


def test_fault_free_run_matches_the_independent_expectation(fault_free):
    records = read_records(EVENTS.read_text(encoding="utf-8").splitlines())
    for spec in FIXTURE_SPECS:
        qualifications, counters = expect(spec, records)
        assert qualifications, f"the fixture should make {spec.rule_id} fire"
        got = [q for q in fault_free.qualifications if q["rule_id"] == spec.rule_id]
        assert sorted(got, key=by_time) == sorted(qualifications, key=by_time), spec.rule_id
        got_counters = {c["user_id"]: (c["count"], Decimal(str(c["sum"])))
                        for c in fault_free.counters if c["rule_id"] == spec.rule_id}
        assert got_counters == counters, spec.rule_id
    assert {q["rule_id"] for q in fault_free.qualifications} == {spec.rule_id for spec in FIXTURE_SPECS}


def test_the_document_has_exactly_the_contract_schema(fault_free):
    document = json.loads(json.dumps(fault_free.document()))
    assert set(document) == {"qualifications", "counters", "stats"}
    for q in document["qualifications"]:
        assert list(q) == ["rule_id", "user_id", "action", "name", "value", "event_time_ms"]
        assert q["action"] in ("attribute", "event") and isinstance(q["event_time_ms"], int)
        assert q["value"] == ("ready" if q["action"] == "attribute" else None)
    for c in document["counters"]:
        assert list(c) == ["rule_id", "user_id", "count", "sum"]
        assert isinstance(c["count"], int) and isinstance(c["sum"], (int, float))
    stats = document["stats"]
    assert stats["records"] == 146 and stats["without_user"] == 1
    assert stats["rejected"]["count"] == 2 and len(stats["rejected"]["reasons"]) == 2
    assert stats["outbox_entries"] == len(document["qualifications"]) == stats["dispatched"]["eventbridge"]
    assert stats["dead_lettered"] == 0 and stats["duplicates_sent"] == stats["failures_injected"] == 0
    assert stats["dynamodb_requests"]["total"] > 0


@pytest.mark.parametrize(("seed", "batch_size", "duplicate_rate", "fail_rate"), [
    (1, 10, 0.2, 0.2), (2, 7, 0.2, 0.2), (3, 25, 0.2, 0.2), (4, 4, 0.3, 0.5),
])
def test_faults_change_nothing(fault_free, seed, batch_size, duplicate_rate, fail_rate):
    faulty = run(batch_size=batch_size, duplicate_rate=duplicate_rate, fail_rate=fail_rate, seed=seed)
    assert faulty.qualifications == fault_free.qualifications
    assert faulty.counters == fault_free.counters
    stats = faulty.stats
    assert stats["duplicates_sent"] > 0 and sum(stats["redeliveries"].values()) > 0
    assert stats["dispatched"] == fault_free.stats["dispatched"] and stats["dead_lettered"] == 0
    if fail_rate >= 0.5:
        assert stats["failures_injected"] > 0 and stats["redeliveries"]["aggregator_partial"] > 0


def test_the_command_prints_a_table_and_writes_the_json(tmp_path, capsys, fault_free):
    out = tmp_path / "out.json"
    code = main(["rules", "replay", "--rules", str(RULES), str(EVENTS), "--json", str(out), "--batch-size", "10",
                 "--duplicate-rate", "0.1", "--fail-rate", "0.1", "--seed", "9"])
    printed = capsys.readouterr().out
    assert code == 0
    header, *rows = printed.split("\n\n")[0].splitlines()
    assert header.split() == ["rule", "type", "action", "users", "counted", "qualifications", "events", "emitted",
                              "attributes", "set"]
    assert [row.split()[0] for row in rows] == [spec.rule_id for spec in FIXTURE_SPECS]
    assert rows[0].split()[3:] == ["8", "7", "0", "7"]  # buyer: users counted, qualifications, events, attributes
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["qualifications"] == fault_free.qualifications
    assert document["counters"] == fault_free.counters


def test_bad_rates_and_a_bad_sheet_are_refused(tmp_path, capsys):
    assert main(["rules", "replay", "--rules", str(RULES), str(EVENTS), "--fail-rate", "1"]) == 2
    assert "fail_rate 1.0 is not in [0, 1)" in capsys.readouterr().err
    sheet = tmp_path / "bad.csv"
    sheet.write_text("RuleType,EventName,Operator-C,Target-C,Operator-V,Target-V,ResetWhenReachTarget\n"
                     "aggregator,purchase,na,999,na,999,no\n", encoding="utf-8")
    assert main(["rules", "replay", "--rules", str(sheet), str(EVENTS)]) == 2
    assert "the sheet was not accepted" in capsys.readouterr().err
