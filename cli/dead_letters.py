"""One pass over an SQS dead-letter queue, shared by the replay commands (`actions replay`, `ses replay`).

Each message is handed out at most once per run, then either `done` (deleted: it was redelivered or is no
longer needed) or `keep` (left in the queue; made visible again when the pass ends, so the next run sees it at
once rather than after the visibility timeout). A run longer than the visibility timeout sees its kept
messages again: the pass then has read them all and stops.
"""

from __future__ import annotations

from typing import Any, Iterator

VISIBILITY_TIMEOUT_S = 300  # long enough that one run never reads the same message twice
_MAX_PER_RECEIVE = 10  # ReceiveMessage's MaxNumberOfMessages limit


class DeadLetterPass:
    """`messages()` yields the queue's messages (at most `max_messages`); `done`/`keep` settle each one;
    `release()` makes the kept ones visible again."""

    def __init__(self, sqs: Any, queue_url: str, *, max_messages: int | None = None,
                 with_attributes: bool = False) -> None:
        self._sqs, self._queue_url, self._max = sqs, queue_url, max_messages
        self._attributes = {"MessageAttributeNames": ["All"]} if with_attributes else {}
        self._kept: list[str] = []

    def messages(self) -> Iterator[dict[str, Any]]:
        handed_out: set[str] = set()
        while self._max is None or len(handed_out) < self._max:
            batch = _MAX_PER_RECEIVE if self._max is None else min(_MAX_PER_RECEIVE, self._max - len(handed_out))
            received = self._sqs.receive_message(QueueUrl=self._queue_url, MaxNumberOfMessages=batch,
                                                 WaitTimeSeconds=1, VisibilityTimeout=VISIBILITY_TIMEOUT_S,
                                                 **self._attributes).get("Messages", [])
            fresh = [message for message in received if message["MessageId"] not in handed_out]
            if not fresh:
                return
            for message in fresh:
                handed_out.add(message["MessageId"])
                yield message

    def done(self, message: dict[str, Any]) -> None:
        self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])

    def keep(self, message: dict[str, Any]) -> None:
        self._kept.append(message["ReceiptHandle"])

    def release(self) -> None:
        for receipt in self._kept:
            self._sqs.change_message_visibility(QueueUrl=self._queue_url, ReceiptHandle=receipt, VisibilityTimeout=0)
        self._kept.clear()
