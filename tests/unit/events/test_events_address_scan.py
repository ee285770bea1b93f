"""The address scrubber costs time linear in a value's length and finds what the plain pattern finds."""

from __future__ import annotations

import json
import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.events.canonical import IdentityMode, Rejected
from functions.events.normalise import normalise
from functions.events import parsing
from functions.events.parsing import looks_like_address

# The textbook pattern: what an address is. The scrubber's own is anchored differently, to stay linear.
_PLAIN_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")
_ALPHABET = st.sampled_from(list("ab.@ <>x1"))


@settings(max_examples=400, deadline=None)
@given(st.text(_ALPHABET, max_size=40))
def test_finds_an_email_address_exactly_when_the_plain_pattern_does(text):
    assert bool(parsing._EMAIL.search(text)) == bool(_PLAIN_EMAIL.search(text))
    if _PLAIN_EMAIL.search(text):
        assert looks_like_address(text)


def test_a_megabyte_without_an_at_sign_or_with_many_is_scanned_at_once():
    for hostile in ("a" * 1_000_000, "a@" * 500_000, "@" + "a" * 1_000_000, ("a" * 1000 + "@") * 1000):
        started = time.perf_counter()
        looks_like_address(hostile)
        assert time.perf_counter() - started < 1.0  # the quadratic scan took hours on a megabyte


def test_a_forged_ses_record_with_a_megabyte_tag_is_rejected_at_once():
    record = json.dumps({
        "source": "aws.ses", "detail-type": "Email Rejected", "time": "2025-11-24T16:00:00Z",
        "detail": {"eventType": "Reject", "mail": {"messageId": "m-1", "timestamp": "2025-11-24T16:00:00.000Z",
                                                   "tags": {"user_id": ["u-1"], "note": ["a" * 1_000_000]}},
                   "reject": {"reason": "b" * 1_000_000}},
    })
    started = time.perf_counter()
    result = normalise(record, identity_mode=IdentityMode.USER, arrival_time_ms=1_764_000_000_000)
    assert time.perf_counter() - started < 1.0
    assert isinstance(result, Rejected) and "more than the limit" in result.reason
