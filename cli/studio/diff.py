"""What changes between two sets of rules — the sheet being edited against the sheet on disk, or against a
stack's published rules document (`RuleSet.to_json()`) — said in plain words for the people who write rules,
with, for each change, whether users' counts start again from 0.

Rules are matched by id. The engine keeps a rule's counters (each user's count and sum, and whether the user
has qualified) under its id (docs/rules.md, "RuleId"):

- a rule whose content changed under the same RuleId keeps them (`activation.py` `ensure` only logs a warning):
  counting carries on under the new definition, and users already qualified are not qualified again;
- a rule without a RuleId is known by an id made from its content (`model.content_rule_id`, `r-` and 10 hex
  digits): editing it gives it a new id, so it is a *new* rule with fresh counters, and the old one is removed.
  Such a pair — one rule without a RuleId gone, one added, counting the same event — is shown as one
  `replaced` change, which resets counters;
- a rule given a RuleId for the first time (it had a content id) is a new rule too, unless the RuleId written
  is the content id itself, which keeps everything.

Whether a rule had a RuleId is read from the rule itself: its id equals `content_rule_id(rule)` exactly when it
had none (the content hash of a hand-written id cannot be the id).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterable

from functions.rules.model import Rule, RuleSet, RuleType, content_rule_id

_FIELD_WORDS = {
    "rule_type": "rule type", "event_name": "event", "attribute_filter": "filter",
    "count_condition": "count condition", "sum_condition": "sum condition", "reset": "reset",
    "start_date": "start date", "finish_date": "finish date", "window_days": "window",
    "action_name": "action name", "action_kind": "action",
}


class ChangeKind(str, enum.Enum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"
    """Same RuleId, different content: counters kept."""
    REPLACED = "replaced"
    """A rule without a RuleId edited (or given a new RuleId): a new rule, fresh counters."""


@dataclass(frozen=True, slots=True)
class RuleChange:
    kind: ChangeKind
    rule_id: str
    """The rule's id after the change (before it, for a removed rule)."""
    before: Rule | None
    after: Rule | None
    fields: tuple[str, ...]
    """What differs, in words ("count condition", "filter"…), for a changed or replaced rule."""
    resets_counters: bool
    """Whether users' counts start again from 0 (and users qualify again)."""
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "rule_id": self.rule_id,
                "before_id": self.before.rule_id if self.before else None, "fields": list(self.fields),
                "resets_counters": self.resets_counters, "explanation": self.explanation}


@dataclass(frozen=True, slots=True)
class RulesDiff:
    changes: tuple[RuleChange, ...]
    """Removed and changed rules in the old order, then added ones in the new order."""

    @property
    def unchanged(self) -> bool:
        return not self.changes

    def resetting(self) -> tuple[RuleChange, ...]:
        return tuple(change for change in self.changes if change.resets_counters)

    def lines(self) -> list[str]:
        """One line per change, for a page or a terminal."""
        if not self.changes:
            return ["no change"]
        return [f"{change.kind.value} {change.rule_id}: {change.explanation}" for change in self.changes]


def has_rule_id(rule: Rule) -> bool:
    """Whether the sheet gave the rule a RuleId (else its id is the content id)."""
    return rule.rule_id != content_rule_id(rule)


def diff_rules(before: Iterable[Rule], after: Iterable[Rule]) -> RulesDiff:
    """The changes from `before` to `after` (module docstring)."""
    old = {rule.rule_id: rule for rule in before}
    new = {rule.rule_id: rule for rule in after}
    changes: list[RuleChange] = []
    gone = [rule for rule_id, rule in old.items() if rule_id not in new]
    added = [rule for rule_id, rule in new.items() if rule_id not in old]
    for rule_id, rule in old.items():
        if rule_id in new and _content(new[rule_id]) != _content(rule):
            fields = _fields(rule, new[rule_id])
            changes.append(RuleChange(ChangeKind.CHANGED, rule_id, rule, new[rule_id], fields, False,
                                      f"{', '.join(fields)} changed; it keeps its RuleId, so users keep their "
                                      "counts so far and counting goes on under the new definition (users "
                                      "who already qualified are not qualified again)"))
    # Pair an old rule that had no RuleId with the new rule that took its place: the same content under a new
    # RuleId, else the same event (and rule type), first come first paired.
    replaced: dict[str, Rule] = {}
    for match in (_same_content, _same_event):
        for rule in gone:
            if has_rule_id(rule) or rule.rule_id in replaced:
                continue
            partner = next((candidate for candidate in added
                            if candidate not in replaced.values() and match(rule, candidate)), None)
            if partner is not None:
                replaced[rule.rule_id] = partner
    for rule in gone:
        partner = replaced.get(rule.rule_id)
        if partner is not None:
            changes.append(_replacement(rule, partner))
        else:
            changes.append(RuleChange(ChangeKind.REMOVED, rule.rule_id, rule, None, (), False,
                                      "removed: it stops counting; users keep what its action already set. Put "
                                      "it back with the same "
                                      + ("RuleId" if has_rule_id(rule) else "content")
                                      + " and it carries on from its counters (a date or window rule also "
                                        "counts, from the lake, what it missed meanwhile)"))
    for rule in added:
        if rule in replaced.values():
            continue
        changes.append(RuleChange(ChangeKind.ADDED, rule.rule_id, None, rule, (), True, "new rule: " + _fresh(rule)))
    return RulesDiff(tuple(changes))


def diff_published(after: Iterable[Rule], document: str) -> RulesDiff:
    """The changes from a published rules document (`RuleSet.to_json()`, e.g. a stack's) to `after`."""
    return diff_rules(RuleSet.from_json(document), after)


def diff_sheets(before: Any, after: Any) -> RulesDiff:
    """The changes from one `SheetModel` (the sheet on disk) to another (the edited one), over their valid
    rules: a row with a problem is in neither (the check shows it), so a row made bad reads as removed."""
    return diff_rules(before.check().rules, after.check().rules)


def _replacement(old: Rule, new: Rule) -> RuleChange:
    fields = _fields(old, new)
    if not fields:
        what = f"given the RuleId {new.rule_id}, so it is a new rule under that id"
        keep = f" (to keep its counts, write RuleId {old.rule_id} instead)"
    else:
        what = (f"{', '.join(fields)} changed on a rule without a RuleId, so it is a new rule "
                f"({old.rule_id} becomes {new.rule_id})")
        keep = f" (to keep its counts, undo the edit, write RuleId {old.rule_id}, then edit it)"
    return RuleChange(ChangeKind.REPLACED, new.rule_id, old, new, fields, True, f"{what}: {_fresh(new)}{keep}")


def _fresh(rule: Rule) -> str:
    backfill = ("events already in the lake are counted too (backfill)" if rule.rule_type is not RuleType.AGGREGATOR
                else "it counts events from the deployment on, none from before")
    return f"every user's count starts from 0 and users can qualify again; {backfill}"


def _content(rule: Rule) -> dict[str, Any]:
    content = rule.to_dict()
    del content["rule_id"]
    return content


def _fields(old: Rule, new: Rule) -> tuple[str, ...]:
    before, after = _content(old), _content(new)
    return tuple(_FIELD_WORDS.get(key, key) for key in before if before[key] != after.get(key))


def _same_content(old: Rule, new: Rule) -> bool:
    return _content(old) == _content(new)


def _same_event(old: Rule, new: Rule) -> bool:
    return old.event_name == new.event_name and old.rule_type is new.rule_type
