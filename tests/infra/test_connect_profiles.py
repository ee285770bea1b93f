"""ConnectProfileObjects under mocks, and its desired states checked by the maintained validator of
CloudFormation resource types (cfn-lint and its bundled schemas): the object type the dispatcher writes
qualifications to, an event trigger and integration per campaign, and the dispatcher's and reconciler's
environment and grants; nothing of it without a Connect domain."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cfnlint
import pytest
from cfnlint.api import lint

from components.connect_config import CampaignTrigger, ConnectConfig, PeriodUnit, UnknownUsers
from components.connect_profiles import (
    ConnectProfileObjectsArgs,
    campaign_key,
    event_trigger_name,
    event_trigger_state,
    integration_state,
    object_type_state,
)
from functions.rules.profile_objects import OBJECT_FIELDS
from tests.infra.conftest import CAMPAIGN_ARN, CONNECT_REGION, REGION

RESOURCE = "aws:cloudcontrol/resource:Resource"
COMPONENT = "engagement-loop:connect:ConnectProfileObjects"
FUNCTION = "aws:lambda/function:Function"
DOMAIN = "engagement-profiles"
DOMAIN_ARN = f"arn:aws:profile:eu-west-2:123456789012:domains/{DOMAIN}"
SCHEMAS = Path(cfnlint.__file__).parent / "data" / "schemas"
# tests.infra.conftest.CONNECT's two items, as the component names their resources: by what identifies them in
# AWS (the trigger's name; the integration's campaign ARN), not by position.
ITEMS = {1: CampaignTrigger("session_start", CAMPAIGN_ARN), 2: CampaignTrigger("trk__journey.send_welcome",
                                                                               CAMPAIGN_ARN + "-2")}
TRIGGER = {n: f"connect-trigger-{event_trigger_name('EngagementLoopQualification', item)}" for n, item in ITEMS.items()}
CAMPAIGN = {n: f"connect-campaign-{campaign_key(item)}" for n, item in ITEMS.items()}


def states(graph) -> dict[str, tuple[str, dict]]:
    """Logical name → (CloudFormation type, desired state) of every Cloud Control resource."""
    return {r.name: (r.inputs["typeName"], json.loads(r.inputs["desiredState"])) for r in graph.of_type(RESOURCE)}


def template(resources: dict[str, tuple[str, dict]]) -> str:
    logical = {re.sub(r"[^A-Za-z0-9]", "", name.title()): {"Type": kind, "Properties": state}
               for name, (kind, state) in resources.items()}
    return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": logical})


# Linted for regions that have the types, the Connect runs' eu-west-2 among them: the sample stack's eu-west-1 has no
# Customer Profiles (cfn-lint reports E3006 there, botocore lists no endpoint, and the config refuses a domain
# there), which `test_the_types_exist_where_connect_does` records.
LINT_REGIONS = ["us-east-1", "eu-west-2"]


def errors(text: str, regions: list[str] = LINT_REGIONS) -> list[str]:
    return [f"{m.rule.id} {m.message}" for m in lint(text, regions=regions) if m.rule.id.startswith("E")]


def test_the_object_type_triggers_and_integrations_are_children_of_one_component(connect_graph):
    component = connect_graph.one(COMPONENT, "connect")
    found = {r.name: r for r in connect_graph.of_type(RESOURCE)}
    assert set(found) == {"connect-object-type", TRIGGER[1], TRIGGER[2], CAMPAIGN[1],
                          CAMPAIGN[2]}
    assert all(r.parent == component.urn for r in found.values())
    kinds = {name: r.inputs["typeName"] for name, r in found.items()}
    assert kinds == {"connect-object-type": "AWS::CustomerProfiles::ObjectType",
                     TRIGGER[1]: "AWS::CustomerProfiles::EventTrigger",
                     TRIGGER[2]: "AWS::CustomerProfiles::EventTrigger",
                     CAMPAIGN[1]: "AWS::CustomerProfiles::Integration",
                     CAMPAIGN[2]: "AWS::CustomerProfiles::Integration"}
    object_type = found["connect-object-type"].urn
    for n in (1, 2):
        assert object_type in found[TRIGGER[n]].dependencies
        assert {found[TRIGGER[n]].urn, object_type} <= set(found[CAMPAIGN[n]].dependencies)
    # The dispatcher and the reconciler are created after the object type their objects are of.
    for function in ("rules-dispatcher-handler-function", "rules-reconciler-handler-function"):
        assert object_type in connect_graph.one(FUNCTION, function).dependencies, function
    assert connect_graph.outputs["connectObjectTypeName"] == "EngagementLoopQualification"


def test_the_object_type_maps_the_user_to_the_custom_key_and_lets_unknown_users_be_created(connect_graph):
    kind, state = states(connect_graph)["connect-object-type"]
    assert (state["DomainName"], state["ObjectTypeName"]) == (DOMAIN, "EngagementLoopQualification")
    assert state["AllowProfileCreation"] is True  # connectUnknownUsers: create
    fields = {f["Name"]: f["ObjectTypeField"] for f in state["Fields"]}
    assert list(fields) == list(OBJECT_FIELDS)  # exactly what the dispatcher's sink writes
    assert fields["user_id"] == {"Source": "_source.user_id", "ContentType": "STRING",
                                 "Target": "_profile.Attributes.crm_id"}
    assert all(f == {"Source": f"_source.{n}", "ContentType": "STRING"} for n, f in fields.items() if n != "user_id")
    assert state["Keys"] == [
        {"Name": "crm_id", "ObjectTypeKeyList": [{"StandardIdentifiers": ["PROFILE"], "FieldNames": ["user_id"]}]},
        {"Name": "outbox_key",
         "ObjectTypeKeyList": [{"StandardIdentifiers": ["UNIQUE"], "FieldNames": ["outbox_key"]}]}]


def test_with_the_defaults_the_user_is_the_account_number_and_unknown_users_are_skipped():
    state = object_type_state(ConnectConfig(domain_name=DOMAIN))
    assert state["AllowProfileCreation"] is False
    [user] = [f for f in state["Fields"] if f["Name"] == "user_id"]
    assert user["ObjectTypeField"]["Target"] == "_profile.AccountNumber"
    assert state["Keys"][0]["Name"] == "_account"


def test_each_campaign_has_a_trigger_on_its_action_qualifying_and_an_integration_of_that_trigger(connect_graph):
    found = states(connect_graph)
    expected = [("session_start", CAMPAIGN_ARN, {"Unit": "HOURS", "Value": 12, "MaxInvocationsPerProfile": 2}),
                ("trk__journey.send_welcome", CAMPAIGN_ARN + "-2",
                 {"Unit": "DAYS", "Value": 1, "MaxInvocationsPerProfile": 1})]
    names = set()
    for n, (action, arn, period) in enumerate(expected, start=1):
        _, trigger = found[TRIGGER[n]]
        assert trigger["ObjectTypeName"] == "EngagementLoopQualification" and trigger["DomainName"] == DOMAIN
        assert trigger["EventTriggerConditions"] == [{"EventTriggerDimensions": [{"ObjectAttributes": [
            {"FieldName": "action_name", "ComparisonOperator": "INCLUSIVE", "Values": [action]},
            {"FieldName": "change", "ComparisonOperator": "INCLUSIVE", "Values": ["qualified"]}]}],
            "LogicalOperator": "ALL"}]
        assert trigger["EventTriggerLimits"] == {"Periods": [period]}
        _, integration = found[CAMPAIGN[n]]
        assert integration == {"DomainName": DOMAIN, "Uri": arn, "EventTriggerNames": [trigger["EventTriggerName"]]}
        names.add(trigger["EventTriggerName"])
    assert len(names) == 2


def test_trigger_names_are_valid_stable_and_distinct_per_action():
    long_dotted = CampaignTrigger("trk_" + "x." * 60, CAMPAIGN_ARN)
    alike = CampaignTrigger("trk_" + "x_" * 60, CAMPAIGN_ARN)
    name = event_trigger_name("EngagementLoopQualification", long_dotted)
    assert len(name) <= 64 and name.replace("-", "").replace("_", "").isalnum()
    assert name == event_trigger_name("EngagementLoopQualification", long_dotted)
    assert name != event_trigger_name("EngagementLoopQualification", alike)
    assert name != event_trigger_name("OtherStacksType", long_dotted)


def test_a_campaign_given_twice_is_refused_by_the_component_args_too():
    trigger = CampaignTrigger("session_start", CAMPAIGN_ARN)
    with pytest.raises(ValueError, match="a campaign ARN is given twice"):
        ConnectProfileObjectsArgs(connect=ConnectConfig(domain_name=DOMAIN, campaigns=(trigger, trigger)))


def test_cfn_lint_finds_no_error_in_the_desired_states_and_catches_a_broken_one(connect_graph):
    found = states(connect_graph)
    assert errors(template(found)) == []
    broken = json.loads(json.dumps(found))
    broken[TRIGGER[1]][1]["EventTriggerConditions"][0]["EventTriggerDimensions"][0]["ObjectAttributes"][0][
        "ComparisonOperator"] = "IS"
    del broken["connect-object-type"][1]["Description"]
    broken[CAMPAIGN[1]][1]["EventTriggerNames"].append("second-trigger")
    problems = "\n".join(errors(template(broken)))
    assert "'IS' is not one of" in problems and "'Description' is a required property" in problems
    assert "expected maximum item count: 1, found: 2" in problems  # an integration holds one event trigger


def test_the_defaults_and_every_period_unit_lint_clean():
    connect = ConnectConfig(domain_name=DOMAIN, unknown_users=UnknownUsers.SKIP, campaigns=tuple(
        CampaignTrigger("a", f"{CAMPAIGN_ARN}{n}", 1000, unit, 60) for n, unit in enumerate(PeriodUnit)))
    resources = {"object-type": ("AWS::CustomerProfiles::ObjectType", object_type_state(connect))}
    for n, trigger in enumerate(connect.campaigns):
        resources[f"trigger-{n}"] = ("AWS::CustomerProfiles::EventTrigger", event_trigger_state(connect, trigger))
        resources[f"campaign-{n}"] = ("AWS::CustomerProfiles::Integration", integration_state(connect, trigger))
    assert errors(template(resources)) == []


def test_cloud_control_can_manage_each_type_the_component_uses():
    # Cloud Control needs a type's create, read, update and delete handlers (a type without them cannot be
    # managed through it); cfn-lint bundles the registry schemas per region.
    providers = json.loads((SCHEMAS / "providers" / "us-east-1.json").read_text())
    for kind in ("AWS::CustomerProfiles::ObjectType", "AWS::CustomerProfiles::EventTrigger",
                 "AWS::CustomerProfiles::Integration"):
        schema = json.loads((SCHEMAS / "resources" / f"{providers[kind]}.json").read_text())
        assert {"create", "read", "update", "delete"} <= set(schema["handlers"]), kind


def test_dispatcher_and_reconciler_get_the_object_type_and_may_put_objects_of_it_only(connect_graph):
    object_type_arn = f"{DOMAIN_ARN}/object-types/EngagementLoopQualification"
    for function, policy in (("rules-dispatcher-handler-function", "rules-dispatcher-handler-policy"),
                             ("rules-reconciler-handler-function", "rules-reconciler-handler-policy")):
        env = connect_graph.one(FUNCTION, function).inputs["environment"]["variables"]
        assert (env["CONNECT_DOMAIN_NAME"], env["CONNECT_PROFILE_KEY"], env["CONNECT_OBJECT_TYPE"],
                env["CONNECT_UNKNOWN_USERS"]) == (DOMAIN, "crm_id", "EngagementLoopQualification", "create")
        document = connect_graph.one("aws:iam/rolePolicy:RolePolicy", policy).input_json("policy")
        granted: dict[str, list[str]] = {}
        for statement in document["Statement"]:
            for action in statement["Action"]:
                granted.setdefault(action, []).extend(statement["Resource"])
        assert sorted(granted["profile:PutProfileObject"]) == sorted([DOMAIN_ARN, object_type_arn])
        assert granted["profile:SearchProfiles"] == [DOMAIN_ARN] and granted["profile:UpdateProfile"] == [DOMAIN_ARN]
        assert {a for a in granted if a.startswith("profile:")} == {
            "profile:PutProfileObject", "profile:SearchProfiles", "profile:UpdateProfile"}


def test_nothing_connect_without_a_domain(dev_graph):
    assert dev_graph.of_type(RESOURCE) == [] and dev_graph.of_type(COMPONENT) == []
    assert "connectObjectTypeName" not in dev_graph.outputs
    for function in ("rules-dispatcher-handler-function", "rules-reconciler-handler-function"):
        env = dev_graph.one(FUNCTION, function).inputs["environment"]["variables"]
        assert all(env[k] == "" for k in ("CONNECT_DOMAIN_NAME", "CONNECT_PROFILE_KEY", "CONNECT_OBJECT_TYPE",
                                          "CONNECT_UNKNOWN_USERS"))
    for resource, document in dev_graph.policy_documents():
        assert "profile:" not in json.dumps(document), resource.name


def test_the_types_exist_where_connect_does():
    providers = {path.stem: json.loads(path.read_text()) for path in (SCHEMAS / "providers").glob("*.json")}
    kinds = ("AWS::CustomerProfiles::ObjectType", "AWS::CustomerProfiles::EventTrigger",
             "AWS::CustomerProfiles::Integration")
    for region in ("us-east-1", "us-west-2", "eu-west-2", "eu-central-1", "ap-southeast-2"):
        assert all(kind in providers[region] for kind in kinds), region
    assert not any(kind in providers["eu-west-1"] for kind in kinds)


def test_offline_arns_of_the_cloud_control_resources_are_in_customer_profiles_format(connect_graph):
    found = {r.name: connect_graph.arn_of(r) for r in connect_graph.of_type(RESOURCE)}
    _, trigger = states(connect_graph)[TRIGGER[1]]
    domain_arn = DOMAIN_ARN.replace(CONNECT_REGION, REGION)  # the mocks give every resource the mocks' region
    assert found["connect-object-type"] == f"{domain_arn}/object-types/EngagementLoopQualification"
    assert found[TRIGGER[1]] == f"{domain_arn}/event-triggers/{trigger['EventTriggerName']}"
    assert found[CAMPAIGN[1]] == f"{domain_arn}/integrations/{CAMPAIGN_ARN}"


def test_removing_or_reordering_an_item_keeps_the_other_items_resources():
    # Position-named resources would make item B's trigger and integration replace item A's (create before
    # delete, with B's identity still held by the old B resource), then delete B's: a campaign that never starts.
    a, b = ITEMS[1], ITEMS[2]
    def names(*items):
        config = ConnectConfig(domain_name=DOMAIN, campaigns=items)
        return {(event_trigger_name(config.object_type_name, item), campaign_key(item)): item for item in items}
    assert names(a, b).keys() - names(a).keys() == names(b).keys() == names(b, a).keys() - names(a).keys()
    # The same campaign started by another action keeps its integration (updated in place to the new trigger).
    moved = CampaignTrigger("purchase", b.campaign_arn)
    assert campaign_key(moved) == campaign_key(b) and event_trigger_name("T", moved) != event_trigger_name("T", b)

