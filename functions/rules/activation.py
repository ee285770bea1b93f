"""A date or window rule's activation record (`meta#<rule_id>` in the counters table): from when the
aggregator counts the rule's events, when a function last counted them (the heartbeat), and what the
backfill still has to count from the lake.

Semantics, figures and the AWS behaviour they rest on: `docs/backfill.md`.

- **Activation.** The aggregator counts a rule's events that *arrived* (Kinesis approximate arrival time, the
  one clock of the stream and the lake) at or after `activation_ms`; the backfill counts the earlier ones.
- **Heartbeat.** While a rule is in a function's rule set, that function writes `seen_until_ms` (its clock)
  at most every `HEARTBEAT_MS`, before counting with an activation it has not confirmed for that long
  (`ActivationCache`). So every event counted live arrived before the last heartbeat + `HEARTBEAT_MS` +
  `CLOCK_MARGIN_MS`.
- **Generations.** A container that sees a rule leave its rule set records `left_at_ms`; the rule seen again
  after that (or, as a fallback for absences no warm container saw, after its heartbeat went stale:
  `stale_after_ms`, 11 min 40 s) left the sheet and came back: it gets a new generation with a new activation, and a
  gap backfill of the arrivals from when live counting may have stopped to the new activation. Arrivals where
  it is unclear whether a function still counted them are merged one by one and skipped when the counter's
  `seen` has them.
- **Passes.** Each generation is backfilled twice: a *first* pass once the lake has settled, and a *late*
  pass once the lake's worst-case lateness is over, which merges, one by one, only the events the first
  pass's results (re-read by query id) did not list.

Writes are conditional `PutItem`s (the functions hold no `UpdateItem`): a heartbeat rewrites the record as
its writer read it, on condition that the `version` is unchanged (no backfill progress lost) and the heartbeat
not stale; the backfill's `save` re-reads the heartbeat and writes on condition that neither moved.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Protocol

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from functions.rules.model import Rule, RuleSet, RuleType
from functions.rules.outbox import PARTITION_KEY, meta_key

logger = Logger()

HEARTBEAT_MS = 5 * 60_000
"""A function confirms (and refreshes) a rule's activation at most this often while the rule is in force."""
CLOCK_MARGIN_MS = 30_000
"""Skew allowed between the functions' clocks and Kinesis's arrival stamps, in heartbeat arithmetic."""
GAP_LEAD_MS = 60 * 60_000
"""A returning rule's gap starts this long before its last heartbeat: an event that arrived shortly before it
may have been processed (iterator age) by a function that no longer had the rule. Those events are merged
one by one, and skipped when the counter's `seen` shows they were counted live."""
MAX_ATTEMPTS = 5


def rule_fingerprint(rule: Rule) -> str:
    """A hash of what the rule does, to notice a rule whose content changed under the same RuleId."""
    text = json.dumps(rule.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stale_after_ms(activation_delay_ms: int, heartbeat_ms: int = HEARTBEAT_MS) -> int:
    """How old a heartbeat may be before the rule counts as having left although no container recorded it
    leaving (`left_at_ms`, the precise path): the rules cache age (in the activation delay) + two heartbeat
    periods + the clock margin (70 s + 10 min + 30 s = 11 min 40 s by default) — a function beats at its first
    batch *after* a period, so two beats can be a period plus the wait for that batch apart. Short on purpose:
    `left_at_ms` is only written by a warm container that held the rule when it left, and after a deploy,
    recycle or scale-out no such container may exist. A stream with no record for longer also looks like an
    absence: a new generation, whose gap backfill finds the nothing that flowed — cheap, as a gap shorter than
    the dedupe horizon skips the look-back and a finished generation is pruned (docs/backfill.md, "Returning
    rules", "Cost of a spurious generation")."""
    return activation_delay_ms + 2 * heartbeat_ms + CLOCK_MARGIN_MS


class BackfillStatus(str, enum.Enum):
    """Whether a backfill pass (or a rule's whole backfill) still has to run (or finish)."""

    PENDING = "pending"
    DONE = "done"


class PassKind(str, enum.Enum):
    """FIRST: once the lake has settled after the activation. LATE: once the lake's worst-case lateness is
    over, for records that reached the stream before the activation but the lake only after the first pass."""

    FIRST = "first"
    LATE = "late"


@dataclass(frozen=True, slots=True, kw_only=True)
class BackfillPass:
    """One query over the lake and the merge of its rows: the rule's events that arrived in
    [`from_ms`, `to_ms`) (`from_ms` None: as far back as the rule's days reach)."""

    generation: int
    kind: PassKind
    to_ms: int
    """The generation's activation."""
    from_ms: int | None = None
    ambiguous_until_ms: int | None = None
    """A returning rule's: arrivals before this may have been counted live; they are merged one by one,
    and skipped when the counter has seen them."""
    last_beat_ms: int | None = None
    """A returning rule's last heartbeat before it returned."""
    status: BackfillStatus = BackfillStatus.PENDING
    query_id: str | None = None
    """The pass's running Athena query, so a later run picks it up instead of starting another."""
    resume_after: str | None = None
    """Users up to this id (in the query's order) are merged already."""
    error: str | None = None

    @property
    def key(self) -> str:
        return f"g{self.generation}.{self.kind.value}"

    def to_record(self) -> dict[str, Any]:
        return {"generation": self.generation, "kind": self.kind.value, "to_ms": self.to_ms, "from_ms": self.from_ms,
                "ambiguous_until_ms": self.ambiguous_until_ms, "last_beat_ms": self.last_beat_ms,
                "status": self.status.value, "query_id": self.query_id, "resume_after": self.resume_after,
                "error": self.error}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BackfillPass:
        def number(name: str) -> int | None:
            value = record.get(name)
            return None if value is None else int(value)

        return cls(generation=int(record["generation"]), kind=PassKind(record["kind"]), to_ms=int(record["to_ms"]),
                   from_ms=number("from_ms"), ambiguous_until_ms=number("ambiguous_until_ms"),
                   last_beat_ms=number("last_beat_ms"), status=BackfillStatus(record["status"]),
                   query_id=record.get("query_id"), resume_after=record.get("resume_after"),
                   error=record.get("error"))


def generation_passes(generation: int, activation_ms: int, *, from_ms: int | None = None,
                      ambiguous_until_ms: int | None = None,
                      last_beat_ms: int | None = None) -> tuple[BackfillPass, BackfillPass]:
    """The first and the late pass of a generation."""
    return tuple(BackfillPass(generation=generation, kind=kind, to_ms=activation_ms, from_ms=from_ms,
                              ambiguous_until_ms=ambiguous_until_ms, last_beat_ms=last_beat_ms)
                 for kind in (PassKind.FIRST, PassKind.LATE))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleMeta:
    """A date or window rule's activation, heartbeat and backfill progress (item `meta#<rule_id>`).

    The aggregator counts the rule's events that arrived at or after `activation_ms` (the current
    generation's); the backfill passes count those that arrived before it, from the lake, once.
    """

    rule_id: str
    activation_ms: int
    fingerprint: str
    generation: int = 1
    seen_until_ms: int | None = None
    """The last heartbeat (a function's clock); None: none yet (the record counts as in force)."""
    left_at_ms: int | None = None
    """When a container first saw the rule leave its rule set during this generation (its clock); None: no
    container saw it leave. Set once per generation (`RuleActivations.leave`), cleared by the next one."""
    passes: tuple[BackfillPass, ...] = ()
    users: int = 0
    events: int = 0
    qualified: int = 0
    version: int = 1

    @classmethod
    def first(cls, rule: Rule, activation_ms: int, *, seen_until_ms: int | None = None) -> RuleMeta:
        return cls(rule_id=rule.rule_id, activation_ms=activation_ms, fingerprint=rule_fingerprint(rule),
                   seen_until_ms=seen_until_ms, passes=generation_passes(1, activation_ms))

    @property
    def status(self) -> BackfillStatus:
        """DONE once every pass is."""
        done = all(p.status is BackfillStatus.DONE for p in self.passes)
        return BackfillStatus.DONE if done else BackfillStatus.PENDING

    def pass_of(self, key: str) -> BackfillPass:
        return next(p for p in self.passes if p.key == key)

    def with_pass(self, updated: BackfillPass) -> RuleMeta:
        return replace(self, passes=tuple(updated if p.key == updated.key else p for p in self.passes))

    def returned(self, *, now_ms: int, activation_ms: int, heartbeat_ms: int = HEARTBEAT_MS,
                 lead_ms: int = GAP_LEAD_MS, activation_delay_ms: int = 0) -> RuleMeta:
        """The next generation of a rule that was away: activated at `activation_ms`, with a gap backfill up to
        it. When a container recorded the rule leaving (`left_at_ms`), live counting may have stopped from a
        rules cache age (in `activation_delay_ms`) + the clock margin before that; else from the last heartbeat.
        The gap starts `lead_ms` earlier still (never before the previous activation): a function without the
        rule may have processed an event that arrived earlier (iterator age). Arrivals up to the later of the
        last heartbeat + `heartbeat_ms` + `CLOCK_MARGIN_MS` and `left_at_ms` + the activation delay + the margin
        (the last container to reload its rules) may have been counted live: merged one by one against `seen`."""
        last_beat = self.seen_until_ms if self.seen_until_ms is not None else self.activation_ms
        ambiguous_until = last_beat + heartbeat_ms + CLOCK_MARGIN_MS
        since = last_beat
        if self.left_at_ms is not None:
            since = min(last_beat, self.left_at_ms - activation_delay_ms - CLOCK_MARGIN_MS)
            ambiguous_until = max(ambiguous_until, self.left_at_ms + activation_delay_ms + CLOCK_MARGIN_MS)
        from_ms = max(self.activation_ms, since - lead_ms)
        ambiguous_until = min(ambiguous_until, activation_ms)
        generation = self.generation + 1
        passes = (*self.passes, *generation_passes(generation, activation_ms, from_ms=min(from_ms, activation_ms),
                                                   ambiguous_until_ms=max(ambiguous_until, from_ms),
                                                   last_beat_ms=last_beat))
        return replace(self, generation=generation, activation_ms=activation_ms, seen_until_ms=now_ms,
                       left_at_ms=None, passes=passes).pruned()

    def pruned(self) -> RuleMeta:
        """The record without the passes of earlier generations that are all done, so it stays small: a
        finished first pass stays while its late pass is pending (the late pass re-reads its results)."""
        pending = {p.generation for p in self.passes if p.status is BackfillStatus.PENDING}
        return replace(self, passes=tuple(p for p in self.passes
                                          if p.generation == self.generation or p.generation in pending))

    def to_item(self) -> dict[str, Any]:
        item = {PARTITION_KEY: meta_key(self.rule_id), "rule_id": self.rule_id, "activation_ms": self.activation_ms,
                "fingerprint": self.fingerprint, "generation": self.generation,
                "passes": [p.to_record() for p in self.passes], "backfill": self.status.value,
                "users": self.users, "events": self.events, "qualified": self.qualified, "version": self.version}
        if self.seen_until_ms is not None:  # absent, not null: conditions test `attribute_not_exists`
            item["seen_until_ms"] = self.seen_until_ms
        if self.left_at_ms is not None:
            item["left_at_ms"] = self.left_at_ms
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> RuleMeta:
        activation_ms = int(item["activation_ms"])
        if "passes" in item:
            passes = tuple(BackfillPass.from_record(record) for record in item["passes"])
        else:  # a record from before the passes: one backfill, pending or done
            status = BackfillStatus(item["backfill"])
            first, late = generation_passes(1, activation_ms)
            passes = (replace(first, status=status, query_id=item.get("query_id"),
                              resume_after=item.get("resume_after"), error=item.get("error")),
                      replace(late, status=status))
        seen, left = item.get("seen_until_ms"), item.get("left_at_ms")
        return cls(rule_id=str(item["rule_id"]), activation_ms=activation_ms,
                   fingerprint=str(item.get("fingerprint") or ""), generation=int(item.get("generation", 1)),
                   seen_until_ms=None if seen is None else int(seen),
                   left_at_ms=None if left is None else int(left), passes=passes,
                   users=int(item.get("users", 0)), events=int(item.get("events", 0)),
                   qualified=int(item.get("qualified", 0)), version=int(item["version"]))


class ActivationConflict(Exception):
    """An activation record kept changing under its writer."""


class MetaChanged(Exception):
    """A conditional write of an activation record found it changed (or absent); `current` is the record as
    found then (None: there is none)."""

    def __init__(self, current: RuleMeta | None) -> None:
        super().__init__("the activation record changed")
        self.current = current


class MetaTable(Protocol):
    """Where activation records live (`activation_tables.py`: the counters table, or memory). Writes are
    conditional and raise `MetaChanged` when the condition fails; anything else they raise (a throttled write)
    is the caller's to handle."""

    def get(self, rule_id: str) -> RuleMeta | None:
        """The record (a consistent read), None when there is none."""
        ...

    def put_new(self, meta: RuleMeta) -> None:
        """Store `meta` if the rule has no record yet."""
        ...

    def put_if(self, meta: RuleMeta, *, version: int, seen_until_ms: int | None = None,
               fresh_after_ms: int | None = None) -> None:
        """Store `meta` if the stored record has `version` and, with `fresh_after_ms`, no heartbeat or one at
        or after it; otherwise its heartbeat is `seen_until_ms` (None: it has none)."""
        ...


class RuleActivations:
    """The activation records' lifecycle — created once, heartbeats, backfill progress, leaving — over a
    `MetaTable`, each change one conditional write of the record as read."""

    def __init__(self, table: MetaTable) -> None:
        self._table = table

    def ensure(self, rule: Rule, activation_ms: int, *, seen_until_ms: int | None = None) -> RuleMeta:
        """The rule's activation record, created with `activation_ms` (and heartbeat `seen_until_ms`) if it has
        none (first writer wins)."""
        meta = RuleMeta.first(rule, activation_ms, seen_until_ms=seen_until_ms)
        try:
            self._table.put_new(meta)
            return meta
        except MetaChanged as changed:
            existing = changed.current
        assert existing is not None
        if existing.fingerprint != meta.fingerprint:
            logger.warning("rule changed under the same RuleId: its counters, activation and backfill are kept; "
                           "give the changed rule a new RuleId to start it afresh", extra={"rule_id": rule.rule_id})
        return existing

    def read(self, rule_id: str) -> RuleMeta | None:
        return self._table.get(rule_id)

    def save(self, meta: RuleMeta) -> RuleMeta | None:
        """Store `meta`'s backfill progress (read at `meta.version`); None if another writer changed the record
        meanwhile (a backfill run, or a new generation). The heartbeat is re-read and kept: heartbeats do not
        move `version`, so the write is also conditional on the heartbeat read."""
        for _ in range(MAX_ATTEMPTS):
            current = self.read(meta.rule_id)
            if current is None or current.version != meta.version or current.generation != meta.generation:
                return None
            stored = replace(meta, version=meta.version + 1, seen_until_ms=current.seen_until_ms,
                             activation_ms=current.activation_ms, left_at_ms=current.left_at_ms)
            try:
                self._table.put_if(stored, version=meta.version, seen_until_ms=current.seen_until_ms)
            except MetaChanged:
                continue  # a heartbeat landed in between: read it again
            return stored
        raise ActivationConflict(f"meta#{meta.rule_id}: still changing after {MAX_ATTEMPTS} attempts")

    def beat(self, meta: RuleMeta, rule: Rule, *, now_ms: int, activation_delay_ms: int,
             heartbeat_ms: int = HEARTBEAT_MS, first_sight: bool = False) -> RuleMeta:
        """Refresh the rule's heartbeat and return the record in force: this one, a newer one (another writer
        saved progress or started a generation), or — when the rule was away (`returning`) — a new generation,
        activated `activation_delay_ms` from now. One request unless the record changed under the caller."""
        stale_ms = now_ms - stale_after_ms(activation_delay_ms, heartbeat_ms)
        for _ in range(MAX_ATTEMPTS):
            if returning(meta, now_ms=now_ms, activation_delay_ms=activation_delay_ms, heartbeat_ms=heartbeat_ms,
                         first_sight=first_sight):
                stored = replace(meta.returned(now_ms=now_ms, activation_ms=now_ms + activation_delay_ms,
                                               heartbeat_ms=heartbeat_ms, activation_delay_ms=activation_delay_ms),
                                 version=meta.version + 1)
                conditions = {"version": meta.version, "seen_until_ms": meta.seen_until_ms}
            else:
                stored = replace(meta, seen_until_ms=now_ms)
                conditions = {"version": meta.version, "fresh_after_ms": stale_ms}
            try:
                self._table.put_if(stored, **conditions)
            except MetaChanged as changed:
                current = changed.current
                if current is None:  # removed from under us (never, but): start afresh
                    current = self.ensure(rule, now_ms + activation_delay_ms, seen_until_ms=now_ms)
                if current.generation > meta.generation or (
                        _recent(current, now_ms, heartbeat_ms)
                        and not returning(current, now_ms=now_ms, activation_delay_ms=activation_delay_ms,
                                          heartbeat_ms=heartbeat_ms, first_sight=first_sight)):
                    return current  # someone else's heartbeat (or new generation) just now
                meta = current
                continue
            if stored.generation > meta.generation:
                logger.info("rule returned: new generation and gap backfill",
                            extra={"rule_id": meta.rule_id, "generation": stored.generation,
                                   "last_beat_ms": meta.seen_until_ms, "left_at_ms": meta.left_at_ms,
                                   "activation_ms": stored.activation_ms})
            return stored
        raise ActivationConflict(f"meta#{meta.rule_id}: still changing after {MAX_ATTEMPTS} attempts")

    def leave(self, meta: RuleMeta, *, now_ms: int) -> None:
        """Record that this container saw the rule leave its rule set (`left_at_ms`), unless the record moved
        on to another generation or a container recorded it already (the earliest sighting is kept). One
        conditional write, as read, so no backfill progress or heartbeat is lost. Raises when it cannot (a
        throttled write, or `ActivationConflict` after `MAX_ATTEMPTS`): the caller keeps the rule and tries
        again with its next batch."""
        for _ in range(MAX_ATTEMPTS):
            if meta.left_at_ms is not None:
                return
            stored = replace(meta, left_at_ms=now_ms, version=meta.version + 1)
            try:
                self._table.put_if(stored, version=meta.version, seen_until_ms=meta.seen_until_ms)
                return
            except MetaChanged as changed:
                current = changed.current
                if current is None or current.generation != meta.generation:
                    return  # a later generation: this sighting belongs to an earlier one
                meta = current
        raise ActivationConflict(f"meta#{meta.rule_id}: still changing after {MAX_ATTEMPTS} attempts "
                                 "(recording the rule leaving)")


@dataclass
class ActivationCache:
    """A function container's view of its date and window rules' activations (`current`): each confirmed
    with the record — and the heartbeat written — on first sight and then at most every `heartbeat_ms` while
    the rule stays in the container's rule set. A rule that leaves the set is forgotten once its leaving is
    recorded (`leave`; a failed write is logged and tried again by the next call, never failing the batch), so
    when it comes back it is looked up again at once.

    Cost: one request per date or window rule per container on first sight, then one per rule per
    `heartbeat_ms` of processing (docs/backfill.md, "Heartbeats").
    """

    activations: RuleActivations
    now_ms: Callable[[], int]
    activation_delay_ms: int
    heartbeat_ms: int = HEARTBEAT_MS
    _known: dict[str, tuple[RuleMeta, int]] = field(default_factory=dict)
    """rule id → (record, when this container last confirmed it)."""

    def current(self, rules: RuleSet | Iterable[Rule]) -> dict[str, int]:
        """Activation time of each date and window rule in `rules`. A new rule's lies one rules-cache age in
        the future: by then every running function has the rule, so each event arriving after it is seen by a
        function that counts it, and every earlier one is left to the backfill."""
        now = self.now_ms()
        dated = [rule for rule in rules if rule.rule_type is not RuleType.AGGREGATOR]
        for rule_id in set(self._known) - {rule.rule_id for rule in dated}:
            # Seen leaving: recorded, so that the rule coming back — however soon — starts a new generation
            # whose gap backfill covers what nobody counted meanwhile. Forgotten only once recorded. A failed
            # write (throttled, or the record kept changing) must not fail the batch: that would stop every
            # rule's counting on the shard for as long as the write fails, and after the mapping's retries the
            # records would be gone. So the rule stays known and the next call tries again; if the write never
            # succeeds, the stale heartbeat still reveals the absence.
            left, _ = self._known[rule_id]
            try:
                self.activations.leave(left, now_ms=now)
            except (ClientError, ActivationConflict):
                logger.warning("could not record the rule leaving; trying again with the next batch",
                               exc_info=True, extra={"rule_id": rule_id})
                continue
            del self._known[rule_id]
        for rule in dated:
            known = self._known.get(rule.rule_id)
            if known is not None and now - known[1] < self.heartbeat_ms:
                continue
            if known is None:
                # Created here (heartbeat included), or read back as it stands.
                meta = self.activations.ensure(rule, now + self.activation_delay_ms, seen_until_ms=now)
            else:
                meta = known[0]
            away = returning(meta, now_ms=now, activation_delay_ms=self.activation_delay_ms,
                             heartbeat_ms=self.heartbeat_ms, first_sight=known is None)
            if _recent(meta, now, self.heartbeat_ms) and not away:
                # A heartbeat (this container's or another's) recent enough covers this container's counting.
                assert meta.seen_until_ms is not None
                self._known[rule.rule_id] = (meta, meta.seen_until_ms)
                continue
            meta = self.activations.beat(meta, rule, now_ms=now, activation_delay_ms=self.activation_delay_ms,
                                         heartbeat_ms=self.heartbeat_ms, first_sight=known is None)
            self._known[rule.rule_id] = (meta, now)
        return {rule_id: meta.activation_ms for rule_id, (meta, _) in self._known.items()}


def returning(meta: RuleMeta, *, now_ms: int, activation_delay_ms: int, heartbeat_ms: int = HEARTBEAT_MS,
              first_sight: bool = False) -> bool:
    """Whether a container seeing the rule in its rule set finds it back from an absence: a container recorded
    it leaving this generation (`left_at_ms`) and this container sees it afresh, or the leaving is older than a
    rules cache age + the margin (so this container's rules were loaded after it, and hold the rule again); or,
    as the fallback, the heartbeat is older than `stale_after_ms`."""
    if meta.left_at_ms is not None and (first_sight or now_ms - meta.left_at_ms > activation_delay_ms + CLOCK_MARGIN_MS):
        return True
    stale_ms = now_ms - stale_after_ms(activation_delay_ms, heartbeat_ms)
    return meta.seen_until_ms is not None and meta.seen_until_ms < stale_ms


def _recent(meta: RuleMeta, now_ms: int, heartbeat_ms: int) -> bool:
    return meta.seen_until_ms is not None and now_ms - heartbeat_ms < meta.seen_until_ms <= now_ms
