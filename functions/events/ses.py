"""Amazon SES v2 configuration-set events delivered by EventBridge → canonical events.

The record is the EventBridge envelope (`source: "aws.ses"`, `detail-type`, `time`) around SES's event
record in `detail` (`eventType`, `mail`, and one event-specific object such as `open` or `bounce`).
Event types take Pinpoint's email names so one scoring model serves both sources (`SES_EVENT_TYPES`);
a `Bounce` is `_email.hardbounce` when `bounceType` is `Permanent`, else `_email.softbounce`.

Identity convention: SES knows only addresses, so senders put the ids on the message as SES message
tags, which SES returns in `detail.mail.tags`:

    user_id, endpoint_id, campaign_id, journey_id, item_id

A click's link tag `item_id` (`detail.click.linkTags`) names the item behind that one link and wins over
the message's. With identity mode `user_or_endpoint` a message without `user_id` is attributed to its
`endpoint_id`. The other custom tags (campaign_id, journey_id and item_id included, as with Pinpoint)
become attributes; SES's own `ses:*` tags do not (one is the sender's IP).

Times: `event_time_ms` is the event-specific timestamp (e.g. `open.timestamp`, when the open happened), else
the send time `mail.timestamp`; the envelope's `time` is only the fallback arrival time when no Kinesis arrival
time is given (see `normalise`). The id hashes the message id, the SES event type, that time and the whole
event-specific object (IP, user agent, link, recipients: hashed, never copied): two opens or clicks differ, a
redelivery of the same SES event in a new EventBridge envelope does not. Field meanings:
https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html ("Open object":
"the date and time when the open event occurred"); details in
docs/events.md. Addresses (source, destination, headers, recipients, IP, user agent) are never copied; a
click's `link` is kept as attribute `link`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple

from functions.events.canonical import CanonicalEvent, EventSource, IdentityMode
from functions.events.parsing import (
    MAX_VALUE_CHARS,
    FieldError,
    Fields,
    check_attributes,
    resolve_user,
    show,
    stable_event_id,
    without_addresses,
)


class _SesType(NamedTuple):
    event_type: str
    """The canonical (Pinpoint) name."""
    detail_key: str
    """Where SES puts this type's own object in `detail`."""
    copied: Mapping[str, str] = MappingProxyType({})
    """attribute name → field of that object, copied when present."""


_SES_TYPES: Mapping[str, _SesType] = MappingProxyType(
    {
        "Send": _SesType("_email.send", "send"),
        "Delivery": _SesType("_email.delivered", "delivery"),
        "Open": _SesType("_email.open", "open"),
        "Click": _SesType("_email.click", "click"),
        # _email.hardbounce when bounceType is Permanent, see parse_ses.
        "Bounce": _SesType(
            "_email.softbounce", "bounce", {"bounce_type": "bounceType", "bounce_sub_type": "bounceSubType"}
        ),
        "Complaint": _SesType("_email.complaint", "complaint", {"complaint_feedback_type": "complaintFeedbackType"}),
        "Reject": _SesType("_email.rejected", "reject", {"reject_reason": "reason"}),
        "RenderingFailure": _SesType("_email.rendering_failure", "failure", {"template_name": "templateName"}),
        "DeliveryDelay": _SesType("_email.delivery_delay", "deliveryDelay", {"delay_type": "delayType"}),
        "Subscription": _SesType("_email.unsubscribe", "subscription", {"contact_list": "contactList"}),
    }
)

SES_EVENT_TYPES: Mapping[str, str] = MappingProxyType({name: t.event_type for name, t in _SES_TYPES.items()})
"""SES `eventType` → canonical (Pinpoint) event type."""


def parse_ses(envelope: Fields, *, identity_mode: IdentityMode) -> CanonicalEvent:
    """Map one EventBridge-delivered SES event; raises `FieldError` for a malformed or non-email one."""
    arrival_time_ms = envelope.iso_millis("time")
    detail = envelope.child("detail")
    ses_type = detail.text("eventType")
    # SES's own samples spell it "Rendering Failure"; EventBridge's schema spells it without the space.
    ses_type = "RenderingFailure" if ses_type == "Rendering Failure" else ses_type
    if ses_type not in _SES_TYPES:
        raise FieldError(
            f"field detail.eventType: {show(ses_type)} is not an SES email event "
            f"(expected one of {', '.join(_SES_TYPES)})"
        )
    ses = _SES_TYPES[ses_type]
    specific = detail.child(ses.detail_key, required=False)
    mail = detail.child("mail")
    message_id = mail.text("messageId")
    specific_time_ms = specific.iso_millis("timestamp", required=False) if specific else None
    event_time_ms = specific_time_ms if specific_time_ms is not None else mail.iso_millis("timestamp")

    tags = mail.tag_values("tags")
    link = specific.text("link", required=False) if specific and ses_type == "Click" else None
    link_tags = specific.tag_values("linkTags") if specific and ses_type == "Click" else {}
    attributes = {
        name: value
        for name, value in tags.items()
        if not name.startswith(("ses:", "aws:")) and name not in ("user_id", "endpoint_id")
    }
    attributes["message_id"] = message_id
    if configuration_set := tags.get("ses:configuration-set"):
        attributes["configuration_set"] = configuration_set
    if specific:
        attributes |= _event_attributes(ses_type, specific, ses.copied)
    if link and (short_link := _short_link(link)):
        attributes["link"] = short_link
    # Bounded before they are scanned for addresses, so a hostile value costs nothing to refuse.
    attributes = without_addresses(check_attributes(attributes, "detail.mail.tags"))

    event_type = ses.event_type
    if ses_type == "Bounce" and attributes.get("bounce_type") == "Permanent":
        event_type = "_email.hardbounce"
    endpoint_id = tags.get("endpoint_id")
    return CanonicalEvent(
        event_id=stable_event_id("ses-", [message_id, ses_type, event_time_ms, detail.raw(ses.detail_key)]),
        source=EventSource.SES,
        event_type=event_type,
        event_time_ms=event_time_ms,
        arrival_time_ms=arrival_time_ms,
        user_id=resolve_user(tags.get("user_id"), endpoint_id, identity_mode),
        endpoint_id=endpoint_id,
        campaign_id=tags.get("campaign_id"),
        journey_id=tags.get("journey_id"),
        item_id=link_tags.get("item_id") or tags.get("item_id"),
        attributes=attributes,
    )


def _event_attributes(ses_type: str, specific: Fields, copied: Mapping[str, str]) -> dict[str, str]:
    attributes = {name: value for name, field in copied.items() if (value := specific.text(field, required=False))}
    if ses_type == "Subscription":
        preferences = specific.descend("newTopicPreferences")
        unsubscribe_all = preferences.flag("unsubscribeAll") if preferences else None
        if unsubscribe_all is not None:
            # Every Subscription event maps to _email.unsubscribe; this tells "all topics" apart.
            attributes["unsubscribe_all"] = "true" if unsubscribe_all else "false"
    return attributes


def _short_link(link: str) -> str | None:
    """The link, or for an over-long one the page it points to (tracking query strings run long)."""
    if len(link) <= MAX_VALUE_CHARS:
        return link
    page = link.split("?", 1)[0].split("#", 1)[0]
    return page if len(page) <= MAX_VALUE_CHARS else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SesRoute:
    """One way an SES event reaches the stream: the EventBridge rule's extra tag conditions and the
    Kinesis partition key it uses.

    EventBridge fails the delivery (to the dead-letter queue) when `PartitionKeyPath` names a field the event
    lacks, so each route's pattern requires its key field with `exists` and the routes together cover every
    event exactly once (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_KinesisParameters.html,
    https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html, "Exists matching").
    """

    name: str
    """`user`, `endpoint` or `message`: the resource name suffix of its rule and target."""
    tag_conditions: Mapping[str, Any]
    """Conditions on `detail.mail.tags`, added to the configuration-set match."""
    partition_key_path: str
    """The JSONPath EventBridge reads the partition key from."""


SES_ROUTES: tuple[SesRoute, ...] = (
    # Tagged with the user: the key keeps that user's events in order on one shard.
    SesRoute(name="user", tag_conditions={"user_id": [{"exists": True}]},
             partition_key_path="$.detail.mail.tags.user_id[0]"),
    # No user: the normaliser falls back to the endpoint under identityMode user_or_endpoint, so key by it.
    SesRoute(name="endpoint", tag_conditions={"user_id": [{"exists": False}], "endpoint_id": [{"exists": True}]},
             partition_key_path="$.detail.mail.tags.endpoint_id[0]"),
    # Neither: the event has no user at all; the message id spreads such events over the shards.
    SesRoute(name="message", tag_conditions={"user_id": [{"exists": False}], "endpoint_id": [{"exists": False}]},
             partition_key_path="$.detail.mail.messageId"),
)


def ses_partition_key(event: Mapping[str, Any]) -> str | None:
    """The partition key the `SES_ROUTES` give this EventBridge event (None if it has no message id)."""
    detail = event.get("detail")
    mail = detail.get("mail") if isinstance(detail, dict) else None
    if not isinstance(mail, dict):
        return None
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    for tag in ("user_id", "endpoint_id"):
        values = tags.get(tag)
        if isinstance(values, list) and values and isinstance(values[0], str) and values[0]:
            return values[0]
    message_id = mail.get("messageId")
    return message_id if isinstance(message_id, str) and message_id else None
