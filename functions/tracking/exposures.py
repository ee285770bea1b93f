"""Exposure tracking: what was recommended to whom, written to the stream as `_custom.recommender` events.

Two ways in, one code path (`record_exposures`):

1. **Amazon Pinpoint's recommender model** calls this function as its `RecommendationTransformerUri`
   (Pinpoint Developer Guide, "Customizing recommendations with AWS Lambda"). The event holds up to 50
   endpoints under `Endpoints`, keyed by endpoint id, each an Endpoint definition plus `RecommendationItems`
   (1–5 item ids from the Personalize campaign), next to the settings of the campaign or journey sending
   the message (`CampaignId` or `JourneyId`, `TreatmentId`, `ActivityId`, `ScheduledTime`, …). The function
   returns that endpoint map with every endpoint kept as given and, where it has recommendations, a
   `Recommendations` object holding the items, in Personalize's order, under the configured attribute
   name (the one declared in the recommender's `Attributes`). Pinpoint waits 15 seconds, accepts 6 MB and
   makes 3 attempts.

2. **Any other sender** (an app backend, a job) invokes it directly with

       {"exposures": [{"endpoint_id": "…", "item_id": "…",
                       "campaign_id": "…" | "journey_id": "…",      # at least one
                       "personalize_user_id": "…",                  # else user_id
                       "user_id": "…",                              # optional
                       "event_time_ms": 1764000000000}],            # optional; default: now
        "send_id": "…"}                                             # required: names this send

   (at most `MAX_DIRECT_EXPOSURES` = 500 exposures a call; an entry may carry its own `send_id`) and gets
   back `{"recorded": n, "event_ids": [...]}`.

Every exposure is checked by the normaliser the stream's consumers run before anything is written: one that
the lake or the rules engine would reject (an id over 256 bytes, an attribute over 1,000 characters, …) fails a
direct call naming the entry; in a Pinpoint invocation it is left out and counted (`exposures_refused` in the
log), since failing would cost every recipient of the batch their message.

Each exposure becomes one canonical app record (`functions/events/app.py`) of type `_custom.recommender`
with `event_id` = `exp-` + a hash of (endpoint, item, campaign, journey, send id), partition key = its user.
The send id names the send occasion, so a retry of the same send writes the same ids and the stream's
consumers (which de-duplicate by `event_id`) keep one copy. A direct caller must pass a `send_id` that
survives its own retries (a message id): a default such as the Lambda request id would make every retry of a
synchronous call a new send, counted again. Pinpoint re-invokes synchronously with the same payload, so for
Pinpoint the send id is derived from the payload's campaign/journey settings instead (see
`RecommenderRequest.send_id`).

Environment (read once, by `ExposureSettings.from_env`):
- `STREAM_ARN` (required): the Kinesis data stream;
- `RECOMMENDATION_ATTRIBUTE`: the recommended attribute that carries the items (default `RecommendedItems`);
- `RECOMMENDATION_PROVIDER_ID_TYPE`: whom Personalize knows users by, as configured on the recommender —
  `PINPOINT_USER_ID` (default: the endpoint's `User.UserId`) or `PINPOINT_ENDPOINT_ID`.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import re
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from functions.events.app import APP_SCHEMA
from functions.events.canonical import IdentityMode, Rejected
from functions.events.normalise import normalise
from functions.events.parsing import MAX_TIME_MS, MIN_TIME_MS, FieldError, Fields, iso_to_ms, stable_event_id
from functions.retraining.scoring import EXPOSURE_EVENT_TYPE
from functions.tracking.stream import KinesisWriter, StreamRecord, partition_key

logger = Logger()

DEFAULT_RECOMMENDATION_ATTRIBUTE = "RecommendedItems"
MAX_RECOMMENDATIONS = 5  # Pinpoint quota: recommendations per message
MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # Pinpoint quota: Lambda request and response payload
MAX_DIRECT_EXPOSURES = 500
"""Most exposures one direct call may carry (a Pinpoint invocation holds at most 50 endpoints × 5 items)."""
SEND_WINDOW_MS = 15 * 60 * 1000
"""Without a `ScheduledTime` in the payload, Pinpoint invocations of one campaign/journey activity in the same
15 minutes count as one send (Pinpoint's retries of it land well inside this)."""

# Pinpoint's rule for recommended attribute names: a letter or digit first, up to 50 of [A-Za-z0-9_-].
_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$")
_STREAM_ARN = re.compile(r"^arn:aws[a-z-]*:kinesis:[a-z0-9-]+:\d{12}:stream/[A-Za-z0-9_.-]{1,128}$")


class ProviderIdType(str, enum.Enum):
    """Whom the Personalize campaign knows users by: the recommender's `RecommendationProviderIdType`."""

    PINPOINT_USER_ID = "PINPOINT_USER_ID"
    PINPOINT_ENDPOINT_ID = "PINPOINT_ENDPOINT_ID"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExposureSettings:
    """The function's configuration, parsed once from its environment."""

    stream_arn: str
    """The Kinesis data stream exposures are written to. Required."""
    recommendation_attribute: str = DEFAULT_RECOMMENDATION_ATTRIBUTE
    """Recommended attribute (`Recommendations.<name>`) holding the item ids. Default `RecommendedItems`."""
    provider_id_type: ProviderIdType = ProviderIdType.PINPOINT_USER_ID
    """Which Pinpoint id is the Personalize user id. Default `PINPOINT_USER_ID`."""

    def __post_init__(self) -> None:
        if not _STREAM_ARN.match(self.stream_arn):
            raise ValueError(f"stream_arn: expected a Kinesis stream ARN, got {self.stream_arn!r}")
        if not _ATTRIBUTE_NAME.match(self.recommendation_attribute):
            raise ValueError(f"recommendation_attribute: expected up to 50 letters, digits, _ or -, starting with "
                             f"a letter or digit, got {self.recommendation_attribute!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ExposureSettings:
        """Read the settings; raises ValueError naming every missing or invalid variable."""
        environ = os.environ if environ is None else environ
        problems: list[str] = []
        stream_arn = environ.get("STREAM_ARN", "")
        if not stream_arn:
            problems.append("STREAM_ARN is missing (the Kinesis stream ARN)")
        elif not _STREAM_ARN.match(stream_arn):
            problems.append(f"STREAM_ARN={stream_arn!r} is not a Kinesis stream ARN")
        attribute = environ.get("RECOMMENDATION_ATTRIBUTE") or DEFAULT_RECOMMENDATION_ATTRIBUTE
        if not _ATTRIBUTE_NAME.match(attribute):
            problems.append(f"RECOMMENDATION_ATTRIBUTE={attribute!r} is not a Pinpoint attribute name "
                            "(up to 50 letters, digits, _ or -, starting with a letter or digit)")
        raw_type = environ.get("RECOMMENDATION_PROVIDER_ID_TYPE") or ProviderIdType.PINPOINT_USER_ID.value
        try:
            provider_id_type = ProviderIdType(raw_type)
        except ValueError:
            provider_id_type = ProviderIdType.PINPOINT_USER_ID
            problems.append(f"RECOMMENDATION_PROVIDER_ID_TYPE={raw_type!r} is invalid: expected one of "
                            + ", ".join(kind.value for kind in ProviderIdType))
        if problems:
            raise ValueError("exposure function environment: " + "; ".join(problems))
        return cls(stream_arn=stream_arn, recommendation_attribute=attribute, provider_id_type=provider_id_type)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exposure:
    """One recommended item shown (or sent) to one endpoint by one campaign or journey."""

    endpoint_id: str
    item_id: str
    personalize_user_id: str
    """The user as the Personalize campaign knows them; the interactions dataset's USER_ID."""
    send_id: str
    """Names the send occasion; the same send retried has the same send id."""
    event_time_ms: int
    user_id: str | None = None
    campaign_id: str | None = None
    journey_id: str | None = None
    rank: int | None = None
    """1-based position in the recommendation list, when known."""

    def __post_init__(self) -> None:
        for name in ("endpoint_id", "item_id", "personalize_user_id", "send_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
        for name in ("user_id", "campaign_id", "journey_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name}: expected a non-empty string or None, got {value!r}")
        if self.campaign_id is None and self.journey_id is None:
            raise ValueError("campaign_id, journey_id: give at least one (engagement is attributed through it)")
        if isinstance(self.event_time_ms, bool) or not isinstance(self.event_time_ms, int) \
                or not MIN_TIME_MS <= self.event_time_ms <= MAX_TIME_MS:
            raise ValueError(f"event_time_ms: expected Unix milliseconds, got {self.event_time_ms!r}")
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"rank: expected a position ≥ 1 or None, got {self.rank!r}")

    @property
    def event_id(self) -> str:
        """Deterministic: the same send of the same item to the same endpoint always has this id."""
        return stable_event_id(
            "exp-", [EXPOSURE_EVENT_TYPE, self.endpoint_id, self.item_id, self.campaign_id, self.journey_id,
                     self.send_id],
        )

    @property
    def stream_user(self) -> str:
        """The record's user: the user id, else the Personalize user (app records always name a user)."""
        return self.user_id or self.personalize_user_id

    def to_app_record(self) -> dict[str, Any]:
        """The canonical app record (`engagement-loop/v1`) the normaliser turns into this exposure's event."""
        attributes = {"personalize_user_id": self.personalize_user_id, "item_id": self.item_id}
        if self.campaign_id:
            attributes["campaign_id"] = self.campaign_id
        if self.journey_id:
            attributes["journey_id"] = self.journey_id
        if self.rank is not None:
            attributes["rank"] = str(self.rank)
        record = {
            "schema": APP_SCHEMA,
            "event_type": EXPOSURE_EVENT_TYPE,
            "event_id": self.event_id,
            "event_time_ms": self.event_time_ms,
            "user_id": self.stream_user,
            "endpoint_id": self.endpoint_id,
            "campaign_id": self.campaign_id,
            "journey_id": self.journey_id,
            "item_id": self.item_id,
            "attributes": attributes,
        }
        return {key: value for key, value in record.items() if value is not None}

    def to_stream_record(self) -> StreamRecord:
        data = json.dumps(self.to_app_record(), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        return StreamRecord(partition_key=partition_key(self.stream_user), data=data.encode("utf-8"))

    def refusal(self) -> str | None:
        """Why the stream's consumers would reject this exposure's record, or None: the normaliser itself
        decides (in the stricter identity mode), so what is reported recorded is what gets counted."""
        result = normalise(self.to_stream_record().data, identity_mode=IdentityMode.USER)
        return result.reason if isinstance(result, Rejected) else None


def record_exposures(exposures: Sequence[Exposure], *, writer: KinesisWriter) -> tuple[str, ...]:
    """Write each exposure once (repeats within the call collapse by event id); returns the event ids written.
    Raises if any record could not be written, so the caller retries the whole call."""
    unique = {exposure.event_id: exposure for exposure in exposures}
    writer.put([exposure.to_stream_record() for exposure in unique.values()])
    return tuple(unique)


# --- Amazon Pinpoint recommender invocations -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecommendedEndpoint:
    """What this function reads from one endpoint definition."""

    endpoint_id: str
    user_id: str | None
    items: tuple[str, ...]
    """`RecommendationItems` in Personalize's order (at most 5); empty when the endpoint has none."""


def read_endpoint(endpoint_id: str, definition: Any) -> RecommendedEndpoint:
    """The endpoint's user and items; anything malformed reads as absent (the definition is returned as is)."""
    if not isinstance(definition, Mapping):
        return RecommendedEndpoint(endpoint_id, None, ())
    user = definition.get("User")
    user_id = user.get("UserId") if isinstance(user, Mapping) else None
    raw_items = definition.get("RecommendationItems")
    items: tuple[str, ...] = ()
    if isinstance(raw_items, list) and raw_items and all(isinstance(i, str) and i for i in raw_items):
        items = tuple(raw_items[:MAX_RECOMMENDATIONS])
    return RecommendedEndpoint(endpoint_id, user_id if isinstance(user_id, str) and user_id else None, items)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecommenderRequest:
    """One Pinpoint recommender invocation: the endpoints, and the campaign or journey sending to them."""

    endpoints: Mapping[str, Any]
    """Endpoint id → definition, exactly as received (returned as received, plus `Recommendations`)."""
    campaign_id: str | None
    journey_id: str | None
    scheduled_time_ms: int | None
    send_context: Mapping[str, Any]
    """Every top-level scalar of the payload (`ApplicationId`, `CampaignId`, `TreatmentId`, `ActivityId`,
    `JourneyId`, `ScheduledTime`, …): what identifies this send."""

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> RecommenderRequest:
        endpoints = event.get("Endpoints")
        if not isinstance(endpoints, Mapping):
            raise ValueError(f"Pinpoint recommender event: Endpoints must be an object of endpoint id → "
                             f"definition, got {type(endpoints).__name__}")
        context = {key: value for key, value in event.items()
                   if key != "Endpoints" and isinstance(value, (str, int, float, bool))}
        scheduled = context.get("ScheduledTime")
        try:
            scheduled_time_ms = iso_to_ms(scheduled, "ScheduledTime") if isinstance(scheduled, str) else None
        except FieldError:
            scheduled_time_ms = None  # still part of send_context, so ids stay deterministic
        return cls(
            endpoints=MappingProxyType(dict(endpoints)),
            campaign_id=_text(context.get("CampaignId")),
            journey_id=_text(context.get("JourneyId")),
            scheduled_time_ms=scheduled_time_ms,
            send_context=MappingProxyType(context),
        )

    def send_id(self, now_ms: int) -> str:
        """The send occasion. Pinpoint retries an invocation as a new synchronous invoke (new request id) with
        the same payload, so the id comes from the payload; without a `ScheduledTime` to tell one run of a
        campaign from the next, the 15-minute window of the invocation stands in for it."""
        parts: list[Any] = sorted(self.send_context.items())
        if "ScheduledTime" not in self.send_context:
            parts.append(("window", now_ms // SEND_WINDOW_MS))
        return stable_event_id("send-", parts)


def recommender_response(request: RecommenderRequest, attribute: str) -> dict[str, Any]:
    """The documented response: every endpoint, unchanged, plus `Recommendations.<attribute>` = its items."""
    response: dict[str, Any] = {}
    for endpoint_id, definition in request.endpoints.items():
        items = read_endpoint(endpoint_id, definition).items
        if not items:
            # Kept as received: dropping it would cost the recipient the message (the seed sample's bug).
            response[endpoint_id] = definition
            continue
        existing = definition.get("Recommendations")
        recommendations = dict(existing) if isinstance(existing, Mapping) else {}
        recommendations[attribute] = list(items)
        response[endpoint_id] = {**definition, "Recommendations": recommendations}
    return response


def check_response_size(response: Mapping[str, Any]) -> None:
    """Raise before anything is recorded if Pinpoint could not accept the response."""
    size = len(json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > MAX_RESPONSE_BYTES:
        raise ValueError(f"the response would be {size} bytes, over the {MAX_RESPONSE_BYTES} Pinpoint accepts")


@dataclass(frozen=True, slots=True)
class PinpointExposures:
    """The exposures of one invocation, and the endpoints that yielded none (for the log)."""

    exposures: tuple[Exposure, ...]
    without_items: int
    without_personalize_user: int


def pinpoint_exposures(request: RecommenderRequest, provider_id_type: ProviderIdType, *,
                       now_ms: int) -> PinpointExposures:
    """One exposure per (endpoint, recommended item), in payload order."""
    if request.campaign_id is None and request.journey_id is None:
        logger.warning("Pinpoint event names no CampaignId or JourneyId; no exposures recorded",
                       extra={"context_keys": sorted(request.send_context)})
        return PinpointExposures((), 0, 0)
    send_id = request.send_id(now_ms)
    event_time_ms = request.scheduled_time_ms or now_ms
    exposures: list[Exposure] = []
    without_items = without_user = 0
    for endpoint_id, definition in request.endpoints.items():
        endpoint = read_endpoint(endpoint_id, definition)
        if not endpoint.items:
            without_items += 1
            continue
        personalize_user = (endpoint.user_id if provider_id_type is ProviderIdType.PINPOINT_USER_ID
                            else endpoint.endpoint_id)
        if personalize_user is None:
            # With PINPOINT_USER_ID, Personalize has no user to credit; a row without USER_ID is useless.
            without_user += 1
            continue
        exposures.extend(
            Exposure(endpoint_id=endpoint_id, item_id=item, personalize_user_id=personalize_user,
                     user_id=endpoint.user_id, campaign_id=request.campaign_id, journey_id=request.journey_id,
                     send_id=send_id, event_time_ms=event_time_ms, rank=rank)
            for rank, item in enumerate(endpoint.items, start=1)
        )
    return PinpointExposures(tuple(exposures), without_items, without_user)


# --- Direct invocations by other senders -----------------------------------------------------------------


def parse_exposures(event: Mapping[str, Any], *, now_ms: int) -> list[Exposure]:
    """The `{"exposures": [...], "send_id": "…"}` shape (module docstring); raises ValueError naming the bad
    field, before anything is written."""
    entries = event.get("exposures")
    if not isinstance(entries, list) or not entries:
        raise ValueError("exposures: expected a non-empty list of exposures")
    if len(entries) > MAX_DIRECT_EXPOSURES:
        raise ValueError(f"exposures: {len(entries):,} in one call, more than {MAX_DIRECT_EXPOSURES}; "
                         "split them into several calls, each with its own send_id")
    call_send_id = event.get("send_id")
    if call_send_id is not None and (not isinstance(call_send_id, str) or not call_send_id):
        raise ValueError(f"send_id: expected a non-empty string naming this send, got {type(call_send_id).__name__}")
    exposures: list[Exposure] = []
    for index, entry in enumerate(entries):
        where = f"exposures[{index}]"
        try:
            fields = Fields.of(entry, where)
            user_id = fields.text("user_id", required=False)
            personalize_user = fields.text("personalize_user_id", required=False) or user_id
            if personalize_user is None:
                raise FieldError(f"{where}: give personalize_user_id or user_id")
            send_id = fields.text("send_id", required=False) or call_send_id
            if send_id is None:
                raise FieldError(f"{where}: give send_id (for the call or the entry): an id of this send that a "
                                 "retry of the call repeats, such as the message id, so a retry is not counted twice")
            event_time_ms = fields.millis("event_time_ms", required=False)
            exposure = Exposure(
                endpoint_id=fields.text("endpoint_id"),
                item_id=fields.text("item_id"),
                personalize_user_id=personalize_user,
                user_id=user_id,
                campaign_id=fields.text("campaign_id", required=False),
                journey_id=fields.text("journey_id", required=False),
                send_id=send_id,
                event_time_ms=now_ms if event_time_ms is None else event_time_ms,
            )
        except FieldError as error:
            raise ValueError(str(error)) from None
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        refusal = exposure.refusal()
        if refusal is not None:
            raise ValueError(f"{where}: the stream's consumers would reject it: {refusal}")
        exposures.append(exposure)
    return exposures


# --- The handler -----------------------------------------------------------------------------------------


def handle(event: Mapping[str, Any], *, settings: ExposureSettings, writer: KinesisWriter, now_ms: int) -> Any:
    """Answer one invocation of either shape, after its exposures are safely on the stream."""
    if "Endpoints" in event:
        request = RecommenderRequest.parse(event)
        response = recommender_response(request, settings.recommendation_attribute)
        check_response_size(response)
        found = pinpoint_exposures(request, settings.provider_id_type, now_ms=now_ms)
        refusals = [(exposure, exposure.refusal()) for exposure in found.exposures]
        accepted = [exposure for exposure, refusal in refusals if refusal is None]
        if len(accepted) < len(found.exposures):
            logger.warning("exposures the stream's consumers would reject were left out", extra={
                "exposures_refused": len(found.exposures) - len(accepted),
                "first_reason": next(refusal for _, refusal in refusals if refusal is not None)})
        written = record_exposures(accepted, writer=writer)
        logger.info("Pinpoint recommendations processed", extra={
            "endpoints": len(request.endpoints), "exposures": len(written),
            "exposures_refused": len(found.exposures) - len(accepted),
            "endpoints_without_items": found.without_items,
            "endpoints_without_personalize_user": found.without_personalize_user,
            "campaign_id": request.campaign_id, "journey_id": request.journey_id,
        })
        return response
    if "exposures" in event:
        written = record_exposures(parse_exposures(event, now_ms=now_ms), writer=writer)
        logger.info("exposures recorded", extra={"exposures": len(written)})
        return {"recorded": len(written), "event_ids": list(written)}
    raise ValueError("unrecognised event: expected a Pinpoint recommender event (\"Endpoints\") or "
                     "{\"exposures\": [...]}")


@functools.cache
def _settings() -> ExposureSettings:
    return ExposureSettings.from_env()


@functools.cache
def _writer() -> KinesisWriter:
    # Tight timeouts: Pinpoint gives the whole invocation 15 seconds.
    config = Config(connect_timeout=2, read_timeout=4, retries={"mode": "standard", "max_attempts": 3})
    return KinesisWriter(boto3.client("kinesis", config=config), _settings().stream_arn)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> Any:
    return handle(event, settings=_settings(), writer=_writer(), now_ms=time.time_ns() // 1_000_000)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
