"""The rules sheet as the studio edits it: a header and rows of cells, exactly as read from the CSV.

A `SheetModel` is immutable; every operation (`set_cell`, `add_row`, `copy_row`, `delete_row`, `move_row`,
`add_column`) returns a new one, so the web layer can keep an undo history by keeping models. The header's
columns stay as read (their case, their order, unknown ones too); cells stay as written (spaces included) until
edited, so a sheet loaded and written back without edits is the same text (`to_csv`: same separator, line
ends, byte-order mark and final line end; quoting as Python's `csv` writes it, which is what spreadsheets
write — a cell quoted without need in the file comes back unquoted).

Model row `i` is sheet row `i + 2` (the header is row 1), as `rules check` numbers rows: a blank row is kept
(it is skipped by the parser but counted), and a cell holding a line break is still one row.

`check()` runs the sheet's own parser (`functions/rules/sheet.py` `check_rules_sheet`) over `to_csv()`, so its
messages are exactly what `python -m cli rules check` prints for the saved file. The parser rejects a sheet
whole; to preview the rows that are fine, `check()` parses the sheet a second time with the rows that have a
problem blanked out (and unknown header columns, the only header problem that does not stop the rows being
read, left out): what it accepts are the valid rows' rules, with their row numbers unchanged. Cross-row
problems (a RuleId used twice, the same rule twice) are reported by the parser on the later row, so the first
stays valid.

Copying a row: a row with a RuleId gets a fresh one, `<RuleId>-copy` (then `-copy2`, `-copy3`…), unique in the
sheet — the copy is a new rule with its own counters and the original keeps its own. A row without a RuleId is
copied without one: until one of the two is edited they are the same rule, and the check says so ("same rule
as row N").
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

from functions.rules.model import Rule, RuleSet
from functions.rules.sheet import (
    COLUMNS,
    KEY,
    MAX_RULE_ID_CHARS,
    MAX_RULES,
    MAX_SHEET_BYTES,
    RULE_ID,
    Problem,
    RulesSheetError,
    cell_excerpt,
    cell_limit,
    check_rules_sheet,
    detect_delimiter,
)

EXTENSION_COLUMNS = ("RuleId", "MetricName", "Window", "ActionName")
"""Columns beyond the seed's that a sheet may lack and the studio offers to add."""
SEED_COLUMNS = ("RuleType", "EventName", "AttributeName", "AttributeValue", "Operator-C", "Target-C", "Operator-V",
                "Target-V", "ResetWhenReachTarget", "StartDate", "FinishDate")
NEW_SHEET_COLUMNS = ("RuleId", *SEED_COLUMNS, "MetricName", "Window", "ActionName")
"""The header of a sheet started in the studio."""

CHOICES: Mapping[str, tuple[str, ...]] = {
    "RuleType": ("aggregator", "date", "window"),
    "Operator-C": ("equal", "greater", "at_least", "na"),
    "Operator-V": ("equal", "greater", "at_least", "na"),
    "ResetWhenReachTarget": ("yes", "no"),
}
"""The dropdowns: the values the sheet's parser accepts in these columns (docs/rules.md, "Columns")."""
DATE_COLUMNS = ("StartDate", "FinishDate")
MAX_BLANK_ROWS = 100
"""Blank rows a sheet may hold beside its rules (the parser skips them, but each costs every check)."""

_BY_LOWER = {column.lower(): column for column in COLUMNS}
_COLUMN_LETTERS = re.compile(r"([A-Z]{1,3})(?: \(.*\))?")


class EditRefused(ValueError):
    """An operation the model will not do (a cell too long, a row that does not exist…); `str()` says why in
    words a person can act on, quoting at most a short excerpt of what was sent."""


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """How the file was written, so that it is written back the same way."""

    delimiter: str = ","
    line_end: str = "\n"
    bom: bool = False
    final_line_end: bool = True


@dataclass(frozen=True, slots=True)
class RowCheck:
    """What the check says about one model row."""

    index: int
    """The model row (from 0)."""
    number: int
    """The sheet row, as messages name it (index + 2)."""
    problems: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    rule: Rule | None
    """The row's rule when the row has no problem (its id: the RuleId, else the one made from its content)."""
    blank: bool = False


@dataclass(frozen=True, slots=True)
class SheetCheck:
    """The outcome of `SheetModel.check()`."""

    accepted: bool
    """Whether a deployment would take the sheet (no problem at all)."""
    problems: tuple[Problem, ...]
    """Every problem, in the parser's order (the header's first, then row by row)."""
    warnings: tuple[Problem, ...]
    rows: tuple[RowCheck, ...]
    rules: RuleSet
    """The valid rows' rules, in sheet order: all of them when `accepted`."""
    header_problems: tuple[Problem, ...] = field(default=())

    def lines(self, source_name: str) -> list[str]:
        """What `python -m cli rules check` prints on stderr for the sheet saved as `source_name`."""
        if not self.accepted:
            return [f"{source_name}: {problem}" for problem in self.problems] + [
                f"{source_name}: {len(self.problems):,} problem(s); the sheet was not accepted"]
        return [f"{source_name}: warning: {warning}" for warning in self.warnings]

    def rule_rows(self) -> dict[str, int]:
        """Rule id → model row index, for the valid rows."""
        return {row.rule.rule_id: row.index for row in self.rows if row.rule is not None}


@dataclass(frozen=True, slots=True)
class SheetModel:
    """A rules sheet's header and rows of cells (see the module docstring)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    format: CsvFormat = CsvFormat()

    # --- reading and writing ---------------------------------------------------------------------------

    @classmethod
    def from_csv(cls, text: str) -> SheetModel:
        """Read CSV text as the sheet's parser reads it (`detect_delimiter` on the header line, then `csv`).

        Raises `EditRefused` for a text the parser refuses before reading rows (too large, not CSV), with its
        message."""
        bom = text.startswith("\ufeff")
        body = text.removeprefix("\ufeff")
        delimiter = detect_delimiter(body, frozenset(_BY_LOWER))
        try:
            if len(text.encode("utf-8", errors="replace")) > MAX_SHEET_BYTES:
                _raise_parser_refusal(text)
            records = list(csv.reader(io.StringIO(body, newline=""), delimiter=delimiter))
        except csv.Error:
            _raise_parser_refusal(body)
            raise
        line_end = "\r\n" if "\r\n" in body else ("\r" if "\r" in body and "\n" not in body else "\n")
        fmt = CsvFormat(delimiter, line_end, bom, body.endswith(("\n", "\r")) or not body)
        header = tuple(records[0]) if records else ()
        return cls(header, tuple(tuple(record) for record in records[1:]), fmt)

    @classmethod
    def new(cls, columns: Iterable[str] = NEW_SHEET_COLUMNS) -> SheetModel:
        """An empty sheet with `columns` as its header."""
        return cls(tuple(columns), ())

    def to_csv(self) -> str:
        """The sheet as CSV text in its own format: the header's columns in their order, every row's cells."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=self.format.delimiter, lineterminator=self.format.line_end,
                            quoting=csv.QUOTE_MINIMAL)
        if self.header or self.rows:
            writer.writerow(self.header)
            writer.writerows(self.rows)
        text = buffer.getvalue()
        if text and not self.format.final_line_end:
            text = text[: -len(self.format.line_end)]
        return ("\ufeff" if self.format.bom else "") + text

    # --- columns ---------------------------------------------------------------------------------------

    @property
    def columns(self) -> tuple[str | None, ...]:
        """Per header cell, the sheet column it names (canonical spelling), None for an unknown or empty one."""
        return tuple(_BY_LOWER.get(label.strip().lower()) for label in self.header)

    def column_index(self, column: str | int) -> int:
        """The header position of `column`: a position, a sheet column name (any case) or a header label."""
        if isinstance(column, int):
            if not 0 <= column < len(self.header):
                raise EditRefused(f"there is no column {column + 1} (the sheet has {len(self.header)})")
            return column
        wanted = column.strip().lower()
        for index, label in enumerate(self.header):
            if label.strip().lower() == wanted:
                return index
        raise EditRefused(f"the sheet has no column {cell_excerpt(column)}"
                          + (" (add it first)" if wanted in _BY_LOWER else ""))

    def has_column(self, column: str) -> bool:
        return any(label.strip().lower() == column.strip().lower() for label in self.header)

    def addable_columns(self) -> tuple[str, ...]:
        """Sheet columns the header lacks, extension columns first."""
        missing = [c for c in (*EXTENSION_COLUMNS, *COLUMNS) if c != KEY and not self.has_column(c)]
        return tuple(dict.fromkeys(missing))

    def add_column(self, column: str) -> SheetModel:
        """Append the sheet column `column` (canonical name, any case) to the header; rows are unchanged (an
        absent cell reads as empty)."""
        name = _BY_LOWER.get(column.strip().lower())
        if name is None or name == KEY:
            raise EditRefused(f"{cell_excerpt(column)} is not a column the studio can add; "
                              f"add one of {', '.join(self.addable_columns()) or 'none (all are there)'}")
        if self.has_column(name):
            raise EditRefused(f"the sheet already has a {name} column")
        return replace(self, header=(*self.header, name))

    # --- cells and rows --------------------------------------------------------------------------------

    def cell(self, row: int, column: str | int) -> str:
        cells = self.rows[self._row(row)]
        index = self.column_index(column)
        return cells[index] if index < len(cells) else ""

    def set_cell(self, row: int, column: str | int, value: str) -> SheetModel:
        """Set one cell. A value longer than the column's cells may be (`sheet.cell_limit`) is refused, as
        is one with a NUL character (no spreadsheet writes one)."""
        row, index = self._row(row), self.column_index(column)
        canonical = self.columns[index] or KEY
        limit = cell_limit(canonical)
        if not isinstance(value, str):
            raise EditRefused("a cell holds text")
        if len(value) > limit:
            raise EditRefused(f"{cell_excerpt(value)} is longer than the {limit:,} characters this column's cells may "
                              f"have (shorten it to at most {limit:,} characters)")
        if "\x00" in value:
            raise EditRefused("a cell cannot hold a NUL character")
        cells = list(self.rows[row])
        cells.extend([""] * (index + 1 - len(cells)))
        cells[index] = value
        return self._with_row(row, tuple(cells))._within_size()

    def add_row(self, at: int | None = None, values: Mapping[str, str] | None = None) -> SheetModel:
        """Insert an empty row at `at` (default: at the end), with `values` (column → text) set in it."""
        self._room_for_one_more()
        at = len(self.rows) if at is None else at
        if not 0 <= at <= len(self.rows):
            raise EditRefused(f"cannot insert at row {at + 2}: the sheet has rows 2 to {len(self.rows) + 1}")
        model = replace(self, rows=(*self.rows[:at], ("",) * len(self.header), *self.rows[at:]))
        for column, value in (values or {}).items():
            model = model.set_cell(at, column, value)
        return model._within_size()

    def copy_row(self, row: int) -> SheetModel:
        """Insert a copy of `row` below it; a RuleId becomes a fresh unique one (module docstring)."""
        row = self._row(row)
        self._room_for_one_more()
        cells = self.rows[row]
        model = replace(self, rows=(*self.rows[: row + 1], cells, *self.rows[row + 1:]))
        if self.has_column(RULE_ID):
            given = model.cell(row, RULE_ID).strip()
            if given and given.lower() not in ("na", "999"):
                model = model.set_cell(row + 1, RULE_ID, self._fresh_rule_id(given))
        return model._within_size()

    def delete_row(self, row: int) -> SheetModel:
        row = self._row(row)
        return replace(self, rows=(*self.rows[:row], *self.rows[row + 1:]))

    def move_row(self, row: int, to: int) -> SheetModel:
        """Move `row` so that it ends up at position `to` (both model indexes)."""
        row = self._row(row)
        if not 0 <= to < len(self.rows):
            raise EditRefused(f"cannot move to row {to + 2}: the sheet has rows 2 to {len(self.rows) + 1}")
        rows = list(self.rows)
        rows.insert(to, rows.pop(row))
        return replace(self, rows=tuple(rows))

    def rule_ids(self) -> tuple[str, ...]:
        """The RuleId cells as written (stripped), one per row ("" without a RuleId column)."""
        if not self.has_column(RULE_ID):
            return ("",) * len(self.rows)
        return tuple(self.cell(row, RULE_ID).strip() for row in range(len(self.rows)))

    def pin_rule_ids(self) -> SheetModel:
        """Write, in each valid row without a RuleId, the id it is known by now (made from its content), adding
        a RuleId column if there is none: nothing changes for the engine (same ids, same counters), and from
        then on editing the rule keeps its counters (docs/rules.md, "RuleId")."""
        check = self.check()
        model = self if self.has_column(RULE_ID) else self.add_column(RULE_ID)
        for row in check.rows:
            if row.rule is not None and model.cell(row.index, RULE_ID).strip().lower() in ("", "na", "999"):
                model = model.set_cell(row.index, RULE_ID, row.rule.rule_id)
        return model

    def _fresh_rule_id(self, given: str) -> str:
        taken = set(self.rule_ids())
        for number in range(1, MAX_RULES + 2):
            suffix = "-copy" if number == 1 else f"-copy{number}"
            candidate = given[: MAX_RULE_ID_CHARS - len(suffix)] + suffix
            if candidate not in taken:
                return candidate
        raise AssertionError("more copies than rows")  # pragma: no cover - bounded by MAX_RULES

    def _row(self, row: int) -> int:
        if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row < len(self.rows):
            raise EditRefused(f"there is no row {row + 2 if isinstance(row, int) else cell_excerpt(str(row))}: the sheet "
                              f"has rows 2 to {len(self.rows) + 1}")
        return row

    def _with_row(self, row: int, cells: tuple[str, ...]) -> SheetModel:
        return replace(self, rows=(*self.rows[:row], cells, *self.rows[row + 1:]))

    def _room_for_one_more(self) -> None:
        if sum(1 for cells in self.rows if not _blank(cells)) >= MAX_RULES:
            raise EditRefused(f"the sheet already has {MAX_RULES:,} rules, the most one sheet may hold "
                              "(remove rules that are no longer needed)")
        if len(self.rows) >= MAX_RULES + MAX_BLANK_ROWS:
            raise EditRefused(f"the sheet already has {len(self.rows):,} rows, {MAX_RULES:,} rules and "
                              f"{MAX_BLANK_ROWS:,} blank rows at most (delete empty rows)")

    def _within_size(self) -> SheetModel:
        """This model, if its CSV fits a sheet file; `EditRefused` otherwise (every edit ends here, so a session
        can never build a sheet it could not save)."""
        size = len(self.to_csv().encode("utf-8"))
        if size > MAX_SHEET_BYTES:
            raise EditRefused(f"this edit would make the sheet {size:,} bytes, more than the {MAX_SHEET_BYTES:,} a "
                              "rules sheet may have (shorten cells or remove rows)")
        return self

    # --- checking --------------------------------------------------------------------------------------

    def check(self) -> SheetCheck:
        """Every problem and warning exactly as `rules check` reports them, per row, and the valid rows' rules
        (module docstring: how the valid rows are found when others are bad)."""
        try:
            checked = check_rules_sheet(self.to_csv(), source_name="")
        except RulesSheetError as error:
            problems = tuple(error.problems)
            bad_rows = {problem.row - 2 for problem in problems if problem.row >= 2}
            try:
                reduced = check_rules_sheet(self._without(bad_rows).to_csv(), source_name="")
            except RulesSheetError:
                rules, warnings = (), ()  # the header itself stops the rows being read
            else:
                rules = reduced.rules.rules
                warnings = tuple(w for w in reduced.warnings if w.row >= 2)  # not "0 rules": rows are bad
                kept = sum(1 for i, cells in enumerate(self.rows) if i not in bad_rows and not _blank(cells))
                if len(rules) != kept:  # never seen; rather no preview than a rule shown on the wrong row
                    rules, warnings = (), ()
            return self._outcome(False, problems, warnings, rules, bad_rows)
        return self._outcome(True, (), checked.warnings, checked.rules.rules, set())

    def _without(self, bad_rows: set[int]) -> SheetModel:
        """The sheet with `bad_rows` blanked and unknown header columns removed (row numbers unchanged)."""
        keep = [index for index, label in enumerate(self.header)
                if not label.strip() or label.strip().lower() in _BY_LOWER]
        width = len(self.header)

        def kept(cells: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(cells[i] for i in keep if i < len(cells)) + tuple(cells[width:])

        rows = tuple(() if index in bad_rows else kept(cells) for index, cells in enumerate(self.rows))
        return SheetModel(kept(self.header), rows, self.format)

    def _outcome(self, accepted: bool, problems: tuple[Problem, ...], warnings: tuple[Problem, ...],
                 rules: tuple[Rule, ...], bad_rows: set[int]) -> SheetCheck:
        parsed = iter(rules)
        rows = []
        for index, cells in enumerate(self.rows):
            number = index + 2
            blank = _blank(cells)
            rule = None if blank or index in bad_rows else next(parsed, None)
            rows.append(RowCheck(index, number, tuple(p for p in problems if p.row == number),
                                 tuple(w for w in warnings if w.row == number), rule, blank))
        return SheetCheck(accepted, problems, warnings, tuple(rows), RuleSet(rules),
                          tuple(p for p in problems if p.row == 1))

    def problem_column(self, problem: Problem) -> int | None:
        """The header position a problem points at (for showing it at its cell), None when it names no column
        of the header (a missing column, the whole sheet)."""
        if problem.column is None:
            return None
        for index, label in enumerate(self.header):
            if label.strip() == problem.column:
                return index
        match = _COLUMN_LETTERS.fullmatch(problem.column)
        if match:
            index = 0
            for letter in match.group(1):
                index = index * 26 + ord(letter) - ord("A") + 1
            return index - 1
        return None


def _blank(cells: tuple[str, ...]) -> bool:
    return not any(cell.strip() for cell in cells)


def _raise_parser_refusal(text: str) -> None:
    """The parser's own refusal of a text it cannot read at all (too large; not CSV), as `EditRefused`."""
    try:
        check_rules_sheet(text, source_name="")
    except RulesSheetError as error:
        raise EditRefused("; ".join(str(problem) for problem in error.problems[:1])) from None
