"""The aggregator's role may BatchGetItem its counters (the concurrent aggregator's one read per batch,
`CounterStore.read_many`), on the counters table only; the other counters functions may not."""

from __future__ import annotations

from components.rule_engine import AGGREGATOR_MEMORY_MB

TABLE = "aws:dynamodb/table:Table"


def actions_of(graph, name):
    document = graph.one("aws:iam/rolePolicy:RolePolicy", name).input_json("policy")
    actions: dict[str, list[str]] = {}
    for statement in document["Statement"]:
        for action in statement["Action"]:
            actions.setdefault(action, []).extend(statement["Resource"])
    return actions


def test_the_aggregator_may_batch_read_its_counters_and_nothing_else_may(dev_graph):
    counters = dev_graph.arn_of(dev_graph.one(TABLE, "rules-counters"))
    assert actions_of(dev_graph, "rules-aggregator-handler-policy")["dynamodb:BatchGetItem"] == [counters]
    for other in ("rules-sweeper-handler-policy", "rules-backfill-handler-policy"):
        assert "dynamodb:BatchGetItem" not in actions_of(dev_graph, other), other


def test_the_aggregator_has_one_vcpu(dev_graph):
    function = dev_graph.one("aws:lambda/function:Function", "rules-aggregator-handler-function")
    assert function.inputs["memorySize"] == AGGREGATOR_MEMORY_MB == 1769
