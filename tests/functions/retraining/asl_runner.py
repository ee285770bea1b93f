"""A local interpreter of the Amazon States Language subset the retraining definition uses.

Tests drive the *definition* with it: Task (lambda:invoke with Parameters, `.$` paths including `$$.` context,
OutputPath, Retry by error name without sleeping, Catch with ResultPath), Pass (Result, ResultPath), Wait (no
sleep), Choice (StringEquals, NumericGreaterThanEquals, IsPresent, And/Or/Not on `$.x` paths), Succeed, Fail.
Anything else raises, so the definition cannot drift outside what is tested here. Payloads and results are
round-tripped through JSON, as Lambda would.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Callable

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


class Runtime(Exception):
    """States.Runtime: the definition asked for something the data does not have."""


@dataclass
class Execution:
    """What one run did."""

    status: str  # SUCCEEDED | FAILED
    end_state: str
    path: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    """The Lambda payload `step` of every invocation, retries included."""
    retried: list[str] = field(default_factory=list)
    """Error names a Retry caught."""
    output: Any = None
    error: str | None = None


def read_path(path: str, data: Any, context: dict[str, Any]) -> Any:
    if path.startswith("$$"):
        data, path = context, path[1:]
    if path == "$":
        return data
    if not path.startswith("$."):
        raise Runtime(f"unsupported path {path!r}")
    value = data
    for part in path[2:].split("."):
        if not isinstance(value, dict) or part not in value:
            raise Runtime(f"path {path!r} not found")
        value = value[part]
    return value


def write_path(data: Any, path: str | None, value: Any) -> Any:
    if path is None or path == "$":
        return value
    if not path.startswith("$."):
        raise Runtime(f"unsupported ResultPath {path!r}")
    result = copy.deepcopy(data)
    target = result
    parts = path[2:].split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return result


def resolve(template: Any, data: Any, context: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        resolved = {}
        for key, value in template.items():
            if key.endswith(".$"):
                resolved[key[:-2]] = read_path(value, data, context)
            else:
                resolved[key] = resolve(value, data, context)
        return resolved
    if isinstance(template, list):
        return [resolve(v, data, context) for v in template]
    return template


def matches(rule: dict[str, Any], data: Any) -> bool:
    if "And" in rule:
        return all(matches(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(matches(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not matches(rule["Not"], data)
    variable = rule["Variable"]
    if "IsPresent" in rule:
        try:
            read_path(variable, data, {})
            present = True
        except Runtime:
            present = False
        return present == rule["IsPresent"]
    value = read_path(variable, data, {})
    if "StringEquals" in rule:
        return isinstance(value, str) and value == rule["StringEquals"]
    if "NumericGreaterThanEquals" in rule:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and value >= rule["NumericGreaterThanEquals"]
    raise Runtime(f"unsupported Choice rule {rule}")


def _error_matches(names: list[str], error: str) -> bool:
    return error in names or "States.ALL" in names


def run(definition: dict[str, Any], invoke: Invoke, *, name: str = "run-1",
        start_time: str = "2026-11-20T02:00:00.000Z", input: Any = None, max_transitions: int = 5_000) -> Execution:
    """Walk `definition` from StartAt; Task states call `invoke(payload)`."""
    context = {"Execution": {"Name": name, "StartTime": start_time,
                             "Id": f"arn:aws:states:eu-west-1:123456789012:execution:retraining:{name}"}}
    states = definition["States"]
    data = {} if input is None else input
    current = definition["StartAt"]
    execution = Execution(status="RUNNING", end_state=current)
    for _ in range(max_transitions):
        state = states[current]
        execution.path.append(current)
        kind = state["Type"]
        if kind == "Succeed":
            execution.status, execution.end_state, execution.output = "SUCCEEDED", current, data
            return execution
        if kind == "Fail":
            execution.status, execution.end_state, execution.output = "FAILED", current, data
            execution.error = state.get("Error")
            return execution
        if kind == "Wait":
            current = state["Next"]
        elif kind == "Pass":
            data = write_path(data, state.get("ResultPath", "$"), copy.deepcopy(state.get("Result", data)))
            current = state["Next"]
        elif kind == "Choice":
            current = next((rule["Next"] for rule in state["Choices"] if matches(rule, data)), None) \
                or state.get("Default")
            if current is None:
                raise Runtime("States.NoChoiceMatched")
        elif kind == "Task":
            if state["Resource"] != "arn:aws:states:::lambda:invoke":
                raise Runtime(f"unsupported Task resource {state['Resource']}")
            payload = json.loads(json.dumps(resolve(state["Parameters"], data, context)["Payload"]))
            result, error = _invoke_with_retries(state, payload, invoke, execution)
            if error is None:
                data = read_path(state.get("OutputPath", "$"), write_path(data, state.get("ResultPath", "$"),
                                                                         {"Payload": result, "StatusCode": 200}), {})
                current = state["Next"]
            else:
                catcher = next((c for c in state.get("Catch", []) if _error_matches(c["ErrorEquals"], error[0])),
                               None)
                if catcher is None:
                    execution.status, execution.end_state, execution.error = "FAILED", current, error[0]
                    return execution
                data = write_path(data, catcher.get("ResultPath", "$"), {"Error": error[0], "Cause": error[1]})
                current = catcher["Next"]
        else:
            raise Runtime(f"unsupported state type {kind}")
    raise Runtime(f"more than {max_transitions} transitions: a loop without a bound?")


def _invoke_with_retries(state: dict[str, Any], payload: dict[str, Any], invoke: Invoke,
                         execution: Execution) -> tuple[Any, tuple[str, str] | None]:
    attempts: dict[int, int] = {}
    while True:
        execution.steps.append(payload.get("step"))
        try:
            return json.loads(json.dumps(invoke(copy.deepcopy(payload)))), None
        except Exception as exc:  # noqa: BLE001 - every Lambda error becomes a States error by its type name
            name = type(exc).__name__
            cause = json.dumps({"errorMessage": str(exc), "errorType": name})
        for index, retrier in enumerate(state.get("Retry", [])):
            if _error_matches(retrier["ErrorEquals"], name):
                if attempts.get(index, 0) < retrier.get("MaxAttempts", 3):
                    attempts[index] = attempts.get(index, 0) + 1
                    execution.retried.append(name)
                    break
                return None, (name, cause)
        else:
            return None, (name, cause)
