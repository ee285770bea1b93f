"""The one writer of the interactions CSV: every file handed to `CreateDatasetImportJob`, and the file
`python -m cli interactions preview` writes, go through `InteractionsWriter`.

Personalize's bulk-data format wants a plain header (not quoted), so an Athena result — where every field,
header included, is quoted — is never imported as is: its rows are parsed (`parse_row`) and re-written here.
Numbers are written unquoted (EVENT_VALUE as a float, TIMESTAMP as whole epoch seconds); a field is quoted
only when it needs it (a comma or a quote inside an id), with inner quotes doubled (RFC 4180). Lines end with
LF. Personalize wants each record on a single line (data format guidelines,
https://docs.aws.amazon.com/personalize/latest/dg/data-prep-formatting.html), so a row whose id or event type
holds a line break or another control character is never written (`unwritable`): the normaliser rejects such
ids, and the import step skips and counts any the lake still holds.
"""

from __future__ import annotations

import csv
import math
from typing import Iterable, NamedTuple, Sequence, TextIO

from functions.events.parsing import CONTROL_CHARACTERS
from functions.retraining.sql import INTERACTIONS_COLUMNS


class Interaction(NamedTuple):
    """One row of the interactions dataset."""

    user_id: str
    item_id: str
    event_type: str
    event_value: float
    timestamp: int


def parse_row(row: Sequence[str]) -> Interaction:
    """A row of text fields (as a csv reader gives them) as an `Interaction`; ValueError says what is wrong."""
    if len(row) != len(INTERACTIONS_COLUMNS):
        raise ValueError(f"{len(row)} columns, expected {len(INTERACTIONS_COLUMNS)}")
    user_id, item_id, event_type, event_value, timestamp = row
    try:
        seconds = int(timestamp)
    except ValueError:
        raise ValueError(f"TIMESTAMP {timestamp!r} is not whole epoch seconds") from None
    try:
        value = float(event_value)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"EVENT_VALUE {event_value!r} is not a finite number")
    return Interaction(user_id, item_id, event_type, value, seconds)


def unwritable(row: Interaction) -> str | None:
    """Why `row` cannot be a record of the file, or None."""
    for column, value in (("USER_ID", row.user_id), ("ITEM_ID", row.item_id), ("EVENT_TYPE", row.event_type)):
        if CONTROL_CHARACTERS.search(value):
            return f"{column} {value[:40]!r} holds a line break or another control character"
    return None


class InteractionsWriter:
    """Writes the header on creation, then one line per `write`."""

    def __init__(self, out: TextIO):
        self._writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        self._writer.writerow(INTERACTIONS_COLUMNS)

    def write(self, row: Interaction) -> None:
        problem = unwritable(row)
        if problem:
            raise ValueError(problem)
        value = float(row.event_value)
        if not math.isfinite(value):
            raise ValueError(f"EVENT_VALUE {row.event_value!r} is not a finite number")
        self._writer.writerow((row.user_id, row.item_id, row.event_type, repr(value), str(int(row.timestamp))))

    def write_all(self, rows: Iterable[Interaction]) -> None:
        for row in rows:
            self.write(row)
