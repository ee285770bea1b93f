"""Running the backfill's queries: the small interface the backfill starts and reads them through, and its
Amazon Athena implementation (tests use DuckDB behind the same interface)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from botocore.exceptions import ClientError

from functions.rules.dynamo import error_code



@dataclass(frozen=True, slots=True)
class QueryState:
    """Where a query stands: QUEUED / RUNNING (still going when the wait ended), SUCCEEDED, FAILED, CANCELLED."""

    state: str
    reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("SUCCEEDED", "FAILED", "CANCELLED")


class ResultsGone(Exception):
    """A finished query's results can no longer be read (the result objects expired, or Athena forgot it)."""


class LakeQueries(Protocol):
    """Running a query over the lake."""

    def start(self, sql: str, *, token: str) -> str:
        """Start `sql`; the same `token` again returns the same query instead of starting another."""

    def wait(self, query_id: str, *, timeout_seconds: float) -> QueryState: ...

    def rows(self, query_id: str) -> Iterator[tuple[str | None, ...]]:
        """The result rows (header excluded, in the query's ORDER BY), every value as text or None; raises
        `ResultsGone` when a finished query's results cannot be read any more."""


class AthenaLakeQueries:
    """Amazon Athena, through a boto3 `athena` client."""

    def __init__(self, client: Any, *, database: str, workgroup: str, output_location: str | None = None,
                 poll_seconds: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client, self._database, self._workgroup = client, database, workgroup
        self._output_location, self._poll_seconds = output_location, poll_seconds
        self._sleep, self._clock = sleep, clock

    def start(self, sql: str, *, token: str) -> str:
        request: dict[str, Any] = {"QueryString": sql, "ClientRequestToken": token, "WorkGroup": self._workgroup,
                                   "QueryExecutionContext": {"Database": self._database}}
        if self._output_location:
            request["ResultConfiguration"] = {"OutputLocation": self._output_location}
        return self._client.start_query_execution(**request)["QueryExecutionId"]

    def wait(self, query_id: str, *, timeout_seconds: float) -> QueryState:
        deadline = self._clock() + timeout_seconds
        while True:
            status = self._client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
            state = QueryState(status["State"], status.get("StateChangeReason"))
            left = deadline - self._clock()
            if state.finished or left <= 0:
                return state
            self._sleep(min(self._poll_seconds, left))

    def rows(self, query_id: str) -> Iterator[tuple[str | None, ...]]:
        # GetQueryResults pages (NextToken, up to 1,000 rows each) through the result file Athena wrote to the
        # workgroup's result location, in the query's ORDER BY; once that object expired (the lake bucket's
        # lifecycle, queryResultsRetentionDays) or the query left Athena's history (45 days), it is refused.
        header = True
        pages = self._client.get_paginator("get_query_results").paginate(QueryExecutionId=query_id)
        try:
            for page in pages:
                for row in page["ResultSet"]["Rows"]:
                    if header:  # the first row of the first page holds the column names
                        header = False
                        continue
                    yield tuple(cell.get("VarCharValue") for cell in row["Data"])
        except ClientError as error:
            if error_code(error) in ("InvalidRequestException", "ResourceNotFoundException"):
                raise ResultsGone(f"query {query_id}: {error}") from error
            raise
