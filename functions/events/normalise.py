"""One raw stream record → a canonical event, or a `Rejected` saying why not.

The source is recognised by shape, most explicit marker first:

- app:      `"schema"` present (it must be `engagement-loop/v1`);
- SES:      `"source": "aws.ses"` (the EventBridge envelope);
- Pinpoint: `event_type` and `event_timestamp` (Pinpoint's own field names).

Every source then gets the same finishing (docs/events.md, "Clocks" and "Bounds"):

- `arrival_time_ms` is the Kinesis approximate arrival time when the caller gives it, for every source; the
  record's own stamp (Pinpoint `arrival_timestamp`, the EventBridge envelope's `time`, an app record's event
  time) stands in only when it is not given (local tools reading files);
- an event time ahead of the arrival time counts as the arrival time (device clocks run fast);
- ids that become keys are bounded: an over-long user, endpoint, campaign, journey or item id (or one with a
  line break or another control character) is a `Rejected`, an over-long event id is replaced by its hash; the
  event type is held to 256 characters without control characters;
- the id of an event read from the app stream starts with `app/` (`UNTRUSTED_ID_PREFIX`).

Trust (docs/security.md, "Who may write what"): a record read from the app stream is normalised with
`trusted=False`. It may then only be an app record or a Pinpoint app-event shape, and never carry an event type
reserved for the trusted routes (`RESERVED_EVENT_TYPES`); an SES envelope or a reserved type is a `Rejected`
naming the rule. Trust comes from the stream the record was read from (its consumer decides), never from the
record's content, which any holder of the app producer policy controls.

Whatever the input, `normalise` returns; it never raises.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

from functions.events.app import APP_SCHEMA, parse_app
from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode, ParseResult, Rejected
from functions.events.parsing import (
    FieldError, Fields, check_event_type, check_id, hashed_event_id, kind_of, show,
)
from functions.events.pinpoint import parse_pinpoint
from functions.events.ses import parse_ses


class ReservedEventType(NamedTuple):
    """An event type (or a family of them) only a trusted route may put on the stream."""

    name: str
    """Lower-case; compared case-insensitively with the record's event type."""
    prefix: bool
    """Whether `name` is a prefix (`_email.`) or the whole type (`_custom.recommender`)."""
    senders: str
    """Who may send it, for the rejection reason."""

    def matches(self, event_type: str) -> bool:
        folded = event_type.casefold()
        return folded.startswith(self.name) if self.prefix else folded == self.name


RESERVED_EVENT_TYPES: tuple[ReservedEventType, ...] = (
    # Message engagement: the rules engine and the interactions dataset credit it as the user's reaction to
    # a message, so only the services that sent the message may report it. Pinpoint names SMS events `_SMS.*`.
    ReservedEventType("_email.", prefix=True, senders="the SES/Pinpoint routes"),
    ReservedEventType("_sms.", prefix=True, senders="the SES/Pinpoint routes"),
    # Exposures are the join key of the interactions dataset: a forged one credits any item to any user.
    ReservedEventType("_custom.recommender", prefix=False, senders="the exposures function"),
    # The engine's own events (functions/rules/model.py ENGINE_EVENT_PREFIX), fired through its sinks.
    ReservedEventType("trk_", prefix=True, senders="the rules engine"),
    # Pinpoint campaign and journey events: sends and deliveries only Pinpoint knows; push opens the mobile SDK
    # recorded in the app, which a stack may let apps report by name (APP_MAY_REPORT, `appMayReport`).
    ReservedEventType("_campaign.", prefix=True, senders="the Pinpoint route"),
    ReservedEventType("_journey.", prefix=True, senders="the Pinpoint route"),
)
"""Event types the app stream may not carry (docs/security.md): the one list every consumer applies."""

APP_MAY_REPORT_FAMILIES = ("_campaign.", "_journey.")
"""The reserved families of which a stack may let apps report single event types (`appMayReport`); the
others (message engagement, exposures, engine events) are never the app's to report."""

_APPS_WRITE_HERE = "apps write to the app stream"


def reserved_type_reason(event_type: str, app_may_report: frozenset[str] = frozenset()) -> str | None:
    """Why an untrusted record may not have `event_type`, or None when it may (`app_may_report`: exact event
    types of `APP_MAY_REPORT_FAMILIES` the stack lets apps report)."""
    if event_type in app_may_report:
        return None
    for reserved in RESERVED_EVENT_TYPES:
        if reserved.matches(event_type):
            family = f"{reserved.name}*" if reserved.prefix else reserved.name
            return (f"event type {show(event_type)} is reserved ({family}): only {reserved.senders} may send it "
                    f"on the trusted stream; {_APPS_WRITE_HERE}, which may not carry it")
    return None


def normalise(raw: bytes | str, *, identity_mode: IdentityMode, arrival_time_ms: int | None = None,
              trusted: bool = True, app_may_report: frozenset[str] = frozenset()) -> ParseResult:
    """Decode, parse and map one record.

    `arrival_time_ms` is when the record reached the stream (Kinesis' approximate arrival time, in Unix
    milliseconds); without it the record's own arrival stamp is used. `trusted` is False for a record read
    from the app stream (see the module docstring); local tools reading files keep the default True.
    `app_may_report` lists the reserved push event types an untrusted record may still have.
    """
    parsed = parse_record(raw, identity_mode=identity_mode, trusted=trusted, app_may_report=app_may_report)
    return parsed if isinstance(parsed, Rejected) else parsed.at(arrival_time_ms)


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    """A record parsed, mapped and checked, before the stream's clock is applied: `at(arrival)` is what
    `normalise` returns for that arrival. The local engine parses each record once, then applies the arrival
    it plans for it."""

    event: CanonicalEvent
    """Its id final; its own arrival stamp; its event time not yet clamped to the arrival."""

    def at(self, kinesis_arrival_ms: int | None) -> CanonicalEvent:
        """The canonical event for a record that reached the stream at `kinesis_arrival_ms` (None: its own
        stamp): one clock for arrival, and a fast clock clamped to it, the same for every source."""
        event = self.event
        arrival_time_ms = event.arrival_time_ms if kinesis_arrival_ms is None else kinesis_arrival_ms
        if arrival_time_ms == event.arrival_time_ms and event.event_time_ms <= arrival_time_ms:
            return event  # nothing to change: spare the copy (the local engine's hot path)
        return dataclasses.replace(event, arrival_time_ms=arrival_time_ms,
                                   event_time_ms=min(event.event_time_ms, arrival_time_ms))


def parse_record(raw: bytes | str, *, identity_mode: IdentityMode, trusted: bool = True,
                 app_may_report: frozenset[str] = frozenset()) -> Parsed | Rejected:
    """Everything `normalise` does except applying the arrival clock (`Parsed.at`)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejected(f"not valid UTF-8 (bad byte at offset {error.start})")
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        return Rejected(f"not JSON: {error.msg} at line {error.lineno} column {error.colno}")
    except (ValueError, RecursionError) as error:  # e.g. integers beyond 4300 digits, absurd nesting
        return Rejected(f"not JSON: {type(error).__name__}: {show(str(error))}")
    if not isinstance(document, dict):
        return Rejected(f"unrecognised record: expected a JSON object, got {kind_of(document)}")
    source = _recognise(document)
    if isinstance(source, Rejected):
        return source
    if not trusted and source is EventSource.SES:
        # Rejected before parsing: SES's shape is never valid from an app, however well formed.
        return Rejected(f"SES event on the app stream: only the SES/Pinpoint routes may send SES events, on the "
                        f"trusted stream; {_APPS_WRITE_HERE} (app events need \"schema\": {json.dumps(APP_SCHEMA)})")
    record = Fields(document)
    try:
        if source is EventSource.APP:
            event = parse_app(record)
        elif source is EventSource.SES:
            event = parse_ses(record, identity_mode=identity_mode)
        else:
            event = parse_pinpoint(record, identity_mode=identity_mode)
        if not trusted and (reason := reserved_type_reason(event.event_type, app_may_report)) is not None:
            return Rejected(f"{_LABELS[source]} on the app stream: {reason}")
        return Parsed(_finish(event, trusted=trusted))
    except FieldError as error:
        return Rejected(f"{_LABELS[source]}: {error}")


UNTRUSTED_ID_PREFIX = "app/"
"""Put before the id of every event read from the app stream, so an app cannot send the id of a real SES,
Pinpoint or exposure event and have that event dropped as its duplicate (the rules engine and the event
tracker de-duplicate by id)."""


def _finish(event: CanonicalEvent, *, trusted: bool = True) -> CanonicalEvent:
    """The bounds and the final id, the same for every source (the clock is `Parsed.at`'s)."""
    check_event_type(event.event_type)
    for name in ("user_id", "endpoint_id", "campaign_id", "journey_id", "item_id"):
        check_id(name, getattr(event, name))
    event_id = event.event_id if trusted else UNTRUSTED_ID_PREFIX + event.event_id
    # The parser built `event` for this call and nobody else holds it: its id is set in place rather than
    # copying the whole (frozen) event, which cost a tenth of the normaliser's time.
    object.__setattr__(event, "event_id", hashed_event_id(event_id))
    return event


_LABELS = {EventSource.APP: "app record", EventSource.SES: "SES event", EventSource.PINPOINT: "Pinpoint record"}


def _recognise(document: dict[str, Any]) -> EventSource | Rejected:
    if "schema" in document:
        if document["schema"] != APP_SCHEMA:
            return Rejected(f"app record: unsupported schema {show(document['schema'])} (expected {APP_SCHEMA!r})")
        return EventSource.APP
    if document.get("source") == "aws.ses":
        return EventSource.SES
    if "event_type" in document and "event_timestamp" in document:
        return EventSource.PINPOINT
    return Rejected(
        "unrecognised record: not a Pinpoint, SES or app event "
        f"(app events need \"schema\": {json.dumps(APP_SCHEMA)}; SES events come in their EventBridge envelope)"
    )
