"""The Amazon Connect keys of the stack config (`connect*`), parsed once into frozen, typed objects.

`components.config.parse_stack_config` calls `read_connect_config` with its reader, so these keys are worded
like every other key (key, value — never a secret's —, what was expected, the fix) and reported together with
the rest. `connectCampaigns` is an array of objects: the engine hands it over as JSON text, which is bounded in
length before it is parsed and in items before any item is looked at.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, TypeVar

import boto3

from components.config_checks import InvalidValue, member, optional
from functions.rules.profile_objects import DEFAULT_OBJECT_TYPE, OBJECT_FIELDS, UnknownUsers
from functions.rules.sinks import DEFAULT_PROFILE_KEY

__all__ = ["ACCOUNT_KEY", "DEFAULT_OBJECT_TYPE", "OBJECT_FIELDS", "CampaignTrigger", "ConnectConfig", "PeriodUnit",
           "UnknownUsers", "read_connect_config"]

PROJECT = "engagement-loop"
ACCOUNT_KEY = DEFAULT_PROFILE_KEY
"""`connectProfileKey` default: the standard profile key whose value is the profile's AccountNumber (the
dispatcher's sinks read the same default)."""
MAX_CAMPAIGNS = 20
"""At most this many `connectCampaigns` items (each is one event trigger and one integration)."""
MAX_CAMPAIGNS_CHARS = 64_000
"""The longest `connectCampaigns` JSON text read: 20 items of a 2,048-character ARN fit three times over."""
DEFAULT_PER = "1 days"

_CUSTOM_KEY = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OBJECT_TYPE = re.compile(r"^[a-zA-Z_][a-zA-Z_0-9-]{0,63}$")
_CAMPAIGN_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):connect-campaigns:(?P<region>[a-z]{2}(-[a-z]+)+-\d):(?P<account>\d{12}):"
    r"campaign/(?P<id>[A-Za-z0-9-]{1,256})$")
MAX_CAMPAIGN_ARN_CHARS = 255
"""The campaign ARN is the integration's Uri, which PutIntegration takes up to 255 characters
(https://docs.aws.amazon.com/connect/latest/APIReference/API_connect-customer-profiles_PutIntegration.html)."""
# Period units and lengths both AWS descriptions accept: the CloudFormation Period page gives HOURS-MONTHS and 1-24,
# the API model (botocore, cfn-lint's schema) MINUTES-MONTHS and 1-60; a value only one accepts may fail a deploy.
_PER = re.compile(r"^(?P<value>[1-9]\d?) (?P<unit>hour|day|week|month)s?$")
MAX_PERIOD_VALUE = 24
_FIELDS = ("actionName", "campaignArn", "maxPerProfile", "per")
_SHOWN_NAMES = 10
"""At most this many of the sheet's action names are listed when an actionName is none of them."""

_T = TypeVar("_T")


class PeriodUnit(str, enum.Enum):
    """The unit of an event trigger's frequency-cap period (EventTriggerLimits.Periods[].Unit)."""

    MINUTES = "MINUTES"
    HOURS = "HOURS"
    DAYS = "DAYS"
    WEEKS = "WEEKS"
    MONTHS = "MONTHS"


class ConfigReader(Protocol):
    """What `read_connect_config` needs of `components.config._Reader`."""

    problems: list[str]

    def read(self, key: str, convert: Callable[[Any], _T], *, max_chars: int | None = None) -> _T | None: ...

    def fail(self, key: str, value: Any, message: str, *, withheld: str | None = None) -> None: ...

    def given(self, key: str) -> bool: ...

    def raw(self, key: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class CampaignTrigger:
    """One `connectCampaigns` item: the outbound campaign a rule's qualification starts, with its cap."""

    action_name: str
    """The ActionName (given or derived) of a rule of the sheet; its qualifications start the campaign."""
    campaign_arn: str
    """`arn:<partition>:connect-campaigns:<stack region>:<account>:campaign/<id>`."""
    max_per_profile: int = 1
    """At most this many campaign starts per profile in the period (1–1000). Default 1."""
    period_unit: PeriodUnit = PeriodUnit.DAYS
    """The period's unit. Default days."""
    period_value: int = 1
    """The period's length in `period_unit` (1–24). Default 1."""


@dataclass(frozen=True, slots=True)
class ConnectConfig:
    """The Amazon Connect Customer Profiles domain the rule actions go to, and what the stack creates in it."""

    domain_name: str
    """`connectDomainName`: an existing Customer Profiles domain."""
    profile_key: str = ACCOUNT_KEY
    """`connectProfileKey`: the search key users are looked up by, and the object type's PROFILE key. Default
    `_account` (the profile's AccountNumber)."""
    object_type_name: str = DEFAULT_OBJECT_TYPE
    """`connectObjectTypeName`: the object type the stack creates. Default EngagementLoopQualification."""
    unknown_users: UnknownUsers = UnknownUsers.SKIP
    """`connectUnknownUsers`: skip a user the domain does not know, or create their profile. Default skip."""
    campaigns: tuple[CampaignTrigger, ...] = ()
    """`connectCampaigns`: the outbound campaigns qualifications start. Default none."""

    @property
    def profile_target(self) -> str:
        """Where the object's `user_id` lands on the profile: AccountNumber for `_account`, else the custom
        attribute named by the key."""
        if self.profile_key == ACCOUNT_KEY:
            return "_profile.AccountNumber"
        return f"_profile.Attributes.{self.profile_key}"


def read_connect_config(reader: ConfigReader, *, region: str | None, action_names: Iterable[str],
                        domain_pattern: re.Pattern[str]) -> ConnectConfig | None:
    """The `connect*` keys as a `ConnectConfig`, or None without `connectDomainName`. `action_names` are the
    ActionNames of the parsed sheet (given or derived); `region` is aws:region (None when it is bad)."""
    domain = reader.read("connectDomainName", optional(
        domain_pattern, "an Amazon Connect Customer Profiles domain name (letters, digits, - and _, at most 64) or "
        "empty", max_chars=64))
    dependent = ("connectProfileKey", "connectObjectTypeName", "connectUnknownUsers", "connectCampaigns")
    if not domain:
        # Empty (not a bad name, which is reported already): the keys that configure the domain mean nothing.
        if not str(reader.raw("connectDomainName") or "").strip():
            for key in dependent:
                if reader.given(key):
                    reader.problems.append(
                        f"{PROJECT}:{key} is set but {PROJECT}:connectDomainName is empty: set connectDomainName to "
                        f"your Customer Profiles domain, or remove {key} (it configures what the stack creates in "
                        "that domain)")
        return None
    if region and region not in connect_regions():
        reader.fail("connectDomainName", domain,
                    f"Amazon Connect Customer Profiles has no endpoint in {region} (aws:region); it is in "
                    f"{', '.join(connect_regions())} (botocore's endpoint data; upgrade boto3 if AWS has added "
                    "your region since). Deploy the stack to one of those regions, or leave connectDomainName empty")
        return None
    profile_key = reader.read("connectProfileKey", _profile_key)
    object_type = reader.read("connectObjectTypeName", _object_type)
    unknown = reader.read("connectUnknownUsers", member(UnknownUsers))
    entries = reader.read("connectCampaigns", _list, max_chars=MAX_CAMPAIGNS_CHARS)
    campaigns = _campaigns(reader, entries, region, tuple(dict.fromkeys(action_names))) if entries else ()
    if None in (profile_key, object_type, unknown, campaigns):
        return None
    return ConnectConfig(domain_name=domain, profile_key=profile_key, object_type_name=object_type,
                         unknown_users=unknown, campaigns=campaigns)


@functools.cache
def connect_regions() -> tuple[str, ...]:
    """The regions of the aws partition with a Customer Profiles endpoint, from botocore's bundled endpoint data
    (offline): a domain, its objects and event triggers cannot exist elsewhere
    (https://docs.aws.amazon.com/general/latest/gr/amazon-connect-customer-profiles.html)."""
    return tuple(boto3.session.Session().get_available_regions("customer-profiles"))


def _profile_key(value: str) -> str:
    if value == ACCOUNT_KEY:
        return value
    if len(value) > 64 or not _CUSTOM_KEY.match(value) or value.startswith("_"):
        raise InvalidValue("expected `_account` (the profile's AccountNumber) or the name of a custom search key: "
                           "1-64 letters, digits, - or _, not starting with _ (the standard keys' prefix)")
    return value


def _object_type(value: str) -> str:
    if len(value) > 64 or not _OBJECT_TYPE.match(value):
        raise InvalidValue("expected an object type name: a letter or _ then at most 63 letters, digits, _ or -, "
                           f"e.g. {DEFAULT_OBJECT_TYPE}")
    return value


def _list(value: list[Any]) -> list[Any]:
    if len(value) > MAX_CAMPAIGNS:
        raise InvalidValue(f"{len(value)} items, more than the {MAX_CAMPAIGNS} a stack may have; keep at most "
                           f"{MAX_CAMPAIGNS} campaigns")
    return value


def _campaigns(reader: ConfigReader, entries: list[Any], region: str | None,
               action_names: tuple[str, ...]) -> tuple[CampaignTrigger, ...] | None:
    key, raw = "connectCampaigns", reader.raw("connectCampaigns")
    found: list[CampaignTrigger] = []
    ok = True
    first_item_of: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        def fail(message: str, withheld: str | None = None, *, where: str = f"item {number}") -> None:
            nonlocal ok
            ok = False
            reader.fail(key, raw, f"{where}: {message}", withheld=f"{where}: {withheld or message}")

        if not isinstance(entry, dict):
            fail("expected an object {actionName, campaignArn, maxPerProfile?, per?}")
            continue
        unknown = sorted(str(name)[:64] for name in entry if name not in _FIELDS)
        if unknown:
            fail(f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; the fields are {', '.join(_FIELDS)}",
                 f"{len(unknown)} unknown field(s); the fields are {', '.join(_FIELDS)}")
        action, arn = entry.get("actionName"), entry.get("campaignArn")
        item_ok = True
        if not isinstance(action, str) or action not in action_names:
            item_ok = False
            shown = ", ".join(action_names[:_SHOWN_NAMES]) + (
                f" and {len(action_names) - _SHOWN_NAMES} more" if len(action_names) > _SHOWN_NAMES else "")
            given = repr(action[:80]) if isinstance(action, str) else "missing"
            fail(f"field actionName {given} is the ActionName of no rule of the sheet; the sheet's action "
                 f"names are: {shown or '(none)'}",
                 f"field actionName is the ActionName of no rule of the sheet; the sheet has {len(action_names)}")
        match = _CAMPAIGN_ARN.match(arn) if isinstance(arn, str) and len(arn) <= MAX_CAMPAIGN_ARN_CHARS else None
        example = f"arn:aws:connect-campaigns:{region or '<region>'}:123456789012:campaign/<campaign id>"
        shown_arn = repr(arn[:300]) if isinstance(arn, str) else "missing"
        if not match:
            item_ok = False
            fail(f"field campaignArn {shown_arn}: expected an outbound campaign ARN like {example} (at most "
                 f"{MAX_CAMPAIGN_ARN_CHARS} characters)",
                 f"field campaignArn: expected an outbound campaign ARN like {example} (at most "
                 f"{MAX_CAMPAIGN_ARN_CHARS} characters)")
        elif region and match["region"] != region:
            item_ok = False
            fail(f"field campaignArn {shown_arn} is in {match['region']} but the stack deploys to {region} (aws:region); the "
                 "campaign must be in the stack's region, as the Customer Profiles domain is",
                 f"field campaignArn is in another region than the stack's ({region}, aws:region)")
        elif arn in first_item_of:
            item_ok = False
            fail(f"field campaignArn {shown_arn} is item {first_item_of[arn]}'s campaign too; a campaign's "
                 "integration holds exactly one event trigger, so give each campaign once",
                 f"field campaignArn is item {first_item_of[arn]}'s campaign too; a campaign's integration holds "
                 "exactly one event trigger, so give each campaign once")
        else:
            first_item_of[arn] = number
        maximum = entry.get("maxPerProfile", 1)
        if isinstance(maximum, bool) or not isinstance(maximum, int) or not 1 <= maximum <= 1000:
            item_ok = False
            fail(f"field maxPerProfile {str(maximum)[:40]!r}: expected a whole number 1–1000 (default 1)",
                 "field maxPerProfile: expected a whole number 1–1000 (default 1)")
        per = entry.get("per", DEFAULT_PER)
        per_match = _PER.match(per.strip()) if isinstance(per, str) and len(per) <= 40 else None
        if not per_match or not 1 <= int(per_match["value"]) <= MAX_PERIOD_VALUE:
            item_ok = False
            expected = f"expected \"<1-{MAX_PERIOD_VALUE}> <hours|days|weeks|months>\", e.g. '2 weeks' ({DEFAULT_PER!r} by default)"
            fail(f"field per {str(per)[:40]!r}: {expected}", f"field per: {expected}")
        if item_ok and not unknown:
            found.append(CampaignTrigger(action_name=action, campaign_arn=arn, max_per_profile=maximum,
                                         period_unit=PeriodUnit(per_match["unit"].upper() + "S"),
                                         period_value=int(per_match["value"])))
    return tuple(found) if ok else None
