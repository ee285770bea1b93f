"""Issue 11 item 3: every tool that reads event files (`demo --events`, `rules replay`, `interactions preview`)
reads the same files the same way — judged by what the user sees: the command's output and exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.__main__ import main

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RULES = FIXTURES / "replay" / "rules.csv"
SCORING = FIXTURES / "interactions" / "scoring.csv"
JSONL = (FIXTURES / "replay" / "events.jsonl").read_bytes().splitlines()[:6]
AWS_SAMPLES = [FIXTURES / "pinpoint" / "email_open.json", FIXTURES / "ses" / "open.json",
               FIXTURES / "pinpoint" / "email_click.json"]


def _jsonl(lines) -> bytes:
    return b"\n".join(lines) + b"\n"


# name -> (file content, exit status, what stderr must say)
CASES = {
    "bom": (b"\xef\xbb\xbf" + _jsonl(JSONL), 0, ["6 records read from", "(JSON Lines)"]),
    "jsonl": (_jsonl(JSONL), 0, ["6 records read from", "(JSON Lines)"]),
    "array": (json.dumps([json.loads(line) for line in JSONL], indent=2).encode(), 0,
              ["6 records read from", "(JSON array)"]),
    "pretty-aws-samples": (b"\n".join(path.read_bytes() for path in AWS_SAMPLES), 0,
                           ["3 records read from", "(pretty-printed records)"]),
    "bad-utf8-mid-file": (_jsonl([*JSONL[:2], JSONL[2][:-10] + b"\xff\xfe" + JSONL[2][-10:], *JSONL[3:]]), 0,
                          [":3: not valid UTF-8 (line 3: byte 0xff", "5 records read from", "; 1 skipped",
                           "skipped 1×: not valid UTF-8"]),
    "truncated-last-record": (_jsonl(JSONL[:5]) + JSONL[5][:40], 0,
                              [":6: truncated record (the file ends before it closes)", "5 records read from",
                               "skipped 1×: truncated record"]),
    "non-object-records": (_jsonl([*JSONL[:3], b"[1, 2]", b'"hello"', *JSONL[3:]]), 0,
                           [":4: not a JSON object (an array)", ":5: not a JSON object (a string)",
                            "6 records read from", "skipped 2×: not a JSON object"]),
    "utf16-without-bom": (_jsonl(JSONL[:2]).decode().encode("utf-16-le"), 2,
                          [":1: file cannot be read (UTF-16 text; save it as UTF-8)"]),
    "utf16-with-bom": (_jsonl(JSONL[:2]).decode().encode("utf-16"), 2,
                       [":1: file cannot be read (UTF-16 text; save it as UTF-8)"]),
    "nested-object-at-the-margin": (b'{\n"schema": "engagement-loop/v1",\n"event_type": "purchase",\n'
                                    b'"event_time_ms": 1793500000000,\n"user_id": "u-1",\n"attributes":\n{\n'
                                    b'"k": "v"\n}\n}\n', 0, ["1 record read from", "(pretty-printed records)"]),
    "empty": (b"", 2, ["0 records read from", "error: no usable record was read"]),
    "only-garbage": (b"hello\n\x00\x01 binary \xff\n<<<>>>\n", 2,
                     [":1: not JSON", ":2: not valid UTF-8", "skipped 2×: not JSON", "skipped 1×: not valid UTF-8",
                      "error: no usable record was read"]),
}


def run_tool(tool: str, events: Path, tmp_path: Path) -> list[str]:
    if tool == "rules replay":
        return ["rules", "replay", "--rules", str(RULES), str(events)]
    if tool == "interactions preview":
        return ["interactions", "preview", "--scoring", str(SCORING), str(events),
                "--out", str(tmp_path / "interactions.csv")]
    return ["demo", "--events", str(events), "--rules", str(RULES), "--scoring", str(SCORING),
            "--out", str(tmp_path / "demo-out")]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("tool", ["rules replay", "interactions preview", "demo"])
def test_every_tool_reads_the_same_files_the_same_way(tmp_path, capsys, tool, case):
    content, status, said = CASES[case]
    events = tmp_path / f"{case}.json"
    events.write_bytes(content)
    code = main(run_tool(tool, events, tmp_path))
    printed = capsys.readouterr()
    assert code == status, printed.err
    for words in said:
        assert words in printed.err, (words, printed.err)
    if case.startswith("nested"):
        assert "skipped" not in printed.err and "truncated" not in printed.err, printed.err
    if status == 0:
        assert printed.out, "a report"
        assert "Traceback" not in printed.err
    else:
        assert printed.out == ""
        if tool == "demo":
            assert not (tmp_path / "demo-out").exists(), "no output folder for an input that cannot be used"


def test_a_pretty_printed_record_is_normalised_like_its_one_line_form(tmp_path, capsys):
    """Reading the AWS samples as printed and as JSON Lines gives the same interactions and the same counts."""
    pretty, compact = tmp_path / "pretty.json", tmp_path / "compact.jsonl"
    pretty.write_bytes(b"\n\n".join(path.read_bytes() for path in AWS_SAMPLES))
    compact.write_bytes(_jsonl(json.dumps(json.loads(path.read_bytes())).encode() for path in AWS_SAMPLES))
    outputs = []
    for events in (pretty, compact):
        assert main(["interactions", "preview", "--scoring", str(SCORING), str(events),
                     "--out", str(tmp_path / f"{events.stem}.csv")]) == 0
        outputs.append((capsys.readouterr().out.splitlines()[0], (tmp_path / f"{events.stem}.csv").read_text()))
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == "3 records normalised, 0 rejected by the normaliser."


def test_the_reader_keeps_a_json_lines_record_byte_for_byte_and_bounds_a_record(tmp_path):
    from cli.event_files import MAX_RECORD_BYTES, TOO_LARGE, EventFileReader

    big = json.dumps({"schema": "engagement-loop/v1", "pad": "x" * (MAX_RECORD_BYTES + 10)})
    path = tmp_path / "events.jsonl"
    path.write_bytes(_jsonl([JSONL[0], big.encode(), b"{", b'  "pad": "' + b"y" * (MAX_RECORD_BYTES + 10) + b'"',
                             b"}", JSONL[1]]))
    reader = EventFileReader([path])
    records = reader.read()
    assert [record.text.encode() for record in records] == [JSONL[0], JSONL[1]]
    assert [record.line for record in records] == [1, 6]
    assert reader.rejected == {TOO_LARGE: 2}


def test_the_reader_takes_a_nested_object_at_the_margin_as_a_value():
    """The review's file: one record, nothing rejected (a `{` after a line ending in `:` is a value)."""
    from cli.event_files import EventFileReader

    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "nested.json"
        path.write_bytes(b'{\n"event_type": "x",\n"attrs":\n{\n"k": 1\n}\n}')
        reader = EventFileReader([path])
        assert [record.text for record in reader.read()] == ['{"event_type":"x","attrs":{"k":1}}']
        assert not reader.rejected


@pytest.mark.parametrize("tool", ["rules replay", "interactions preview", "demo"])
def test_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys, tool):
    events = tmp_path / "absent.jsonl"
    assert main(run_tool(tool, events, tmp_path)) == 2
    printed = capsys.readouterr()
    assert printed.err == f"no such file: {events}\n" and printed.out == ""


@pytest.mark.parametrize("tool", ["rules replay", "interactions preview"])
def test_the_event_file_summary_is_printed_once(tmp_path, capsys, tool):
    events = tmp_path / "events.jsonl"
    events.write_bytes(_jsonl(JSONL))
    assert main(run_tool(tool, events, tmp_path)) == 0
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("records read from") == 1, printed
