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
    options.setdefault("engine", "aws")
    return replay(RULES.read_text(encoding="utf-8"), EVENTS.read_text(encoding="utf-8").splitlines(),
                  ReplayOptions(**options))


def by_time(qualification: dict[str, Any]) -> tuple[int, str]:
    return qualification["event_time_ms"], qualification["user_id"]


@pytest.fixture(scope="module")
def fault_free() -> ReplayResult:
    """The real handlers on moto, no fault."""
    return run(batch_size=10)


@pytest.mark.parametrize(("batch_size", "workers"), [(10, 1), (10, 2), (1, 3), (1000, 2)])
def test_the_memory_engine_gives_what_the_handlers_on_moto_give(fault_free, batch_size, workers):
    """The default engine (the aggregator's code on the in-memory store, users split between processes) against
    the real handlers: the same qualifications, counters, rejections and records without a user."""
    memory = run(engine="memory", batch_size=batch_size, workers=workers)
    assert memory.qualifications == fault_free.qualifications
    assert memory.counters == fault_free.counters
    assert memory.stats["rejected"] == fault_free.stats["rejected"]
    assert (memory.stats["records"], memory.stats["without_user"]) == (158, 1)
    assert memory.stats["outbox_entries"] == fault_free.stats["outbox_entries"]


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
    assert stats["records"] == 158 and stats["without_user"] == 1
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


@pytest.mark.parametrize("engine_options", [["--engine", "aws", "--duplicate-rate", "0.1", "--fail-rate", "0.1",
                                             "--seed", "9"], [], ["--workers", "2"]])
def test_the_command_prints_a_table_and_writes_the_json(tmp_path, capsys, fault_free, engine_options):
    out = tmp_path / "out.json"
    code = main(["rules", "replay", "--rules", str(RULES), str(EVENTS), "--json", str(out), "--batch-size", "10",
                 *engine_options])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.splitlines()[0].startswith("1 record rejected: ") and printed.splitlines()[2].startswith(
        "WHO QUALIFIED  ")  # the marketer's question first, the engine's figures after
    header, *rows = printed.split("ENGINE FIGURES\n\n")[1].split("\n\n")[0].splitlines()
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
    assert main(["rules", "replay", "--rules", str(RULES), str(EVENTS), "--fail-rate", "0.1"]) == 2
    assert "add --engine aws" in capsys.readouterr().err  # the memory engine has nothing to fail
    assert main(["rules", "replay", "--rules", str(RULES), str(EVENTS), "--workers", "0"]) == 2
    assert "workers 0 is not in 1..64" in capsys.readouterr().err
    sheet = tmp_path / "bad.csv"
    sheet.write_text("RuleType,EventName,Operator-C,Target-C,Operator-V,Target-V,ResetWhenReachTarget\n"
                     "aggregator,purchase,na,999,na,999,no\n", encoding="utf-8")
    assert main(["rules", "replay", "--rules", str(sheet), str(EVENTS)]) == 2
    assert "the sheet was not accepted" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["memory", "aws"])
def test_a_record_with_a_5000_character_user_or_event_id_is_reported_and_the_run_goes_on(engine):
    def line(event_id: str, user: str, at: int) -> str:
        return json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "event_time_ms": at,
                           "event_id": event_id, "user_id": user, "metrics": {"amount": 10}})

    start = 1_793_500_000_000
    lines = [line("o1", "u-1", start), line("o2", "x" * 5_000, start + 1_000), line("e" * 5_000, "u-1", start + 2_000),
             line("o3", "u-1", start + 3_000), line("o4", "u-2", start + 4_000)]
    result = replay(RULES.read_text(encoding="utf-8"), lines, ReplayOptions(engine=engine, batch_size=10))
    assert result.stats["rejected"]["count"] == 1  # the over-long user id, with its reason
    (reason,) = result.stats["rejected"]["reasons"]
    assert "5000" in reason or "5,000" in reason or "bytes" in reason
    counters = {(c["rule_id"], c["user_id"]): c["count"] for c in result.counters}
    assert counters[("buyer", "u-1")] == 3 and counters[("buyer", "u-2")] == 1  # the long event id counts once
    assert [q["user_id"] for q in result.qualifications if q["rule_id"] == "buyer"] == ["u-1"]


@pytest.mark.parametrize("engine", ["memory", "aws"])
def test_a_poison_group_in_the_replay_is_reported_and_the_run_goes_on(monkeypatch, engine):
    """Even when the normaliser lets an unstorable key through, the store sets the group aside."""
    from dataclasses import replace as copy

    from cli import stream_plan
    from functions.events.normalise import Parsed
    from functions.rules import aggregator

    real, real_parse = aggregator.normalise, stream_plan.parse_record

    def unbounded(data, **options):  # what the handler on moto reads
        result = real(data, **options)
        return copy(result, user_id="y" * 5_000) if b'"poison"' in bytes(data) else result

    def unbounded_parse(line, **options):  # what the memory engine reads
        result = real_parse(line, **options)
        return Parsed(copy(result.event, user_id="y" * 5_000)) if '"poison"' in line else result

    monkeypatch.setattr(aggregator, "normalise", unbounded)
    monkeypatch.setattr(stream_plan, "parse_record", unbounded_parse)
    lines = [json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "event_time_ms": 1_793_500_000_000 + i,
                         "event_id": event_id, "user_id": "u-1"}) for i, event_id in enumerate(["a", "poison", "b", "c"])]
    result = replay(RULES.read_text(encoding="utf-8"), lines, ReplayOptions(engine=engine, batch_size=10))
    rejected = result.stats["rejected"]
    assert rejected["count"] == 1 and all("counter key" in reason for reason in rejected["reasons"])
    counters = {(c["rule_id"], c["user_id"]): c["count"] for c in result.counters}
    assert counters[("buyer", "u-1")] == 3


DAILY = ("RuleId,RuleType,EventName,AttributeName,AttributeValue,Operator-C,Target-C,Operator-V,Target-V,MetricName,"
         "ResetWhenReachTarget,StartDate,FinishDate,Window,ActionName\n"
         "daily,window,visit,na,na,at_least,1,na,999,,no,9999-99-99,9999-99-99,1d,\n")
DEC_1 = 1_796_083_200_000  # 2026-12-01T00:00:00Z


def midnight_lines() -> list[str]:
    def line(event_id: str, user: str, event_type: str, at: int) -> str:
        return json.dumps({"schema": "engagement-loop/v1", "event_type": event_type, "event_time_ms": at,
                           "event_id": event_id, "user_id": user})

    return [line("r1", "a", "visit", DEC_1 - 5_000), line("r2", "u", "visit", DEC_1 - 2_000),
            line("r3", "b", "other", DEC_1), *[line(f"x{i}", "c", "other", DEC_1 + 10_000 * (i + 1)) for i in range(5)]]


@pytest.mark.parametrize("options", [
    {"batch_size": 1}, {"batch_size": 1, "engine": "aws"},
    {"batch_size": 2, "duplicate_rate": 0.5, "seed": 22, "engine": "aws"},
    {"batch_size": 2, "duplicate_rate": 0.5, "seed": 30, "engine": "aws"},
    {"batch_size": 2, "fail_rate": 0.9, "seed": 3, "engine": "aws"},
])
def test_a_window_outcome_at_midnight_depends_on_no_batching_and_no_fault(options):
    """Review finding B: a batch whose processing clock had passed midnight counted a 23:59:58 event as of the
    next day, so a 1-day rule's user was or was not qualified depending on where a duplicate cut the batches.
    Counted as of their arrival, both users qualify whatever the batching."""
    result = replay(DAILY, midnight_lines(), ReplayOptions(**options))
    assert sorted((q["rule_id"], q["user_id"]) for q in result.qualifications) == [("daily", "a"), ("daily", "u")]
    assert sorted((c["user_id"], c["count"]) for c in result.counters) == [("a", 1), ("u", 1)]


def test_replay_exits_2_when_the_normaliser_rejects_every_record(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text('{"foo":1}\n{"bar":2}\n', encoding="utf-8")
    assert main(["rules", "replay", "--rules", str(RULES), str(events)]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "error: no record could be normalised — 2 records rejected: unrecognised record" in printed.err
    assert "(×2)" in printed.err


def test_replay_says_how_many_were_rejected_before_who_qualified(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS.read_text(encoding="utf-8") + '{"foo":1}\n', encoding="utf-8")
    assert main(["rules", "replay", "--rules", str(RULES), str(events)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 records rejected: app record: unsupported schema")
    assert "; unrecognised record: not a Pinpoint, SES or app event" in lines[0] and lines[0].endswith("(×1)")
    assert lines[2].startswith("WHO QUALIFIED  ")


def test_two_users_sharing_producer_ids_count_alike_on_every_engine_and_any_split():
    """Review (issue 12): with the users split between processes, the memory engine counted a second user's
    record with a producer id the first user had used in the same batch, which the handlers dropped. The repeat
    check is per user now, on every engine."""
    def line(user: str, event_id: str, at: int) -> str:
        return json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase", "event_time_ms": at,
                           "event_id": event_id, "user_id": user, "metrics": {"amount": 10}})

    lines = [line(user, f"ord-{i}", 1_793_497_080_000 + i * 1_000 + offset)
             for i in range(3) for user, offset in (("u-1", 0), ("u-4", 1))]
    sheet = RULES.read_text(encoding="utf-8")
    outcomes = [replay(sheet, lines, ReplayOptions(engine="aws", batch_size=100))] + [
        replay(sheet, lines, ReplayOptions(engine="memory", batch_size=100, workers=workers)) for workers in (1, 2, 3)]
    for outcome in outcomes:
        assert outcome.qualifications == outcomes[0].qualifications and outcome.counters == outcomes[0].counters
    assert {(c["rule_id"], c["user_id"]): c["count"] for c in outcomes[0].counters}[("buyer", "u-4")] == 3
