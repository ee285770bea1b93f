"""The typed rules: what a validated row of the rules sheet means, how a rule names its action, and the
published rule set (one JSON document with a content version).

`sheet.py` turns CSV cells into these; everything downstream (the aggregator, the sweeper, the backfill,
the dispatcher) reads only these types. Semantics: `docs/rules.md`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Iterator, Mapping

ENGINE_EVENT_PREFIX = "trk_"
"""Events the engine emits start with this; they are never counted, so a rule cannot feed itself."""

READY = "ready"
"""The value an attribute action sets."""

MAX_WINDOW_DAYS = 366


class RuleType(str, enum.Enum):
    """Which of a user's events a rule counts."""

    AGGREGATOR = "aggregator"  # all time
    DATE = "date"  # event time in [start_date, finish_date], both days inclusive, UTC
    WINDOW = "window"  # the rolling last `window_days` days; users leave when they drop below


class Operator(str, enum.Enum):
    """How a running count or sum is compared with its target."""

    EQUAL = "equal"
    GREATER = "greater"  # strictly greater
    AT_LEAST = "at_least"

    @property
    def symbol(self) -> str:
        return {"equal": "=", "greater": ">", "at_least": ">="}[self.value]

    def holds(self, value: int | Decimal, target: int | Decimal) -> bool:
        if self is Operator.EQUAL:
            return value == target
        if self is Operator.GREATER:
            return value > target
        return value >= target


class ActionKind(str, enum.Enum):
    """What the engine does when a user meets a rule."""

    ATTRIBUTE = "attribute"  # set user attribute `action_name` = "ready", once
    EVENT = "event"  # emit event `action_name` each time, then reset the counters


@dataclass(frozen=True, slots=True)
class AttributeFilter:
    """Count only events whose attribute `name` is exactly `value`."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class CountCondition:
    """The number of counted events compared with a whole-number target."""

    operator: Operator
    target: int


@dataclass(frozen=True, slots=True)
class SumCondition:
    """The sum of a metric over counted events compared with a target.

    `metric_name` None means each record's first metric (in the record's order).
    """

    operator: Operator
    target: Decimal
    metric_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One validated row of the rules sheet.

    `reset` is only ever true for aggregator rules: every date rule qualifies a user at most once (the
    sheet's reset value is accepted and ignored for them, as seed sheets set it freely), and window rules
    keep a user while the rule holds. `action_name` left empty is derived as the sheet semantics say.
    """

    rule_id: str
    rule_type: RuleType
    event_name: str
    attribute_filter: AttributeFilter | None = None
    count_condition: CountCondition | None = None
    sum_condition: SumCondition | None = None
    reset: bool = False
    start_date: date | None = None
    finish_date: date | None = None
    window_days: int | None = None
    action_name: str = ""

    def __post_init__(self) -> None:
        # The parser reports these per cell; this guards rules built in code or read back from JSON.
        problems = []
        if self.count_condition is None and self.sum_condition is None:
            problems.append("needs a count or a sum condition")
        if self.event_name.startswith(ENGINE_EVENT_PREFIX):
            problems.append(f"event_name {self.event_name!r} is an engine event and is never counted")
        if self.reset and self.rule_type is not RuleType.AGGREGATOR:
            problems.append(f"reset only applies to aggregator rules, not {self.rule_type.value}")
        is_date = self.rule_type is RuleType.DATE
        if is_date != (self.start_date is not None and self.finish_date is not None):
            problems.append("start_date and finish_date are required for date rules and only for them")
        if is_date and self.start_date and self.finish_date and self.finish_date < self.start_date:
            problems.append("finish_date is before start_date")
        if (self.rule_type is RuleType.WINDOW) != (self.window_days is not None):
            problems.append("window_days is required for window rules and only for them")
        if self.window_days is not None and not 1 <= self.window_days <= MAX_WINDOW_DAYS:
            problems.append(f"window_days {self.window_days} is not in 1..{MAX_WINDOW_DAYS}")
        if problems:
            raise ValueError(f"rule {self.rule_id!r}: " + "; ".join(problems))
        if not self.action_name:
            object.__setattr__(self, "action_name", default_action_name(self))

    @property
    def action_kind(self) -> ActionKind:
        return ActionKind.EVENT if self.reset else ActionKind.ATTRIBUTE

    @property
    def action_description(self) -> str:
        """What the rule's action does, in plain words, for the people who write rules (`rules check`,
        the reports): the one place this is phrased."""
        if self.action_kind is ActionKind.EVENT:
            return f"fires event {self.action_name} each time the rule is met, then counts again from 0"
        if self.rule_type is RuleType.WINDOW:
            return (f"sets attribute {self.action_name} to {READY} while the rule holds, and clears it when "
                    "the user drops below")
        return f"sets attribute {self.action_name} to {READY}, once per user"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (decimals and dates as strings, so nothing is rounded on the way)."""
        count, total = self.count_condition, self.sum_condition
        return {
            "rule_id": self.rule_id,
            "rule_type": self.rule_type.value,
            "event_name": self.event_name,
            "attribute_filter": (
                {"name": self.attribute_filter.name, "value": self.attribute_filter.value}
                if self.attribute_filter
                else None
            ),
            "count_condition": {"operator": count.operator.value, "target": count.target} if count else None,
            "sum_condition": (
                {"operator": total.operator.value, "target": str(total.target), "metric_name": total.metric_name}
                if total
                else None
            ),
            "reset": self.reset,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "finish_date": self.finish_date.isoformat() if self.finish_date else None,
            "window_days": self.window_days,
            "action_name": self.action_name,
            "action_kind": self.action_kind.value,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        """Inverse of `to_dict` (`action_kind` is derived, so it is not read)."""
        flt, count, total = data.get("attribute_filter"), data.get("count_condition"), data.get("sum_condition")
        return cls(
            rule_id=data["rule_id"],
            rule_type=RuleType(data["rule_type"]),
            event_name=data["event_name"],
            attribute_filter=AttributeFilter(flt["name"], flt["value"]) if flt else None,
            count_condition=CountCondition(Operator(count["operator"]), int(count["target"])) if count else None,
            sum_condition=(
                SumCondition(Operator(total["operator"]), Decimal(total["target"]), total.get("metric_name"))
                if total
                else None
            ),
            reset=bool(data.get("reset", False)),
            start_date=date.fromisoformat(data["start_date"]) if data.get("start_date") else None,
            finish_date=date.fromisoformat(data["finish_date"]) if data.get("finish_date") else None,
            window_days=data.get("window_days"),
            action_name=data.get("action_name") or "",
        )


def default_action_name(rule: Rule) -> str:
    """The seed's names: `trk_date_<event>[_<value>]` for date rules, `trk_<event>[_<value>]` for resetting
    rules, else the attribute `<event>[_<value>]` — made readable as an attribute (`readable_attribute_name`),
    so that `_session.start` sets `session_start`, not an attribute that reads like the event
    (`docs/rules.md`, "Action names")."""
    base = rule.event_name + (f"_{rule.attribute_filter.value}" if rule.attribute_filter else "")
    if rule.rule_type is RuleType.DATE:
        return f"{ENGINE_EVENT_PREFIX}date_{base}"
    return f"{ENGINE_EVENT_PREFIX}{base}" if rule.reset else readable_attribute_name(base)


def readable_attribute_name(base: str) -> str:
    """`<event>[_<value>]` as an attribute name: leading `_` removed and `.` written `_`
    (`_campaign.opened_notification_summer_sale` → `campaign_opened_notification_summer_sale`); a name
    without either (`purchase`) is the seed's name unchanged."""
    return base.lstrip("_").replace(".", "_") or base


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _short_hash(value: Any, length: int) -> str:
    return hashlib.sha256(_canonical_json(value).encode()).hexdigest()[:length]


def content_rule_id(rule: Rule) -> str:
    """A stable id from what the rule does (never its row), so reordering a sheet renames nothing."""
    content = rule.to_dict()
    del content["rule_id"]
    return "r-" + _short_hash(content, 10)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules of one sheet, in sheet order, and a content version that changes whenever a rule does."""

    rules: tuple[Rule, ...]
    version: str = field(init=False)
    _by_id: dict[str, Rule] = field(init=False, repr=False, compare=False)
    _by_event: dict[str, tuple[Rule, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        ids = [rule.rule_id for rule in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate rule ids in {ids}")
        # Sorted by id so that moving rows around in the sheet does not look like a change.
        canonical = sorted((rule.to_dict() for rule in self.rules), key=lambda rule: rule["rule_id"])
        object.__setattr__(self, "version", _short_hash(canonical, 12))
        object.__setattr__(self, "_by_id", {rule.rule_id: rule for rule in self.rules})
        by_event: dict[str, list[Rule]] = {}
        for rule in self.rules:
            by_event.setdefault(rule.event_name, []).append(rule)
        object.__setattr__(self, "_by_event", {name: tuple(rules) for name, rules in by_event.items()})

    def for_event_type(self, event_type: str) -> tuple[Rule, ...]:
        """The rules that count events of this type (their EventName), in sheet order: the only ones an event
        can match, so a batch is matched against a few rules per event instead of the whole sheet."""
        return self._by_event.get(event_type, ())

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def by_id(self, rule_id: str) -> Rule:
        return self._by_id[rule_id]

    def to_json(self) -> str:
        """The document the rules are published as."""
        return _canonical_json({"version": self.version, "rules": [rule.to_dict() for rule in self.rules]})

    @classmethod
    def from_json(cls, text: str) -> RuleSet:
        """Read a published document back; a version that does not match its rules is an error."""
        document = json.loads(text)
        rule_set = cls(tuple(Rule.from_dict(rule) for rule in document["rules"]))
        if document.get("version") not in (None, rule_set.version):
            raise ValueError(f"rules document version {document['version']!r} does not match its rules "
                             f"({rule_set.version!r}); it was edited by hand or is corrupt")
        return rule_set


