"""The plain-words reports of the local tools (`demo`, `rules replay`, `interactions preview`).

A report starts with what a marketer asks — who qualified, for which rule, when, and what the action did, in
plain words — and puts the engine's figures (batches, DynamoDB requests, outbox, sinks) after, under their own
heading. When scored engagement exists but no interaction could be built, `why_no_interactions` says why and
what to send. Tables are pandas frames printed as plain text (`table`); no timings, so the same input gives
the same report.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

USERS_SHOWN = 5
"""Users named per rule in a report; the full list is in the qualifications CSV / the JSON."""
STREAM_TYPES_SHOWN = 14
EXPOSURE_TYPE = "_custom.recommender"
_OPERATOR_WORDS = {"equal": "exactly", "greater": "more than", "at_least": "at least"}


# --- formatting ----------------------------------------------------------------------------------------


def count(number: int, noun: str, plural: str | None = None) -> str:
    """`1 record`, `1,234 records`: every count in the reports is printed this way."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def moment(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def shown(path: Path | None) -> str:
    """A path as the user would type it: relative to the working folder when it is inside it."""
    if path is None:
        return "-"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def table(frame, *, right: Sequence[str] = (), indent: str = "  ") -> str:
    """`frame` as a plain-text table: text left-aligned, the `right` columns right-aligned."""
    columns = [str(column) for column in frame.columns]
    cells = [[str(value) for value in row] for row in frame.itertuples(index=False)]
    widths = [max([len(column), *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return indent + "  ".join(value.rjust(width) if column in right else value.ljust(width)
                                  for value, width, column in zip(values, widths, columns)).rstrip()

    return "\n".join([line(columns), line(["-" * width for width in widths]), *map(line, cells)])


# --- rules in plain words ------------------------------------------------------------------------------


def _times(target: int) -> str:
    return "1 time" if target == 1 else f"{target:,} times"


def rule_in_words(rule: Any) -> str:
    """Who the rule is for, from its fields: `users who did purchase with a total amount of at least 100
    between 2026-10-08 and 2026-10-21`."""
    what = rule.event_name
    if rule.attribute_filter:
        what += f" with {rule.attribute_filter.name} = {rule.attribute_filter.value}"
    conditions = []
    if rule.count_condition:
        words = _OPERATOR_WORDS[rule.count_condition.operator.value]
        conditions.append(f"{words} {_times(rule.count_condition.target)}")
    if rule.sum_condition:
        metric = rule.sum_condition.metric_name or "of each record's first metric"
        words = _OPERATOR_WORDS[rule.sum_condition.operator.value]
        conditions.append(f"with a total {metric} of {words} {rule.sum_condition.target:,}")
    if rule.window_days is not None:
        scope = f"in the last {rule.window_days} days"
    elif rule.start_date and rule.finish_date:
        scope = f"between {rule.start_date.isoformat()} and {rule.finish_date.isoformat()} (UTC, both days in)"
    else:
        scope = "at any time"
    return f"users who did {what} {' and '.join(conditions)}, {scope}"


def action_in_words(rule: Any) -> str:
    """What the rule's action does, e.g. `sets attribute X to ready, once per user` (the model's phrasing)."""
    return rule.action_description


def rejections_line(reasons: dict[str, int]) -> str:
    """`2 records rejected: <reason> (×2); <reason> (×1)`, most frequent first — the line before WHO QUALIFIED."""
    ordered = sorted(reasons.items(), key=lambda pair: (-pair[1], pair[0]))
    return (f"{count(sum(reasons.values()), 'record')} rejected: "
            + "; ".join(f"{reason} (×{number:,})" for reason, number in ordered))


# --- who qualified -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    rule: Any
    counted: int
    qualifications: list[dict[str, Any]]

    @property
    def users(self) -> list[str]:
        return sorted({q["user_id"] for q in self.qualifications})


def outcomes(rule_set: Iterable[Any], qualifications: Sequence[dict[str, Any]],
             counters: Sequence[dict[str, Any]]) -> list[RuleOutcome]:
    return [RuleOutcome(rule, sum(1 for c in counters if c["rule_id"] == rule.rule_id),
                        [q for q in qualifications if q["rule_id"] == rule.rule_id]) for rule in rule_set]


def who_qualified(rule_set: Iterable[Any], qualifications: Sequence[dict[str, Any]],
                  counters: Sequence[dict[str, Any]], *, full_list: str) -> list[str]:
    """The marketer's section: one row per rule, then each rule in words with the first users who qualified."""
    import pandas as pd

    found = outcomes(rule_set, qualifications, counters)
    users = {q["user_id"] for q in qualifications}
    lines = [f"WHO QUALIFIED  {count(len(users), 'user')}, {count(len(qualifications), 'qualification')} "
             f"({full_list})", ""]
    rows = [{"rule id": o.rule.rule_id, "users counted": f"{o.counted:,}",
             "qualifications": f"{len(o.qualifications):,}", "users qualified": f"{len(o.users):,}",
             "first … last qualification": (f"{day(min(q['event_time_ms'] for q in o.qualifications))} … "
                                            f"{day(max(q['event_time_ms'] for q in o.qualifications))}"
                                            if o.qualifications else "-"),
             "action": o.rule.action_name} for o in found]
    if rows:
        lines.append(table(pd.DataFrame(rows), right=("users counted", "qualifications", "users qualified")))
    else:
        lines.append("  the sheet has no rules: nothing is counted")
    for o in found:
        lines += ["", f"  {o.rule.rule_id}: {rule_in_words(o.rule)}",
                  f"    action: {action_in_words(o.rule)}"]
        if not o.qualifications:
            lines.append("    nobody qualified" + (f" ({count(o.counted, 'user')} counted so far)" if o.counted else ""))
            continue
        first: dict[str, int] = {}
        for q in o.qualifications:  # qualifications come in event-time order
            first.setdefault(q["user_id"], q["event_time_ms"])
        named = [f"{user} ({moment(at)})" for user, at in list(first.items())[:USERS_SHOWN]]
        more = len(first) - len(named)
        lines.append("    who, first time: " + ", ".join(named) + (f", … and {more:,} more" if more else ""))
        repeats = len(o.qualifications) - len(first)
        if repeats:
            lines.append(f"    {count(repeats, 'repeat qualification')} (the action ran again after a reset)")
    return lines


def qualifications_frame(rule_set: Iterable[Any], qualifications: Sequence[dict[str, Any]]):
    """Every qualification as a marketer's table: rule, user, when (UTC), what happened."""
    import pandas as pd

    words = {rule.rule_id: action_in_words(rule) for rule in rule_set}
    return pd.DataFrame([{"rule_id": q["rule_id"], "user_id": q["user_id"],
                          "qualified_at_utc": datetime.fromtimestamp(q["event_time_ms"] / 1000, tz=timezone.utc)
                          .strftime("%Y-%m-%dT%H:%M:%SZ"),
                          "action": words.get(q["rule_id"], q["action"])} for q in qualifications],
                        columns=["rule_id", "user_id", "qualified_at_utc", "action"])


def engine_figures(stats: dict[str, Any], *, batch_size: int | None = None) -> list[str]:
    """The engine's own figures, for whoever runs it: calls, batches, requests or store writes, outbox, faults."""
    batches = f" (batches of up to {batch_size:,})" if batch_size else ""
    if stats.get("engine") == "memory":
        operations = stats["store_operations"]
        workers = stats.get("workers", 1)
        return [f"  memory engine: {count(stats['aggregator_invocations'], 'batch', 'batches')}{batches}, "
                f"{count(workers, 'process', 'processes')}; {count(operations.get('writes', 0), 'counter write')} "
                f"for {count(operations.get('pairs_applied', 0), 'matched event')}, "
                f"{count(operations.get('duplicates_skipped', 0), 'duplicate')} skipped",
                f"  {count(stats['outbox_entries'], 'outbox entry', 'outbox entries')}, read as the EventBridge "
                "sink would send them (no dispatcher, no AWS: --engine aws runs the real handlers on moto)"]
    lines = [f"  {count(stats['aggregator_invocations'], 'aggregator call')}{batches}, "
             f"{count(stats['dynamodb_requests']['total'], 'DynamoDB request')}, "
             f"{count(stats['dispatcher_invocations'], 'dispatcher call')}",
             f"  {count(stats['outbox_entries'], 'outbox entry', 'outbox entries')}, "
             f"{stats['dead_lettered']:,} dead-lettered; engine events on the bus: "
             f"{stats['engine_events']['RuleQualified']:,} RuleQualified, "
             f"{stats['engine_events']['RuleExited']:,} RuleExited"]
    if stats.get("duplicates_sent") or stats.get("failures_injected"):
        lines.append(f"  faults: {count(stats['duplicates_sent'], 'duplicate')} sent, "
                     f"{count(stats['failures_injected'], 'failure')} injected")
    return lines


# --- interactions --------------------------------------------------------------------------------------


def why_no_interactions(events: Sequence[Any], scoring: Any, *, attribution_days: int,
                        exclude_streamed: bool = False) -> list[str]:
    """When the dataset is empty: why, and what to send. Empty when there are interactions to build or
    nothing scored at all is not the question (the caller decides when to ask)."""
    scored = [e for e in events if e.event_type in scoring.values]
    types = ", ".join(sorted(scoring.values))
    if not scored:
        return [f"  No interaction can be built: no event has a type the scoring model values ({types}).",
                "  Send engagements of those types, or give the stream's event types a value in the scoring model."]
    exposures = sum(1 for e in events if e.event_type == EXPOSURE_TYPE)
    with_item = sum(1 for e in scored if e.item_id)
    kinds = ", ".join(f"{t} ×{n:,}" for t, n in _most_common(e.event_type for e in scored))
    lines = [f"  {count(len(scored), 'scored engagement')} ({kinds}), but no interaction can be built:"]
    if not exposures and not with_item:
        lines += [f"  the records hold no {EXPOSURE_TYPE} exposures and none of the engagements carries an item_id.",
                  "  Send either the recommendation exposures (" + EXPOSURE_TYPE + " records with the attributes "
                  "personalize_user_id, item_id and campaign_id or journey_id, as the exposure tracker writes them),",
                  "  or an item_id on each engagement (the app record's \"item_id\"; an engagement with its own "
                  "item_id is an interaction by itself)."]
    elif exclude_streamed and with_item:
        # An engagement with its own item_id is the row the event tracker streams: --exclude-streamed drops it.
        lines += [f"  {count(with_item, 'engagement')} with an item_id, all left out as streamed: the event tracker "
                  "sends them with PutEvents (--exclude-streamed, the default when the stack file's "
                  "realTimeEvents is on)"
                  + (f", and none of the {count(exposures, 'exposure')} is of the same endpoint and campaign "
                     f"(or journey) as an engagement within {attribution_days} days" if exposures else "") + ".",
                  "  To count them here, run with --no-exclude-streamed (or set engagement-loop:realTimeEvents "
                  "to false in the stack file)."]
    else:
        lines += [f"  {count(exposures, 'exposure')} and {count(with_item, 'engagement')} with an item_id, but no "
                  "exposure is of the same endpoint and campaign (or journey) as an engagement, arriving no more "
                  f"than {attribution_days} days before it —",
                  "  or the run date and history days leave the engagements out. Check the exposures' endpoint "
                  "(client.client_id) and campaign_id/journey_id, and --as-of / --history-days."]
    return lines


def _most_common(values: Iterable[str]) -> list[tuple[str, int]]:
    from collections import Counter

    return Counter(values).most_common()


# --- the demo's report ---------------------------------------------------------------------------------


def demo_report(*, spec: Any, rules_path: Path, rules_summary: str, rule_set: Any, scoring_path: Path,
                scoring: Any, facts: Any, result: Any, interactions: Sequence[Any], query: Any,
                outputs: Any, partitions: int, batch_size: int) -> str:
    """Who qualified and what it did; the interactions dataset; then the stream and the engine's figures;
    the outputs last."""
    import pandas as pd

    from functions.retraining.minimums import (
        MIN_ACTIVE_USERS, MIN_INTERACTIONS, MIN_INTERACTIONS_PER_ACTIVE_USER, shortfalls,
    )
    from functions.retraining.sql import INTERACTIONS_COLUMNS

    stats = result.stats
    events = [event for _, event in facts.events]
    engine = ("the RuleEngine in memory" if result.stats.get("engine") == "memory"
              else "the RuleEngine's real handlers on moto's embedded AWS")
    lines: list[str] = [f"engagement-loop demo — the whole loop locally, {engine}", ""]
    lines += who_qualified(rule_set, result.qualifications, result.counters,
                           full_list=f"every one in {shown(outputs.qualifications)}")

    # Interactions
    inter = pd.DataFrame([tuple(row) for row in interactions], columns=list(INTERACTIONS_COLUMNS))
    per_event = []
    for event_type, value in sorted(scoring.values.items(), key=lambda pair: (-pair[1], pair[0])):
        part = inter[inter["EVENT_TYPE"] == event_type]
        per_event.append({"EVENT_TYPE": event_type, "EVENT_VALUE": f"{value:g}", "rows": f"{len(part):,}",
                          "users": f"{part['USER_ID'].nunique():,}", "items": f"{part['ITEM_ID'].nunique():,}"})
    per_event.append({"EVENT_TYPE": "(all)", "EVENT_VALUE": "", "rows": f"{len(inter):,}",
                      "users": f"{inter['USER_ID'].nunique():,}", "items": f"{inter['ITEM_ID'].nunique():,}"})
    active = int((inter.groupby("USER_ID").size() >= MIN_INTERACTIONS_PER_ACTIVE_USER).sum()) if len(inter) else 0
    failing = shortfalls(len(inter), active)
    readiness = (f"NOT READY — fails the minimum {' and '.join(failing)}" if failing else
                 f"ready — {len(inter):,} interactions ≥ {MIN_INTERACTIONS:,}; {active:,} users with "
                 f"≥ {MIN_INTERACTIONS_PER_ACTIVE_USER} interactions ≥ {MIN_ACTIVE_USERS:,}")
    lines += ["", f"INTERACTIONS FOR PERSONALIZE  scoring {shown(scoring_path)}; run date {query.as_of}, all "
                  f"history, exposures credited up to {query.attribution_days} days back", "",
              table(pd.DataFrame(per_event), right=("EVENT_VALUE", "rows", "users", "items")),
              f"  users: {inter['USER_ID'].nunique():,} ({active:,} with ≥ {MIN_INTERACTIONS_PER_ACTIVE_USER} "
              f"interactions)   items: {inter['ITEM_ID'].nunique():,}",
              f"  Personalize readiness: {readiness}"]
    if not len(inter):
        lines += why_no_interactions(events, scoring, attribution_days=query.attribution_days)

    # Stream
    if spec is not None:
        source = (f"synthetic, {spec.users:,} users over {spec.days} days, {spec.first_day} … {spec.last_day} UTC "
                  f"(seed {spec.seed}) → {shown(outputs.events)}")
    else:
        source = shown(outputs.events)
    rejected = sum(facts.rejected.values())
    lines += [
        "", f"STREAM  {source}",
        f"  {facts.records:,} records: event times {day(min(e.event_time_ms for e in events))} … "
        f"{day(max(e.event_time_ms for e in events))}, last arrival {day(max(a for a, _ in facts.events))}",
        f"  {count(facts.duplicates, 'producer duplicate')} (an event id again), "
        f"{count(facts.late, 'late arrival')} (> 1 h after the event), {rejected:,} rejected, "
        f"{stats['without_user']:,} without a user",
    ]
    lines += [f"  rejected {number:,}×: {reason}" for reason, number in facts.rejected.most_common(5)]
    frame = pd.DataFrame({"event type": [e.event_type for e in events], "user": [e.user_id for e in events],
                          "source": [e.source.value for e in events]})
    per_type = (frame.groupby("event type")
                .agg(source=("source", lambda s: "/".join(sorted(set(s)))), records=("user", "size"),
                     users=("user", "nunique"))
                .reset_index().sort_values(["records", "event type"], ascending=[False, True]))
    head = per_type.head(STREAM_TYPES_SHOWN)
    lines += ["", table(head.assign(records=head["records"].map("{:,}".format),
                                    users=head["users"].map("{:,}".format)), right=("records", "users"))]
    if len(per_type) > STREAM_TYPES_SHOWN:
        lines.append(f"  … and {len(per_type) - STREAM_TYPES_SHOWN} more event types")

    # Engine figures
    dispatched, in_memory = stats["dispatched"], stats.get("engine") == "memory"
    sinks = pd.DataFrame([
        {"sink": "EventBridge", "delivered": "-" if in_memory else f"{dispatched.get('eventbridge', 0):,}",
         "detail": ("not run by the memory engine (demo --engine aws dispatches to a bus on moto)" if in_memory
                    else "bus engagement-rules (RuleQualified and RuleExited events)")},
        {"sink": "Amazon Pinpoint", "delivered": "-",
         "detail": "not configured in the demo (legacy projects; stack config engagement-loop:pinpointProjectId)"},
        {"sink": "Amazon Connect Customer Profiles", "delivered": "-",
         "detail": "not configured in the demo (stack config engagement-loop:connectDomainName)"},
    ])
    path = ("the aggregator's code (counters and outbox in memory)" if in_memory
            else "Kinesis → aggregator (DynamoDB counters, outbox) → dispatcher → sinks")
    lines += ["", f"ENGINE FIGURES  {shown(rules_path)} → {path}", ""]
    lines += ["  " + line for line in rules_summary.splitlines()[1:]]
    lines += ["", *engine_figures(stats, batch_size=batch_size), "", table(sinks, right=("delivered",))]

    # Outputs
    where = [("events", outputs.events, "raw stream records, one per line"),
             ("qualifications", outputs.qualifications, "who qualified, for which rule, when, what it did"),
             ("replay", outputs.replay, "the RuleEngine run: qualifications, counters, stats"),
             ("lake", outputs.lake / "events", f"Parquet, {partitions} dt= partitions by arrival day"),
             ("interactions", outputs.interactions, "the Personalize interactions dataset"),
             ("chart", outputs.chart, "qualifications over time per rule, interactions per day"),
             ("report", outputs.report, "this report")]
    paths = [shown(path) for _, path, _ in where]
    name_width, path_width = max(len(name) for name, _, _ in where), max(map(len, paths))
    lines += ["", "OUTPUTS"] + [f"  {name:<{name_width}}  {path:<{path_width}}  {what}"
                                for (name, _, what), path in zip(where, paths)]
    return "\n".join(lines)
