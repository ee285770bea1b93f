"""The audience preview: what each valid rule would do on sample events, computed by the project's own rule
evaluation — the memory engine (`cli/memory_engine.py`, through `cli/replay.py` `replay_rules`), the
aggregator's code on the in-memory store, the same one `rules replay` runs.

The events are read and parsed once (`load_sample`: a JSON-lines export read by `cli/event_files.py`, or a
lake directory laid out as `functions/retraining/lake.py` writes it) into a `PlannedStream` (batches and
clocks as the replay plans them). `AudiencePreview` keeps it and answers per rule:

- `users`: distinct users the rule qualifies; `qualifications`: how many times it qualifies them (for a
  resetting rule, how many times it fires; otherwise at most once per user);
- `per_day`: qualifications per UTC day of the event that met the rule (for a chart);
- `examples`: up to 5 users, those qualified most often first, then the nearest to qualifying, with their
  qualifications and their count and sum at the end of the sample (a resetting rule's count is since its
  last reset).

Rules are independent: counters, marks and qualifications are per (rule, user), and every batch and clock
depends on the whole stream, never on the rules. So a rule run alone gives what it gives in the whole sheet
(tests/unit/studio/test_preview.py holds it to that), and results are cached per rule, keyed by
`activation.rule_fingerprint` (a hash of `Rule.to_dict()`, the RuleId included): after an edit only the edited
rule is computed again. Rules not cached yet are computed together in one engine run.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from cli.memory_engine import MEMORY_BATCH_SIZE
from cli.stream_plan import PlannedRecord, PlannedStream, partition_key, plan_all
from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.rules.activation import rule_fingerprint
from functions.rules.model import Rule, RuleSet

EXAMPLE_USERS = 5
CACHE_RULES = 512
"""Rule results kept (an edit session touches far fewer; the bound keeps a long session's memory flat)."""
DEFAULT_IDENTITY_MODE = "user_or_endpoint"


class SampleError(Exception):
    """The sample events could not be read; `str()` says why."""


@dataclass(frozen=True, slots=True)
class EventSample:
    """Sample events, parsed and planned once."""

    source: str
    planned: PlannedStream
    skipped: int = 0
    """Records the file reader skipped (not JSON, truncated…), before the normaliser saw them."""

    def events(self) -> Iterator[CanonicalEvent]:
        """The events the normaliser accepted, in stream order (arrival applied)."""
        for record in self.planned.records:
            if not isinstance(record.parsed, Rejected):
                yield record.parsed.at(record.arrival_ms)

    @property
    def records(self) -> int:
        return len(self.planned.records)

    @property
    def rejected(self) -> int:
        return sum(1 for record in self.planned.records if isinstance(record.parsed, Rejected))


def sample_from_lines(lines: Iterable[str], *, source: str = "events",
                      identity_mode: str = DEFAULT_IDENTITY_MODE, skipped: int = 0) -> EventSample:
    """Raw stream records (one JSON record a line, as `rules replay` reads them)."""
    return EventSample(source, plan_all(lines, IdentityMode(identity_mode)), skipped)


def sample_from_file(path: str | Path, *, identity_mode: str = DEFAULT_IDENTITY_MODE) -> EventSample:
    """A JSON-lines export (or a JSON array, or pretty-printed records), read by the tools' one reader."""
    from cli.event_files import EventFileReader

    path = Path(path)
    if not path.is_file():
        raise SampleError(f"{path}: no such file")
    reader = EventFileReader([path])
    lines = [record.text for record in reader]
    if not lines:
        raise SampleError(f"{path}: no usable record ({reader.rejected_total:,} skipped)")
    return sample_from_lines(lines, source=str(path), identity_mode=identity_mode, skipped=reader.rejected_total)


def sample_from_lake(root: str | Path) -> EventSample:
    """Canonical events from a lake directory, `<root>/events/dt=YYYY-MM-DD/part-*.parquet`.

    The lake holds what the normaliser made of each record (`CanonicalEvent.to_json_dict`, written by
    Firehose by the Glue schema): ids final, `arrival_time_ms` the stream's arrival stamp and `event_time_ms`
    already clamped to it. They are read back with `CanonicalEvent.from_json_dict` and put on the planned
    stream in arrival order (ties: as the files list them), each record arriving at its own
    `arrival_time_ms` — so batches and clocks follow the real arrivals, and a producer duplicate (two rows
    with one `event_id`) counts once, as on the stream."""
    import pyarrow.parquet as pq

    from functions.events.normalise import Parsed
    from functions.retraining.lake import EVENTS_FOLDER

    folder = Path(root) / EVENTS_FOLDER
    files = sorted(folder.glob("dt=*/part-*.parquet"))
    if not files:
        raise SampleError(f"{root}: no lake files ({EVENTS_FOLDER}/dt=YYYY-MM-DD/part-*.parquet)")
    events: list[CanonicalEvent] = []
    for path in files:
        for row in pq.read_table(path).to_pylist():
            # Arrow hands map columns back as lists of (key, value) pairs, in the order written.
            row["attributes"] = dict(row.get("attributes") or ())
            row["metrics"] = dict(row.get("metrics") or ())
            row.pop("dt", None)
            events.append(CanonicalEvent.from_json_dict(row))
    events.sort(key=lambda event: event.arrival_time_ms)  # stable: ties keep the files' order
    records = []
    for position, event in enumerate(events):
        line = event.to_json()
        records.append(PlannedRecord(line, partition_key(line, event), event.arrival_time_ms, Parsed(event),
                                     position))
    return EventSample(str(root), PlannedStream(records, []))


def load_sample(path: str | Path, *, identity_mode: str = DEFAULT_IDENTITY_MODE) -> EventSample:
    """A lake directory (a folder) or an events file."""
    return sample_from_lake(path) if Path(path).is_dir() else sample_from_file(path, identity_mode=identity_mode)


@dataclass(frozen=True, slots=True)
class ExampleUser:
    user_id: str
    qualifications: int
    count: int
    """The rule's count for the user at the end of the sample (since the last reset, for a resetting rule)."""
    sum: int | float


@dataclass(frozen=True, slots=True)
class RulePreview:
    """One rule's audience on the sample."""

    rule_id: str
    fingerprint: str
    resets: bool
    users: int
    """Distinct users qualified."""
    qualifications: int
    """Times the rule was met: fires, for a resetting rule; at most once per user otherwise."""
    users_counted: int
    """Users with at least one matching event."""
    per_day: tuple[tuple[str, int], ...]
    """(UTC day `YYYY-MM-DD` of the event that met the rule, qualifications), days with any, in order."""
    examples: tuple[ExampleUser, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "resets": self.resets, "users": self.users,
                "qualifications": self.qualifications, "users_counted": self.users_counted,
                "per_day": [list(day) for day in self.per_day],
                "examples": [{"user_id": e.user_id, "qualifications": e.qualifications, "count": e.count,
                              "sum": e.sum} for e in self.examples]}


class AudiencePreview:
    """Per-rule previews on one sample, cached by rule content (module docstring)."""

    def __init__(self, sample: EventSample, *, batch_size: int = MEMORY_BATCH_SIZE,
                 identity_mode: str = DEFAULT_IDENTITY_MODE, examples: int = EXAMPLE_USERS,
                 cache_rules: int = CACHE_RULES) -> None:
        self.sample, self.batch_size, self.identity_mode = sample, batch_size, identity_mode
        self.examples, self.cache_rules = examples, cache_rules
        self._cache: OrderedDict[str, RulePreview] = OrderedDict()
        self.last_computed: tuple[str, ...] = ()
        """Rule ids the last `preview` call ran the engine for (the others came from the cache)."""
        self.last_seconds = 0.0
        """How long the last call's engine run took."""

    def preview(self, rules: Iterable[Rule]) -> dict[str, RulePreview]:
        """Rule id → preview for `rules` (the valid rules of a check: unique ids)."""
        rules = list(rules)
        missing = [rule for rule in rules if rule_fingerprint(rule) not in self._cache]
        started = time.perf_counter()
        if missing:
            for preview in self._run(missing):
                self._cache[preview.fingerprint] = preview
        self.last_computed = tuple(rule.rule_id for rule in missing)
        self.last_seconds = time.perf_counter() - started
        result = {}
        for rule in rules:
            fingerprint = rule_fingerprint(rule)
            self._cache.move_to_end(fingerprint)
            result[rule.rule_id] = self._cache[fingerprint]
        while len(self._cache) > max(self.cache_rules, len(rules)):
            self._cache.popitem(last=False)
        return result

    def _run(self, rules: Sequence[Rule]) -> list[RulePreview]:
        from cli.replay import Engine, ReplayOptions, replay_rules

        result = replay_rules(RuleSet(tuple(rules)), self.sample.planned,
                              ReplayOptions(engine=Engine.MEMORY, batch_size=self.batch_size, workers=1,
                                            identity_mode=self.identity_mode))
        return [summarise(rule, result.qualifications, result.counters, examples=self.examples) for rule in rules]


def summarise(rule: Rule, qualifications: Sequence[dict[str, Any]], counters: Sequence[dict[str, Any]], *,
              examples: int = EXAMPLE_USERS) -> RulePreview:
    """A rule's preview from a replay's qualifications and counters (those of other rules are ignored)."""
    own = [q for q in qualifications if q["rule_id"] == rule.rule_id]
    per_user = Counter(q["user_id"] for q in own)
    per_day = Counter(_day(q["event_time_ms"]) for q in own)
    state = {c["user_id"]: c for c in counters if c["rule_id"] == rule.rule_id}
    # Qualified most often first; then, to show who is close, the highest counts; ties by user id.
    ranked = sorted(set(per_user) | set(state),
                    key=lambda user: (-per_user[user], -state.get(user, {}).get("count", 0), user))
    chosen = tuple(ExampleUser(user, per_user[user], state.get(user, {}).get("count", 0),
                               state.get(user, {}).get("sum", 0)) for user in ranked[:examples])
    return RulePreview(rule.rule_id, rule_fingerprint(rule), rule.reset, len(per_user), len(own), len(state),
                       tuple(sorted(per_day.items())), chosen)


def _day(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc).date().isoformat()
