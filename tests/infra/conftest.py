"""Run the real Pulumi program under mocks once per session and record every registered resource."""

from __future__ import annotations

import json
import runpy
from unittest import mock
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks

from cli.offline_arns import offline_arn
from components.stack_file import read_stack_file

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "engagement-loop"
STACK = "dev"
ACCOUNT = "123456789012"


@dataclass
class Registered:
    """One resource the program registered: its type token, logical name, inputs and parent URN."""

    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    urn: str
    dependencies: tuple[str, ...] = ()
    """URNs of the resources it was registered to depend on (`depends_on`, and inputs' resources)."""

    def input_json(self, key: str) -> Any:
        """An input that holds a JSON document (policies, event patterns), parsed."""
        return json.loads(self.inputs[key])


REGION = "eu-west-1"

def mock_arn(type_token: str, name: str, inputs: dict[str, Any]) -> str:
    """The ARN the mocks give a resource: its logical name (or its `name` input) in the service's real format."""
    return offline_arn(type_token, name, inputs, region=REGION, account=ACCOUNT)


class RecordingMocks(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = {
            **args.inputs,
            "arn": mock_arn(args.typ, args.name, args.inputs),
            "name": args.inputs.get("name", args.name),
        }
        if args.typ == "aws:s3/bucket:Bucket":
            outputs["bucket"] = args.name
        if args.typ == "aws:dynamodb/table:Table" and args.inputs.get("streamEnabled"):
            outputs["streamArn"] = f"{outputs['arn']}/stream/2026-11-22T00:00:00.000"
        if args.typ == "aws:sqs/queue:Queue":
            outputs["url"] = f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/{args.name}"
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/test", "userId": "test",
                    "id": ACCOUNT}
        raise NotImplementedError(f"no mock for invoke {args.token}")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, also keeping each registration's parent (MockResourceArgs has none)."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            inputs = pulumi.runtime.rpc.deserialize_properties(request.object)
            self.registered.append(Registered(request.type, request.name, inputs, request.parent, response.urn,
                                              tuple(request.dependencies)))
        return response


def stack_config_from_file(path: Path) -> dict[str, str]:
    """Stack config as the engine hands it to a program: every value a string, structured ones as JSON (the one
    stack-file reader, as `cli stack check` and `automation` read stack files)."""
    return read_stack_file(path).program_config()


class Graph:
    """The resources one program run registered, with look-ups tests need."""

    def __init__(self, registered: list[Registered], outputs: dict[str, Any]):
        self.resources = registered
        self.outputs = outputs

    def of_type(self, type_token: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {type_token} {name or ''}, found {[r.name for r in found]}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def arn_of(self, resource: Registered) -> str:
        return mock_arn(resource.type, resource.name, resource.inputs)

    def policy_documents(self) -> list[tuple[Registered, dict[str, Any]]]:
        documents = []
        for resource in self.resources:
            if resource.type in ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy"):
                documents.append((resource, resource.input_json("policy")))
        return documents


def run_program(config: dict[str, str], secret_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Run __main__.py with `config` (`secret_keys` marked secret, as `pulumi config set --secret` does) and return
    its resolved stack outputs.

    Resources are recorded by the monitor; `pulumi.runtime.test` waits for every registration.
    """
    # An explicit list, also when empty: a run must not inherit the previous run's secret keys.
    pulumi.runtime.set_all_config(config, secret_keys=list(secret_keys))
    exported: dict[str, Any] = {}
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        with mock.patch.object(pulumi, "export", side_effect=exported.__setitem__):
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
        return pulumi.Output.all(**exported).apply(resolved.update)

    program()
    return resolved


@pytest.fixture(scope="session")
def monitor() -> RecordingMonitor:
    mocks = RecordingMocks()
    recording = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=False, monitor=recording)
    return recording


@pytest.fixture(scope="session")
def dev_graph(monitor: RecordingMonitor) -> Graph:
    """The whole program, run once with the sample stack Pulumi.dev.yaml."""
    # Only this run's resources: another test's run may have registered some before (test order is free).
    before = len(monitor.registered)
    outputs = run_program(stack_config_from_file(ROOT / "Pulumi.dev.yaml"))
    return Graph(list(monitor.registered[before:]), outputs)


@pytest.fixture(scope="session")
def dev_stack_config() -> dict[str, str]:
    """The sample stack's config, as the engine hands it to the program (to run it again with a change)."""
    return stack_config_from_file(ROOT / "Pulumi.dev.yaml")


CONNECT_REGION = "eu-west-2"
"""Where the Connect runs deploy: Customer Profiles has no endpoint in the sample stack's eu-west-1, and the config
refuses a domain there."""
CAMPAIGN_ARN = f"arn:aws:connect-campaigns:{CONNECT_REGION}:123456789012:campaign/0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
CONNECT = {
    "engagement-loop:connectDomainName": "engagement-profiles",
    "engagement-loop:connectProfileKey": "crm_id",
    "engagement-loop:connectUnknownUsers": "create",
    # Two of rules/sample.csv's rules by their derived ActionName: an attribute rule and an event rule.
    "engagement-loop:connectCampaigns": json.dumps([
        {"actionName": "session_start", "campaignArn": CAMPAIGN_ARN, "maxPerProfile": 2, "per": "12 hours"},
        {"actionName": "trk__journey.send_welcome", "campaignArn": CAMPAIGN_ARN + "-2"},
    ]),
}
"""Every Connect option on (a custom profile key, profile creation, two campaigns)."""


def with_connect(config: dict[str, str]) -> dict[str, str]:
    """`config` moved to CONNECT_REGION (aws:region and the ARNs that must be in the stack's region) with CONNECT on."""
    return {**{key: value.replace(REGION, CONNECT_REGION) for key, value in config.items()}, **CONNECT}


@pytest.fixture(scope="session")
def connect_graph(monitor: RecordingMonitor, dev_stack_config: dict[str, str]) -> Graph:
    """The program run once with the sample stack and every Connect option on (CONNECT)."""
    before = len(monitor.registered)
    outputs = run_program(with_connect(dev_stack_config))
    return Graph(list(monitor.registered[before:]), outputs)


@pytest.fixture(scope="session")
def run_stack(monitor: RecordingMonitor):
    """Run the program again with another config (for failure paths; resources would be registered twice)."""
    return run_program
