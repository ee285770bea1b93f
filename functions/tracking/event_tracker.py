"""Real-time path: scored engagement from the stream → an Amazon Personalize event tracker (`PutEvents`).

A Kinesis-triggered Lambda, so the campaign reacts to engagement within seconds instead of at the next
retrain. Each record is normalised like every other consumer does it; an event is sent when

- its type is in the scoring model (`SCORING`) — exposures never are, the model refuses them;
- it has a user (the Personalize `userId`) and an item (`itemId`: the interactions dataset's ITEM_ID is
  required, and an engagement without its own item is credited to recommended items only by the
  retraining's exposure join);
- it fits PutEvents' limits (ids and type up to 256 characters).

Everything else is counted and skipped, and so is a record the normaliser rejects: retrying it could never
succeed. Events go out grouped per user and session (the endpoint, else the user), at most 10 per call, in
stream order, each with `eventId` = the canonical event id so Personalize ignores a copy re-sent by a retry;
`eventValue` is the scoring model's value and `sentAt` the arrival time, the TIMESTAMP the interactions
dataset uses (`docs/interactions.md`: when the record reached the stream).

A call Personalize refuses as invalid is sent again one event at a time, so only the events it refuses alone
are logged and skipped; any other failure stops the batch, and that call's records and every record not yet
sent are reported as failed (Powertools partial batch response), so Lambda retries from the first of them and
the event source mapping's retry cap and on-failure queue apply. The outcome is kept per record. Lambda
redelivers every record after the first failed one, so events of other users' calls that were already sent
are sent again (`EventsSentAfterAFailure` counts them) with the same `eventId`: Personalize uses the event id to
tell events apart and does not train on a repeat ("Any subsequent events after the first with the same event ID
are not used in model training", https://docs.aws.amazon.com/personalize/latest/dg/API_UBS_Event.html).

Environment (read once, by `TrackerSettings.from_env`):
- `TRACKING_ID` (required): the event tracker's tracking id;
- `SCORING` (required): the scoring model as JSON, e.g. `{"_email.open": 50, "_email.click": 100}`;
- `IDENTITY_MODE`: `user` or `user_or_endpoint` (default `user_or_endpoint`), as for the other consumers;
- `APP_STREAM_ARN`: the app stream's ARN (default empty): its records are normalised untrusted, so a forged
  SES or Pinpoint email/SMS engagement is skipped as rejected (docs/security.md);
- `POWERTOOLS_METRICS_NAMESPACE`: CloudWatch namespace of the counts (default `EngagementLoop`).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol, Sequence, TypedDict

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError

from functions.events.canonical import CanonicalEvent, IdentityMode, Rejected
from functions.events.consumer_settings import DEFAULT_METRICS_NAMESPACE, ConsumerSettings, is_trusted_source
from functions.events.normalise import normalise
from functions.retraining.scoring import ScoringError, ScoringModel

logger = Logger()

MAX_EVENTS_PER_CALL = 10  # PutEvents eventList
MAX_ID_CHARS = 256  # PutEvents userId, sessionId, itemId, eventType, eventId


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerSettings:
    """The function's configuration, parsed once from its environment."""

    tracking_id: str
    """The Personalize event tracker's tracking id. Required."""
    scoring: ScoringModel
    """Event type → eventValue; only these types are sent. Required."""
    identity_mode: IdentityMode = IdentityMode.USER_OR_ENDPOINT
    """How records without a user are attributed. Default `user_or_endpoint`."""
    metrics_namespace: str = DEFAULT_METRICS_NAMESPACE
    """CloudWatch namespace of the counts. Default `EngagementLoop`."""
    app_stream_arn: str = ""
    """APP_STREAM_ARN, default empty (no app stream): records read from it are untrusted."""
    app_may_report: frozenset[str] = frozenset()
    """APP_MAY_REPORT, default empty: reserved push event types the app stream may still carry."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrackerSettings:
        """Read the settings; raises ValueError naming every missing or invalid variable."""
        environ = os.environ if environ is None else environ
        problems: list[str] = []
        tracking_id = environ.get("TRACKING_ID", "")
        if not tracking_id:
            problems.append("TRACKING_ID is missing (the Personalize event tracker's tracking id)")
        elif len(tracking_id) > MAX_ID_CHARS:
            problems.append(f"TRACKING_ID is {len(tracking_id)} characters, over {MAX_ID_CHARS}")
        scoring: ScoringModel | None = None
        if not environ.get("SCORING"):
            problems.append('SCORING is missing (the scoring model as JSON, e.g. {"_email.open": 50})')
        else:
            try:
                scoring = ScoringModel.from_config_value(environ["SCORING"], source="environment variable SCORING")
            except ScoringError as error:
                problems.extend(error.problems)
        try:
            # One parser for IDENTITY_MODE across the stream's consumers.
            transform = ConsumerSettings.from_env(environ)
        except ValueError as error:
            problems.append(str(error))
            transform = ConsumerSettings()
        if problems or scoring is None:
            raise ValueError("event tracker function environment: " + "; ".join(problems))
        return cls(tracking_id=tracking_id, scoring=scoring, identity_mode=transform.identity_mode,
                   metrics_namespace=transform.metrics_namespace, app_stream_arn=transform.app_stream_arn,
                   app_may_report=transform.app_may_report)


class Skip(str, enum.Enum):
    """Why a record was not sent; each is a CloudWatch count."""

    UNPARSEABLE = "RecordsRejected"
    NOT_SCORED = "EventsNotScored"
    NO_USER = "EventsWithoutUser"
    NO_ITEM = "EventsWithoutItem"
    TOO_LONG = "EventsOverLimits"
    DUPLICATE = "EventsDuplicated"
    REFUSED = "EventsRefusedByPersonalize"


class PersonalizeEvent(TypedDict):
    """One `eventList` entry of PutEvents."""

    eventId: str
    eventType: str
    eventValue: float
    itemId: str
    sentAt: datetime


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    """A scored event ready to send, and which batch record it came from."""

    record_id: str
    user_id: str
    session_id: str
    event: PersonalizeEvent


def to_tracked(record_id: str, event: CanonicalEvent, scoring: ScoringModel) -> TrackedEvent | Skip:
    """The PutEvents entry for one canonical event, or why it is not sent."""
    value = scoring.values.get(event.event_type)
    if value is None:
        return Skip.NOT_SCORED
    if event.user_id is None:
        return Skip.NO_USER
    if event.item_id is None:
        return Skip.NO_ITEM
    session_id = event.endpoint_id if event.endpoint_id and len(event.endpoint_id) <= MAX_ID_CHARS else event.user_id
    if any(len(text) > MAX_ID_CHARS for text in (event.user_id, event.item_id, event.event_type)):
        return Skip.TOO_LONG
    return TrackedEvent(record_id, event.user_id, session_id, PersonalizeEvent(
        eventId=_fit_event_id(event.event_id),
        eventType=event.event_type,
        eventValue=value,
        itemId=event.item_id,
        sentAt=datetime.fromtimestamp(event.arrival_time_ms / 1000, tz=timezone.utc),
    ))


@dataclass(frozen=True, slots=True)
class PutEventsCall:
    """One PutEvents request: one user and session, 1–10 events in stream order."""

    user_id: str
    session_id: str
    events: tuple[PersonalizeEvent, ...]
    record_ids: tuple[str, ...]
    """The batch records the events came from, in the same order."""


def plan_calls(tracked: Sequence[TrackedEvent]) -> list[PutEventsCall]:
    """Group per (user, session) keeping stream order, then split into calls of at most 10 events; calls are
    ordered by the stream position of their first event."""
    groups: dict[tuple[str, str], list[tuple[int, TrackedEvent]]] = {}
    for position, item in enumerate(tracked):
        groups.setdefault((item.user_id, item.session_id), []).append((position, item))
    chunks: list[tuple[int, PutEventsCall]] = []
    for (user_id, session_id), items in groups.items():
        for start in range(0, len(items), MAX_EVENTS_PER_CALL):
            part = items[start:start + MAX_EVENTS_PER_CALL]
            call = PutEventsCall(user_id, session_id, tuple(i.event for _, i in part),
                                 tuple(i.record_id for _, i in part))
            chunks.append((part[0][0], call))
    return [call for _, call in sorted(chunks, key=lambda pair: pair[0])]


class EventsRefused(Exception):
    """Personalize refused a call as invalid; sending it again cannot succeed."""


class EventTracker(Protocol):
    """Where scored events go."""

    def put_events(self, call: PutEventsCall) -> None: ...


class PersonalizeEventTracker:
    """An Amazon Personalize event tracker, through a boto3 `personalize-events` client."""

    def __init__(self, client: Any, tracking_id: str) -> None:
        self._client = client
        self._tracking_id = tracking_id

    def put_events(self, call: PutEventsCall) -> None:
        try:
            self._client.put_events(trackingId=self._tracking_id, userId=call.user_id, sessionId=call.session_id,
                                    eventList=[dict(event) for event in call.events])
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "InvalidInputException":
                raise EventsRefused(str(error)) from error
            raise


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A stream record as this function needs it."""

    record_id: str
    """Unique in the batch: the Kinesis sequence number."""
    data: bytes
    arrival_time_ms: int
    trusted: bool = True
    """False for a record of the app stream (by its `eventSourceARN`, never its content)."""


@dataclass(frozen=True, slots=True)
class ForwardOutcome:
    """What happened to a batch: per record, and the counts derived from that."""

    outcomes: Mapping[str, str] = field(default_factory=dict)
    """Record id → `SENT`, `FAILED` or the `Skip` value saying why it was not sent; every record of the batch."""
    sent_after_failure: int = 0
    """Records sent although a record before them in the batch failed: Lambda redelivers every record from the
    first failed one, so these are sent again with the same `eventId`, which Personalize does not train on twice."""

    @property
    def sent(self) -> int:
        return sum(outcome == SENT for outcome in self.outcomes.values())

    @property
    def failed(self) -> frozenset[str]:
        return frozenset(record_id for record_id, outcome in self.outcomes.items() if outcome == FAILED)

    @property
    def skipped(self) -> Counter[Skip]:
        return Counter(Skip(outcome) for outcome in self.outcomes.values() if outcome not in (SENT, FAILED))


SENT, FAILED = "sent", "failed"


def forward(records: Sequence[RawRecord], settings: TrackerSettings, tracker: EventTracker) -> ForwardOutcome:
    """Normalise, select and send one batch.

    A call Personalize refuses as invalid is sent again one event at a time, so one bad event costs only itself.
    Any other failure (throttling, an outage) stops the batch: that call's records and every record not yet sent
    are reported failed, and Lambda retries from the first of them."""
    outcomes: dict[str, str] = {}
    tracked: list[TrackedEvent] = []
    seen: set[str] = set()
    for record in records:
        event = normalise(record.data, identity_mode=settings.identity_mode, arrival_time_ms=record.arrival_time_ms,
                          trusted=record.trusted, app_may_report=settings.app_may_report)
        if isinstance(event, Rejected):
            logger.warning("record rejected", extra={"record_id": record.record_id, "reason": event.reason})
            outcomes[record.record_id] = Skip.UNPARSEABLE.value
            continue
        if event.event_id in seen:
            outcomes[record.record_id] = Skip.DUPLICATE.value
            continue
        seen.add(event.event_id)
        result = to_tracked(record.record_id, event, settings.scoring)
        if isinstance(result, Skip):
            outcomes[record.record_id] = result.value
        else:
            tracked.append(result)

    calls = plan_calls(tracked)
    for index, call in enumerate(calls):
        try:
            _send(call, tracker, outcomes)
        except Exception:
            logger.exception("PutEvents failed; the rest of the batch is reported as failed")
            for later in calls[index:]:
                # What this call already settled (sent, or refused alone) stays as it is.
                outcomes.update((record_id, FAILED) for record_id in later.record_ids if record_id not in outcomes)
            break
    position = {record.record_id: n for n, record in enumerate(records)}
    failed_at = min((position[r] for r, outcome in outcomes.items() if outcome == FAILED), default=len(records))
    sent_after = sum(outcome == SENT and position[r] > failed_at for r, outcome in outcomes.items())
    return ForwardOutcome({r.record_id: outcomes[r.record_id] for r in records if r.record_id in outcomes},
                          sent_after)


def _send(call: PutEventsCall, tracker: EventTracker, outcomes: dict[str, str]) -> None:
    """One call; refused as invalid, each of its events alone (the failure of any other kind propagates)."""
    try:
        tracker.put_events(call)
    except EventsRefused as error:
        if len(call.events) == 1:
            logger.error("Personalize refused an event", extra={"record_ids": call.record_ids, "error": str(error)})
            outcomes[call.record_ids[0]] = Skip.REFUSED.value
            return
        for event, record_id in zip(call.events, call.record_ids):
            _send(PutEventsCall(call.user_id, call.session_id, (event,), (record_id,)), tracker, outcomes)
        return
    outcomes.update((record_id, SENT) for record_id in call.record_ids)


def _fit_event_id(event_id: str) -> str:
    # Canonical ids are short hashes, but an app may bring its own id of any length.
    return event_id if len(event_id) <= MAX_ID_CHARS else "h-" + hashlib.sha256(event_id.encode("utf-8")).hexdigest()


# --- The handler -----------------------------------------------------------------------------------------

processor = BatchProcessor(event_type=EventType.KinesisDataStreams)


class TrackerUnavailable(Exception):
    """Marks a record whose events could not be sent this time (the batch processor reports it as failed)."""


def _raw(record: KinesisStreamRecord, settings: TrackerSettings) -> RawRecord:
    payload = record.kinesis
    return RawRecord(payload.sequence_number, payload.data_as_bytes(),
                     round(payload.approximate_arrival_timestamp * 1000),
                     is_trusted_source(record.event_source_arn, settings.app_stream_arn))


@functools.cache
def _settings() -> TrackerSettings:
    return TrackerSettings.from_env()


@functools.cache
def _tracker() -> EventTracker:
    return PersonalizeEventTracker(boto3.client("personalize-events"), _settings().tracking_id)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = _settings()
    outcome = forward([_raw(KinesisStreamRecord(r), settings) for r in event.get("Records", [])], settings,
                      _tracker())
    _publish_counts(outcome, settings.metrics_namespace)

    def mark_failed(record: KinesisStreamRecord) -> None:
        if record.kinesis.sequence_number in outcome.failed:
            raise TrackerUnavailable(record.kinesis.sequence_number)

    return process_partial_response(event=event, record_handler=mark_failed, processor=processor, context=context)


def _publish_counts(outcome: ForwardOutcome, namespace: str) -> None:
    metrics = Metrics(namespace=namespace)
    metrics.add_metric(name="EventsSent", unit=MetricUnit.Count, value=outcome.sent)
    metrics.add_metric(name="RecordsFailed", unit=MetricUnit.Count, value=len(outcome.failed))
    metrics.add_metric(name="EventsSentAfterAFailure", unit=MetricUnit.Count, value=outcome.sent_after_failure)
    for reason in Skip:
        metrics.add_metric(name=reason.value, unit=MetricUnit.Count, value=outcome.skipped[reason])
    metrics.flush_metrics()
