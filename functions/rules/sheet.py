"""The rules sheet: business rules written by non-engineers as a CSV, parsed into typed `Rule`s.

The seed's Honeycode columns work unchanged (`RuleType, EventName, AttributeName, AttributeValue,
Operator-C, Target-C, Operator-V, Target-V, ResetWhenReachTarget, StartDate, FinishDate`, plus an ignored
`Key`), with their sentinels: `na`, `999` or an empty cell mean "no filter / no condition", `9999-99-99`
means "no date". Extensions: `RuleId`, `MetricName`, `Window` (`7d`) and `ActionName`.

Cells are separated by `,`, `;`, tabs or `|`, as spreadsheets save CSV in different locales
(`detect_delimiter`, from the header line); a UTF-8 BOM and CRLF line ends are accepted.

A sheet is accepted whole or rejected whole: `parse_rules_sheet` either returns a `RuleSet` or raises
`RulesSheetError` listing every problem as `row N, column X: what is wrong (how to fix it)`, with rows
numbered as a spreadsheet shows them (the header is row 1). `check_rules_sheet` also returns the warnings
of an accepted sheet (no rules at all; a row without a `RuleId`, whose id comes from its content).

Every cell is bounded (`CELL_LIMITS`, docs/rules.md "Sheet limits"), as are the sheet's size and its number
of rules, and a message quotes at most a short excerpt of a cell (`cell_excerpt`): a file that is not a rules
sheet (an environment dump, say) is reported without its contents.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Callable, Mapping

from functions.events.parsing import MAX_NAME_CHARS, MAX_VALUE_CHARS
from functions.rules.keys import RESERVED_RULE_IDS
from functions.rules.model import (
    ENGINE_EVENT_PREFIX,
    MAX_WINDOW_DAYS,
    ActionKind,
    AttributeFilter,
    CountCondition,
    Operator,
    Rule,
    RuleSet,
    RuleType,
    SumCondition,
    content_rule_id,
)

@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the sheet, said so that its author can fix it."""

    row: int
    column: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column}" if self.column else "")
        return f"{where}: {self.message} ({self.fix})"


class RulesSheetError(Exception):
    """The sheet was rejected; `problems` lists everything wrong with it, in sheet order."""

    def __init__(self, problems: list[Problem], *, source_name: str = "") -> None:
        self.problems = problems
        self.source_name = source_name
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        prefix = f"{self.source_name}: " if self.source_name else ""
        return [f"{prefix}{problem}" for problem in self.problems]


# --- parsing ---------------------------------------------------------------------------------------

RULE_ID, KEY, RULE_TYPE, EVENT_NAME = "RuleId", "Key", "RuleType", "EventName"
ATTRIBUTE_NAME, ATTRIBUTE_VALUE = "AttributeName", "AttributeValue"
OPERATOR_C, TARGET_C, OPERATOR_V, TARGET_V = "Operator-C", "Target-C", "Operator-V", "Target-V"
RESET, START_DATE, FINISH_DATE = "ResetWhenReachTarget", "StartDate", "FinishDate"
METRIC_NAME, WINDOW, ACTION_NAME = "MetricName", "Window", "ActionName"

COLUMNS = (
    KEY, RULE_TYPE, EVENT_NAME, ATTRIBUTE_NAME, ATTRIBUTE_VALUE, OPERATOR_C, TARGET_C, OPERATOR_V, TARGET_V,
    RESET, START_DATE, FINISH_DATE, RULE_ID, METRIC_NAME, WINDOW, ACTION_NAME,
)  # fmt: skip
REQUIRED_COLUMNS = (RULE_TYPE, EVENT_NAME, OPERATOR_C, TARGET_C, OPERATOR_V, TARGET_V, RESET)
# Optional columns that only make sense together.
PAIRED_COLUMNS = ((ATTRIBUTE_NAME, ATTRIBUTE_VALUE), (START_DATE, FINISH_DATE))

_NONE = frozenset({"", "na", "999"})  # the seed's "no value", in every optional cell
_NO_TARGET = frozenset({"", "na"})  # after a real operator, 999 is a real target
_NO_DATE = frozenset({"", "na", "9999-99-99"})
_YES, _NO = frozenset({"yes", "true"}), frozenset({"no", "false"})

MAX_RULE_ID_CHARS = 64
MAX_ACTION_NAME_CHARS = 128
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,%d}" % (MAX_RULE_ID_CHARS - 1))
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,%d}" % (MAX_ACTION_NAME_CHARS - 1))

# --- limits (docs/rules.md, "Sheet limits") -------------------------------------------------------------
# Names and values as long as the normaliser keeps them (functions/events/parsing.py): a longer filter or
# metric could never match an event, and every cell that reaches the backfill's SQL is bounded, so one
# rule's query stays far below Athena's 262,144-byte query string limit (functions/lake_names.py).
CELL_LIMITS = MappingProxyType({
    EVENT_NAME: MAX_NAME_CHARS,
    ATTRIBUTE_NAME: MAX_NAME_CHARS,
    ATTRIBUTE_VALUE: MAX_VALUE_CHARS,
    METRIC_NAME: MAX_NAME_CHARS,
    ACTION_NAME: MAX_ACTION_NAME_CHARS,
    RULE_ID: MAX_RULE_ID_CHARS,
})
MAX_OTHER_CELL_CHARS = 100
"""Every other cell (rule type, operators, targets, reset, dates, window, the ignored Key): far more than any
valid value needs."""
MAX_RULES = 500
"""Rules (non-blank data rows) in one sheet: each is a counter per user, a backfill query per generation and
an entry of the rules document every aggregator reads."""
MAX_SHEET_BYTES = 1_000_000
"""A sheet's size in UTF-8 bytes: several times the largest sheet of MAX_RULES rules of typical length."""
EXCERPT_CHARS = 40
"""The most of a cell a message quotes."""


def cell_excerpt(cell: str, *, quoted: bool = True) -> str:
    """A cell as a message quotes it: in full when short, else its start, an ellipsis and its length."""
    text = repr if quoted else str
    if len(cell) <= EXCERPT_CHARS:
        return text(cell)
    return f"{text(cell[:EXCERPT_CHARS])}… ({len(cell):,} characters)"


def cell_limit(column: str) -> int:
    """The most characters a cell of `column` may hold."""
    return CELL_LIMITS.get(column, MAX_OTHER_CELL_CHARS)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_WINDOW = re.compile(r"(\d+)\s*d", re.IGNORECASE)
_WINDOW_FIX = f"write a number of days from 1d to {MAX_WINDOW_DAYS}d, e.g. 7d"


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _a(word: str) -> str:
    """`word` with its indefinite article, as the column names are read aloud ("an Operator-C")."""
    return f"{'an' if word[:1].lower() in 'aeio' else 'a'} {word}"


def _is_none(cell: str, sentinels: frozenset[str] = _NONE) -> bool:
    return cell.lower() in sentinels


class _Row:
    """One data row: cells by canonical column name, and the problems found in it."""

    def __init__(self, number: int, cells: dict[str, str], labels: dict[str, str], problems: list[Problem]):
        self.number, self.cells, self.labels, self.problems = number, cells, labels, problems

    def __getitem__(self, column: str) -> str:
        return self.cells.get(column, "")

    def problem(self, column: str, message: str, fix: str) -> None:
        self.problems.append(Problem(self.number, self.labels.get(column, column), message, fix))


DELIMITERS = ",;\t|"
"""The separators spreadsheets save CSV with: `,`, and `;` (Excel where the decimal mark is a comma), tab
(\"Unicode text\"), `|`."""
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "bars"}


def detect_delimiter(text: str, known: frozenset[str] = frozenset()) -> str:
    """The separator of CSV `text`, read from its header line only: the candidate of `DELIMITERS` that splits
    the header into the most `known` column names (lower case), else what `csv.Sniffer` (restricted to
    `DELIMITERS`) makes of the line, else `,`. Quotes are honoured, so a quoted `;` in a comma sheet does
    not count."""
    line = text.removeprefix("\ufeff").split("\n", 1)[0].rstrip("\r")

    def cells(delimiter: str) -> list[str]:
        return next(csv.reader([line], delimiter=delimiter), [])

    scores = {d: (sum(c.strip().lower() in known for c in cells(d)), len(cells(d))) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: scores[d])  # max keeps the first of equals: `,` wins ties
    if scores[best][0]:
        return best
    try:
        return csv.Sniffer().sniff(line, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return best if scores[best][1] > 1 else ","


def header_seen(header: list[str], delimiter: str) -> str:
    """What a header row that could not be read holds, as a message may quote it: the start of its *first*
    cell only, cut at 40 characters and at the first character that is not a letter, `_`, `.` or `-` (so an
    environment dump shows `'AWS_SECRET_ACCESS_KEY…'`), then how many cells there are and the separator. The
    other cells are never shown: in a file that is not a sheet they are values (`KEY;secret`)."""
    labelled = [cell.strip() for cell in header if cell.strip()]
    if not labelled:
        return "it reads nothing"
    first = labelled[0]
    name = re.match(r"[A-Za-z_.\-]*", first).group(0)[:EXCERPT_CHARS]
    shown = repr(name + ("…" if len(name) < len(first) else "")) if name else "a first cell that is no name"
    others = len(labelled) - 1
    rest = f" and {others:,} more cell{'' if others == 1 else 's'}, not shown" if others else ""
    return (f"it reads {shown}{rest} ({len(labelled):,} cell{'' if len(labelled) == 1 else 's'}, separated by "
            f"{_DELIMITER_NAMES.get(delimiter, repr(delimiter))})")


@dataclass(frozen=True, slots=True)
class CheckedSheet:
    """An accepted sheet: its rules, and what its author should still know (`warnings`)."""

    rules: RuleSet
    warnings: tuple[Problem, ...] = ()


def parse_rules_sheet(text: str, *, source_name: str) -> RuleSet:
    """Parse and validate a rules sheet (CSV text separated by `,`, `;`, tabs or `|`, UTF-8 BOM and CRLF
    accepted).

    Raises `RulesSheetError` with every problem found, or returns all the rules.
    """
    return check_rules_sheet(text, source_name=source_name).rules


def _warn_shared_attributes(rules: list[tuple[int, Rule]], labels: Mapping[str, str],
                            warnings: list[Problem]) -> None:
    """Rules setting the same attribute share it: one's exit (a window rule's, a reset of the sheet) clears what
    the others set, and the sinks cannot tell them apart. Seed sheets do this on purpose (several thresholds
    of one event), so it is a warning, once per later rule."""
    owners: dict[str, int] = {}
    for number, rule in rules:
        if rule.action_kind is not ActionKind.ATTRIBUTE:
            continue
        first = owners.setdefault(rule.action_name, number)
        if first != number:
            warnings.append(Problem(number, labels.get(ACTION_NAME, ACTION_NAME),
                                    f"this rule sets attribute {rule.action_name}, as the rule in row {first} does: "
                                    "either one leaving clears it for both",
                                    "give one of them its own ActionName if they mean different things"))


def check_rules_sheet(text: str, *, source_name: str) -> CheckedSheet:
    """`parse_rules_sheet`, with the warnings of an accepted sheet: no rules at all, rows without a RuleId."""
    problems: list[Problem] = []
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_SHEET_BYTES:
        raise RulesSheetError([Problem(1, None, f"the sheet is {size:,} bytes, more than the {MAX_SHEET_BYTES:,} a "
                                                "rules sheet may have", "split the sheet or remove rows")],
                              source_name=source_name)
    text = text.removeprefix("\ufeff")
    delimiter = detect_delimiter(text, frozenset(column.lower() for column in COLUMNS))
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as error:
        raise RulesSheetError([Problem(1, None, f"not a readable CSV file: {error}", "save the sheet as CSV")],
                              source_name=source_name) from None
    if not records or not any(cell.strip() for cell in records[0]):
        problems.append(Problem(1, None, "the sheet has no header row",
                                f"the first row names the columns, e.g. {', '.join(REQUIRED_COLUMNS)}"))
        raise RulesSheetError(problems, source_name=source_name)

    positions, labels, fatal = _read_header(records[0], problems, delimiter)
    data_rows = sum(1 for record in records[1:] if any(cell.strip() for cell in record))
    if not fatal and data_rows > MAX_RULES:
        problems.append(Problem(1, None, f"the sheet has {data_rows:,} rules, more than the {MAX_RULES:,} one sheet "
                                         "may hold", "remove rules that are no longer needed"))
        fatal = True
    rules: list = []  # (row, rule) while rows are read
    warnings: list[Problem] = []
    ids: list[tuple[int, str, bool]] = []  # (row, rule id, given in the sheet), for the duplicate check
    if not fatal:
        for number, record in enumerate(records[1:], start=2):
            if not any(cell.strip() for cell in record):
                continue  # spreadsheets export blank rows; they are not rules
            row = _Row(number, {}, labels, problems)
            too_long = False
            for index, cell in enumerate(record):
                column = positions.get(index)
                limit = cell_limit(column or KEY)
                if len(cell.strip()) > limit:
                    # Checked before anything else reads the cell; the row is not parsed further.
                    written = records[0][index].strip() if index < len(records[0]) else ""
                    row.problem(column or (written if index in positions and len(written) <= EXCERPT_CHARS
                                           else _column_letter(index)),
                                f"{cell_excerpt(cell.strip())} is longer than the {limit:,} characters this column's "
                                "cells may have", f"shorten it to at most {limit:,} characters")
                    too_long = True
                elif index in positions:
                    if positions[index] is not None:
                        row.cells[positions[index]] = cell.strip()
                elif cell.strip():
                    row.problem(_column_letter(index), f"value {cell_excerpt(cell.strip())} in a column without a header",
                                "name the column in row 1 or clear the cell")
            if too_long:
                continue
            rule = _parse_row(row)
            if not _is_none(row[RULE_ID]):
                ids.append((number, row[RULE_ID], True))
            elif rule is not None:
                ids.append((number, rule.rule_id, False))
                # The id hashes what the rule does: an edit is a new rule, whose counting starts afresh.
                warnings.append(Problem(number, labels.get(RULE_ID, RULE_ID),
                                        f"no RuleId: the rule is known by {rule.rule_id}, an id made from its "
                                        "content, so editing it makes a new rule whose counts start from 0",
                                        f"give it a RuleId, e.g. {_suggested_rule_id(rule)}"
                                        + ("" if RULE_ID in labels else " in a new RuleId column")))
            if rule is not None:
                rules.append((number, rule))
        _check_unique_ids(ids, labels, problems)
        _warn_shared_attributes(rules, labels, warnings)
    rules = [rule for _, rule in rules]
    if problems:
        # Stable: header problems first, then each row's in column-checking order.
        problems.sort(key=lambda problem: problem.row)
        raise RulesSheetError(problems, source_name=source_name)
    if not rules:
        warnings.insert(0, Problem(1, None, "0 rules: nothing will be counted", "add a row per rule below the header"))
    return CheckedSheet(RuleSet(tuple(rules)), tuple(warnings))


def _suggested_rule_id(rule: Rule) -> str:
    """A readable id a warning can suggest: the event (and filter value) in id characters."""
    base = rule.event_name + (f"-{rule.attribute_filter.value}" if rule.attribute_filter else "")
    suggested = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("_-")[:MAX_RULE_ID_CHARS] or "my-rule"
    return suggested if suggested not in RESERVED_RULE_IDS else f"{suggested}-1"


def _read_header(header: list[str], problems: list[Problem],
                 delimiter: str = ",") -> tuple[dict[int, str | None], dict[str, str], bool]:
    """Map cell positions to canonical columns (None: ignored). Returns positions, labels as written, and
    whether the problems found make reading the rows pointless."""
    by_lower = {column.lower(): column for column in COLUMNS}
    positions: dict[int, str | None] = {}
    labels: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    fatal = False
    labelled = [raw.strip() for raw in header if raw.strip()]
    if labelled and not any(label.lower() in by_lower for label in labelled):
        # Not a rules sheet at all (another CSV, an environment dump…): say so once, quoting only what
        # `header_seen` shows of it.
        problems.append(Problem(1, None, f"none of the {len(labelled):,} header cells names a rules sheet column, so "
                                         f"this does not look like a rules sheet; {header_seen(header, delimiter)}",
                                f"point at the rules CSV; its first row names columns such as "
                                f"{', '.join(REQUIRED_COLUMNS)}"))
        return {}, {}, True
    for index, raw in enumerate(header):
        label = raw.strip()
        if not label:
            continue  # a value under it is reported per row
        column = by_lower.get(label.lower())
        if column is None:
            # The label names the column when it is short; a long one is quoted as an excerpt only.
            shown = label if len(label) <= EXCERPT_CHARS else f"{_column_letter(index)} ({cell_excerpt(label)})"
            problems.append(Problem(1, shown, "unknown column",
                                    f"remove it, or rename it to one of {', '.join(COLUMNS)}"))
            positions[index] = None
        elif column in first_seen:
            problems.append(Problem(1, label, f"appears twice, in columns {_column_letter(first_seen[column])} "
                                              f"and {_column_letter(index)}", "keep one of them"))
            fatal = True
        else:
            first_seen[column], labels[column] = index, label
            positions[index] = None if column == KEY else column
    for column in REQUIRED_COLUMNS:
        if column not in labels:
            problems.append(Problem(1, column, "required column is missing", f"add {_a(column)} column"))
            fatal = True
    for first, second in PAIRED_COLUMNS:
        if (first in labels) != (second in labels):
            present, missing = (first, second) if first in labels else (second, first)
            problems.append(Problem(1, missing, f"column is missing while {present} is there",
                                    f"add {_a(missing)} column, or remove {present}"))
            fatal = True
    return positions, labels, fatal


def _parse_row(row: _Row) -> Rule | None:
    """Read one row into a Rule, reporting each bad cell; None when the row has problems."""
    before = len(row.problems)
    rule_type = _parse_rule_type(row)
    event_name = _parse_event_name(row)
    attribute_filter = _parse_filter(row)
    count_parts = _parse_condition(row, OPERATOR_C, TARGET_C, _parse_count_target)
    sum_parts = _parse_condition(row, OPERATOR_V, TARGET_V, _parse_sum_target)
    metric_name = None if _is_none(row[METRIC_NAME]) else row[METRIC_NAME]
    count_condition = CountCondition(*count_parts) if count_parts else None
    sum_condition = SumCondition(*sum_parts, metric_name) if sum_parts else None
    if metric_name is not None and _is_none(row[OPERATOR_V]):
        row.problem(METRIC_NAME, f"{cell_excerpt(metric_name)} is set but the rule has no sum condition",
                    f"set {row.labels[OPERATOR_V]}/{row.labels[TARGET_V]}, or clear {row.labels[METRIC_NAME]}")
    if all(_is_none(row[column]) for column in (OPERATOR_C, TARGET_C, OPERATOR_V, TARGET_V)):
        row.problem(OPERATOR_C, "both conditions are na, so the rule can never be met",
                    f"set {row.labels[OPERATOR_C]}/{row.labels[TARGET_C]} "
                    f"or {row.labels[OPERATOR_V]}/{row.labels[TARGET_V]}")
    reset = _parse_reset(row, rule_type)
    start_date, finish_date = _parse_dates(row, rule_type)
    window_days = _parse_window(row, rule_type)
    rule_id = "" if _is_none(row[RULE_ID]) else row[RULE_ID]
    if rule_id and not _RULE_ID.fullmatch(rule_id):
        row.problem(RULE_ID, f"{cell_excerpt(rule_id)} is not a usable rule id",
                    "use up to 64 letters, digits, _ . or -, starting with a letter or digit")
    elif rule_id in RESERVED_RULE_IDS:
        # Its counter keys `meta#<user>` would be other rules' activation records (`meta#<rule_id>`).
        row.problem(RULE_ID, f"{cell_excerpt(rule_id)} is reserved for the engine's own records",
                    "choose another rule id")
    if len(row.problems) > before:
        return None
    assert rule_type is not None and event_name is not None
    rule = Rule(
        rule_id=rule_id,
        rule_type=rule_type,
        event_name=event_name,
        attribute_filter=attribute_filter,
        count_condition=count_condition,
        sum_condition=sum_condition,
        reset=reset,
        start_date=start_date,
        finish_date=finish_date,
        window_days=window_days,
        action_name="" if _is_none(row[ACTION_NAME]) else row[ACTION_NAME],
    )
    if not _check_action_name(row, rule):
        return None
    return rule if rule_id else replace(rule, rule_id=content_rule_id(rule))


def _parse_rule_type(row: _Row) -> RuleType | None:
    cell = row[RULE_TYPE]
    try:
        return RuleType(cell.lower())
    except ValueError:
        what = "rule type is missing" if _is_none(cell) else f"{cell_excerpt(cell)} is not a rule type"
        row.problem(RULE_TYPE, what, "use aggregator, date or window")
        return None


def _parse_event_name(row: _Row) -> str | None:
    cell = row[EVENT_NAME]
    if _is_none(cell):
        row.problem(EVENT_NAME, "event name is missing", "name the event to count, e.g. _email.open")
        return None
    if cell.lower().startswith(ENGINE_EVENT_PREFIX):
        row.problem(EVENT_NAME, f"{cell_excerpt(cell)} is an event the engine emits itself, which is never counted",
                    "count the event that leads to it instead")
        return None
    return cell


def _parse_filter(row: _Row) -> AttributeFilter | None:
    name, value = row[ATTRIBUTE_NAME], row[ATTRIBUTE_VALUE]
    if _is_none(name) and _is_none(value):
        return None
    if _is_none(value):
        row.problem(ATTRIBUTE_VALUE, f"is missing while {row.labels[ATTRIBUTE_NAME]} is {cell_excerpt(name)}",
                    "give both, or na in both")
        return None
    if _is_none(name):
        row.problem(ATTRIBUTE_NAME, f"is missing while {row.labels[ATTRIBUTE_VALUE]} is {cell_excerpt(value)}",
                    "give both, or na in both")
        return None
    return AttributeFilter(name, value)


def _parse_condition(
    row: _Row, operator_column: str, target_column: str, parse_target: Callable[[_Row, str, str], Any]
) -> tuple[Operator, Any] | None:
    operator_cell, target_cell = row[operator_column], row[target_column]
    if _is_none(operator_cell):
        if not _is_none(target_cell):
            row.problem(target_column, f"target {cell_excerpt(target_cell, quoted=False)} has no operator",
                        f"set {row.labels[operator_column]} to equal, greater or at_least, or write na here")
        return None
    try:
        operator = Operator(re.sub(r"[\s-]+", "_", operator_cell.lower()))
    except ValueError:
        row.problem(operator_column, f"{cell_excerpt(operator_cell)} is not an operator", "use equal, greater, at_least or na")
        if not _is_none(target_cell, _NO_TARGET):
            parse_target(row, target_column, target_cell)  # report a bad target in the same pass
        return None
    if _is_none(target_cell, _NO_TARGET):
        row.problem(target_column, f"target is missing for operator {operator.value}",
                    f"write a number, or na in {row.labels[operator_column]}")
        return None
    target = parse_target(row, target_column, target_cell)
    if target is None:
        return None
    if operator is Operator.EQUAL and target_column == TARGET_C and target == 0:
        row.problem(target_column, "count equal 0 can never be met, as a counted event makes the count 1",
                    "use a target of 1 or more")
        return None
    return operator, target


def _parse_number(cell: str) -> Decimal | None:
    try:
        number = Decimal(cell)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _parse_count_target(row: _Row, column: str, cell: str) -> int | None:
    number = _parse_number(cell)
    if number is None or number != number.to_integral_value():
        row.problem(column, f"{cell_excerpt(cell)} is not a whole number", "write a count, e.g. 3")
        return None
    if number < 0:
        row.problem(column, f"count target {cell_excerpt(cell, quoted=False)} is negative", "use 0 or more")
        return None
    return int(number)


def _parse_sum_target(row: _Row, column: str, cell: str) -> Decimal | None:
    number = _parse_number(cell)
    if number is None:
        row.problem(column, f"{cell_excerpt(cell)} is not a number", "write a number, e.g. 25.50")
    return number


def _parse_reset(row: _Row, rule_type: RuleType | None) -> bool:
    cell = row[RESET].lower()
    if cell in _YES:
        if rule_type is RuleType.WINDOW:
            row.problem(RESET, "a window rule keeps a user while the rule holds and cannot reset",
                        "write no, or use an aggregator rule")
        # Every date rule qualifies a user at most once, whatever the seed sheet says here.
        return rule_type is RuleType.AGGREGATOR
    if cell in _NO or _is_none(cell):
        return False
    row.problem(RESET, f"{cell_excerpt(row[RESET])} is not yes or no", "write yes or no")
    return False


def _parse_dates(row: _Row, rule_type: RuleType | None) -> tuple[date | None, date | None]:
    dates = {}
    for column in (START_DATE, FINISH_DATE):
        cell = row[column]
        if _is_none(cell, _NO_DATE):
            dates[column] = None
            if rule_type is RuleType.DATE:
                row.problem(column, f"a date rule needs a {row.labels.get(column, column)}",
                            "write the day as YYYY-MM-DD")
            continue
        try:
            if not _ISO_DATE.fullmatch(cell):
                raise ValueError
            dates[column] = date.fromisoformat(cell)
        except ValueError:
            row.problem(column, f"{cell_excerpt(cell)} is not a date", "write YYYY-MM-DD, or 9999-99-99 for none")
            dates[column] = None
            continue
        if rule_type is not None and rule_type is not RuleType.DATE:
            row.problem(column, f"a date only applies to date rules, not {rule_type.value}",
                        f"set {row.labels[RULE_TYPE]} to date, or write 9999-99-99")
    start, finish = dates[START_DATE], dates[FINISH_DATE]
    if start and finish and finish < start:
        row.problem(FINISH_DATE, f"{finish.isoformat()} is before {row.labels[START_DATE]} {start.isoformat()}",
                    "swap the dates")
    return (start, finish) if rule_type is RuleType.DATE else (None, None)


def _parse_window(row: _Row, rule_type: RuleType | None) -> int | None:
    cell = row[WINDOW]
    if _is_none(cell):
        if rule_type is RuleType.WINDOW:
            row.problem(WINDOW, "a window rule needs a window", _WINDOW_FIX)
        return None
    if rule_type is not None and rule_type is not RuleType.WINDOW:
        row.problem(WINDOW, f"a window only applies to window rules, not {rule_type.value}",
                    f"set {row.labels[RULE_TYPE]} to window, or clear {row.labels.get(WINDOW, WINDOW)}")
        return None
    match = _WINDOW.fullmatch(cell)
    if not match or not 1 <= int(match.group(1)) <= MAX_WINDOW_DAYS:
        row.problem(WINDOW, f"{cell_excerpt(cell)} is not a window", _WINDOW_FIX)
        return None
    return int(match.group(1))


def _check_action_name(row: _Row, rule: Rule) -> bool:
    given = not _is_none(row[ACTION_NAME])
    name = rule.action_name
    if not _SAFE_NAME.fullmatch(name):
        what = cell_excerpt(name) if given else f"the derived action name {cell_excerpt(name)}"
        row.problem(ACTION_NAME, f"{what} is not a safe name",
                    "use up to 128 letters, digits, _ . : or -" + ("" if given else f" in {ACTION_NAME}"))
        return False
    if given and rule.action_kind is ActionKind.EVENT and not name.startswith(ENGINE_EVENT_PREFIX):
        # The engine skips only trk_ events; any other name would be counted again and could loop.
        row.problem(ACTION_NAME, f"{cell_excerpt(name)} is an event this resetting rule emits, so it must start with "
                                 f"{ENGINE_EVENT_PREFIX}", f"rename it to {ENGINE_EVENT_PREFIX}{name}")
        return False
    return True


def _check_unique_ids(ids: list[tuple[int, str, bool]], labels: dict[str, str], problems: list[Problem]) -> None:
    """Given ids are checked on every row, derived ones (identical rules) on the rows that parsed."""
    first_row: dict[str, int] = {}
    label = labels.get(RULE_ID, RULE_ID)
    for number, rule_id, given in ids:
        if rule_id not in first_row:
            first_row[rule_id] = number
        elif not given:
            problems.append(Problem(number, label, f"same rule as row {first_row[rule_id]}",
                                    "remove the duplicate row, or give it its own RuleId"))
        else:
            problems.append(Problem(number, label, f"rule id {cell_excerpt(rule_id)} is already used on row {first_row[rule_id]}",
                                    "give each rule its own id"))
