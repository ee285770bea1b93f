"""The audience preview: the replay's own qualifications, per rule, cached per rule content."""

from __future__ import annotations

from collections import Counter

import pytest

import cli.replay
from cli.replay import ReplayOptions, replay_rules
from cli.studio.preview import AudiencePreview, SampleError, sample_from_file, sample_from_lake, summarise
from cli.studio.sheet_model import SheetModel
from functions.rules.model import RuleSet

from .conftest import DEMO, read

BATCH = 1000


@pytest.fixture(scope="module")
def demo_rules():
    return SheetModel.from_csv(read(DEMO)).check().rules


@pytest.fixture(scope="module")
def whole(sample, demo_rules):
    return replay_rules(demo_rules, sample.planned, ReplayOptions(batch_size=BATCH))


def test_preview_is_the_replays_qualifications(sample, demo_rules, synthetic_lines):
    # The replay from the raw lines (its own parse), not the sample's planned stream.
    result = replay_rules(demo_rules, synthetic_lines, ReplayOptions(batch_size=BATCH))
    previews = AudiencePreview(sample, batch_size=BATCH).preview(demo_rules)
    assert set(previews) == {rule.rule_id for rule in demo_rules}
    for rule in demo_rules:
        own = [q for q in result.qualifications if q["rule_id"] == rule.rule_id]
        preview = previews[rule.rule_id]
        assert preview.qualifications == len(own) > 0
        assert preview.users == len({q["user_id"] for q in own})
        assert preview.users_counted == sum(1 for c in result.counters if c["rule_id"] == rule.rule_id)
        assert sum(n for _, n in preview.per_day) == len(own)
        per_user = Counter(q["user_id"] for q in own)
        for example in preview.examples:
            assert example.qualifications == per_user[example.user_id]
    resetting = previews["welcome-second-send"]
    assert resetting.resets and resetting.qualifications > resetting.users  # it fires more than once per user
    assert all(not previews[r].resets and previews[r].qualifications == previews[r].users
               for r in ("push-regular", "mid-october-spender", "active-week"))


def test_examples_are_the_most_qualified_then_the_closest(sample, demo_rules, whole):
    preview = AudiencePreview(sample, batch_size=BATCH, examples=3).preview(demo_rules)["welcome-second-send"]
    assert len(preview.examples) == 3
    fires = [example.qualifications for example in preview.examples]
    assert fires == sorted(fires, reverse=True) and fires[0] == max(
        Counter(q["user_id"] for q in whole.qualifications if q["rule_id"] == "welcome-second-send").values())
    counters = {c["user_id"]: c for c in whole.counters if c["rule_id"] == "welcome-second-send"}
    assert all(example.count == counters[example.user_id]["count"] for example in preview.examples)


@pytest.mark.parametrize("index", range(4))
def test_a_rule_alone_gives_what_it_gives_in_the_whole_sheet(sample, demo_rules, whole, index):
    rule = demo_rules.rules[index]
    alone = replay_rules(RuleSet((rule,)), sample.planned, ReplayOptions(batch_size=BATCH))
    assert alone.qualifications == [q for q in whole.qualifications if q["rule_id"] == rule.rule_id]
    assert alone.counters == [c for c in whole.counters if c["rule_id"] == rule.rule_id]
    assert summarise(rule, alone.qualifications, alone.counters) == summarise(rule, whole.qualifications,
                                                                              whole.counters)


def test_an_edit_recomputes_only_the_edited_rule(sample, monkeypatch):
    runs: list[tuple[str, ...]] = []
    real = cli.replay.replay_rules

    def spy(rule_set, *args, **kwargs):
        runs.append(tuple(rule.rule_id for rule in rule_set))
        return real(rule_set, *args, **kwargs)

    monkeypatch.setattr(cli.replay, "replay_rules", spy)
    model = SheetModel.from_csv(read(DEMO))
    preview = AudiencePreview(sample, batch_size=BATCH)
    first = preview.preview(model.check().rules)
    assert runs == [("push-regular", "welcome-second-send", "mid-october-spender", "active-week")]
    again = preview.preview(model.check().rules)
    assert runs == runs[:1] and again == first and preview.last_computed == ()
    edited = model.set_cell(0, "Target-C", "1")
    second = preview.preview(edited.check().rules)
    assert runs[1:] == [("push-regular",)] and preview.last_computed == ("push-regular",)
    assert second["push-regular"].users > first["push-regular"].users
    assert all(second[r] is first[r] for r in ("welcome-second-send", "mid-october-spender", "active-week"))
    # Undoing the edit finds the first result in the cache.
    assert preview.preview(model.check().rules)["push-regular"] is first["push-regular"] and len(runs) == 2


def test_valid_rows_keep_their_preview_when_another_row_is_bad(sample, demo_rules, whole):
    bad = SheetModel.from_csv(read(DEMO)).set_cell(0, "Operator-C", "lots").check()
    assert not bad.accepted
    previews = AudiencePreview(sample, batch_size=BATCH).preview(bad.rules)
    assert set(previews) == {"welcome-second-send", "mid-october-spender", "active-week"}
    for rule_id, preview in previews.items():
        assert preview == summarise(demo_rules.by_id(rule_id), whole.qualifications, whole.counters)


def test_cache_is_bounded(sample, demo_rules):
    preview = AudiencePreview(sample, batch_size=BATCH, cache_rules=1)
    preview.preview(demo_rules.rules[:1])
    preview.preview(demo_rules.rules[1:2])
    assert len(preview._cache) == 1


def test_lake_directory_gives_the_same_preview(sample, demo_rules, tmp_path):
    from functions.retraining.lake import write_lake

    events = list(sample.events())
    half = len(events) // 2
    write_lake(events[:half], tmp_path, part=0)
    write_lake(events[half:], tmp_path, part=1)
    lake = sample_from_lake(tmp_path)
    assert lake.records == len(events)
    assert sorted(e.to_json() for e in lake.events()) == sorted(e.to_json() for e in events)
    arrivals = [record.arrival_ms for record in lake.planned.records]
    assert arrivals == sorted(arrivals)
    from_lake = AudiencePreview(lake, batch_size=BATCH).preview(demo_rules)
    from_stream = AudiencePreview(sample, batch_size=BATCH).preview(demo_rules)
    for rule_id in from_stream:
        assert (from_lake[rule_id].users, from_lake[rule_id].qualifications, from_lake[rule_id].per_day) == (
            from_stream[rule_id].users, from_stream[rule_id].qualifications, from_stream[rule_id].per_day)


def test_events_file_and_errors(tmp_path, synthetic_lines):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(synthetic_lines[:200]) + "\nnot json\n", encoding="utf-8")
    loaded = sample_from_file(path)
    assert loaded.records == 200 and loaded.skipped == 1
    with pytest.raises(SampleError, match="no such file"):
        sample_from_file(tmp_path / "missing.jsonl")
    with pytest.raises(SampleError, match="no lake files"):
        sample_from_lake(tmp_path)
