"""Amazon Pinpoint event-stream records (app and custom events, `_campaign.*`, `_journey.*`, `_email.*`,
`_SMS.*`) → canonical events.

Identity:
- user: the top-level `endpoint.User.UserId` (custom events recorded through the events API), else the
  `User.UserId` inside `client_context.custom.endpoint`, which campaign and journey events carry as a JSON
  *string*;
- endpoint: `endpoint.Id`, else `client.client_id` — unless that equals `awsAccountId`, as in SMS events,
  where the "client" is the sending account and the record names no endpoint.

The email facet (sender, recipients, headers, IP, user agent) is never copied; attributes lose every
address (see `parsing.without_addresses`). Pinpoint gives no event id, so the id is a hash of the record's
identifying content, leaving out `arrival_timestamp` so a producer retry stamped with a new arrival time
is still recognised as the same event.
"""

from __future__ import annotations

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode
from functions.events.parsing import Fields, resolve_user, stable_event_id, without_addresses


def parse_pinpoint(record: Fields, *, identity_mode: IdentityMode) -> CanonicalEvent:
    """Map one Pinpoint event-stream record; raises `FieldError` for a malformed one."""
    event_type = record.text("event_type")
    event_time_ms = record.millis("event_timestamp")
    arrival_time_ms = record.millis("arrival_timestamp")
    app_id = record.find_text("application", "app_id")
    client_id = record.find_text("client", "client_id")
    session_id = record.find_text("session", "session_id")

    custom_context = record.descend("client_context", "custom")
    context_endpoint = custom_context.embedded("endpoint") if custom_context else None
    user_id = record.find_text("endpoint", "User", "UserId") or (
        context_endpoint.find_text("User", "UserId") if context_endpoint else None
    )
    endpoint_id = record.find_text("endpoint", "Id")
    if endpoint_id is None and client_id != record.text("awsAccountId", required=False):
        endpoint_id = client_id

    attributes = without_addresses(record.text_map("attributes"))
    metrics = record.number_map("metrics")
    message_id = record.find_text("facets", "email_channel", "mail_event", "mail", "message_id")
    link = record.find_text("facets", "email_channel", "mail_event", "click", "link")

    event_id = stable_event_id(
        "pp-",
        [
            EventSource.PINPOINT.value,
            app_id,
            event_type,
            event_time_ms,
            client_id,
            endpoint_id,
            session_id,
            attributes,
            metrics,
            message_id,
            link,
        ],
    )
    return CanonicalEvent(
        event_id=event_id,
        source=EventSource.PINPOINT,
        event_type=event_type,
        event_time_ms=event_time_ms,
        arrival_time_ms=arrival_time_ms,
        user_id=resolve_user(user_id, endpoint_id, identity_mode),
        endpoint_id=endpoint_id,
        campaign_id=attributes.get("campaign_id") or None,
        journey_id=attributes.get("journey_id") or None,
        item_id=attributes.get("item_id") or None,
        attributes=attributes,
        metrics=metrics,
    )

