"""Where the RuleEngine's actions go: one `Sink` per target, each turning an `OutboxEntry` into real calls.

- `EventBridgeSink` (always): `PutEvents` of one event, source `engagement-loop.rules`, detail-type
  `RuleQualified` or `RuleExited`, detail = the entry (`rule_id, user_id, action, name, value,
  event_time_ms, event_id, key`). EventBridge does not de-duplicate; consumers that must act once use `key`.
- `PinpointSink` (when a project is configured; Pinpoint engagement features reached end of support on
  2026-10-30, so this serves legacy projects only): an attribute action updates each of the user's
  endpoints with only `User.UserAttributes` (a qualification sets `[name] = ["ready"]`, an exit sets `[]`,
  which is how Pinpoint clears an attribute's values), leaving channel, address and opt-out untouched; an
  event action records the `trk_…` event on each endpoint with `PutEvents`, keyed by the outbox key.
- `CustomerProfilesSink` (when an Amazon Connect Customer Profiles domain is configured): finds the user's
  profiles with `SearchProfiles` on a search key (default `_account`, the standard profile's
  `AccountNumber`, documented as "a unique account number that you have given to the customer"; any
  custom search key the domain defines, e.g. `user_id`, can be configured instead) and sets the profile
  attribute `name`: `"ready"` on qualifying, `""` on exit (UpdateProfile removes a value given as an empty
  string), and for an event action the ISO-8601 UTC time of the latest firing, so flows and segments can
  test "fired since …" without an object type having to be defined in the domain.

A user the target does not know (no Pinpoint endpoint, no matching profile) is not an error: `deliver`
returns the reason it skipped, and the dispatcher logs it. A delivery with something worth counting returns
`Delivered(note)` (the object sink's "profile created", `functions.rules.profile_objects`). Failures raise
`SinkError`; `retryable` says whether trying again may help (throttling, a service fault) or cannot (a
refused request).

Sinks are called at least once per entry (docs/actions.md): the EventBridge detail's `key` and the Pinpoint
event id are the outbox key, for consumers to de-duplicate on; attribute updates are idempotent, and the
dispatcher never sends an attribute change a later change of the same rule and user supersedes.

`last_writer_wins` says whether a sink's target holds a state the newest write decides (all three here): only
those are written again after a later change appeared during delivery (`dispatcher.reassert_later`). The
profile object sink is not one: writing an object again is a new fact, not a state restore.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from functions.rules.outbox import Change, OutboxEntry
from functions.rules.model import READY, ActionKind

EVENT_SOURCE = "engagement-loop.rules"
DETAIL_TYPES = {Change.QUALIFIED: "RuleQualified", Change.EXITED: "RuleExited"}
DEFAULT_PROFILE_KEY = "_account"

# Error codes that say "not now" rather than "never", across the three services.
RETRYABLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "InternalFailure", "InternalServerError", "InternalServerErrorException", "InternalServerException",
    "InternalException", "ServiceUnavailable", "ServiceUnavailableException",
})  # fmt: skip


class SinkError(Exception):
    """A sink could not deliver an entry; `retryable` is True when another attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code

    @classmethod
    def from_client_error(cls, sink: str, error: ClientError) -> SinkError:
        details = error.response.get("Error", {})
        code = details.get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        retryable = code in RETRYABLE_CODES or status == 429 or status >= 500
        return cls(f"{sink}: {error.operation_name} failed: {code}: {details.get('Message', '')}",
                   retryable=retryable, code=code)


@dataclass(frozen=True, slots=True)
class Delivered:
    """`deliver`'s answer for a delivery done with something to report (counted and logged by the dispatcher)."""

    note: str


@dataclass(frozen=True, slots=True)
class NotYet:
    """`deliver`'s answer when the target cannot take the entry yet but soon will (a profile Customer Profiles is
    creating from the entry's object): the dispatcher leaves the entry pending for this sink, and the reconciler
    delivers it on a later run, up to `dispatcher.MAX_NOT_YET_MS` after the wait began (docs/actions.md)."""

    reason: str


class Sink(Protocol):
    """One action target."""

    name: str
    last_writer_wins: bool
    """True when the target keeps only the newest write (an attribute): `reassert_later` may write it again."""

    def deliver(self, entry: OutboxEntry) -> str | Delivered | NotYet | None:
        """Deliver `entry`; return None (or `Delivered`) when done, why there was nothing to deliver to, or
        `NotYet`.
        Raises `SinkError`."""
        ...


def is_last_writer_wins(sink: Any) -> bool:
    """`sink.last_writer_wins`; a sink that does not say (written before the attribute existed) is one, as every
    sink was then."""
    return bool(getattr(sink, "last_writer_wins", True))


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def _call(sink: str, method: Any, **params: Any) -> dict[str, Any]:
    try:
        return method(**params)
    except ClientError as error:
        raise SinkError.from_client_error(sink, error) from error
    except BotoCoreError as error:  # connection failures and timeouts, after botocore's own retries
        raise SinkError(f"{sink}: {error}", retryable=True) from error


class EventBridgeSink:
    """`RuleQualified` / `RuleExited` events on a bus (one PutEvents entry per outbox entry)."""

    name = "eventbridge"
    last_writer_wins = True  # consumers see every event; the newest key of a (rule, user) is its state

    def __init__(self, client: Any, event_bus_name: str) -> None:
        self._client = client
        self._bus = event_bus_name

    @staticmethod
    def detail(entry: OutboxEntry) -> dict[str, Any]:
        return {"rule_id": entry.rule_id, "user_id": entry.user_id, "action": entry.action.value,
                "name": entry.name, "value": entry.value, "event_time_ms": entry.event_time_ms,
                "event_id": entry.event_id, "key": entry.key}

    def deliver(self, entry: OutboxEntry) -> str | None:
        response = _call(self.name, self._client.put_events, Entries=[{
            "Source": EVENT_SOURCE,
            "DetailType": DETAIL_TYPES[entry.change],
            "Detail": json.dumps(self.detail(entry), separators=(",", ":")),
            "EventBusName": self._bus,
        }])
        # PutEvents answers 200 even when the entry was refused; the refusal is per entry.
        if response.get("FailedEntryCount"):
            failed = response["Entries"][0]
            code = failed.get("ErrorCode", "")
            raise SinkError(f"{self.name}: PutEvents refused the event: {code}: {failed.get('ErrorMessage', '')}",
                            retryable=code in RETRYABLE_CODES)
        return None


class PinpointSink:
    """User attributes and `trk_…` events on the user's endpoints in a (legacy) Pinpoint project."""

    name = "pinpoint"
    last_writer_wins = True

    def __init__(self, client: Any, application_id: str) -> None:
        self._client = client
        self._app = application_id

    def _endpoint_ids(self, user_id: str) -> list[str]:
        try:
            response = _call(self.name, self._client.get_user_endpoints, ApplicationId=self._app, UserId=user_id)
        except SinkError as error:
            if error.code == "NotFoundException":
                return []  # Pinpoint's answer for a user without endpoints
            raise
        return [endpoint["Id"] for endpoint in response.get("EndpointsResponse", {}).get("Item", [])]

    def deliver(self, entry: OutboxEntry) -> str | None:
        endpoint_ids = self._endpoint_ids(entry.user_id)
        if not endpoint_ids:
            return f"user {entry.user_id!r} has no endpoints in Pinpoint project {self._app}"
        if entry.action is ActionKind.ATTRIBUTE:
            values = [entry.value or READY] if entry.change is Change.QUALIFIED else []
            for endpoint_id in endpoint_ids:
                # Only User is sent: Pinpoint merges an update into the endpoint, so ChannelType, Address
                # and OptOut keep their values, and so do the user's other attributes. UserId is the id
                # the endpoints were found by, repeated so the update can never detach them from the user.
                _call(self.name, self._client.update_endpoint, ApplicationId=self._app, EndpointId=endpoint_id,
                      EndpointRequest={"User": {"UserId": entry.user_id, "UserAttributes": {entry.name: values}}})
            return None
        if entry.change is not Change.QUALIFIED:
            return f"an event action has no exit ({entry.key})"
        event = {"EventType": entry.name, "Timestamp": _iso(entry.event_time_ms),
                 "Attributes": {"rule_id": entry.rule_id, "outbox_key": entry.key}}
        # The Events map is keyed by event id: the outbox key, the same on every redelivery.
        batch = {endpoint_id: {"Endpoint": {}, "Events": {entry.key: event}} for endpoint_id in endpoint_ids}
        response = _call(self.name, self._client.put_events, ApplicationId=self._app,
                         EventsRequest={"BatchItem": batch})
        self._check_put_events(response)
        return None

    def _check_put_events(self, response: dict[str, Any]) -> None:
        # Like EventBridge, Pinpoint's PutEvents reports failures per endpoint and per event inside a 202.
        problems, retryable = [], True
        for endpoint_id, item in response.get("EventsResponse", {}).get("Results", {}).items():
            statuses = [("endpoint", item.get("EndpointItemResponse", {}))]
            statuses += [(f"event {key}", status) for key, status in item.get("EventsItemResponse", {}).items()]
            for what, status in statuses:
                code = status.get("StatusCode")
                if code is not None and code >= 300:
                    problems.append(f"{endpoint_id} {what}: {code} {status.get('Message', '')}".strip())
                    retryable = retryable and (code == 429 or code >= 500)
        if problems:
            raise SinkError(f"{self.name}: PutEvents failed: " + "; ".join(problems), retryable=retryable)


MAX_SEARCH_VALUE_CHARS = 255
"""SearchProfiles takes `Values` of 1-255 characters
(https://docs.aws.amazon.com/connect/latest/APIReference/API_connect-customer-profiles_SearchProfiles.html); the
stream accepts user ids of up to 256 bytes."""


def unsearchable(user_id: str) -> str | None:
    """Why no profile can be looked up (or created) by `user_id`, or None when it can."""
    if len(user_id) > MAX_SEARCH_VALUE_CHARS:
        return (f"user id {user_id[:40]!r}… has {len(user_id)} characters; Customer Profiles search keys take at "
                f"most {MAX_SEARCH_VALUE_CHARS}")
    return None


def profile_ids(sink: str, client: Any, domain_name: str, key_name: str, user_id: str) -> Iterator[str]:
    """The ids of the profiles whose search key `key_name` holds `user_id` (SearchProfiles, every page, lazily:
    a caller that needs only to know whether there are several stops after the second). Callers first rule
    out ids SearchProfiles refuses (`unsearchable`)."""
    params = {"DomainName": domain_name, "KeyName": key_name, "Values": [user_id]}
    while True:
        page = _call(sink, client.search_profiles, **params)
        yield from (profile["ProfileId"] for profile in page.get("Items", []) if profile.get("ProfileId"))
        if not page.get("NextToken"):
            return
        params["NextToken"] = page["NextToken"]


class CustomerProfilesSink:
    """A profile attribute on the user's Amazon Connect Customer Profiles profiles."""

    name = "customer_profiles"
    last_writer_wins = True

    def __init__(self, client: Any, domain_name: str, key_name: str = DEFAULT_PROFILE_KEY, *,
                 profiles_created: bool = False) -> None:
        self._client = client
        self._domain = domain_name
        self._key = key_name
        self._profiles_created = profiles_created
        """True when the object sink creates unknown users' profiles (`connectUnknownUsers: create`)."""

    @staticmethod
    def attribute_value(entry: OutboxEntry) -> str:
        if entry.change is Change.EXITED:
            return ""  # UpdateProfile removes an attribute whose new value is the empty string
        if entry.action is ActionKind.EVENT:
            return _iso(entry.event_time_ms)
        return entry.value or READY

    def deliver(self, entry: OutboxEntry) -> str | NotYet | None:
        if reason := unsearchable(entry.user_id):
            return reason
        # Several profiles can share a key (duplicates not yet merged); each gets the attribute.
        ids = list(profile_ids(self.name, self._client, self._domain, self._key, entry.user_id))
        if not ids:
            if self._profiles_created:
                # In create mode a profile is on its way: the object sink, before this one, put this
                # qualification's object (or, for an exit, an earlier qualification's), from which Customer
                # Profiles creates the profile shortly after ingestion. Ask again later rather than lose the
                # attribute (or the exit's clearing of it).
                return NotYet(f"no profile with {self._key} = {entry.user_id!r} in domain {self._domain} yet; "
                              "a qualification's object creates it")
            return f"no profile with {self._key} = {entry.user_id!r} in domain {self._domain}"
        for profile_id in ids:
            _call(self.name, self._client.update_profile, DomainName=self._domain, ProfileId=profile_id,
                  Attributes={entry.name: self.attribute_value(entry)})
        return None
