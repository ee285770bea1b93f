"""ConnectProfileObjects: the Customer Profiles object type the dispatcher writes qualifications to, and per
configured campaign an event trigger on it and the campaign's integration.

```
object type (AllowProfileCreation = connectUnknownUsers is create; user_id → the PROFILE key, outbox_key → UNIQUE)
  └─ event trigger per campaign (action_name = the rule's ActionName AND change = qualified, per-profile cap)
       └─ integration: Uri = the outbound campaign's ARN, EventTriggerNames = [the trigger]
```

pulumi-aws has no resources for these three types (only `customerprofiles.Domain` and `Profile`), so each is an
`aws.cloudcontrol.Resource` whose desired state is the CloudFormation resource type's properties; the desired
states are built by the pure functions below (tests lint them with cfn-lint against the types' schemas).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.connect_config import OBJECT_FIELDS, CampaignTrigger, ConnectConfig, UnknownUsers

OBJECT_TYPE = "AWS::CustomerProfiles::ObjectType"
EVENT_TRIGGER = "AWS::CustomerProfiles::EventTrigger"
INTEGRATION = "AWS::CustomerProfiles::Integration"
USER_FIELD = "user_id"
UNIQUE_FIELD = "outbox_key"
QUALIFIED = "qualified"
"""The object's `change` for a qualification: the only change that starts a campaign (an exit never does)."""
_TRIGGER_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def object_type_state(config: ConnectConfig) -> dict[str, Any]:
    """The AWS::CustomerProfiles::ObjectType properties: one STRING field per object field, `user_id` also
    mapped onto the profile (AccountNumber or the custom key's attribute), keyed PROFILE by the search key and
    UNIQUE by the outbox key (a redelivered entry replaces its object)."""
    fields = []
    for name in OBJECT_FIELDS:
        field: dict[str, Any] = {"Source": f"_source.{name}", "ContentType": "STRING"}
        if name == USER_FIELD:
            field["Target"] = config.profile_target
        fields.append({"Name": name, "ObjectTypeField": field})
    return {
        "DomainName": config.domain_name,
        "ObjectTypeName": config.object_type_name,
        "Description": "engagement-loop: one object per rule qualification or exit (rules sheet actions)",
        "AllowProfileCreation": config.unknown_users is UnknownUsers.CREATE,
        "Fields": fields,
        "Keys": [
            {"Name": config.profile_key,
             "ObjectTypeKeyList": [{"StandardIdentifiers": ["PROFILE"], "FieldNames": [USER_FIELD]}]},
            {"Name": UNIQUE_FIELD,
             "ObjectTypeKeyList": [{"StandardIdentifiers": ["UNIQUE"], "FieldNames": [UNIQUE_FIELD]}]},
        ],
    }


def event_trigger_name(object_type_name: str, trigger: CampaignTrigger) -> str:
    """A trigger name (`^[a-zA-Z0-9_-]{1,64}$`, unique in the domain) stable for a campaign item, distinct per
    action, campaign and object type: the action's name cut and sanitised to read, and a hash of all three that
    keeps apart two actions that read alike (and another stack's object type in the same domain)."""
    readable = _TRIGGER_NAME_CHARS.sub("_", trigger.action_name)[:48]
    identity = json.dumps([object_type_name, trigger.action_name, trigger.campaign_arn])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    return f"el-{readable}-{digest}"


def campaign_key(trigger: CampaignTrigger) -> str:
    """A short stable key of the campaign (the integration's identity is the domain and the Uri, the campaign
    ARN): the same campaign keeps its integration when its item moves or names another action."""
    return hashlib.sha256(trigger.campaign_arn.encode()).hexdigest()[:10]


def event_trigger_state(config: ConnectConfig, trigger: CampaignTrigger) -> dict[str, Any]:
    """The AWS::CustomerProfiles::EventTrigger properties: fires on an object of the stack's type whose
    `action_name` is the rule's and whose `change` is qualified, at most `max_per_profile` times per profile in
    the period."""
    return {
        "DomainName": config.domain_name,
        "EventTriggerName": event_trigger_name(config.object_type_name, trigger),
        "ObjectTypeName": config.object_type_name,
        "Description": f"engagement-loop: a qualification of {trigger.action_name} starts its campaign"[:1000],
        "EventTriggerConditions": [{
            "EventTriggerDimensions": [{"ObjectAttributes": [
                {"FieldName": "action_name", "ComparisonOperator": "INCLUSIVE", "Values": [trigger.action_name]},
                {"FieldName": "change", "ComparisonOperator": "INCLUSIVE", "Values": [QUALIFIED]},
            ]}],
            "LogicalOperator": "ALL",
        }],
        "EventTriggerLimits": {"Periods": [{"Unit": trigger.period_unit.value, "Value": trigger.period_value,
                                            "MaxInvocationsPerProfile": trigger.max_per_profile}]},
    }


def integration_state(config: ConnectConfig, trigger: CampaignTrigger) -> dict[str, Any]:
    """The AWS::CustomerProfiles::Integration properties: the campaign (its ARN is the integration's Uri) and its
    one event trigger (EventTriggerNames holds exactly one)."""
    return {
        "DomainName": config.domain_name,
        "Uri": trigger.campaign_arn,
        "EventTriggerNames": [event_trigger_name(config.object_type_name, trigger)],
    }


@dataclass(frozen=True, kw_only=True)
class ConnectProfileObjectsArgs:
    """The domain's object type and campaign triggers, from the parsed `connect*` keys."""

    connect: ConnectConfig
    """The parsed `connect*` stack config (domain, key, object type, unknown users, campaigns). Required."""
    region: str | None = None
    """The region the resources are managed in. Default: the provider's (the stack's aws:region)."""

    def __post_init__(self) -> None:
        if not isinstance(self.connect, ConnectConfig):
            raise TypeError(f"ConnectProfileObjectsArgs.connect: expected a ConnectConfig, got "
                            f"{type(self.connect).__name__}")
        arns = [trigger.campaign_arn for trigger in self.connect.campaigns]
        if len(set(arns)) != len(arns):
            raise ValueError(f"ConnectProfileObjectsArgs.connect.campaigns: a campaign ARN is given twice in {arns}; "
                             "an integration holds one event trigger, so give each campaign once")


class ConnectProfileObjects(pulumi.ComponentResource):
    """The Customer Profiles object type for rule actions, with an event trigger and integration per campaign."""

    def __init__(self, name: str, args: ConnectProfileObjectsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("engagement-loop:connect:ConnectProfileObjects", name, None, opts)
        connect = args.connect
        self.object_type = aws.cloudcontrol.Resource(
            f"{name}-object-type", type_name=OBJECT_TYPE, desired_state=json.dumps(object_type_state(connect)),
            region=args.region, opts=pulumi.ResourceOptions(parent=self))
        self.triggers: list[aws.cloudcontrol.Resource] = []
        self.integrations: list[aws.cloudcontrol.Resource] = []
        for trigger in connect.campaigns:
            # Named by what identifies them in AWS (the trigger's name, the integration's Uri), never by list
            # position: removing or reordering an item must not turn one item's resource into another's, which
            # Pulumi would replace create-before-delete while the other still holds that identity.
            # The trigger names the object type, and the integration the trigger: each is created after what it
            # names (Customer Profiles refuses a reference to one that does not exist yet).
            event_trigger = aws.cloudcontrol.Resource(
                f"{name}-trigger-{event_trigger_name(connect.object_type_name, trigger)}", type_name=EVENT_TRIGGER,
                desired_state=json.dumps(event_trigger_state(connect, trigger)), region=args.region,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.object_type]))
            self.triggers.append(event_trigger)
            self.integrations.append(aws.cloudcontrol.Resource(
                f"{name}-campaign-{campaign_key(trigger)}", type_name=INTEGRATION,
                desired_state=json.dumps(integration_state(connect, trigger)), region=args.region,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[event_trigger, self.object_type])))
        # The name as an output of the object type: whatever takes it (the dispatcher's environment) is created
        # after the type exists, as objects of a type not yet created are refused.
        self.object_type_name: pulumi.Output[str] = self.object_type.id.apply(lambda _: connect.object_type_name)
        self.register_outputs({"object_type": self.object_type.id,
                               "event_triggers": [t.id for t in self.triggers]})
