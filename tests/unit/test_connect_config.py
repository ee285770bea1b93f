"""The `connect*` stack config keys: defaults, every rule with good and bad values, each problem naming the key
(and for connectCampaigns the item and field), the value — never a secret's — and the fix."""

from __future__ import annotations

import json
import re

import pytest

from components.config import ConfigError, parse_stack_config
from components.connect_config import (
    ACCOUNT_KEY,
    DEFAULT_OBJECT_TYPE,
    MAX_CAMPAIGNS,
    CampaignTrigger,
    ConnectConfig,
    PeriodUnit,
    UnknownUsers,
)
from tests.unit.test_config import valid

DOMAIN = "engagement-profiles"
ARN = "arn:aws:connect-campaigns:eu-west-2:123456789012:campaign/0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
ACTION = "session_start"  # rules/sample.csv's active-week rule, ActionName derived
EVENT_ACTION = "trk__journey.send_welcome"  # welcome-second-send, an event rule's derived name
SECRET = "s3cr3t-campaign-do-not-print"


def campaign(**fields):
    return {"actionName": ACTION, "campaignArn": ARN, **fields}


def in_connect_region(raw):
    """`raw` moved from the base config's eu-west-1 (no Customer Profiles there) to eu-west-2."""
    return {key: value.replace("eu-west-1", "eu-west-2") if isinstance(value, str) else value
            for key, value in raw.items()}


def parse(**overrides):
    return parse_stack_config(in_connect_region(valid(connectDomainName=DOMAIN, **overrides)), region="eu-west-2")


def problems(raw, **options):
    with pytest.raises(ConfigError) as error:
        parse_stack_config(in_connect_region(raw), region="eu-west-2", **options)
    return error.value.problems


def campaigns(*items) -> str:
    return json.dumps(list(items))  # as the engine hands an array over: JSON text


def test_without_a_domain_there_is_no_connect_config():
    rules = parse_stack_config(valid(), region="eu-west-1").rules
    assert rules.connect is None and rules.connect_domain_name is None
    rules = parse_stack_config(valid(connectDomainName=""), region="eu-west-1").rules
    assert rules.connect is None


def test_a_domain_in_a_region_without_customer_profiles_is_refused_naming_the_regions_that_have_it():
    # eu-west-1 has no Customer Profiles endpoint (botocore's endpoint data; cfn-lint's eu-west-1 registry has no
    # AWS::CustomerProfiles types either): SearchProfiles and the object type could never work there.
    with pytest.raises(ConfigError) as error:
        parse_stack_config(valid(connectDomainName=DOMAIN, connectCampaigns=campaigns(campaign())), region="eu-west-1")
    [problem] = error.value.problems
    assert problem.startswith(f"engagement-loop:connectDomainName = '{DOMAIN}': ")
    assert "no endpoint in eu-west-1 (aws:region)" in problem and "eu-west-2, us-east-1" in problem
    assert "leave connectDomainName empty" in problem


def test_the_defaults_with_a_domain():
    rules = parse().rules
    assert rules.connect == ConnectConfig(domain_name=DOMAIN)
    assert rules.connect_domain_name == DOMAIN  # kept for the existing callers
    connect = rules.connect
    assert (connect.profile_key, connect.object_type_name) == (ACCOUNT_KEY, DEFAULT_OBJECT_TYPE) == (
        "_account", "EngagementLoopQualification")
    assert connect.unknown_users is UnknownUsers.SKIP and connect.campaigns == ()
    assert connect.profile_target == "_profile.AccountNumber"


def test_every_key_parses_and_a_campaign_gets_its_defaults():
    connect = parse(connectProfileKey="crm_id", connectObjectTypeName="_Qualified-2", connectUnknownUsers="create",
                    connectCampaigns=campaigns(campaign(), campaign(actionName=EVENT_ACTION, campaignArn=ARN + "0",
                                                                    maxPerProfile=3, per="2 week"))).rules.connect
    assert connect.profile_key == "crm_id" and connect.profile_target == "_profile.Attributes.crm_id"
    assert connect.object_type_name == "_Qualified-2" and connect.unknown_users is UnknownUsers.CREATE
    assert connect.campaigns == (
        CampaignTrigger(ACTION, ARN, 1, PeriodUnit.DAYS, 1),
        CampaignTrigger(EVENT_ACTION, ARN + "0", 3, PeriodUnit.WEEKS, 2))


@pytest.mark.parametrize(("per", "unit", "value"), [
    ("1 days", PeriodUnit.DAYS, 1), ("1 day", PeriodUnit.DAYS, 1), ("24 hours", PeriodUnit.HOURS, 24),
    ("12 hours", PeriodUnit.HOURS, 12), ("1 month", PeriodUnit.MONTHS, 1), ("4 weeks", PeriodUnit.WEEKS, 4)])
def test_each_period_unit_singular_or_plural(per, unit, value):
    [trigger] = parse(connectCampaigns=campaigns(campaign(per=per))).rules.connect.campaigns
    assert (trigger.period_unit, trigger.period_value) == (unit, value)


def test_a_native_list_from_a_stack_file_is_read_too():
    [trigger] = parse(connectCampaigns=[campaign(maxPerProfile=1000)]).rules.connect.campaigns
    assert trigger.max_per_profile == 1000


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("connectProfileKey", "_email", "not starting with _"),
    ("connectProfileKey", "crm id", "1-64 letters, digits, - or _"),
    ("connectProfileKey", "k" * 65, "1-64 letters"),
    ("connectObjectTypeName", "1Qualified", "a letter or _ then at most 63"),
    ("connectObjectTypeName", "Q" * 65, "a letter or _ then at most 63"),
    ("connectObjectTypeName", "Qualified.v2", "a letter or _ then at most 63"),
    ("connectUnknownUsers", "CREATE", "expected one of skip, create"),
    ("connectUnknownUsers", "error", "expected one of skip, create"),
    ("connectDomainName", "my domain", "an Amazon Connect Customer Profiles domain name"),
    ("connectCampaigns", '{"actionName": "x"}', "expected a list"),
    ("connectCampaigns", "[{", "expected a list, but the JSON text does not parse"),
])
def test_each_bad_value_names_key_value_and_fix(key, value, expected):
    [problem] = problems(valid(**{"connectDomainName": DOMAIN, key: value}))
    assert problem.startswith(f"engagement-loop:{key} = {value!r}: "), problem
    assert expected in problem


@pytest.mark.parametrize(("item", "where", "expected"), [
    (campaign(actionName="nope"), "item 1: field actionName 'nope'",
     "is the ActionName of no rule of the sheet; the sheet's action names are: campaign_opened_notification_summer_sale, "
     "trk__journey.send_welcome, trk_date_purchase, session_start"),
    ({"campaignArn": ARN}, "item 1: field actionName missing", "is the ActionName of no rule"),
    (campaign(campaignArn="arn:aws:connect:eu-west-2:123456789012:instance/x"),
     "item 1: field campaignArn 'arn:aws:connect:eu-west-2:123456789012:instance/x'",
     "expected an outbound campaign ARN like arn:aws:connect-campaigns:eu-west-2:123456789012:campaign/"),
    (campaign(campaignArn=ARN.replace("eu-west-2", "us-east-1")), "item 1: field campaignArn",
     "is in us-east-1 but the stack deploys to eu-west-2 (aws:region)"),
    (campaign(campaignArn=ARN.replace("123456789012", "1234")), "item 1: field campaignArn", "expected an outbound"),
    (campaign(maxPerProfile=0), "item 1: field maxPerProfile '0'", "expected a whole number 1–1000"),
    (campaign(maxPerProfile=1001), "item 1: field maxPerProfile '1001'", "expected a whole number 1–1000"),
    (campaign(maxPerProfile="2"), "item 1: field maxPerProfile '2'", "expected a whole number 1–1000"),
    (campaign(maxPerProfile=True), "item 1: field maxPerProfile 'True'", "expected a whole number"),
    (campaign(per="25 days"), "item 1: field per '25 days'", "expected \"<1-24> <hours|days|weeks|months>\""),
    # Minutes and lengths over 24: the API model takes them, CloudFormation's Period page does not.
    (campaign(per="30 minutes"), "item 1: field per '30 minutes'", "expected \"<1-24> <hours|days|weeks|months>\""),
    (campaign(campaignArn=ARN + "0" * (256 - len(ARN))), "item 1: field campaignArn", "at most 255 characters"),
    (campaign(per="0 days"), "item 1: field per '0 days'", "('1 days' by default)"),
    (campaign(per="1 fortnight"), "item 1: field per '1 fortnight'", "expected \"<1-24>"),
    (campaign(per=1), "item 1: field per '1'", "expected \"<1-24>"),
    (campaign(cap=3), "item 1: unknown field(s) 'cap'", "the fields are actionName, campaignArn, maxPerProfile, per"),
    ("session_start", "item 1: expected an object", "{actionName, campaignArn, maxPerProfile?, per?}"),
])
def test_each_bad_campaign_item_names_the_key_the_item_the_field_and_the_fix(item, where, expected):
    [problem] = problems(valid(connectDomainName=DOMAIN, connectCampaigns=campaigns(item)))
    assert problem.startswith("engagement-loop:connectCampaigns = "), problem
    assert f": {where}" in problem and expected in problem, problem


def test_every_bad_item_is_reported_at_once_with_its_index():
    found = problems(valid(connectDomainName=DOMAIN, connectCampaigns=campaigns(
        campaign(), campaign(actionName="x", campaignArn=ARN + "1"), campaign(campaignArn=ARN + "2", per="soon"))))
    assert [re.findall(r": (item \d+): field", p) for p in found] == [["item 2"], ["item 3"]]


def test_a_campaign_is_given_once():
    [problem] = problems(valid(connectDomainName=DOMAIN, connectCampaigns=campaigns(
        campaign(), campaign(actionName=EVENT_ACTION))))
    assert f"item 2: field campaignArn {ARN!r} is item 1's campaign too" in problem and "give each campaign once" in problem


def test_an_action_of_a_given_action_name_is_matched():
    # A sheet's own ActionName column counts as the rule's action name (not only the derived one).
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sheet = (root / "rules" / "sample.csv").read_text().splitlines()
    assert "ActionName" not in sheet[0]
    names = [r.action_name for r in parse().rules.rules.rules]
    assert ACTION in names and EVENT_ACTION in names


def test_more_than_twenty_campaigns_are_refused_before_any_item_is_checked():
    items = [campaign(actionName=f"nope{i}", campaignArn=f"{ARN}{i}") for i in range(MAX_CAMPAIGNS + 1)]
    [problem] = problems(valid(connectDomainName=DOMAIN, connectCampaigns=campaigns(*items)))
    assert problem.endswith(": 21 items, more than the 20 a stack may have; keep at most 20 campaigns"), problem


def test_a_huge_campaign_list_is_refused_unparsed_and_the_message_stays_short():
    huge = "[" + ",".join([json.dumps(campaign())] * 20_000) + "]"
    [problem] = problems(valid(connectDomainName=DOMAIN, connectCampaigns=huge))
    assert "characters, more than the 64,000 this setting may have" in problem and len(problem) < 400


@pytest.mark.parametrize("key, value", [
    ("connectProfileKey", "crm_id"), ("connectObjectTypeName", "Qualified"), ("connectUnknownUsers", "create"),
    ("connectCampaigns", campaigns(campaign())), ("connectCampaigns", "[]")])
def test_connect_keys_without_a_domain_are_refused(key, value):
    for domain in (None, ""):
        [problem] = problems(valid(connectDomainName=domain, **{key: value}))
        assert problem.startswith(f"engagement-loop:{key} is set but engagement-loop:connectDomainName is empty")
        assert "set connectDomainName to your Customer Profiles domain, or remove" in problem


def test_a_bad_domain_is_reported_once_not_also_for_the_keys_that_need_it():
    [problem] = problems(valid(connectDomainName="bad domain", connectUnknownUsers="create"))
    assert problem.startswith("engagement-loop:connectDomainName = 'bad domain'")


@pytest.mark.parametrize("item", [
    campaign(actionName=SECRET), campaign(campaignArn=ARN.replace("eu-west-2", "us-east-1") + SECRET),
    campaign(campaignArn=ARN.replace("eu-west-2", "us-east-1"), per=SECRET), campaign(**{SECRET: 1}),
    campaign(maxPerProfile=SECRET)])
def test_a_secret_campaign_list_is_never_shown(item):
    raw = valid(connectDomainName=DOMAIN, connectCampaigns=campaigns(item))
    found = "\n".join(problems(raw, secret_keys=["connectCampaigns"]))
    assert SECRET not in found and "the secret value of engagement-loop:connectCampaigns: item 1: " in found, found
    assert SECRET in "\n".join(problems(raw))  # not secret: shown, so the user can find it


def test_secret_scalar_connect_keys_are_never_shown():
    found = "\n".join(problems(valid(connectDomainName=DOMAIN, connectProfileKey=f"_{SECRET}"),
                               secret_keys=["connectProfileKey"]))
    assert SECRET not in found and "the secret value of engagement-loop:connectProfileKey" in found
