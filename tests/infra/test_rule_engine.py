"""RuleEngine under mocks with the sample stack: tables, published rules, consumers, schedules, scoped IAM."""

from __future__ import annotations

import json
from pathlib import Path

from components.rule_engine import AGGREGATOR_MEMORY_MB
from functions.rules.sheet import parse_rules_sheet

ROOT = Path(__file__).resolve().parents[2]
TABLE = "aws:dynamodb/table:Table"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
APP_ARN = "arn:aws:mobiletargeting:eu-west-1:123456789012:apps/a1b2c3d4e5f60718293a4b5c6d7e8f90"


def policy(graph, name):
    """Action → every resource any statement of the role's policy grants it on."""
    document = graph.one("aws:iam/rolePolicy:RolePolicy", name).input_json("policy")
    actions: dict[str, list[str]] = {}
    for statement in document["Statement"]:
        for action in statement["Action"]:
            actions.setdefault(action, []).extend(statement["Resource"])
    return actions


def test_tables_have_keys_ttl_recovery_and_the_data_key(dev_graph):
    key_arn = dev_graph.arn_of(dev_graph.one("aws:kms/key:Key"))
    counters, outbox = dev_graph.one(TABLE, "rules-counters"), dev_graph.one(TABLE, "rules-outbox")
    for table in (counters, outbox):
        assert table.inputs["hashKey"] == "pk"
        assert table.inputs["ttl"] == {"attributeName": "expires_at", "enabled": True}
        assert table.inputs["pointInTimeRecovery"] == {"enabled": True}
        assert table.inputs["serverSideEncryption"] == {"enabled": True, "kmsKeyArn": key_arn}
    [sweep] = counters.inputs["globalSecondaryIndexes"]
    assert (sweep["name"], sweep["hashKey"], sweep["rangeKey"]) == ("sweep", "sweep_day", "pk")
    assert outbox.inputs["streamEnabled"] is True and outbox.inputs["streamViewType"] == "NEW_IMAGE"


def test_the_parsed_sheet_is_published_so_a_changed_rule_changes_the_diff(dev_graph):
    published = dev_graph.one("aws:s3/bucketObjectv2:BucketObjectv2", "rules-rules")
    expected = parse_rules_sheet((ROOT / "rules" / "sample.csv").read_text(), source_name="rules/sample.csv")
    assert published.inputs["content"] == expected.to_json()
    assert json.loads(published.inputs["content"])["version"] == expected.version
    assert (published.inputs["bucket"], published.inputs["key"]) == ("events-lake", "rules/rules.json")


def test_aggregator_reads_the_stream_with_partial_batches_retries_and_a_failure_queue(dev_graph):
    mapping = dev_graph.one(MAPPING, "rules-aggregator-mapping")
    function = dev_graph.one("aws:lambda/function:Function", "rules-aggregator-handler-function")
    assert mapping.inputs["eventSourceArn"] == dev_graph.arn_of(dev_graph.one("aws:kinesis/stream:Stream", "events-stream"))
    assert mapping.inputs["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping.inputs["bisectBatchOnFunctionError"] is True
    # The sample stack has a Pinpoint source, whose partition keys are not per user: one batch per shard.
    assert mapping.inputs["parallelizationFactor"] == 1 and mapping.inputs["maximumRetryAttempts"] == 5
    failures = dev_graph.arn_of(dev_graph.one("aws:sqs/queue:Queue", "rules-aggregator-failures"))
    assert mapping.inputs["destinationConfig"]["onFailure"]["destinationArn"] == failures
    env = function.inputs["environment"]["variables"]
    assert env["COUNTERS_TABLE"] == "rules-counters" and env["OUTBOX_TABLE"] == "rules-outbox"
    assert (env["RULES_BUCKET"], env["RULES_KEY"]) == ("events-lake", "rules/rules.json")
    assert env["FAILURES_QUEUE_URL"].endswith("/rules-aggregator-failures")
    assert env["DEDUPE_HORIZON_HOURS"] == "48"  # Pulumi.dev.yaml's dedupeHorizonHours, parsed once in config.py
    backfill_env = dev_graph.one("aws:lambda/function:Function", "rules-backfill-handler-function").inputs["environment"]
    assert backfill_env["variables"]["DEDUPE_HORIZON_HOURS"] == "48"
    actions = policy(dev_graph, "rules-aggregator-handler-policy")
    counters = dev_graph.arn_of(dev_graph.one(TABLE, "rules-counters"))
    outbox = dev_graph.arn_of(dev_graph.one(TABLE, "rules-outbox"))
    assert sorted(actions["dynamodb:PutItem"]) == sorted([counters, outbox])
    assert "dynamodb:UpdateItem" not in actions
    assert actions["s3:GetObject"] == ["arn:aws:s3:::events-lake/rules/rules.json*"]
    assert "dynamodb:Scan" not in actions and "dynamodb:DeleteItem" not in actions


def test_dispatcher_reads_only_inserts_of_the_outbox_and_may_reach_only_its_sinks(dev_graph):
    mapping = dev_graph.one(MAPPING, "rules-dispatcher-mapping")
    outbox = dev_graph.one(TABLE, "rules-outbox")
    assert mapping.inputs["eventSourceArn"].startswith(dev_graph.arn_of(outbox) + "/stream/")
    assert mapping.inputs["filterCriteria"] == {"filters": [{"pattern": '{"eventName": ["INSERT"]}'}]}
    env = dev_graph.one("aws:lambda/function:Function", "rules-dispatcher-handler-function"
                        ).inputs["environment"]["variables"]
    assert env["PINPOINT_APPLICATION_ID"] == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert env["DEAD_LETTER_QUEUE_URL"].endswith("/rules-action-dead-letters")
    actions = policy(dev_graph, "rules-dispatcher-handler-policy")
    assert actions["events:PutEvents"] == ["arn:aws:events:eu-west-1:123456789012:event-bus/default"]
    assert actions["mobiletargeting:UpdateEndpoint"] == [APP_ARN + "/*"]
    assert "profile:UpdateProfile" not in actions  # no Connect domain in the sample stack
    assert actions["dynamodb:GetRecords"] == [mapping.inputs["eventSourceArn"]]
    dev_graph.one("aws:cloudwatch/metricAlarm:MetricAlarm", "rules-action-dead-letters-depth")


def test_sweeper_and_backfill_run_on_schedules_without_table_scans(dev_graph):
    for name in ("rules-sweeper", "rules-backfill"):
        rule = dev_graph.one("aws:cloudwatch/eventRule:EventRule", f"{name}-schedule")
        assert rule.inputs["scheduleExpression"] == "rate(15 minutes)"
        target = dev_graph.one("aws:cloudwatch/eventTarget:EventTarget", f"{name}-target")
        assert target.inputs["arn"] == dev_graph.arn_of(
            dev_graph.one("aws:lambda/function:Function", f"{name}-handler-function"))
        permission = dev_graph.one("aws:lambda/permission:Permission", f"{name}-invoke")
        assert permission.inputs["sourceArn"] == dev_graph.arn_of(rule)
        assert "dynamodb:Scan" not in policy(dev_graph, f"{name}-handler-policy")
        function = dev_graph.one("aws:lambda/function:Function", f"{name}-handler-function")
        # No reservation by default (rulesReservedConcurrency): Lambda rejects one that would leave the
        # account's unreserved concurrency below 100; overlapping runs are safe through conditional writes.
        assert function.inputs.get("reservedConcurrentExecutions") is None
    sweeper = policy(dev_graph, "rules-sweeper-handler-policy")
    counters = dev_graph.arn_of(dev_graph.one(TABLE, "rules-counters"))
    assert sweeper["dynamodb:Query"] == [counters + "/index/sweep"]
    backfill = policy(dev_graph, "rules-backfill-handler-policy")
    assert backfill["athena:StartQueryExecution"] == [
        "arn:aws:athena:eu-west-1:123456789012:workgroup/engagement-loop-dev"]


def test_outbox_has_the_sparse_pending_index_the_local_layout_also_has(dev_graph, monkeypatch):
    import boto3
    from moto import mock_aws

    from functions.rules.outbox import create_local_outbox_table

    outbox = dev_graph.one(TABLE, "rules-outbox")
    [pending] = outbox.inputs["globalSecondaryIndexes"]
    assert (pending["name"], pending["hashKey"], pending["rangeKey"], pending["projectionType"]) == (
        "pending", "pending_shard", "created_ms", "ALL")
    stack_types = {a["name"]: a["type"] for a in outbox.inputs["attributes"]}
    assert stack_types == {"pk": "S", "pending_shard": "S", "created_ms": "N"}

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():  # create_local_tables' outbox (what tests and local tools run on) matches the stack
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_local_outbox_table(client, "outbox")
        table = client.describe_table(TableName="outbox")["Table"]
    assert {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]} == stack_types
    [local] = table["GlobalSecondaryIndexes"]
    assert local["IndexName"] == pending["name"] and local["Projection"]["ProjectionType"] == "ALL"
    assert [(k["AttributeName"], k["KeyType"]) for k in local["KeySchema"]] == [
        (pending["hashKey"], "HASH"), (pending["rangeKey"], "RANGE")]


def test_reconciler_runs_on_a_schedule_queries_only_the_index_and_delivers_like_the_dispatcher(dev_graph):
    rule = dev_graph.one("aws:cloudwatch/eventRule:EventRule", "rules-reconciler-schedule")
    assert rule.inputs["scheduleExpression"] == "rate(5 minutes)"
    function = dev_graph.one("aws:lambda/function:Function", "rules-reconciler-handler-function")
    assert function.inputs["handler"] == "functions.rules.reconcile.lambda_handler"
    assert function.inputs.get("reservedConcurrentExecutions") is None  # opt-in: rulesReservedConcurrency
    target = dev_graph.one("aws:cloudwatch/eventTarget:EventTarget", "rules-reconciler-target")
    assert target.inputs["arn"] == dev_graph.arn_of(function)
    assert dev_graph.one("aws:lambda/permission:Permission", "rules-reconciler-invoke").inputs["sourceArn"] == (
        dev_graph.arn_of(rule))
    env = function.inputs["environment"]["variables"]
    dispatcher_env = dev_graph.one("aws:lambda/function:Function", "rules-dispatcher-handler-function"
                                   ).inputs["environment"]["variables"]
    for name in ("OUTBOX_TABLE", "EVENT_BUS_NAME", "DEAD_LETTER_QUEUE_URL", "PINPOINT_APPLICATION_ID",
                 "CONNECT_DOMAIN_NAME"):
        assert env[name] == dispatcher_env[name], name
    assert env["RECONCILE_AFTER_SECONDS"] == "900"

    actions = policy(dev_graph, "rules-reconciler-handler-policy")
    outbox = dev_graph.arn_of(dev_graph.one(TABLE, "rules-outbox"))
    assert actions["dynamodb:Query"] == [outbox + "/index/pending"]
    assert "dynamodb:Scan" not in actions and "dynamodb:PutItem" not in actions
    for action in ("dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem"):
        assert actions[action] == [outbox], action
    dispatcher = policy(dev_graph, "rules-dispatcher-handler-policy")
    for action in ("events:PutEvents", "mobiletargeting:GetUserEndpoints", "mobiletargeting:UpdateEndpoint",
                   "mobiletargeting:PutEvents", "sqs:SendMessage", "kms:Decrypt"):
        # The dispatcher's own failure queue (and its key, which it also has for the table) aside.
        assert set(actions[action]) == {r for r in dispatcher[action] if "failures" not in r}, action
    dead_letters = dev_graph.arn_of(dev_graph.one("aws:sqs/queue:Queue", "rules-action-dead-letters"))
    assert actions["sqs:SendMessage"] == [dead_letters]
    assert not any(action.startswith("dynamodb:GetRecords") for action in actions)  # no stream to read


def test_the_oldest_pending_entry_has_an_alarm(dev_graph):
    alarm = dev_graph.one("aws:cloudwatch/metricAlarm:MetricAlarm", "rules-outbox-pending-age")
    function = dev_graph.one("aws:lambda/function:Function", "rules-reconciler-handler-function")
    env = function.inputs["environment"]["variables"]
    assert (alarm.inputs["namespace"], alarm.inputs["metricName"]) == (
        env["POWERTOOLS_METRICS_NAMESPACE"], "OldestPendingEntryAgeSeconds")
    assert alarm.inputs["dimensions"] == {"service": env["POWERTOOLS_SERVICE_NAME"]}
    assert alarm.inputs["statistic"] == "Maximum" and alarm.inputs["comparisonOperator"] == "GreaterThanThreshold"
    assert alarm.inputs["threshold"] == 900 + 2 * 300  # the threshold plus two runs
    assert alarm.inputs["treatMissingData"] == "breaching"  # a reconciler that does not run is a failure too


def test_reserved_concurrency_of_the_scheduled_rule_functions_is_an_opt_in_stack_option(monitor, dev_graph,
                                                                                        dev_stack_config, run_stack):
    before = len(monitor.registered)
    run_stack({**dev_stack_config, "engagement-loop:rulesReservedConcurrency": "true"})
    functions = {r.name: r for r in monitor.registered[before:] if r.type == "aws:lambda/function:Function"}
    for name in ("rules-reconciler", "rules-sweeper", "rules-backfill"):
        assert functions[f"{name}-handler-function"].inputs["reservedConcurrentExecutions"] == 1
    assert functions["rules-aggregator-handler-function"].inputs.get("reservedConcurrentExecutions") is None


def test_the_aggregator_may_batch_read_its_counters_and_nothing_else_may(dev_graph):
    """The concurrent aggregator's one read per batch (`CounterStore.read_many`), on the counters table only."""
    counters = dev_graph.arn_of(dev_graph.one(TABLE, "rules-counters"))
    assert policy(dev_graph, "rules-aggregator-handler-policy")["dynamodb:BatchGetItem"] == [counters]
    for other in ("rules-sweeper-handler-policy", "rules-backfill-handler-policy"):
        assert "dynamodb:BatchGetItem" not in policy(dev_graph, other), other


def test_the_aggregator_has_one_vcpu(dev_graph):
    """Lambda gives one vCPU at 1,769 MB, what the concurrent aggregator needs to keep up with a shard."""
    function = dev_graph.one("aws:lambda/function:Function", "rules-aggregator-handler-function")
    assert function.inputs["memorySize"] == AGGREGATOR_MEMORY_MB == 1769
