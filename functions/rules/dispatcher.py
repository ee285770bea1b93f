"""Action dispatcher: outbox entries (from the outbox table's DynamoDB stream) → the configured sinks.

Each INSERT record of the outbox table is one `OutboxEntry` (written in the same transaction as the
counter change that produced it). For each configured sink the entry's item does not list in
`delivered_sinks` yet, the dispatcher delivers it — retrying throttling and service faults a few times
in-process — and then adds the sink's name to `delivered_sinks` with a conditional UpdateItem. When every
sink is done the item's `status` becomes `delivered`. The guarantees, dead letters and reconciliation are
written up in docs/actions.md.

At least once per sink, and once as far as the outbox can tell: a stream record delivered again (Lambda
retries a batch from its first failed record, and streams are at-least-once) reads the item first (a
strongly consistent read) and skips the sinks it lists. The window that remains is a crash between a sink's
call and its mark, or the reconciler taking an entry the live dispatcher is still on: that sink gets the
entry again. EventBridge consumers de-duplicate on the detail's `key`, Pinpoint events carry the key as
their event id, and attribute updates are idempotent.

Attribute actions are last-writer-wins at every target, so an attribute change is never delivered once a
later change of the same rule and user exists in the outbox (`OutboxTable.later_change`; the order comes
from the entry keys, see `outbox.ChangePosition`): its status becomes `superseded`. The later change is
delivered on its own (live, by the reconciler, or from the dead-letter queue). The check comes before the
sink calls, which take time; a later change that appears meanwhile is delivered again after them
(`reassert_later`), so it still wins — at the last-writer-wins sinks only: a profile object
(`profile_objects.ProfileObjectSink`) is an occurrence an event trigger may start a campaign on, so it is
never put again to restore a state; and a superseded change still writes its own object (only the
last-writer-wins sinks are superseded). `trk_…` event actions are each their own action and are always
delivered.

A sink may answer that it cannot take the entry yet (`sinks.NotYet`: in create mode, the profile Customer
Profiles is creating from the entry's object): that sink stays unmarked, the entry stays pending for the
reconciler (`OutboxTable.wait`, which records when the wait began), and after MAX_NOT_YET_MS of waiting the
answer becomes a skip.

A sink that still fails after its retries does not block the stream: the entry, the failed sinks and
the errors go to the dead-letter queue (`python -m cli actions replay` redelivers them), the item's status
becomes `dead_lettered`, and the record counts as processed. Only when the dead-letter queue or the outbox
table cannot be written does the record fail, so Lambda retries it — nothing is lost. Settling an entry
(delivered, dead-lettered, superseded) removes its `pending_shard`, which takes it out of the outbox's
sparse pending index; what stays there too long is re-dispatched by `functions.rules.reconcile` through
`handle_entry`, this module's own code.

The table's stream must carry new images (`NEW_IMAGE` or `NEW_AND_OLD_IMAGES`). MODIFY records (the
dispatcher's own marks) and REMOVE records (TTL) are ignored; the event source mapping should also filter on
`eventName = INSERT` so that they do not even invoke the function.

Metrics (Powertools, per invocation): `EntriesDelivered`, `EntriesDeadLettered`, `EntriesAlreadySettled`,
`EntriesSuperseded`, and per sink `DeliveredTo_<sink>`, `SkippedBy_<sink>`, `SinkRetries_<sink>` (in-process
retries of retryable failures), plus `ProfilesCreated` (`sink_counts`).

Environment (read once, by `DispatcherSettings.from_env`):
- `OUTBOX_TABLE` (required): the outbox table's name;
- `EVENT_BUS_NAME` (required): the EventBridge bus of `RuleQualified` / `RuleExited`;
- `DEAD_LETTER_QUEUE_URL` (required): the SQS queue of entries no sink retry could deliver;
- `PINPOINT_APPLICATION_ID` (optional): a Pinpoint project to update;
- `CONNECT_DOMAIN_NAME` (optional): a Customer Profiles domain to update;
- `CONNECT_PROFILE_KEY` (optional, default `_account`): the search key the user id is looked up by;
- `CONNECT_OBJECT_TYPE` (optional, default `EngagementLoopQualification`): the profile object type;
- `CONNECT_UNKNOWN_USERS` (optional, `skip` or `create`, default `skip`): a user without a profile;
- `POWERTOOLS_METRICS_NAMESPACE` (optional, default `EngagementLoop`).
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Protocol, Sequence

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE
from functions.rules.model import ActionKind
from functions.rules.outbox import DeliveryStatus, OutboxEntry
from functions.rules.outbox_table import DeadLetterQueue, LaterChange, OutboxTable
from functions.rules.rules_source import Env
from functions.rules.profile_objects import (
    CUSTOMER_PROFILES_CONFIG,
    DEFAULT_OBJECT_TYPE,
    PROFILE_CREATED,
    ProfileObjectSink,
    UnknownUsers,
    read_unknown_users,
)
from functions.rules.sinks import (
    DEFAULT_PROFILE_KEY,
    CustomerProfilesSink,
    Delivered,
    EventBridgeSink,
    NotYet,
    PinpointSink,
    Sink,
    SinkError,
    is_last_writer_wins,
)

logger = Logger()



@dataclass(frozen=True, slots=True, kw_only=True)
class DispatcherSettings:
    """The function's configuration, parsed once from its environment."""

    outbox_table: str
    """The outbox table's name. Required (`OUTBOX_TABLE`)."""
    event_bus_name: str
    """Bus of `RuleQualified` / `RuleExited`. Required (`EVENT_BUS_NAME`)."""
    dead_letter_queue_url: str
    """SQS queue of undeliverable entries. Required (`DEAD_LETTER_QUEUE_URL`)."""
    pinpoint_application_id: str | None = None
    """Pinpoint project to update. Default none: no Pinpoint sink."""
    connect_domain_name: str | None = None
    """Customer Profiles domain to update. Default none: no Customer Profiles sink."""
    connect_profile_key: str = DEFAULT_PROFILE_KEY
    """Search key the user id is looked up by. Default `_account`."""
    connect_object_type: str = DEFAULT_OBJECT_TYPE
    """Profile object type of the qualification objects. Default `EngagementLoopQualification`."""
    connect_unknown_users: UnknownUsers = UnknownUsers.SKIP
    """A user without a profile under the key: skipped, or the object creates one. Default `skip`."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """CloudWatch namespace of the counts. Default `EngagementLoop`."""

    @classmethod
    def read(cls, env: Env) -> DispatcherSettings:
        """Read the settings, collecting problems in `env` (the reconciler reads the same ones)."""
        return cls(
            outbox_table=env.text("OUTBOX_TABLE", what="the outbox table's name"),
            event_bus_name=env.text("EVENT_BUS_NAME", what="the EventBridge bus name"),
            dead_letter_queue_url=env.text("DEAD_LETTER_QUEUE_URL", what="the dead-letter queue's URL"),
            pinpoint_application_id=env.text("PINPOINT_APPLICATION_ID", "") or None,
            connect_domain_name=env.text("CONNECT_DOMAIN_NAME", "") or None,
            connect_profile_key=env.text("CONNECT_PROFILE_KEY", DEFAULT_PROFILE_KEY),
            connect_object_type=env.text("CONNECT_OBJECT_TYPE", DEFAULT_OBJECT_TYPE),
            connect_unknown_users=read_unknown_users(env),
            metrics_namespace=env.text("POWERTOOLS_METRICS_NAMESPACE", DEFAULT_METRICS_NAMESPACE),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DispatcherSettings:
        """Read the settings; raises ValueError naming every missing variable."""
        env = Env(environ)
        settings = cls.read(env)
        env.check("dispatcher")
        return settings


def build_sinks(settings: DispatcherSettings, session: Any = None) -> tuple[Sink, ...]:
    """EventBridge always; Pinpoint when configured; with a Customer Profiles domain, the attribute sink and the
    object sink (one client, standard retries; the object sink first when unknown users are created)."""
    session = session or boto3.session.Session()
    sinks: list[Sink] = [EventBridgeSink(session.client("events"), settings.event_bus_name)]
    if settings.pinpoint_application_id:
        sinks.append(PinpointSink(session.client("pinpoint"), settings.pinpoint_application_id))
    if settings.connect_domain_name:
        profiles = session.client("customer-profiles", config=CUSTOMER_PROFILES_CONFIG)
        create = settings.connect_unknown_users is UnknownUsers.CREATE
        attributes = CustomerProfilesSink(profiles, settings.connect_domain_name, settings.connect_profile_key,
                                          profiles_created=create)
        objects = ProfileObjectSink(profiles, settings.connect_domain_name, settings.connect_object_type,
                                    settings.connect_profile_key, settings.connect_unknown_users)
        # In create mode the object is what creates an unknown user's profile, so it goes first; an attribute sink
        # that searches before Customer Profiles has matched it answers NotYet, and the reconciler delivers the
        # attribute once the profile exists (docs/actions.md, "Unknown users").
        sinks.extend((objects, attributes) if create else (attributes, objects))
    return tuple(sinks)


# --- The core ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """In-process attempts per sink for retryable failures (botocore's own retries come first)."""

    attempts: int = 3
    base_delay_s: float = 0.2
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        return self.base_delay_s * (2 ** (attempt - 1)) * (0.5 + random.random() / 2)  # jittered exponential


NO_RETRY_DELAY = RetryPolicy(sleep=lambda _: None)
"""For local runs and tests: the same attempts, without waiting."""


class DeliveryLog(Protocol):
    """Where the dispatcher records progress (the outbox table)."""

    def mark_delivered(self, key: str, sink_name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DispatchResult:
    """What happened to one entry: sinks delivered now, skipped (with why), done before, and failed —
    or nothing at all because a later change superseded it."""

    delivered: tuple[str, ...] = ()
    notes: tuple[tuple[str, str], ...] = ()
    """(sink, note) of deliveries that reported something (`sinks.Delivered`), e.g. a profile created."""
    skipped: tuple[tuple[str, str], ...] = ()
    already: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)
    """Sink name → the last error."""
    retries: Mapping[str, int] = field(default_factory=dict)
    """Sink name → in-process retries of retryable failures (sinks that needed none are left out)."""
    superseded_by: LaterChange | None = None
    reasserted: LaterChange | None = None
    """A later change that appeared while this one was being delivered, delivered again after it so that it
    wins at the targets this one just wrote (`reassert_later`)."""

    not_yet: Mapping[str, str] = field(default_factory=dict)
    """Sink name → why it cannot take the entry yet (`sinks.NotYet`): the entry stays pending for it."""

    @property
    def complete(self) -> bool:
        """Every sink called has the entry (delivered or skipped)."""
        return not self.failed and not self.not_yet


MAX_NOT_YET_MS = 3_600_000
"""A sink that has answered `NotYet` for an entry for longer than this (an hour since its first such answer: the
reconciler's threshold plus several runs) is taken at its word that the target will not come: the entry is
skipped for it, with the reason."""


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def dispatch(entry: OutboxEntry, delivered: frozenset[str], sinks: Sequence[Sink], *, log: DeliveryLog,
             retry: RetryPolicy = RetryPolicy(), clock_ms: Callable[[], int] = _wall_clock_ms,
             waiting_since_ms: int | None = None) -> DispatchResult:
    """Deliver `entry` to every sink not in `delivered`, recording each success in `log` as it happens.

    A sink answering `NotYet` is left unmarked (`DispatchResult.not_yet`) unless it has waited since
    `waiting_since_ms` (the outbox's `waiting_since_ms`, None when no sink waited yet) for longer than
    MAX_NOT_YET_MS: then the answer is a skip with the reason."""
    done, notes, skipped, already, failed, retries, not_yet = [], [], [], [], {}, {}, {}
    for sink in sinks:
        if sink.name in delivered:
            already.append(sink.name)
            continue
        for attempt in range(1, retry.attempts + 1):
            try:
                reason = sink.deliver(entry)
            except SinkError as error:
                if error.retryable and attempt < retry.attempts:
                    retries[sink.name] = retries.get(sink.name, 0) + 1
                    retry.sleep(retry.delay(attempt))
                    continue
                failed[sink.name] = str(error)
                logger.warning("sink failed", extra={"key": entry.key, "sink": sink.name, "error": str(error),
                                                     "attempts": attempt})
                break
            if isinstance(reason, NotYet):
                # An occurrence sink (the object) delivered in this very pass starts the wait afresh: what the
                # sink waits for (the profile the object creates) was only set going now.
                fresh = any(not is_last_writer_wins(other) for other in sinks if other.name in done)
                if fresh or waiting_since_ms is None or clock_ms() - waiting_since_ms <= MAX_NOT_YET_MS:
                    not_yet[sink.name] = reason.reason
                    logger.info("sink not ready yet; entry left pending for it",
                                extra={"key": entry.key, "sink": sink.name, "reason": reason.reason})
                    break
                reason = f"{reason.reason}, but none appeared within {MAX_NOT_YET_MS // 60_000} minutes"
            # A skip is final too: the target does not know the user, and asking again will not change that.
            if reason is None or isinstance(reason, Delivered):
                done.append(sink.name)
                if isinstance(reason, Delivered):
                    notes.append((sink.name, reason.note))
                    logger.info("sink delivered", extra={"key": entry.key, "sink": sink.name, "note": reason.note})
            else:
                skipped.append((sink.name, reason))
                logger.info("sink skipped", extra={"key": entry.key, "sink": sink.name, "reason": reason})
            log.mark_delivered(entry.key, sink.name)
            break
    return DispatchResult(delivered=tuple(done), notes=tuple(notes), skipped=tuple(skipped),
                          already=tuple(already), failed=failed, retries=retries, not_yet=not_yet)


MAX_REASSERT_ROUNDS = 10
"""`reassert_later` gives up (the reconciler takes over) after this many later changes in a row."""


class ChangeLog(DeliveryLog, Protocol):
    """What `reassert_later` needs of the outbox (`OutboxTable`)."""

    def later_change(self, entry: OutboxEntry) -> LaterChange | None: ...

    def read_entry(self, key: str) -> OutboxEntry | None: ...

    def reopen(self, key: str, sink_names: Sequence[str], now_ms: int) -> None: ...


def reassert_later(entry: OutboxEntry, written: Sequence[Sink], outbox: ChangeLog, *,
                   retry: RetryPolicy = RetryPolicy(),
                   clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> LaterChange | None:
    """After `entry` was delivered to `written`, make sure no later change of its (rule, user) lost to it.

    The supersede check comes before the sink calls, which can take seconds; a later change created and
    delivered meanwhile was then overwritten by this older one (last writer wins). So the outbox is walked
    again after them, and the newest change found is delivered again to those very sinks, after this one;
    then walked again, until a walk finds nothing newer than what was delivered last. A change created
    after that walk is delivered by its own dispatcher after its creation, so after these calls, and does
    the same. A sink that fails the redelivery is removed from the later entry's `delivered_sinks` and the
    entry set pending again (back in the pending index): the reconciler delivers it. Only last-writer-wins
    sinks are written again (`Sink.last_writer_wins`): putting a profile object again restores no state and
    could start a campaign a second time. Returns the change delivered last, None when there was none (event
    actions never have one)."""
    written = [sink for sink in written if is_last_writer_wins(sink)]
    if not written or entry.action is not ActionKind.ATTRIBUTE:
        return None
    restored: LaterChange | None = None
    for _ in range(MAX_REASSERT_ROUNDS):
        later = outbox.later_change(entry)
        if later is None or (restored is not None and later.key == restored.key):
            return restored
        later_entry = outbox.read_entry(later.key)
        if later_entry is None:
            return restored  # expired meanwhile: nothing to restore
        logger.warning("a later change appeared during delivery; delivered again after it",
                       extra={"key": entry.key, "later": later.key, "sinks": [sink.name for sink in written]})
        result = dispatch(later_entry, frozenset(), written, log=outbox, retry=retry)
        if not result.complete:
            outbox.reopen(later.key, (*result.failed, *result.not_yet), clock_ms())
        restored = later
    logger.warning("later changes kept appearing; the reconciler delivers the newest", extra={"key": entry.key})
    if restored is not None:
        outbox.reopen(restored.key, tuple(sink.name for sink in written), clock_ms())
    return restored


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """The dead-letter queue's message: the entry, the sinks that still need it, and why they failed."""

    entry: OutboxEntry
    failed_sinks: tuple[str, ...]
    errors: Mapping[str, str]
    dead_lettered_ms: int

    KIND = "engagement-loop.rules.dead-letter/v1"

    def to_json(self) -> str:
        return json.dumps({"kind": self.KIND, "entry": self.entry.to_item(), "failed_sinks": list(self.failed_sinks),
                           "errors": dict(self.errors), "dead_lettered_ms": self.dead_lettered_ms},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DeadLetter:
        """Raises ValueError for anything that is not a dispatcher dead letter."""
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("kind") != cls.KIND:
                raise ValueError(f"not a dispatcher dead letter (kind {cls.KIND!r} expected)")
            return cls(entry=OutboxEntry.from_item(document["entry"]),
                       failed_sinks=tuple(document["failed_sinks"]), errors=dict(document.get("errors") or {}),
                       dead_lettered_ms=int(document["dead_lettered_ms"]))
        except (KeyError, TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"malformed dead letter: {type(error).__name__}: {error}") from None


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the handler talks to, built once per container."""

    sinks: tuple[Sink, ...]
    outbox: OutboxTable
    dead_letters: DeadLetterQueue
    retry: RetryPolicy = RetryPolicy()
    clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000


def handle_entry(entry: OutboxEntry, runtime: Runtime) -> DispatchResult | None:
    """Dispatch one entry end to end; None when it was already settled by an earlier delivery.

    The one delivery path: the stream handler and the reconciler both call it."""
    progress = runtime.outbox.progress(entry.key)
    delivered, status = progress.delivered, progress.status
    if status is not None and status.settled:
        return None
    later = runtime.outbox.later_change(entry)
    if later is not None:
        # The later change carries the state the last-writer-wins sinks hold (attributes); an occurrence sink's
        # object is this change's own record, and the qualification it tells of may start a campaign, so it is
        # still written (docs/actions.md, "Superseded changes").
        occurrences = [sink for sink in runtime.sinks if not is_last_writer_wins(sink)]
        logger.info("entry superseded by a later change; delivered to occurrence sinks only",
                    extra={"key": entry.key, "later": later.key, "later_status": later.status,
                           "sinks": [sink.name for sink in occurrences]})
        result = replace(dispatch(entry, delivered, occurrences, log=runtime.outbox, retry=runtime.retry,
                                  clock_ms=runtime.clock_ms, waiting_since_ms=progress.waiting_since_ms),
                         superseded_by=later)
        _settle(entry, result, runtime, DeliveryStatus.SUPERSEDED)
        return result
    result = dispatch(entry, delivered, runtime.sinks, log=runtime.outbox, retry=runtime.retry,
                      clock_ms=runtime.clock_ms, waiting_since_ms=progress.waiting_since_ms)
    written = [sink for sink in runtime.sinks if sink.name in result.delivered]
    reasserted = reassert_later(entry, written, runtime.outbox, retry=runtime.retry, clock_ms=runtime.clock_ms)
    if reasserted is not None:
        result = replace(result, reasserted=reasserted)
    _settle(entry, result, runtime, DeliveryStatus.DELIVERED)
    return result


def _settle(entry: OutboxEntry, result: DispatchResult, runtime: Runtime, done: DeliveryStatus) -> None:
    """Record how the entry ended: `done` when every sink called has it; pending again (for the reconciler) when
    the only sinks without it are not ready yet; else dead-lettered."""
    now_ms = runtime.clock_ms()
    if result.complete:
        runtime.outbox.set_status(entry.key, done, now_ms)
    elif not result.failed:
        record_wait(runtime.outbox, entry.key, result, runtime.sinks, now_ms, pending=True)
    else:
        # Queue first, then mark: if the mark fails the record is retried and may queue a second letter,
        # which the replay handles (a sink done by the first is skipped), rather than lose the entry.
        # A not-yet sink rides along, in the sinks' order (the object sink, which creates the profile, before
        # the attribute sink that waits for it): the replay asks it again, and skips it once the wait is over.
        record_wait(runtime.outbox, entry.key, result, runtime.sinks, now_ms, pending=False)
        waiting = {**result.failed, **result.not_yet}
        ordered = {sink.name: waiting[sink.name] for sink in runtime.sinks if sink.name in waiting}
        runtime.dead_letters.send(DeadLetter(entry=entry, failed_sinks=tuple(ordered), errors=ordered,
                                             dead_lettered_ms=now_ms))
        runtime.outbox.set_status(entry.key, DeliveryStatus.DEAD_LETTERED, now_ms)


class WaitLog(Protocol):
    """What `record_wait` needs of the outbox (`OutboxTable`)."""

    def wait(self, key: str, now_ms: int, *, pending: bool, restart: bool = False) -> None: ...


def record_wait(outbox: WaitLog, key: str, result: DispatchResult, sinks: Sequence[Sink], now_ms: int, *,
                pending: bool) -> None:
    """Record the wait of `result`'s not-yet sinks (the live dispatcher, the reconciler and the replay alike).

    The wait is only for a profile on its way: it starts (afresh) when an occurrence sink — the object, which
    creates the profile — delivered in this pass, and is not started at all while that sink failed (nothing is
    on its way; the wait starts when a retry puts the object)."""
    if not result.not_yet:
        return
    occurrences = {sink.name for sink in sinks if not is_last_writer_wins(sink)}
    if occurrences & set(result.failed):
        return  # only on the dead-letter path: a failure never leaves the entry pending
    outbox.wait(key, now_ms, pending=pending, restart=bool(occurrences & set(result.delivered)))


# --- The handler ---------------------------------------------------------------------------------------

# Report every failed record, even all of them, so Lambda retries exactly those (an exception would too).
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)


@functools.cache
def _settings() -> DispatcherSettings:
    return DispatcherSettings.from_env()


def build_runtime(settings: DispatcherSettings, session: Any = None) -> Runtime:
    """The sinks, the outbox and the dead-letter queue the settings name (the reconciler builds the same)."""
    session = session or boto3.session.Session()
    return Runtime(sinks=build_sinks(settings, session),
                   outbox=OutboxTable(session.client("dynamodb"), settings.outbox_table),
                   dead_letters=DeadLetterQueue(session.client("sqs"), settings.dead_letter_queue_url))


@functools.cache
def _runtime() -> Runtime:
    return build_runtime(_settings())


def sink_counts(result: DispatchResult) -> Counter[str]:
    """The per-sink metrics of one result: `DeliveredTo_<sink>`, `SkippedBy_<sink>`, `SinkRetries_<sink>` and
    `ProfilesCreated` (the reconciler emits the same)."""
    counts: Counter[str] = Counter(f"DeliveredTo_{name}" for name in result.delivered)
    counts.update(f"SkippedBy_{name}" for name, _ in result.skipped)
    counts.update(f"NotYetFor_{name}" for name in result.not_yet)
    for name, retries in result.retries.items():
        counts[f"SinkRetries_{name}"] += retries
    counts["ProfilesCreated"] += sum(1 for name, note in result.notes
                                     if name == ProfileObjectSink.name and note == PROFILE_CREATED)
    return +counts  # without zero counts


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings, runtime = _settings(), _runtime()
    metrics = Metrics(namespace=settings.metrics_namespace)
    counts = {"EntriesDelivered": 0, "EntriesDeadLettered": 0, "EntriesAlreadySettled": 0, "EntriesSuperseded": 0,
              "EntriesLeftPending": 0}
    per_sink: Counter[str] = Counter()

    def record_handler(record: DynamoDBRecord) -> None:
        if record.event_name is not DynamoDBRecordEventName.INSERT:
            return
        result = handle_entry(OutboxEntry.from_item(record.dynamodb.new_image), runtime)
        if result is None:
            counts["EntriesAlreadySettled"] += 1
            return
        if result.superseded_by is not None and result.complete:
            counts["EntriesSuperseded"] += 1
        elif result.complete:
            counts["EntriesDelivered"] += 1
        else:
            counts["EntriesDeadLettered" if result.failed else "EntriesLeftPending"] += 1
        per_sink.update(sink_counts(result))

    response = process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)
    for name, value in counts.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    for name, value in sorted(per_sink.items()):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    metrics.flush_metrics()
    return response
