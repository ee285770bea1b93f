"""The ARNs an offline run of the program hands out: each resource type's ARN in the format AWS forms it (Service
Authorization Reference, "Resource types defined by …"), so ARNs the program builds from its resources' ARNs (IAM
statements above all) look like real ones. Used by `cli stack check` and by the infra tests' mocks."""

from __future__ import annotations

import json
from typing import Any

ARN_FORMATS = {
    "aws:s3/bucket:Bucket": "arn:aws:s3:::{name}",
    "aws:cloudwatch/logGroup:LogGroup": "arn:aws:logs:{region}:{account}:log-group:{name}",
    "aws:dynamodb/table:Table": "arn:aws:dynamodb:{region}:{account}:table/{name}",
    "aws:sqs/queue:Queue": "arn:aws:sqs:{region}:{account}:{name}",
    "aws:sns/topic:Topic": "arn:aws:sns:{region}:{account}:{name}",
    "aws:kinesis/stream:Stream": "arn:aws:kinesis:{region}:{account}:stream/{name}",
    "aws:kinesis/firehoseDeliveryStream:FirehoseDeliveryStream":
        "arn:aws:firehose:{region}:{account}:deliverystream/{name}",
    "aws:kms/key:Key": "arn:aws:kms:{region}:{account}:key/{id}",
    "aws:lambda/function:Function": "arn:aws:lambda:{region}:{account}:function:{name}",
    "aws:lambda/eventSourceMapping:EventSourceMapping": "arn:aws:lambda:{region}:{account}:event-source-mapping:{id}",
    "aws:sfn/stateMachine:StateMachine": "arn:aws:states:{region}:{account}:stateMachine:{name}",
    "aws:glue/catalogDatabase:CatalogDatabase": "arn:aws:glue:{region}:{account}:database/{name}",
    "aws:athena/workgroup:Workgroup": "arn:aws:athena:{region}:{account}:workgroup/{name}",
    "aws:iam/role:Role": "arn:aws:iam::{account}:role/{name}",
    "aws:iam/policy:Policy": "arn:aws:iam::{account}:policy/{name}",
    "aws:cloudwatch/eventRule:EventRule": "arn:aws:events:{region}:{account}:rule/{name}",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "arn:aws:cloudwatch:{region}:{account}:alarm:{name}",
}


# Cloud Control resources (`aws:cloudcontrol/resource:Resource`) have no ARN output; these are the ARNs of the
# CloudFormation types the program manages through it, from their desired state (Service Authorization
# Reference, Amazon Connect Customer Profiles).
CLOUDCONTROL_ARN_FORMATS = {
    "AWS::CustomerProfiles::ObjectType":
        "arn:aws:profile:{region}:{account}:domains/{DomainName}/object-types/{ObjectTypeName}",
    "AWS::CustomerProfiles::EventTrigger":
        "arn:aws:profile:{region}:{account}:domains/{DomainName}/event-triggers/{EventTriggerName}",
    "AWS::CustomerProfiles::Integration": "arn:aws:profile:{region}:{account}:domains/{DomainName}/integrations/{Uri}",
}


def offline_arn(type_token: str, name: str, inputs: dict[str, Any], *, region: str, account: str) -> str:
    """A resource's ARN from its logical name (or its `name`/`bucket` input) in its service's real format; other
    types get arn:aws:<service>:<region>:<account>:<name>."""
    physical = inputs.get("bucket") or inputs.get("name") or name
    if type_token == "aws:glue/catalogTable:CatalogTable":
        return f"arn:aws:glue:{region}:{account}:table/{inputs.get('databaseName')}/{physical}"
    if type_token == "aws:cloudwatch/logStream:LogStream":
        return f"arn:aws:logs:{region}:{account}:log-group:{inputs.get('logGroupName')}:log-stream:{physical}"
    if type_token == "aws:cloudcontrol/resource:Resource" and inputs.get("typeName") in CLOUDCONTROL_ARN_FORMATS:
        try:
            state = json.loads(inputs.get("desiredState") or "{}")
            return CLOUDCONTROL_ARN_FORMATS[inputs["typeName"]].format(region=region, account=account, **state)
        except (json.JSONDecodeError, KeyError, TypeError):
            pass  # a state without the names (not this program's): the generic form below
    service = type_token.split(":")[1].split("/")[0]
    template = ARN_FORMATS.get(type_token, f"arn:aws:{service}:{{region}}:{{account}}:{{name}}")
    return template.format(region=region, account=account, name=physical, id=f"{name}-id")
