"""`python -m cli stack check Pulumi.<stack>.yaml`: an offline preview of a stack, without the Pulumi CLI.

The stack file is read as Pulumi reads it (`components.stack_file`) and checked with the program's own parser
(`components.config.parse_stack_config`); then the Pulumi program itself (`__main__.py` of this project) runs
under `pulumi.runtime.set_mocks` with that config, so a problem only a component finds is found too. Every
problem is printed to stderr at once (a secret's value never) and the exit status is 2; a good stack prints
what `pulumi up` would create — resources per component and per type, the outputs, the optional parts on or
off — and exits 0. A `secure:` value cannot be decrypted offline: its key counts as set and secret, and its
value is not checked (`pulumi preview` checks it).

The program's modules keep state between runs and Pulumi's mocks are set once per process, so one process
checks one stack.
"""

from __future__ import annotations

import argparse
import asyncio
import runpy
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from unittest import mock

from cli.offline_arns import offline_arn

EXIT_OK, EXIT_PROBLEMS = 0, 2
_STAND_IN_ACCOUNT = "123456789012"


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("stack", help="stack file tools", description=__doc__.splitlines()[0])
    commands = group.add_subparsers(dest="command", required=True, metavar="{check}")
    check = commands.add_parser(
        "check", help="check a stack file offline and show what `pulumi up` would create",
        description="Read a stack file as Pulumi would, check every setting with the program's parser, run the "
                    "program under Pulumi's mocks, and list every problem (exit 2) or what `pulumi up` would "
                    "create (exit 0). Needs no Pulumi CLI and no AWS account.")
    check.add_argument("stack_file", type=Path, metavar="Pulumi.<stack>.yaml", help="the stack file, anywhere on disk")
    check.set_defaults(func=check_command)


def check_command(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from components.config import PROJECT_DIR, ConfigError
    from components.stack_file import StackFileError, read_stack_file

    path: Path = args.stack_file
    try:
        stack_file = read_stack_file(path)
    except StackFileError as error:  # each line already names the file
        for problem in error.problems:
            print(problem, file=err)
        return EXIT_PROBLEMS
    try:
        config = stack_file.parse(project_dir=PROJECT_DIR)
    except ConfigError as error:
        _print_problems(err, path, error.problems)
        _print_notes(err, stack_file)
        return EXIT_PROBLEMS

    run = run_stack_file(stack_file, config)
    if run.problems:
        _print_problems(err, path, run.problems)
        _print_notes(err, stack_file)
        return EXIT_PROBLEMS
    _print_summary(out, path, stack_file, config, run)
    return EXIT_OK


# --- the program under mocks ----------------------------------------------------------------------------

@dataclass
class ProgramRun:
    """What one mocked run of the program registered and exported."""

    resources: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, logical name, parent URN) of every resource, components included."""
    inputs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    """(type, logical name, inputs) of every resource the mocks created (what `bench.cost` counts)."""
    urns: dict[str, tuple[str, str]] = field(default_factory=dict)
    """URN → (type, logical name)."""
    parents: dict[str, str] = field(default_factory=dict)
    """URN → parent URN."""
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)
    """Export name → (value, secret)."""
    computed: set[str] = field(default_factory=set)
    """ARNs, ids and URLs the mocks made up: a value holding one is known only after `pulumi up`."""
    generated_names: set[str] = field(default_factory=set)
    """Names AWS would generate (the mocks stand in the logical name): known only after `pulumi up`."""
    problems: list[str] = field(default_factory=list)


def run_stack_file(stack_file: Any, config: Any) -> ProgramRun:
    """`run_program` for a stack file read by `components.stack_file` and its parsed config."""
    return run_program(stack_file.program_config(), secret_keys=sorted(stack_file.secret_keys.keys),
                       stack_name=stack_file.stack_name, region=config.region,
                       account=config.retraining.solution.account or _STAND_IN_ACCOUNT)


def run_program(config: dict[str, str], *, secret_keys: list[str], stack_name: str, region: str,
                account: str, project_dir: Path | None = None) -> ProgramRun:
    """Run the project's `__main__.py` in-process under Pulumi's mocks with `config` (full keys → the engine's
    strings). An exception of the program or a component becomes a problem, never a traceback."""
    import pulumi
    from pulumi.runtime import mocks as pulumi_mocks

    from components.config import PROJECT, PROJECT_DIR

    run = ProgramRun()
    program = (project_dir or PROJECT_DIR) / "__main__.py"

    def arn(type_token: str, name: str, inputs: dict[str, Any]) -> str:
        return offline_arn(type_token, name, inputs, region=region, account=account)

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            run.inputs.append((args.typ, args.name, dict(args.inputs)))
            outputs = {**args.inputs, "arn": arn(args.typ, args.name, args.inputs)}
            made_up = [outputs["arn"], f"{args.name}-id"]
            if "name" not in args.inputs and not args.typ.startswith(f"{PROJECT}:"):  # AWS would generate one
                outputs["name"] = args.name
                run.generated_names.add(args.name)
            if args.typ == "aws:s3/bucket:Bucket" and "bucket" not in args.inputs:
                outputs["bucket"] = args.name
                run.generated_names.add(args.name)
            if args.typ == "aws:dynamodb/table:Table" and args.inputs.get("streamEnabled"):
                outputs["streamArn"] = f"{outputs['arn']}/stream/2026-11-22T00:00:00.000"
                made_up.append(outputs["streamArn"])
            if args.typ == "aws:sqs/queue:Queue":
                outputs["url"] = f"https://sqs.{region}.amazonaws.com/{account}/{outputs.get('name', args.name)}"
                made_up.append(outputs["url"])
            run.computed.update(made_up)
            return [f"{args.name}-id", outputs]

        def call(self, args: pulumi.runtime.MockCallArgs):
            if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
                return {"accountId": account, "arn": f"arn:aws:iam::{account}:user/stack-check",
                        "userId": "stack-check", "id": account}
            if args.token == "aws:index/getRegion:getRegion":
                return {"name": region, "id": region}
            raise NotImplementedError(f"no offline answer for {args.token}")

    class Monitor(pulumi_mocks.MockMonitor):
        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type != "pulumi:pulumi:Stack":
                run.resources.append((request.type, request.name, request.parent))
                run.urns[response.urn] = (request.type, request.name)
                run.parents[response.urn] = request.parent
            return response

    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack_name, preview=False, monitor=Monitor(mocks))
    pulumi.runtime.set_all_config(config, secret_keys=secret_keys)
    exported: dict[str, Any] = {}

    async def collect() -> None:
        for name, value in exported.items():
            output = pulumi.Output.from_input(value)
            run.outputs[name] = (await output.future(), await output.is_secret())

    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    def program_run() -> None:
        try:
            with mock.patch.object(pulumi, "export", side_effect=exported.__setitem__):
                runpy.run_path(str(program), run_name="__main__")
        except pulumi.RunError as error:  # the program's own report (a ConfigError): its lines are the problems
            run.problems.extend(_problem_lines(str(error)))
        except Exception as error:  # noqa: BLE001 — a component's check: a problem, never a traceback
            run.problems.append(f"the program stopped: {type(error).__name__}: {error}")
        if run.problems:
            # Registrations started before the program stopped may wait for values it never provided (a
            # deferred output): forget them instead of waiting for ever; nothing is deployed anyway.
            runtime_settings.SETTINGS.rpc_manager.clear()
            runtime_settings.SETTINGS.outputs.clear()
            return
        _sync_await(pulumi.Output.from_input(asyncio.ensure_future(collect())).future())

    # What `pulumi.runtime.test` does, with the program's exceptions caught inside.
    runtime_settings.SETTINGS.rpc_manager.clear()
    runtime_settings.SETTINGS.outputs.clear()
    try:
        _sync_await(run_pulumi_func(program_run))
    except Exception as error:  # noqa: BLE001 — e.g. a registration that failed asynchronously
        run.problems.append(f"the program stopped: {type(error).__name__}: {error}")
    return run


def _problem_lines(message: str) -> list[str]:
    lines = [line.strip().removeprefix("- ") for line in message.splitlines()]
    return [line for line in lines if line and line != "invalid stack config:"] or [message]


# --- output -------------------------------------------------------------------------------------------------


def _print_problems(err: TextIO, path: Path, problems: list[str]) -> None:
    print(f"{path}: {len(problems)} problem(s); nothing was deployed:", file=err)
    for problem in problems:
        print(f"  - {problem}", file=err)


def _print_notes(stream: TextIO, stack_file: Any) -> None:
    for note in getattr(stack_file, "notes", ()):
        print(f"note: {note}", file=stream)


def _print_summary(out: TextIO, path: Path, stack_file: Any, config: Any, run: ProgramRun) -> None:
    from components.config import SECRET_SHOWN

    resources = [r for r in run.resources if not r[0].startswith("engagement-loop:")]
    print(f"{path}: stack {stack_file.stack_name!r} in {config.region} is valid; `pulumi up` would create "
          f"{len(resources)} resources.", file=out)
    _print_notes(out, stack_file)

    print("\nOptional parts:", file=out)
    sources, retraining, rules = config.sources, config.retraining, config.rules
    parts = [
        ("Pinpoint event stream (legacy source)", sources.pinpoint_project_id is not None),
        ("SES configuration-set events", sources.ses_configuration_set is not None),
        ("app stream and producer policy", sources.app_producer_policy),
        ("Amazon Connect Customer Profiles actions", rules.connect_domain_name is not None),
        ("real-time events to a Personalize event tracker", retraining.real_time_tracking_id is not None),
        ("AUTO training (the solution trains itself)", retraining.training_mode.value == "AUTO"),
        ("solution events configuration", retraining.solution_events_config),
        ("deployment gate on a solution metric", retraining.gate_metric is not None),
        ("the stack's own alarm topic", config.alarm_topic_arn is None),
        ("reserved concurrency for rules maintenance", rules.reserve_concurrency),
    ]
    width = max(len(name) for name, _ in parts)
    for name, on in parts:
        print(f"  {name:<{width}}  {'on' if on else 'off'}", file=out)
    print(f"  rules: {len(rules.rules.rules)} from {rules.sheet_path}; training {retraining.training_mode.value}, "
          f"import {retraining.import_mode.value}, schedule {retraining.schedule}", file=out)
    if rules.connect is not None:
        connect = rules.connect
        print(f"  Connect: domain {connect.domain_name}, object type {connect.object_type_name} (profile key "
              f"{connect.profile_key}, unknown users: {connect.unknown_users.value}); "
              f"{len(connect.campaigns)} campaign trigger(s)", file=out)
        for trigger in connect.campaigns:
            print(f"    {trigger.action_name} qualified → {trigger.campaign_arn}, at most {trigger.max_per_profile} "
                  f"per profile per {trigger.period_value} {trigger.period_unit.value.lower()}", file=out)

    print("\nResources per component:", file=out)
    components = {urn: name for urn, (kind, name) in run.urns.items() if kind.startswith("engagement-loop:")}

    def owner(parent: str) -> str:
        """The outermost component above a resource (a child component's resources count for its parent)."""
        found = "(stack)"
        while parent in components:
            found, parent = components[parent], run.parents.get(parent, "")
        return found

    per_component = Counter(owner(parent) for _, _, parent in resources)
    for name, count in sorted(per_component.items()):
        print(f"  {name:<24} {count:>4}", file=out)

    print("\nResources per type:", file=out)
    per_type = Counter(kind for kind, _, _ in resources)
    width = max(map(len, per_type), default=0)
    for kind, count in sorted(per_type.items(), key=lambda kc: (-kc[1], kc[0])):
        print(f"  {kind:<{width}} {count:>4}", file=out)

    print("\nOutputs:", file=out)
    for name, (value, secret) in sorted(run.outputs.items()):
        if secret:
            shown = SECRET_SHOWN
        elif isinstance(value, str) and (value in run.generated_names
                                         or any(made in value for made in run.computed)):
            shown = "(known after pulumi up)"
        else:
            shown = value
        print(f"  {name}: {shown}", file=out)
    print("\nNext: `pulumi preview` (needs the Pulumi CLI and AWS credentials), then `pulumi up`.", file=out)
