"""What changed, by RuleId, and which changes reset counters."""

from __future__ import annotations

from cli.studio.diff import ChangeKind, diff_published, diff_rules, diff_sheets, has_rule_id
from cli.studio.sheet_model import SheetModel

from .conftest import DEMO, FIXTURES, read


def demo() -> SheetModel:
    return SheetModel.from_csv(read(DEMO))


def seed() -> SheetModel:
    return SheetModel.from_csv(read(FIXTURES / "seed_guide.csv"))


def test_no_edit_and_reordering_are_no_change():
    assert diff_sheets(demo(), demo()).unchanged
    assert diff_sheets(demo(), demo().move_row(0, 3)).unchanged
    assert diff_sheets(seed(), seed().move_row(3, 0)).unchanged
    assert diff_sheets(demo(), demo()).lines() == ["no change"]


def test_changed_rule_with_rule_id_keeps_its_counters():
    (change,) = diff_sheets(demo(), demo().set_cell(0, "Target-C", "5")).changes
    assert change.kind is ChangeKind.CHANGED and change.rule_id == "push-regular"
    assert not change.resets_counters and change.fields == ("count condition",)
    assert "keep their counts" in change.explanation


def test_edit_without_rule_id_is_a_new_rule():
    before, after = seed(), seed().set_cell(0, "Target-C", "5")
    (change,) = diff_sheets(before, after).changes
    assert change.kind is ChangeKind.REPLACED and change.resets_counters
    assert change.before.rule_id != change.after.rule_id and change.fields == ("count condition",)
    assert f"write RuleId {change.before.rule_id}" in change.explanation
    assert "starts from 0" in change.explanation
    assert not has_rule_id(change.before) and not has_rule_id(change.after)


def test_giving_a_rule_id_is_a_new_rule_unless_it_is_the_content_id():
    before = seed()
    content_id = before.check().rules.rules[0].rule_id
    with_column = before.add_column("RuleId")
    (change,) = diff_sheets(before, with_column.set_cell(0, "RuleId", "opener")).changes
    assert change.kind is ChangeKind.REPLACED and change.resets_counters and change.fields == ()
    assert f"write RuleId {content_id} instead" in change.explanation
    pinned = with_column.set_cell(0, "RuleId", content_id)
    assert diff_sheets(before, pinned).unchanged
    # Pinned, an edit keeps the counters.
    (edit,) = diff_sheets(before, pinned.set_cell(0, "Target-C", "9")).changes
    assert edit.kind is ChangeKind.CHANGED and not edit.resets_counters


def test_added_removed_and_copied():
    changes = diff_sheets(demo(), demo().delete_row(3).copy_row(0)).changes
    assert [(c.kind, c.rule_id, c.resets_counters) for c in changes] == [
        (ChangeKind.REMOVED, "active-week", False), (ChangeKind.ADDED, "push-regular-copy", True)]
    assert "counts, from the lake" in changes[0].explanation
    assert "from the deployment on" in changes[1].explanation  # an aggregator rule is not backfilled
    window = diff_rules([], demo().check().rules.rules[3:]).changes[0]
    assert "backfill" in window.explanation


def test_a_bad_row_reads_as_removed():
    (change,) = diff_sheets(demo(), demo().set_cell(1, "RuleType", "monthly")).changes
    assert change.kind is ChangeKind.REMOVED and change.rule_id == "welcome-second-send"


def test_against_a_published_document():
    published = demo().check().rules.to_json()
    assert diff_published(demo().check().rules, published).unchanged
    edited = demo().set_cell(2, "FinishDate", "2026-10-31").set_cell(3, "Window", "14d").check().rules
    changes = diff_published(edited, published).changes
    assert [(c.rule_id, c.fields) for c in changes] == [("mid-october-spender", ("finish date",)),
                                                        ("active-week", ("window",))]
    assert not any(c.resets_counters for c in changes)
    assert [c.to_dict()["kind"] for c in changes] == ["changed", "changed"]
