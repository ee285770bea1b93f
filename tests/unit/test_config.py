"""Stack config parsing: every invalid value is named with its key, value and fix; all problems at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.config import KEYS, OBJECT_ARRAYS, ConfigError, StateMachineLogLevel, parse_stack_config
from functions.events.canonical import IdentityMode

ROOT = Path(__file__).resolve().parents[2]
CAMPAIGN = "arn:aws:personalize:eu-west-1:123456789012:campaign/c1"
SOLUTION = "arn:aws:personalize:eu-west-1:123456789012:solution/s1"
DATASET = "arn:aws:personalize:eu-west-1:123456789012:dataset/group1/INTERACTIONS"


def valid(**overrides):
    raw = {
        "personalizeCampaignArn": CAMPAIGN,
        "personalizeSolutionArn": SOLUTION,
        "personalizeInteractionsDatasetArn": DATASET,
        "scoring": json.dumps(["_email.open=50", "_email.click=100"]),
    }
    raw.update(overrides)
    return {k: v for k, v in raw.items() if v is not None}


def problems(raw, region="eu-west-1"):
    with pytest.raises(ConfigError) as error:
        parse_stack_config(raw, region=region)
    return error.value.problems


def test_the_sample_stack_parses_with_the_seed_scoring_model():
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    raw = {k.split(":", 1)[1]: v if isinstance(v, str) else json.dumps(v)
           for k, v in stack.items() if k.startswith("engagement-loop:")}
    config = parse_stack_config(raw, region=stack["aws:region"])
    assert dict(config.retraining.scoring.values) == {
        "_campaign.opened_notification": 100.0, "_email.open": 50.0, "_email.click": 100.0,
        "_email.unsubscribe": -200.0}
    assert config.retraining.history_days == -1
    assert config.retraining.schedule == "cron(0 2 * * ? *)"
    assert config.retraining.campaign.name == "engagement-campaign"
    assert config.sources.pinpoint_project_id == "a1b2c3d4e5f60718293a4b5c6d7e8f90"
    assert config.identity_mode is IdentityMode.USER_OR_ENDPOINT


def test_defaults_apply_when_keys_are_absent():
    config = parse_stack_config(valid(), region="eu-west-1")
    assert config.log_retention_days == 30
    assert config.sources.pinpoint_project_id is None and config.sources.ses_configuration_set is None
    assert config.sources.app_producer_policy is True
    assert config.lake.athena_scan_limit_gb == 10
    assert config.retraining.history_days == -1


def test_pulumi_yaml_declares_exactly_the_keys_read_with_the_same_defaults():
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(KEYS)
    for key, (kind, default) in KEYS.items():
        if key in OBJECT_ARRAYS:  # a list of objects, which Pulumi's item types cannot declare
            assert "type" not in declared[key] and kind == "array", key
        else:
            assert declared[key]["type"] == kind, key
        assert declared[key].get("default") == default, key
        assert declared[key]["description"], key


@pytest.mark.parametrize("key, value, expected", [
    ("personalizeCampaignArn", "arn:aws:personalize:eu-west-1:123:campaign/c1", "expected a Personalize campaign ARN"),
    ("personalizeCampaignArn", SOLUTION, "expected a Personalize campaign ARN"),
    ("personalizeSolutionArn", "arn:aws:personalize:us-east-1:123456789012:solution/s1",
     "is in us-east-1 but the stack deploys to eu-west-1"),
    ("personalizeInteractionsDatasetArn", "arn:aws:personalize:eu-west-1:123456789012:dataset/group1/USERS",
     "INTERACTIONS dataset"),
    ("scoring", json.dumps(["_email.open=fifty"]), "value 'fifty' for '_email.open' is not a finite number"),
    ("scoring", json.dumps(["_email.open"]), "is not EVENT_TYPE=VALUE"),
    ("scoring", json.dumps(["_email.open=nan"]), "finite number"),
    ("scoring", json.dumps(["_custom.recommender=1"]), "remove it from the scoring model"),
    ("scoring", json.dumps([f"e{i}=1" for i in range(11)]), "at most 10"),
    ("scoring", json.dumps(["a=1", "a=2"]), "already scored"),
    ("historyDays", "0", "use -1 for all history or a number of days ≥ 1"),
    ("historyDays", "-2", "use -1 for all history"),
    ("historyDays", "seven", "expected a whole number"),
    ("retrainSchedule", "every night", "expected an EventBridge schedule"),
    ("retrainSchedule", "cron(0 2 * * ?)", "expected an EventBridge schedule"),
    ("identityMode", "email", "expected one of user, user_or_endpoint"),
    ("logRetentionDays", "10", "must be one of 1, 3, 5, 7, 14, 30"),
    ("pinpointProjectId", "my-project", "32 hex digits"),
    ("appProducerPolicy", "yes", "expected true or false"),
    ("athenaScanLimitGb", "0", "must be at least 1"),
    ("appStreamShards", "0", "expected 1–500"),
    ("appStreamShards", "501", "expected 1–500"),
    ("appStreamShards", "two", "expected a whole number"),
    ("streamMode", "PROVISIONED", "expected one of on-demand, provisioned"),
    ("streamMode", "ondemand", "expected one of on-demand, provisioned"),
    ("appMayReport", json.dumps(["_email.open"]), "is not an event type apps may be allowed to report"),
    ("appMayReport", json.dumps(["_campaign.*"]), "is not an event type apps may be allowed to report"),
    ("appMayReport", "_campaign.opened_notification", "expected a list"),
])
def test_each_invalid_value_names_key_value_and_fix(key, value, expected):
    [problem] = problems(valid(**{key: value}))
    assert problem.startswith(f"engagement-loop:{key} = ")
    assert repr(value) in problem or value in problem
    assert expected in problem


def test_required_keys_and_unknown_keys_are_reported_together():
    found = problems({"scoringWeights": "x", "historyDays": "0"}, region=None)
    assert "aws:region is required: `pulumi config set aws:region eu-west-1`" in found
    assert any(p.startswith("engagement-loop:scoringWeights is not a setting of this program") for p in found)
    for key in ("personalizeCampaignArn", "personalizeSolutionArn", "personalizeInteractionsDatasetArn", "scoring"):
        assert any(p.startswith(f"engagement-loop:{key} is required") for p in found), key
    assert any(p.startswith("engagement-loop:historyDays") for p in found)
    assert len(found) == 7


def test_valid_schedules_and_history_are_accepted():
    for schedule in ("rate(1 day)", "rate(12 hours)", "cron(0 2 * * ? *)", "cron(15 */6 ? * MON-FRI *)"):
        assert parse_stack_config(valid(retrainSchedule=schedule), region="eu-west-1").retraining.schedule == schedule
    assert parse_stack_config(valid(historyDays="30"), region="eu-west-1").retraining.history_days == 30


def test_readme_config_reference_lists_every_key():
    readme = (ROOT / "README.md").read_text()
    for key in KEYS:
        assert f"| `{key}` |" in readme, key


@pytest.mark.parametrize("key, value, expected", [
    ("importMode", "PARTIAL", "expected one of FULL, INCREMENTAL"),
    ("trainingMode", "full", "expected one of FULL, UPDATE, AUTO"),
    ("attributionDays", "0", "expected 1–365"),
    ("minProvisionedTps", "-1", "expected 0–100000"),
    ("gateMetric", "NDCG@10", "a Personalize metric name"),
    ("gateMarginPercent", "150", "expected 0–100"),
    ("retrainingLogLevel", "error", "expected one of ERROR, ALL, FATAL, OFF"),
    ("retrainingLogLevel", "DEBUG", "expected one of ERROR, ALL, FATAL, OFF"),
])
def test_retraining_settings_are_validated(key, value, expected):
    [problem] = problems(valid(**{key: value}))
    assert problem.startswith(f"engagement-loop:{key} = ") and expected in problem


def test_real_time_events_need_a_tracking_id():
    [problem] = problems(valid(realTimeEvents="true"))
    assert "realTimeEvents is true but engagement-loop:personalizeTrackingId is empty" in problem
    config = parse_stack_config(valid(realTimeEvents="false", personalizeTrackingId="abc-123"), region="eu-west-1")
    assert config.retraining.real_time_tracking_id is None
    config = parse_stack_config(valid(realTimeEvents="true", personalizeTrackingId="abc-123"), region="eu-west-1")
    assert config.retraining.real_time_tracking_id == "abc-123"


def test_retraining_defaults_keep_the_campaign_tps_and_have_no_gate():
    retraining = parse_stack_config(valid(), region="eu-west-1").retraining
    assert retraining.min_provisioned_tps is None and retraining.gate_metric is None
    assert retraining.gate_margin == 0.05 and retraining.attribution_days == 7
    assert parse_stack_config(valid(minProvisionedTps="5"), region="eu-west-1").retraining.min_provisioned_tps == 5


def test_rules_sheet_is_parsed_from_the_project_directory(tmp_path):
    (tmp_path / "rules.csv").write_text((ROOT / "rules" / "sample.csv").read_text())
    rules = parse_stack_config(valid(rulesSheet="rules.csv"), region="eu-west-1", project_dir=tmp_path).rules
    assert len(rules.rules) == 4 and rules.sheet_path == "rules.csv"
    assert rules.connect_domain_name is None and rules.counter_ttl_days == 400
    assert rules.dedupe_horizon_hours == 24


def test_the_dedupe_horizon_is_read_once_and_bounded():
    assert parse_stack_config(valid(dedupeHorizonHours="72"), region="eu-west-1").rules.dedupe_horizon_hours == 72
    for bad in ("12", "721", "soon"):
        with pytest.raises(ConfigError, match="dedupeHorizonHours"):
            parse_stack_config(valid(dedupeHorizonHours=bad), region="eu-west-1")


def test_a_bad_rules_sheet_is_rejected_with_every_problem(tmp_path):
    (tmp_path / "bad.csv").write_text((ROOT / "tests" / "fixtures" / "rules" / "bad.csv").read_text())
    found = problems_in(tmp_path, rulesSheet="bad.csv")
    assert len(found) >= 5
    assert all(p.startswith("engagement-loop:rulesSheet: bad.csv: row ") for p in found)
    assert all(", column " in p for p in found)


def test_a_missing_rules_sheet_names_the_path(tmp_path):
    [problem] = problems_in(tmp_path, rulesSheet="nope.csv")
    assert problem.startswith("engagement-loop:rulesSheet = 'nope.csv': cannot read ")


def problems_in(project_dir, **overrides):
    with pytest.raises(ConfigError) as error:
        parse_stack_config(valid(**overrides), region="eu-west-1", project_dir=project_dir)
    return error.value.problems


def test_the_retraining_log_level_defaults_to_error_and_is_read_once():
    assert parse_stack_config(valid(), region="eu-west-1").retraining.log_level is StateMachineLogLevel.ERROR
    for level in StateMachineLogLevel:
        config = parse_stack_config(valid(retrainingLogLevel=level.value), region="eu-west-1")
        assert config.retraining.log_level is level


def test_the_alarm_topic_defaults_to_the_stacks_own_and_takes_a_topic_of_the_stacks_region_and_account():
    assert parse_stack_config(valid(), region="eu-west-1").alarm_topic_arn is None
    topic = "arn:aws:sns:eu-west-1:123456789012:ops-alarms"
    assert parse_stack_config(valid(alarmTopicArn=topic), region="eu-west-1").alarm_topic_arn == topic


@pytest.mark.parametrize("value, expected", [
    ("ops-alarms", "expected the ARN of a standard SNS topic, like arn:aws:sns:eu-west-1:123456789012:my-alarms"),
    ("arn:aws:sqs:eu-west-1:123456789012:ops-alarms", "expected the ARN of a standard SNS topic"),
    ("arn:aws:sns:eu-west-1:123456789012:ops.fifo", "expected the ARN of a standard SNS topic"),
    ("arn:aws:sns:us-east-1:123456789012:ops-alarms", "is in us-east-1 but the stack deploys to eu-west-1"),
    ("arn:aws:sns:eu-west-1:210987654321:ops-alarms", "belongs to account 210987654321 but the stack's account is "
                                                      "123456789012"),
])
def test_an_alarm_topic_that_is_no_sns_topic_of_the_stack_is_named_with_its_key(value, expected):
    [problem] = problems(valid(alarmTopicArn=value))
    assert problem.startswith(f"engagement-loop:alarmTopicArn = {value!r}: ") and expected in problem


def test_a_secret_alarm_topic_is_never_shown():
    value = "arn:aws:sns:us-east-1:123456789012:ops-alarms"
    with pytest.raises(ConfigError) as error:
        parse_stack_config(valid(alarmTopicArn=value), region="eu-west-1", secret_keys=["alarmTopicArn"])
    [problem] = error.value.problems
    assert problem.startswith("the secret value of engagement-loop:alarmTopicArn") and "us-east-1" not in problem


def test_app_stream_shards_and_app_may_report_default_and_parse():
    sources = parse_stack_config(valid(), region="eu-west-1").sources
    assert sources.app_stream_shards == 2 and sources.app_may_report == frozenset()
    sources = parse_stack_config(valid(appStreamShards="12", appMayReport=json.dumps(
        ["_campaign.opened_notification", " _journey.opened_notification "])), region="eu-west-1").sources
    assert sources.app_stream_shards == 12
    assert sources.app_may_report == {"_campaign.opened_notification", "_journey.opened_notification"}


def test_a_bad_app_may_report_names_the_key_once_with_the_consumers_rule():
    [problem] = problems(valid(appMayReport=json.dumps([f"_campaign.t{i}" for i in range(21)])))
    assert problem.startswith("engagement-loop:appMayReport = ") and "more than 20" in problem
    assert problem.count("engagement-loop:appMayReport") == 1


def test_a_misspelt_key_gets_the_nearest_known_key():
    found = problems(valid(retrainShedule="rate(1 day)"))
    assert ("engagement-loop:retrainShedule is not a setting of this program; did you mean "
            "engagement-loop:retrainSchedule? Fix its spelling, or remove it") in found
    found = problems(valid(RETRAINSCHEDULE="rate(1 day)"))
    assert any("did you mean engagement-loop:retrainSchedule?" in p for p in found)


# --- issue 11 review: the stack-file reader ---------------------------------------------------------------


def test_yaml_merge_keys_are_read_as_go_yaml_reads_them(tmp_path):
    from components.stack_file import read_stack_file

    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text("base: &base\n  engagement-loop:historyDays: 30\n  engagement-loop:importMode: FULL\n"
                     "config:\n  <<: *base\n  engagement-loop:historyDays: 48\n  aws:region: eu-west-1\n")
    read = read_stack_file(stack)
    assert read.problems == ()
    assert read.values["engagement-loop:historyDays"] == "48"  # the mapping's own key overrides the merged one
    assert read.values["engagement-loop:importMode"] == "FULL"


def test_a_key_given_in_full_and_legacy_form_is_a_duplicate(tmp_path):
    from components.stack_file import read_stack_file

    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text("config:\n  engagement-loop:historyDays: 30\n  engagement-loop:config:historyDays: 48\n")
    assert any("engagement-loop:historyDays is given twice" in problem for problem in read_stack_file(stack).problems)


def test_explicit_yaml_timestamps_and_binary_do_not_raise_type_errors(tmp_path):
    from components.stack_file import read_stack_file

    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text("config:\n  engagement-loop:retrainSchedule: !!timestamp 2026-11-01\n"
                     "  engagement-loop:gateMetric: !!binary AAE=\n")
    read = read_stack_file(stack)
    assert read.values["engagement-loop:retrainSchedule"] == "2026-11-01"
    assert any(problem.startswith("engagement-loop:gateMetric: expected a string") for problem in read.problems)


def test_stream_mode_defaults_to_on_demand_and_parses_provisioned_with_shards():
    from components.config import StreamMode

    sources = parse_stack_config(valid(), region="eu-west-1").sources
    assert sources.stream_mode is StreamMode.ON_DEMAND and sources.stream_shards == 1
    sources = parse_stack_config(valid(streamMode="provisioned", streamShards="3"), region="eu-west-1").sources
    assert sources.stream_mode is StreamMode.PROVISIONED and sources.stream_shards == 3


@pytest.mark.parametrize(("value", "expected"), [("0", "expected 1–500"), ("501", "expected 1–500"),
                                                 ("1.5", "expected a whole number")])
def test_a_bad_shard_count_of_a_provisioned_stream_names_key_value_and_fix(value, expected):
    [problem] = problems(valid(streamMode="provisioned", streamShards=value))
    assert problem.startswith("engagement-loop:streamShards = ") and value in problem and expected in problem


def test_shards_without_a_provisioned_stream_are_refused_not_ignored():
    for config in (valid(streamShards="4"), valid(streamMode="on-demand", streamShards="4")):
        [problem] = problems(config)
        assert problem.startswith("engagement-loop:streamShards is set but streamMode is not provisioned")
        assert "streamMode: provisioned" in problem
