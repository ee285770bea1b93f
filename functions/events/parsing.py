"""Helpers shared by the source adapters: typed field reads, limits, address scrubbing, stable ids.

Adapters read raw JSON only through `Fields`, whose every failure is a `FieldError` naming the field
path (`detail.mail.messageId`) and what was wrong; `normalise` turns that into a `Rejected`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

from functions.events.canonical import IdentityMode

MAX_ENTRIES = 100
"""Most attributes (and, separately, metrics) one record may carry."""

MAX_VALUE_CHARS = 1_000
"""Longest attribute value accepted."""

MAX_NAME_CHARS = 256
"""Longest attribute or metric name accepted."""

MAX_ID_BYTES = 256
"""Longest user, endpoint, campaign, journey or item id accepted, in UTF-8 bytes; a longer one rejects the
record. The user id becomes the rules engine's DynamoDB partition key `<rule_id>#<user_id>` (at most 2048
bytes: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Constraints.html) and the item id a
Personalize ITEM_ID; 256 leaves room for the rule id and matches Kinesis' partition key limit. docs/events.md."""

MAX_METRIC_ABS = 1e12
"""Largest metric magnitude accepted. The rules engine adds metrics exactly and the backfill sums them in
Athena's DECIMAL(38, 17), which holds magnitudes below 1e21: at 1e12 a user would need a billion events of the
largest value to overflow it (docs/events.md, "Bounds")."""

MAX_METRIC_DECIMALS = 17
"""Most digits after the decimal point of a metric's shortest decimal form (`repr`), so DECIMAL(38, 17) holds
it exactly and the live sum (Decimal of that form) and the backfill's agree to the last digit."""

IDENTIFIER_ATTRIBUTES = frozenset({"personalize_user_id", "item_id", "campaign_id", "journey_id"})
"""Attributes that are ids, joined on (`personalize_user_id` is the interactions' USER_ID of an exposure): held
to the id limit, and never dropped by the address scrubber — an id is kept as given (docs/security.md)."""

MAX_EVENT_ID_BYTES = 256
"""Longest event id kept as given, in UTF-8 bytes; a longer producer id is replaced by `hashed_event_id`.
Event ids are kept in the counter items' de-duplication sets (DynamoDB items hold at most 400 KB)."""

# Plausible event times. The lower bound also catches Unix *seconds* sent where milliseconds belong,
# which would otherwise land silently in January 1970.
MIN_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a date partition can name

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

ADDRESS_KEYS = frozenset(
    {
        "address",
        "destination",
        "destination_phone_number",
        "email",
        "email_address",
        "from_address",
        "ip",
        "ip_address",
        "origination_phone_number",
        "phone",
        "phone_number",
        "source_ip",
        "user_agent",
    }
)
"""Attribute names that hold addresses by definition (Pinpoint SMS/email samples, SES fields); dropped."""

# Searched anywhere in a value ("call +14155550123" hides a number too); digit boundaries keep
# longer numbers and dotted version strings with five or more parts from matching.
# Anchored at the `@` (a look-behind for one local-part character) rather than at the local part: a search
# that starts with `[^@\s<>]+` retries at every character of a long run without an `@`, which is quadratic
# in the value's length. This way each attempt scans only up to the next `@`, so a value costs linear time.
_EMAIL = re.compile(r"(?<=[^@\s<>])@[^@\s<>]+\.[^@\s<>]")
_E164 = re.compile(r"(?<![0-9+])\+[1-9][0-9]{6,14}(?![0-9])")
_IPV4 = re.compile(r"(?<![0-9.])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9.])")


class FieldError(Exception):
    """A record field is missing or has the wrong type; the message is the reason given to people."""


def show(value: Any, limit: int = 60) -> str:
    """A short printable rendering of a bad value for a rejection reason."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _valid_text(value: str, path: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # json.loads accepts lone surrogates ("\ud800"); they cannot be written out as UTF-8 later.
        raise FieldError(f"field {path}: not valid Unicode (contains a lone surrogate)") from None
    return value


def iso_to_ms(value: str, path: str) -> int:
    """Parse an ISO-8601 time with a UTC offset into Unix milliseconds."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FieldError(f"field {path}: expected an ISO-8601 time, got {show(value)}") from None
    if moment.tzinfo is None:
        raise FieldError(f"field {path}: time {show(value)} has no UTC offset (add 'Z' or '+00:00')")
    return check_time_ms((moment - _EPOCH) // timedelta(milliseconds=1), path)


def check_time_ms(value: int, path: str) -> int:
    """`value` if it is a plausible time in Unix milliseconds, else a FieldError."""
    if not MIN_TIME_MS <= value <= MAX_TIME_MS:
        hint = " (seconds instead of milliseconds?)" if 0 < value < MIN_TIME_MS else ""
        raise FieldError(f"field {path}: time {value} is outside 2000-01-01..9999-12-31 in Unix milliseconds{hint}")
    return value


def _check_count(entries: Mapping[str, Any], path: str) -> None:
    if len(entries) > MAX_ENTRIES:
        raise FieldError(f"field {path}: {len(entries)} entries, more than the limit of {MAX_ENTRIES}")
    for key in entries:
        if len(key) > MAX_NAME_CHARS:
            raise FieldError(
                f"field {path}: name {show(key)} is {len(key)} characters, more than the limit of {MAX_NAME_CHARS}"
            )


def check_attributes(attributes: Mapping[str, str], path: str) -> dict[str, str]:
    """Apply the attribute limits (count, value length; the id limit for `IDENTIFIER_ATTRIBUTES`) to a finished
    str→str map."""
    _check_count(attributes, path)
    for key, value in attributes.items():
        if len(value) > MAX_VALUE_CHARS:
            raise FieldError(
                f"field {path}.{key}: value is {len(value)} characters, more than the limit of {MAX_VALUE_CHARS}"
            )
        if key in IDENTIFIER_ATTRIBUTES:
            check_id(f"field {path}.{key}:", value)
    return dict(attributes)


class Fields:
    """Typed, path-aware reads from one JSON object.

    `required=False` reads return None when the field is absent or null; a present field of the wrong
    type is always an error. Empty strings count as absent for optional text (ids are never "").
    """

    __slots__ = ("_data", "_path")

    def __init__(self, data: Mapping[str, Any], path: str = "") -> None:
        self._data = data
        self._path = path

    @classmethod
    def of(cls, value: Any, path: str) -> Fields:
        if not isinstance(value, dict):
            raise FieldError(f"field {path}: expected a JSON object, got {kind_of(value)}")
        return cls(value, path)

    def path(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def has(self, name: str) -> bool:
        return self._data.get(name) is not None

    def _get(self, name: str, required: bool) -> Any:
        value = self._data.get(name)
        if value is None and required:
            raise FieldError(f"missing field {self.path(name)}")
        return value

    def child(self, name: str, *, required: bool = True) -> Fields | None:
        value = self._get(name, required)
        return None if value is None else Fields.of(value, self.path(name))

    def descend(self, *names: str) -> Fields | None:
        """The object at a nested path, or None where any step is absent."""
        fields: Fields | None = self
        for name in names:
            fields = fields.child(name, required=False) if fields else None
        return fields

    def find_text(self, *path: str) -> str | None:
        """Optional text at a nested path, e.g. `find_text("endpoint", "User", "UserId")`."""
        parent = self.descend(*path[:-1])
        return parent.text(path[-1], required=False) if parent else None

    def embedded(self, name: str) -> Fields | None:
        """An optional object that producers may also send as a JSON *string* (Pinpoint's client_context)."""
        value = self._data.get(name)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                raise FieldError(f"field {self.path(name)}: expected a JSON object string, got {show(value)}") from None
        return None if value is None else Fields.of(value, self.path(name))

    def text(self, name: str, *, required: bool = True) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise FieldError(f"field {self.path(name)}: expected a string, got {show(value)}")
        if not value:
            if required:
                raise FieldError(f"field {self.path(name)}: must not be empty")
            return None
        return _valid_text(value, self.path(name))

    def millis(self, name: str, *, required: bool = True) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError(f"field {self.path(name)}: expected integer milliseconds, got {show(value)}")
        return check_time_ms(value, self.path(name))

    def iso_millis(self, name: str, *, required: bool = True) -> int | None:
        value = self.text(name, required=required)
        return None if value is None else iso_to_ms(value, self.path(name))

    def names(self) -> list[str]:
        return list(self._data)

    def raw(self, name: str) -> Any:
        """The field's JSON value as it is (for hashing into an id, never for copying into an event)."""
        return self._data.get(name)

    def flag(self, name: str) -> bool | None:
        value = self._data.get(name)
        if value is not None and not isinstance(value, bool):
            raise FieldError(f"field {self.path(name)}: expected true or false, got {show(value)}")
        return value

    def text_map(self, name: str) -> dict[str, str]:
        """An optional {str: str} object, within the attribute limits."""
        entries = self._entries(name)
        _check_count(entries, self.path(name))
        for key, value in entries.items():
            if not isinstance(value, str):
                raise FieldError(f"field {self.path(name)}.{key}: expected a string, got {show(value)}")
            _valid_text(key, f"{self.path(name)}.{key}")
            _valid_text(value, f"{self.path(name)}.{key}")
        return check_attributes(entries, self.path(name))

    def number_map(self, name: str) -> dict[str, float]:
        """An optional {str: finite number} object, within the metric limits."""
        entries = self._entries(name)
        _check_count(entries, self.path(name))
        metrics: dict[str, float] = {}
        for key, value in entries.items():
            path = f"{self.path(name)}.{key}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise FieldError(f"field {path}: expected a number, got {show(value)}")
            try:
                number = float(value)
            except OverflowError:  # an integer literal too large for a double
                number = math.inf
            if not math.isfinite(number):
                raise FieldError(f"field {path}: expected a finite number, got {show(value)}")
            metrics[_valid_text(key, path)] = check_metric(number, path)
        return metrics

    def tag_values(self, name: str) -> dict[str, str]:
        """SES-style tags {name: [value, ...]} as {name: first value}; tags without a value are left out."""
        tags: dict[str, str] = {}
        for key, values in self._entries(name).items():
            path = f"{self.path(name)}.{key}"
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise FieldError(f"field {path}: expected a list of strings, got {show(values)}")
            if values and values[0]:
                tags[_valid_text(key, path)] = _valid_text(values[0], path)
        return tags

    def _entries(self, name: str) -> dict[str, Any]:
        value = self._data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise FieldError(f"field {self.path(name)}: expected a JSON object, got {show(value)}")
        return value


def check_metric(number: float, path: str) -> float:
    """`number` if it lies within ±`MAX_METRIC_ABS` with at most `MAX_METRIC_DECIMALS` decimals, else a
    FieldError: a value the live sum and the backfill's DECIMAL(38, 17) could not both hold exactly."""
    if abs(number) > MAX_METRIC_ABS:
        raise FieldError(f"field {path}: {show(number)} is outside ±{MAX_METRIC_ABS:.0e}, the metric range")
    exponent = Decimal(repr(number)).as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_METRIC_DECIMALS:
        raise FieldError(f"field {path}: {show(number)} has more than {MAX_METRIC_DECIMALS} decimals; "
                         f"round it, or send it in a smaller unit")
    return number


def kind_of(value: Any) -> str:
    """'a list', 'a string', 'null', … — for reasons about the shape of a value."""
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def looks_like_address(value: str) -> bool:
    """True for values that contain an email address, an E.164 phone number or an IPv4 address."""
    return any(pattern.search(value) for pattern in (_EMAIL, _E164, _IPV4))


def without_addresses(attributes: Mapping[str, str]) -> dict[str, str]:
    """Drop address-holding attributes, by name (`ADDRESS_KEYS`) and by the look of the value — except the
    ids of `IDENTIFIER_ATTRIBUTES`, which are kept as given like every other id: dropping an exposure's
    `personalize_user_id` because it looks like an address would lose the join, not the address."""
    return {
        key: value
        for key, value in attributes.items()
        if key.lower() not in ADDRESS_KEYS and (key in IDENTIFIER_ATTRIBUTES or not looks_like_address(value))
    }


def resolve_user(user_id: str | None, endpoint_id: str | None, mode: IdentityMode) -> str | None:
    """The record's user, falling back to its endpoint when the identity mode allows it."""
    if user_id is None and mode is IdentityMode.USER_OR_ENDPOINT:
        return endpoint_id
    return user_id


def stable_event_id(prefix: str, parts: Iterable[Any]) -> str:
    """`prefix` + sha256 hex of the record's identifying content, so a duplicate delivery gets the same id."""
    # ensure_ascii keeps the digest input plain ASCII whatever the text; sort_keys makes dicts order-free.
    content = json.dumps(list(parts), ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return prefix + hashlib.sha256(content.encode("ascii")).hexdigest()


def utf8_length(value: str) -> int:
    return len(value.encode("utf-8"))


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters (line breaks included): never part of an id."""


def check_id(name: str, value: str | None) -> str | None:
    """`value` if it is within `MAX_ID_BYTES` and holds no control character, else a FieldError naming the
    field: an id with a line break would split its row of the interactions file, whose records Personalize
    wants each on one line (docs/interactions.md)."""
    if value is not None and (size := utf8_length(value)) > MAX_ID_BYTES:
        raise FieldError(f"{name} {show(value, 40)} is {size} bytes of UTF-8, more than the limit of {MAX_ID_BYTES}")
    if value is not None and CONTROL_CHARACTERS.search(value):
        raise FieldError(f"{name} {show(value, 40)} contains a line break or another control character")
    return value


def check_event_type(event_type: str) -> str:
    """`event_type` if it is at most `MAX_NAME_CHARS` characters without control characters, else a FieldError:
    it is a rules sheet's EventName, a Personalize EVENT_TYPE (at most 256) and a row of the interactions file."""
    if len(event_type) > MAX_NAME_CHARS:
        raise FieldError(f"event type {show(event_type, 40)} is {len(event_type)} characters, more than the limit "
                         f"of {MAX_NAME_CHARS}")
    if CONTROL_CHARACTERS.search(event_type):
        raise FieldError(f"event type {show(event_type, 40)} contains a line break or another control character")
    return event_type


def hashed_event_id(event_id: str) -> str:
    """`event_id`, or for one longer than `MAX_EVENT_ID_BYTES` `"idh-"` + sha256 hex of its UTF-8 bytes:
    deterministic, so every delivery of the record still gets the same id."""
    if utf8_length(event_id) <= MAX_EVENT_ID_BYTES:
        return event_id
    return "idh-" + hashlib.sha256(event_id.encode("utf-8")).hexdigest()
