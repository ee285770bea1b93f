"""The demo's chart: rule qualifications over time, and Personalize interactions per day.

Drawn for people who read charts, not engines: whole-number ticks on counts, legends outside the plotting
area (so they never cover data), headroom above the tallest bar or step, every series in its own colour and
visible even when it stays at 0, and no date axis at all when a panel has no data (an empty date axis starts
in 1970). `draw_chart` returns the matplotlib `Figure`, so tests inspect its axes rather than its pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

HEADROOM = 1.15
"""The value axis reaches this much above the tallest step or bar."""


def _colours(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _counts_axis(axes, highest: float) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    # Below 0 a little, so a series that stays at 0 is drawn above the axis line, not on it.
    axes.set_ylim(-0.02 * max(highest, 1) * HEADROOM, max(highest, 1) * HEADROOM)


def _empty(axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, fontsize=11)
    axes.set_xticks([])
    axes.set_yticks([])


def draw_chart(path: Path | None, qualifications: Sequence[dict[str, Any]], rule_ids: Sequence[str],
               interactions: Sequence[Any], *, title: str):
    """Two panels: cumulative qualifications per rule by the qualifying event's day; interactions per arrival
    day, stacked by event type. Saved to `path` when given; returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import pandas as pd
    from matplotlib.figure import Figure

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = Figure(figsize=(12, 8.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1)
    figure.suptitle(title, fontsize=13, fontweight="bold")

    quals = pd.DataFrame(list(qualifications), columns=["rule_id", "user_id", "action", "name", "value",
                                                        "event_time_ms"])
    quals = quals.assign(day=pd.to_datetime(quals["event_time_ms"], unit="ms", utc=True)
                         .dt.tz_localize(None).dt.normalize())
    inter = pd.DataFrame([tuple(row) for row in interactions],
                         columns=["USER_ID", "ITEM_ID", "EVENT_TYPE", "EVENT_VALUE", "TIMESTAMP"])
    inter["day"] = pd.to_datetime(inter["TIMESTAMP"], unit="s", utc=True).dt.tz_localize(None).dt.normalize()

    days = pd.concat([quals["day"], inter["day"]])
    span = (pd.date_range(days.min(), days.max() + pd.Timedelta(days=1), freq="D") if len(days) else None)

    top.set_title("Rule qualifications over time (cumulative, by the qualifying event's day, UTC)")
    if len(quals) and rule_ids:
        highest, lines, names = 0, [], []
        for rule_id, colour, style in zip(rule_ids, _colours(len(rule_ids)), _styles(len(rule_ids))):
            per_day = quals[quals["rule_id"] == rule_id].groupby("day").size().reindex(span, fill_value=0)
            total = per_day.cumsum()
            highest = max(highest, int(total.max()))
            # Markers and line styles tell apart rules whose steps coincide.
            (line,) = top.step(span, total, where="post", linewidth=2, color=colour, linestyle=style,
                               marker="o", markersize=3)
            lines.append(line)
            names.append(f"{rule_id} ({int(per_day.sum()):,})")
        _counts_axis(top, highest)
        top.set_ylabel("qualifications")
        top.grid(True, alpha=0.3)
        top.legend(lines, names, title="rule (qualifications)", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
                   title_fontsize=9, borderaxespad=0)
    else:
        _empty(top, "no rule qualified" if rule_ids else "the sheet has no rules")

    bottom.set_title("Personalize interactions per day (arrival day of the engagement, UTC)")
    if len(inter):
        table = inter.groupby(["day", "EVENT_TYPE"]).size().unstack(fill_value=0)
        table = table.reindex(span[:-1], fill_value=0)
        table = table[table.sum().sort_values(ascending=False).index]
        base, handles, labels = None, [], []
        for event_type, colour in zip(table.columns, _colours(len(table.columns))):
            # Each bar spans its own day, as the steps above do. Explicit labels: matplotlib leaves out
            # labels starting with "_" (as Pinpoint's event types do).
            handles.append(bottom.bar(table.index, table[event_type], width=0.85, align="edge", bottom=base,
                                      color=colour, edgecolor="white", linewidth=0.3))
            labels.append(f"{event_type} ({int(table[event_type].sum()):,})")
            base = table[event_type] if base is None else base + table[event_type]
        bottom.legend(handles, labels, title="event type (rows)", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=9, title_fontsize=9, borderaxespad=0)
        _counts_axis(bottom, float(base.max()))
        bottom.set_ylabel("interactions")
        bottom.grid(True, axis="y", alpha=0.3)
    else:
        _empty(bottom, "no interactions")

    if span is not None:
        for axes in (top, bottom):
            if not axes.has_data():
                continue
            axes.set_xlim(span[0], span[-1])  # one time axis for both panels
            axes.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, round(len(span) / 10))))
            axes.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
            axes.set_xlabel("day (UTC)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    return figure


def _styles(n: int) -> list[str]:
    return [("-", "--", "-.", ":")[i % 4] for i in range(n)]
