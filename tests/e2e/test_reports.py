"""Issue 11 item 6: reports and charts for marketing people — what the user reads first, and chart properties
inspected on the matplotlib figure (not pixels)."""

from __future__ import annotations

import json
from pathlib import Path

from cli.__main__ import main
from cli.charts import draw_chart

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DAY_MS = 86_400_000
START_MS = 1_793_500_000_000


def _qualification(rule_id: str, user: str, day: int) -> dict:
    return {"rule_id": rule_id, "user_id": user, "action": "event", "name": f"trk_{rule_id}", "value": None,
            "event_time_ms": START_MS + day * DAY_MS}


def _figure(quals, rules, interactions):
    figure = draw_chart(None, quals, rules, interactions, title="t")
    figure.canvas.draw()
    return figure


def test_chart_counts_have_integer_ticks_headroom_outside_legends_and_every_series_visible():
    quals = [_qualification("big", f"u{i}", i % 3) for i in range(7)] + [_qualification("small", "u1", 1)]
    inter = [("u1", "i1", "_email.open", 1.0, START_MS // 1000 + d * 86_400) for d in (0, 0, 1, 2)]
    inter += [("u2", "i2", "purchase", 5.0, START_MS // 1000 + 86_400)]
    figure = _figure(quals, ["big", "small", "never"], inter)
    top, bottom = figure.axes[:2]
    renderer = figure.canvas.get_renderer()
    for axes, tallest in ((top, 7), (bottom, 2)):  # day 0: two opens; day 1: an open and a purchase
        assert all(float(tick).is_integer() for tick in axes.get_yticks()), axes.get_title()
        low, high = axes.get_ylim()
        assert high >= tallest * 1.1 and low < 0, "headroom above the tallest, a zero series above the axis line"
        legend = axes.get_legend()
        assert legend is not None
        assert not legend.get_window_extent(renderer).overlaps(axes.get_window_extent(renderer)), \
            "the legend sits outside the plotting area"
        assert not any("1970" in label.get_text() for label in axes.get_xticklabels())
    lines = top.get_lines()
    assert len(lines) == 3 and len({line.get_color() for line in lines}) == 3 and \
        len({line.get_linestyle() for line in lines}) == 3, "every rule drawn, each told apart"
    assert [text.get_text() for text in top.get_legend().get_texts()] == ["big (7)", "small (1)", "never (0)"]
    colours = {patch.get_facecolor() for container in bottom.containers for patch in container}
    assert len(bottom.containers) == 2 and len(colours) == 2
    assert [text.get_text() for text in bottom.get_legend().get_texts()] == ["_email.open (4)", "purchase (1)"]


def test_chart_without_data_has_no_1970_axis():
    figure = _figure([], ["a"], [])
    for axes in figure.axes[:2]:
        assert list(axes.get_xticks()) == [] and list(axes.get_yticks()) == []
        assert not any("1970" in label.get_text() for label in axes.get_xticklabels())
        assert axes.get_legend() is None
    assert {text.get_text() for axes in figure.axes[:2] for text in axes.texts} == {"no rule qualified",
                                                                                  "no interactions"}
    figure = _figure([_qualification("a", "u", 0)], ["a"], [])  # one panel with data: the other has no axis
    assert figure.axes[0].get_xticklabels() and not list(figure.axes[1].get_xticks())


def test_the_replay_report_starts_with_who_qualified_in_plain_words(capsys):
    assert main(["rules", "replay", "--rules", str(FIXTURES / "replay" / "rules.csv"),
                 str(FIXTURES / "replay" / "events.jsonl")]) == 0
    out = capsys.readouterr().out
    # the fixture's one rejected record is said in one line first, then who qualified
    assert out.startswith("1 record rejected: app record: unsupported schema 'engagement-loop/v2'")
    assert out.splitlines()[2].startswith("WHO QUALIFIED  ")
    assert out.index("WHO QUALIFIED") < out.index("ENGINE FIGURES") < out.index("counter write")
    assert "buyer: users who did purchase at least 3 times, at any time" in out
    assert "    action: sets attribute purchase to ready, once per user" in out
    assert "    action: fires event trk_big_spender each time the rule is met, then counts again from 0" in out
    assert "who, first time: u-4 (2026-11-04 22:49 UTC)" in out


def test_scored_engagement_without_exposures_or_items_says_why_and_what_to_send(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(json.dumps({"schema": "engagement-loop/v1", "event_type": "purchase",
                                            "event_time_ms": START_MS + i, "user_id": f"u-{i}"})
                                for i in range(3)) + "\n", encoding="utf-8")
    assert main(["interactions", "preview", "--scoring", str(FIXTURES / "interactions" / "scoring.csv"),
                 str(events), "--out", str(tmp_path / "out.csv")]) == 0
    out = capsys.readouterr().out
    assert "3 scored engagements (purchase ×3), but no interaction can be built:" in out
    assert "no _custom.recommender exposures and none of the engagements carries an item_id" in out
    assert "personalize_user_id, item_id and campaign_id or journey_id" in out


def test_the_demo_report_puts_the_marketers_answers_first(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["demo", "--events", str(FIXTURES / "replay" / "events.jsonl"), "--rules",
                 str(FIXTURES / "replay" / "rules.csv"), "--scoring", str(FIXTURES / "interactions" / "scoring.csv"),
                 "--out", str(out)]) == 0
    report = capsys.readouterr().out
    headings = [line.split("  ")[0] for line in report.splitlines() if line[:1].isupper()]
    assert headings == ["WHO QUALIFIED", "INTERACTIONS FOR PERSONALIZE", "STREAM", "ENGINE FIGURES", "OUTPUTS"]
    assert "no _custom.recommender exposures" in report  # the replay fixture has scored purchases, no items
    rows = (out / "qualifications.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "rule_id,user_id,qualified_at_utc,action" and len(rows) == 1 + 50
