"""moto answering one request at a time, while the code under test sends them from several threads.

The aggregator writes a batch's (rule, user) groups from a thread pool (functions/rules/aggregator.py,
GROUP_CONCURRENCY). DynamoDB serves concurrent requests; moto does not promise to: its `transact_write_items`
deep-copies the tables it writes and, when the transaction is cancelled, puts the copies back — so a write
another thread made in between is lost. `serialised_moto()` holds one lock around moto's request dispatch,
`BotocoreStubber.process_request` (moto 5: the `before-send` handler of every mocked client goes through it,
and so does the `responses` callback for plain HTTP), for as long as it is active. The threads still
interleave: between two requests, around every request's botocore work (serialise, sign, parse), and in
whatever order the pool runs them; only moto's own handling of one request is never concurrent with another's.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Iterator


@contextlib.contextmanager
def serialised_moto() -> Iterator[None]:
    """While active, moto handles one request at a time (a re-entrant lock: a handler may call moto again)."""
    from moto.core import models

    stubber = models.botocore_stubber
    if "process_request" in vars(stubber):  # already serialised by an outer call
        yield
        return
    lock = threading.RLock()
    dispatch = stubber.process_request

    @functools.wraps(dispatch)
    def process_request(request: Any) -> Any:
        with lock:
            return dispatch(request)

    stubber.process_request = process_request  # an instance attribute, found before the class's method
    try:
        yield
    finally:
        del stubber.process_request
