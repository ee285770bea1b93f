"""The one reader of event files, used by every local tool (`demo --events`, `rules replay`,
`interactions preview`).

What it accepts, detected from the file itself, never guessed per tool:

- UTF-8, with or without a byte-order mark (a UTF-16 file is refused with a hint to save it as UTF-8);
- JSON Lines (one record a line), a JSON array of records (a leading `[`, on one line or pretty-printed), or
  records pretty-printed one after another, as the AWS documentation prints its samples.

What goes wrong is reported, counted and skipped, and reading goes on: a line that is not valid UTF-8, text
that is not JSON, a record that is truncated (the file, or the next record, starts before it closes), a record
that is not a JSON object, a record larger than `MAX_RECORD_BYTES` (Kinesis' record limit), a line longer
than `MAX_LINE_BYTES`. Each rejection names its file, its line and a reason; `summary_lines()` groups them by
reason. Whether nothing usable was read (a tool then exits 2) is the tool's call: `records == 0`.

The work is bounded: the file is read a line at a time, only the record being read is held, and a record is
dropped as soon as it outgrows the record limit. A JSON Lines record keeps its own text, byte for byte; a
record assembled from several lines (or cut from an array) is re-serialised compactly, one line, as a
producer would have put it on the stream.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TextIO

MAX_RECORD_BYTES = 1_048_576
"""The largest record kept: Kinesis' limit on one record's data."""
MAX_LINE_BYTES = 8 * 1_048_576
"""The longest line read (a JSON array written on one line is one line); longer lines are skipped."""
SHOWN_REJECTIONS = 20
"""Rejections printed one by one; the summary counts them all."""

NOT_UTF8 = "not valid UTF-8"
NOT_JSON = "not JSON"
TRUNCATED = "truncated record"
NOT_OBJECT = "not a JSON object"
TOO_LARGE = f"record larger than {MAX_RECORD_BYTES:,} bytes (the Kinesis record limit)"
LINE_TOO_LONG = f"line longer than {MAX_LINE_BYTES:,} bytes"
UNREADABLE = "file cannot be read"

_DECODER = json.JSONDecoder()
_OUTSIDE = re.compile(r'[{}\[\]"]')
_INSIDE = re.compile(r'["\\]')
_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false",
          type(None): "null"}


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One JSON object read from a file: its text (one line) and where it starts."""

    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Something skipped: `reason` is one of the module's reasons (what the summary groups by)."""

    path: Path
    line: int
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class EventFileReader:
    """Iterate to read `paths` in order; afterwards `records`, `rejected` and `formats` say what was seen.

    `on_rejection(rejection)` is called for each rejection as it happens (a tool prints the first few).
    """

    paths: Iterable[Path]
    on_rejection: object = None
    records: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    formats: dict[Path, str] = field(default_factory=dict)
    """Per file: "JSON Lines", "JSON array", "pretty-printed records", "empty"."""
    missing: list[Path] = field(default_factory=list)
    """Files that do not exist (`read_events` then reads none)."""

    def __iter__(self) -> Iterator[EventRecord]:
        for path in self.paths:
            path = Path(path)
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                self._reject(Rejection(path, 0, UNREADABLE, "no such file"))
                continue
            except IsADirectoryError:
                self._reject(Rejection(path, 0, UNREADABLE, "a folder, not a file"))
                continue
            except OSError as error:
                self._reject(Rejection(path, 0, UNREADABLE, str(error.strerror or error)))
                continue
            with handle:
                scanner = _FileScanner(path, handle, self._reject)
                for record in scanner.records():
                    self.records += 1
                    yield record
                self.formats[path] = scanner.format

    def read(self) -> list[EventRecord]:
        return list(self)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def _reject(self, rejection: Rejection) -> None:
        self.rejected[rejection.reason] += 1
        if callable(self.on_rejection):
            self.on_rejection(rejection)

    def summary_lines(self) -> list[str]:
        """`N records read from <files> (<format>); M skipped`, then one line per reason, most frequent first."""
        files = ", ".join(f"{path} ({kind})" for path, kind in self.formats.items()) or "no file"
        total = self.rejected_total
        lines = [f"{self.records:,} record{'' if self.records == 1 else 's'} read from {files}"
                 + (f"; {total:,} skipped" if total else "")]
        lines += [f"  skipped {count:,}×: {reason}" for reason, count in self.rejected.most_common()]
        return lines


def read_events(paths: Iterable[Path], err: TextIO, *, shown: int = SHOWN_REJECTIONS
                ) -> tuple[list[EventRecord], EventFileReader]:
    """Read every file, printing the first `shown` rejections and then the summary to `err`.

    The tool decides what "nothing usable" means; `nothing_usable(reader)` is the common wording.
    """
    printed = [0]

    def show(rejection: Rejection) -> None:
        if printed[0] < shown:
            print(str(rejection), file=err)
        elif printed[0] == shown:
            print("… more skipped records are counted in the summary below", file=err)
        printed[0] += 1

    paths = [Path(path) for path in paths]
    reader = EventFileReader(paths, on_rejection=show)
    reader.missing = [path for path in paths if not path.exists()]
    if reader.missing:  # nothing is read: the tool says "no such file: PATH" (`nothing_usable`) and exits 2
        return [], reader
    records = reader.read()
    for line in reader.summary_lines():
        print(line, file=err)
    return records, reader


def nothing_usable(reader: EventFileReader) -> str:
    if reader.missing:
        return "\n".join(f"no such file: {path}" for path in reader.missing)
    return ("error: no usable record was read; expected raw stream records — JSON Lines (one JSON object a "
            "line), a JSON array of objects, or objects pretty-printed one after another (as the AWS "
            "documentation prints them) — in UTF-8")


class _FileScanner:
    """One file: lines → decoded text → records, with a bracket-depth scan so a record may span lines."""

    def __init__(self, path: Path, handle, reject) -> None:
        self.path, self.handle, self.reject = path, handle, reject
        self.array = False
        self.multi_line = False
        self.seen_any = False
        self.format = "empty"
        self._reset()

    def _reset(self) -> None:
        self.depth = 0
        self.in_string = False
        self.parts: list[str] = []
        self.size = 0
        self.start_line = 0
        self.start_column = 0
        self.broken: tuple[str, str] | None = None
        """Why the open record will be rejected when it closes (too large, a line not UTF-8)."""

    def _lines(self) -> Iterator[tuple[int, str, str]]:
        """(number, text, why the line is bad or "")."""
        number = 0
        while True:
            raw = self.handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a bounded chunk at a time
                    raw = self.handle.readline(MAX_LINE_BYTES)
                self.reject(Rejection(self.path, number, LINE_TOO_LONG))
                continue
            if number == 1:
                if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or _utf16_without_bom(raw):
                    self.reject(Rejection(self.path, 1, UNREADABLE, "UTF-16 text; save it as UTF-8"))
                    return
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as error:
                # Scanned with the bad bytes replaced, so the record it belongs to is found (and rejected) whole.
                yield (number, raw.decode("utf-8", errors="replace"),
                       f"line {number}: byte 0x{raw[error.start]:02x} at column {error.start + 1}")

    def records(self) -> Iterator[EventRecord]:
        for number, text, bad in self._lines():
            yield from self._line(number, text, bad)
        if self.depth:
            self._drop(TRUNCATED, "the file ends before it closes")
        self.format = ("JSON array" if self.array else "pretty-printed records" if self.multi_line
                       else "JSON Lines" if self.seen_any else "empty")

    def _line(self, number: int, text: str, bad: str) -> Iterator[EventRecord]:
        position, length = 0, len(text)
        if bad and self.depth:
            self.broken = self.broken or (NOT_UTF8, bad)
        while position < length:
            if self.depth == 0:
                position = self._skip_between(text, position)
                if position >= length:
                    return
                if bad:
                    self.broken = (NOT_UTF8, bad)
                elif text[position] not in "{[":
                    self._scalar(number, text, position)
                    return
                else:
                    # Fast path: a whole record on the line (JSON Lines, a one-line array), its text kept as is.
                    try:
                        value, end = _DECODER.raw_decode(text, position)
                    except ValueError:
                        pass
                    else:
                        self.seen_any = True
                        self._emit(value, number, text[position:end])
                        yield from self._ready()
                        position = end
                        continue
                self.start_line, self.start_column = number, position
                if text[position] not in "{[":  # a bad line that opens no record: rejected on its own
                    if self.broken:
                        self._drop(*self.broken)
                    return
            elif position == 0 and self._new_record_starts(text):
                # A record starting where the open one started: the open one was cut short (JSON Lines).
                self._drop(TRUNCATED, f"line {number} starts a new record before it closes")
                continue
            position = self._scan(text, position)
            if self.depth == 0:
                self.multi_line = self.multi_line or self.start_line != number
                self._finish()
                yield from self._ready()

    def _new_record_starts(self, text: str) -> bool:
        first = len(text) - len(text.lstrip())
        if first >= len(text) or text[first] != "{" or first > self.start_column:
            return False
        if first == 0 and _whole_object(text):  # a JSON Lines record after one cut short, not a value
            return True
        for part in reversed(self.parts):  # legitimate only where a value must follow
            stripped = part.rstrip()
            if stripped:
                if stripped[-1] in "[:":
                    return False
                # After a comma a value follows only inside an array (in an object, a key does).
                return not (stripped[-1] == "," and self._innermost() == "[")
        # A record's own values are indented; at the margin, with nothing known of the open record, a new one.
        return first == 0 or not self.broken

    def _innermost(self) -> str:
        """The open record's innermost open bracket, `{` or `[` (scanned only when a line at the margin may be
        a value)."""
        stack, in_string, escaped = [], False, False
        for char in "".join(self.parts):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                stack.append(char)
            elif char in "}]" and stack:
                stack.pop()
        return stack[-1] if stack else ""

    def _skip_between(self, text: str, position: int) -> int:
        while position < len(text):
            char = text[position]
            if char.isspace():
                position += 1
            elif char == "[" and not self.seen_any and not self.array:
                self.array = True  # a leading `[`: an array of records
                position += 1
            elif self.array and char in ",]":
                position += 1
            else:
                break
        return position

    def _scan(self, text: str, position: int) -> int:
        """Advance the depth scan from `position` to the record's end or the line's end, keeping the record's
        text until it outgrows the record limit."""
        start = position
        while position < len(text):
            if self.in_string:
                match = _INSIDE.search(text, position)
                if match is None:
                    position = len(text)
                    break
                position = match.end()
                if match.group() == "\\":
                    position += 1  # the escaped character
                else:
                    self.in_string = False
                continue
            match = _OUTSIDE.search(text, position)
            if match is None:
                position = len(text)
                break
            position = match.end()
            char = match.group()
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    break
        piece = text[start:position]
        if self.broken is None:
            self.size += len(piece)
            if self.size > MAX_RECORD_BYTES:
                self.broken, self.parts = (TOO_LARGE, ""), []
            else:
                self.parts.append(piece)
        if self.in_string and position >= len(text):
            # JSON strings never hold a raw line break: the record was cut inside a string.
            self.in_string = False
        return position

    _pending: list[EventRecord]

    def _ready(self) -> Iterator[EventRecord]:
        pending, self._pending = getattr(self, "_pending", []), []
        yield from pending

    def _finish(self) -> None:
        text, line, broken = "".join(self.parts), self.start_line, self.broken
        self._reset()
        self.seen_any = True
        if broken:
            self.reject(Rejection(self.path, line, *broken))
            return
        try:
            value = _DECODER.decode(text)
        except ValueError as error:
            self.reject(Rejection(self.path, line, NOT_JSON, _short(error)))
            return
        self._emit(value, line, None)

    def _emit(self, value, line: int, text: str | None) -> None:
        if not isinstance(value, dict):
            self.reject(Rejection(self.path, line, NOT_OBJECT, _KINDS.get(type(value), type(value).__name__)))
            return
        if text is None:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if len(text) > MAX_RECORD_BYTES // 4 and len(text.encode("utf-8")) > MAX_RECORD_BYTES:
            self.reject(Rejection(self.path, line, TOO_LARGE))
            return
        self._pending = [*getattr(self, "_pending", []), EventRecord(self.path, line, text)]

    def _scalar(self, number: int, text: str, position: int) -> None:
        """Something at the top level that is not an object or array: a scalar record, or not JSON at all.
        Either way the rest of the line goes with it."""
        self.seen_any = True
        try:
            value, end = _DECODER.raw_decode(text, position)
        except ValueError as error:
            self.reject(Rejection(self.path, number, NOT_JSON, _short(error)))
            return
        rest = text[end:].strip().strip(",]").strip()
        if rest:
            self.reject(Rejection(self.path, number, NOT_JSON, f"unexpected text after a value at column {end + 1}"))
            return
        self.reject(Rejection(self.path, number, NOT_OBJECT, _KINDS.get(type(value), type(value).__name__)))

    def _drop(self, reason: str, detail: str) -> None:
        line = self.start_line
        self._reset()
        self.seen_any = True
        self.reject(Rejection(self.path, line, reason, detail))


def _whole_object(text: str) -> bool:
    """The line is one whole JSON object (how a JSON Lines record looks)."""
    try:
        _, end = _DECODER.raw_decode(text)
    except ValueError:
        return False
    return not text[end:].strip().strip(",")


def _utf16_without_bom(raw: bytes) -> bool:
    """UTF-16 text without a byte-order mark: ASCII with a NUL every other byte."""
    sample = raw[:64]
    return len(sample) >= 2 and (sample[1::2].count(0) >= len(sample) // 2 > 0 or
                                 sample[0::2].count(0) >= (len(sample) + 1) // 2)


def _short(error: ValueError) -> str:
    message = getattr(error, "msg", str(error))
    column = getattr(error, "colno", None)
    return f"{message} at column {column}" if column else message
