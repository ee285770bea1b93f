"""The names and the query size Glue and Athena accept: one check, shared by every SQL builder and by the
stack config, so a name that a query would refuse is caught when config is parsed, not on every run.

- A Glue database or table name that Athena queries: 1–255 bytes, lower case
  (https://docs.aws.amazon.com/athena/latest/ug/tables-databases-columns-names.html); we also keep to
  letters, digits and `_`, which need no quoting anywhere (DDL, DML, IAM ARNs).
- An Athena workgroup name: `[a-zA-Z0-9._-]{1,128}` (the `WorkGroupName` pattern of the Athena API,
  https://docs.aws.amazon.com/athena/latest/APIReference/API_CreateWorkGroup.html).
- A query string: at most 262,144 bytes, not adjustable
  (https://docs.aws.amazon.com/athena/latest/ug/service-limits.html, "Query string length").

Names derived from the project and stack name (the user did not choose them) are *sanitised*
deterministically (`derived_lake_names`); names given explicitly (environment variables, arguments) are
*checked* and rejected with a message (`check_glue_name`, `check_workgroup_name`). Pulumi stack names may
hold `.`, `-` and `_` (https://www.pulumi.com/learn/building-with-pulumi/understanding-stacks), so `prod.eu` and `prod_eu`
derive the same names: keep such stacks in different accounts or regions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

MAX_GLUE_NAME_BYTES = 255
MAX_WORKGROUP_CHARS = 128
MAX_QUERY_BYTES = 262_144
"""Athena's query string limit (StartQueryExecution `QueryString`, 262,144 bytes)."""
EVENTS_TABLE = "events"

_GLUE_NAME = re.compile(r"[a-z0-9_]{1,255}")
_WORKGROUP = re.compile(r"[a-zA-Z0-9._-]{1,128}")
_NOT_GLUE = re.compile(r"[^a-z0-9_]")
_HASH_CHARS = 8


class InvalidName(ValueError):
    """A name Glue or Athena would refuse, or a query too long to send; the message says what to use."""


def glue_name_problem(name: object) -> str | None:
    """Why `name` is not a usable Glue database/table name (None: it is). Never longer than a short excerpt."""
    if not isinstance(name, str) or not _GLUE_NAME.fullmatch(name):
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:60]) + f"… ({len(str(name))} characters)"
        return (f"expected a Glue name Athena can query (1–{MAX_GLUE_NAME_BYTES} lower-case letters, digits "
                f"or _), got {shown}")
    return None


def check_glue_name(name: object, what: str) -> str:
    """`name` if it is a usable Glue database/table name, else `InvalidName` naming `what`."""
    problem = glue_name_problem(name)
    if problem:
        raise InvalidName(f"{what}: {problem}")
    return name  # type: ignore[return-value]


def check_workgroup_name(name: object, what: str) -> str:
    """`name` if Athena accepts it as a workgroup name, else `InvalidName` naming `what`."""
    if not isinstance(name, str) or not _WORKGROUP.fullmatch(name):
        raise InvalidName(f"{what}: expected an Athena workgroup name (1–{MAX_WORKGROUP_CHARS} letters, digits, "
                          f". _ or -), got {str(name)[:60]!r}")
    return name


def check_query_size(sql: str, what: str) -> str:
    """`sql` if Athena accepts a query string that long, else `InvalidName` (the text is never echoed)."""
    size = len(sql.encode("utf-8"))
    if size > MAX_QUERY_BYTES:
        raise InvalidName(f"{what}: the generated query is {size:,} bytes, more than the {MAX_QUERY_BYTES:,} "
                          "Athena accepts")
    return sql


def _bounded(name: str, limit: int) -> str:
    """`name` if it fits, else its first characters and a hash of the whole, so two long names stay apart."""
    if len(name.encode("utf-8")) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{name[:limit - _HASH_CHARS - 1]}_{digest}"


def sanitised_glue_name(text: str) -> str:
    """A Glue name from any text: lower-cased, every other character than a-z, 0-9 and _ turned into _,
    at most 255 bytes (a longer one keeps its first 246 characters and 8 hex of its hash)."""
    name = _NOT_GLUE.sub("_", text.lower()) or "_"
    return _bounded(name, MAX_GLUE_NAME_BYTES)


@dataclass(frozen=True, slots=True)
class LakeNames:
    """The lake's Glue database and table and the Athena workgroup of one stack."""

    database: str
    table: str
    workgroup: str

    def __post_init__(self) -> None:
        check_glue_name(self.database, "database")
        check_glue_name(self.table, "table")
        check_workgroup_name(self.workgroup, "workgroup")


def derived_lake_names(project: str, stack: str) -> LakeNames:
    """The names a stack's lake gets, from the project and stack name only. `my-stack` keeps the database name
    it always had (`engagement_loop_my_stack`); `prod.eu` becomes `engagement_loop_prod_eu`, where the dot
    used to make every interactions run fail; a name over a limit is cut and suffixed with a hash."""
    workgroup = re.sub(r"[^a-zA-Z0-9._-]", "-", f"{project}-{stack}")
    return LakeNames(database=sanitised_glue_name(f"{project}_{stack}"), table=EVENTS_TABLE,
                     workgroup=_bounded(workgroup, MAX_WORKGROUP_CHARS))
