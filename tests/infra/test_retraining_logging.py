"""The retraining state machine logs its execution history to CloudWatch Logs (issue 9, finding 9)."""

from __future__ import annotations

import pulumi
import pytest

from components.retraining_loop import LOG_DELIVERY_ACTIONS

# The role policy the Step Functions Developer Guide gives for logging to CloudWatch Logs
# (https://docs.aws.amazon.com/step-functions/latest/dg/cw-logs.html), written out here so a change to
# LOG_DELIVERY_ACTIONS has to change the test too.
GUIDE_ACTIONS = ["logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
                 "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
                 "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"]


def test_the_state_machine_logs_errors_without_execution_data_to_its_own_log_group(dev_graph):
    group = dev_graph.one("aws:cloudwatch/logGroup:LogGroup", "retraining-workflow-logs")
    assert group.inputs["retentionInDays"] == 30  # logRetentionDays (default)
    # The vended-logs prefix keeps the group out of the 5,120-character CloudWatch Logs resource policy.
    assert group.inputs["namePrefix"].startswith("/aws/vendedlogs/states/engagement-loop-")
    # Encrypted like the stack's other log groups: none of them sets a customer key.
    assert all("kmsKeyId" not in g.inputs for g in dev_graph.of_type("aws:cloudwatch/logGroup:LogGroup"))
    machine = dev_graph.one("aws:sfn/stateMachine:StateMachine")
    assert machine.inputs["loggingConfiguration"] == {
        "level": "ERROR", "includeExecutionData": False, "logDestination": dev_graph.arn_of(group) + ":*"}
    assert machine.parent == group.parent


def test_the_state_machine_role_may_set_up_log_delivery_as_the_step_functions_guide_states(dev_graph):
    assert list(LOG_DELIVERY_ACTIONS) == GUIDE_ACTIONS
    policy = dev_graph.one("aws:iam/rolePolicy:RolePolicy", "retraining-workflow-logging-policy")
    role = dev_graph.one("aws:iam/role:Role", "retraining-workflow-role")
    assert policy.inputs["role"] == f"{role.name}-id"
    # The log delivery actions support no resource type: the guide grants them on "*".
    assert policy.input_json("policy")["Statement"] == [
        {"Effect": "Allow", "Action": GUIDE_ACTIONS, "Resource": ["*"]}]


@pytest.mark.parametrize("level", ["ALL", "FATAL", "OFF"])
def test_the_log_level_comes_from_retraining_log_level(monitor, dev_graph, dev_stack_config, run_stack, level):
    before = len(monitor.registered)
    run_stack({**dev_stack_config, "engagement-loop:retrainingLogLevel": level})
    [machine] = [r for r in monitor.registered[before:] if r.type == "aws:sfn/stateMachine:StateMachine"]
    assert machine.inputs["loggingConfiguration"]["level"] == level
    assert machine.inputs["loggingConfiguration"]["includeExecutionData"] is False


def test_a_bad_log_level_stops_the_program_naming_the_key(monitor, dev_graph, dev_stack_config, run_stack):
    before = len(monitor.registered)
    with pytest.raises(pulumi.RunError) as error:
        run_stack({**dev_stack_config, "engagement-loop:retrainingLogLevel": "DEBUG"})
    assert "engagement-loop:retrainingLogLevel = 'DEBUG': expected one of ERROR, ALL, FATAL, OFF" in str(error.value)
    assert len(monitor.registered) == before
