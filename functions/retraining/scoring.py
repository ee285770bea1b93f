"""The scoring model: which event types count as engagement, and what each is worth to Personalize.

It comes from stack config (`engagement-loop:scoring`, a list of `EVENT_TYPE=VALUE` entries) or, for local
previews, a CSV `EVENT_TYPE,EVENT_VALUE` (separated by `,`, `;`, tabs or `|`, as spreadsheets save it).
Every form goes through one validator (`_validated`, behind the constructor and every loader), so the
stack, the CLI and the Lambda agree on what a valid model is, and every problem is reported with where it
is and how to fix it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

CONFIG_KEY = "engagement-loop:scoring"
EXPOSURE_EVENT_TYPE = "_custom.recommender"
"""Recommendation exposures: what was shown, never engagement itself."""
MAX_SCORED_EVENT_TYPES = 10  # Amazon Personalize accepts at most 10 event types in an events configuration.
CSV_HEADER = ("EVENT_TYPE", "EVENT_VALUE")
CONFIG_FIX = ("`pulumi config set --path 'scoring[0]' _email.open=50`, "
              "`pulumi config set --path 'scoring[1]' _email.click=100`")
"""How the messages say to set the model: the list form `Pulumi.yaml` declares, one entry per event type."""
_DECIMAL_COMMA = re.compile(r"\s*[-+]?\d+,\d+\s*")


class ScoringError(ValueError):
    """An invalid scoring model; `problems` holds one line per problem, each naming where and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid scoring model:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass(frozen=True, slots=True)
class ScoringModel:
    """Event type → EVENT_VALUE of the interactions dataset (at most 10 types, finite values)."""

    values: Mapping[str, float]

    def __post_init__(self) -> None:
        # Built directly (not through a loader), the model is still validated: no invalid model exists.
        items = [(f"key {k!r}", k, v) for k, v in dict(self.values).items()]
        object.__setattr__(self, "values", MappingProxyType(_validated(items, source="ScoringModel", problems=())))

    def __hash__(self) -> int:
        return hash(tuple(self.values.items()))

    def event_weights(self) -> dict[str, float]:
        """The model as Personalize event weights (0–1): each positive value over the largest one.

        Personalize weights are relative importance, not signed scores, so a type with a value ≤ 0 (an
        unsubscribe, say) gets weight 0: it is left out of training rather than taught as a preference.
        """
        top = max(self.values.values())
        return {event_type: (value / top if value > 0 and top > 0 else 0.0)
                for event_type, value in self.values.items()}

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, Any, Any]], *, source: str,
                   problems: Iterable[str] = ()) -> "ScoringModel":
        """From `(where, event_type, value)` items, `where` locating each in `source` (e.g. `row 3`,
        `key '_email.open'`); `problems` are ones a loader already found. Raises `ScoringError` listing
        every problem, each as `<source>, <where>: <what is wrong and the fix>`."""
        return cls(_validated(items, source=source, problems=problems))

    @classmethod
    def from_mapping(cls, mapping: Mapping[Any, Any], *, source: str) -> "ScoringModel":
        """From `{event_type: value}` (a stack file's native YAML object)."""
        return cls.from_items(((f"key {k!r}", k, v) for k, v in mapping.items()), source=source)

    @classmethod
    def from_entries(cls, entries: Iterable[Any], *, source: str) -> "ScoringModel":
        """From `["EVENT_TYPE=VALUE", …]` (the array form a Pulumi.yaml config schema can declare)."""
        items: list[tuple[str, Any, Any]] = []
        problems: list[str] = []
        for number, entry in enumerate(entries, start=1):
            event_type, sep, value = str(entry).rpartition("=")
            if not sep:
                problems.append(f"{source}, entry {number}: {entry!r} is not EVENT_TYPE=VALUE "
                                "(e.g. _email.open=50)")
                continue
            items.append((f"entry {number}", event_type, value))
        return cls.from_items(items, source=source, problems=problems)

    @classmethod
    def from_config_value(cls, value: Any, *, source: str) -> "ScoringModel":
        """From a stack config value in any form Pulumi hands over: an object, an array of
        `EVENT_TYPE=VALUE`, or either one as a JSON string (`pulumi config set --path` / the engine)."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as error:
                raise ScoringError([f"{source}: not valid JSON ({error.msg}); set the model as a list, one "
                                    f"EVENT_TYPE=VALUE entry per event type: {CONFIG_FIX}"]) from None
        if isinstance(value, Mapping):
            return cls.from_mapping(value, source=source)
        if isinstance(value, list):
            return cls.from_entries(value, source=source)
        raise ScoringError([f"{source}: expected a list of EVENT_TYPE=VALUE entries (or an object of event "
                            f"type → value), got {type(value).__name__}; set it as a list: {CONFIG_FIX}"])

    @classmethod
    def from_stack_file(cls, path: str | Path) -> "ScoringModel":
        """From a Pulumi stack file (`Pulumi.<stack>.yaml`): `config: engagement-loop:scoring: {…}`."""
        import yaml  # local tools only; Lambdas receive the model already parsed

        path = Path(path)
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ScoringError([f"{path}: not valid YAML: {error}"]) from None
        config = document.get("config") if isinstance(document, dict) else None
        if not isinstance(config, dict) or CONFIG_KEY not in config:
            raise ScoringError([f"{path}: no `{CONFIG_KEY}` under `config:`; add it, one EVENT_TYPE=VALUE entry "
                                f"per event type: {CONFIG_FIX}"])
        return cls.from_config_value(config[CONFIG_KEY], source=f"{path}, config {CONFIG_KEY}")

    @classmethod
    def from_csv(cls, path: str | Path) -> "ScoringModel":
        """From a CSV with header `EVENT_TYPE,EVENT_VALUE` (any case), one event type per row; UTF-8 with or
        without a BOM, any line ends, separated by `,`, `;`, tabs or `|` (read from the header line, as the
        rules sheet is). In a `;` file, the separator of locales whose decimal mark is a comma, a value such
        as `0,5` is 0.5."""
        from functions.rules.sheet import detect_delimiter, header_seen

        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as error:
            raise ScoringError([f"{path}: not UTF-8 text (byte {error.start:,}); save the file as CSV UTF-8"]) from None
        delimiter = detect_delimiter(text, frozenset(column.lower() for column in CSV_HEADER))
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            raw_header = next(reader, [])
        except csv.Error as error:
            raise ScoringError([f"{path}, row 1: not a readable CSV file ({error})"]) from None
        if tuple(cell.strip().upper() for cell in raw_header) != CSV_HEADER:
            seen = header_seen(raw_header, delimiter) if any(c.strip() for c in raw_header) else "it is empty"
            raise ScoringError([f"{path}, row 1: the header must be {','.join(CSV_HEADER)}, but {seen}; write "
                                f"{' and '.join(CSV_HEADER)} in the first row"])
        items: list[tuple[str, Any, Any]] = []
        problems: list[str] = []
        for row in _rows(reader, path, problems):
            where = f"row {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != 2:
                problems.append(f"{path}, {where}: expected 2 columns (EVENT_TYPE,EVENT_VALUE), got {len(row):,}")
                continue
            value = row[1]
            if delimiter == ";" and _DECIMAL_COMMA.fullmatch(value):
                value = value.replace(",", ".")
            items.append((where, row[0], value))
        return cls.from_items(items, source=str(path), problems=problems)

    @classmethod
    def load(cls, path: str | Path) -> "ScoringModel":
        """From a stack file (`.yaml`/`.yml`) or a CSV (`.csv`), by suffix."""
        path = Path(path)
        if not path.is_file():
            raise ScoringError([f"{path}: no such file; pass a stack file (Pulumi.<stack>.yaml) or a CSV"])
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            return cls.from_stack_file(path)
        if suffix == ".csv":
            return cls.from_csv(path)
        raise ScoringError([f"{path}: unknown scoring file type {suffix!r}; use a stack file (.yaml) "
                            f"or a CSV (.csv) with header {','.join(CSV_HEADER)}"])


def _validated(items: Iterable[tuple[str, Any, Any]], *, source: str, problems: Iterable[str]) -> dict[str, float]:
    """The one validator of scoring models, whatever their source."""
    problems = list(problems)
    values: dict[str, float] = {}
    first_seen: dict[str, str] = {}

    def fail(where: str, message: str) -> None:
        problems.append(f"{source}, {where}: {message}")

    for where, raw_type, raw_value in items:
        if not isinstance(raw_type, str):
            fail(where, f"event type {raw_type!r} is not text; quote it, e.g. \"{raw_type}\"")
            continue
        event_type = raw_type.strip()
        if not event_type:
            fail(where, f"event type {raw_type!r} is empty; write the event type, e.g. _email.open")
            continue
        if event_type == EXPOSURE_EVENT_TYPE:
            fail(where, f"{EXPOSURE_EVENT_TYPE} records exposures (what was recommended), not engagement; "
                        "remove it from the scoring model")
            continue
        if event_type in first_seen:
            fail(where, f"event type {event_type!r} is already scored at {first_seen[event_type]}; keep one")
            continue
        value = _finite_number(raw_value)
        if value is None:
            fail(where, f"value {raw_value!r} for {event_type!r} is not a finite number; "
                        "write a number such as 50 or 0.5")
            continue
        first_seen[event_type] = where
        values[event_type] = value
    if not problems and not values:
        problems.append(f"{source}: no event types are scored; score at least one: in stack config {CONFIG_FIX}; "
                        "in a CSV, a row such as _email.open,50")
    if len(first_seen) > MAX_SCORED_EVENT_TYPES:
        problems.append(f"{source}: {len(first_seen):,} event types are scored; Amazon Personalize accepts at "
                        f"most {MAX_SCORED_EVENT_TYPES}: drop the least useful")
    if problems:
        raise ScoringError(problems)
    return values


def _rows(reader: Any, path: Path, problems: list[str]) -> Iterable[list[str]]:
    """The CSV rows after the header; a row the csv module cannot read ends the file with a problem."""
    try:
        yield from reader
    except csv.Error as error:
        problems.append(f"{path}, row {reader.line_num:,}: not readable as CSV ({error})")


def _finite_number(value: Any) -> float | None:
    if isinstance(value, bool):  # YAML `yes`/`true` must not score as 1.0
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
