"""An in-memory Amazon Connect Customer Profiles domain for the replay (moto has no Customer Profiles).

It answers the three calls the dispatcher makes — `search_profiles`, `update_profile`, `put_profile_object` —
and validates every request against botocore's service model first (`botocore.validate.validate_parameters`
with the operation's input shape, plus the string length bounds the validator leaves out), so a request the
real service would refuse for its shape fails here too. Profiles hold an `AccountNumber` (the `_account`
search key) and `Attributes`; objects are stored per object type under their UNIQUE key (`outbox_key`, as the
stack's object type declares it), so a put of the same key replaces the object, as Customer Profiles does
(https://docs.aws.amazon.com/connect/latest/adminguide/object-type-mapping-requirements.html). An object is
attached to the one profile whose key holds its `user_id`; with none, a profile is created when the object
type allows it (`AllowProfileCreation`), and otherwise — or with several — the put is refused, because the
dispatcher must never send one then.

`lose_put_responses`: that share of the objects has its first `put_profile_object` applied and then answer a
service fault (the response lost), so the dispatcher retries a put that was in fact done.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

import botocore.session
from botocore.exceptions import ClientError
from botocore.validate import validate_parameters

_MODEL = botocore.session.get_session().get_service_model("customer-profiles")


@dataclass
class Profile:
    profile_id: str
    account_number: str
    attributes: dict[str, str] = field(default_factory=dict)
    objects: list[str] = field(default_factory=list)
    """The UNIQUE keys of the objects attached to this profile."""
    created_by_object: bool = False


class CustomerProfilesStandIn:
    """One domain, one object type keyed by `_account` (see the module docstring)."""

    def __init__(self, domain: str, object_type: str, *, allow_profile_creation: bool,
                 lose_put_responses: float = 0.0, seed: int = 0) -> None:
        self.domain, self.object_type, self.allow_profile_creation = domain, object_type, allow_profile_creation
        self.profiles: dict[str, Profile] = {}
        self.objects: dict[str, dict[str, str]] = {}
        """UNIQUE key (`outbox_key`) → the object as stored."""
        self.calls: dict[str, int] = {}
        self.lose_put_responses, self._rng = lose_put_responses, random.Random(seed)
        self.lost_responses: set[str] = set()
        """The UNIQUE keys whose first put answered a fault after it was applied."""

    def add_profile(self, account_number: str) -> str:
        profile_id = f"p{len(self.profiles) + 1:04d}"
        self.profiles[profile_id] = Profile(profile_id, account_number)
        return profile_id

    def with_account(self, account_number: str) -> list[Profile]:
        return [p for p in self.profiles.values() if p.account_number == account_number]

    # -- the API ----------------------------------------------------------------------------------------

    def _check(self, operation: str, params: dict[str, Any]) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        shape = _MODEL.operation_model(operation).input_shape
        validate_parameters(params, shape)  # raises ParamValidationError: types, required members, minimums
        for name, member in shape.members.items():
            maximum = member.metadata.get("max")
            if member.type_name == "string" and maximum is not None and len(params.get(name, "")) > maximum:
                raise AssertionError(f"{operation}: {name} has {len(params[name])} characters, at most {maximum}")
        if params["DomainName"] != self.domain:
            raise self._error(operation, "ResourceNotFoundException", f"no domain {params['DomainName']}", 404)

    @staticmethod
    def _error(operation: str, code: str, message: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, operation)

    def search_profiles(self, **params: Any) -> dict[str, Any]:
        self._check("SearchProfiles", params)
        if params["KeyName"] != "_account":
            raise self._error("SearchProfiles", "BadRequestException", f"no search key {params['KeyName']}", 400)
        found = [p for value in params["Values"] for p in self.with_account(value)]
        return {"Items": [{"ProfileId": p.profile_id, "AccountNumber": p.account_number,
                           "Attributes": dict(p.attributes)} for p in found]}

    def update_profile(self, **params: Any) -> dict[str, Any]:
        self._check("UpdateProfile", params)
        profile = self.profiles.get(params["ProfileId"])
        if profile is None:
            raise self._error("UpdateProfile", "ResourceNotFoundException", "no such profile", 404)
        for name, value in params.get("Attributes", {}).items():
            if value == "":
                profile.attributes.pop(name, None)  # UpdateProfile removes an attribute set to ""
            else:
                profile.attributes[name] = value
        return {"ProfileId": profile.profile_id}

    def put_profile_object(self, **params: Any) -> dict[str, Any]:
        self._check("PutProfileObject", params)
        if params["ObjectTypeName"] != self.object_type:
            raise self._error("PutProfileObject", "BadRequestException", "no such object type", 400)
        document = json.loads(params["Object"])
        unique_key, user = document["outbox_key"], document["user_id"]
        matches = self.with_account(user)
        if len(matches) > 1:
            raise AssertionError(f"an object was put for the ambiguous key {user!r}")
        if not matches and not self.allow_profile_creation:
            raise AssertionError(f"an object was put for {user!r}, who has no profile, with profile creation off")
        if not matches:
            profile_id = self.add_profile(user)
            self.profiles[profile_id].created_by_object = True
            matches = [self.profiles[profile_id]]
        self.objects[unique_key] = document  # the UNIQUE key: the same value replaces the object
        if unique_key not in matches[0].objects:
            matches[0].objects.append(unique_key)
        if unique_key not in self.lost_responses and self._rng.random() < self.lose_put_responses:
            self.lost_responses.add(unique_key)
            raise self._error("PutProfileObject", "InternalServerException", "response lost (injected)", 500)
        return {"ProfileObjectUniqueKey": f"unique-{len(self.objects)}"}
