"""The dispatcher's Amazon Connect sink for campaigns and journeys: one profile object per qualification or exit.

Connect's event triggers (what starts an outbound campaign or a journey) fire on ingested profile objects, not
on profile attributes, so with a Customer Profiles domain configured each entry is also written to the user's
profile as an object of the type the stack defines (`connectObjectTypeName`, default
`EngagementLoopQualification`), with `PutProfileObject`
(https://docs.aws.amazon.com/connect/latest/APIReference/API_connect-customer-profiles_PutProfileObject.html).

The object (`profile_object`) is a flat JSON object of strings: `outbox_key`, `user_id`, `rule_id`,
`action_name`, `action`, `change`, `value`, `event_time`, `event_id`. The object type maps `outbox_key` to
its UNIQUE key, the key "that uniquely identifies the object so that it can be updated by specifying the
same value of this field" (https://docs.aws.amazon.com/connect/latest/adminguide/object-type-mapping-requirements.html):
a redelivery of an entry (the dispatcher is at least once per sink) replaces its object instead of adding one. `user_id`
is mapped to the PROFILE key `connectProfileKey` (the standard `AccountNumber` for `_account`).

Which profile: the sink looks the user up first with `SearchProfiles` on the same key, through the helper the
attribute sink uses (`sinks.profile_ids`):
- exactly one profile: the object is put;
- several profiles sharing the key: skipped with a reason asking the admin to merge them; Customer Profiles
  never attaches an object by an ambiguous key
  (https://docs.aws.amazon.com/connect/latest/adminguide/profile-matching.html);
- none: `UnknownUsers.SKIP` (default) skips with a reason; `UnknownUsers.CREATE` puts the object anyway, and
  the object type's `AllowProfileCreation` (true in that mode) makes Customer Profiles create the profile with
  the key's value; the delivery reports `PROFILE_CREATED`, counted as the `ProfilesCreated` metric.

Throttling and service faults raise a retryable `SinkError` (the dispatcher retries them in-process, then
dead-letters); a refused request does not. The object is bounded well under PutProfileObject's 256,000
characters (every field is a bounded string), but the bound is checked before any call all the same.
"""

from __future__ import annotations

import enum
import itertools
import json
from typing import Any

from botocore.config import Config

from functions.rules.outbox import Change, OutboxEntry
from functions.rules.rules_source import Env
from functions.rules.sinks import (
    DEFAULT_PROFILE_KEY,
    Delivered,
    SinkError,
    _call,
    _iso,
    profile_ids,
    NotYet,
    unsearchable,
)

DEFAULT_OBJECT_TYPE = "EngagementLoopQualification"
OBJECT_FIELDS = ("outbox_key", "user_id", "rule_id", "action_name", "action", "change", "value", "event_time",
                 "event_id")
"""The object's fields, in order: the stack's object type maps exactly these."""
MAX_OBJECT_CHARS = 256_000
"""PutProfileObject's `Object`: "Length Constraints: Minimum length of 1. Maximum length of 256000"."""
PROFILE_CREATED = "profile created"
"""The object sink's `Delivered` note when it put an object for a user without a profile (create mode)."""

# Standard retry mode: exponential backoff with jitter on throttling and transient errors, a retry quota, and
# max_attempts counting the first call (https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).
# The dispatcher's own in-process attempts come on top, for what is still failing after these.
CUSTOMER_PROFILES_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


class UnknownUsers(str, enum.Enum):
    """What the object sink does for a user no profile has under the key (`connectUnknownUsers`)."""

    SKIP = "skip"
    """Nothing: the entry is marked done for the sink with the reason (no error, no retry)."""
    CREATE = "create"
    """Put the object anyway; Customer Profiles creates the profile (the object type allows it in this mode)."""


def read_unknown_users(env: Env, name: str = "CONNECT_UNKNOWN_USERS") -> UnknownUsers:
    """`name` from `env` (default `skip`); a bad value is one of `env`'s problems, naming the variable."""
    raw = env.text(name, UnknownUsers.SKIP.value)
    try:
        return UnknownUsers(raw)
    except ValueError:
        choices = ", ".join(mode.value for mode in UnknownUsers)
        env.problems.append(f"{name}={raw!r} is invalid: expected one of {choices}")
        return UnknownUsers.SKIP


def profile_object(entry: OutboxEntry) -> dict[str, str]:
    """The object PutProfileObject stores for `entry`: exactly `OBJECT_FIELDS`, all strings."""
    return {"outbox_key": entry.key, "user_id": entry.user_id, "rule_id": entry.rule_id,
            "action_name": entry.name, "action": entry.action.value, "change": entry.change.value,
            "value": entry.value or "", "event_time": _iso(entry.event_time_ms), "event_id": entry.event_id}


def object_json(entry: OutboxEntry) -> str:
    """`profile_object(entry)` as compact JSON: PutProfileObject's `Object` string."""
    return json.dumps(profile_object(entry), separators=(",", ":"))


class ProfileObjectSink:
    """A profile object per entry on the user's profile (see the module docstring)."""

    name = "customer_profiles_objects"
    last_writer_wins = False
    """An object is an occurrence an event trigger may act on, not a state: never written again to restore one."""

    def __init__(self, client: Any, domain_name: str, object_type_name: str = DEFAULT_OBJECT_TYPE,
                 key_name: str = DEFAULT_PROFILE_KEY, unknown_users: UnknownUsers = UnknownUsers.SKIP) -> None:
        self._client = client
        self._domain = domain_name
        self._type = object_type_name
        self._key = key_name
        self._unknown = UnknownUsers(unknown_users)

    def deliver(self, entry: OutboxEntry) -> str | Delivered | NotYet | None:
        document = object_json(entry)
        if len(document) > MAX_OBJECT_CHARS:
            raise SinkError(f"{self.name}: the object of {entry.key} has {len(document):,} characters; "
                            f"PutProfileObject takes at most {MAX_OBJECT_CHARS:,}", retryable=False)
        if reason := unsearchable(entry.user_id):
            return reason  # nor could a profile be created with it as its key
        # Two are enough to know the key is ambiguous; no need to page through every duplicate.
        found = list(itertools.islice(
            profile_ids(self.name, self._client, self._domain, self._key, entry.user_id), 2))
        if len(found) > 1:
            return (f"several profiles have {self._key} = {entry.user_id!r} in domain {self._domain}: Customer "
                    "Profiles cannot attach an object to an ambiguous key; merge the duplicate profiles")
        if not found and self._unknown is UnknownUsers.SKIP:
            return (f"no profile with {self._key} = {entry.user_id!r} in domain {self._domain} "
                    "(unknown users are skipped)")
        if not found and entry.change is Change.EXITED:
            # No profile is created for an exit: the qualification before it put an object that creates one, and
            # matching may still be on its way, so the exit's object waits for it (the dispatcher's bounded wait).
            return NotYet(f"no profile with {self._key} = {entry.user_id!r} in domain {self._domain} yet to "
                          "record the exit on")
        _call(self.name, self._client.put_profile_object, DomainName=self._domain, ObjectTypeName=self._type,
              Object=document)
        return None if found else Delivered(PROFILE_CREATED)
