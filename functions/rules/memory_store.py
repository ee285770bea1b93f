"""The counter store in process memory, for the local tools: the same items, marks, conditions and outbox as
the DynamoDB `CounterStore`, behind the same interface (`CounterStoreBase`), so the local engine runs the
aggregator's matching, coalescing, evaluation and exactly-once marks unchanged — only the storage differs.

Items are kept as the frozen `CounterItem`s the store computes (never serialised), the outbox as
`OutboxEntry`s in the order they were written (`outbox_entries`, `new_outbox_entries`). Single-threaded use,
or one lock held around each write (`_put` takes it), like DynamoDB's per-item conditional writes.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any, Callable, Iterator, Mapping, Sequence

from functions.rules.activation import RuleActivations
from functions.rules.activation_tables import MemoryMetaTable
from functions.rules.counter_item import CounterItem
from functions.rules.outbox import OutboxEntry, counter_key
from functions.rules.store import MAX_ATTEMPTS, CounterStoreBase, StoreSettings, WriteConflict, same_change


class MemoryCounterStore(CounterStoreBase):
    """Counters, outbox and bookkeeping records in dicts."""

    def __init__(self, settings: StoreSettings, *, clock: Callable[[], float] = time.time,
                 max_attempts: int = MAX_ATTEMPTS) -> None:
        super().__init__(settings, clock=clock, max_attempts=max_attempts)
        self._items: dict[str, CounterItem] = {}
        self._outbox: dict[str, OutboxEntry] = {}
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._written: list[OutboxEntry] = []
        self._outbox_read = 0
        self.activations = RuleActivations(MemoryMetaTable())

    def read(self, rule_id: str, user_id: str) -> CounterItem:
        found = self._items.get(counter_key(rule_id, user_id))
        return found if found is not None else CounterItem(rule_id=rule_id, user_id=user_id)

    def _put(self, item: CounterItem, stored: CounterItem, entries: Sequence[OutboxEntry]) -> None:
        with self._lock:
            current = self._items.get(item.key)
            if (current.version if current is not None else 0) != item.version:
                raise WriteConflict()
            for entry in entries:  # checked before anything is written: all or nothing, as a transaction
                found = self._outbox.get(entry.key)
                if found is not None:
                    same_change(entry, found.rule_id, found.user_id, found.change.value)
            self._items[item.key] = stored
            for entry in entries:
                if entry.key not in self._outbox:
                    self._outbox[entry.key] = entry
                    self._written.append(entry)

    def due_for_sweep(self, day: date, *, rule_id: str | None = None) -> Iterator[CounterItem]:
        for item in list(self._items.values()):
            if item.sweep_day == day and (rule_id is None or item.rule_id == rule_id):
                yield item

    def read_record(self, key: str) -> dict[str, Any] | None:
        record = self._records.get(key)
        return None if record is None else dict(record)

    def write_record(self, key: str, record: Mapping[str, Any], *, version: int) -> bool:
        with self._lock:
            current = self._records.get(key)
            if (int(current["version"]) if current is not None else 0) != version:
                return False
            self._records[key] = {**record, "version": version + 1}
            return True

    # -- what the local engine reads back ------------------------------------------------------------

    def counters(self) -> Iterator[CounterItem]:
        """Every stored counter."""
        return iter(list(self._items.values()))

    def outbox_entries(self) -> list[OutboxEntry]:
        """Every outbox entry, in the order written."""
        return list(self._outbox.values())

    def new_outbox_entries(self) -> list[OutboxEntry]:
        """The entries written since the last call (what a DynamoDB stream would deliver next, in order)."""
        entries = self._written[self._outbox_read:]
        self._outbox_read = len(self._written)
        return entries
