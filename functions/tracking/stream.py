"""Writing records to the Kinesis data stream with PutRecords: within its limits, and without losing any.

`KinesisWriter.put` splits records into requests of at most 500 records and 5 MiB (partition keys
included), re-sends only the entries a response reports as failed (`ErrorCode`, e.g. throughput
exceeded) with a short, bounded backoff, and raises `PutRecordsFailed` if some are still failing, so the
caller's own retry takes over instead of records being dropped silently. Errors of a whole request
(access denied, no such stream, …) propagate as botocore raised them.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

MAX_RECORDS_PER_REQUEST = 500
MAX_BYTES_PER_REQUEST = 5 * 1024 * 1024
MAX_BYTES_PER_RECORD = 1024 * 1024  # data + partition key
MAX_PARTITION_KEY_CHARS = 256


def partition_key(identity: str) -> str:
    """The stream's partition key for a user (or endpoint) id: the id itself, so one user's records stay in
    order on one shard, or, for an id longer than Kinesis accepts, a stable digest of it."""
    if not identity:
        raise ValueError("partition key: the identity is empty")
    if len(identity) <= MAX_PARTITION_KEY_CHARS:
        return identity
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record to write: its bytes and its partition key."""

    partition_key: str
    data: bytes

    def __post_init__(self) -> None:
        if not 1 <= len(self.partition_key) <= MAX_PARTITION_KEY_CHARS:
            raise ValueError(f"partition_key: expected 1..{MAX_PARTITION_KEY_CHARS} characters, "
                             f"got {len(self.partition_key)}")
        if self.size > MAX_BYTES_PER_RECORD:
            raise ValueError(f"record of {self.size} bytes is over the Kinesis limit of {MAX_BYTES_PER_RECORD}")

    @property
    def size(self) -> int:
        """Bytes counted against the request and record limits."""
        return len(self.data) + len(self.partition_key.encode("utf-8"))


class PutRecordsFailed(RuntimeError):
    """Some records were still refused after every attempt; `error_codes` holds one code per refused record."""

    def __init__(self, error_codes: Sequence[str], attempts: int):
        self.error_codes = tuple(error_codes)
        super().__init__(f"{len(self.error_codes)} record(s) still failing after {attempts} PutRecords attempts "
                         f"({', '.join(sorted(set(self.error_codes)))})")


def chunk_records(records: Sequence[StreamRecord], *, max_records: int = MAX_RECORDS_PER_REQUEST,
                  max_bytes: int = MAX_BYTES_PER_REQUEST) -> Iterator[list[StreamRecord]]:
    """Consecutive runs of `records`, in order, each within one request's limits."""
    chunk: list[StreamRecord] = []
    chunk_bytes = 0
    for record in records:
        if chunk and (len(chunk) == max_records or chunk_bytes + record.size > max_bytes):
            yield chunk
            chunk, chunk_bytes = [], 0
        chunk.append(record)
        chunk_bytes += record.size
    if chunk:
        yield chunk


class KinesisWriter:
    """Writes records to one stream (by ARN) through a boto3 Kinesis client."""

    def __init__(self, client: Any, stream_arn: str, *, max_attempts: int = 4, base_delay_seconds: float = 0.1,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts: expected at least 1, got {max_attempts}")
        self._client = client
        self._stream_arn = stream_arn
        self._max_attempts = max_attempts
        self._base_delay = base_delay_seconds
        self._sleep = sleep

    def put(self, records: Sequence[StreamRecord]) -> None:
        """Write every record or raise; order is kept within a request, as Kinesis keeps it per shard."""
        for chunk in chunk_records(records):
            self._put_chunk(chunk)

    def _put_chunk(self, chunk: list[StreamRecord]) -> None:
        pending = chunk
        for attempt in range(1, self._max_attempts + 1):
            response = self._client.put_records(
                StreamARN=self._stream_arn,
                Records=[{"Data": record.data, "PartitionKey": record.partition_key} for record in pending],
            )
            # Results are positional: entry i answers request record i; failed entries carry an ErrorCode.
            failed = [(record, result["ErrorCode"]) for record, result in zip(pending, response["Records"])
                      if result.get("ErrorCode")]
            if not failed:
                return
            if attempt == self._max_attempts:
                raise PutRecordsFailed([code for _, code in failed], attempt)
            # Short and bounded: the Pinpoint caller waits at most 15 seconds for the whole invocation.
            self._sleep(self._base_delay * 2 ** (attempt - 1))
            pending = [record for record, _ in failed]
