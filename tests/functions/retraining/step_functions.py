"""Runs a state machine definition on moto's own Step Functions interpreter, with a Python callable behind the
Lambda function its Tasks invoke.

moto interprets the definition (`mock_aws(config={"stepfunctions": {"execute_state_machine": True}})`: its
ASL parser, paths, Retry, Catch, Choice, Wait, the context object), and calls `lambda:Invoke` through boto3 as
Step Functions would. moto cannot run a Lambda function without Docker, so a `before-call` hook on that one
request answers it the way the Lambda service does: the handler's JSON result, or an unhandled error as
`FunctionError: Unhandled` with `{"errorMessage", "errorType"}` (which Step Functions turns into the error name
`errorType`), or a Lambda service error (HTTP 429 `TooManyRequestsException` → `Lambda.TooManyRequestsException`).

Only the interpreter's clock is replaced: Wait states and Retry intervals are recorded instead of slept, so a run
that would take hours takes milliseconds; what happens in which order is moto's.
"""

from __future__ import annotations

import io
import json
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator
from urllib.parse import unquote

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction

STEP_FUNCTIONS_CONFIG = {"stepfunctions": {"execute_state_machine": True}}
ROLE_ARN = "arn:aws:iam::123456789012:role/retraining-states"


@dataclass
class Execution:
    """What one execution did, read back from its history."""

    status: str
    """SUCCEEDED, FAILED, TIMED_OUT or ABORTED (DescribeExecution)."""
    end_state: str
    """The last state entered."""
    path: list[str] = field(default_factory=list)
    """Every state entered, in order."""
    steps: list[str] = field(default_factory=list)
    """The Lambda payload's `step` of every invocation, retries included."""
    retried: list[str] = field(default_factory=list)
    """The error of every failed Task attempt the interpreter scheduled again."""
    waits: list[int] = field(default_factory=list)
    """Seconds of every Wait state entered."""
    retry_intervals: list[float] = field(default_factory=list)
    """Seconds the interpreter would have slept before each retry."""
    started: datetime | None = None
    """DescribeExecution's startDate: `$$.Execution.StartTime`, the run date's source."""
    output: Any = None
    error: str | None = None


@dataclass
class LambdaService:
    """Answers `lambda:Invoke` of `function_arn` by calling `handler(payload)`."""

    function_arn: str
    handler: Callable[[dict[str, Any]], Any]
    throttle_next: int = 0
    """How many of the next invocations the Lambda service refuses with TooManyRequestsException."""
    invoked: list[str] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        # url_path: /2015-03-31/functions/<FunctionName, URL-encoded>/invocations
        function_name = unquote(params["url_path"].split("/")[3])
        if function_name != self.function_arn:
            return None  # moto answers: no such function
        payload = json.loads(params["body"] or b"{}")
        self.invoked.append(payload.get("step"))
        if self.throttle_next:
            self.throttle_next -= 1
            return _response(429, {"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"},
                                   "Type": "User"})
        try:
            body, error = self.handler(payload), None
        except Exception as exc:  # noqa: BLE001 - the Lambda runtime reports every unhandled error this way
            body, error = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": []}, "Unhandled"
        # A Lambda result is JSON: what does not serialise fails there, as here.
        data = json.dumps(body).encode()
        answer: dict[str, Any] = {"StatusCode": 200, "ExecutedVersion": "$LATEST",
                                  "Payload": StreamingBody(io.BytesIO(data), len(data))}
        if error:
            answer["FunctionError"] = error
        return _response(200, answer)


def _response(status: int, parsed: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    parsed["ResponseMetadata"] = {"HTTPStatusCode": status, "RequestId": "local-lambda", "HTTPHeaders": {}}
    return AWSResponse("https://lambda.local/", status, {}, None), parsed


@contextmanager
def interpreter_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[int], list[float]]]:
    """Record instead of sleeping: (Wait seconds, Retry intervals)."""
    waits: list[int] = []
    intervals: list[float] = []
    with monkeypatch.context() as patch:
        patch.setattr(WaitFunction, "_wait_interval", lambda self, env, wait_seconds: waits.append(wait_seconds))
        patch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=intervals.append))
        yield waits, intervals


def execute(definition: dict[str, Any], lambda_service: LambdaService, *, name: str,
            region: str, monkeypatch: pytest.MonkeyPatch, timeout_s: float = 60) -> Execution:
    """Create the state machine, start one execution named `name`, wait for its end; inside `mock_aws` set up
    with STEP_FUNCTIONS_CONFIG."""
    # moto's interpreter makes a client from the default session for every Task; the hook must be on that
    # session, and one session for all runs keeps its loaded service models.
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    events = boto3.DEFAULT_SESSION.events
    events.register("before-call.lambda.Invoke", lambda_service)
    sfn = boto3.client("stepfunctions", region_name=region)
    try:
        with interpreter_clock(monkeypatch) as (waits, intervals):
            machine = sfn.create_state_machine(name=f"retraining-{name}", definition=json.dumps(definition),
                                               roleArn=ROLE_ARN)["stateMachineArn"]
            arn = sfn.start_execution(stateMachineArn=machine, name=name)["executionArn"]
            deadline = time.monotonic() + timeout_s
            while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
                if time.monotonic() > deadline:
                    raise AssertionError(f"execution {name} still running after {timeout_s} s")
                time.sleep(0.01)
    finally:
        events.unregister("before-call.lambda.Invoke", lambda_service)
    history = [event for page in sfn.get_paginator("get_execution_history").paginate(executionArn=arn)
               for event in page["events"]]
    execution = Execution(status=described["status"], end_state="", steps=list(lambda_service.invoked),
                          waits=waits, retry_intervals=intervals, error=described.get("error"),
                          started=described["startDate"],
                          output=json.loads(described["output"]) if described.get("output") else None)
    failed: str | None = None
    for event in history:
        kind = event["type"]
        if kind.endswith("StateEntered"):
            execution.path.append(event["stateEnteredEventDetails"]["name"])
        # A retried attempt: TaskFailed, then straight away the Task scheduled again.
        if kind == "TaskScheduled" and failed is not None:
            execution.retried.append(failed)
        failed = event["taskFailedEventDetails"]["error"] if kind == "TaskFailed" else None
    execution.end_state = execution.path[-1]
    return execution
