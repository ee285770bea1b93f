"""Properties of the generated state machine definition, asserted on its structure."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from functions.retraining.settings import DEFAULT_LOCK_TTL_SECONDS
from functions.retraining.steps import STEPS
from functions.retraining.workflow import LoopBound, Step, WorkflowSpec, build_definition

FUNCTION_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:retraining"
SPEC = WorkflowSpec(function_arn=FUNCTION_ARN)
DEFINITION = build_definition(SPEC)
STATES = DEFINITION["States"]
AUTO_SPEC = WorkflowSpec(function_arn=FUNCTION_ARN, auto_training=True)
AUTO_STATES = build_definition(AUTO_SPEC)["States"]
# The structural properties hold for both definitions: FULL/UPDATE training, and AUTO.
BOTH = pytest.mark.parametrize("states", [STATES, AUTO_STATES], ids=["train", "auto"])

# Written out here from the API references, independently of workflow.py's tables.
TERMINAL = {
    "$.query.status": ("SUCCEEDED", {"FAILED", "CANCELLED"}),
    "$.import_job.status": ("ACTIVE", {"CREATE FAILED"}),
    "$.training.status": ("ACTIVE", {"CREATE FAILED", "CREATE STOPPED"}),
    "$.campaign.status": ("ACTIVE", {"CREATE FAILED"}),
}
PENDING = {
    "$.query.status": {"QUEUED", "RUNNING"},
    "$.import_job.status": {"CREATE PENDING", "CREATE IN_PROGRESS"},
    "$.training.status": {"CREATE PENDING", "CREATE IN_PROGRESS", "CREATE STOPPING"},
    "$.campaign.status": {"CREATE PENDING", "CREATE IN_PROGRESS"},
}
# The guide's Lambda service exceptions (bp-lambda-serviceexception.html) and throttling, and our own two.
RETRIED = {"Throttled", "ResourceInUse", "Lambda.TooManyRequestsException", "Lambda.ServiceException",
           "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.ClientExecutionTimeoutException"}


def successors(name: str, *, catches: bool = True, states: dict = STATES) -> set[str]:
    state = states[name]
    found = {state["Next"]} if "Next" in state else set()
    found |= {rule["Next"] for rule in state.get("Choices", [])}
    found |= {state["Default"]} if "Default" in state else set()
    if catches:
        found |= {catch["Next"] for catch in state.get("Catch", [])}
    return found


def reachable(start: str, *, catches: bool = True, states: dict = STATES) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(successors(name, catches=catches, states=states))
    return seen


def ends(start: str, states: dict = STATES) -> set[str]:
    """The end states reachable from `start` on normal transitions."""
    return {n for n in reachable(start, catches=False, states=states) if states[n]["Type"] in ("Succeed", "Fail")}


def tasks(states: dict = STATES) -> dict[str, dict]:
    return {name: state for name, state in states.items() if state["Type"] == "Task"}


def test_moto_accepts_the_definition():
    # With execute_state_machine, moto parses CreateStateMachine's definition with its ASL parser.
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="eu-west-1", aws_access_key_id="x",
                              aws_secret_access_key="x")
        role = "arn:aws:iam::123456789012:role/retraining-states"
        arn = client.create_state_machine(name="retraining", definition=json.dumps(DEFINITION),
                                          roleArn=role)["stateMachineArn"]
        assert json.loads(client.describe_state_machine(stateMachineArn=arn)["definition"]) == DEFINITION
        broken = {**DEFINITION, "States": {**STATES, "Gate": {**STATES["Gate"], "Next": 42}}}
        with pytest.raises(ClientError, match="ASLParserException"):
            client.create_state_machine(name="broken", definition=json.dumps(broken), roleArn=role)


@BOTH
def test_every_task_has_a_timeout_retries_with_backoff_and_catches_everything(states):
    for name, state in tasks(states).items():
        assert 1 <= state["TimeoutSeconds"] <= 900, name
        retried = {error for retrier in state["Retry"] for error in retrier["ErrorEquals"]}
        assert RETRIED <= retried, name
        for retrier in state["Retry"]:
            assert retrier["BackoffRate"] > 1 and retrier["MaxAttempts"] >= 3 and retrier["IntervalSeconds"] >= 1
        (catch,) = state["Catch"]
        assert catch["ErrorEquals"] == ["States.ALL"] and catch["ResultPath"] == "$.error", name
        assert catch["Next"] == ("Failed" if name == "NotifyFailure" else "NotifyFailure"), name


def test_every_task_invokes_the_handler_with_a_known_step_and_every_step_is_used():
    used = {}
    for states in (STATES, AUTO_STATES):
        used[id(states)] = set()
        for state in tasks(states).values():
            assert state["Resource"] == "arn:aws:states:::lambda:invoke"
            assert state["Parameters"]["FunctionName"] == FUNCTION_ARN
            assert state["OutputPath"] == "$.Payload"
            used[id(states)].add(Step(state["Parameters"]["Payload"]["step"]))
    training = {Step.START_TRAINING, Step.CHECK_TRAINING}
    assert used[id(STATES)] | used[id(AUTO_STATES)] == set(Step) == set(STEPS)
    assert Step.PICK_DEPLOYABLE not in used[id(STATES)]
    assert not training & used[id(AUTO_STATES)]  # AUTO never starts or waits on a training


@pytest.mark.parametrize("states, loops", [
    (STATES, {"QueryStatus", "ImportStatus", "TrainingStatus", "CampaignStatus"}),
    (AUTO_STATES, {"QueryStatus", "ImportStatus", "CampaignStatus"}),
], ids=["train", "auto"])
def test_every_loop_is_bounded_by_the_attempts_counter_leading_to_failure(states, loops):
    loop_choices = set()
    for name, state in states.items():
        if state["Type"] != "Wait":
            continue
        loop = {n for n in reachable(name, catches=False, states=states)
                if name in reachable(n, catches=False, states=states)}
        (choice,) = [n for n in loop if states[n]["Type"] == "Choice"]
        loop_choices.add(choice)
        rules = states[choice]["Choices"]
        (bound_index,) = [i for i, r in enumerate(rules) if r.get("Variable") == "$.attempts"]
        bound = rules[bound_index]
        assert bound["NumericGreaterThanEquals"] >= 1
        assert bound["Next"] not in loop and ends(bound["Next"], states) == {"Failed"}
        assert "NotifyFailure" in reachable(bound["Next"], catches=False, states=states)
        # The bound is looked at before any rule that goes round the loop again.
        assert all(r["Next"] not in loop for r in rules[:bound_index]), choice
        assert states[choice]["Default"] not in loop
    assert loop_choices == loops


@BOTH
def test_every_status_choice_covers_every_terminal_status(states):
    status_choices = {}
    for name, state in states.items():
        if state["Type"] == "Choice":
            paths = {r["Variable"] for r in state["Choices"]} - {"$.attempts", "$.outcome"}
            if paths:
                (path,) = paths
                status_choices[path] = state
    expected = set(TERMINAL) - ({"$.training.status"} if states is AUTO_STATES else set())
    assert set(status_choices) == expected
    for path, state in status_choices.items():
        success, failed = TERMINAL[path]
        routes = {r["StringEquals"]: r["Next"] for r in state["Choices"] if r["Variable"] == path}
        assert "Succeeded" in ends(routes[success], states) and states[routes[success]]["Type"] == "Task", path
        for status in failed:
            assert ends(routes[status], states) == {"Failed"}, (path, status)
        for status in PENDING[path]:
            assert states[routes[status]]["Type"] == "Wait", (path, status)
        assert ends(state["Default"], states) == {"Failed"}, path  # an unknown status ends the run too


@pytest.mark.parametrize("states, clean", [
    (STATES, {"Succeeded": "NotifySucceeded", "Skipped": "NotifySkipped", "GateRejected": "NotifyGateRejected"}),
    (AUTO_STATES, {"Succeeded": "NotifySucceeded", "Skipped": "NotifySkipped", "GateRejected": "NotifyGateRejected",
                   "NothingToDeploy": "NotifyNothingToDeploy"}),
], ids=["train", "auto"])
def test_failures_are_notified_and_clean_outcomes_end_in_named_succeed_states(states, clean):
    assert {n for n, s in states.items() if s["Type"] == "Succeed"} == {*clean, "AlreadyRunning"}
    assert {n for n, s in states.items() if s["Type"] == "Fail"} == {"Failed"}
    assert [n for n in states if "Failed" in successors(n, catches=False, states=states)] == ["NotifyFailure"]
    for end, notify in clean.items():
        assert [n for n in states if end in successors(n, states=states)] == [notify]


def test_auto_training_goes_from_the_import_to_the_pick_and_the_gate():
    import_status = {r["StringEquals"]: r["Next"] for r in AUTO_STATES["ImportStatus"]["Choices"]
                     if "StringEquals" in r}
    assert import_status["ACTIVE"] == "PickDeployableVersion"
    assert AUTO_STATES["PickDeployableVersion"]["Next"] == "AnythingNewToDeploy"
    assert AUTO_STATES["AnythingNewToDeploy"]["Default"] == "Gate"
    # No training loop is counted in the run's bound, so the lock and the timeout are a day shorter.
    assert AUTO_SPEC.max_run_seconds == SPEC.max_run_seconds - SPEC.training.max_seconds


@BOTH
def test_every_state_is_reachable_and_every_transition_exists(states):
    assert reachable("AcquireLock", states=states) == set(states)
    for name in states:
        assert successors(name, states=states) <= set(states), name


def test_default_bounds_and_the_lock_outlives_a_run():
    assert SPEC.query.max_seconds <= 3600 and SPEC.import_job.max_seconds <= 6 * 3600
    assert SPEC.training.max_seconds <= 24 * 3600 and SPEC.campaign.max_seconds <= 2 * 3600
    assert DEFINITION["TimeoutSeconds"] == SPEC.max_run_seconds <= DEFAULT_LOCK_TTL_SECONDS
    assert STATES["WaitForImport"]["Seconds"] == 300
    assert STATES["CheckData"]["TimeoutSeconds"] == 900


def test_the_definition_follows_the_spec():
    spec = WorkflowSpec(function_arn=FUNCTION_ARN, import_job=LoopBound(60, 10), task_timeout_seconds=30)
    states = build_definition(spec)["States"]
    assert states["WaitForImport"]["Seconds"] == 60
    assert {"Variable": "$.attempts", "NumericGreaterThanEquals": 10, "Next": "ImportTimedOut"} in \
        states["ImportStatus"]["Choices"]
    assert states["StartImport"]["TimeoutSeconds"] == 30


@pytest.mark.parametrize("make, message", [
    (lambda: WorkflowSpec(function_arn=""), "WorkflowSpec.function_arn"),
    (lambda: WorkflowSpec(function_arn=FUNCTION_ARN, task_timeout_seconds=901), "WorkflowSpec.task_timeout_seconds"),
    (lambda: WorkflowSpec(function_arn=FUNCTION_ARN, training=(600, 10)), "WorkflowSpec.training"),
    (lambda: LoopBound(0, 10), "LoopBound.wait_seconds"),
    (lambda: LoopBound(10, True), "LoopBound.max_attempts"),
])
def test_spec_errors_name_the_field(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()
