"""Amazon Pinpoint event-stream records (app and custom events, push `_campaign.*`, `_journey.*`, `_email.*`,
`_SMS.*`) → canonical events.

Identity:
- user: the top-level `endpoint.User.UserId` (custom events recorded through the events API), else the
  `User.UserId` inside `client_context.custom.endpoint`, which campaign and journey events carry as a JSON
  *string*;
- endpoint: `endpoint.Id`, else `client.client_id` — unless that equals `awsAccountId`, as in SMS events,
  where the "client" is the sending account and the record names no endpoint.

Times and ids (docs/events.md): for email events `event_timestamp` is the *send* time of the message, "typically
the same for all the events that are generated for a message", and `arrival_timestamp` is "the time when the
event was received by Amazon Pinpoint" — the time of the open or click itself
(https://docs.aws.amazon.com/pinpoint/latest/developerguide/event-streams-data-email.html). So an email event's
time is its `arrival_timestamp`, and its id hashes that time and the engagement facet (`open`, `click`, … with
IP, user agent and link) with the message id: two opens of one email are two events, and a redelivery of the
same record (the same bytes) is one. For every other event (app and custom events, push notifications, campaign,
journey and SMS events) `event_timestamp` is "the time when the event was reported"
(event-streams-data-app.html, -campaign.html, -journey.html, -sms.html) and the id leaves `arrival_timestamp`
out, so an SDK retry that re-stamps the arrival is still recognised as the same event.

The email facet (sender, recipients, headers, IP, user agent) is never copied; attributes lose every
address (see `parsing.without_addresses`).
"""

from __future__ import annotations

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode
from functions.events.parsing import Fields, resolve_user, stable_event_id, without_addresses

EMAIL_EVENT_PREFIX = "_email."


def parse_pinpoint(record: Fields, *, identity_mode: IdentityMode) -> CanonicalEvent:
    """Map one Pinpoint event-stream record; raises `FieldError` for a malformed one."""
    event_type = record.text("event_type")
    reported_ms = record.millis("event_timestamp")
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
    mail_event = record.descend("facets", "email_channel", "mail_event")
    message_id = mail_event.find_text("mail", "message_id") if mail_event else None

    identifying = [
        EventSource.PINPOINT.value,
        app_id,
        event_type,
        reported_ms,
        client_id,
        endpoint_id,
        session_id,
        attributes,
        metrics,
        message_id,
    ]
    event_time_ms = reported_ms
    if event_type.startswith(EMAIL_EVENT_PREFIX):
        event_time_ms = arrival_time_ms
        identifying += [arrival_time_ms, _engagement_facets(mail_event)]
    return CanonicalEvent(
        event_id=stable_event_id("pp-", identifying),
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


def _engagement_facets(mail_event: Fields | None) -> dict:
    """The event-specific objects next to `mail` (`open`, `click`, `delivery`, …): hashed into the id only."""
    if mail_event is None:
        return {}
    return {name: mail_event.raw(name) for name in sorted(mail_event.names()) if name != "mail"}
