"""normalise(): decoding, source detection, limits and rejection reasons for malformed input."""

from __future__ import annotations

import json

import pytest

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.normalise import normalise

MODE = IdentityMode.USER_OR_ENDPOINT


def rejected(raw: bytes | str) -> str:
    result = normalise(raw, identity_mode=MODE)
    assert isinstance(result, Rejected), result
    return result.reason


def parsed(raw: bytes | str) -> CanonicalEvent:
    result = normalise(raw, identity_mode=MODE)
    assert isinstance(result, CanonicalEvent), result
    return result


@pytest.fixture
def session_stop(load) -> dict:
    return load("pinpoint", "app_session_stop")


class TestNotARecord:
    def test_not_utf8(self):
        assert rejected(b'{"event_type": "\xff"}') == "not valid UTF-8 (bad byte at offset 16)"

    @pytest.mark.parametrize("raw", [b"", b"{", b"event_type=x", b'{"a": 1} trailing'])
    def test_not_json(self, raw):
        assert rejected(raw).startswith("not JSON: ")

    def test_not_json_says_where(self):
        assert rejected(b'{"a": }') == "not JSON: Expecting value at line 1 column 7"

    @pytest.mark.parametrize(
        "raw, kind",
        [
            (b"[1, 2]", "a list"),
            (b"42", "a number"),
            (b'"text"', "a string"),
            (b"null", "null"),
            (b"true", "a boolean"),
        ],
    )
    def test_json_that_is_not_an_object(self, raw, kind):
        assert rejected(raw) == f"unrecognised record: expected a JSON object, got {kind}"

    @pytest.mark.parametrize("raw", [b"{}", b'{"event_type": "x"}', b'{"source": "aws.sns", "detail": {}}'])
    def test_objects_of_no_known_source(self, raw):
        assert rejected(raw).startswith("unrecognised record: not a Pinpoint, SES or app event")

    def test_absurd_nesting(self):
        assert rejected(b"[" * 100_000 + b"]" * 100_000).startswith("not JSON: RecursionError")

    def test_integer_beyond_pythons_digit_limit(self):
        assert rejected(b'{"n": ' + b"9" * 5_000 + b"}").startswith("not JSON: ValueError")


class TestPinpointFields:
    def test_mistyped_timestamp(self, session_stop):
        session_stop["event_timestamp"] = "abc"

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field event_timestamp: expected integer milliseconds, got 'abc'"
        )

    def test_fractional_timestamp(self, session_stop):
        session_stop["arrival_timestamp"] = 1487973803515.5

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field arrival_timestamp: expected integer milliseconds, got 1487973803515.5"
        )

    def test_missing_arrival_timestamp(self, session_stop):
        del session_stop["arrival_timestamp"]

        assert rejected(json.dumps(session_stop)) == "Pinpoint record: missing field arrival_timestamp"

    def test_mistyped_nested_object(self, session_stop):
        session_stop["client"] = "m3n4o5p6"

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field client: expected a JSON object, got a string"
        )

    def test_attribute_that_is_not_a_string(self, session_stop):
        session_stop["attributes"] = {"count": 3}

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field attributes.count: expected a string, got 3"
        )

    def test_metric_that_is_not_a_number(self, session_stop):
        session_stop["metrics"] = {"score": "high"}

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field metrics.score: expected a number, got 'high'"
        )


class TestLimits:
    def test_a_hundred_attributes_and_metrics_are_accepted(self, session_stop):
        session_stop["attributes"] = {f"a{i}": "v" for i in range(100)}
        session_stop["metrics"] = {f"m{i}": i for i in range(100)}

        event = parsed(json.dumps(session_stop))

        assert (len(event.attributes), len(event.metrics)) == (100, 100)

    def test_more_than_a_hundred_attributes(self, session_stop):
        session_stop["attributes"] = {f"a{i}": "v" for i in range(101)}

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field attributes: 101 entries, more than the limit of 100"
        )

    def test_more_than_a_hundred_metrics(self, session_stop):
        session_stop["metrics"] = {f"m{i}": 1 for i in range(5_000)}

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field metrics: 5000 entries, more than the limit of 100"
        )

    def test_attribute_value_of_a_thousand_characters_is_accepted(self, session_stop):
        session_stop["attributes"] = {"note": "x" * 1_000}

        assert parsed(json.dumps(session_stop)).attributes["note"] == "x" * 1_000

    def test_attribute_value_over_a_thousand_characters(self, session_stop):
        session_stop["attributes"] = {"note": "x" * 1_001}

        assert rejected(json.dumps(session_stop)) == (
            "Pinpoint record: field attributes.note: value is 1001 characters, more than the limit of 1000"
        )

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 400])
    def test_non_finite_metric(self, session_stop, literal):
        session_stop["metrics"] = {"score": 0}
        raw = json.dumps(session_stop).replace('"score": 0', f'"score": {literal}')

        assert rejected(raw).startswith("Pinpoint record: field metrics.score: expected a finite number, got ")

    def test_boolean_metric(self, session_stop):
        session_stop["metrics"] = {"flag": True}

        assert rejected(json.dumps(session_stop)) == "Pinpoint record: field metrics.flag: expected a number, got True"


class TestText:
    def test_non_ascii_text_round_trips(self, session_stop):
        session_stop["event_type"] = "café_gesehen"
        session_stop["attributes"] = {"città": "Zürich", "東京": "ラーメン 🍜", "rtl": "مرحبا"}

        event = parsed(json.dumps(session_stop, ensure_ascii=False).encode("utf-8"))
        line = json.loads(event.to_json().encode("utf-8").decode("utf-8"))

        assert line["event_type"] == "café_gesehen"
        assert line["attributes"] == {"città": "Zürich", "東京": "ラーメン 🍜", "rtl": "مرحبا"}
        assert "ラーメン 🍜" in event.to_json()  # written as text, not \u escapes

    def test_escaped_and_raw_non_ascii_give_the_same_event(self, session_stop):
        session_stop["attributes"] = {"city": "Zürich"}

        escaped = parsed(json.dumps(session_stop, ensure_ascii=True))
        raw = parsed(json.dumps(session_stop, ensure_ascii=False).encode("utf-8"))

        assert escaped == raw

    def test_str_bytes_bytearray_and_memoryview_inputs_agree(self, session_stop):
        text = json.dumps(session_stop)
        encoded = text.encode("utf-8")

        assert parsed(text) == parsed(encoded) == parsed(bytearray(encoded)) == parsed(memoryview(encoded))

    def test_lone_surrogate(self, session_stop):
        raw = json.dumps(session_stop).replace('"attributes": {}', '"attributes": {"name": "\\ud800"}')

        assert rejected(raw) == "Pinpoint record: field attributes.name: not valid Unicode (contains a lone surrogate)"
