"""Where the functions read the rules: S3, cached for a minute (an injected clock), the last good copy kept."""

from __future__ import annotations

from collections import Counter

import boto3
import pytest

from functions.rules.rules_source import Env, RulesSettings, RulesUnavailable, S3RulesSource, StaticRules
from functions.rules.model import CountCondition, Operator, Rule, RuleSet, RuleType
from tests.functions.rules.conftest import REGION, RULES_BUCKET, RULES_KEY

V1 = RuleSet((Rule(rule_id="r1", rule_type=RuleType.AGGREGATOR, event_name="purchase",
                   count_condition=CountCondition(Operator.AT_LEAST, 3)),))
V2 = RuleSet((*V1.rules, Rule(rule_id="r2", rule_type=RuleType.AGGREGATOR, event_name="view",
                               count_condition=CountCondition(Operator.AT_LEAST, 10))))


class Seconds:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def source(aws):
    s3 = boto3.client("s3", region_name=REGION)
    calls: Counter[str] = Counter()
    s3.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
    clock = Seconds()
    settings = RulesSettings(bucket=RULES_BUCKET, key=RULES_KEY)
    return S3RulesSource(s3, settings, clock=clock), clock, calls


def test_a_new_version_is_seen_within_the_cache_age(aws, source):
    rules, clock, calls = source
    aws.publish(V1)
    assert rules.current().version == V1.version
    aws.publish(V2)
    clock.now += 59.9
    assert rules.current().version == V1.version and calls["GetObject"] == 1
    clock.now += 0.1
    assert rules.current().version == V2.version and calls["GetObject"] == 2


def test_an_unchanged_document_is_not_downloaded_again(aws, source):
    rules, clock, calls = source
    aws.publish(V1)
    first = rules.current()
    clock.now += 60
    assert rules.current() is first  # a 304 for the cached ETag
    assert calls["GetObject"] == 2


def test_when_s3_fails_the_cached_rules_stay_in_use_and_are_retried_after_the_cache_age(aws, source):
    rules, clock, calls = source
    aws.publish(V1)
    rules.current()
    aws.s3.delete_object(Bucket=RULES_BUCKET, Key=RULES_KEY)
    clock.now += 61
    assert rules.current().version == V1.version
    assert rules.current().version == V1.version and calls["GetObject"] == 2  # not on every call
    aws.s3.put_object(Bucket=RULES_BUCKET, Key=RULES_KEY, Body=b'{"rules": [{"broken": true}]}')
    clock.now += 61
    assert rules.current().version == V1.version and calls["GetObject"] == 3
    aws.publish(V2)
    clock.now += 61
    assert rules.current().version == V2.version


def test_without_a_cached_copy_a_failure_raises(aws, source):
    rules, _, _ = source
    with pytest.raises(RulesUnavailable, match=f"s3://{RULES_BUCKET}/{RULES_KEY}"):
        rules.current()
    aws.s3.put_object(Bucket=RULES_BUCKET, Key=RULES_KEY, Body=b"not json")
    with pytest.raises(RulesUnavailable):
        rules.current()


def test_static_rules_and_the_settings():
    assert StaticRules(V1).current() is V1
    env = Env({"RULES_BUCKET": "b", "RULES_KEY": "k", "RULES_MAX_AGE_SECONDS": "30"})
    assert RulesSettings.read(env) == RulesSettings(bucket="b", key="k", max_age_seconds=30)
    env = Env({"RULES_MAX_AGE_SECONDS": "-1"})
    RulesSettings.read(env)
    assert len(env.problems) == 3 and "RULES_MAX_AGE_SECONDS='-1'" in env.problems[2]
