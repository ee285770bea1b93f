"""What one hostile record costs the normaliser: time must grow linearly with the record's size.

    python -m bench.normalise [--max-kb 1024] [--repeat 3]

Anyone holding the app producer policy can put any bytes on the stream, and every consumer (the Firehose
processor, the rules aggregator, the event tracker) normalises every record within a Lambda timeout. For each
hostile shape below, at sizes doubling from 16 KB to `--max-kb`, it times `normalise` (best of `--repeat`) and
prints microseconds per KB and the outcome. It fails (exit 1) if, for any shape, the cost per KB of the
largest size is more than 3× that of the smallest (superlinear growth), or if a record of `--max-kb` takes
longer than 0.5 s. For scale it also times the textbook e-mail pattern, which the scrubber replaced, on the
first shape at 16 and 32 KB: a quadratic scan, 4× the time for 2× the bytes.

Shapes: an SES event whose tag holds one long run without `@` (the quadratic case), the same with `a@`
repeated, an app record with 100 attributes of 1,000 characters full of `@` and dots (the largest record that
is accepted, scanned to the end), a Pinpoint record with a huge `client_context` string, an app record with a
huge event type, and deeply nested JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Callable

from functions.events.canonical import IdentityMode, Rejected
from functions.events.normalise import normalise

ARRIVAL_MS = 1_764_000_000_000
MAX_GROWTH = 3.0
MAX_SECONDS_AT_LARGEST = 0.5
_TEXTBOOK_EMAIL = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+")


def ses_with_tag(filler: str) -> Callable[[int], str]:
    def make(size: int) -> str:
        return json.dumps({
            "source": "aws.ses", "detail-type": "Email Opened", "time": "2025-11-24T16:00:00Z",
            "detail": {"eventType": "Open", "mail": {"messageId": "m-1", "timestamp": "2025-11-24T16:00:00.000Z",
                                                     "tags": {"user_id": ["u-1"], "note": [(filler * size)[:size]]}},
                       "open": {"timestamp": "2025-11-24T16:00:01.000Z"}}})
    return make


def app_with_full_attributes(size: int) -> str:
    value = ("a@b." * 250)[:1000]
    count = max(1, min(100, size // 1000))
    return json.dumps({"schema": "engagement-loop/v1", "event_type": "view", "event_time_ms": ARRIVAL_MS,
                       "user_id": "u-1", "attributes": {f"k{n}": value for n in range(count)}})


def pinpoint_with_client_context(size: int) -> str:
    return json.dumps({"event_type": "_session.start", "event_timestamp": ARRIVAL_MS,
                       "arrival_timestamp": ARRIVAL_MS, "client": {"client_id": "c-1"},
                       "client_context": json.dumps({"custom": {"endpoint": "x" * size}})})


def app_with_long_event_type(size: int) -> str:
    return json.dumps({"schema": "engagement-loop/v1", "event_type": "e" * size, "event_time_ms": ARRIVAL_MS,
                       "user_id": "u-1"})


def nested(size: int) -> str:
    depth = size // 2
    return "[" * depth + "]" * depth


SHAPES: dict[str, Callable[[int], str]] = {
    "ses-tag-no-at": ses_with_tag("a"),
    "ses-tag-many-at": ses_with_tag("a@"),
    "app-100-attributes": app_with_full_attributes,
    "pinpoint-client-context": pinpoint_with_client_context,
    "app-long-event-type": app_with_long_event_type,
    "nested-json": nested,
}


def best_of(repeat: int, action: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-kb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    sizes = []
    kb = 16
    while kb <= args.max_kb:
        sizes.append(kb * 1024)
        kb *= 2
    failures: list[str] = []
    print(f"{'shape':<26}{'KB':>7}{'ms':>10}{'µs/KB':>9}  outcome")
    for name, make in SHAPES.items():
        per_kb: list[float] = []
        seconds = 0.0
        for size in sizes:
            record = make(size)
            seconds = best_of(args.repeat, lambda: normalise(record, identity_mode=IdentityMode.USER,
                                                               arrival_time_ms=ARRIVAL_MS))
            result = normalise(record, identity_mode=IdentityMode.USER, arrival_time_ms=ARRIVAL_MS)
            outcome = f"rejected: {result.reason[:60]}" if isinstance(result, Rejected) else "accepted"
            per_kb.append(seconds * 1e6 / (len(record) / 1024))
            print(f"{name:<26}{len(record) // 1024:>7}{seconds * 1000:>10.2f}{per_kb[-1]:>9.2f}  {outcome}")
        growth = per_kb[-1] / max(per_kb[0], 1e-9)
        print(f"{name:<26}  cost per KB, largest / smallest: {growth:.2f}")
        if growth > MAX_GROWTH:
            failures.append(f"{name}: cost per KB grew {growth:.1f}× from {sizes[0] // 1024} to "
                            f"{sizes[-1] // 1024} KB (limit {MAX_GROWTH}×)")
        if seconds > MAX_SECONDS_AT_LARGEST:
            failures.append(f"{name}: {seconds:.2f} s at {sizes[-1] // 1024} KB (limit {MAX_SECONDS_AT_LARGEST} s)")
    small, double = (("a" * n) for n in (16 * 1024, 32 * 1024))
    t_small = best_of(1, lambda: _TEXTBOOK_EMAIL.search(small))
    t_double = best_of(1, lambda: _TEXTBOOK_EMAIL.search(double))
    print(f"textbook e-mail pattern on a run without '@': 16 KB {t_small * 1000:.0f} ms, 32 KB "
          f"{t_double * 1000:.0f} ms ({t_double / t_small:.1f}× for 2× the bytes: quadratic)")
    for failure in failures:
        print("MISSED:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
