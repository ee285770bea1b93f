"""PutRecords within its limits: chunking, partition keys, and bounded retries of only the failed entries."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.tracking.stream import (
    MAX_BYTES_PER_RECORD,
    MAX_BYTES_PER_REQUEST,
    KinesisWriter,
    PutRecordsFailed,
    StreamRecord,
    chunk_records,
    partition_key,
)

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/s"


def record(n: int, size: int = 10) -> StreamRecord:
    key = f"k{n}"
    return StreamRecord(partition_key=key, data=b"x" * (size - len(key)))


def test_chunks_hold_at_most_500_records():
    chunks = list(chunk_records([record(n) for n in range(1_201)]))
    assert [len(c) for c in chunks] == [500, 500, 201]


def test_chunks_hold_at_most_5_mib_including_partition_keys():
    big = [record(n, size=MAX_BYTES_PER_RECORD) for n in range(11)]  # 1 MiB each, key included
    chunks = list(chunk_records(big))
    assert [len(c) for c in chunks] == [5, 5, 1]
    assert all(sum(r.size for r in c) <= MAX_BYTES_PER_REQUEST for c in chunks)


@given(st.lists(st.integers(min_value=2, max_value=MAX_BYTES_PER_RECORD // 8), max_size=60),
       st.integers(min_value=1, max_value=20))
def test_chunking_keeps_every_record_in_order_within_limits(sizes, max_records):
    records = [StreamRecord(partition_key="k", data=b"x" * (size - 1)) for size in sizes]
    max_bytes = MAX_BYTES_PER_RECORD // 4
    chunks = list(chunk_records(records, max_records=max_records, max_bytes=max_bytes))
    assert [r for c in chunks for r in c] == records
    assert all(c and len(c) <= max_records for c in chunks)
    assert all(sum(r.size for r in c) <= max_bytes or len(c) == 1 for c in chunks)


def test_a_record_over_the_kinesis_limit_is_refused():
    with pytest.raises(ValueError, match="over the Kinesis limit"):
        StreamRecord(partition_key="k", data=b"x" * MAX_BYTES_PER_RECORD)


def test_partition_key_is_the_identity_or_a_stable_digest_of_a_long_one():
    assert partition_key("SofiaMartínez") == "SofiaMartínez"
    long_id = "u" * 300
    assert partition_key(long_id) == partition_key(long_id) != partition_key("v" * 300)
    assert len(partition_key(long_id)) == 64
    with pytest.raises(ValueError):
        partition_key("")


class ScriptedClient:
    """Answers PutRecords with scripted per-entry error codes (None = written) and records each request."""

    def __init__(self, *answers: list[str | None]):
        self.answers = list(answers)
        self.requests: list[list[dict[str, Any]]] = []

    def put_records(self, *, StreamARN: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        assert StreamARN == ARN
        self.requests.append(Records)
        codes = self.answers.pop(0)
        assert len(codes) == len(Records)
        return {"FailedRecordCount": sum(c is not None for c in codes),
                "Records": [{"ErrorCode": c, "ErrorMessage": "m"} if c else {"SequenceNumber": "1", "ShardId": "s"}
                            for c in codes]}


def test_only_failed_entries_are_retried_with_growing_delays():
    records = [record(n) for n in range(4)]
    client = ScriptedClient([None, "ProvisionedThroughputExceededException", None, "InternalFailure"],
                            [None, "InternalFailure"], [None])
    sleeps: list[float] = []

    KinesisWriter(client, ARN, sleep=sleeps.append).put(records)

    keys = [[entry["PartitionKey"] for entry in request] for request in client.requests]
    assert keys == [["k0", "k1", "k2", "k3"], ["k1", "k3"], ["k3"]]
    assert sleeps == [0.1, 0.2]


def test_gives_up_after_max_attempts_naming_the_error_codes():
    client = ScriptedClient(["InternalFailure", None], ["InternalFailure"], ["InternalFailure"])
    sleeps: list[float] = []

    with pytest.raises(PutRecordsFailed) as raised:
        KinesisWriter(client, ARN, max_attempts=3, sleep=sleeps.append).put([record(0), record(1)])

    assert raised.value.error_codes == ("InternalFailure",)
    assert len(client.requests) == 3 and sleeps == [0.1, 0.2]


def test_no_request_and_no_sleep_when_nothing_fails():
    client = ScriptedClient([None] * 3)
    sleeps: list[float] = []
    KinesisWriter(client, ARN, sleep=sleeps.append).put([record(n) for n in range(3)])
    KinesisWriter(client, ARN, sleep=sleeps.append).put([])
    assert len(client.requests) == 1 and sleeps == []
